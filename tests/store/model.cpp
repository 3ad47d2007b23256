// The data model's behaviour, the same on both backends: this file is compiled
// twice, as unit_store_model (SQLite files) and pg_store_model (the harness's
// PostgreSQL server, a fresh schema per test case).

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "livestate/livestate.hpp"
#include "test_database.hpp"

namespace {

using livestate::Filter;
using livestate::Json;
using livestate::Message;
using livestate::RoutingKey;
namespace db = livestate::db;

// A store on a fresh database, with a consumer recording every message.
struct Fixture {
  livestate::test::TestDatabase database;
  std::unique_ptr<livestate::mq::Connector> mq = livestate::mq::make_simple_mq();
  std::mutex mutex;
  std::vector<Message> messages;
  std::unique_ptr<livestate::mq::Consumer> consumer = mq->start_consuming(
      [this](const RoutingKey& key, const Json& body) {
        std::lock_guard lock(mutex);
        messages.push_back({key, body});
      },
      Filter::parse("#"));
  double clock = 1795838740.0;
  std::unique_ptr<db::Store> store = open();

  Fixture() {
    // Opening migrated the empty database and announced schema.N.migrated.
    const auto opened = take();
    REQUIRE(opened.size() == 1);
    CHECK(opened[0].key[0] == "schema");
  }

  std::unique_ptr<db::Store> open() {
    db::StoreOptions options;
    options.clock = [this] { return clock; };
    return db::Store::open(database.url(), *mq, options);
  }

  std::vector<std::string> keys() {
    std::lock_guard lock(mutex);
    std::vector<std::string> result;
    for (const auto& message : messages) result.push_back(message.key.str());
    return result;
  }

  std::vector<Message> take() {
    std::lock_guard lock(mutex);
    return std::exchange(messages, {});
  }

  // A master, a builder it runs, and one buildset with a request for it.
  struct Scene {
    std::int64_t masterid, builderid, bsid, brid;
  };
  Scene scene() {
    Scene s{};
    s.masterid = store->master_active("m1");
    s.builderid = store->builder_started("quick", s.masterid);
    db::NewBuildset buildset;
    buildset.builderids = {s.builderid};
    buildset.reason = "because";
    buildset.scheduler = "periodic";
    const auto added = store->add_buildset(buildset);
    s.bsid = added.bsid;
    s.brid = added.buildrequestids.at(s.builderid);
    take();
    return s;
  }

  // Another buildset's request for the scene's builder, claimed by `masterid`.
  std::int64_t request_claimed_by(const Scene& s, std::int64_t masterid) {
    db::NewBuildset more;
    more.builderids = {s.builderid};
    const auto id = store->add_buildset(more).buildrequestids.at(s.builderid);
    store->claim_buildrequests(std::vector<std::int64_t>{id}, masterid);
    take();
    return id;
  }
};

std::vector<std::string> paths_of_request(const Fixture::Scene& s, const std::string& event) {
  const auto bs = std::to_string(s.bsid), b = std::to_string(s.builderid), r = std::to_string(s.brid);
  return {"buildsets." + bs + ".builders." + b + ".buildrequests." + r + "." + event,
          "buildrequests." + r + "." + event, "builders." + b + ".buildrequests." + r + "." + event};
}

}  // namespace

TEST_CASE("a master that becomes active is announced as started once, with its revision") {
  Fixture f;
  const auto id = f.store->master_active("vm:/srv/master");
  CHECK(f.store->master_active("vm:/srv/master") == id);
  const auto messages = f.take();
  REQUIRE(messages.size() == 1);
  CHECK(messages[0].key.str() == "masters." + std::to_string(id) + ".started");
  CHECK(messages[0].body["name"] == "vm:/srv/master");
  CHECK(messages[0].body["active"] == true);
  CHECK(messages[0].body["_rev"].is_number_integer());
  // The second call bumped the revision without a message.
  CHECK(f.store->get_master(id)->at("_rev").get<int>() > messages[0].body["_rev"].get<int>());
}

