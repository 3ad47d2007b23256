// Live views over SimpleMQ and a SQLite store: the snapshot, the change
// callbacks, each detector alone, reloads, resyncs, the start-up race and a
// lagging reload store.
//
// The store announces on one SimpleMQ; a Relay forwards its messages to the
// SimpleMQ the view consumes, or holds them so that the test delivers them in
// the order it wants (or never). The view's executor is an io_context that
// the test runs itself, so every step is deterministic.

#include <doctest/doctest.h>

#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "livestate/core/log.hpp"
#include "livestate/livestate.hpp"
#include "livestate/reconcile/live_view.hpp"
#include "test_database.hpp"

namespace {

namespace db = livestate::db;
namespace mq = livestate::mq;
namespace reconcile = livestate::reconcile;
using livestate::Filter;
using livestate::Json;
using livestate::Message;
using livestate::RoutingKey;
using reconcile::Anomaly;
using reconcile::ChangeKind;

// Messages of the store's connector, forwarded to the view's, or held.
class Relay {
 public:
  Relay(mq::Connector& from, mq::Connector& to) : m_to(to) {
    m_consumer = from.start_consuming(
        [this](const RoutingKey& key, const Json& body) {
          if (m_holding) {
            m_held.push_back({key, body});
          } else {
            m_to.produce(key, body);
          }
        },
        Filter::parse("#"));
  }
  void hold() { m_holding = true; }
  /// The held messages whose key is KEY (dotted), in order.
  std::vector<Message> held(const std::string& key) const {
    std::vector<Message> found;
    for (const auto& message : m_held) {
      if (message.key.str() == key) found.push_back(message);
    }
    return found;
  }
  void deliver(const Message& message) { m_to.produce(message.key, message.body); }
  void deliver(const std::string& key) {
    for (const auto& message : held(key)) deliver(message);
  }
  void forget_held() { m_held.clear(); }

 private:
  mq::Connector& m_to;
  std::unique_ptr<mq::Consumer> m_consumer;
  bool m_holding = false;
  std::vector<Message> m_held;
};

struct Fixture {
  livestate::test::TestDatabase database;
  std::unique_ptr<mq::Connector> store_mq = mq::make_simple_mq();
  std::unique_ptr<mq::Connector> view_mq = mq::make_simple_mq();
  std::unique_ptr<db::Store> store = db::Store::open(database.url(), *store_mq);
  Relay relay{*store_mq, *view_mq};
  boost::asio::io_context io;

  /// Runs the view's work until there is none left.
  void settle() {
    for (;;) {
      io.restart();
      if (io.poll() == 0) return;
    }
  }
  /// A new build request of a new builder of master m1 (`master`, `builder`).
  std::int64_t master = 0;
  std::int64_t builder = 0;
  std::int64_t new_request() {
    if (master == 0) {
      master = store->master_active("m1");
      builder = store->builder_started("b1", master);
    }
    db::NewBuildset buildset;
    buildset.builderids = {builder};
    return store->add_buildset(buildset).buildrequestids.at(builder);
  }
  /// The same, claimed and completed.
  std::int64_t completed_request() {
    const auto id = new_request();
    store->claim_buildrequests(std::vector<std::int64_t>{id}, master);
    store->complete_buildrequests(std::vector<std::int64_t>{id}, 0, master);
    return id;
  }
  /// Also waits for timers (the lagging reload's retries) for up to `limit`.
  void settle_for(std::chrono::milliseconds limit) {
    io.restart();
    io.run_for(limit);
    settle();
  }
};

struct Recorder {
  std::vector<reconcile::Change> changes;
  reconcile::LiveView::ChangeCallback callback() {
    return [this](const reconcile::Change& change) { changes.push_back(change); };
  }
  std::size_t count(ChangeKind kind, const std::string& id) const {
    std::size_t n = 0;
    for (const auto& change : changes) n += change.kind == kind && change.id == id ? 1 : 0;
    return n;
  }
};

std::uint64_t anomalies(const reconcile::ViewStats& stats) {
  std::uint64_t total = 0;
  for (const auto n : stats.anomalies) total += n;
  return total;
}

reconcile::ViewOptions of_type(std::string type, Json where = Json::object()) {
  reconcile::ViewOptions options;
  options.type = std::move(type);
  options.where = std::move(where);
  return options;
}

}  // namespace

