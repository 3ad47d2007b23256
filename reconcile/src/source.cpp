#include "livestate/reconcile/source.hpp"

#include "livestate/db/store.hpp"

namespace livestate::reconcile {

Source::~Source() = default;

std::optional<std::string> Source::watermark(std::string_view) { return std::nullopt; }

std::optional<Source::Changes> Source::changes_since(std::string_view, const std::string&) { return std::nullopt; }

namespace {

class StoreSource final : public Source {
 public:
  // The store's core, shared: a read still running when the view and the
  // Store object are gone keeps the connections it uses.
  explicit StoreSource(db::Store& store) : m_store(db::detail::shared_operations(store.core())) {}

  std::map<std::string, Json> read(std::string_view type, const Json& where,
                                   const std::optional<std::vector<std::string>>& ids) override {
    std::map<std::string, Json> rows;
    for (auto& row : m_store->list(type, where, ids)) {
      auto id = db::Store::id_of(type, row);
      rows.emplace(std::move(id), std::move(row));
    }
    return rows;
  }

  std::map<std::string, std::int64_t> deletions(std::string_view type,
                                                const std::optional<std::vector<std::string>>& ids,
                                                std::optional<std::chrono::milliseconds> within) override {
    if (db::Store::is_builtin_type(type)) return {};
    return m_store->deletions(type, ids, within);
  }

  std::optional<std::string> watermark(std::string_view type) override { return m_store->change_watermark(type); }

  std::optional<Changes> changes_since(std::string_view type, const std::string& watermark) override {
    auto changed = m_store->changes_since(type, watermark);
    if (!changed) return std::nullopt;
    Changes changes;
    for (auto& row : changed->rows) {
      auto id = db::Store::id_of(type, row);
      changes.rows.emplace(std::move(id), std::move(row));
    }
    changes.deletions = std::move(changed->deletions);
    changes.watermark = std::move(changed->watermark);
    return changes;
  }

 private:
  std::shared_ptr<db::Operations> m_store;
};

}  // namespace

std::unique_ptr<Source> source_of(db::Store& store) { return std::make_unique<StoreSource>(store); }

}  // namespace livestate::reconcile
