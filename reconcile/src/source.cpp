#include "livestate/reconcile/source.hpp"

#include "livestate/db/store.hpp"

namespace livestate::reconcile {

Source::~Source() = default;

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

 private:
  std::shared_ptr<db::Operations> m_store;
};

}  // namespace

std::unique_ptr<Source> source_of(db::Store& store) { return std::make_unique<StoreSource>(store); }

}  // namespace livestate::reconcile
