// `livestate migrate`: applies a migration set (livestate's own schema by
// default), shows it, or prints what applying it would run.

#include <algorithm>
#include <charconv>
#include <ctime>
#include <iomanip>
#include <optional>
#include <ostream>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "commands.hpp"
#include "livestate/core/json.hpp"
#include "livestate/db/migrator.hpp"
#include "livestate/db/store.hpp"
#include "livestate/mq/simple_mq.hpp"

namespace livestate::cli {
namespace {

constexpr const char* migrate_help =
    "usage: livestate migrate [--status] [--to N] [--db URL] [--json] [--set NAME [--dir DIR]] [--dry-run]\n"
    "\n"
    "Applies the migrations of a migration set that the database lacks, in\n"
    "order, each in a transaction of its own, and records each in the set's\n"
    "history (livestate's own set in livestate_schema_migrations, the others in\n"
    "livestate_migration_sets). Several processes may migrate one database at\n"
    "once: each migration is applied exactly once. It refuses, changing nothing,\n"
    "a database whose applied migrations differ from the set's (checksum) or\n"
    "that a newer version of the set has migrated. A migration that fails is\n"
    "rolled back; the ones before it stay applied.\n"
    "\n"
    "  --set NAME  the migration set: livestate (livestate's own schema, the\n"
    "              default), buildbot (revisions on a Buildbot 3.7 database, for\n"
    "              live views of it), or an application's (--dir)\n"
    "  --dir DIR   the set's NNNN_name.sql files, read now: DIR/sqlite or\n"
    "              DIR/postgres when DIR has one for the database's backend,\n"
    "              else DIR itself\n"
    "  --status    show the set's migrations, applied (when) or pending, with\n"
    "              their SHA-256 checksums; without --set, every set the program\n"
    "              ships or the database records; changes nothing\n"
    "  --dry-run   print the SQL that migrating would run, after the same checks\n"
    "              (checksums, versions); changes nothing\n"
    "  --to N      apply migrations up to version N only (never back down)\n"
    "  --db URL    sqlite:PATH, sqlite::memory: or postgresql://... (default:\n"
    "              sqlite:livestate.db)\n"
    "  --json      one JSON object on one line instead of text\n";

int parse_version(const std::string& text) {
  int version = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), version);
  if (text.empty() || error != std::errc{} || end != text.data() + text.size()) {
    throw UsageError{"--to needs a migration version number, not '" + text + "'"};
  }
  return version;
}

std::string utc_time(double seconds) {
  const auto time = static_cast<std::time_t>(seconds);
  std::tm parts{};
  gmtime_r(&time, &parts);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &parts);
  return text;
}

const db::AppliedMigration* find_applied(const db::MigrationStatus& status, int version) {
  for (const auto& applied : status.applied) {
    if (applied.version == version) return &applied;
  }
  return nullptr;
}

Json status_json(const db::MigrationStatus& status, std::span<const db::Migration> migrations) {
  Json report = {{"set", status.set},
                 {"database_version", status.database_version},
                 {"shipped_version", status.shipped_version},
                 {"applied", Json::array()},
                 {"pending", Json::array()},
                 {"migrations", Json::array()}};
  for (const auto& migration : migrations) {
    const auto* applied = find_applied(status, migration.version);
    report[applied != nullptr ? "applied" : "pending"].push_back(migration.version);
    report["migrations"].push_back({{"version", migration.version},
                                    {"name", migration.name},
                                    {"checksum", migration.checksum},
                                    {"state", applied != nullptr ? "applied" : "pending"},
                                    {"applied_at", applied != nullptr ? Json(applied->applied_at) : Json()}});
  }
  return report;
}

void print_status_text(const db::MigrationStatus& status, std::span<const db::Migration> migrations,
                       std::ostream& out) {
  const bool own = status.set == db::MigrationSet::livestate;
  out << (own ? "schema version " : "set " + status.set + ": version ") << status.database_version << "; this program "
      << (own ? "ships " : "has ") << status.shipped_version;
  if (status.pending.empty()) {
    out << " (up to date)\n";
  } else {
    out << " (" << status.pending.size() << " pending: run 'livestate migrate"
        << (own ? std::string() : " --set " + status.set) << "')\n";
  }
  std::size_t name_width = 4;
  for (const auto& migration : migrations) name_width = std::max(name_width, migration.name.size());
  out << "\n"
      << std::left << std::setw(9) << "version" << std::setw(static_cast<int>(name_width) + 2) << "name" << std::setw(9)
      << "state" << std::setw(21) << "applied (UTC)"
      << "checksum (SHA-256)\n";
  for (const auto& migration : migrations) {
    const auto* applied = find_applied(status, migration.version);
    out << std::left << std::setw(9) << migration.version << std::setw(static_cast<int>(name_width) + 2)
        << migration.name << std::setw(9) << (applied != nullptr ? "applied" : "pending") << std::setw(21)
        << (applied != nullptr ? utc_time(applied->applied_at) : std::string()) << migration.checksum << "\n";
  }
}

