// The migrator: records applied migrations in livestate_schema_migrations,
// refuses a database it can't safely migrate, and applies each pending
// migration in a transaction of its own.
//
// Concurrency. Several processes may migrate one database at once, and each
// migration must be applied exactly once:
// - PostgreSQL: every migrating session first takes one advisory lock
//   (migration_lock_key()), so they run one after the other; the later ones
//   find everything applied.
// - SQLite: each migration runs in BEGIN IMMEDIATE, which holds the database's
//   write lock; inside it the applied versions are read again, so a migration
//   another process applied meanwhile is skipped, not applied twice.
// In both cases the version's PRIMARY KEY would refuse a second record anyway.

#include "migrator.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "livestate/core/log.hpp"
#include "livestate/db/errors.hpp"
#include "livestate/db/store.hpp"
#include "store_core.hpp"

namespace livestate::db {
namespace detail {
namespace {

constexpr const char* component = "db.migrate";

constexpr std::uint64_t fnv1a_64(std::string_view text) noexcept {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (const char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

// A transaction on a borrowed session: rolled back unless committed.
class ScopedTransaction {
 public:
  ScopedTransaction(Session& session, bool write) : m_session(session) {
    m_session.begin(write);
    m_open = true;
  }
  ScopedTransaction(const ScopedTransaction&) = delete;
  ScopedTransaction& operator=(const ScopedTransaction&) = delete;
  ~ScopedTransaction() { rollback(); }

  void commit() {
    m_session.commit();  // a failed commit leaves m_open set: the destructor rolls back
    m_open = false;
  }
  void rollback() noexcept {
    if (!m_open) return;
    m_open = false;
    m_session.rollback();
  }

 private:
  Session& m_session;
  bool m_open = false;
};

// PostgreSQL's session-level advisory lock (nothing on SQLite), released when
// the migration ends, however it ends, before the session returns to the pool.
class AdvisoryLock {
 public:
  AdvisoryLock(Session& session, std::int64_t key) : m_session(session), m_key(key) { m_session.lock_advisory(m_key); }
  AdvisoryLock(const AdvisoryLock&) = delete;
  AdvisoryLock& operator=(const AdvisoryLock&) = delete;
  ~AdvisoryLock() { m_session.unlock_advisory(m_key); }

 private:
  Session& m_session;
  std::int64_t m_key;
};

constexpr const char* own_table = "livestate_schema_migrations";
constexpr const char* sets_table = "livestate_migration_sets";

bool table_exists(Session& session, const char* table) {
  // Asked through the catalog, not by trying a SELECT: on PostgreSQL a failed
  // statement would abort the transaction it ran in.
  const Value params[] = {std::string(table)};
  const Rows rows = session.backend() == Backend::sqlite
                        ? session.query("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?", params)
                        : session.query("SELECT count(*) FROM pg_catalog.pg_class WHERE oid = to_regclass(?)", params);
  return !rows.empty() && rows.front().as_int(0) > 0;
}

// Where a set's history is kept: livestate's own in the table every earlier
// version kept it in, the others in one table keyed by set name.
const char* history_table(const MigrationSet& set) noexcept { return set.is_livestate() ? own_table : sets_table; }

// Every table of the database (SQLite) or of its current schema (PostgreSQL)
// but livestate's own.
std::vector<std::string> table_names(Session& session) {
  const Rows rows = session.backend() == Backend::sqlite
                        ? session.query(
                              "SELECT name FROM sqlite_schema WHERE type = 'table' "
                              "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")
                        : session.query(
                              "SELECT table_name::text FROM information_schema.tables "
                              "WHERE table_schema = current_schema() ORDER BY table_name");
  std::vector<std::string> names;
  for (const auto& row : rows) {
    // livestate's own: its histories, the connector's tables (livestate_mq_…)
    // and the buildbot set's.
    if (auto name = row.as_text(0); !name.starts_with("livestate_")) names.push_back(std::move(name));
  }
  return names;
}

void create_table(Session& session, const MigrationSet& set) {
  // Only when absent: CREATE TABLE IF NOT EXISTS would make PostgreSQL send a
  // NOTICE that libpq prints on stderr.
  if (table_exists(session, history_table(set))) return;
  const bool sqlite = session.backend() == Backend::sqlite;
  const std::string applied_at = sqlite ? "applied_at REAL NOT NULL" : "applied_at DOUBLE PRECISION NOT NULL";
  session.execute_script(set.is_livestate() ? "CREATE TABLE livestate_schema_migrations (version INTEGER PRIMARY KEY, "
                                              "name TEXT NOT NULL, checksum TEXT NOT NULL, " +
                                                  applied_at + ")"
                                            : "CREATE TABLE livestate_migration_sets (set_name TEXT NOT NULL, "
                                              "version INTEGER NOT NULL, name TEXT NOT NULL, checksum TEXT NOT NULL, " +
                                                  applied_at + ", PRIMARY KEY (set_name, version))");
}

std::vector<AppliedMigration> read_applied(Session& session, const MigrationSet& set) {
  std::vector<AppliedMigration> applied;
  if (!table_exists(session, history_table(set))) return applied;
  const Value params[] = {set.name()};
  const Rows rows = set.is_livestate() ? session.query(
                                             "SELECT version, name, checksum, applied_at "
                                             "FROM livestate_schema_migrations ORDER BY version")
                                       : session.query(
                                             "SELECT version, name, checksum, applied_at FROM livestate_migration_sets "
                                             "WHERE set_name = ? ORDER BY version",
                                             params);
  for (const Row& row : rows) {
    applied.push_back({static_cast<int>(row.as_int(0)), row.as_text(1), row.as_text(2), row.as_double(3)});
  }
  return applied;
}

void record(Session& session, const MigrationSet& set, const Migration& migration, double now) {
  if (set.is_livestate()) {
    const Value params[] = {std::int64_t{migration.version}, std::string(migration.name),
                            std::string(migration.checksum), now};
    session.execute(
        "INSERT INTO livestate_schema_migrations (version, name, checksum, applied_at) "
        "VALUES (?, ?, ?, ?)",
        params);
  } else {
    const Value params[] = {set.name(), std::int64_t{migration.version}, std::string(migration.name),
                            std::string(migration.checksum), now};
    session.execute(
        "INSERT INTO livestate_migration_sets (set_name, version, name, checksum, applied_at) "
        "VALUES (?, ?, ?, ?, ?)",
        params);
  }
}

// The command that migrates the set, for messages saying what to do.
std::string migrate_command(const MigrationSet& set) {
  return set.is_livestate() ? "livestate migrate" : "livestate migrate --set " + set.name();
}

std::string describe(const MigrationSet& set, int version, std::string_view name) {
  std::string text = "migration " + std::to_string(version) + " (" + std::string(name) + ")";
  return set.is_livestate() ? text : text + " of set '" + set.name() + "'";
}

int highest(std::span<const Migration> migrations) noexcept {
  return migrations.empty() ? 0 : migrations.back().version;
}

// Compares what the database has applied with `migrations`; throws when it
// can't be migrated by this program.
MigrationStatus assess(const std::string& database, const MigrationSet& set, std::vector<AppliedMigration> applied) {
  const std::span<const Migration> migrations = set.migrations();
  MigrationStatus status;
  status.set = set.name();
  status.shipped_version = highest(migrations);
  for (const auto& record : applied) {
    const auto shipped = std::find_if(migrations.begin(), migrations.end(),
                                      [&](const Migration& m) { return m.version == record.version; });
    if (shipped == migrations.end()) {
      throw SchemaTooNew(database + " has " + describe(set, record.version, record.name) +
                         " applied, which this program does not ship (it knows migrations up to " +
                         std::to_string(status.shipped_version) + "): a newer version of " +
                         (set.is_livestate() ? std::string("livestate")
                                             : "the program or directory that ships set '" + set.name() + "'") +
                         " migrated it. Use that version (or a newer one) with this database, or restore a "
                         "backup taken before it was migrated.");
    }
    if (record.checksum != shipped->checksum) {
      throw SchemaChecksumMismatch(
          database + ": " + describe(set, record.version, record.name) + " was applied with checksum " +
          record.checksum + ", but this program ships it with checksum " + std::string(shipped->checksum) +
          ": the migration was changed after it was applied, so the database's schema is not the one "
          "this program expects. Restore the original migration (schema files are never edited once "
          "released; add a new migration instead), or rebuild the database from a backup.");
    }
    status.database_version = std::max(status.database_version, record.version);
  }
  for (const auto& migration : migrations) {
    const bool done = std::any_of(applied.begin(), applied.end(),
                                  [&](const AppliedMigration& a) { return a.version == migration.version; });
    if (done) continue;
    if (migration.version < status.database_version) {
      throw SchemaError(database + " records migration " + std::to_string(status.database_version) +
                        " as applied but not " + describe(set, migration.version, migration.name) + ": " +
                        history_table(set) +
                        " was edited by hand. Restore it (or the database) "
                        "from a backup; livestate will not apply a migration out of order.");
    }
    status.pending.push_back(migration);
  }
  status.applied = std::move(applied);
  return status;
}

void check_target(const std::string& database, int target, int database_version) {
  if (target < database_version) {
    throw SchemaTooNew("cannot migrate " + database + " to version " + std::to_string(target) + ": it is at version " +
                       std::to_string(database_version) +
                       " already, and migrations are never undone. Restore a backup taken before it "
                       "was migrated to go back.");
  }
}

struct Outcome {
  bool applied = false;  ///< false: another process applied it meanwhile
  int version_before = 0;
};

// Applies `migration` in a transaction of its own, unless another process
// applied it meanwhile.
Outcome apply(Session& session, StoreCore& core, const MigrationSet& set, const Migration& migration) {
  ScopedTransaction transaction(session, true);
  create_table(session, set);
  // Read again under the write lock (SQLite) or the advisory lock (PostgreSQL):
  // what another process applied since the first look counts.
  const MigrationStatus now = assess(core.name(), set, read_applied(session, set));
  const bool pending = std::any_of(now.pending.begin(), now.pending.end(),
                                   [&](const Migration& m) { return m.version == migration.version; });
  if (!pending) return {false, now.database_version};
  try {
    session.execute_script(migration.sql);
    record(session, set, migration, core.now());
  } catch (const SessionFailure& failure) {
    transaction.rollback();
    throw MigrationFailed(describe(set, migration.version, migration.name) + " failed on " + core.name() +
                          " and was rolled back; the database stays at version " +
                          std::to_string(now.database_version) + ". The error: " + failure.what() +
                          ". Fix the cause, then run `" + migrate_command(set) + "` again.");
  }
  try {
    transaction.commit();
  } catch (const SessionFailure& failure) {
    if (failure.kind() == FailureKind::commit_in_doubt) {
      throw MigrationFailed("the connection to " + core.name() + " broke while committing " +
                            describe(set, migration.version, migration.name) +
                            ", so whether it was applied is unknown: " + failure.what() + ". Run `" +
                            migrate_command(set) + " --status` to see, then `" + migrate_command(set) + "` again.");
    }
    throw MigrationFailed(describe(set, migration.version, migration.name) + " could not be committed on " +
                          core.name() + " and was rolled back; the database stays at version " +
                          std::to_string(now.database_version) + ". The error: " + failure.what() +
                          ". Fix the cause, then run `" + migrate_command(set) + "` again.");
  }
  log(LogLevel::info, component, "applied " + describe(set, migration.version, migration.name) + " to " + core.name());
  return {true, now.database_version};
}

}  // namespace

std::int64_t migration_lock_key() noexcept { return static_cast<std::int64_t>(fnv1a_64("livestate.migrate")); }

MigrationStatus migration_status_with(Store& store, std::span<const Migration> migrations) {
  return migration_status(store, MigrationSet(std::string(MigrationSet::livestate), migrations));
}

int migrate_with(Store& store, std::span<const Migration> migrations, std::optional<int> to) {
  return migrate(store, MigrationSet(std::string(MigrationSet::livestate), migrations), to);
}

namespace {

// The version to migrate to; std::invalid_argument beyond what the set has.
int target_of(const MigrationSet& set, std::optional<int> to) {
  const int last = highest(set.migrations());
  if (to && (*to < 0 || *to > last)) {
    throw std::invalid_argument(
        "cannot migrate to version " + std::to_string(*to) + ": " +
        (set.is_livestate() ? std::string("this program ships") : "set '" + set.name() + "' has") +
        " migrations 1 to " + std::to_string(last));
  }
  return to.value_or(last);
}

// The key and body that announce a set's new version.
Message announcement(const MigrationSet& set, int version, int previous) {
  if (set.is_livestate()) {
    return {RoutingKey{"schema", std::to_string(version), "migrated"}, {{"version", version}, {"previous", previous}}};
  }
  return {RoutingKey{"schema", set.name(), std::to_string(version), "migrated"},
          {{"set", set.name()}, {"version", version}, {"previous", previous}}};
}

}  // namespace

}  // namespace detail

MigrationStatus migration_status(Store& store) {
  return migration_status(store,
                          MigrationSet(std::string(MigrationSet::livestate), shipped_migrations(store.backend())));
}

int migrate(Store& store, std::optional<int> to) {
  return migrate(store, MigrationSet(std::string(MigrationSet::livestate), shipped_migrations(store.backend())), to);
}

MigrationStatus migration_status(Store& store, const MigrationSet& set) {
  using namespace detail;
  StoreCore& core = *store.core();
  try {
    auto lease = core.acquire();
    ScopedTransaction transaction(*lease, false);  // read only: rolled back
    MigrationStatus status = assess(core.name(), set, read_applied(*lease, set));
    if (status.database_version == 0) status.other_tables = table_names(*lease);
    return status;
  } catch (const SessionFailure& failure) {
    core.rethrow(failure);
  }
}

std::vector<Migration> planned_migrations(Store& store, const MigrationSet& set, std::optional<int> to) {
  using namespace detail;
  const int target = target_of(set, to);
  StoreCore& core = *store.core();
  try {
    auto lease = core.acquire();
    ScopedTransaction look(*lease, false);  // read only: rolled back
    const MigrationStatus status = assess(core.name(), set, read_applied(*lease, set));
    check_target(core.name(), target, status.database_version);
    std::vector<Migration> plan;
    for (const auto& migration : status.pending) {
      if (migration.version <= target) plan.push_back(migration);
    }
    return plan;
  } catch (const SessionFailure& failure) {
    core.rethrow(failure);
  }
}

std::vector<std::string> recorded_migration_sets(Store& store) {
  using namespace detail;
  StoreCore& core = *store.core();
  try {
    auto lease = core.acquire();
    ScopedTransaction look(*lease, false);
    std::vector<std::string> sets;
    if (table_exists(*lease, own_table) &&
        lease->query("SELECT count(*) FROM livestate_schema_migrations").front().as_int(0) > 0) {
      sets.emplace_back(MigrationSet::livestate);
    }
    if (table_exists(*lease, sets_table)) {
      for (const auto& row : lease->query("SELECT DISTINCT set_name FROM livestate_migration_sets ORDER BY set_name")) {
        sets.push_back(row.as_text(0));
      }
    }
    return sets;
  } catch (const SessionFailure& failure) {
    core.rethrow(failure);
  }
}

int migrate(Store& store, const MigrationSet& set, std::optional<int> to) {
  using namespace detail;
  const int target = target_of(set, to);
  // Kept alive by the copy, whatever the store does meanwhile.
  const std::shared_ptr<StoreCore> core = store.core();

  std::optional<int> previous;  // the version before this call applied anything
  int version = 0;
  // Also after a failure, for what was applied before it. Called once the
  // session is back in the pool: a consumer may reload at once.
  const auto announce = [&]() noexcept {
    if (!previous) return;
    try {
      const Message message = announcement(set, version, *previous);
      Outbox outbox;
      outbox.bodies.push_back(message.body);
      outbox.messages.push_back({message.key, 0});
      core->produce_all(outbox);
    } catch (const std::exception& error) {
      log(LogLevel::error, component, std::string("schema change not announced: ") + error.what());
    }
  };
  try {
    auto lease = core->acquire();
    Session& session = *lease;
    // One lock for every set: a set may build on another's tables.
    const AdvisoryLock lock(session, migration_lock_key());

    std::vector<Migration> todo;
    {
      ScopedTransaction look(session, false);
      const MigrationStatus status = assess(core->name(), set, read_applied(session, set));
      check_target(core->name(), target, status.database_version);
      version = status.database_version;
      for (const auto& migration : status.pending) {
        if (migration.version <= target) todo.push_back(migration);
      }
    }
    for (const Migration& migration : todo) {
      const Outcome outcome = apply(session, *core, set, migration);
      if (outcome.applied) {
        if (!previous) previous = outcome.version_before;
        version = migration.version;
      } else {
        version = std::max(version, outcome.version_before);  // another process was quicker
      }
    }
  } catch (const SessionFailure& failure) {
    announce();
    core->rethrow(failure);
  } catch (...) {
    announce();
    throw;
  }
  announce();
  return version;
}

}  // namespace livestate::db
