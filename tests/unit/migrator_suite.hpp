#pragma once

// The migrator's suite, written once for both backends: tests/unit/migrator.cpp
// runs it on SQLite files, tests/pg/migrator.cpp on PostgreSQL databases.
//
// The including file defines, before including this, migrator_suite::TestDatabase:
// a fresh, empty database of its own for one test case, removed by its
// destructor, with `std::string url() const`.
//
// Raw SQL (to plant data at version 1, tamper with the records, look at the
// result) goes through the store's own connection, so that the suite needs no
// client library of either engine.

#include <doctest/doctest.h>

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "livestate/core/filter.hpp"
#include "livestate/db/errors.hpp"
#include "livestate/db/migrations.hpp"
#include "livestate/db/migrator.hpp"
#include "livestate/db/store.hpp"
#include "livestate/mq/simple_mq.hpp"
#include "migrator.hpp"    // db/src: migrate_with, to run migrations that are not shipped
#include "store_core.hpp"  // db/src: the store's sessions, for raw SQL

namespace migrator_suite {

using namespace livestate;
using namespace livestate::db;

constexpr double pinned_time = 1795838740.25;

// Runs a script of statements in a transaction of its own.
inline void exec(Store& store, std::string_view sql) {
  auto session = store.core()->acquire();
  session->begin(true);
  try {
    session->execute_script(sql);
    session->commit();
  } catch (...) {
    session->rollback();
    throw;
  }
}

inline detail::Rows query(Store& store, std::string_view sql) {
  auto session = store.core()->acquire();
  session->begin(false);
  try {
    auto rows = session->query(sql);
    session->rollback();
    return rows;
  } catch (...) {
    session->rollback();
    throw;
  }
}

inline std::int64_t count(Store& store, const std::string& table) {
  return query(store, "SELECT count(*) FROM " + table).at(0).as_int(0);
}

// The versions livestate_schema_migrations records, in order, with repeats.
inline std::vector<int> recorded_versions(Store& store) {
  std::vector<int> versions;
  for (const auto& row : query(store, "SELECT version FROM livestate_schema_migrations ORDER BY version")) {
    versions.push_back(static_cast<int>(row.as_int(0)));
  }
  return versions;
}

inline std::vector<int> versions_up_to(int last) {
  std::vector<int> versions;
  for (int version = 1; version <= last; ++version) versions.push_back(version);
  return versions;
}

inline std::string message_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "(nothing thrown)";
}

// A fresh database, an unmigrated store on it, and what the store announced
// on schema.#.
struct Fixture {
  TestDatabase database;
  std::unique_ptr<mq::Connector> connector = mq::make_simple_mq();
  std::vector<Message> announced;
  std::unique_ptr<mq::Consumer> consumer = connector->start_consuming(
      [this](const RoutingKey& key, const Json& body) {
        announced.push_back({key, body});
      },
      Filter::parse("schema.#"));
  std::unique_ptr<Store> store = open(false);

  std::unique_ptr<Store> open(bool migrate) {
    StoreOptions options;
    options.migrate = migrate;
    options.clock = [] { return pinned_time; };
    return Store::open(database.url(), *connector, options);
  }
  [[nodiscard]] std::span<const Migration> shipped() const { return shipped_migrations(store->backend()); }
  [[nodiscard]] int latest() const { return shipped().back().version; }
};