// --status: the set given, or livestate's own and every other set the program
// ships or the database records. livestate's own set's fields stay at the top
// of the JSON object, as before sets existed; "sets" holds every set's.
void print_status(db::Store& store, const std::optional<db::MigrationSet>& given, bool json, std::ostream& out) {
  std::vector<db::MigrationSet> sets;
  std::vector<std::string> unknown;  // recorded, but this program doesn't know their migrations
  if (given) {
    sets.push_back(*given);
  } else {
    const auto recorded = db::recorded_migration_sets(store);
    for (const auto& name : db::shipped_migration_set_names(store.backend())) {
      if (name == db::MigrationSet::livestate || std::find(recorded.begin(), recorded.end(), name) != recorded.end()) {
        sets.push_back(*db::shipped_migration_set(name, store.backend()));
      }
    }
    for (const auto& name : recorded) {
      if (!db::shipped_migration_set(name, store.backend())) unknown.push_back(name);
    }
  }
  std::vector<db::MigrationStatus> statuses;
  for (const auto& set : sets) statuses.push_back(db::migration_status(store, set));
  if (json) {
    Json report = {{"database", store.name()}, {"sets", Json::array()}};
    for (std::size_t i = 0; i < sets.size(); ++i) {
      Json one = status_json(statuses[i], sets[i].migrations());
      if (i == 0) {
        for (const auto& [field, value] : one.items()) report[field] = value;
      }
      report["sets"].push_back(std::move(one));
    }
    for (const auto& name : unknown) report["sets"].push_back({{"set", name}, {"known", false}});
    out << report.dump() << "\n";
    return;
  }
  out << "database: " << store.name() << "\n";
  for (std::size_t i = 0; i < sets.size(); ++i) {
    if (i > 0) out << "\n";
    // Another application's database (Buildbot's) that only other sets
    // were applied to: livestate's own schema is not missing there.
    if (!given && sets[i].is_livestate() && statuses[i].database_version == 0 && sets.size() + unknown.size() > 1) {
      out << "livestate's own schema: not applied (the database holds " << statuses[i].other_tables.size()
          << " tables of its own)\n";
      continue;
    }
    print_status_text(statuses[i], sets[i].migrations(), out);
  }
  for (const auto& name : unknown) {
    out << "\nset " << name << ": recorded in the database; this program doesn't ship it (--set " << name
        << " --dir DIR shows it)\n";
  }
}

void print_plan(const db::Store& store, const db::MigrationSet& set, const std::vector<db::Migration>& plan, bool json,
                std::ostream& out) {
  if (json) {
    Json report = {{"database", store.name()}, {"set", set.name()}, {"planned", Json::array()}};
    for (const auto& migration : plan) {
      report["planned"].push_back({{"version", migration.version},
                                   {"name", migration.name},
                                   {"checksum", migration.checksum},
                                   {"sql", migration.sql}});
    }
    out << report.dump() << "\n";
    return;
  }
  out << "-- dry run: " << plan.size() << " migration(s) of set " << set.name() << " to apply to " << store.name()
      << "; nothing was run\n";
  for (const auto& migration : plan) {
    out << "\n-- migration " << migration.version << " (" << migration.name << "), SHA-256 " << migration.checksum
        << "\n"
        << migration.sql;
    if (!migration.sql.empty() && migration.sql.back() != '\n') out << "\n";
  }
}

