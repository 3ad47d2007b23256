// The data model's reads: one row by id, lists of a type filtered by its
// fields, and the deletions of an application's resources.

#include <chrono>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

#include "livestate/db/store.hpp"
#include "model.hpp"

namespace livestate::db {

using namespace detail::model;

// --- reads -----------------------------------------------------------------------

std::optional<Json> Operations::get_master(std::int64_t masterid) {
  std::optional<Json> body;
  run(false, [&](Context& context) { body = read_one(context, "masters", master_columns, masterid, master_body); });
  return body;
}

std::optional<Json> Operations::get_builder(std::int64_t builderid) {
  std::optional<Json> body;
  run(false, [&](Context& context) {
    body = read_one(context, "builders", builder_columns, builderid,
                    [&](const Row& row) { return builder_body(context, row); });
  });
  return body;
}

std::optional<Json> Operations::get_buildset(std::int64_t bsid) {
  std::optional<Json> body;
  run(false, [&](Context& context) { body = read_one(context, "buildsets", buildset_columns, bsid, buildset_body); });
  return body;
}

std::optional<Json> Operations::get_buildrequest(std::int64_t buildrequestid) {
  std::optional<Json> body;
  run(false, [&](Context& context) {
    body = read_one(context, "buildrequests", buildrequest_columns, buildrequestid, buildrequest_body);
  });
  return body;
}

std::optional<Json> Operations::get_build(std::int64_t buildid) {
  std::optional<Json> body;
  run(false, [&](Context& context) { body = read_one(context, "builds", build_columns, buildid, build_body); });
  return body;
}

std::optional<Json> Operations::get_step(std::int64_t stepid) {
  std::optional<Json> body;
  run(false, [&](Context& context) { body = read_one(context, "steps", step_columns, stepid, step_body); });
  return body;
}

std::optional<Json> Operations::get_resource(std::string_view type, std::string_view id) {
  std::optional<Json> body;
  run(false, [&](Context& context) {
    const auto rows = context.query("SELECT " + std::string(resource_columns) +
                                        " FROM resources WHERE type = ? AND id = ? AND deleted = ?",
                                    {std::string(type), std::string(id), false});
    if (!rows.empty()) body = resource_body(rows.front());
  });
  return body;
}

namespace {

Json where_of(const BuildRequestFilter& filter) {
  Json where = Json::object();
  if (filter.builderid) where["builderid"] = *filter.builderid;
  if (filter.buildsetid) where["buildsetid"] = *filter.buildsetid;
  if (filter.complete) where["complete"] = *filter.complete;
  if (filter.claimed) where["claimed"] = *filter.claimed;
  if (filter.claimed_by_masterid) where["claimed_by_masterid"] = *filter.claimed_by_masterid;
  return where;
}

// The rows of a type that list(type, where, ids) reads: " FROM … WHERE …"
// and its parameters, for a SELECT of the type's columns or of a count.
struct Selection {
  const TypeInfo* info = nullptr;  // none: an application type, in `resources`
  std::string from;
  std::vector<Value> params;
};

Selection select_rows(std::string_view type, const Json& where, const std::optional<std::vector<std::string>>& ids) {
  if (!where.is_object()) throw std::invalid_argument("list(): `where` must be a JSON object");
  Selection selection;
  selection.info = find_builtin(type);
  std::string& sql = selection.from;
  std::vector<Value>& params = selection.params;
  if (const TypeInfo* info = selection.info) {
    sql = " FROM " + std::string(info->table) + " WHERE 1 = 1";
    for (const auto& [field, value] : where.items()) {
      const auto column = info->fields.find(field);
      if (column == info->fields.end()) {
        throw std::invalid_argument("cannot filter " + std::string(type) + " on '" + field + "'");
      }
      if (value.is_null()) {
        sql += " AND " + column->second + " IS NULL";
      } else if (value.is_boolean() && (field == "complete" || field == "claimed")) {
        // The boolean fields, spelled as the partial indexes of pending
        // requests are (0004, 0006) so that both databases use them.
        sql += std::string(value.get<bool>() ? " AND " : " AND NOT ") + column->second;
      } else {
        sql += " AND " + column->second + " = ?";
        params.push_back(to_value(value, field));
      }
    }
    if (ids) {
      sql += " AND id IN " + placeholders(ids->size());
      for (const auto& id : *ids) params.emplace_back(parse_id(id, type));
    }
  } else {
    (void)RoutingKey({type});  // an application type must be a routing-key element
    if (!where.empty()) {
      throw std::invalid_argument("resources of type '" + std::string(type) + "' can only be listed by id");
    }
    sql = " FROM resources WHERE type = ? AND deleted = ?";
    params = {std::string(type), false};
    if (ids) {
      sql += " AND id IN " + placeholders(ids->size());
      params.insert(params.end(), ids->begin(), ids->end());
    }
  }
  return selection;
}

// A LIMIT's parameter (a limit past what SQL counts is no limit).
std::int64_t sql_limit(std::size_t limit) {
  return static_cast<std::int64_t>(std::min<std::size_t>(limit, std::numeric_limits<std::int64_t>::max()));
}

std::string_view columns_of(const Selection& selection) {
  return selection.info != nullptr ? selection.info->columns : resource_columns;
}

Json body_of(const Selection& selection, Context& context, const Row& row) {
  return selection.info != nullptr ? selection.info->read(context, row) : resource_body(row);
}

}  // namespace

std::vector<Json> Operations::list_buildrequests(const BuildRequestFilter& filter) {
  auto selection = select_rows("buildrequests", where_of(filter), std::nullopt);
  std::string sql = "SELECT " + std::string(columns_of(selection)) + selection.from + " ORDER BY id";
  if (filter.limit) {
    if (*filter.limit == 0) return {};
    sql += " LIMIT ?";
    selection.params.emplace_back(sql_limit(*filter.limit));
  }
  std::vector<Json> bodies;
  run(false, [&](Context& context) {
    bodies.clear();
    for (const auto& row : context.query(sql, selection.params)) bodies.push_back(body_of(selection, context, row));
  });
  return bodies;
}

std::size_t Operations::count_buildrequests(const BuildRequestFilter& filter) {
  auto selection = select_rows("buildrequests", where_of(filter), std::nullopt);
  std::string sql;
  if (filter.limit) {
    if (*filter.limit == 0) return 0;
    // The count stops at the limit: it reads at most that many rows.
    sql = "SELECT COUNT(*) FROM (SELECT 1" + selection.from + " LIMIT ?) AS bounded";
    selection.params.emplace_back(sql_limit(*filter.limit));
  } else {
    sql = "SELECT COUNT(*)" + selection.from;
  }
  std::size_t count = 0;
  run(false, [&](Context& context) {
    count = static_cast<std::size_t>(context.query(sql, selection.params).front().as_int(0));
  });
  return count;
}

std::vector<Json> Operations::list(std::string_view type, const Json& where,
                                   std::optional<std::vector<std::string>> ids) {
  if (ids && ids->empty()) {
    if (!where.is_object()) throw std::invalid_argument("list(): `where` must be a JSON object");
    return {};
  }
  const auto selection = select_rows(type, where, ids);
  const std::string sql = "SELECT " + std::string(columns_of(selection)) + selection.from + " ORDER BY id";
  std::vector<Json> bodies;
  run(false, [&](Context& context) {
    bodies.clear();
    for (const auto& row : context.query(sql, selection.params)) bodies.push_back(body_of(selection, context, row));
  });
  return bodies;
}

std::map<std::string, std::int64_t> Operations::deletions(std::string_view type,
                                                          std::optional<std::vector<std::string>> ids,
                                                          std::optional<std::chrono::milliseconds> within) {
  std::map<std::string, std::int64_t> deleted;
  if (find_builtin(type) != nullptr || (ids && ids->empty())) return deleted;
  (void)RoutingKey({type});
  // `deleted` as the index of deletions (0005) says it.
  std::string sql = "SELECT id, revision FROM resources WHERE type = ? AND deleted";
  std::vector<Value> params{std::string(type)};
  if (ids) {
    sql += " AND id IN " + placeholders(ids->size());
    params.insert(params.end(), ids->begin(), ids->end());
  }
  // Undated: deleted by a program older than 0005 since the migration (a
  // rolling upgrade), when exactly is unknown.
  if (within) sql += " AND (deleted_at >= ? OR deleted_at IS NULL)";
  run(false, [&](Context& context) {
    deleted.clear();
    std::vector<Value> bound = params;
    if (within) bound.emplace_back(context.now() - std::chrono::duration<double>(*within).count());
    for (const auto& row : context.query(sql, bound)) deleted.emplace(row.as_text(0), row.as_int(1));
  });
  return deleted;
}

std::string Operations::id_of(std::string_view type, const Json& body) {
  if (const TypeInfo* info = find_builtin(type)) {
    return std::to_string(body.at(std::string(info->id_field)).get<std::int64_t>());
  }
  return body.at("id").get<std::string>();
}

bool Operations::is_builtin_type(std::string_view type) noexcept { return find_builtin(type) != nullptr; }

}  // namespace livestate::db