TEST_CASE("a view loads the snapshot, then fires added, changed and removed once per real change") {
  Fixture f;
  f.store->upsert_resource("widgets", "a", {{"size", 1}});
  f.store->upsert_resource("widgets", "b", {{"size", 2}});
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), of_type("widgets"));
  Recorder recorder;
  view.on_change(recorder.callback());
  view.start();
  CHECK_FALSE(view.ready());
  f.settle();
  REQUIRE(view.ready());
  CHECK(view.entries().size() == 2);
  CHECK(recorder.count(ChangeKind::added, "a") == 1);
  CHECK(recorder.count(ChangeKind::added, "b") == 1);

  f.store->upsert_resource("widgets", "a", {{"size", 10}});
  f.store->delete_resource("widgets", "b");
  f.store->upsert_resource("widgets", "c", {{"size", 3}});
  f.settle();
  CHECK(view.get("a")->at("state") == Json{{"size", 10}});
  CHECK_FALSE(view.get("b").has_value());
  CHECK(view.get("c")->at("state") == Json{{"size", 3}});
  REQUIRE(recorder.changes.size() == 5);
  CHECK(recorder.changes[2].kind == ChangeKind::changed);
  CHECK(recorder.changes[2].before.at("state") == Json{{"size", 1}});
  CHECK(recorder.changes[2].after.at("state") == Json{{"size", 10}});
  CHECK(recorder.changes[3].kind == ChangeKind::removed);
  CHECK(recorder.changes[3].before.at("id") == "b");
  CHECK(recorder.changes[4].kind == ChangeKind::added);

  CHECK(view.verify().empty());
  const auto stats = view.stats();
  CHECK(anomalies(stats) == 0);
  CHECK(stats.reload_queries == 0);
  CHECK(stats.resyncs == 1);
  CHECK(stats.messages == 3);
  CHECK(stats.applied == 5);
}

TEST_CASE("a duplicate or stale message is dropped, counted, and fires nothing") {
  Fixture f;
  f.relay.hold();
  f.store->upsert_resource("widgets", "a", {{"size", 1}});
  f.store->upsert_resource("widgets", "a", {{"size", 2}});
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), of_type("widgets"));
  Recorder recorder;
  view.on_change(recorder.callback());
  view.start();
  f.settle();
  recorder.changes.clear();

  f.relay.deliver("widgets.a.new");      // older than the snapshot
  f.relay.deliver("widgets.a.updated");  // as old as the snapshot: a duplicate
  f.relay.deliver("widgets.a.updated");
  f.settle();
  CHECK(recorder.changes.empty());
  CHECK(view.get("a")->at("state") == Json{{"size", 2}});
  const auto stats = view.stats();
  CHECK(stats.count(Anomaly::stale_or_duplicate) == 3);
  CHECK(anomalies(stats) == 3);
  CHECK(stats.reload_queries == 0);
}

TEST_CASE("a complete of a request the view never saw claimed reloads that request, and only it") {
  Fixture f;
  const auto master = f.store->master_active("m1");
  db::NewBuildset buildset;
  buildset.builderids = {f.store->builder_started("b1", master), f.store->builder_started("b2", master)};
  const auto added = f.store->add_buildset(buildset);
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), of_type("buildrequests"));
  view.start();
  f.settle();
  REQUIRE(view.entries().size() == 2);

  const auto request = added.buildrequestids.begin()->second;
  const auto id = std::to_string(request);
  f.relay.hold();
  f.store->claim_buildrequests(std::vector<std::int64_t>{request}, master);
  f.store->complete_buildrequests(std::vector<std::int64_t>{request}, 0, master);
  REQUIRE(f.relay.held("buildrequests." + id + ".complete").size() == 1);
  f.relay.deliver("buildrequests." + id + ".complete");  // its claimed is lost
  f.settle();

  const auto stats = view.stats();
  CHECK(stats.count(Anomaly::lifecycle_violation) == 1);
  CHECK(anomalies(stats) == 1);
  CHECK(stats.reload_queries == 1);
  CHECK(stats.entries_reloaded == 1);
  CHECK(view.get(id) == f.store->get_buildrequest(request));
  CHECK(view.get(id)->at("complete") == true);
  CHECK(view.verify().empty());

  // The claimed, late: older than what the reload found.
  f.relay.deliver("buildrequests." + id + ".claimed");
  f.settle();
  CHECK(view.stats().count(Anomaly::stale_or_duplicate) == 1);
  CHECK(view.get(id)->at("complete") == true);
}