void print_migrated(const db::Store& store, const db::MigrationStatus& before, const db::MigrationStatus& after,
                    bool json, std::ostream& out) {
  // What the database gained meanwhile: applied by this call (or, when several
  // processes migrate at once, by another one, which is just as applied).
  std::vector<const db::AppliedMigration*> gained;
  for (const auto& applied : after.applied) {
    if (find_applied(before, applied.version) == nullptr) gained.push_back(&applied);
  }
  const bool own = after.set == db::MigrationSet::livestate;
  if (json) {
    Json report = {{"database", store.name()},
                   {"set", after.set},
                   {"previous_version", before.database_version},
                   {"version", after.database_version},
                   {"shipped_version", after.shipped_version},
                   {"applied", Json::array()}};
    for (const auto* applied : gained) {
      report["applied"].push_back(
          {{"version", applied->version}, {"name", applied->name}, {"checksum", applied->checksum}});
    }
    out << report.dump() << "\n";
    return;
  }
  for (const auto* applied : gained) {
    out << "applied migration " << applied->version << " (" << applied->name << ")"
        << (own ? std::string() : " of set " + after.set) << "\n";
  }
  out << store.name() << (gained.empty() ? " is" : " is now") << " at "
      << (own ? std::string("schema version ") : "version ") << after.database_version
      << (own ? std::string() : " of set " + after.set);
  if (after.database_version == after.shipped_version) {
    out << (gained.empty() ? ": up to date\n" : " (up to date)\n");
  } else {
    out << " of " << after.shipped_version << (own ? " shipped\n" : "\n");
  }
}

// The set --set and --dir name, for the store's backend.
db::MigrationSet resolve_set(const db::Store& store, const std::string& name, const std::optional<std::string>& dir) {
  if (dir) {
    try {
      return db::MigrationSet::from_directory(name, *dir, store.backend());
    } catch (const std::invalid_argument& error) {
      throw UsageError{error.what()};
    }
  }
  if (auto set = db::shipped_migration_set(name, store.backend())) return std::move(*set);
  std::string names;
  for (const auto& shipped : db::shipped_migration_set_names(store.backend())) {
    names += (names.empty() ? "" : ", ") + shipped;
  }
  throw UsageError{"this program ships no migration set '" + name + "' for " +
                   std::string(db::to_string(store.backend())) + " (it ships " + names +
                   "); give its migrations with --dir DIR"};
}

}  // namespace

int run_migrate(const std::vector<std::string>& args, std::ostream& out) {
  bool status_only = false;
  bool dry_run = false;
  bool json = false;
  std::optional<int> to;
  std::string url = default_database;
  std::optional<std::string> set_name;
  std::optional<std::string> dir;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      out << migrate_help;
      return 0;
    }
    if (arg == "--status") {
      status_only = true;
    } else if (arg == "--dry-run") {
      dry_run = true;
    } else if (arg == "--json") {
      json = true;
    } else if (auto db = take_option(args, i, "--db", "migrate")) {
      url = *db;
    } else if (auto version = take_option(args, i, "--to", "migrate")) {
      to = parse_version(*version);
    } else if (auto name = take_option(args, i, "--set", "migrate")) {
      set_name = *name;
    } else if (auto directory = take_option(args, i, "--dir", "migrate")) {
      dir = *directory;
    } else {
      throw UsageError{"unknown option '" + arg + "'; run 'livestate migrate --help'"};
    }
  }
  if (status_only && to) throw UsageError{"--to says how far to migrate; it cannot go with --status"};
  if (status_only && dry_run) throw UsageError{"--dry-run shows what migrating would run; it cannot go with --status"};
  if (dir && !set_name) throw UsageError{"--dir gives the migrations of a set: name it with --set NAME"};

  // Nobody listens to a one-shot command's schema.N.migrated; other processes
  // learn of the change through their own connectors or their next look.
  auto connector = mq::make_simple_mq();
  const bool looking = status_only || dry_run;
  if (looking) require_existing_database(url);  // looking must not create one
  db::StoreOptions options;
  options.migrate = false;
  options.read_only = looking;
  const auto store = db::Store::open(url, *connector, options);

  std::optional<db::MigrationSet> set;
  if (set_name) set = resolve_set(*store, *set_name, dir);
  if (status_only) {
    print_status(*store, set, json, out);
    return 0;
  }
  if (!set) set = resolve_set(*store, std::string(db::MigrationSet::livestate), std::nullopt);
  try {
    if (dry_run) {
      print_plan(*store, *set, db::planned_migrations(*store, *set, to), json, out);
      return 0;
    }
    const db::MigrationStatus before = db::migration_status(*store, *set);
    (void)db::migrate(*store, *set, to);
    print_migrated(*store, before, db::migration_status(*store, *set), json, out);
  } catch (const std::invalid_argument& error) {
    throw UsageError{error.what()};  // --to beyond what the set has
  }
  return 0;
}

}  // namespace livestate::cli
