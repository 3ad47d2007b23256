#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "livestate/db/migrations.hpp"

namespace livestate::db {

class Store;

/// A migration as the database records it in livestate_schema_migrations.
struct AppliedMigration {
  int version = 0;
  std::string name;
  std::string checksum;
  double applied_at = 0;  ///< seconds since the UNIX epoch
};

struct MigrationStatus {
  int database_version = 0;  ///< highest applied (0: none)
  int shipped_version = 0;   ///< highest this program ships
  std::vector<AppliedMigration> applied;
  std::vector<Migration> pending;  ///< shipped, not applied, in order
  /// When no migration is applied: the tables the database (on PostgreSQL,
  /// its current schema) already holds, which livestate did not make (tables
  /// named livestate_*, such as its connector's livestate_mq_…, are
  /// livestate's). A
  /// database with such tables belongs to another application; commands that
  /// migrate "when empty" refuse it.
  std::vector<std::string> other_tables;
  /// The migration set this status is about ("livestate": livestate's own).
  std::string set = "livestate";
};

/// A named series of migrations with a history of its own in the database:
/// livestate's own schema ("livestate"), a set compiled into a program (an
/// application's tables, the "buildbot" set of revisions on a Buildbot
/// database), or a directory of NNNN_name.sql files read at run time. Every
/// set gets the same guarantees: SHA-256 checksums, a changed or newer
/// history refused, one transaction per migration, migrating processes
/// taking turns.
///
/// livestate's own set keeps its history in livestate_schema_migrations, as
/// every earlier version did; the other sets in
/// livestate_migration_sets(set_name, version, name, checksum, applied_at).
///
/// Copies share the texts read from a directory: a set, and the Migration
/// views it hands out, stay valid as long as one copy of it lives.
class MigrationSet {
 public:
  /// livestate's own set.
  static constexpr std::string_view livestate = "livestate";

  /// A set over migrations whose texts outlive it (compiled in: static
  /// storage). std::invalid_argument unless `name` is a set name ([a-z],
  /// then [a-z0-9_], at most 48 characters) and the versions run 1, 2, …
  /// without gaps. A set may have no migration for a backend.
  MigrationSet(std::string name, std::span<const Migration> migrations);

  /// The NNNN_name.sql files of a directory (name in [a-z0-9_]), read now,
  /// each checksummed as the build checksums compiled-in sets. When the
  /// directory has a subdirectory named after the backend ("sqlite",
  /// "postgres"), that subdirectory is read; else the directory itself, for
  /// every backend. Files of other names are ignored. Throws
  /// std::invalid_argument for a bad name, a missing directory, a file named
  /// like a migration but not readable as one, or versions with a gap.
  [[nodiscard]] static MigrationSet from_directory(std::string name, const std::filesystem::path& directory,
                                                   Backend backend);

  [[nodiscard]] const std::string& name() const noexcept { return m_name; }
  [[nodiscard]] std::span<const Migration> migrations() const noexcept { return m_migrations; }
  [[nodiscard]] bool is_livestate() const noexcept { return m_name == livestate; }

 private:
  std::string m_name;
  std::shared_ptr<const void> m_texts;  // what a directory's migrations view
  std::vector<Migration> m_migrations;
};

/// The sets this library ships, for a backend: "livestate" and "buildbot"
/// (revisions on a Buildbot 3.7 database, for live views of it:
/// docs/BUILDBOT_VIEWS.md). nullopt for a name it doesn't ship for that
/// backend.
[[nodiscard]] std::optional<MigrationSet> shipped_migration_set(std::string_view name, Backend backend);
/// The names of the sets this library ships for a backend, livestate's first.
[[nodiscard]] std::vector<std::string> shipped_migration_set_names(Backend backend);

/// What the database has applied and what this program would apply. Throws
/// SchemaChecksumMismatch / SchemaTooNew as migrate() would.
[[nodiscard]] MigrationStatus migration_status(Store& store);

/// Applies the shipped migrations up to `to` (default: all), each in its own
/// transaction, recording each in livestate_schema_migrations(version, name,
/// checksum, applied_at). On PostgreSQL it holds an advisory lock meanwhile,
/// so processes migrating at once apply everything exactly once; on SQLite the
/// write lock does the same.
///
/// Refuses, before applying anything, with a message saying what to do:
/// SchemaChecksumMismatch when an applied migration differs from the shipped
/// one; SchemaTooNew when the database has a migration this program doesn't
/// ship, or `to` is below the database's version (no downgrades).
/// MigrationFailed when a migration fails: it is rolled back, the ones before
/// it stay applied.
///
/// When it applied anything, produces schema.<version>.migrated on the store's
/// connector, body {"version": new, "previous": old}, so live views reload.
/// Returns the database's version afterwards.
int migrate(Store& store, std::optional<int> to = std::nullopt);

/// migration_status() of any set. For a set other than livestate's,
/// other_tables lists, when none of its migrations is applied, the tables of
/// the database (its current schema) but livestate's history tables.
[[nodiscard]] MigrationStatus migration_status(Store& store, const MigrationSet& set);

/// migrate() of any set, with the same guarantees, refusals and errors.
/// Every set's migrations take turns on the same advisory lock on
/// PostgreSQL (one set's migration may rely on another's tables). When it
/// applied anything it announces, for livestate's own set,
/// schema.<version>.migrated as migrate() does; for another set,
/// schema.<set>.<version>.migrated, body {"set", "version", "previous"}.
int migrate(Store& store, const MigrationSet& set, std::optional<int> to = std::nullopt);

/// A dry run: the migrations migrate(store, set, to) would apply, in order,
/// with the SQL each would run, after the same checks (it throws what
/// migrate() would refuse with). Changes nothing, creates no table; views
/// into `set`.
[[nodiscard]] std::vector<Migration> planned_migrations(Store& store, const MigrationSet& set,
                                                        std::optional<int> to = std::nullopt);

/// The sets the database has a history of, livestate's own first (when it
/// has one), then the others by name.
[[nodiscard]] std::vector<std::string> recorded_migration_sets(Store& store);

}  // namespace livestate::db