TEST_CASE("an event for an entry the view lacks reloads it; a creating event adds it without a query") {
  Fixture f;
  const auto master = f.store->master_active("m1");
  db::NewBuildset buildset;
  buildset.builderids = {f.store->builder_started("b1", master)};
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), of_type("buildrequests"));
  Recorder recorder;
  view.on_change(recorder.callback());
  view.start();
  f.settle();
  CHECK(view.entries().empty());

  f.relay.hold();
  const auto request = f.store->add_buildset(buildset).buildrequestids.begin()->second;
  f.store->claim_buildrequests(std::vector<std::int64_t>{request}, master);
  const auto id = std::to_string(request);
  f.relay.deliver("buildrequests." + id + ".claimed");  // before its new
  f.relay.deliver("buildrequests." + id + ".new");
  f.settle();
  auto stats = view.stats();
  CHECK(stats.count(Anomaly::unknown_entry) == 1);
  CHECK(stats.reload_queries == 1);
  CHECK(view.get(id) == f.store->get_buildrequest(request));
  // The new, applied while the reload was due, then the reload's newer row:
  // each a real change, revisions only rising.
  CHECK(recorder.count(ChangeKind::added, id) == 1);
  REQUIRE(recorder.changes.size() == 2);
  CHECK(recorder.changes[0].after.at("_rev") < recorder.changes[1].after.at("_rev"));
  CHECK(recorder.changes[1].after == f.store->get_buildrequest(request));

  // A creating event applies its body as is.
  buildset.builderids = {f.store->builder_started("b2", master)};
  const auto second = f.store->add_buildset(buildset).buildrequestids.begin()->second;
  f.relay.deliver("buildrequests." + std::to_string(second) + ".new");
  f.settle();
  stats = view.stats();
  CHECK(stats.reload_queries == 1);
  CHECK(view.get(std::to_string(second)) == f.store->get_buildrequest(second));
  CHECK(view.verify().empty());
}

TEST_CASE("an unknown event of a known type reloads the entry; unknown body keys are kept without alarm") {
  Fixture f;
  f.store->upsert_resource("widgets", "a", {{"size", 1}});
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), of_type("widgets"));
  view.start();
  f.settle();
  f.relay.hold();

  f.store->upsert_resource("widgets", "a", {{"size", 2}});
  auto body = f.relay.held("widgets.a.updated").at(0).body;
  body["colour"] = "blue";  // a newer producer's field
  f.view_mq->produce(RoutingKey{"widgets", "a", "updated"}, body);
  f.settle();
  CHECK(view.get("a")->at("colour") == "blue");
  CHECK(anomalies(view.stats()) == 0);

  f.store->upsert_resource("widgets", "a", {{"size", 3}});
  f.view_mq->produce(RoutingKey{"widgets", "a", "polished"}, f.relay.held("widgets.a.updated").at(1).body);
  f.settle();
  auto stats = view.stats();
  CHECK(stats.count(Anomaly::unknown_event) == 1);
  CHECK(stats.reload_queries == 1);
  CHECK(view.get("a") == f.store->get_resource("widgets", "a"));

  // A message without a revision can't be ordered: the entry is reloaded.
  f.view_mq->produce(RoutingKey{"widgets", "a", "updated"}, {{"id", "a"}, {"state", {{"size", 99}}}});
  f.settle();
  stats = view.stats();
  CHECK(stats.count(Anomaly::no_revision) == 1);
  CHECK(stats.reload_queries == 2);
  CHECK(view.get("a") == f.store->get_resource("widgets", "a"));
  CHECK(view.verify().empty());
}

TEST_CASE("a resync finds rows made and deleted while the view was blind, and removes the vanished ones") {
  Fixture f;
  f.store->upsert_resource("widgets", "a", {{"size", 1}});
  f.store->upsert_resource("widgets", "b", {{"size", 2}});
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), of_type("widgets"));
  Recorder recorder;
  view.on_change(recorder.callback());
  view.start();
  f.settle();
  recorder.changes.clear();

  f.relay.hold();  // blind from here on
  f.store->delete_resource("widgets", "a");
  f.store->upsert_resource("widgets", "b", {{"size", 20}});
  f.store->upsert_resource("widgets", "c", {{"size", 3}});
  f.settle();
  CHECK(view.verify().size() == 3);

  view.resync();
  f.settle();
  CHECK(view.verify().empty());
  CHECK(recorder.count(ChangeKind::removed, "a") == 1);
  CHECK(recorder.count(ChangeKind::changed, "b") == 1);
  CHECK(recorder.count(ChangeKind::added, "c") == 1);
  const auto stats = view.stats();
  CHECK(stats.resyncs == 2);
  CHECK(stats.resync_repairs == 3);

  // The messages, arriving late after all, change nothing.
  recorder.changes.clear();
  f.relay.deliver("widgets.a.deleted");
  f.relay.deliver("widgets.b.updated");
  f.relay.deliver("widgets.c.new");
  f.settle();
  CHECK(recorder.changes.empty());
  CHECK(view.verify().empty());
}

TEST_CASE("a late message about a resource deleted before a resync does not bring it back") {
  Fixture f;
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), of_type("widgets"));
  view.start();
  f.settle();
  f.relay.hold();
  f.store->upsert_resource("widgets", "x", {{"size", 1}});
  f.store->delete_resource("widgets", "x");
  view.resync();  // as after a gap: the deletion's message is lost
  f.settle();
  f.relay.deliver("widgets.x.new");  // reordered past it all
  f.settle();
  CHECK_FALSE(view.get("x").has_value());
  CHECK(view.stats().count(Anomaly::stale_or_duplicate) == 1);
  CHECK(view.verify().empty());

  // Made again, it is new again, with a higher revision: it comes back.
  f.relay.forget_held();
  f.store->upsert_resource("widgets", "x", {{"size", 2}});
  f.relay.deliver("widgets.x.new");
  f.settle();
  CHECK(view.get("x") == f.store->get_resource("widgets", "x"));
}

