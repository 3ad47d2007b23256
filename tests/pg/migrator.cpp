// The migrator on PostgreSQL: the shared suite (tests/unit/migrator_suite.hpp),
// each case in a database of its own, plus what only PostgreSQL has.

#include <chrono>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <thread>

#include <pqxx/pqxx>

#include "pg_test_server.hpp"

namespace migrator_suite {

// A database of its own on the test server, created empty and dropped
// afterwards (with whatever connections are still open to it).
class TestDatabase {
 public:
  TestDatabase() : m_name(livestate::test::random_name("m")) {
    livestate::test::run_on_server("CREATE DATABASE " + m_name);
  }
  TestDatabase(const TestDatabase&) = delete;
  TestDatabase& operator=(const TestDatabase&) = delete;
  ~TestDatabase() {
    try {
      livestate::test::run_on_server("DROP DATABASE IF EXISTS " + m_name + " WITH (FORCE)");
    } catch (...) {
      // A database left behind dies with the throwaway server.
    }
  }
  [[nodiscard]] std::string url() const { return url_of(m_name); }
  [[nodiscard]] const std::string& name() const { return m_name; }

  // The test server's URL with another database: a URL's path replaced, or a
  // conninfo string's dbname overridden (the last keyword wins).
  static std::string url_of(const std::string& database) {
    std::string url = livestate::test::test_server_url();
    const auto scheme = url.find("://");
    if (scheme == std::string::npos) return url + " dbname=" + database;
    const auto query = url.find('?', scheme + 3);
    const auto path = url.find('/', scheme + 3);
    const auto path_end = query == std::string::npos ? url.size() : query;
    if (path == std::string::npos || path > path_end) return url.insert(path_end, "/" + database);
    return url.replace(path, path_end - path, "/" + database);
  }

 private:
  std::string m_name;
};

inline std::string before_sets_dump() { return LIVESTATE_SOURCE_DIR "/tests/data/livestate-before-sets.postgres.sql"; }

}  // namespace migrator_suite

// The sets suite uses what the migrator suite defines: it comes first.
#include "../unit/migrator_suite.hpp"

#include "../unit/migration_sets_suite.hpp"

TEST_CASE("migrating holds the advisory lock, so a second migrator waits for the first") {
  Fixture f;
  // Another session holds the migration lock, as a migrating process would.
  pqxx::connection holder(f.database.url());
  pqxx::nontransaction hold(holder);
  hold.exec("SELECT pg_advisory_lock(" + std::to_string(detail::migration_lock_key()) + ")");

  std::optional<int> migrated_to;
  std::string error;
  std::thread migrating([&] {
    try {
      const auto store = f.open(false);  // a store of its own: its own connection
      migrated_to = migrate(*store);
    } catch (const std::exception& failure) {
      error = failure.what();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  // Still waiting: nothing applied while the lock is held.
  CHECK_THROWS_AS(count(*f.store, "livestate_schema_migrations"), detail::SessionFailure);
  hold.exec("SELECT pg_advisory_unlock(" + std::to_string(detail::migration_lock_key()) + ")");
  migrating.join();
  CHECK(error == "");
  CHECK(migrated_to == f.latest());
  CHECK(recorded_versions(*f.store) == versions_up_to(f.latest()));
  // The migrator let go of the lock: it can be taken at once.
  CHECK(hold.exec1("SELECT pg_try_advisory_lock(" + std::to_string(detail::migration_lock_key()) + ")")[0].as<bool>());
}

TEST_CASE("the lock is released when a migration fails, so the next migrate can run") {
  Fixture f;
  const std::vector<Migration> broken{{1, "broken", "SELECT * FROM nowhere;", std::string_view("c")}};
  CHECK_THROWS_AS(detail::migrate_with(*f.store, broken, std::nullopt), MigrationFailed);
  pqxx::connection other(f.database.url());
  pqxx::nontransaction work(other);
  CHECK(work.exec1("SELECT pg_try_advisory_lock(" + std::to_string(detail::migration_lock_key()) + ")")[0].as<bool>());
  work.exec("SELECT pg_advisory_unlock_all()");
  CHECK(migrate(*f.store) == f.latest());
}