// Starts `processes` processes that open a store on `url` and migrate it, all
// released at the same moment; returns their exit statuses (0: migrated), as
// "0 0 0 0". A process that fails says why on stderr. With `set_directory`,
// they migrate the set "app" read from there instead of livestate's own.
inline std::string migrate_concurrently(const std::string& url, int processes,
                                        const std::optional<std::string>& set_directory = std::nullopt) {
  std::array<int, 2> gate{};
  REQUIRE(pipe(gate.data()) == 0);
  std::vector<pid_t> children;
  for (int i = 0; i < processes; ++i) {
    const pid_t pid = fork();
    if (pid < 0) break;
    if (pid == 0) {
      close(gate[1]);
      char byte = 0;
      while (read(gate[0], &byte, 1) > 0) {
      }  // end of file: the parent opened the gate
      int status = 0;
      try {
        auto connector = mq::make_simple_mq();
        StoreOptions options;
        options.migrate = false;
        auto store = Store::open(url, *connector, options);
        if (set_directory) {
          migrate(*store, MigrationSet::from_directory("app", *set_directory, store->backend()));
        } else {
          migrate(*store);
        }
      } catch (const std::exception& error) {
        std::fprintf(stderr, "migrating process %d: %s\n", static_cast<int>(getpid()), error.what());
        status = 1;
      }
      std::fflush(stderr);
      _exit(status);
    }
    children.push_back(pid);
  }
  close(gate[0]);
  close(gate[1]);  // every child starts now
  std::string statuses;
  for (const pid_t child : children) {
    int status = 0;
    waitpid(child, &status, 0);
    if (!statuses.empty()) statuses += ' ';
    statuses += std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  REQUIRE_MESSAGE(static_cast<int>(children.size()) == processes, "fork() failed");
  return statuses;
}

// Version 1's tables, as a program of that version would have filled them:
// claims in the build request's own row.
constexpr const char* version_1_data =
    "INSERT INTO masters (id, name) VALUES (1, 'master-1');"
    "INSERT INTO builders (id, name) VALUES (2, 'quick');"
    "INSERT INTO buildsets (id, submitted_at, reason) VALUES (1, 1795838740, 'it''s; a \"test\"');"
    "INSERT INTO buildrequests (id, buildsetid, builderid, submitted_at, claimed_by_masterid, claimed_at, "
    "revision) VALUES (1, 1, 2, 1795838740, 1, 1795838741.5, 3), (2, 1, 2, 1795838740, NULL, NULL, 1);";

}  // namespace migrator_suite

using namespace migrator_suite;

TEST_CASE("migrating an empty database applies every shipped migration and records each with its checksum") {
  Fixture f;
  CHECK(migrate(*f.store) == f.latest());
  const auto rows = query(*f.store,
                          "SELECT version, name, checksum, applied_at FROM livestate_schema_migrations "
                          "ORDER BY version");
  REQUIRE(rows.size() == f.shipped().size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Migration& shipped = f.shipped()[i];
    CAPTURE(shipped.version);
    CHECK(rows[i].as_int(0) == shipped.version);
    CHECK(rows[i].as_text(1) == shipped.name);
    CHECK(rows[i].as_text(2) == shipped.checksum);
    CHECK(rows[i].as_double(3) == pinned_time);
  }
  const MigrationStatus status = migration_status(*f.store);
  CHECK(status.database_version == f.latest());
  CHECK(status.shipped_version == f.latest());
  CHECK(status.pending.empty());
  REQUIRE(status.applied.size() == f.shipped().size());
  CHECK(status.applied.back().checksum == f.shipped().back().checksum);
  // The last migration's tables are there, and the store works on them.
  CHECK(count(*f.store, "buildrequest_claims") == 0);
  CHECK(f.store->master_active("master-1") > 0);
}

TEST_CASE("a store opened with migrations off is left alone, and one opened with them on is migrated") {
  Fixture f;
  const MigrationStatus before = migration_status(*f.store);
  CHECK(before.database_version == 0);
  CHECK(before.applied.empty());
  CHECK(before.pending.size() == f.shipped().size());
  // Looking created nothing.
  CHECK_THROWS_AS(count(*f.store, "livestate_schema_migrations"), detail::SessionFailure);
  CHECK_THROWS_AS(count(*f.store, "masters"), detail::SessionFailure);

  const auto migrated = f.open(true);
  CHECK(migration_status(*migrated).database_version == f.latest());
  CHECK(recorded_versions(*f.store) == versions_up_to(f.latest()));
}