TEST_CASE("a gap in the stream resyncs the view, which then holds what the lost messages said") {
  Fixture f;
  f.store->upsert_resource("widgets", "a", {{"size", 1}});
  mq::FaultOptions faults;
  faults.drop = 1.0;
  faults.report_drops = true;
  mq::FaultyConnector lossy(*f.view_mq, faults);
  reconcile::LiveView view(lossy, *f.store, f.io.get_executor(), of_type("widgets"));
  view.start();
  f.settle();
  f.store->upsert_resource("widgets", "a", {{"size", 2}});
  f.store->upsert_resource("widgets", "b", {{"size", 1}});
  lossy.flush();  // the drops are told
  f.settle();
  const auto stats = view.stats();
  CHECK(stats.messages == 0);
  CHECK(stats.count(Anomaly::stream_gap) == 1);
  CHECK(stats.resyncs == 2);
  CHECK(stats.resync_repairs == 2);
  CHECK(view.verify().empty());
}

TEST_CASE("after a gap a view reads the rows changed since it last read, not every row it holds") {
  Fixture f;
  {
    auto tx = f.store->begin();
    for (int i = 0; i < 200; ++i) tx.upsert_resource("widgets", "w" + std::to_string(i), {{"size", i}});
    tx.commit();
  }
  mq::FaultOptions faults;
  faults.drop = 1.0;
  faults.report_drops = true;
  mq::FaultyConnector lossy(*f.view_mq, faults);
  lossy.set_enabled(false);
  reconcile::LiveView view(lossy, *f.store, f.io.get_executor(), of_type("widgets"));
  view.start();
  f.settle();
  f.store->upsert_resource("widgets", "w1", {{"size", 100}});  // delivered
  f.settle();
  lossy.set_enabled(true);
  f.store->upsert_resource("widgets", "w2", {{"size", 100}});  // lost, told as gaps
  f.store->delete_resource("widgets", "w3");
  f.store->upsert_resource("widgets", "new", {{"size", 1}});
  lossy.flush();
  f.settle();
  const auto stats = view.stats();
  CHECK(stats.count(Anomaly::stream_gap) >= 1);
  CHECK(stats.resyncs == 2);
  CHECK(stats.full_resyncs == 1);       // the load
  CHECK(stats.resync_rows == 200 + 4);  // w1 too: changed since the load
  CHECK(stats.resync_repairs == 3);
  CHECK(view.size() == 200);
  CHECK(view.verify().empty());
}

TEST_CASE("a schema migrated message resyncs the view") {
  Fixture f;
  f.store->upsert_resource("widgets", "a", {{"size", 1}});
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), of_type("widgets"));
  view.start();
  f.settle();
  f.relay.hold();
  f.store->upsert_resource("widgets", "a", {{"size", 2}});
  f.view_mq->produce(RoutingKey{"schema", "4", "migrated"}, {{"version", 4}});
  f.settle();
  const auto stats = view.stats();
  CHECK(stats.count(Anomaly::schema_migrated) == 1);
  CHECK(stats.resyncs == 2);
  CHECK(view.verify().empty());
}

TEST_CASE("a view that falls behind keeps at most max_queued messages waiting, then discards them and resyncs") {
  Fixture f;
  auto options = of_type("widgets");
  options.max_queued = 10;
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), options);
  Recorder recorder;
  view.on_change(recorder.callback());
  view.start();
  f.settle();
  // The view's executor does not run: 25 messages arrive meanwhile.
  for (int i = 0; i < 25; ++i) f.store->upsert_resource("widgets", "w" + std::to_string(i), {{"size", i}});
  auto stats = view.stats();
  CHECK(stats.queued == 3);  // 10 waited, the 11th discarded them; again at the 22nd
  CHECK(stats.queued_peak == 10);
  CHECK(stats.queue_overflows == 2);
  CHECK(stats.messages_discarded == 22);
  f.settle();
  stats = view.stats();
  CHECK(stats.queued == 0);
  CHECK(stats.count(Anomaly::transport_reset) == 1);  // one resync for both overflows
  CHECK(stats.resyncs == 2);
  CHECK(view.size() == 25);
  CHECK(view.verify().empty());
  // Nothing applied twice: each widget was added once, whether by the resync
  // or by a message that came after it.
  for (int i = 0; i < 25; ++i) {
    CAPTURE(i);
    CHECK(recorder.count(ChangeKind::added, "w" + std::to_string(i)) == 1);
  }
  CHECK(recorder.changes.size() == 25);
}