TEST_CASE("adding a buildset announces it, then each build request on its three paths") {
  Fixture f;
  const auto master = f.store->master_active("m1");
  const auto b1 = f.store->builder_started("fanout", master);
  const auto b2 = f.store->builder_started("quick", master);
  f.take();
  db::NewBuildset buildset;
  buildset.builderids = {b2, b1};
  buildset.reason = "The Periodic scheduler named 'periodic-pair' triggered this build";
  buildset.scheduler = "periodic-pair";
  buildset.sourcestamps = Json::parse(R"([{"ssid":1,"branch":null,"codebase":"","project":""}])");
  const auto added = f.store->add_buildset(buildset);
  REQUIRE(added.buildrequestids.size() == 2);

  const auto messages = f.take();
  REQUIRE(messages.size() == 7);
  CHECK(messages[0].key.str() == "buildsets." + std::to_string(added.bsid) + ".new");
  CHECK(messages[0].body["bsid"] == added.bsid);
  CHECK(messages[0].body["complete"] == false);
  CHECK(messages[0].body["sourcestamps"] == buildset.sourcestamps);
  CHECK(messages[0].body["submitted_at"] == 1795838740.0);
  const Fixture::Scene first{master, b1, added.bsid, added.buildrequestids.at(b1)};
  const auto paths = paths_of_request(first, "new");
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(messages[1 + i].key.str() == paths[i]);
    CHECK(messages[1 + i].body == messages[1].body);
  }
  const Json& request = messages[1].body;
  CHECK(request["buildrequestid"] == first.brid);
  CHECK(request["claimed"] == false);
  CHECK(request["claimed_by_masterid"].is_null());
  CHECK(request["complete"] == false);
  CHECK(request["results"] == -1);
  CHECK(request["_rev"] == 1);
  // A reload returns what the message said.
  CHECK(f.store->get_buildrequest(first.brid) == request);
  CHECK(f.store->get_buildset(added.bsid) == messages[0].body);
}

TEST_CASE("claiming build requests announces claimed on every path, with the claim and a new revision") {
  Fixture f;
  const auto s = f.scene();
  const int before = f.store->get_buildrequest(s.brid)->at("_rev");
  f.clock += 3;
  f.store->claim_buildrequests(std::vector<std::int64_t>{s.brid}, s.masterid);
  const auto messages = f.take();
  REQUIRE(messages.size() == 3);
  const auto paths = paths_of_request(s, "claimed");
  for (std::size_t i = 0; i < 3; ++i) CHECK(messages[i].key.str() == paths[i]);
  const Json& body = messages[0].body;
  CHECK(body["claimed"] == true);
  CHECK(body["claimed_by_masterid"] == s.masterid);
  CHECK(body["claimed_at"] == 1795838743.0);
  CHECK(body["_rev"] == before + 1);
  CHECK(f.store->get_buildrequest(s.brid) == body);
}

TEST_CASE("a claim of several requests of which another master holds one claims none of them") {
  Fixture f;
  const auto s = f.scene();
  const auto other = f.store->master_active("m2");
  const auto second = f.request_claimed_by(s, other);

  const std::vector<std::int64_t> both{s.brid, second};
  try {
    f.store->claim_buildrequests(both, s.masterid);
    FAIL("the claim should have been refused");
  } catch (const db::AlreadyClaimed& refused) {
    CHECK(refused.buildrequestids() == std::vector<std::int64_t>{second});
    CHECK(std::string(refused.what()).find(std::to_string(second)) != std::string::npos);
  }
  CHECK(f.take().empty());
  CHECK(f.store->get_buildrequest(s.brid)->at("claimed") == false);
  CHECK(f.store->get_buildrequest(second)->at("claimed_by_masterid") == other);
}

TEST_CASE("claiming an unknown build request throws NotFound and claims nothing") {
  Fixture f;
  const auto s = f.scene();
  CHECK_THROWS_AS(f.store->claim_buildrequests(std::vector<std::int64_t>{s.brid, 999}, s.masterid), db::NotFound);
  CHECK(f.store->get_buildrequest(s.brid)->at("claimed") == false);
  CHECK(f.take().empty());
}

TEST_CASE("completing a request whose claim the master does not hold throws NotClaimed and changes nothing") {
  Fixture f;
  const auto s = f.scene();
  const auto other = f.store->master_active("m2");
  const std::vector<std::int64_t> ids{s.brid};
  CHECK_THROWS_AS(f.store->complete_buildrequests(ids, db::results::success, s.masterid), db::NotClaimed);
  f.store->claim_buildrequests(ids, other);
  f.take();
  try {
    f.store->complete_buildrequests(ids, db::results::success, s.masterid);
    FAIL("completion by a master without the claim should be refused");
  } catch (const db::NotClaimed& refused) {
    CHECK(refused.buildrequestids() == ids);
    CHECK(std::string(refused.what()).find("does not hold the claim") != std::string::npos);
  }
  CHECK(f.take().empty());
  CHECK(f.store->get_buildrequest(s.brid)->at("complete") == false);
}

