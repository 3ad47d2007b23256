// The buildbot set, its source and views over it on SQLite files: the shared
// suite (buildbot_views_suite.hpp).

#include <sqlite3.h>
#include <stdlib.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "livestate/db/migrator.hpp"
#include "livestate/db/store.hpp"
#include "livestate/mq/simple_mq.hpp"

namespace buildbot_views_suite {

// One connection to a SQLite file, for the SQL Buildbot would run.
class Connection {
 public:
  explicit Connection(const std::filesystem::path& path) {
    if (sqlite3_open(path.c_str(), &m_db) != SQLITE_OK) throw std::runtime_error("cannot open " + path.string());
    sqlite3_busy_timeout(m_db, 10'000);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { sqlite3_close(m_db); }

  void exec(const std::string& sql) const {
    char* error = nullptr;
    if (sqlite3_exec(m_db, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
      const std::string message = error != nullptr ? error : "unknown error";
      sqlite3_free(error);
      throw std::runtime_error(message + " in: " + sql.substr(0, 200));
    }
  }
  // The rows of a query, each column as text ("NULL" for NULL), '|'-separated.
  std::vector<std::string> rows(const std::string& sql) const {
    std::vector<std::string> result;
    const auto collect = [](void* out, int columns, char** values, char**) {
      std::string row;
      for (int i = 0; i < columns; ++i) row += std::string(values[i] != nullptr ? values[i] : "NULL") + "|";
      static_cast<std::vector<std::string>*>(out)->push_back(std::move(row));
      return 0;
    };
    char* error = nullptr;
    if (sqlite3_exec(m_db, sql.c_str(), collect, &result, &error) != SQLITE_OK) {
      const std::string message = error != nullptr ? error : "unknown error";
      sqlite3_free(error);
      throw std::runtime_error(message);
    }
    return result;
  }

 private:
  sqlite3* m_db = nullptr;
};

class BuildbotDatabase {
 public:
  std::filesystem::path directory = make_directory();
  std::unique_ptr<livestate::mq::Connector> connector = livestate::mq::make_simple_mq();
  std::unique_ptr<livestate::db::Store> store;

  explicit BuildbotDatabase(bool with_set = true) {
    std::ifstream in(LIVESTATE_SOURCE_DIR "/tests/data/buildbot-3.7-schema.sqlite.sql");
    if (!in) throw std::runtime_error("tests/data/buildbot-3.7-schema.sqlite.sql is missing");
    std::ostringstream schema;
    schema << in.rdbuf();
    sql(schema.str());
    livestate::db::StoreOptions options;
    options.migrate = false;
    store = livestate::db::Store::open("sqlite:" + path().string(), *connector, options);
    if (with_set) {
      livestate::db::migrate(*store, *livestate::db::shipped_migration_set("buildbot", livestate::db::Backend::sqlite));
    }
  }
  BuildbotDatabase(const BuildbotDatabase&) = delete;
  BuildbotDatabase& operator=(const BuildbotDatabase&) = delete;
  ~BuildbotDatabase() {
    store.reset();
    std::error_code ignored;
    std::filesystem::remove_all(directory, ignored);
  }

  [[nodiscard]] std::filesystem::path path() const { return directory / "state.sqlite"; }
  void sql(const std::string& text) const { Connection(path()).exec(text); }
  std::string columns() const {
    std::string all;
    for (const auto& row : Connection(path()).rows(
             "SELECT m.name, p.name, p.type, p.dflt_value, p.\"notnull\" FROM sqlite_schema m "
             "JOIN pragma_table_info(m.name) p WHERE m.type = 'table' AND m.name NOT LIKE 'livestate%' "
             "ORDER BY m.name, p.cid")) {
      all += row + "\n";
    }
    return all;
  }
  // As on PostgreSQL (tests/pg/buildbot_views.cpp): a connection of its own,
  // one transaction per call.
  std::function<std::pair<int, std::int64_t>()> writer() const {
    auto connection = std::make_shared<Connection>(path());
    return [connection] {
      const auto row = connection->rows(
          "BEGIN IMMEDIATE;"
          "UPDATE buildrequests SET priority = priority + 1 WHERE id = 1;"
          "SELECT r.priority, v.revision FROM buildrequests r JOIN livestate_buildbot_revisions v "
          "ON v.type = 'buildrequests' AND v.id = r.id WHERE r.id = 1;"
          "COMMIT;");
      const auto bar = row.at(0).find('|');
      return std::make_pair(std::stoi(row.at(0).substr(0, bar)), std::stoll(row.at(0).substr(bar + 1)));
    };
  }

 private:
  static std::filesystem::path make_directory() {
    std::string pattern = (std::filesystem::temp_directory_path() / "livestate-buildbot-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::system_error(errno, std::generic_category(), "mkdtemp");
    return pattern;
  }
};

}  // namespace buildbot_views_suite

#include "buildbot_views_suite.hpp"