TEST_CASE("messages that arrive before the first load are bounded the same way, and the view loads equal") {
  Fixture f;
  auto options = of_type("widgets");
  options.max_queued = 5;
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), options);
  view.start();  // the load is posted, not yet run: messages are buffered for it
  for (int i = 0; i < 8; ++i) f.store->upsert_resource("widgets", "w" + std::to_string(i), {{"size", i}});
  f.settle();
  const auto stats = view.stats();
  CHECK(stats.queue_overflows == 1);  // at the 6th
  CHECK(stats.messages_discarded == 6);
  CHECK(view.size() == 8);
  CHECK(view.verify().empty());
}

TEST_CASE("a narrowed view ignores other builders' requests without a query and drops one that leaves it") {
  Fixture f;
  const auto master = f.store->master_active("m1");
  const auto b1 = f.store->builder_started("b1", master);
  const auto b2 = f.store->builder_started("b2", master);
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(),
                           of_type("buildrequests", {{"builderid", b1}, {"complete", false}}));
  Recorder recorder;
  view.on_change(recorder.callback());
  view.start();
  f.settle();

  db::NewBuildset buildset;
  buildset.builderids = {b1, b2};
  const auto added = f.store->add_buildset(buildset);
  const auto mine = added.buildrequestids.at(b1);
  const auto theirs = added.buildrequestids.at(b2);
  f.store->claim_buildrequests(std::vector<std::int64_t>{theirs}, master);
  f.store->claim_buildrequests(std::vector<std::int64_t>{mine}, master);
  f.settle();
  CHECK(view.entries().size() == 1);
  CHECK(view.get(std::to_string(mine)).has_value());
  CHECK(view.stats().reload_queries == 0);

  f.store->complete_buildrequests(std::vector<std::int64_t>{mine}, 0, master);
  f.settle();
  CHECK(view.entries().empty());
  CHECK(recorder.count(ChangeKind::removed, std::to_string(mine)) == 1);
  CHECK(view.verify().empty());
  CHECK(anomalies(view.stats()) == 0);
}

TEST_CASE("late messages do not bring back a request that left a narrowed view, and cost no reload") {
  Fixture f;
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), of_type("buildrequests", {{"complete", false}}));
  view.start();
  f.settle();

  f.relay.hold();
  const auto seen = f.completed_request();
  const auto unseen = f.completed_request();
  const auto key = [](std::int64_t id, const std::string& event) {
    return "buildrequests." + std::to_string(id) + "." + event;
  };
  // `seen` in order, then its new and claimed again (duplicated late);
  // `unseen`'s complete first, then its new and claimed (reordered).
  for (const char* event : {"new", "claimed", "complete", "new", "claimed"}) f.relay.deliver(key(seen, event));
  for (const char* event : {"complete", "new", "claimed"}) f.relay.deliver(key(unseen, event));
  f.settle();
  CHECK(view.entries().empty());
  CHECK(view.verify().empty());
  const auto stats = view.stats();
  CHECK(stats.count(Anomaly::stale_or_duplicate) == 4);
  CHECK(stats.reload_queries == 0);
  CHECK(stats.remembered_ids == 2);  // both departures
}

TEST_CASE("a reload for a request that no longer matches a narrowed view is caught up, not lagging") {
  Fixture f;
  auto options = of_type("buildrequests", {{"complete", false}});
  options.lag_retry_initial = std::chrono::milliseconds(1);
  options.lag_deadline = std::chrono::milliseconds(20);
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), options);
  view.start();
  f.settle();

  f.relay.hold();
  const auto id = f.completed_request();
  // Only the claim arrives (its new and complete are lost): the view reloads
  // the request, which no longer matches. The row's revision shows the read
  // is not behind the claim, so nothing is retried or flagged stale.
  f.relay.deliver("buildrequests." + std::to_string(id) + ".claimed");
  f.settle_for(std::chrono::milliseconds(100));
  CHECK(view.entries().empty());
  auto stats = view.stats();
  CHECK(stats.count(Anomaly::unknown_entry) == 1);
  CHECK(stats.count(Anomaly::stale_read) == 0);
  CHECK(stats.stale_entries == 0);
  CHECK(stats.remembered_ids == 1);  // the departure, nothing announced

  // A resync after it keeps nothing announced either.
  view.resync();
  f.settle_for(std::chrono::milliseconds(50));
  stats = view.stats();
  CHECK(stats.count(Anomaly::stale_read) == 0);
  CHECK(stats.remembered_ids == 1);
  CHECK(view.verify().empty());
}