TEST_CASE("completing the last request of a buildset completes the buildset with the worst result") {
  Fixture f;
  const auto s = f.scene();
  const auto other_builder = f.store->builder_started("slow", s.masterid);
  db::NewBuildset two;
  two.builderids = {s.builderid, other_builder};
  const auto added = f.store->add_buildset(two);
  const auto r1 = added.buildrequestids.at(s.builderid), r2 = added.buildrequestids.at(other_builder);
  f.store->claim_buildrequests(std::vector<std::int64_t>{r1, r2}, s.masterid);
  f.take();

  f.clock += 7;
  f.store->complete_buildrequests(std::vector<std::int64_t>{r1}, db::results::warnings, s.masterid);
  auto messages = f.take();
  REQUIRE(messages.size() == 3);  // the buildset is not complete yet
  CHECK(messages[0].body["complete"] == true);
  CHECK(messages[0].body["results"] == db::results::warnings);
  CHECK(messages[0].body["complete_at"] == 1795838747.0);
  CHECK(messages[0].body["claimed_by_masterid"] == s.masterid);

  f.store->complete_buildrequests(std::vector<std::int64_t>{r2}, db::results::failure, s.masterid);
  messages = f.take();
  REQUIRE(messages.size() == 4);
  CHECK(messages[3].key.str() == "buildsets." + std::to_string(added.bsid) + ".complete");
  CHECK(messages[3].body["complete"] == true);
  CHECK(messages[3].body["results"] == db::results::failure);
  CHECK(f.store->get_buildset(added.bsid) == messages[3].body);
}

TEST_CASE("unclaiming releases only the caller's claims on incomplete requests") {
  Fixture f;
  const auto s = f.scene();
  const auto other = f.store->master_active("m2");
  const auto theirs = f.request_claimed_by(s, other);
  f.store->claim_buildrequests(std::vector<std::int64_t>{s.brid}, s.masterid);
  f.take();

  f.store->unclaim_buildrequests(std::vector<std::int64_t>{s.brid, theirs}, s.masterid);
  const auto messages = f.take();
  REQUIRE(messages.size() == 3);
  CHECK(messages[1].key.str() == "buildrequests." + std::to_string(s.brid) + ".unclaimed");
  CHECK(messages[1].body["claimed"] == false);
  CHECK(messages[1].body["claimed_at"].is_null());
  CHECK(f.store->get_buildrequest(theirs)->at("claimed_by_masterid") == other);
  // Released, it can be claimed again.
  f.store->claim_buildrequests(std::vector<std::int64_t>{s.brid}, other);
  CHECK(f.store->get_buildrequest(s.brid)->at("claimed_by_masterid") == other);
}

TEST_CASE("a stopping master releases its claims, announcing each as unclaimed") {
  Fixture f;
  const auto s = f.scene();
  f.store->claim_buildrequests(std::vector<std::int64_t>{s.brid}, s.masterid);
  f.take();
  f.store->master_stopped(s.masterid);
  const auto keys = f.keys();
  REQUIRE(keys.size() == 4);
  CHECK(keys[0] == "masters." + std::to_string(s.masterid) + ".stopped");
  CHECK(keys[2] == "buildrequests." + std::to_string(s.brid) + ".unclaimed");
  CHECK(f.store->get_master(s.masterid)->at("active") == false);
  CHECK_THROWS_AS(f.store->master_stopped(12345), db::NotFound);
}

TEST_CASE("cancelling a request completes it as cancelled and announces complete, then cancel") {
  Fixture f;
  const auto s = f.scene();
  f.store->cancel_buildrequests(std::vector<std::int64_t>{s.brid});
  const auto messages = f.take();
  REQUIRE(messages.size() == 7);
  CHECK(messages[1].key.str() == "buildrequests." + std::to_string(s.brid) + ".complete");
  CHECK(messages[4].key.str() == "buildrequests." + std::to_string(s.brid) + ".cancel");
  CHECK(messages[1].body["results"] == db::results::cancelled);
  CHECK(messages[6].key.str() == "buildsets." + std::to_string(s.bsid) + ".complete");
  CHECK(messages[6].body["results"] == db::results::cancelled);
  // Cancelling again changes nothing.
  f.store->cancel_buildrequests(std::vector<std::int64_t>{s.brid});
  CHECK(f.take().empty());
}

