// The Buildbot-shaped data model, written once for both backends against
// detail::Session: each update method changes its rows, bumps their revision
// and announces the change on every routing-key path Buildbot uses, with the
// row as it now is (plus "_rev") as the body.

#include <algorithm>
#include <array>
#include <charconv>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>

#include "livestate/core/wire.hpp"
#include "livestate/db/store.hpp"
#include "store_core.hpp"

namespace livestate::db {

using detail::Context;
using detail::Row;
using detail::Rows;
using detail::Value;

namespace {

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

std::string key_element(std::int64_t id) { return std::to_string(id); }

// What every change of a row of `table` sets besides its own columns: its
// revision, and its change position (0007), by which readers find what
// changed since they last looked.
std::string bump(Context& context, std::string_view table, std::string_view revision = "revision") {
  return std::string(revision) + " + 1, position = " + context.change_position(table);
}

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

// --- the types: how to read a row and where its events go ------------------

// Every SELECT of a type lists its columns in the order its body reader
// expects, so that an UPDATE … RETURNING and a read share one reader.

constexpr std::string_view master_columns = "id, name, active, last_active, revision";
Json master_body(const Row& row) {
  return {{"masterid", row.as_int(0)},
          {"name", row.as_text(1)},
          {"active", row.as_bool(2)},
          {"last_active", optional_double(row, 3)},
          {"_rev", row.as_int(4)}};
}

constexpr std::string_view builder_columns = "id, name, description, tags, revision";
Json builder_body(Context& context, const Row& row) {
  Json masterids = Json::array();
  for (const auto& master :
       context.query("SELECT masterid FROM builder_masters WHERE builderid = ? ORDER BY masterid", {row.as_int(0)})) {
    masterids.push_back(master.as_int(0));
  }
  return {{"builderid", row.as_int(0)},           {"name", row.as_text(1)}, {"masterids", masterids},
          {"description", optional_text(row, 2)}, {"tags", row.as_json(3)}, {"_rev", row.as_int(4)}};
}

constexpr std::string_view worker_columns = "id, name, info, paused, graceful, revision";
Json worker_body(const Row& row) {
  return {{"workerid", row.as_int(0)}, {"name", row.as_text(1)},     {"workerinfo", row.as_json(2)},
          {"paused", row.as_bool(3)},  {"graceful", row.as_bool(4)}, {"_rev", row.as_int(5)}};
}

constexpr std::string_view buildset_columns =
    "id, external_idstring, reason, scheduler, submitted_at, complete, complete_at, results, "
    "sourcestamps, revision";
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

// The request's own columns; its claim (masterid, claimed_at) follows, read by
// correlated subqueries so that UPDATE … RETURNING can use the same list.
constexpr std::string_view buildrequest_own_columns =
    "id, buildsetid, builderid, priority, complete, results, submitted_at, complete_at, "
    "waited_for, properties, revision";
const std::string buildrequest_columns = std::string(buildrequest_own_columns) +
                                         ", (SELECT masterid FROM buildrequest_claims WHERE brid = buildrequests.id)"
                                         ", (SELECT claimed_at FROM buildrequest_claims WHERE brid = buildrequests.id)";
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

// A build request's ids, read from its row (the first columns of
// buildrequest_columns), and its body once kept in the transaction.
struct AnnouncedRequest {
  std::int64_t id = 0;
  std::int64_t buildsetid = 0;
  std::int64_t builderid = 0;
  std::size_t body = 0;
};

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

constexpr std::string_view build_columns =
    "id, number, builderid, buildrequestid, workerid, masterid, started_at, complete_at, "
    "state_string, results, revision";
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

constexpr std::string_view step_columns =
    "id, number, name, buildid, started_at, complete_at, state_string, results, urls, hidden, "
    "revision";
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

constexpr std::string_view resource_columns = "type, id, state, revision";
Json resource_body(const Row& row) {
  return {{"type", row.as_text(0)}, {"id", row.as_text(1)}, {"state", row.as_json(2)}, {"_rev", row.as_int(3)}};
}

// Generic reads: each built-in type's table, id column, readable fields, reader.
struct TypeInfo {
  std::string_view name;
  std::string_view table;
  std::string_view columns;
  std::string_view id_field;                               // body field of the id
  std::map<std::string, std::string, std::less<>> fields;  // body field -> SQL expression
  Json (*read)(Context&, const Row&);
};

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
                      std::initializer_list<Value> column_params = {}) {
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
void complete_finished_buildsets(Context& context, const std::set<std::int64_t>& bsids, bool locked = false) {
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

template <class Read>
std::optional<Json> read_one(Context& context, std::string_view table, std::string_view columns, std::int64_t id,
                             Read read) {
  const auto rows = context.query("SELECT " + std::string(columns) + " FROM " + std::string(table) + " WHERE id = ?",
                                  {id});
  if (rows.empty()) return std::nullopt;
  return read(rows.front());
}

// UPDATE of one row by id; NotFound when there is none.
Row update_one(Context& context, std::string_view table, std::string_view assignments, std::string_view columns,
               std::vector<Value> params, std::int64_t id, std::string_view what) {
  params.push_back(id);
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

}  // namespace

// --- masters, builders, workers ----------------------------------------------

std::int64_t Operations::master_active(std::string_view name) {
  std::int64_t masterid = 0;
  run(true, [&](Context& context) {
    context.execute("INSERT INTO masters (name, position) VALUES (?, " + context.change_position("masters") +
                        ") ON CONFLICT (name) DO NOTHING",
                    {std::string(name)});
    const auto found = context.query("SELECT id, active FROM masters WHERE name = ?", {std::string(name)});
    masterid = found.front().as_int(0);
    const bool was_active = found.front().as_bool(1);
    const auto row = update_one(context, "masters", "active = ?, last_active = ?", master_columns,
                                {true, context.now()}, masterid, "master");
    if (!was_active) {
      context.announce(RoutingKey({"masters", key_element(masterid), "started"}), master_body(row));
    }
  });
  return masterid;
}

void Operations::master_stopped(std::int64_t masterid) {
  run(true, [&](Context& context) {
    const auto found = context.query("SELECT active FROM masters WHERE id = ?", {masterid});
    if (found.empty()) throw NotFound("no master with id " + std::to_string(masterid));
    if (found.front().as_bool(0)) {
      const auto row = update_one(context, "masters", "active = ?", master_columns, {false}, masterid, "master");
      context.announce(RoutingKey({"masters", key_element(masterid), "stopped"}), master_body(row));
    }
    release_claims(context, nullptr, masterid);
  });
}

std::int64_t Operations::builder_started(std::string_view name, std::int64_t masterid) {
  std::int64_t builderid = 0;
  run(true, [&](Context& context) {
    context.execute("INSERT INTO builders (name, position) VALUES (?, " + context.change_position("builders") +
                        ") ON CONFLICT (name) DO NOTHING",
                    {std::string(name)});
    builderid = context.query("SELECT id FROM builders WHERE name = ?", {std::string(name)}).front().as_int(0);
    if (context.query("SELECT id FROM masters WHERE id = ?", {masterid}).empty()) {
      throw NotFound("no master with id " + std::to_string(masterid));
    }
    context.execute("INSERT INTO builder_masters (builderid, masterid) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    {builderid, masterid});
    const auto row = update_one(context, "builders", "name = name", builder_columns, {}, builderid, "builder");
    context.announce(
        RoutingKey({"builders", key_element(builderid), "started"}),
        Json{{"builderid", builderid}, {"masterid", masterid}, {"name", std::string(name)}, {"_rev", row.as_int(4)}});
  });
  return builderid;
}

std::int64_t Operations::find_worker_id(std::string_view name) {
  std::int64_t workerid = 0;
  run(true, [&](Context& context) {
    context.execute("INSERT INTO workers (name, position) VALUES (?, " + context.change_position("workers") +
                        ") ON CONFLICT (name) DO NOTHING",
                    {std::string(name)});
    workerid = context.query("SELECT id FROM workers WHERE name = ?", {std::string(name)}).front().as_int(0);
  });
  return workerid;
}

// --- buildsets and build requests -------------------------------------------

AddedBuildset Operations::add_buildset(const NewBuildset& buildset) {
  // Their bodies hold these one level down.
  wire::check_depth(buildset.sourcestamps, "the buildset's sourcestamps", wire::max_body_depth - 1);
  wire::check_depth(buildset.properties, "the buildset's properties", wire::max_body_depth - 1);
  AddedBuildset added;
  const auto builderids = sorted_unique(buildset.builderids);
  run(true, [&](Context& context) {
    added = {};
    if (!builderids.empty()) {
      const auto missing = missing_from(
          builderids, context.query("SELECT id FROM builders WHERE id IN " + placeholders(builderids.size()),
                                    values_of(builderids)));
      if (!missing.empty()) throw NotFound("no builder with id " + join_ids(missing));
    }
    const double now = context.now();
    const auto set_row = context.query(
        "INSERT INTO buildsets (external_idstring, reason, scheduler, submitted_at, sourcestamps, position) "
        "VALUES (?, ?, ?, ?, ?, " +
            context.change_position("buildsets") + ") RETURNING " + std::string(buildset_columns),
        {optional_text(buildset.external_idstring), optional_text(buildset.reason), optional_text(buildset.scheduler),
         now, buildset.sourcestamps.dump()});
    added.bsid = set_row.front().as_int(0);
    context.announce(RoutingKey({"buildsets", key_element(added.bsid), "new"}), buildset_body(set_row.front()));
    const Value properties = buildset.properties.is_null() ? Value(std::monostate{})
                                                           : Value(buildset.properties.dump());
    for (const auto builderid : builderids) {
      const auto rows = context.query(
          "INSERT INTO buildrequests (buildsetid, builderid, priority, submitted_at, waited_for, properties, "
          "position) VALUES (?, ?, ?, ?, ?, ?, " +
              context.change_position("buildrequests") + ") RETURNING " + buildrequest_columns,
          {added.bsid, builderid, std::int64_t{buildset.priority}, now, buildset.waited_for, properties});
      added.buildrequestids[builderid] = announce_buildrequest(context, rows.front(), "new").id;
    }
  });
  return added;
}

void Operations::claim_buildrequests(std::span<const std::int64_t> buildrequestids, std::int64_t masterid) {
  const auto ids = sorted_unique(buildrequestids);
  if (ids.empty()) return;
  run(true, [&](Context& context) {
    std::vector<Value> params{masterid, context.now()};
    params.insert(params.end(), ids.begin(), ids.end());
    params.emplace_back(false);
    // A claim is a row whose primary key is the request: of two masters racing,
    // one inserts and the other's ON CONFLICT finds the row and claims nothing.
    std::string insert =
        "INSERT INTO buildrequest_claims (brid, masterid, claimed_at) "
        "SELECT id, CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION) FROM buildrequests "
        "WHERE id IN " +
        placeholders(ids.size()) + " AND complete = ? ON CONFLICT (brid) DO NOTHING";
    // On PostgreSQL one statement claims and bumps the claimed requests, one
    // round trip fewer. A refusal throws below, and the rollback (of the
    // transaction, or of the operation's savepoint) takes back the claims
    // and bumps made for the others.
    if (context.backend() == Backend::postgresql) {
      const auto rows = context.query("WITH claimed AS (" + insert +
                                          " RETURNING brid, masterid, claimed_at) "
                                          "UPDATE buildrequests SET revision = " +
                                          bump(context, "buildrequests") +
                                          " FROM claimed WHERE id = claimed.brid RETURNING " +
                                          std::string(buildrequest_own_columns) + ", masterid, claimed_at",
                                      params);
      if (rows.size() != ids.size()) refuse_claims(context, missing_from(ids, rows));
      announce_buildrequests(context, rows, "claimed");
      return;
    }
    std::vector<std::int64_t> refused;
    if (read_after_change(context, ids.size())) {
      if (context.execute(insert, params) != 1) refused = ids;
    } else {
      refused = missing_from(ids, context.query(insert + " RETURNING brid", params));
    }
    if (!refused.empty()) refuse_claims(context, refused);
    // The claim is known: the RETURNING list takes it as parameters rather
    // than looking it up again.
    static const std::string claimed_columns = std::string(buildrequest_own_columns) +
                                               ", CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION)";
    announce_buildrequests(context,
                           change_returning(context,
                                            "UPDATE buildrequests SET revision = " + bump(context, "buildrequests") +
                                                " WHERE id IN " + placeholders(ids.size()),
                                            values_of(ids), claimed_columns, "buildrequests", ids,
                                            {masterid, params[1]}),
                           "claimed");
  });
}

void Operations::unclaim_buildrequests(std::span<const std::int64_t> buildrequestids, std::int64_t masterid) {
  const auto ids = sorted_unique(buildrequestids);
  if (ids.empty()) return;
  run(true, [&](Context& context) { release_claims(context, &ids, masterid); });
}

void Operations::complete_buildrequests(std::span<const std::int64_t> buildrequestids, int results,
                                        std::int64_t masterid) {
  const auto ids = sorted_unique(buildrequestids);
  if (ids.empty()) return;
  run(true, [&](Context& context) {
    std::vector<Value> params{true, std::int64_t{results}, context.now()};
    params.insert(params.end(), ids.begin(), ids.end());
    params.emplace_back(false);
    params.emplace_back(masterid);
    const std::string set = "UPDATE buildrequests SET complete = ?, results = ?, complete_at = ?, revision = " +
                            bump(context, "buildrequests");
    const std::string which = " WHERE id IN " + placeholders(ids.size()) + " AND complete = ?";
    // On PostgreSQL the claim check is a join, whose row also gives the
    // claim to the body; the same statement then locks the requests'
    // buildsets (see complete_finished_buildsets), one round trip fewer:
    // the requests are locked (updated) before their buildsets, in id order,
    // as in the other operations that change both.
    const bool lock_here = context.backend() == Backend::postgresql;
    const auto rows =
        lock_here
            ? context.query("WITH updated AS (" + set + " FROM buildrequest_claims AS claim" + which +
                                " AND claim.brid = buildrequests.id AND claim.masterid = ? RETURNING " +
                                std::string(buildrequest_own_columns) +
                                ", claim.masterid, claim.claimed_at) SELECT updated.* FROM updated JOIN buildsets "
                                "ON buildsets.id = updated.buildsetid ORDER BY buildsets.id FOR UPDATE OF buildsets",
                            params)
            : change_returning(context,
                               set + which +
                                   " AND EXISTS (SELECT 1 FROM buildrequest_claims WHERE brid = buildrequests.id "
                                   "AND masterid = ?)",
                               std::move(params), buildrequest_columns, "buildrequests", ids);
    if (rows.size() != ids.size()) {
      const auto refused = missing_from(ids, rows);
      throw NotClaimed("master " + std::to_string(masterid) + " does not hold the claim of " + requests(refused) +
                           " (not claimed, claimed by another master, or complete); nothing was completed",
                       refused);
    }
    std::set<std::int64_t> bsids;
    for (const auto& request : announce_buildrequests(context, rows, "complete")) bsids.insert(request.buildsetid);
    complete_finished_buildsets(context, bsids, lock_here);
  });
}

void Operations::cancel_buildrequests(std::span<const std::int64_t> buildrequestids) {
  const auto ids = sorted_unique(buildrequestids);
  if (ids.empty()) return;
  run(true, [&](Context& context) {
    std::vector<Value> params{true, std::int64_t{results::cancelled}, context.now()};
    params.insert(params.end(), ids.begin(), ids.end());
    params.emplace_back(false);
    const auto rows = context.query("UPDATE buildrequests SET complete = ?, results = ?, complete_at = ?, revision = " +
                                        bump(context, "buildrequests") +
                                        " "
                                        "WHERE id IN " +
                                        placeholders(ids.size()) + " AND complete = ? RETURNING " +
                                        std::string(buildrequest_columns),
                                    params);
    std::set<std::int64_t> bsids;
    for (const auto& request : announce_buildrequests(context, rows, "complete")) {
      bsids.insert(request.buildsetid);
      announce_buildrequest(context, request, "cancel");
    }
    complete_finished_buildsets(context, bsids);
  });
}

// --- builds and steps ----------------------------------------------------------

AddedBuild Operations::add_build(std::int64_t builderid, std::int64_t buildrequestid,
                                 std::optional<std::int64_t> workerid, std::int64_t masterid,
                                 std::string_view state_string) {
  AddedBuild added;
  run(true, [&](Context& context) {
    if (context.query("SELECT id FROM buildrequests WHERE id = ?", {buildrequestid}).empty()) {
      throw NotFound("no build request with id " + std::to_string(buildrequestid));
    }
    if (context.backend() == Backend::postgresql) {
      // One build number at a time per builder: the next transaction waits,
      // then its MAX(number) sees this one's build (READ COMMITTED). Without
      // the lock, masters racing for a builder's numbers could collide more
      // often than the retries below allow.
      context.query("SELECT id FROM builders WHERE id = ? FOR UPDATE", {builderid});
    }
    Rows rows;
    try {
      rows = context.query(
          "INSERT INTO builds (number, builderid, buildrequestid, workerid, masterid, started_at, state_string, "
          "position) VALUES ((SELECT COALESCE(MAX(number), 0) + 1 FROM builds WHERE builderid = ?), ?, ?, ?, ?, ?, "
          "?, " +
              context.change_position("builds") + ") RETURNING " + std::string(build_columns),
          {builderid, builderid, buildrequestid, workerid ? Value(*workerid) : Value(std::monostate{}), masterid,
           context.now(), std::string(state_string)});
    } catch (const detail::SessionFailure& failure) {
      // Should two transactions still number a build of this builder at
      // once, retrying takes the next number.
      if (failure.kind() != detail::FailureKind::unique_violation) throw;
      throw detail::SessionFailure(detail::FailureKind::serialization, failure.what());
    }
    Json body = build_body(rows.front());
    added = {body["buildid"].get<std::int64_t>(), body["number"].get<int>()};
    announce_build(context, std::move(body), "new");
  });
  return added;
}

void Operations::set_build_state_string(std::int64_t buildid, std::string_view state_string) {
  run(true, [&](Context& context) {
    const auto row = update_one(context, "builds", "state_string = ?", build_columns, {std::string(state_string)},
                                buildid, "build");
    announce_build(context, build_body(row), "update");
  });
}

void Operations::finish_build(std::int64_t buildid, int results) {
  run(true, [&](Context& context) {
    const auto row = update_one(context, "builds", "complete_at = ?, results = ?", build_columns,
                                {context.now(), std::int64_t{results}}, buildid, "build");
    announce_build(context, build_body(row), "finished");
  });
}

AddedStep Operations::add_step(std::int64_t buildid, std::string_view name) {
  AddedStep added;
  run(true, [&](Context& context) {
    if (context.query("SELECT id FROM builds WHERE id = ?", {buildid}).empty()) {
      throw NotFound("no build with id " + std::to_string(buildid));
    }
    std::set<std::string> names;
    std::int64_t number = 0;
    for (const auto& row : context.query("SELECT number, name FROM steps WHERE buildid = ?", {buildid})) {
      number = std::max(number, row.as_int(0) + 1);
      names.insert(row.as_text(1));
    }
    // Buildbot makes a repeated name unique with a suffix: test, test_2, test_3.
    std::string unique_name(name);
    for (int suffix = 2; names.contains(unique_name); ++suffix) {
      unique_name = std::string(name) + "_" + std::to_string(suffix);
    }
    const auto rows = context.query(
        "INSERT INTO steps (number, name, buildid, state_string, position) VALUES (?, ?, ?, ?, " +
            context.change_position("steps") + ") RETURNING " + std::string(step_columns),
        {number, unique_name, buildid, std::string("pending")});
    Json body = step_body(rows.front());
    added = {body["stepid"].get<std::int64_t>(), static_cast<int>(number), unique_name};
    announce_step(context, std::move(body), "new");
  });
  return added;
}

void Operations::start_step(std::int64_t stepid) {
  run(true, [&](Context& context) {
    const auto row = update_one(context, "steps", "started_at = ?", step_columns, {context.now()}, stepid, "step");
    announce_step(context, step_body(row), "started");
  });
}

void Operations::set_step_state_string(std::int64_t stepid, std::string_view state_string) {
  run(true, [&](Context& context) {
    const auto row = update_one(context, "steps", "state_string = ?", step_columns, {std::string(state_string)}, stepid,
                                "step");
    announce_step(context, step_body(row), "updated");
  });
}

void Operations::finish_step(std::int64_t stepid, int results, bool hidden) {
  run(true, [&](Context& context) {
    const auto row = update_one(context, "steps", "complete_at = ?, results = ?, hidden = ?", step_columns,
                                {context.now(), std::int64_t{results}, hidden}, stepid, "step");
    announce_step(context, step_body(row), "finished");
  });
}

// --- application-defined resources ---------------------------------------------

std::int64_t Operations::upsert_resource(std::string_view type, std::string_view id, const Json& state) {
  check_resource_type(type, id);
  // Its body holds the state one level down.
  wire::check_depth(state, "the state of " + std::string(type) + " " + std::string(id), wire::max_body_depth - 1);
  std::int64_t revision = 0;
  const std::string text = state.dump();
  run(true, [&](Context& context) {
    const auto before = context.query("SELECT deleted FROM resources WHERE type = ? AND id = ?",
                                      {std::string(type), std::string(id)});
    const bool created = before.empty() || before.front().as_bool(0);
    const auto rows = context.query(
        "INSERT INTO resources (type, id, state, position) VALUES (?, ?, ?, " + context.change_position("resources") +
            ") ON CONFLICT (type, id) DO UPDATE SET state = excluded.state, deleted = ?, deleted_at = NULL, "
            "revision = " +
            bump(context, "resources", "resources.revision") + " RETURNING " + std::string(resource_columns),
        {std::string(type), std::string(id), text, false});
    const Json body = resource_body(rows.front());
    revision = body["_rev"].get<std::int64_t>();
    context.announce(RoutingKey({type, id, created ? "new" : "updated"}), body);
  });
  return revision;
}

bool Operations::delete_resource(std::string_view type, std::string_view id) {
  check_resource_type(type, id);
  bool deleted = false;
  run(true, [&](Context& context) {
    const auto rows = context.query(
        "UPDATE resources SET deleted = ?, deleted_at = ?, revision = " + bump(context, "resources") +
            " WHERE type = ? AND id = ? AND deleted = ? RETURNING revision",
        {true, context.now(), std::string(type), std::string(id), false});
    deleted = !rows.empty();
    if (deleted) {
      context.announce(RoutingKey({type, id, "deleted"}),
                       Json{{"type", std::string(type)}, {"id", std::string(id)}, {"_rev", rows.front().as_int(0)}});
    }
  });
  return deleted;
}

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

// --- what changed since a watermark ---------------------------------------------

namespace {

// A watermark is "BACKEND:DATABASE_ID:TABLE:MARK", for the rows of TABLE. On
// PostgreSQL MARK is a pg_snapshot's text ("xmin:xmax:xip,…"); on SQLite the
// table's highest position.
struct Watermark {
  std::string database_id;
  std::string table;
  std::string mark;
};

std::string_view backend_prefix(Backend backend) { return backend == Backend::postgresql ? "postgresql" : "sqlite"; }

bool all_digits(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// A pg_snapshot's text form, checked before the server parses it, so that a
// bad watermark is "can't answer" rather than a failed statement.
bool snapshot_text(std::string_view mark) {
  const auto first = mark.find(':');
  const auto second = first == std::string_view::npos ? first : mark.find(':', first + 1);
  if (second == std::string_view::npos || mark.size() > 100'000) return false;
  if (!all_digits(mark.substr(0, first)) || !all_digits(mark.substr(first + 1, second - first - 1))) return false;
  const auto xip = mark.substr(second + 1);
  return std::all_of(xip.begin(), xip.end(), [](char c) { return (c >= '0' && c <= '9') || c == ','; });
}

// SQLite: a mark's position.
std::optional<std::int64_t> position_of(std::string_view mark) {
  if (!all_digits(mark) || mark.size() > 18) return std::nullopt;
  return std::stoll(std::string(mark));
}

std::optional<Watermark> parse_watermark(std::string_view text, Backend backend) {
  const auto prefix = backend_prefix(backend);
  if (!text.starts_with(prefix) || text.size() <= prefix.size() || text[prefix.size()] != ':') return std::nullopt;
  text.remove_prefix(prefix.size() + 1);
  const auto first = text.find(':');
  const auto second = first == std::string_view::npos ? first : text.find(':', first + 1);
  if (second == std::string_view::npos || first == 0 || second == first + 1) return std::nullopt;
  return Watermark{std::string(text.substr(0, first)), std::string(text.substr(first + 1, second - first - 1)),
                   std::string(text.substr(second + 1))};
}

std::string watermark_text(Backend backend, const Watermark& watermark) {
  return std::string(backend_prefix(backend)) + ":" + watermark.database_id + ":" + watermark.table + ":" +
         watermark.mark;
}

// The table that holds `type`'s rows.
std::string_view table_of(std::string_view type) {
  const TypeInfo* info = find_builtin(type);
  return info != nullptr ? info->table : "resources";
}

// Where `table`'s history stands in `context`'s transaction: the database's
// id and its mark (none without change positions).
std::optional<Watermark> current_watermark(Context& context, std::string_view table) {
  if (!context.core().has_change_positions(context)) return std::nullopt;
  if (context.backend() == Backend::postgresql) {
    const auto rows = context.query("SELECT database_id, CAST(pg_current_snapshot() AS TEXT) FROM livestate_changes");
    if (rows.empty()) return std::nullopt;
    return Watermark{rows.front().as_text(0), std::string(table), rows.front().as_text(1)};
  }
  const auto rows = context.query("SELECT database_id, (SELECT IFNULL(MAX(position), 0) FROM " + std::string(table) +
                                  ") FROM livestate_changes");
  if (rows.empty()) return std::nullopt;
  return Watermark{rows.front().as_text(0), std::string(table), std::to_string(rows.front().as_int(1))};
}

// The rows changed after `since` (a watermark of this database and table),
// as SQL over the table's `position` and its parameters; none when the mark
// can't be answered: malformed, or ahead of the database (a restored
// backup's, whose positions may be given again).
std::optional<std::pair<std::string, std::vector<Value>>> changed_after(Context& context, const Watermark& since,
                                                                        const Watermark& now) {
  if (context.backend() == Backend::postgresql) {
    if (!snapshot_text(since.mark)) return std::nullopt;
    const bool behind =
        context
            .query("SELECT pg_snapshot_xmax(CAST(? AS pg_snapshot)) <= pg_snapshot_xmax(CAST(? AS pg_snapshot))",
                   {since.mark, now.mark})
            .front()
            .as_bool(0);
    if (!behind) return std::nullopt;
    return std::pair{std::string("position >= pg_snapshot_xmin(CAST(? AS pg_snapshot)) AND "
                                 "NOT pg_visible_in_snapshot(position, CAST(? AS pg_snapshot))"),
                     std::vector<Value>{since.mark, since.mark}};
  }
  const auto then = position_of(since.mark);
  const auto current = position_of(now.mark);
  if (!then || !current || *then > *current) return std::nullopt;
  return std::pair{std::string("position > ?"), std::vector<Value>{*then}};
}

}  // namespace

std::optional<std::string> Operations::change_watermark(std::string_view type) {
  const auto table = table_of(type);
  if (table == "resources") (void)RoutingKey({type});
  std::optional<std::string> text;
  run(false, [&](Context& context) {
    const auto now = current_watermark(context, table);
    text = now ? std::optional(watermark_text(context.backend(), *now)) : std::nullopt;
  });
  return text;
}

std::optional<ChangesSince> Operations::changes_since(std::string_view type, std::string_view watermark) {
  const TypeInfo* info = find_builtin(type);
  if (info == nullptr) (void)RoutingKey({type});
  const auto table = table_of(type);
  std::optional<ChangesSince> changes;
  run(false, [&](Context& context) {
    changes.reset();
    const auto since = parse_watermark(watermark, context.backend());
    if (!since) return;
    // Read first, in the same transaction: the next changes_since() starts here.
    const auto now = current_watermark(context, table);
    if (!now || now->database_id != since->database_id || now->table != since->table) return;
    auto after = changed_after(context, *since, *now);
    if (!after) return;
    auto& [condition, params] = *after;
    changes.emplace();
    changes->watermark = watermark_text(context.backend(), *now);
    // Through the index of positions, never in id order (which SQLite would
    // rather read the whole table in): what changed is sorted afterwards.
    const std::string from = context.backend() == Backend::sqlite
                                 ? " FROM " + std::string(table) + " INDEXED BY " + std::string(table) + "_position"
                                 : " FROM " + std::string(table);
    if (info != nullptr) {
      const auto rows = context.query("SELECT " + std::string(info->columns) + from + " WHERE " + condition, params);
      for (const Row* row : in_id_order(rows)) changes->rows.push_back(info->read(context, *row));
      return;
    }
    params.insert(params.begin(), std::string(type));
    for (const auto& row : context.query("SELECT " + std::string(resource_columns) + ", deleted" + from +
                                             " WHERE type = ? AND " + condition,
                                         params)) {
      if (row.as_bool(4)) {
        changes->deletions.emplace(row.as_text(1), row.as_int(3));
      } else {
        changes->rows.push_back(resource_body(row));
      }
    }
    std::sort(changes->rows.begin(), changes->rows.end(), [](const Json& a, const Json& b) {
      return a.at("id").get_ref<const std::string&>() < b.at("id").get_ref<const std::string&>();
    });
  });
  return changes;
}

std::string Operations::id_of(std::string_view type, const Json& body) {
  if (const TypeInfo* info = find_builtin(type)) {
    return std::to_string(body.at(std::string(info->id_field)).get<std::int64_t>());
  }
  return body.at("id").get<std::string>();
}

bool Operations::is_builtin_type(std::string_view type) noexcept { return find_builtin(type) != nullptr; }

}  // namespace livestate::db