TEST_CASE("a narrowed view forgets departures after forget_departed_after; a view of everything remembers none") {
  Fixture f;
  auto options = of_type("buildrequests", {{"complete", false}});
  options.forget_departed_after = std::chrono::milliseconds(300);
  reconcile::LiveView pending(*f.view_mq, *f.store, f.io.get_executor(), options);
  reconcile::LiveView all(*f.view_mq, *f.store, f.io.get_executor(), of_type("buildrequests"));
  pending.start();
  all.start();
  f.settle();

  for (int i = 0; i < 20; ++i) f.completed_request();
  const auto open = f.new_request();
  f.settle();
  CHECK(pending.stats().remembered_ids == 20);
  CHECK(pending.entries().size() == 1);
  CHECK(all.entries().size() == 21);
  CHECK(all.stats().remembered_ids == 0);

  std::this_thread::sleep_for(std::chrono::milliseconds(350));
  f.store->claim_buildrequests(std::vector<std::int64_t>{open}, f.master);
  f.settle();
  CHECK(pending.stats().remembered_ids == 0);
  CHECK(pending.verify().empty());
  CHECK(all.verify().empty());
}

TEST_CASE("a view forgets deletions after forget_deleted_after, and a resync reads only the recent ones") {
  Fixture f;
  // A long history: deleted an hour ago, by a store whose messages this view
  // never sees.
  {
    db::StoreOptions an_hour_ago;
    an_hour_ago.clock = [] {
      return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count() - 3600;
    };
    auto unseen_mq = mq::make_simple_mq();
    auto old_store = db::Store::open(f.database.url(), *unseen_mq, an_hour_ago);
    for (int i = 0; i < 50; ++i) {
      old_store->upsert_resource("widgets", "old-" + std::to_string(i), {{"size", i}});
      old_store->delete_resource("widgets", "old-" + std::to_string(i));
    }
  }
  auto options = of_type("widgets");
  options.forget_deleted_after = std::chrono::milliseconds(300);
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), options);
  view.start();
  f.settle();
  CHECK(view.stats().remembered_ids == 0);  // the load read no old deletion

  for (int i = 0; i < 5; ++i) {
    f.store->upsert_resource("widgets", "new-" + std::to_string(i), {{"size", i}});
    f.store->delete_resource("widgets", "new-" + std::to_string(i));
  }
  f.store->upsert_resource("widgets", "kept", {{"size", 1}});
  f.settle();
  CHECK(view.stats().remembered_ids == 5);
  view.resync();
  f.settle();
  CHECK(view.stats().remembered_ids == 5);  // the recent deletions, not the 50 old ones
  CHECK(view.verify().empty());

  std::this_thread::sleep_for(std::chrono::milliseconds(350));
  f.store->upsert_resource("widgets", "kept", {{"size", 2}});
  f.settle();
  CHECK(view.stats().remembered_ids == 0);
  CHECK(view.entries().size() == 1);
  CHECK(view.verify().empty());
}

TEST_CASE("a change callback that throws is counted and the view stays equal to the database") {
  Fixture f;
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), of_type("widgets"));
  int calls = 0;
  view.on_change([&](const reconcile::Change&) {
    ++calls;
    throw std::runtime_error("the callback's own bug");
  });
  view.start();
  f.settle();
  f.store->upsert_resource("widgets", "a", {{"size", 1}});
  f.store->upsert_resource("widgets", "b", {{"size", 1}});
  f.settle();
  CHECK(calls == 2);
  CHECK(view.stats().callback_errors == 2);
  CHECK(view.verify().empty());
}

TEST_CASE("changes made while the view starts are neither lost nor applied twice") {
  for (int round = 0; round < 20; ++round) {
    CAPTURE(round);
    Fixture f;
    for (int i = 0; i < 20; ++i) f.store->upsert_resource("widgets", std::to_string(i), {{"n", 0}});
    reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), of_type("widgets"));
    std::map<std::string, std::int64_t> last_revision;
    bool went_back = false;
    view.on_change([&](const reconcile::Change& change) {
      if (change.kind == ChangeKind::removed) return;
      const auto revision = change.after.at("_rev").get<std::int64_t>();
      auto& last = last_revision[change.id];
      went_back = went_back || revision <= last;
      last = revision;
    });
    std::atomic<bool> started{false};
    std::thread writer([&] {
      for (int i = 0; i < 200; ++i) {
        if (i == 20) started.wait(false);
        f.store->upsert_resource("widgets", std::to_string(i % 30), {{"n", i}});
      }
    });
    view.start();
    started = true;
    started.notify_all();
    while (!view.ready()) {
      f.io.restart();
      f.io.run_one_for(std::chrono::milliseconds(10));
    }
    writer.join();
    f.settle();
    CHECK_FALSE(went_back);
    CHECK(view.verify().empty());
    CHECK(view.entries().size() == 30);
    CHECK(view.stats().reload_queries == 0);
  }
}