TEST_CASE("a build and its steps announce their lifecycle on Buildbot's paths") {
  Fixture f;
  const auto s = f.scene();
  f.store->claim_buildrequests(std::vector<std::int64_t>{s.brid}, s.masterid);
  const auto worker = f.store->find_worker_id("w1");
  CHECK(f.store->find_worker_id("w1") == worker);
  f.take();

  const auto build = f.store->add_build(s.builderid, s.brid, worker, s.masterid, "starting");
  CHECK(build.number == 1);
  const auto b = std::to_string(build.buildid);
  auto keys = f.keys();
  CHECK(keys == std::vector<std::string>{"builders." + std::to_string(s.builderid) + ".builds.1.new",
                                         "builds." + b + ".new",
                                         "workers." + std::to_string(worker) + ".builds." + b + ".new"});
  auto messages = f.take();
  CHECK(messages[0].body["state_string"] == "starting");
  CHECK(messages[0].body["complete"] == false);
  CHECK(messages[0].body["properties"] == Json::object());

  f.store->set_build_state_string(build.buildid, "building");
  CHECK(f.take()[1].body["state_string"] == "building");

  const auto step = f.store->add_step(build.buildid, "compile");
  const auto again = f.store->add_step(build.buildid, "compile");
  CHECK(step.number == 0);
  CHECK(again.number == 1);
  CHECK(again.name == "compile_2");
  messages = f.take();
  REQUIRE(messages.size() == 4);
  CHECK(messages[0].key.str() == "builds." + b + ".steps." + std::to_string(step.stepid) + ".new");
  CHECK(messages[1].key.str() == "steps." + std::to_string(step.stepid) + ".new");
  CHECK(messages[0].body["state_string"] == "pending");
  CHECK(messages[0].body["started_at"].is_null());

  f.clock += 1;
  f.store->start_step(step.stepid);
  f.store->set_step_state_string(step.stepid, "compiling");
  f.store->finish_step(step.stepid, db::results::success);
  keys = f.keys();
  REQUIRE(keys.size() == 6);
  CHECK(keys[1] == "steps." + std::to_string(step.stepid) + ".started");
  CHECK(keys[3] == "steps." + std::to_string(step.stepid) + ".updated");
  CHECK(keys[5] == "steps." + std::to_string(step.stepid) + ".finished");
  messages = f.take();
  CHECK(messages[5].body["complete"] == true);
  CHECK(messages[5].body["results"] == db::results::success);
  CHECK(messages[5].body["started_at"] == 1795838741.0);
  CHECK(f.store->get_step(step.stepid) == messages[5].body);

  f.store->finish_build(build.buildid, db::results::success);
  messages = f.take();
  REQUIRE(messages.size() == 3);
  CHECK(messages[1].key.str() == "builds." + b + ".finished");
  CHECK(messages[1].body["complete"] == true);
  CHECK(f.store->get_build(build.buildid) == messages[1].body);
  CHECK(f.store->add_build(s.builderid, s.brid, std::nullopt, s.masterid, "again").number == 2);

  CHECK_THROWS_AS(f.store->start_step(999999), db::NotFound);
  CHECK_THROWS_AS(f.store->set_build_state_string(999999, "x"), db::NotFound);
  CHECK_THROWS_AS(f.store->add_step(999999, "x"), db::NotFound);
}

TEST_CASE("a resource is announced new, then updated, then deleted, and its revision keeps rising") {
  Fixture f;
  CHECK(f.store->upsert_resource("deployments", "web-1", Json{{"replicas", 3}}) == 1);
  CHECK(f.store->upsert_resource("deployments", "web-1", Json{{"replicas", 4}}) == 2);
  CHECK(f.store->delete_resource("deployments", "web-1"));
  CHECK_FALSE(f.store->delete_resource("deployments", "web-1"));
  CHECK_FALSE(f.store->get_resource("deployments", "web-1").has_value());
  CHECK(f.store->upsert_resource("deployments", "web-1", Json{{"replicas", 1}}) == 4);
  const auto messages = f.take();
  REQUIRE(messages.size() == 4);
  CHECK(messages[0].key.str() == "deployments.web-1.new");
  CHECK(messages[1].key.str() == "deployments.web-1.updated");
  CHECK(messages[1].body == Json{{"type", "deployments"}, {"id", "web-1"}, {"state", {{"replicas", 4}}}, {"_rev", 2}});
  CHECK(messages[2].key.str() == "deployments.web-1.deleted");
  CHECK(messages[2].body["_rev"] == 3);
  CHECK(messages[3].key.str() == "deployments.web-1.new");
  CHECK(f.store->get_resource("deployments", "web-1") == messages[3].body);
  CHECK(f.store->list("deployments").size() == 1);

  CHECK_THROWS_AS(f.store->upsert_resource("buildrequests", "1", Json::object()), std::invalid_argument);
  CHECK_THROWS_AS(f.store->upsert_resource("caf\xc3\xa9", "1", Json::object()), livestate::InvalidRoutingKey);
}

