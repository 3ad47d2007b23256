// `livestate migrate`: applies the shipped schema migrations, or shows them.

#include <charconv>
#include <ctime>
#include <iomanip>
#include <ostream>
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
    "usage: livestate migrate [--status] [--to N] [--db URL] [--json]\n"
    "\n"
    "Applies the schema migrations this program ships that the database lacks,\n"
    "in order, each in a transaction of its own, and records each in the table\n"
    "livestate_schema_migrations. Several processes may migrate one database at\n"
    "once: each migration is applied exactly once. It refuses, changing nothing,\n"
    "a database whose applied migrations differ from the shipped ones (checksum)\n"
    "or that a newer livestate has migrated. A migration that fails is rolled\n"
    "back; the ones before it stay applied.\n"
    "\n"
    "  --status   show every shipped migration, applied (when) or pending, with\n"
    "             its SHA-256 checksum; changes nothing\n"
    "  --to N     apply migrations up to version N only (never back down)\n"
    "  --db URL   sqlite:PATH, sqlite::memory: or postgresql://... (default:\n"
    "             sqlite:livestate.db)\n"
    "  --json     one JSON object on one line instead of text\n";

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

void print_status(const db::Store& store, const db::MigrationStatus& status, bool json, std::ostream& out) {
  const auto shipped = db::shipped_migrations(store.backend());
  if (json) {
    Json report = {{"database", store.name()},
                   {"database_version", status.database_version},
                   {"shipped_version", status.shipped_version},
                   {"applied", Json::array()},
                   {"pending", Json::array()},
                   {"migrations", Json::array()}};
    for (const auto& migration : shipped) {
      const auto* applied = find_applied(status, migration.version);
      report[applied != nullptr ? "applied" : "pending"].push_back(migration.version);
      report["migrations"].push_back({{"version", migration.version},
                                      {"name", migration.name},
                                      {"checksum", migration.checksum},
                                      {"state", applied != nullptr ? "applied" : "pending"},
                                      {"applied_at", applied != nullptr ? Json(applied->applied_at) : Json()}});
    }
    out << report.dump() << "\n";
    return;
  }
  out << "database: " << store.name() << "\n";
  out << "schema version " << status.database_version << "; this program ships " << status.shipped_version;
  if (status.pending.empty()) {
    out << " (up to date)\n";
  } else {
    out << " (" << status.pending.size() << " pending: run 'livestate migrate')\n";
  }
  std::size_t name_width = 4;
  for (const auto& migration : shipped) name_width = std::max(name_width, migration.name.size());
  out << "\n"
      << std::left << std::setw(9) << "version" << std::setw(static_cast<int>(name_width) + 2) << "name"
      << std::setw(9) << "state" << std::setw(21) << "applied (UTC)"
      << "checksum (SHA-256)\n";
  for (const auto& migration : shipped) {
    const auto* applied = find_applied(status, migration.version);
    out << std::left << std::setw(9) << migration.version << std::setw(static_cast<int>(name_width) + 2)
        << migration.name << std::setw(9) << (applied != nullptr ? "applied" : "pending") << std::setw(21)
        << (applied != nullptr ? utc_time(applied->applied_at) : std::string()) << migration.checksum << "\n";
  }
}

void print_migrated(const db::Store& store, const db::MigrationStatus& before,
                    const db::MigrationStatus& after, bool json, std::ostream& out) {
  // What the database gained meanwhile: applied by this call (or, when several
  // processes migrate at once, by another one, which is just as applied).
  std::vector<const db::AppliedMigration*> gained;
  for (const auto& applied : after.applied) {
    if (find_applied(before, applied.version) == nullptr) gained.push_back(&applied);
  }
  if (json) {
    Json report = {{"database", store.name()},
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
    out << "applied migration " << applied->version << " (" << applied->name << ")\n";
  }
  out << store.name() << (gained.empty() ? " is" : " is now") << " at schema version "
      << after.database_version;
  if (after.database_version == after.shipped_version) {
    out << (gained.empty() ? ": up to date\n" : " (up to date)\n");
  } else {
    out << " of " << after.shipped_version << " shipped\n";
  }
}

}  // namespace

int run_migrate(const std::vector<std::string>& args, std::ostream& out) {
  bool status_only = false;
  bool json = false;
  std::optional<int> to;
  std::string url = default_database;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      out << migrate_help;
      return 0;
    }
    if (arg == "--status") {
      status_only = true;
    } else if (arg == "--json") {
      json = true;
    } else if (auto db = take_option(args, i, "--db", "migrate")) {
      url = *db;
    } else if (auto version = take_option(args, i, "--to", "migrate")) {
      to = parse_version(*version);
    } else {
      throw UsageError{"unknown option '" + arg + "'; run 'livestate migrate --help'"};
    }
  }
  if (status_only && to) throw UsageError{"--to says how far to migrate; it cannot go with --status"};

  // Nobody listens to a one-shot command's schema.N.migrated; other processes
  // learn of the change through their own connectors or their next look.
  auto connector = mq::make_simple_mq();
  if (status_only) require_existing_database(url);  // --status must not create one
  db::StoreOptions options;
  options.migrate = false;
  options.read_only = status_only;
  const auto store = db::Store::open(url, *connector, options);

  const db::MigrationStatus before = db::migration_status(*store);
  if (status_only) {
    print_status(*store, before, json, out);
    return 0;
  }
  try {
    (void)db::migrate(*store, to);
  } catch (const std::invalid_argument& error) {
    throw UsageError{error.what()};  // --to beyond what this program ships
  }
  print_migrated(*store, before, db::migration_status(*store), json, out);
  return 0;
}

}  // namespace livestate::cli
