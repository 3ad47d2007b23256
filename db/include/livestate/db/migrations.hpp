#pragma once

#include <span>
#include <string_view>

namespace livestate::db {

/// The database engines a store can live in.
enum class Backend { sqlite, postgresql };

[[nodiscard]] std::string_view to_string(Backend backend) noexcept;

/// One schema migration shipped with this version of livestate: the file
/// schema/BACKEND/NNNN_NAME.sql of the source tree, compiled into the library
/// so that an installed program needs no source tree.
struct Migration {
  int version;                ///< NNNN
  std::string_view name;      ///< NAME, e.g. "buildrequest_claims"
  std::string_view sql;       ///< the file's text
  std::string_view checksum;  ///< SHA-256 of the file, lowercase hex
};

/// The shipped migrations of a backend, ordered by version: 1, 2, … without gaps
/// (the build refuses a tree where that is not so).
[[nodiscard]] std::span<const Migration> shipped_migrations(Backend backend) noexcept;

}  // namespace livestate::db