TEST_CASE("deletions are read with their revisions, all of them or only the recent ones by the store's clock") {
  Fixture f;
  f.store->upsert_resource("deployments", "old", Json::object());
  CHECK(f.store->delete_resource("deployments", "old"));  // revision 2, at the fixture's time
  f.clock += 3600;
  f.store->upsert_resource("deployments", "recent", Json::object());
  f.store->upsert_resource("deployments", "recent", Json::object());
  CHECK(f.store->delete_resource("deployments", "recent"));  // revision 3, an hour later
  f.store->upsert_resource("deployments", "again", Json::object());
  CHECK(f.store->delete_resource("deployments", "again"));
  f.store->upsert_resource("deployments", "again", Json::object());  // made again: not deleted
  f.store->upsert_resource("deployments", "alive", Json::object());
  f.clock += 10;

  using Deletions = std::map<std::string, std::int64_t>;
  CHECK(f.store->deletions("deployments") == Deletions{{"old", 2}, {"recent", 3}});
  CHECK(f.store->deletions("deployments", std::nullopt, std::chrono::seconds(60)) == Deletions{{"recent", 3}});
  CHECK(f.store->deletions("deployments", std::vector<std::string>{"old", "alive"}) == Deletions{{"old", 2}});
  CHECK(f.store->deletions("deployments", std::vector<std::string>{"old"}, std::chrono::seconds(60)).empty());
  CHECK(f.store->deletions("deployments", std::nullopt, std::chrono::hours(2)).size() == 2);
  CHECK(f.store->deletions("buildrequests").empty());
}

TEST_CASE("strings and bodies that look like SQL, quote or escape are stored and announced verbatim") {
  Fixture f;
  const std::vector<std::string> nasty{"it's",
                                       "\"quoted\"",
                                       "back\\slash",
                                       "semi;colon",
                                       "'); DROP TABLE builds; --",
                                       "?",
                                       "$1",
                                       "unicode \xe2\x9c\x93 \xf0\x9f\x9a\x80"};
  for (std::size_t i = 0; i < nasty.size(); ++i) {
    const std::string id = "r" + std::to_string(i);
    f.store->upsert_resource("things", id, Json{{"name", nasty[i]}, {nasty[i], nasty[i]}});
    CHECK(f.store->get_resource("things", id)->at("state") == Json{{"name", nasty[i]}, {nasty[i], nasty[i]}});
  }
  const auto master = f.store->master_active("'); DROP TABLE masters; --");
  CHECK(f.store->get_master(master)->at("name") == "'); DROP TABLE masters; --");
  const auto builder = f.store->builder_started("quote's \"builder\"", master);
  db::NewBuildset buildset;
  buildset.builderids = {builder};
  buildset.reason = nasty[4];
  const auto added = f.store->add_buildset(buildset);
  CHECK(f.store->get_buildset(added.bsid)->at("reason") == nasty[4]);

  // A 1 MB body round-trips exactly.
  std::string big(1 << 20, 'x');
  for (std::size_t i = 0; i < big.size(); i += 997) big[i] = static_cast<char>('a' + i % 26);
  f.store->upsert_resource("blobs", "big", Json{{"data", big}});
  CHECK(f.store->get_resource("blobs", "big")->at("state").at("data") == big);
}

