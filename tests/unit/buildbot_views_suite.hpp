#pragma once

// The buildbot migration set, the source that reads it and live views over
// it, on a Buildbot 3.7 schema (tests/data, made by `buildbot create-master`),
// written once for both backends: tests/unit/buildbot_views.cpp runs it on
// SQLite files, tests/pg/buildbot_views.cpp on PostgreSQL. Rows are written
// with the SQL Buildbot's own connectors run.
//
// The including file defines, before including this,
// buildbot_views_suite::BuildbotDatabase: a Buildbot database of its own
// (Buildbot's schema loaded), with `explicit BuildbotDatabase(bool with_set
// = true)` (the buildbot set applied unless false), members `connector` and
// `store` (a store on it, livestate's schema not applied), `void sql(const
// std::string&) const` (a script, on a connection of its own) and
// `std::string columns() const` (every column of Buildbot's tables, as text)
// and `std::function<std::pair<int, std::int64_t>()> writer() const` (a
// connection of its own; each call raises build request 1's priority by one
// in a transaction and returns the priority and the revision it saw).

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "livestate/db/errors.hpp"
#include "livestate/db/migrator.hpp"
#include "livestate/db/store.hpp"
#include "livestate/mq/simple_mq.hpp"
#include "livestate/reconcile/buildbot_source.hpp"
#include "livestate/reconcile/live_view.hpp"

namespace buildbot_views_suite {

using namespace livestate;

// The first buildset of a real master, as Buildbot's connectors write it.
inline void first_buildset(const BuildbotDatabase& database) {
  database.sql(
      "INSERT INTO masters (id, name, name_hash, active, last_active) VALUES (1, 'm1', 'h1', 1, 1796544677);"
      "INSERT INTO builders (id, name, name_hash) VALUES (1, 'b', 'hb');"
      "INSERT INTO sourcestamps (id, ss_hash, branch, revision, patchid, repository, codebase, project, "
      "created_at) VALUES (1, 's1', 'main', NULL, NULL, '', '', '', 1796544677);"
      "INSERT INTO buildsets (id, external_idstring, reason, submitted_at, complete, complete_at, results) "
      "VALUES (1, NULL, 'a push', 1796544677, 0, NULL, -1);"
      "INSERT INTO buildset_sourcestamps (id, buildsetid, sourcestampid) VALUES (1, 1, 1);"
      "INSERT INTO buildrequests (id, buildsetid, builderid, priority, complete, results, submitted_at, "
      "complete_at, waited_for) VALUES (1, 1, 1, 0, 0, -1, 1796544677, NULL, 0);");
}

inline Json read(const BuildbotDatabase& database, const std::string& type, const std::string& id) {
  auto source = reconcile::buildbot_source(*database.store);
  const auto rows = source->read(type, Json::object(), std::vector<std::string>{id});
  REQUIRE(rows.count(id) == 1);
  return rows.at(id);
}

inline std::int64_t rev(const Json& body) { return body.at("_rev").get<std::int64_t>(); }

}  // namespace buildbot_views_suite

using namespace buildbot_views_suite;

TEST_CASE("the buildbot set adds its revisions beside Buildbot's tables and leaves their columns alone") {
  BuildbotDatabase database(false);
  const std::string before = database.columns();
  first_buildset(database);
  db::migrate(*database.store, *db::shipped_migration_set("buildbot", database.store->backend()));
  CHECK(database.columns() == before);
  // The rows already there were numbered.
  CHECK(rev(read(database, "buildrequests", "1")) > 0);
  CHECK(rev(read(database, "buildsets", "1")) > 0);
}