TEST_CASE("migrating from the first migration keeps the data and carries claims over to their own table") {
  Fixture f;
  CHECK(migrate(*f.store, 1) == 1);
  exec(*f.store, version_1_data);

  CHECK(migrate(*f.store) == f.latest());
  const auto claims = query(*f.store, "SELECT brid, masterid, claimed_at FROM buildrequest_claims");
  REQUIRE(claims.size() == 1);
  CHECK(claims[0].as_int(0) == 1);
  CHECK(claims[0].as_int(1) == 1);
  CHECK(claims[0].as_double(2) == 1795838741.5);

  const auto claimed = f.store->get_buildrequest(1);
  REQUIRE(claimed);
  CHECK((*claimed)["claimed"] == true);
  CHECK((*claimed)["claimed_by_masterid"] == 1);
  CHECK((*claimed)["claimed_at"] == 1795838741.5);
  CHECK((*claimed)["_rev"] == 3);
  const auto unclaimed = f.store->get_buildrequest(2);
  REQUIRE(unclaimed);
  CHECK((*unclaimed)["claimed"] == false);
  CHECK((*unclaimed)["claimed_by_masterid"] == nullptr);
  const auto buildset = f.store->get_buildset(1);
  REQUIRE(buildset);
  CHECK((*buildset)["reason"] == "it's; a \"test\"");
  // The carried-over claim holds: nobody can claim the request again.
  const std::int64_t request = 1;
  CHECK_THROWS_AS(f.store->claim_buildrequests(std::span(&request, 1), 1), AlreadyClaimed);
}

TEST_CASE("migrating past 0005 dates the deletions made before it now; undated deletions count as recent") {
  Fixture f;
  CHECK(migrate(*f.store, 4) == 4);
  exec(*f.store,
       "INSERT INTO resources (type, id, state, revision, deleted) VALUES "
       "('widgets', 'gone', '{}', 2, TRUE), ('widgets', 'here', '{\"size\": 1}', 1, FALSE)");
  CHECK(migrate(*f.store) == f.latest());

  const auto rows = query(*f.store, "SELECT id, deleted_at FROM resources ORDER BY id");
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].as_text(0) == "gone");
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  CHECK(std::abs(rows[0].as_double(1) - now) < 300);  // the database's clock at the migration
  CHECK(rows[1].as_text(0) == "here");
  CHECK(rows[1].is_null(1));
  CHECK(f.store->deletions("widgets") == std::map<std::string, std::int64_t>{{"gone", 2}});
  CHECK(f.store->get_resource("widgets", "here").value()["state"] == Json{{"size", 1}});

  // A program older than 0005, still running in a rolling upgrade, deletes
  // without a date: recent deletions include it.
  exec(*f.store, "UPDATE resources SET deleted = TRUE, revision = 2 WHERE id = 'here'");
  CHECK(f.store->deletions("widgets", std::nullopt, std::chrono::minutes(1)) ==
        std::map<std::string, std::int64_t>{{"gone", 2}, {"here", 2}});
}

TEST_CASE("migrating an up-to-date database changes nothing and announces nothing") {
  Fixture f;
  REQUIRE(migrate(*f.store) == f.latest());
  f.announced.clear();
  CHECK(migrate(*f.store) == f.latest());
  CHECK(migrate(*f.store, f.latest()) == f.latest());
  CHECK(recorded_versions(*f.store) == versions_up_to(f.latest()));
  CHECK(f.announced.empty());
}