TEST_CASE("a value nested deeper than any consumer accepts is refused before anything is written or announced") {
  Fixture f;
  // A hundred thousand levels: serializing it (a recursive walk) would overflow
  // the stack; the store refuses it by depth first. (Built anew each time:
  // copying it would recurse too.)
  const auto deep = [] {
    Json value = Json::array();
    for (int level = 1; level < 100000; ++level) value = Json::array({std::move(value)});
    return value;
  };
  CHECK_THROWS_AS(f.store->upsert_resource("widgets", "1", deep()), livestate::InvalidBody);
  Json inside = Json::object();
  inside["x"] = deep();
  CHECK_THROWS_AS(f.store->upsert_resource("widgets", "1", inside), livestate::InvalidBody);
  db::NewBuildset buildset;
  buildset.sourcestamps.push_back(deep());
  CHECK_THROWS_AS(f.store->add_buildset(buildset), livestate::InvalidBody);
  {
    auto transaction = f.store->begin();
    transaction.upsert_resource("widgets", "2", {{"size", 2}});
    CHECK_THROWS_AS(transaction.produce(RoutingKey{"deep", "1", "new"}, deep()), livestate::InvalidBody);
    transaction.commit();  // what was fine in it still commits
  }
  CHECK_FALSE(f.store->get_resource("widgets", "1").has_value());
  CHECK(f.store->get_resource("widgets", "2").has_value());
  CHECK(f.store->list("buildsets").empty());
  CHECK(f.keys() == std::vector<std::string>{"widgets.2.new"});

  // As deep as a body may be, one level down in the resource's body: accepted.
  Json deepest = Json::object();
  for (int level = 1; level < livestate::wire::max_body_depth - 1; ++level) deepest = Json{{"a", std::move(deepest)}};
  CHECK(f.store->upsert_resource("widgets", "3", deepest) == 1);
}

TEST_CASE("the messages of a transaction arrive after it commits, in order, and never after a rollback") {
  Fixture f;
  const auto s = f.scene();
  {
    auto tx = f.store->begin();
    tx.claim_buildrequests(std::vector<std::int64_t>{s.brid}, s.masterid);
    tx.upsert_resource("notes", "n1", Json{{"text", "claimed"}});
    tx.produce(RoutingKey{"app", "1", "done"}, Json{{"ok", true}});
    CHECK(f.take().empty());  // nothing before commit
    // Inside the transaction its own changes are visible.
    CHECK(tx.get_buildrequest(s.brid)->at("claimed") == true);
    tx.commit();
    CHECK_FALSE(tx.active());
  }
  auto keys = f.keys();
  REQUIRE(keys.size() == 5);
  CHECK(keys[1] == "buildrequests." + std::to_string(s.brid) + ".claimed");
  CHECK(keys[3] == "notes.n1.new");
  CHECK(keys[4] == "app.1.done");
  f.take();

  {
    auto tx = f.store->begin();
    tx.unclaim_buildrequests(std::vector<std::int64_t>{s.brid}, s.masterid);
    tx.produce(RoutingKey{"app", "2", "done"}, Json::object());
    // destroyed without commit: rolled back
  }
  CHECK(f.take().empty());
  CHECK(f.store->get_buildrequest(s.brid)->at("claimed") == true);

  auto tx = f.store->begin();
  tx.upsert_resource("notes", "n2", Json::object());
  tx.rollback();
  CHECK_FALSE(tx.active());
  CHECK_THROWS_AS(tx.commit(), std::logic_error);
  CHECK(f.take().empty());
  CHECK_FALSE(f.store->get_resource("notes", "n2").has_value());
}

TEST_CASE("an operation that fails inside a transaction leaves the transaction as it was") {
  Fixture f;
  const auto s = f.scene();
  const auto other = f.store->master_active("m2");
  const auto theirs = f.request_claimed_by(s, other);

  auto tx = f.store->begin();
  tx.upsert_resource("notes", "before", Json::object());
  CHECK_THROWS_AS(tx.claim_buildrequests(std::vector<std::int64_t>{s.brid, theirs}, s.masterid), db::AlreadyClaimed);
  tx.upsert_resource("notes", "after", Json::object());
  tx.commit();
  CHECK(f.keys() == std::vector<std::string>{"notes.before.new", "notes.after.new"});
  CHECK(f.store->get_buildrequest(s.brid)->at("claimed") == false);
}

TEST_CASE("a consumer that reloads on a message finds the change the message announced") {
  Fixture f;
  const auto s = f.scene();
  std::vector<Json> reloaded;
  auto reloader = f.mq->start_consuming(
      [&](const RoutingKey& key, const Json&) { reloaded.push_back(*f.store->get_buildrequest(std::stoll(key[1]))); },
      Filter::parse("buildrequests.*.*"));
  f.store->claim_buildrequests(std::vector<std::int64_t>{s.brid}, s.masterid);
  f.store->complete_buildrequests(std::vector<std::int64_t>{s.brid}, db::results::success, s.masterid);
  REQUIRE(reloaded.size() == 2);
  CHECK(reloaded[0]["claimed"] == true);
  CHECK(reloaded[1]["complete"] == true);
}

