// Reads Buildbot's own tables through the views of the "buildbot" migration
// set (schema/sets/buildbot), on PostgreSQL or SQLite: each body and its
// revision in one statement, so in one snapshot.

#include "livestate/reconcile/buildbot_source.hpp"

#include <algorithm>
#include <array>
#include <stdexcept>

#include "livestate/db/errors.hpp"
#include "livestate/db/migrator.hpp"
#include "livestate/db/store.hpp"
#include "store_core.hpp"  // db/src: the store's sessions

namespace livestate::reconcile {
namespace {

struct BuildbotType {
  std::string_view type;
  std::string_view view;  // the set's reading view
  std::vector<std::string_view> fields;
};

const std::array<BuildbotType, 4>& types() {
  static const std::array<BuildbotType, 4> known = {{
      {"buildrequests",
       "livestate_buildbot_buildrequests",
       {"buildrequestid", "buildsetid", "builderid", "priority", "claimed", "claimed_at", "claimed_by_masterid",
        "complete", "results", "submitted_at", "complete_at", "waited_for", "properties"}},
      {"buildsets",
       "livestate_buildbot_buildsets",
       {"bsid", "external_idstring", "reason", "submitted_at", "complete", "complete_at", "results", "sourcestamps"}},
      {"builds",
       "livestate_buildbot_builds",
       {"buildid", "number", "builderid", "buildrequestid", "workerid", "masterid", "started_at", "complete_at",
        "complete", "state_string", "results", "properties"}},
      {"steps",
       "livestate_buildbot_steps",
       {"stepid", "number", "name", "buildid", "started_at", "complete", "complete_at", "state_string", "results",
        "urls", "hidden"}},
  }};
  return known;
}

const BuildbotType& type_of(std::string_view type) {
  for (const auto& known : types()) {
    if (known.type == type) return known;
  }
  throw std::invalid_argument("a Buildbot source has no type '" + std::string(type) +
                              "': it reads buildrequests, buildsets, builds and steps");
}

// The ids that can be Buildbot ids (decimal integers; the others can't name
// a row), as PostgreSQL's array literal or a JSON array for SQLite.
std::string id_list(const std::vector<std::string>& ids, db::Backend backend) {
  const bool postgres = backend == db::Backend::postgresql;
  std::string list = postgres ? "{" : "[";
  for (const auto& id : ids) {
    if (id.empty() || id.size() > 9 ||
        !std::all_of(id.begin(), id.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    if (list.size() > 1) list += ',';
    list += id;
  }
  return list + (postgres ? "}" : "]");
}

class BuildbotSource final : public Source {
 public:
  // The store's core, shared, as source_of() shares it: a read still running
  // when the view and the Store object are gone keeps its connections.
  explicit BuildbotSource(db::Store& store) : m_core(store.core()) {
    const auto set = db::shipped_migration_set("buildbot", store.backend());
    const auto status = db::migration_status(store, *set);
    if (!status.pending.empty()) {
      throw db::SchemaOutOfDate(store.name() + " is at version " + std::to_string(status.database_version) +
                                " of the buildbot migration set, and this program reads version " +
                                std::to_string(status.shipped_version) +
                                ": run 'livestate migrate --set buildbot --db " + store.name() + "' first");
    }
  }

  std::map<std::string, Json> read(std::string_view type, const Json& where,
                                   const std::optional<std::vector<std::string>>& ids) override {
    const BuildbotType& known = type_of(type);
    if (!where.is_object()) throw std::invalid_argument("`where` must be a JSON object");
    std::string sql = "SELECT id, " + std::string(postgres() ? "body::text" : "body") + " FROM " +
                      std::string(known.view) + " WHERE 1 = 1";
    std::vector<db::detail::Value> params;
    for (const auto& [field, value] : where.items()) {
      if (std::find(known.fields.begin(), known.fields.end(), field) == known.fields.end()) {
        throw std::invalid_argument("a Buildbot source can't narrow " + std::string(type) + " on '" + field +
                                    "': not a field of their bodies");
      }
      // The field's JSON value equals the one given (null included).
      sql += postgres() ? " AND body -> ? = ?::jsonb" : " AND json_extract(body, ?) IS json_extract(?, '$')";
      params.emplace_back(postgres() ? field : "$." + field);
      params.emplace_back(value.dump());
    }
    if (ids) sql += ids_clause(*ids, params);
    sql += " ORDER BY id";
    std::map<std::string, Json> rows;
    for (const auto& row : query(sql, params)) rows.emplace(std::to_string(row.as_int(0)), row.as_json(1));
    return rows;
  }

  std::map<std::string, std::int64_t> deletions(std::string_view type,
                                                const std::optional<std::vector<std::string>>& ids,
                                                std::optional<std::chrono::milliseconds>) override {
    // Deletions are not dated: all of them (Buildbot deletes rows rarely, if
    // ever, and a deleted entry's side row is all that is read).
    const BuildbotType& known = type_of(type);
    std::string sql = "SELECT id, revision FROM livestate_buildbot_deletions WHERE type = ?";
    std::vector<db::detail::Value> params{std::string(known.type)};
    if (ids) sql += ids_clause(*ids, params);
    std::map<std::string, std::int64_t> deleted;
    for (const auto& row : query(sql, params)) deleted.emplace(std::to_string(row.as_int(0)), row.as_int(1));
    return deleted;
  }

 private:
  // One statement in a read-only transaction, retried as the store retries.
  db::detail::Rows query(const std::string& sql, const std::vector<db::detail::Value>& params) {
    db::detail::Rows rows;
    m_core->run(false, [&](db::detail::Context& context) { rows = context.query(sql, params); });
    return rows;
  }

  bool postgres() const noexcept { return m_core->backend() == db::Backend::postgresql; }

  // " AND id among `ids`", its one parameter appended to `params`.
  std::string ids_clause(const std::vector<std::string>& ids, std::vector<db::detail::Value>& params) const {
    params.emplace_back(id_list(ids, m_core->backend()));
    return postgres() ? " AND id = ANY(?::integer[])" : " AND id IN (SELECT value FROM json_each(?))";
  }

  std::shared_ptr<db::detail::StoreCore> m_core;
};

}  // namespace

std::vector<std::string> buildbot_types() {
  std::vector<std::string> names;
  for (const auto& known : types()) names.emplace_back(known.type);
  return names;
}

std::vector<std::string> buildbot_fields(std::string_view type) {
  const auto& known = type_of(type);
  return {known.fields.begin(), known.fields.end()};
}

std::unique_ptr<Source> buildbot_source(db::Store& store) { return std::make_unique<BuildbotSource>(store); }

}  // namespace livestate::reconcile
