#pragma once

// Where a benchmark runs: a SQLite file of its own, or a schema of its own on a
// PostgreSQL server, removed at the end (store_bench, view_scale_bench).

#include <stdlib.h>
#include <unistd.h>

#include <pqxx/pqxx>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>

namespace livestate::bench {

namespace fs = std::filesystem;

// A SQLite file that did not exist before the run, removed (with its -wal and
// -shm) at the end.
class SqliteScratch {
 public:
  /// `url`: sqlite:PATH of a file that must not exist yet; none: a file in a
  /// new temporary directory named after `prefix`.
  SqliteScratch(const std::optional<std::string>& url, const std::string& prefix) {
    if (!url) {
      std::string pattern = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
      if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed in " + pattern);
      m_directory = pattern;
      m_path = (fs::path(pattern) / "bench.db").string();
      return;
    }
    std::string_view rest = std::string_view(*url).substr(7);  // after "sqlite:"
    if (rest.starts_with("//")) rest.remove_prefix(2);
    if (rest.empty() || rest == ":memory:" || rest.starts_with("file:")) {
      throw std::invalid_argument("--db " + *url +
                                  ": give sqlite:PATH of a file that does not exist yet (the raw baseline "
                                  "opens the same file; the bench deletes it at the end)");
    }
    m_path = std::string(rest);
    if (fs::exists(m_path)) {
      throw std::invalid_argument("--db " + *url + ": " + m_path +
                                  " exists; the bench writes and then deletes its database, so give "
                                  "a path that does not exist yet");
    }
  }
  SqliteScratch(const SqliteScratch&) = delete;
  SqliteScratch& operator=(const SqliteScratch&) = delete;
  ~SqliteScratch() {
    std::error_code ignored;
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) fs::remove(m_path + suffix, ignored);
    if (!m_directory.empty()) fs::remove_all(m_directory, ignored);
  }

  [[nodiscard]] const std::string& path() const noexcept { return m_path; }
  [[nodiscard]] std::string url() const { return "sqlite:" + m_path; }

 private:
  std::string m_directory;  // ours to remove, when we made it
  std::string m_path;
};

// A schema of our own on the server, dropped (with everything in it) at the end.
class PostgresScratch {
 public:
  /// A schema named `prefix`_PID_N on the server `url`; `program` names the
  /// benchmark in the one line it prints when it can't drop the schema.
  PostgresScratch(const std::string& url, std::string program, const std::string& prefix)
      : m_admin(connect(url)), m_program(std::move(program)) {
    if (url.find("options=") != std::string::npos) {
      throw std::invalid_argument(
          "--db: the URL sets options= already; the bench sets "
          "options=-csearch_path=… to run in a schema of its own");
    }
    std::random_device random;
    m_schema = prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(random() % 100000);
    pqxx::nontransaction work(m_admin);
    work.exec0("CREATE SCHEMA " + m_schema);
    if (url.starts_with("postgresql://") || url.starts_with("postgres://")) {
      m_url = url + (url.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" + m_schema;
    } else {
      m_url = url + " options='-csearch_path=" + m_schema + "'";
    }
  }
  PostgresScratch(const PostgresScratch&) = delete;
  PostgresScratch& operator=(const PostgresScratch&) = delete;

  // libpq's message spans lines; the bench's errors are one line.
  static pqxx::connection connect(const std::string& url) {
    try {
      return pqxx::connection(url);
    } catch (const pqxx::broken_connection& error) {
      std::string reason = error.what();
      std::replace_if(
          reason.begin(), reason.end(), [](char c) { return c == '\n' || c == '\t'; }, ' ');
      while (!reason.empty() && (reason.back() == ' ' || reason.back() == '\t')) reason.pop_back();
      throw std::runtime_error("cannot connect to the --db server: " + reason);
    }
  }
  ~PostgresScratch() {
    try {
      pqxx::nontransaction work(m_admin);
      work.exec0("DROP SCHEMA " + m_schema + " CASCADE");
    } catch (const std::exception& error) {
      std::cerr << m_program << ": could not drop schema " << m_schema << ": " << error.what() << '\n';
    }
  }

  [[nodiscard]] const std::string& url() const noexcept { return m_url; }
  [[nodiscard]] const std::string& schema() const noexcept { return m_schema; }

 private:
  pqxx::connection m_admin;
  std::string m_program;
  std::string m_schema;
  std::string m_url;
};

}  // namespace livestate::bench