TEST_CASE("list reads a type with field equalities and ids, and refuses unknown fields") {
  Fixture f;
  const auto s = f.scene();
  db::NewBuildset more;
  more.builderids = {s.builderid};
  const auto second = f.store->add_buildset(more).buildrequestids.at(s.builderid);
  f.store->claim_buildrequests(std::vector<std::int64_t>{second}, s.masterid);

  CHECK(f.store->list("buildrequests").size() == 2);
  const auto claimed = f.store->list("buildrequests", Json{{"claimed", true}});
  REQUIRE(claimed.size() == 1);
  CHECK(claimed[0]["buildrequestid"] == second);
  CHECK(f.store->list_buildrequests({.claimed = false}).at(0)["buildrequestid"] == s.brid);
  CHECK(
      f.store->list("buildrequests", Json{{"builderid", s.builderid}}, std::vector<std::string>{std::to_string(s.brid)})
          .size() == 1);
  CHECK(f.store->list("masters", Json{{"name", "m1"}}).at(0)["masterid"] == s.masterid);
  CHECK(f.store->list("builders").at(0)["masterids"] == Json::array({s.masterid}));
  CHECK(db::Operations::id_of("buildrequests", claimed[0]) == std::to_string(second));
  CHECK_THROWS_AS((void)f.store->list("buildrequests", Json{{"nonsense", 1}}), std::invalid_argument);
  CHECK(f.store->list("nothing_of_this_type").empty());
}

TEST_CASE("a distributor lists the oldest waiting requests, and counts them no further than its bound") {
  Fixture f;
  const auto s = f.scene();
  std::vector<std::int64_t> ids{s.brid};
  for (int i = 0; i < 6; ++i) {
    db::NewBuildset more;
    more.builderids = {s.builderid};
    ids.push_back(f.store->add_buildset(more).buildrequestids.at(s.builderid));
  }
  // The oldest is done, the next claimed: the waiting ones are ids[2..6].
  f.store->claim_buildrequests(std::vector<std::int64_t>{ids[0]}, s.masterid);
  f.store->complete_buildrequests(std::vector<std::int64_t>{ids[0]}, db::results::success, s.masterid);
  f.store->claim_buildrequests(std::vector<std::int64_t>{ids[1]}, s.masterid);

  const db::BuildRequestFilter waiting{.complete = false, .claimed = false};
  auto oldest_two = waiting;
  oldest_two.limit = 2;
  const auto listed = f.store->list_buildrequests(oldest_two);
  REQUIRE(listed.size() == 2);
  CHECK(listed[0]["buildrequestid"] == ids[2]);
  CHECK(listed[1]["buildrequestid"] == ids[3]);
  CHECK(listed[0] == f.store->get_buildrequest(ids[2]).value());

  CHECK(f.store->count_buildrequests(waiting) == 5);
  CHECK(f.store->count_buildrequests(oldest_two) == 2);
  auto generous = waiting;
  generous.limit = 100;
  CHECK(f.store->count_buildrequests(generous) == 5);
  CHECK(f.store->list_buildrequests(generous).size() == 5);
  auto none = waiting;
  none.limit = 0;
  CHECK(f.store->list_buildrequests(none).empty());
  CHECK(f.store->count_buildrequests(none) == 0);
  CHECK(f.store->count_buildrequests({}) == 7);
  CHECK(f.store->count_buildrequests({.complete = true}) == 1);
}

TEST_CASE("changes since a watermark are the rows changed after it, deletions included, and nothing before") {
  Fixture f;
  const auto s = f.scene();
  f.store->upsert_resource("widgets", "old", {{"n", 1}});
  const auto start = f.store->change_watermark("buildrequests");
  const auto buildsets_start = f.store->change_watermark("buildsets");
  const auto widgets_start = f.store->change_watermark("widgets");
  REQUIRE(start.has_value());
  REQUIRE(buildsets_start.has_value());
  REQUIRE(widgets_start.has_value());
  const auto none = f.store->changes_since("buildrequests", *start);
  REQUIRE(none.has_value());
  CHECK(none->rows.empty());

  f.store->claim_buildrequests(std::vector<std::int64_t>{s.brid}, s.masterid);
  f.store->upsert_resource("widgets", "x", {{"n", 1}});
  f.store->upsert_resource("widgets", "y", {{"n", 1}});
  f.store->delete_resource("widgets", "y");
  {  // An operation undone inside a transaction, then one that commits.
    auto tx = f.store->begin();
    CHECK_THROWS_AS(tx.claim_buildrequests(std::vector<std::int64_t>{s.brid}, s.masterid), db::AlreadyClaimed);
    tx.upsert_resource("widgets", "z", {{"n", 1}});
    tx.commit();
  }

  const auto requests = f.store->changes_since("buildrequests", *start);
  REQUIRE(requests.has_value());
  REQUIRE(requests->rows.size() == 1);
  CHECK(requests->rows[0] == f.store->get_buildrequest(s.brid).value());
  CHECK(f.store->changes_since("buildsets", *buildsets_start)->rows.empty());
  const auto widgets = f.store->changes_since("widgets", *widgets_start);
  REQUIRE(widgets.has_value());
  REQUIRE(widgets->rows.size() == 2);
  CHECK(widgets->rows[0] == f.store->get_resource("widgets", "x").value());
  CHECK(widgets->rows[1]["id"] == "z");
  CHECK(widgets->deletions == std::map<std::string, std::int64_t>{{"y", 2}});

  // From where that read ended: only what changed since.
  f.store->upsert_resource("widgets", "x", {{"n", 2}});
  const auto next = f.store->changes_since("widgets", widgets->watermark);
  REQUIRE(next.has_value());
  REQUIRE(next->rows.size() == 1);
  CHECK(next->rows[0]["state"] == Json{{"n", 2}});
  CHECK(next->deletions.empty());
}