namespace {

// Copies one SQLite database file into another, as a replica catching up.
void copy_database(const std::filesystem::path& from, const std::filesystem::path& to) {
  sqlite3* source = nullptr;
  sqlite3* target = nullptr;
  REQUIRE(sqlite3_open(from.c_str(), &source) == SQLITE_OK);
  REQUIRE(sqlite3_open(to.c_str(), &target) == SQLITE_OK);
  sqlite3_busy_timeout(target, 5000);
  sqlite3_backup* backup = sqlite3_backup_init(target, "main", source, "main");
  REQUIRE(backup != nullptr);
  CHECK(sqlite3_backup_step(backup, -1) == SQLITE_DONE);
  sqlite3_backup_finish(backup);
  sqlite3_close(source);
  sqlite3_close(target);
}

// A copy of the fixture's database that a view reloads through, updated only
// by catch_up(): a lagging replica.
struct Replica {
  explicit Replica(Fixture& f) : fixture(f) {}
  void catch_up() { copy_database(fixture.database.path(), path); }
  /// Options for a view of `type` that reloads through it, with a short deadline.
  reconcile::ViewOptions options(std::string type, Json where = Json::object()) {
    auto result = of_type(std::move(type), std::move(where));
    result.reload_from = store.get();
    result.lag_retry_initial = std::chrono::milliseconds(5);
    result.lag_deadline = std::chrono::milliseconds(300);
    return result;
  }

  Fixture& fixture;
  std::filesystem::path path = fixture.database.directory() / "replica.db";
  std::unique_ptr<mq::Connector> mq = mq::make_simple_mq();
  // A copy of the database as it is now, before the store opens it.
  std::unique_ptr<db::Store> store = (catch_up(), db::Store::open("sqlite:" + path.string(), *mq));
};

}  // namespace

TEST_CASE(
    "reloads from a lagging replica are retried until it catches up, and flag the entry stale past the deadline") {
  Fixture f;
  f.store->upsert_resource("widgets", "a", {{"size", 1}});
  Replica replica(f);
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), replica.options("widgets"));
  view.start();
  f.settle();

  f.relay.hold();
  f.store->upsert_resource("widgets", "a", {{"size", 2}});
  f.store->upsert_resource("widgets", "a", {{"size", 3}});
  f.relay.deliver(f.relay.held("widgets.a.updated").back());  // the size 2 one is lost: unknown to the view
  // The view applies it (an allowed update, newer): no reload needed.
  f.settle();
  CHECK(view.get("a")->at("state") == Json{{"size", 3}});

  // A message it can't apply (an unknown event) needs a reload, which the
  // replica can't serve yet.
  auto body = *f.store->get_resource("widgets", "a");
  body["_rev"] = body["_rev"].get<std::int64_t>() + 1;
  f.store->upsert_resource("widgets", "a", {{"size", 4}});
  f.view_mq->produce(RoutingKey{"widgets", "a", "polished"}, body);
  f.settle_for(std::chrono::milliseconds(100));
  auto stats = view.stats();
  CHECK(stats.count(Anomaly::stale_read) >= 2);            // retried
  CHECK(view.get("a")->at("state") == Json{{"size", 3}});  // never went back to the replica's size 1
  CHECK(stats.stale_entries == 0);

  f.settle_for(std::chrono::milliseconds(600));
  CHECK(view.stats().stale_entries == 1);  // past the deadline

  replica.catch_up();
  view.resync();
  f.settle();
  CHECK(view.stats().stale_entries == 0);
  CHECK(view.get("a") == f.store->get_resource("widgets", "a"));
  CHECK(view.verify().empty());
}

TEST_CASE(
    "a resync through a lagging replica neither drops nor rolls back what the view holds, and stays stale until it "
    "catches up") {
  // What the view logs about stale entries: one line for the two flagged at
  // once, not one per entry.
  std::mutex log_mutex;
  std::vector<std::string> stale_lines;
  livestate::set_log_sink([&](livestate::LogLevel, std::string_view, std::string_view message) {
    if (message.find("stale") == std::string_view::npos) return;
    std::lock_guard lock(log_mutex);
    stale_lines.emplace_back(message);
  });
  const std::shared_ptr<void> restore_log(nullptr, [](void*) { livestate::set_log_sink({}); });
  Fixture f;
  f.store->upsert_resource("widgets", "a", {{"size", 1}});
  f.store->upsert_resource("widgets", "gone", {{"size", 1}});
  Replica replica(f);
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), replica.options("widgets"));
  Recorder recorder;
  view.on_change(recorder.callback());
  view.start();
  f.settle();
  recorder.changes.clear();

  // Applied from the messages; the replica has none of it yet.
  f.store->upsert_resource("widgets", "a", {{"size", 2}});
  f.store->upsert_resource("widgets", "b", {{"size", 1}});
  f.store->delete_resource("widgets", "gone");
  f.settle();
  REQUIRE(recorder.changes.size() == 3);

  view.resync();  // as after a reconnect: through the replica, which lacks b and still has a at size 1
  f.settle_for(std::chrono::milliseconds(100));
  CHECK(view.get("a") == f.store->get_resource("widgets", "a"));
  CHECK(view.get("b") == f.store->get_resource("widgets", "b"));
  CHECK_FALSE(view.get("gone").has_value());
  CHECK(recorder.changes.size() == 3);  // nothing removed, rolled back or brought back
  auto stats = view.stats();
  CHECK(stats.count(Anomaly::stale_read) >= 2);
  CHECK(stats.stale_entries == 0);

  f.settle_for(std::chrono::milliseconds(600));
  CHECK(view.stats().stale_entries == 2);  // a and b, past the deadline
  {
    std::lock_guard lock(log_mutex);
    CHECK(stale_lines.size() == 1);
  }
  view.resync();  // the replica still lags: they stay stale
  f.settle();
  CHECK(view.stats().stale_entries == 2);
  CHECK(recorder.changes.size() == 3);

  // Caught up: the retries that go on find it, without a resync.
  replica.catch_up();
  f.settle_for(std::chrono::milliseconds(1500));
  CHECK(view.stats().stale_entries == 0);
  CHECK(recorder.changes.size() == 3);
  CHECK(view.verify().empty());
}

