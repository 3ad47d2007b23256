// `livestate view TYPE`: the database's rows of a resource type, as the store
// reads them (the bodies a reload returns and a message carries).

#include <algorithm>
#include <map>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "commands.hpp"
#include "livestate/core/error.hpp"
#include "livestate/core/json.hpp"
#include "livestate/db/errors.hpp"
#include "livestate/db/migrator.hpp"
#include "livestate/db/store.hpp"
#include "livestate/mq/simple_mq.hpp"
#include "livestate/reconcile/buildbot_source.hpp"
#include "table.hpp"

namespace livestate::cli {
namespace {

constexpr const char* view_help =
    "usage: livestate view TYPE [--db URL] [--json] [--source livestate|buildbot]\n"
    "\n"
    "Prints the database's entries of a resource type, ordered by id, as the\n"
    "store reads them: the same bodies its messages carry, with \"_rev\", the\n"
    "entry's revision. TYPE is a built-in type (masters, builders, workers,\n"
    "buildsets, buildrequests, builds, steps) or an application type stored in\n"
    "`resources`; an application type of which nothing is stored is an error,\n"
    "as a misspelt type would be. Never changes the database, its schema\n"
    "included: run 'livestate migrate' first.\n"
    "\n"
    "  --db URL   sqlite:PATH or postgresql://... (default: sqlite:livestate.db)\n"
    "  --json     one JSON object per line, nothing when there are none\n"
    "  --source buildbot\n"
    "             read a Buildbot 3.7 database (PostgreSQL or SQLite) instead, as a live\n"
    "             view of it reads it: TYPE is buildrequests, buildsets, builds\n"
    "             or steps, each body as Buildbot's messages carry it, with the\n"
    "             revision the buildbot migration set keeps ('livestate migrate\n"
    "             --set buildbot' first)\n";

constexpr const char* builtin_types = "masters, builders, workers, buildsets, buildrequests, builds, steps";

// Strings as they are, everything else as compact JSON.
std::string cell(const Json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_null()) return "-";
  return value.dump();
}

// The body field that holds an entry's id: buildrequestid, bsid, id…
std::string id_field(const std::string& type, const Json& body) {
  const std::string singular = type.size() > 1 && type.back() == 's' ? type.substr(0, type.size() - 1) : type;
  for (const std::string& candidate : {singular + "id", std::string("bsid"), std::string("id")}) {
    if (body.contains(candidate) && cell(body[candidate]) == db::Operations::id_of(type, body)) return candidate;
  }
  return {};
}

// A table: the id first, then every field in name order.
void print_table(const std::string& type, const std::vector<Json>& rows, std::ostream& out) {
  std::vector<std::string> columns;
  if (auto id = id_field(type, rows.front()); !id.empty()) columns.push_back(std::move(id));
  for (const auto& row : rows) {
    for (const auto& [field, value] : row.items()) {
      if (std::find(columns.begin(), columns.end(), field) == columns.end()) columns.push_back(field);
    }
  }
  std::vector<std::vector<std::string>> cells{columns};
  for (const auto& row : rows) {
    std::vector<std::string> line;
    for (const auto& column : columns) line.push_back(row.contains(column) ? cell(row[column]) : "");
    cells.push_back(std::move(line));
  }
  print_aligned(cells, out);
}

// The rows of a Buildbot database, by id as a number.
std::vector<Json> buildbot_rows(db::Store& store, const std::string& type) {
  const auto source = reconcile::buildbot_source(store);
  std::map<std::string, Json> rows;
  try {
    rows = source->read(type, Json::object(), std::nullopt);
  } catch (const std::invalid_argument& error) {
    throw UsageError{error.what()};
  }
  std::vector<std::pair<long long, Json>> ordered;
  for (auto& [id, row] : rows) ordered.emplace_back(std::stoll(id), std::move(row));
  std::sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<Json> bodies;
  for (auto& [id, row] : ordered) bodies.push_back(std::move(row));
  return bodies;
}

void print_rows(const std::string& type, const std::vector<Json>& rows, bool json, std::ostream& out) {
  if (json) {
    for (const auto& row : rows) out << row.dump() << "\n";
    return;
  }
  if (rows.empty()) {
    out << "no " << type << "\n";
    return;
  }
  print_table(type, rows, out);
  out << "(" << rows.size() << (rows.size() == 1 ? " entry)\n" : " entries)\n");
}

}  // namespace

int run_view(const std::vector<std::string>& args, std::ostream& out) {
  bool json = false;
  bool buildbot = false;
  std::string url = default_database;
  std::optional<std::string> type;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      out << view_help;
      return 0;
    }
    if (arg == "--json") {
      json = true;
    } else if (auto from = take_option(args, i, "--source", "view")) {
      if (*from != "livestate" && *from != "buildbot") {
        throw UsageError{"--source is livestate or buildbot, not '" + *from + "'"};
      }
      buildbot = *from == "buildbot";
    } else if (auto db = take_option(args, i, "--db", "view")) {
      url = *db;
    } else if (arg.size() > 1 && arg[0] == '-') {
      throw UsageError{"unknown option '" + arg + "'; run 'livestate view --help'"};
    } else if (type) {
      throw UsageError{"one TYPE at a time, not '" + *type + "' and '" + arg + "'"};
    } else {
      type = arg;
    }
  }
  if (!type || type->empty())
    throw UsageError{"which TYPE? e.g. 'livestate view buildrequests'; run 'livestate view --help'"};

  auto connector = mq::make_simple_mq();
  require_existing_database(url);
  db::StoreOptions options;
  options.read_only = true;  // a view changes nothing: not the schema, not a SQLite file's journal mode
  const auto store = db::Store::open(url, *connector, options);
  if (buildbot) {
    print_rows(*type, buildbot_rows(*store, *type), json, out);
    return 0;
  }
  if (const auto status = db::migration_status(*store); !status.pending.empty()) {
    throw db::SchemaOutOfDate(store->name() + " is at schema version " + std::to_string(status.database_version) +
                              " but this program reads version " + std::to_string(status.shipped_version) +
                              ": run 'livestate migrate --db " + store->name() + "' first");
  }

  const std::vector<Json> rows = store->list(*type);
  if (rows.empty() && !db::Operations::is_builtin_type(*type)) {
    throw Error("no type '" + *type + "' in " + store->name() + ": it is not a built-in type (" + builtin_types +
                ") and no application resource of that type is stored");
  }
  print_rows(*type, rows, json, out);
  return 0;
}

}  // namespace livestate::cli
