#pragma once

#include <filesystem>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "livestate/core/detail/postgres.hpp"
#include "livestate/db/detail/sqlite_url.hpp"
#include "livestate/db/errors.hpp"

namespace livestate::cli {

/// Thrown for bad command-line input: main prints it as one line and exits 2.
struct UsageError {
  std::string message;
};

/// Where a command's store is when --db is not given.
inline constexpr const char* default_database = "sqlite:livestate.db";

/// Reads option `name` ("--db") at args[index], as `--db VALUE` or `--db=VALUE`,
/// advancing index past its value. Nothing when args[index] is another
/// argument; UsageError when the value is missing.
inline std::optional<std::string> take_option(const std::vector<std::string>& args, std::size_t& index,
                                              std::string_view name, std::string_view command) {
  const std::string& arg = args[index];
  if (arg == name) {
    if (index + 1 >= args.size()) {
      throw UsageError{std::string(name) + " needs a value; run 'livestate " + std::string(command) + " --help'"};
    }
    return args[++index];
  }
  if (arg.size() > name.size() && arg.compare(0, name.size(), name) == 0 && arg[name.size()] == '=') {
    return arg.substr(name.size() + 1);
  }
  return std::nullopt;
}

/// For commands that only read: a SQLite URL must name an existing file, since
/// opening one creates it. DatabaseError otherwise, saying how to create it.
inline void require_existing_database(const std::string& url) {
  const auto sqlite = db::detail::parse_sqlite_url(url);
  if (!sqlite || sqlite->file.empty()) return;
  std::error_code error;
  if (!std::filesystem::exists(sqlite->file, error)) {
    throw db::DatabaseError("there is no database at " + sqlite->file + ": run 'livestate migrate --db " + url +
                            "' to create one");
  }
}

/// The message transport a --db URL offers, by the rules Store::open and
/// mq::connect use: SQLite (the embedded default) has only the in-process
/// connector, which reaches no other process; PostgreSQL (a postgresql:// or
/// postgres:// URL, or a libpq conninfo string "host=... dbname=...") has
/// LISTEN/NOTIFY between processes. UsageError for anything else (without
/// repeating the URL, which may hold a password).
enum class Transport { in_process, postgresql };

inline Transport transport_of(std::string_view url, std::string_view command) {
  if (url.starts_with("sqlite:")) return Transport::in_process;
  if (livestate::detail::is_postgres_url(url)) return Transport::postgresql;
  throw UsageError{"--db needs sqlite:PATH, a postgresql:// URL or a libpq conninfo string; run 'livestate " +
                   std::string(command) + " --help'"};
}

int run_chaos(const std::vector<std::string>& args, std::ostream& out);
int run_demo(const std::vector<std::string>& args, std::ostream& out);
int run_migrate(const std::vector<std::string>& args, std::ostream& out);
int run_view(const std::vector<std::string>& args, std::ostream& out);
int run_replay(const std::vector<std::string>& args, std::ostream& out);
int run_slots(const std::vector<std::string>& args, std::ostream& out);
int run_produce(const std::vector<std::string>& args, std::ostream& out);
int run_watch(const std::vector<std::string>& args, std::ostream& out);

}  // namespace livestate::cli
