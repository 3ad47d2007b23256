// What changed since a watermark: the rows of a type changed after the
// point a reader last saw, found by their change positions.

#include <algorithm>
#include <optional>
#include <string>

#include "livestate/db/store.hpp"
#include "model.hpp"

namespace livestate::db {

using namespace detail::model;

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

}  // namespace livestate::db
