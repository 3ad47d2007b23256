#pragma once

#include <optional>
#include <string>
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
  /// its current schema) already holds, which livestate did not make (its
  /// connector's livestate_mq_… tables are livestate's). A
  /// database with such tables belongs to another application; commands that
  /// migrate "when empty" refuse it.
  std::vector<std::string> other_tables;
};

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

}  // namespace livestate::db
