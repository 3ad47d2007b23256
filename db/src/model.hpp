#pragma once

// What the data model's operations (operations*.cpp) share: each built-in
// type's columns, how its row becomes its body and the routing keys its
// events go on, and the statements several operations run. Every SELECT of a
// type lists its columns in the order its body reader expects, so that an
// UPDATE … RETURNING and a read share one reader.

#include <array>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "livestate/core/json.hpp"
#include "store_core.hpp"

namespace livestate::db::detail::model {

// The operations' files say `using namespace detail::model`, which brings
// these as well.
using detail::Context;
using detail::Row;
using detail::Rows;
using detail::Value;

// --- helpers -------------------------------------------------------------------

/// "(?,?,…)" with `count` placeholders.
[[nodiscard]] std::string placeholders(std::size_t count);
[[nodiscard]] std::vector<Value> values_of(std::span<const std::int64_t> ids);
[[nodiscard]] std::vector<std::int64_t> sorted_unique(std::span<const std::int64_t> ids);
/// "3, 4"
[[nodiscard]] std::string join_ids(const std::vector<std::int64_t>& ids);
/// "build request 3" / "build requests 3, 4"
[[nodiscard]] std::string requests(const std::vector<std::int64_t>& ids);
[[nodiscard]] Value optional_text(const std::optional<std::string>& text);
[[nodiscard]] Json optional_double(const Row& row, std::size_t column);
[[nodiscard]] Json optional_int(const Row& row, std::size_t column);
[[nodiscard]] Json optional_text(const Row& row, std::size_t column);
inline std::string key_element(std::int64_t id) { return std::to_string(id); }
/// What every change of a row of `table` sets besides its own columns: its
/// revision, and its change position.
[[nodiscard]] std::string bump(Context& context, std::string_view table, std::string_view revision = "revision");

// --- the types: how to read a row and where its events go ----------------------

inline constexpr std::string_view master_columns = "id, name, active, last_active, revision";
Json master_body(const Row& row);

inline constexpr std::string_view builder_columns = "id, name, description, tags, revision";
Json builder_body(Context& context, const Row& row);

inline constexpr std::string_view worker_columns = "id, name, info, paused, graceful, revision";
Json worker_body(const Row& row);

inline constexpr std::string_view buildset_columns =
    "id, external_idstring, reason, scheduler, submitted_at, complete, complete_at, results, "
    "sourcestamps, revision";
Json buildset_body(const Row& row);

// The request's own columns; its claim (masterid, claimed_at) follows, read by
// correlated subqueries so that UPDATE … RETURNING can use the same list.
inline constexpr std::string_view buildrequest_own_columns =
    "id, buildsetid, builderid, priority, complete, results, submitted_at, complete_at, "
    "waited_for, properties, revision";
inline const std::string buildrequest_columns = std::string(buildrequest_own_columns) +
                                         ", (SELECT masterid FROM buildrequest_claims WHERE brid = buildrequests.id)"
                                         ", (SELECT claimed_at FROM buildrequest_claims WHERE brid = buildrequests.id)";
Json buildrequest_body(const Row& row);

// A build request's ids, read from its row (the first columns of
// buildrequest_columns), and its body once kept in the transaction.
struct AnnouncedRequest {
  std::int64_t id = 0;
  std::int64_t buildsetid = 0;
  std::int64_t builderid = 0;
  std::size_t body = 0;
};

/// Queues `event` of one request on its three routing keys, sharing its kept body.
void announce_buildrequest(Context& context, const AnnouncedRequest& request, std::string_view event);
/// Keeps the body of a request's row and queues `event` for it.
AnnouncedRequest announce_buildrequest(Context& context, const Row& row, std::string_view event);
/// Announces `event` for each request row, in id order; returns what it queued.
std::vector<AnnouncedRequest> announce_buildrequests(Context& context, const Rows& rows, std::string_view event);

inline constexpr std::string_view build_columns =
    "id, number, builderid, buildrequestid, workerid, masterid, started_at, complete_at, "
    "state_string, results, revision";
Json build_body(const Row& row);
void announce_build(Context& context, Json body, std::string_view event);

inline constexpr std::string_view step_columns =
    "id, number, name, buildid, started_at, complete_at, state_string, results, urls, hidden, "
    "revision";
Json step_body(const Row& row);
void announce_step(Context& context, Json body, std::string_view event);

inline constexpr std::string_view resource_columns = "type, id, state, revision";
Json resource_body(const Row& row);

// Generic reads: each built-in type's table, id column, readable fields, reader.
struct TypeInfo {
  std::string_view name;
  std::string_view table;
  std::string_view columns;
  std::string_view id_field;                               // body field of the id
  std::map<std::string, std::string, std::less<>> fields;  // body field -> SQL expression
  Json (*read)(Context&, const Row&);
};

const std::array<TypeInfo, 7>& builtin_types();
/// The built-in type named `type`; nullptr for an application's type.
const TypeInfo* find_builtin(std::string_view type) noexcept;

/// A JSON scalar as a bound value; std::invalid_argument for another JSON type.
Value to_value(const Json& json, std::string_view field);
/// A resource id as a built-in type's integer id; std::invalid_argument if it is none.
std::int64_t parse_id(const std::string& id, std::string_view type);

// --- statements several operations run -------------------------------------------

/// Whether a change of `rows` rows is read back after it rather than with RETURNING.
bool read_after_change(const Context& context, std::size_t rows);
/// The rows `change` (an INSERT or UPDATE of rows of `table` among `ids`)
/// changed, as `columns` reads them (`column_params`: its parameters).
Rows change_returning(Context& context, std::string change, std::vector<Value> params, std::string_view columns,
                      std::string_view table, std::span<const std::int64_t> ids,
                      std::initializer_list<Value> column_params = {});
/// The rows (whose first column is the id) in id order: their messages' order.
std::vector<const Row*> in_id_order(const Rows& rows);
/// Completes every buildset among `bsids` whose requests are all complete;
/// `locked`: the caller's statement already locked them.
void complete_finished_buildsets(Context& context, const std::set<std::int64_t>& bsids, bool locked = false);
Rows bump_buildrequests(Context& context, const std::vector<std::int64_t>& ids);
/// Releases `masterid`'s claims on the incomplete requests among `ids` (all
/// of its claims: nullptr); announces unclaimed.
void release_claims(Context& context, const std::vector<std::int64_t>* ids, std::int64_t masterid);
/// The ids of `wanted` that no row (first column: the id) has.
std::vector<std::int64_t> missing_from(const std::vector<std::int64_t>& wanted, const Rows& rows);
/// Throws for claims refused: NotFound when a request does not exist, else AlreadyClaimed.
[[noreturn]] void refuse_claims(Context& context, const std::vector<std::int64_t>& refused);
/// UPDATE of one row by id; NotFound when there is none.
Row update_one(Context& context, std::string_view table, std::string_view assignments, std::string_view columns,
               std::vector<Value> params, std::int64_t id, std::string_view what);
/// std::invalid_argument for a built-in type's name, InvalidRoutingKey for a bad element.
void check_resource_type(std::string_view type, std::string_view id);

template <class Read>
std::optional<Json> read_one(Context& context, std::string_view table, std::string_view columns, std::int64_t id,
                             Read read) {
  const auto rows = context.query("SELECT " + std::string(columns) + " FROM " + std::string(table) + " WHERE id = ?",
                                  {id});
  if (rows.empty()) return std::nullopt;
  return read(rows.front());
}

}  // namespace livestate::db::detail::model