TEST_CASE("a Buildbot source reads the bodies Buildbot's messages carry, with their revisions") {
  BuildbotDatabase database;
  first_buildset(database);
  database.sql(
      "INSERT INTO buildrequest_claims (brid, masterid, claimed_at) VALUES (1, 1, 1796544678);"
      "INSERT INTO builds (id, number, builderid, buildrequestid, workerid, masterid, started_at, "
      "complete_at, state_string, results) VALUES (1, 1, 1, 1, NULL, 1, 1796544678, NULL, 'starting', NULL);"
      "INSERT INTO steps (id, number, name, buildid, started_at, complete_at, state_string, results, "
      "urls_json, hidden) VALUES (1, 0, 'worker_preparation', 1, NULL, NULL, 'pending', NULL, '[]', 0);");

  Json request = read(database, "buildrequests", "1");
  CHECK(rev(request) > 0);
  request.erase("_rev");
  CHECK(request == Json::parse(R"({"builderid": 1, "buildrequestid": 1, "buildsetid": 1, "claimed": true,
    "claimed_at": 1796544678, "claimed_by_masterid": 1, "complete": false, "complete_at": null, "priority": 0,
    "properties": null, "results": -1, "submitted_at": 1796544677, "waited_for": false})"));

  Json buildset = read(database, "buildsets", "1");
  buildset.erase("_rev");
  CHECK(buildset == Json::parse(R"({"bsid": 1, "complete": false, "complete_at": null, "external_idstring": null,
    "reason": "a push", "results": -1, "submitted_at": 1796544677, "sourcestamps": [{"branch": "main",
    "codebase": "", "created_at": 1796544677, "patch": null, "project": "", "repository": "", "revision": null,
    "ssid": 1}]})"));

  Json build = read(database, "builds", "1");
  build.erase("_rev");
  CHECK(build == Json::parse(R"({"builderid": 1, "buildid": 1, "buildrequestid": 1, "complete": false,
    "complete_at": null, "masterid": 1, "number": 1, "properties": {}, "results": null,
    "started_at": 1796544678, "state_string": "starting", "workerid": null})"));

  Json step = read(database, "steps", "1");
  step.erase("_rev");
  CHECK(step == Json::parse(R"({"buildid": 1, "complete": false, "complete_at": null, "hidden": false,
    "name": "worker_preparation", "number": 0, "results": null, "started_at": null, "state_string": "pending",
    "stepid": 1, "urls": []})"));
}

TEST_CASE("every change to an entry, its claim or its sourcestamps bumps its revision, and a deletion is kept") {
  BuildbotDatabase database;
  first_buildset(database);
  std::int64_t last = rev(read(database, "buildrequests", "1"));
  const auto bumped = [&](const std::string& sql) {
    database.sql(sql);
    const std::int64_t now = rev(read(database, "buildrequests", "1"));
    const bool rose = now > last;
    last = now;
    return rose;
  };
  CHECK(bumped("INSERT INTO buildrequest_claims (brid, masterid, claimed_at) VALUES (1, 1, 5)"));
  CHECK(read(database, "buildrequests", "1").at("claimed") == true);
  CHECK(bumped("DELETE FROM buildrequest_claims WHERE brid = 1"));
  CHECK(read(database, "buildrequests", "1").at("claimed") == false);
  CHECK(bumped("UPDATE buildrequests SET complete = 1, results = 0, complete_at = 9 WHERE id = 1"));
  CHECK(read(database, "buildrequests", "1").at("results") == 0);

  const std::int64_t buildset = rev(read(database, "buildsets", "1"));
  database.sql(
      "INSERT INTO sourcestamps (id, ss_hash, created_at) VALUES (2, 's2', 1);"
      "INSERT INTO buildset_sourcestamps (id, buildsetid, sourcestampid) VALUES (2, 1, 2)");
  CHECK(rev(read(database, "buildsets", "1")) > buildset);
  CHECK(read(database, "buildsets", "1").at("sourcestamps").size() == 2);

  database.sql("DELETE FROM buildrequests WHERE id = 1");
  auto source = reconcile::buildbot_source(*database.store);
  CHECK(source->read("buildrequests", Json::object(), std::nullopt).empty());
  const auto deleted = source->deletions("buildrequests", std::nullopt, std::nullopt);
  REQUIRE(deleted.count("1") == 1);
  CHECK(deleted.at("1") > last);
  CHECK(source->deletions("buildsets", std::nullopt, std::nullopt).empty());
}

TEST_CASE("a Buildbot source refuses a type or a field it doesn't know, and binds every value") {
  BuildbotDatabase database;
  first_buildset(database);
  auto source = reconcile::buildbot_source(*database.store);
  CHECK_THROWS_AS(source->read("masters", Json::object(), std::nullopt), std::invalid_argument);
  CHECK_THROWS_AS(source->read("buildrequests", Json{{"id; DROP TABLE buildrequests", 1}}, std::nullopt),
                  std::invalid_argument);
  CHECK_THROWS_AS(source->read("buildrequests", Json{{"claimed_by_incarnation", 1}}, std::nullopt),
                  std::invalid_argument);
  CHECK(source->read("buildsets", Json{{"reason", "x'); DROP TABLE buildsets; --"}}, std::nullopt).empty());
  CHECK(source->read("buildsets", Json{{"reason", "a push"}}, std::nullopt).size() == 1);
  CHECK(source->read("buildrequests", Json{{"builderid", 1}, {"claimed", false}}, std::nullopt).size() == 1);
  CHECK(source->read("buildrequests", Json{{"claimed_by_masterid", nullptr}}, std::nullopt).size() == 1);
  CHECK(source->read("buildrequests", Json{{"builderid", 2}}, std::nullopt).empty());
  CHECK(source->read("buildrequests", Json::object(), std::vector<std::string>{"1", "x", "1; --", "99"}).size() == 1);
  CHECK(reconcile::buildbot_fields("steps").size() == 11);
  CHECK_THROWS_AS((void)reconcile::buildbot_fields("logs"), std::invalid_argument);
}