TEST_CASE("migrating to a version stops there, and the next migrate goes on from it") {
  Fixture f;
  CHECK(migrate(*f.store, 1) == 1);
  MigrationStatus status = migration_status(*f.store);
  CHECK(status.database_version == 1);
  REQUIRE(status.pending.size() == f.shipped().size() - 1);
  CHECK(status.pending.front().version == 2);
  CHECK(recorded_versions(*f.store) == std::vector<int>{1});
  CHECK(count(*f.store, "masters") == 0);
  CHECK_THROWS_AS(count(*f.store, "buildrequest_claims"), detail::SessionFailure);

  CHECK(f.announced ==
        std::vector<Message>{{RoutingKey{"schema", "1", "migrated"}, {{"version", 1}, {"previous", 0}}}});

  f.announced.clear();
  CHECK(migrate(*f.store) == f.latest());
  CHECK(recorded_versions(*f.store) == versions_up_to(f.latest()));
  CHECK(count(*f.store, "buildrequest_claims") == 0);
  CHECK(f.announced == std::vector<Message>{{RoutingKey{"schema", std::to_string(f.latest()), "migrated"},
                                             {{"version", f.latest()}, {"previous", 1}}}});
}

TEST_CASE("after migrating, a consumer gets schema.<version>.migrated once, with the new and previous versions") {
  Fixture f;
  REQUIRE(migrate(*f.store) == f.latest());
  REQUIRE(f.announced.size() == 1);
  CHECK(f.announced[0].key == RoutingKey{"schema", std::to_string(f.latest()), "migrated"});
  CHECK(f.announced[0].body == Json{{"version", f.latest()}, {"previous", 0}});
}

TEST_CASE("a migration changed after it was applied is refused, naming it and both checksums") {
  Fixture f;
  REQUIRE(migrate(*f.store, 1) == 1);
  const std::string tampered(64, '0');
  exec(*f.store, "UPDATE livestate_schema_migrations SET checksum = '" + tampered + "' WHERE version = 1");
  f.announced.clear();

  CHECK_THROWS_AS(migrate(*f.store), SchemaChecksumMismatch);
  const std::string message = message_of([&] { migrate(*f.store); });
  CHECK(message.find(f.store->name()) != std::string::npos);
  CHECK(message.find("migration 1 (initial) was applied with checksum " + tampered) != std::string::npos);
  CHECK(message.find("but this program ships it with checksum " + std::string(f.shipped()[0].checksum)) !=
        std::string::npos);
  CHECK(message.find("Restore the original migration") != std::string::npos);
  CHECK_THROWS_WITH_AS(migration_status(*f.store), message.c_str(), SchemaChecksumMismatch);
  CHECK_THROWS_WITH_AS(f.open(true), message.c_str(), SchemaChecksumMismatch);

  // Refused before applying anything.
  CHECK(recorded_versions(*f.store) == std::vector<int>{1});
  CHECK_THROWS_AS(count(*f.store, "buildrequest_claims"), detail::SessionFailure);
  CHECK(f.announced.empty());
}

TEST_CASE("a database migrated by a newer livestate is refused") {
  Fixture f;
  REQUIRE(migrate(*f.store) == f.latest());
  exec(*f.store,
       "INSERT INTO livestate_schema_migrations (version, name, checksum, applied_at) "
       "VALUES (99, 'from_the_future', 'abc', 0)");

  CHECK_THROWS_AS(migrate(*f.store), SchemaTooNew);
  const std::string message = message_of([&] { migrate(*f.store); });
  CHECK(message == f.store->name() +
                       " has migration 99 (from_the_future) applied, which this program does not ship (it "
                       "knows migrations up to " +
                       std::to_string(f.latest()) +
                       "): a newer version of livestate migrated it. Use that version (or a newer one) with "
                       "this database, or restore a backup taken before it was migrated.");
  CHECK_THROWS_WITH_AS(migration_status(*f.store), message.c_str(), SchemaTooNew);
  CHECK_THROWS_AS(f.open(true), SchemaTooNew);
}

