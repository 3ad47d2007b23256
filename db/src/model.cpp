// The data model's shared parts (model.hpp): each built-in type's body
// reader and routing keys, and the statements several operations run.

#include "model.hpp"

#include <algorithm>
#include <charconv>
#include <stdexcept>

#include "livestate/db/store.hpp"

namespace livestate::db::detail::model {

namespace {

// A JSON object built field by field, each field's node made once (the
// initializer-list form builds every field as a two-element array first). In
// key order, each field goes straight to the end.
class Fields {
 public:
  Fields& add(std::string_view key, Json value) {
    m_object.get_ref<Json::object_t&>().emplace_hint(m_object.get_ref<Json::object_t&>().end(), key, std::move(value));
    return *this;
  }
  [[nodiscard]] Json take() { return std::move(m_object); }

 private:
  Json m_object = Json::object();
};

// Queues one change on each of its routing keys; the messages share the body
// the context keeps.
template <std::size_t N>
void announce_kept(Context& context, RoutingKey (&&keys)[N], std::size_t body) {
  for (auto& key : keys) context.announce_kept(std::move(key), body);
}

// The same with a body to keep; returns the kept body.
template <std::size_t N>
std::size_t announce(Context& context, RoutingKey (&&keys)[N], Json body) {
  const std::size_t kept = context.keep(std::move(body));
  announce_kept(context, std::move(keys), kept);
  return kept;
}

}  // namespace

// --- helpers -----------------------------------------------------------------

std::string placeholders(std::size_t count) {
  std::string text = "(";
  for (std::size_t i = 0; i < count; ++i) text += i == 0 ? "?" : ",?";
  return text + ")";
}

std::vector<Value> values_of(std::span<const std::int64_t> ids) { return {ids.begin(), ids.end()}; }

std::vector<std::int64_t> sorted_unique(std::span<const std::int64_t> ids) {
  std::vector<std::int64_t> result(ids.begin(), ids.end());
  std::sort(result.begin(), result.end());
  result.erase(std::unique(result.begin(), result.end()), result.end());
  return result;
}

std::string join_ids(const std::vector<std::int64_t>& ids) {
  std::string text;
  for (const auto id : ids) text += (text.empty() ? "" : ", ") + std::to_string(id);
  return text;
}

// "build request 3" / "build requests 3, 4"
std::string requests(const std::vector<std::int64_t>& ids) {
  return (ids.size() == 1 ? "build request " : "build requests ") + join_ids(ids);
}

Value optional_text(const std::optional<std::string>& text) { return text ? Value(*text) : Value(std::monostate{}); }

Json optional_double(const Row& row, std::size_t column) {
  return row.is_null(column) ? Json(nullptr) : Json(row.as_double(column));
}

Json optional_int(const Row& row, std::size_t column) {
  return row.is_null(column) ? Json(nullptr) : Json(row.as_int(column));
}

Json optional_text(const Row& row, std::size_t column) {
  return row.is_null(column) ? Json(nullptr) : Json(row.as_text(column));
}

// What every change of a row of `table` sets besides its own columns: its
// revision, and its change position (0007), by which readers find what
// changed since they last looked.
std::string bump(Context& context, std::string_view table, std::string_view revision) {
  return std::string(revision) + " + 1, position = " + context.change_position(table);
}

// --- the types: how to read a row and where its events go ------------------

// Every SELECT of a type lists its columns in the order its body reader
// expects, so that an UPDATE … RETURNING and a read share one reader.

Json master_body(const Row& row) {
  return {{"masterid", row.as_int(0)},
          {"name", row.as_text(1)},
          {"active", row.as_bool(2)},
          {"last_active", optional_double(row, 3)},
          {"_rev", row.as_int(4)}};
}

Json builder_body(Context& context, const Row& row) {
  Json masterids = Json::array();
  for (const auto& master :
       context.query("SELECT masterid FROM builder_masters WHERE builderid = ? ORDER BY masterid", {row.as_int(0)})) {
    masterids.push_back(master.as_int(0));
  }
  return {{"builderid", row.as_int(0)},           {"name", row.as_text(1)}, {"masterids", masterids},
          {"description", optional_text(row, 2)}, {"tags", row.as_json(3)}, {"_rev", row.as_int(4)}};
}

Json worker_body(const Row& row) {
  return {{"workerid", row.as_int(0)}, {"name", row.as_text(1)},     {"workerinfo", row.as_json(2)},
          {"paused", row.as_bool(3)},  {"graceful", row.as_bool(4)}, {"_rev", row.as_int(5)}};
}

Json buildset_body(const Row& row) {
  return Fields()
      .add("_rev", row.as_int(9))
      .add("bsid", row.as_int(0))
      .add("complete", row.as_bool(5))
      .add("complete_at", optional_double(row, 6))
      .add("external_idstring", optional_text(row, 1))
      .add("reason", optional_text(row, 2))
      .add("results", optional_int(row, 7))
      .add("scheduler", optional_text(row, 3))
      .add("sourcestamps", row.as_json(8))
      .add("submitted_at", row.as_double(4))
      .take();
}

Json buildrequest_body(const Row& row) {
  return Fields()
      .add("_rev", row.as_int(10))
      .add("buildrequestid", row.as_int(0))
      .add("builderid", row.as_int(2))
      .add("buildsetid", row.as_int(1))
      .add("claimed", !row.is_null(11))
      .add("claimed_at", optional_double(row, 12))
      .add("claimed_by_masterid", optional_int(row, 11))
      .add("complete", row.as_bool(4))
      .add("complete_at", optional_double(row, 7))
      .add("priority", row.as_int(3))
      .add("properties", row.as_json(9))
      .add("results", row.as_int(5))
      .add("submitted_at", row.as_double(6))
      .add("waited_for", row.as_bool(8))
      .take();
}

// Queues `event` of one request on its three routing keys, sharing its kept body.
void announce_buildrequest(Context& context, const AnnouncedRequest& request, std::string_view event) {
  const auto id = key_element(request.id);
  const auto bsid = key_element(request.buildsetid);
  const auto builderid = key_element(request.builderid);
  announce_kept(context,
                {RoutingKey({"buildsets", bsid, "builders", builderid, "buildrequests", id, event}),
                 RoutingKey({"buildrequests", id, event}),
                 RoutingKey({"builders", builderid, "buildrequests", id, event})},
                request.body);
}

// Keeps the body of a request's row and queues `event` for it.
AnnouncedRequest announce_buildrequest(Context& context, const Row& row, std::string_view event) {
  const AnnouncedRequest request{row.as_int(0), row.as_int(1), row.as_int(2), context.keep(buildrequest_body(row))};
  announce_buildrequest(context, request, event);
  return request;
}

Json build_body(const Row& row) {
  return {{"buildid", row.as_int(0)},
          {"number", row.as_int(1)},
          {"builderid", row.as_int(2)},
          {"buildrequestid", row.as_int(3)},
          {"workerid", optional_int(row, 4)},
          {"masterid", row.as_int(5)},
          {"started_at", row.as_double(6)},
          {"complete_at", optional_double(row, 7)},
          {"complete", !row.is_null(7)},
          {"state_string", row.as_text(8)},
          {"results", optional_int(row, 9)},
          {"properties", Json::object()},
          {"_rev", row.as_int(10)}};
}

void announce_build(Context& context, Json body, std::string_view event) {
  const auto id = key_element(body["buildid"].get<std::int64_t>());
  const auto builderid = key_element(body["builderid"].get<std::int64_t>());
  const auto number = key_element(body["number"].get<std::int64_t>());
  const bool has_worker = !body["workerid"].is_null();
  const auto workerid = has_worker ? key_element(body["workerid"].get<std::int64_t>()) : std::string();
  const std::size_t kept = announce(
      context, {RoutingKey({"builders", builderid, "builds", number, event}), RoutingKey({"builds", id, event})},
      std::move(body));
  if (has_worker) context.announce_kept(RoutingKey({"workers", workerid, "builds", id, event}), kept);
}

Json step_body(const Row& row) {
  return {{"stepid", row.as_int(0)},
          {"number", row.as_int(1)},
          {"name", row.as_text(2)},
          {"buildid", row.as_int(3)},
          {"started_at", optional_double(row, 4)},
          {"complete", !row.is_null(5)},
          {"complete_at", optional_double(row, 5)},
          {"state_string", row.as_text(6)},
          {"results", optional_int(row, 7)},
          {"urls", row.as_json(8)},
          {"hidden", row.as_bool(9)},
          {"_rev", row.as_int(10)}};
}

void announce_step(Context& context, Json body, std::string_view event) {
  const auto id = key_element(body["stepid"].get<std::int64_t>());
  const auto buildid = key_element(body["buildid"].get<std::int64_t>());
  announce(context, {RoutingKey({"builds", buildid, "steps", id, event}), RoutingKey({"steps", id, event})},
           std::move(body));
}

Json resource_body(const Row& row) {
  return {{"type", row.as_text(0)}, {"id", row.as_text(1)}, {"state", row.as_json(2)}, {"_rev", row.as_int(3)}};
}

const std::array<TypeInfo, 7>& builtin_types() {
  static const std::array<TypeInfo, 7> types{{
      {"masters",
       "masters",
       master_columns,
       "masterid",
       {{"masterid", "id"}, {"name", "name"}, {"active", "active"}},
       [](Context&, const Row& row) { return master_body(row); }},
      {"builders",
       "builders",
       builder_columns,
       "builderid",
       {{"builderid", "id"}, {"name", "name"}},
       [](Context& context, const Row& row) { return builder_body(context, row); }},
      {"workers",
       "workers",
       worker_columns,
       "workerid",
       {{"workerid", "id"}, {"name", "name"}, {"paused", "paused"}},
       [](Context&, const Row& row) { return worker_body(row); }},
      {"buildsets",
       "buildsets",
       buildset_columns,
       "bsid",
       {{"bsid", "id"},
        {"complete", "complete"},
        {"scheduler", "scheduler"},
        {"external_idstring", "external_idstring"}},
       [](Context&, const Row& row) { return buildset_body(row); }},
      {"buildrequests",
       "buildrequests",
       buildrequest_columns,
       "buildrequestid",
       {{"buildrequestid", "id"},
        {"buildsetid", "buildsetid"},
        {"builderid", "builderid"},
        {"complete", "complete"},
        {"results", "results"},
        {"claimed", "(EXISTS (SELECT 1 FROM buildrequest_claims WHERE brid = buildrequests.id))"},
        {"claimed_by_masterid", "(SELECT masterid FROM buildrequest_claims WHERE brid = buildrequests.id)"}},
       [](Context&, const Row& row) { return buildrequest_body(row); }},
      {"builds",
       "builds",
       build_columns,
       "buildid",
       {{"buildid", "id"},
        {"builderid", "builderid"},
        {"buildrequestid", "buildrequestid"},
        {"workerid", "workerid"},
        {"masterid", "masterid"},
        {"number", "number"},
        {"complete", "(complete_at IS NOT NULL)"}},
       [](Context&, const Row& row) { return build_body(row); }},
      {"steps",
       "steps",
       step_columns,
       "stepid",
       {{"stepid", "id"},
        {"buildid", "buildid"},
        {"number", "number"},
        {"name", "name"},
        {"complete", "(complete_at IS NOT NULL)"}},
       [](Context&, const Row& row) { return step_body(row); }},
  }};
  return types;
}

const TypeInfo* find_builtin(std::string_view type) noexcept {
  for (const auto& info : builtin_types()) {
    if (info.name == type) return &info;
  }
  return nullptr;
}

Value to_value(const Json& json, std::string_view field) {
  switch (json.type()) {
    case Json::value_t::null: return std::monostate{};
    case Json::value_t::boolean: return json.get<bool>();
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return json.get<std::int64_t>();
    case Json::value_t::number_float: return json.get<double>();
    case Json::value_t::string: return json.get<std::string>();
    default: throw std::invalid_argument("cannot filter on '" + std::string(field) + "' by a JSON " + json.type_name());
  }
}

std::int64_t parse_id(const std::string& id, std::string_view type) {
  std::int64_t number{};
  const auto [end, error] = std::from_chars(id.data(), id.data() + id.size(), number);
  if (error != std::errc{} || end != id.data() + id.size()) {
    throw std::invalid_argument("'" + id + "' is not an id of " + std::string(type));
  }
  return number;
}

// SQLite gathers what an INSERT or UPDATE … RETURNING returns in a temporary
// b-tree, which costs more than changing one row does. So for one row, SQLite
// runs the change alone (its count of changed rows tells whether the row
// changed) and then reads the row; PostgreSQL, a round trip away, and SQLite
// for several rows get them back from the one statement.
bool read_after_change(const Context& context, std::size_t rows) {
  return rows == 1 && context.backend() == Backend::sqlite;
}

// The rows `change` (an INSERT or UPDATE of rows of `table` among `ids`)
// changed, as `columns` reads them (a RETURNING list; `column_params` are its
// parameters): `change` RETURNING `columns`, or see read_after_change().
Rows change_returning(Context& context, std::string change, std::vector<Value> params, std::string_view columns,
                      std::string_view table, std::span<const std::int64_t> ids,
                      std::initializer_list<Value> column_params) {
  if (read_after_change(context, ids.size())) {
    if (context.execute(change, params) == 0) return {};
    std::vector<Value> read(column_params);
    read.emplace_back(ids.front());
    return context.query("SELECT " + std::string(columns) + " FROM " + std::string(table) + " WHERE id = ?", read);
  }
  params.insert(params.end(), column_params);
  change += " RETURNING ";
  change += columns;
  return context.query(change, params);
}

// The rows (whose first column is the id) in id order, which is the order
// their messages go out in.
std::vector<const Row*> in_id_order(const Rows& rows) {
  std::vector<const Row*> ordered;
  ordered.reserve(rows.size());
  for (const auto& row : rows) ordered.push_back(&row);
  if (ordered.size() > 1) {
    std::sort(ordered.begin(), ordered.end(), [](const Row* a, const Row* b) { return a->as_int(0) < b->as_int(0); });
  }
  return ordered;
}

// Completes every buildset among `bsids` whose requests are all complete, with
// the worst of their results in Buildbot's order of severity (skipped <
// success < warnings < failure < exception < retry < cancelled). One
// statement: it finds, decides and changes.
//
// On PostgreSQL the buildsets are locked first: two transactions completing
// the last two requests of one buildset would otherwise each see the other's
// request incomplete (READ COMMITTED), and neither would complete the
// buildset. Locked, the second waits for the first to commit, and its UPDATE
// then sees both requests complete. (SQLite has one writer at a time.)
// `locked`: the caller's statement that changed the requests locked them.
void complete_finished_buildsets(Context& context, const std::set<std::int64_t>& bsids, bool locked) {
  if (bsids.empty()) return;
  if (context.backend() == Backend::postgresql && !locked) {
    const std::vector<Value> ids(bsids.begin(), bsids.end());
    context.query("SELECT id FROM buildsets WHERE id IN " + placeholders(bsids.size()) + " ORDER BY id FOR UPDATE",
                  ids);
  }
  std::vector<Value> params{true, context.now()};
  params.insert(params.end(), bsids.begin(), bsids.end());
  params.emplace_back(false);
  params.emplace_back(false);
  const std::vector<std::int64_t> ids(bsids.begin(), bsids.end());
  const auto rows = change_returning(
      context,
      "UPDATE buildsets SET complete = ?, complete_at = ?, revision = " + bump(context, "buildsets") +
          ", results = "
          "(SELECT results FROM buildrequests WHERE buildsetid = buildsets.id ORDER BY CASE results "
          "WHEN 3 THEN 0 WHEN 0 THEN 1 WHEN 1 THEN 2 WHEN 2 THEN 3 WHEN 4 THEN 4 WHEN 5 THEN 5 WHEN 6 THEN 6 "
          "ELSE -1 END DESC LIMIT 1) "
          "WHERE id IN " +
          placeholders(bsids.size()) +
          " AND complete = ? AND NOT EXISTS "
          "(SELECT 1 FROM buildrequests WHERE buildsetid = buildsets.id AND complete = ?)",
      std::move(params), buildset_columns, "buildsets", ids);
  for (const Row* row : in_id_order(rows)) {
    context.announce(RoutingKey({"buildsets", key_element(row->as_int(0)), "complete"}), buildset_body(*row));
  }
}

// Announces `event` for each request row, in id order; returns what it queued.
std::vector<AnnouncedRequest> announce_buildrequests(Context& context, const Rows& rows, std::string_view event) {
  std::vector<AnnouncedRequest> announced;
  announced.reserve(rows.size());
  for (const Row* row : in_id_order(rows)) announced.push_back(announce_buildrequest(context, *row, event));
  return announced;
}

Rows bump_buildrequests(Context& context, const std::vector<std::int64_t>& ids) {
  return context.query("UPDATE buildrequests SET revision = " + bump(context, "buildrequests") + " WHERE id IN " +
                           placeholders(ids.size()) + " RETURNING " + std::string(buildrequest_columns),
                       values_of(ids));
}

// Releases `masterid`'s claims on the incomplete requests among `ids`, or all
// of its claims when `ids` is empty; announces unclaimed.
void release_claims(Context& context, const std::vector<std::int64_t>* ids, std::int64_t masterid) {
  std::vector<Value> params{masterid};
  // `NOT complete` as the pending requests' partial index says it (0004).
  std::string sql =
      "DELETE FROM buildrequest_claims WHERE masterid = ? AND brid IN "
      "(SELECT id FROM buildrequests WHERE NOT complete)";
  if (ids != nullptr) {
    sql += " AND brid IN " + placeholders(ids->size());
    params.insert(params.end(), ids->begin(), ids->end());
  }
  std::vector<std::int64_t> released;
  for (const auto& row : context.query(sql + " RETURNING brid", params)) released.push_back(row.as_int(0));
  if (released.empty()) return;
  announce_buildrequests(context, bump_buildrequests(context, released), "unclaimed");
}

std::vector<std::int64_t> missing_from(const std::vector<std::int64_t>& wanted, const Rows& rows) {
  std::set<std::int64_t> found;
  for (const auto& row : rows) found.insert(row.as_int(0));
  std::vector<std::int64_t> missing;
  for (const auto id : wanted) {
    if (!found.contains(id)) missing.push_back(id);
  }
  return missing;
}

// Throws for claims refused: NotFound when a request does not exist, else
// AlreadyClaimed (claimed, or complete).
[[noreturn]] void refuse_claims(Context& context, const std::vector<std::int64_t>& refused) {
  const auto unknown = missing_from(
      refused,
      context.query("SELECT id FROM buildrequests WHERE id IN " + placeholders(refused.size()), values_of(refused)));
  if (!unknown.empty()) throw NotFound("no build request with id " + join_ids(unknown));
  throw AlreadyClaimed(requests(refused) + (refused.size() == 1 ? " is" : " are") +
                           " already claimed or complete; nothing was claimed",
                       refused);
}

// UPDATE of one row by id; NotFound when there is none.
Row update_one(Context& context, std::string_view table, std::string_view assignments, std::string_view columns,
               std::vector<Value> params, std::int64_t id, std::string_view what) {
  params.emplace_back(id);
  auto rows = context.query("UPDATE " + std::string(table) + " SET " + std::string(assignments) + ", revision = " +
                                bump(context, table) + " WHERE id = ? RETURNING " + std::string(columns),
                            params);
  if (rows.empty()) throw NotFound("no " + std::string(what) + " with id " + std::to_string(id));
  return std::move(rows.front());
}

void check_resource_type(std::string_view type, std::string_view id) {
  if (Operations::is_builtin_type(type)) {
    throw std::invalid_argument("'" + std::string(type) +
                                "' is a built-in type: use its own update methods, not resources");
  }
  (void)RoutingKey({type, id, "updated"});  // throws InvalidRoutingKey for a bad element
}

}  // namespace livestate::db::detail::model