TEST_CASE("a Buildbot database without the buildbot set is refused, saying how to migrate it") {
  BuildbotDatabase database(false);
  CHECK_THROWS_AS((void)reconcile::buildbot_source(*database.store), db::SchemaOutOfDate);
  try {
    (void)reconcile::buildbot_source(*database.store);
  } catch (const db::SchemaOutOfDate& error) {
    CHECK(std::string(error.what()).find("livestate migrate --set buildbot") != std::string::npos);
  }
  // A dry run of the set lists its SQL and leaves the database as it was.
  const auto set = *db::shipped_migration_set("buildbot", database.store->backend());
  CHECK(db::planned_migrations(*database.store, set).size() == 1);
  CHECK_THROWS_AS((void)reconcile::buildbot_source(*database.store), db::SchemaOutOfDate);
}

TEST_CASE("a view told that messages without _rev are hints reloads on them and counts no anomaly") {
  BuildbotDatabase database;
  first_buildset(database);
  auto source = reconcile::buildbot_source(*database.store);
  boost::asio::io_context io;
  reconcile::ViewOptions options{.type = "buildrequests"};
  options.revisionless_messages_are_hints = true;
  reconcile::LiveView hints(*database.connector, *source, io.get_executor(), options);
  reconcile::LiveView strict(*database.connector, *source, io.get_executor(), {.type = "buildrequests"});
  hints.start();
  strict.start();
  io.run();
  REQUIRE(hints.size() == 1);

  // What Buildbot does and then announces, without a revision.
  database.sql("INSERT INTO buildrequest_claims (brid, masterid, claimed_at) VALUES (1, 1, 5)");
  database.connector->produce(RoutingKey{"buildrequests", "1", "claimed"}, {{"buildrequestid", 1}, {"claimed", true}});
  database.sql("INSERT INTO buildrequests (id, buildsetid, builderid, submitted_at, results) VALUES (2, 1, 1, 7, -1)");
  database.connector->produce(RoutingKey{"buildrequests", "2", "new"}, {{"buildrequestid", 2}});
  io.restart();
  io.run();

  CHECK(hints.verify().empty());
  CHECK(hints.get("1")->at("claimed") == true);
  CHECK(hints.size() == 2);
  const auto stats = hints.stats();
  CHECK(stats.hints == 2);
  for (std::size_t kind = 0; kind < reconcile::anomaly_kinds; ++kind) CHECK(stats.anomalies[kind] == 0);
  CHECK(strict.stats().count(reconcile::Anomaly::no_revision) == 2);
  CHECK(strict.stats().hints == 0);

  // Another set migrated (schema.<set>.<version>.migrated): both resync.
  const auto resyncs = hints.stats().resyncs;
  database.connector->produce(RoutingKey{"schema", "app", "1", "migrated"}, {{"set", "app"}, {"version", 1}});
  io.restart();
  io.run();
  CHECK(hints.stats().resyncs == resyncs + 1);
  CHECK(hints.stats().count(reconcile::Anomaly::schema_migrated) == 1);
}

TEST_CASE("an entry's revisions rise in the order its changes commit, however many write at once") {
  BuildbotDatabase database;
  first_buildset(database);
  constexpr int writers = 4;
  constexpr int changes = 30;
  // Each change raises priority by one, so priority tells the commit order.
  std::vector<std::vector<std::pair<int, std::int64_t>>> drawn(writers);
  std::vector<std::string> errors(writers);
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      try {
        const auto change = database.writer();
        for (int i = 0; i < changes; ++i) drawn[w].push_back(change());
      } catch (const std::exception& error) {
        errors[w] = error.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& error : errors) CHECK(error == "");
  std::vector<std::pair<int, std::int64_t>> all;
  for (const auto& some : drawn) all.insert(all.end(), some.begin(), some.end());
  std::sort(all.begin(), all.end());
  REQUIRE(all.size() == static_cast<std::size_t>(writers * changes));
  for (std::size_t i = 1; i < all.size(); ++i) {
    CAPTURE(i);
    CHECK(all[i].first == all[i - 1].first + 1);
    CHECK(all[i].second > all[i - 1].second);
  }
  const Json now = read(database, "buildrequests", "1");
  CHECK(now.at("priority") == writers * changes);
  CHECK(rev(now) == all.back().second);
}