TEST_CASE("a watermark the database can't answer from is refused, never misread") {
  Fixture f;
  f.store->upsert_resource("widgets", "a", {{"n", 1}});
  const auto watermark = f.store->change_watermark("widgets").value();
  // Ahead of the database (a backup restored since): the mark's last number grown.
  std::string ahead = watermark;
  if (f.store->backend() == db::Backend::postgresql) {
    // "postgresql:ID:TABLE:xmin:xmax:xip": xmax far ahead.
    const auto xmax_end = ahead.rfind(':');
    const auto xmax_start = ahead.rfind(':', xmax_end - 1) + 1;
    ahead.replace(xmax_start, xmax_end - xmax_start, "999999999");
  } else {
    ahead = ahead.substr(0, ahead.rfind(':') + 1) + "999999999";
  }
  std::string other_database = watermark;
  other_database[other_database.find(':') + 1] = other_database[other_database.find(':') + 1] == 'f' ? 'e' : 'f';
  const auto of_requests = f.store->change_watermark("buildrequests").value();
  for (const std::string& refused :
       {std::string("not a watermark"), std::string(""), ahead, other_database, of_requests,
        std::string(f.store->backend() == db::Backend::postgresql ? "sqlite:x:resources:1"
                                                                  : "postgresql:x:resources:1:2:"),
        watermark + "'; DROP TABLE resources; --"}) {
    CAPTURE(refused);
    CHECK_FALSE(f.store->changes_since("widgets", refused).has_value());
  }
  CHECK(f.store->changes_since("widgets", watermark).has_value());
  CHECK(f.store->get_resource("widgets", "a").has_value());
}

TEST_CASE("two threads racing to claim the same requests: exactly one winner per request") {
  Fixture f;
  const auto s = f.scene();
  const auto other = f.store->master_active("m2");
  db::NewBuildset many;
  std::vector<std::int64_t> builders;
  for (int i = 0; i < 20; ++i) builders.push_back(f.store->builder_started("b" + std::to_string(i), s.masterid));
  many.builderids = builders;
  std::vector<std::int64_t> ids;
  for (int round = 0; round < 3; ++round) {
    for (const auto& [builder, id] : f.store->add_buildset(many).buildrequestids) ids.push_back(id);
  }
  f.take();

  std::atomic<int> wins[2] = {0, 0};
  std::atomic<int> refusals{0};
  auto racer = [&](int index, std::int64_t master, bool reverse) {
    auto order = ids;
    if (reverse) std::reverse(order.begin(), order.end());
    for (const auto id : order) {
      try {
        f.store->claim_buildrequests(std::vector<std::int64_t>{id}, master);
        ++wins[index];
      } catch (const db::AlreadyClaimed&) {
        ++refusals;
      }
    }
  };
  std::thread a(racer, 0, s.masterid, false);
  std::thread b(racer, 1, other, true);
  a.join();
  b.join();
  CHECK(wins[0] + wins[1] == static_cast<int>(ids.size()));
  CHECK(refusals == static_cast<int>(ids.size()));
  std::set<std::int64_t> claimed_ids;
  for (const auto& message : f.take()) {
    if (message.key[0] == "buildrequests") CHECK(claimed_ids.insert(std::stoll(message.key[1])).second);
  }
  CHECK(claimed_ids.size() == ids.size());
}