TEST_CASE(
    "a reload through a lagging replica of an entry that left the narrowing removes it once the replica has the "
    "change") {
  Fixture f;
  const auto master = f.store->master_active("m1");
  const auto builder = f.store->builder_started("b1", master);
  db::NewBuildset buildset;
  buildset.builderids = {builder};
  const auto request = f.store->add_buildset(buildset).buildrequestids.at(builder);
  const auto id = std::to_string(request);
  Replica replica(f);
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(),
                           replica.options("buildrequests", {{"complete", false}}));
  Recorder recorder;
  view.on_change(recorder.callback());
  view.start();
  f.settle();
  REQUIRE(view.get(id).has_value());

  // The claim is lost: the completion breaks the lifecycle and needs a
  // reload, which the replica can't serve yet.
  f.relay.hold();
  f.store->claim_buildrequests(std::vector<std::int64_t>{request}, master);
  f.store->complete_buildrequests(std::vector<std::int64_t>{request}, 0, master);
  f.relay.deliver("buildrequests." + id + ".complete");
  f.settle_for(std::chrono::milliseconds(50));
  CHECK(view.stats().count(Anomaly::lifecycle_violation) == 1);
  CHECK(view.stats().count(Anomaly::stale_read) >= 1);
  CHECK(view.get(id).has_value());  // the replica's unclaimed row is older than what was announced
  CHECK(recorder.changes.size() == 1);

  // Caught up: the request is complete, out of the narrowing, and goes.
  replica.catch_up();
  f.settle_for(std::chrono::milliseconds(1500));
  CHECK_FALSE(view.get(id).has_value());
  CHECK(recorder.count(ChangeKind::removed, id) == 1);
  CHECK(view.stats().stale_entries == 0);
  CHECK(view.verify().empty());
}

TEST_CASE("bad options are refused with a clear error") {
  Fixture f;
  CHECK_THROWS_AS(reconcile::LiveView(*f.view_mq, *f.store, f.io.get_executor(), of_type("")), std::invalid_argument);
  CHECK_THROWS_AS(reconcile::LiveView(*f.view_mq, *f.store, f.io.get_executor(), of_type("widg\xc3\xa9ts")),
                  livestate::InvalidRoutingKey);
  CHECK_THROWS_AS(reconcile::LiveView(*f.view_mq, *f.store, f.io.get_executor(), of_type("widgets", Json::array())),
                  std::invalid_argument);
  auto unbounded = of_type("widgets");
  unbounded.max_queued = 0;
  CHECK_THROWS_WITH_AS(reconcile::LiveView(*f.view_mq, *f.store, f.io.get_executor(), unbounded),
                       "LiveView: max_queued must be positive", std::invalid_argument);
  auto forever = of_type("widgets");
  forever.forget_deleted_after = std::chrono::milliseconds::max();
  CHECK_THROWS_WITH_AS(reconcile::LiveView(*f.view_mq, *f.store, f.io.get_executor(), forever),
                       "LiveView: forget_deleted_after must be between 0 and 366 days", std::invalid_argument);
  auto backwards = of_type("widgets");
  backwards.forget_departed_after = std::chrono::milliseconds(-1);
  CHECK_THROWS_WITH_AS(reconcile::LiveView(*f.view_mq, *f.store, f.io.get_executor(), backwards),
                       "LiveView: forget_departed_after must be between 0 and 366 days", std::invalid_argument);
  reconcile::LiveView view(*f.view_mq, *f.store, f.io.get_executor(), of_type("widgets"));
  view.start();
  CHECK_THROWS_AS(view.start(), std::logic_error);
  // An unknown field in the narrowing is a programming error: it surfaces.
  reconcile::LiveView wrong(*f.view_mq, *f.store, f.io.get_executor(), of_type("buildrequests", {{"colour", 1}}));
  wrong.start();
  CHECK_THROWS_AS(f.settle(), std::invalid_argument);
}
