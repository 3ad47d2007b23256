#pragma once

// How livestate reads a SQLite URL; shared by the store and the command line,
// which must know whether a file exists before a read-only command opens it.
// Private to livestate (installed only because the module's headers are).

#include <optional>
#include <string>
#include <string_view>

namespace livestate::db::detail {

struct SqliteUrl {
  /// sqlite::memory: (a database private to one store).
  bool memory = false;
  /// What SQLite opens: a path, or a URI filename ("file:PATH?mode=ro").
  std::string filename;
  /// The file on disk, percent-decoded, without a URI's query; empty when
  /// there is none (memory, or a URI such as file::memory:).
  std::string file;
};

/// `sqlite:PATH`, `sqlite://PATH`, `sqlite:file:PATH?query` or
/// `sqlite::memory:`; std::nullopt for a URL of another scheme. Throws
/// std::invalid_argument for a SQLite URL that names no file.
[[nodiscard]] std::optional<SqliteUrl> parse_sqlite_url(std::string_view url);

}  // namespace livestate::db::detail