TEST_CASE("migrating down is refused, and so is a version this program does not ship") {
  Fixture f;
  REQUIRE(migrate(*f.store, 2) == 2);
  f.announced.clear();
  CHECK_THROWS_WITH_AS(migrate(*f.store, 1),
                       ("cannot migrate " + f.store->name() +
                        " to version 1: it is at version 2 already, and migrations are never undone. Restore a "
                        "backup taken before it was migrated to go back.")
                           .c_str(),
                       SchemaTooNew);
  const std::string beyond = "this program ships migrations 1 to " + std::to_string(f.latest());
  CHECK_THROWS_WITH_AS(migrate(*f.store, f.latest() + 1),
                       ("cannot migrate to version " + std::to_string(f.latest() + 1) + ": " + beyond).c_str(),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(migrate(*f.store, -1), ("cannot migrate to version -1: " + beyond).c_str(),
                       std::invalid_argument);
  CHECK(recorded_versions(*f.store) == std::vector<int>{1, 2});
  CHECK(f.announced.empty());
}

TEST_CASE("a failing migration is rolled back, the ones before it stay applied, and a fixed one applies") {
  Fixture f;
  const std::string checksum(64, 'b');
  const std::vector<Migration> broken{
      f.shipped()[0],
      f.shipped()[1],
      {3, "broken", "CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);", checksum}};

  CHECK_THROWS_AS(detail::migrate_with(*f.store, broken, std::nullopt), MigrationFailed);
  const std::string message = message_of([&] { detail::migrate_with(*f.store, broken, std::nullopt); });
  CHECK(message.find("migration 3 (broken) failed on " + f.store->name() +
                     " and was rolled back; the database stays at version 2. The error: ") == 0);
  CHECK(message.find("no_such_table") != std::string::npos);
  CHECK(message.find("Fix the cause, then run `livestate migrate` again.") != std::string::npos);

  CHECK(recorded_versions(*f.store) == std::vector<int>{1, 2});
  CHECK_THROWS_AS(count(*f.store, "half_done"), detail::SessionFailure);  // rolled back, not half-applied
  CHECK(count(*f.store, "buildrequest_claims") == 0);
  // What was applied before the failure is announced: live views must reload.
  CHECK(f.announced ==
        std::vector<Message>{{RoutingKey{"schema", "2", "migrated"}, {{"version", 2}, {"previous", 0}}}});

  const std::vector<Migration> fixed{
      f.shipped()[0], f.shipped()[1], {3, "fixed", "CREATE TABLE half_done (x INTEGER);", checksum}};
  f.announced.clear();
  CHECK(detail::migrate_with(*f.store, fixed, std::nullopt) == 3);
  CHECK(count(*f.store, "half_done") == 0);
  CHECK(recorded_versions(*f.store) == std::vector<int>{1, 2, 3});
  CHECK(f.announced ==
        std::vector<Message>{{RoutingKey{"schema", "3", "migrated"}, {{"version", 3}, {"previous", 2}}}});
}

TEST_CASE("a first migration that fails leaves the database as it was") {
  Fixture f;
  const std::vector<Migration> broken{
      {1, "broken", "CREATE TABLE half_done (x INTEGER); SELECT * FROM nowhere;", std::string_view("c")}};
  CHECK_THROWS_AS(detail::migrate_with(*f.store, broken, std::nullopt), MigrationFailed);
  CHECK(detail::migration_status_with(*f.store, broken).database_version == 0);
  CHECK_THROWS_AS(count(*f.store, "half_done"), detail::SessionFailure);
  CHECK(f.announced.empty());
}

TEST_CASE("processes migrating one database at once all succeed, and apply every migration exactly once") {
  for (int round = 0; round < 3; ++round) {
    CAPTURE(round);
    TestDatabase database;
    CHECK(migrate_concurrently(database.url(), 4) == "0 0 0 0");
    auto connector = mq::make_simple_mq();
    StoreOptions options;
    options.migrate = false;
    const auto store = Store::open(database.url(), *connector, options);
    const int latest = shipped_migrations(store->backend()).back().version;
    CHECK(recorded_versions(*store) == versions_up_to(latest));
    CHECK(migration_status(*store).pending.empty());
    CHECK(count(*store, "buildrequest_claims") == 0);
  }
}
