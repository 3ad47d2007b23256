#pragma once

// The migrator behind migrate() and migration_status(), over any list of
// migrations: the public functions pass the shipped ones; tests pass lists of
// their own (a migration that fails, one with another checksum) without
// editing schema/.

#include <cstdint>
#include <optional>
#include <span>

#include "livestate/db/migrator.hpp"

namespace livestate::db::detail {

/// The PostgreSQL advisory lock key that migrating processes queue on: the
/// 64-bit FNV-1a hash of "livestate.migrate".
[[nodiscard]] std::int64_t migration_lock_key() noexcept;

/// migration_status() against `migrations` (ordered by version, 1, 2, …).
[[nodiscard]] MigrationStatus migration_status_with(Store& store, std::span<const Migration> migrations);

/// migrate() against `migrations` (ordered by version, 1, 2, …).
int migrate_with(Store& store, std::span<const Migration> migrations, std::optional<int> to);

}  // namespace livestate::db::detail
