// A live view's rules without its machinery (reconcile/src/view_rules.hpp):
// events in, actions out, no server, no executor, and a clock the test moves.
// The detectors as tables: each row a starting state, an event, the anomaly
// it must count and what the view must do (announce a change, reload an id
// at a revision, resync, or nothing). The rules over time (retries, windows,
// timers) are in view_rules_time.cpp.

#include <doctest/doctest.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "view_rules_harness.hpp"

using namespace livestate::test::rules;

namespace {

// What the view must do about one event.
struct Does {
  enum class What { nothing, add, change, remove, reload, resync } what = What::nothing;
  std::string id;               // reload
  std::int64_t must_reach = 0;  // reload: the revision the read must reach
};
const Does nothing{};
const Does adds{Does::What::add, "", 0};
const Does changes{Does::What::change, "", 0};
const Does removes{Does::What::remove, "", 0};
Does reloads(std::string id, std::int64_t must_reach) { return {Does::What::reload, std::move(id), must_reach}; }

void check_does(Rules& view, const Does& expected) {
  using What = Does::What;
  const auto kind_of = [](What what) {
    return what == What::add ? ChangeKind::added : what == What::change ? ChangeKind::changed : ChangeKind::removed;
  };
  if (expected.what == What::add || expected.what == What::change || expected.what == What::remove) {
    REQUIRE(view.actions.changes.size() == 1);
    CHECK(view.actions.changes[0].kind == kind_of(expected.what));
  } else {
    CHECK(view.actions.changes.empty());
  }
  const bool reads = expected.what == What::reload || expected.what == What::resync;
  CHECK(view.actions.read == reads);
  if (!reads) return;
  const auto read = view.rules.next_read(view.now);
  REQUIRE(read.has_value());
  if (expected.what == What::resync) {
    CHECK(read->kind == detail::Read::Kind::snapshot);
    return;
  }
  CHECK(read->kind == detail::Read::Kind::reload);
  CHECK(read->ids == std::vector<std::string>{expected.id});
  CHECK(read->must_reach == std::vector<std::int64_t>{expected.must_reach});
  CHECK(read->where == Json::object());  // every row of the id, also one that left a narrowing
}

struct MessageCase {
  const char* name;
  reconcile::ViewOptions options;
  std::map<std::string, Json> held;  // the snapshot the view loaded
  std::string key;
  Json body;
  std::optional<Anomaly> anomaly;
  Does does;
};

}  // namespace

TEST_CASE("each message detector counts its anomaly and asks for its action") {
  const auto widgets = of_type("widgets");
  const auto requests = of_type("buildrequests");
  const auto pending = of_type("buildrequests", {{"complete", false}});
  const auto of_builder_1 = of_type("buildrequests", {{"builderid", 1}});
  auto free = of_type("logs");
  free.lifecycle_rules = false;
  const std::map<std::string, Json> a2{{"a", widget("a", 2)}};
  const std::map<std::string, Json> unclaimed{{"1", request(1, 1, false, false)}};
  const std::map<std::string, Json> claimed{{"1", request(1, 2, true, false)}};
  const std::map<std::string, Json> completed{{"1", request(1, 3, true, true)}};
  Json without_revision = widget("a", 3);
  without_revision.erase("_rev");
  Json text_revision = widget("a", 3);
  text_revision["_rev"] = "3";

  // clang-format off
  const std::vector<MessageCase> cases = {
      {"a newer update changes the entry", widgets, a2, "widgets.a.updated", widget("a", 3), {}, changes},
      {"an update at the entry's revision is a duplicate", widgets, a2, "widgets.a.updated", widget("a", 2),
       Anomaly::stale_or_duplicate, nothing},
      {"an older update is stale", widgets, a2, "widgets.a.updated", widget("a", 1), Anomaly::stale_or_duplicate,
       nothing},
      {"a new for an id the view lacks adds it, without a query", widgets, {}, "widgets.b.new", widget("b", 1), {},
       adds},
      {"an update for an id the view lacks reloads it", widgets, {}, "widgets.b.updated", widget("b", 4),
       Anomaly::unknown_entry, reloads("b", 4)},
      {"an event the type doesn't have reloads the entry", widgets, a2, "widgets.a.polished", widget("a", 3),
       Anomaly::unknown_event, reloads("a", 3)},
      {"an unknown event for an id the view lacks is an unknown event", widgets, {}, "widgets.b.polished",
       widget("b", 3), Anomaly::unknown_event, reloads("b", 3)},
      {"a body without _rev reloads the entry", widgets, a2, "widgets.a.updated", without_revision,
       Anomaly::no_revision, reloads("a", 0)},
      {"a _rev that is not an integer is none", widgets, a2, "widgets.a.updated", text_revision,
       Anomaly::no_revision, reloads("a", 0)},
      {"a new for a resource the view holds: deleted and made again unseen", widgets, a2, "widgets.a.new",
       widget("a", 3), Anomaly::lifecycle_violation, reloads("a", 3)},
      {"a deletion removes the entry", widgets, a2, "widgets.a.deleted", widget("a", 3), {}, removes},
      {"a deletion older than the entry is stale", widgets, a2, "widgets.a.deleted", widget("a", 1),
       Anomaly::stale_or_duplicate, nothing},
      {"a deletion of an id the view lacks is remembered, not an anomaly", widgets, {}, "widgets.b.deleted",
       widget("b", 3), {}, nothing},
      {"a claim of an unclaimed request", requests, unclaimed, "buildrequests.1.claimed",
       request(1, 2, true, false), {}, changes},
      {"a completion of an unclaimed request: its claim was lost", requests, unclaimed, "buildrequests.1.complete",
       request(1, 3, true, true), Anomaly::lifecycle_violation, reloads("1", 3)},
      {"a claim of a claimed request", requests, claimed, "buildrequests.1.claimed", request(1, 3, true, false),
       Anomaly::lifecycle_violation, reloads("1", 3)},
      {"an unclaim of a claimed request", requests, claimed, "buildrequests.1.unclaimed",
       request(1, 3, false, false), {}, changes},
      {"a cancel of a request not complete", requests, claimed, "buildrequests.1.cancel", request(1, 3, true, true),
       Anomaly::lifecycle_violation, reloads("1", 3)},
      {"a cancel of a complete request", requests, completed, "buildrequests.1.cancel", request(1, 4, true, true),
       {}, changes},
      {"a new for a request the view holds", requests, claimed, "buildrequests.1.new", request(1, 3, false, false),
       Anomaly::lifecycle_violation, reloads("1", 3)},
      {"a claim of a request the view lacks", requests, {}, "buildrequests.1.claimed", request(1, 2, true, false),
       Anomaly::unknown_entry, reloads("1", 2)},
      {"another builder's request is not the narrowed view's: no query", of_builder_1, {},
       "buildrequests.2.claimed", request(2, 2, true, false, 2), {}, nothing},
      {"a request that stops matching leaves a narrowed view", pending, claimed, "buildrequests.1.complete",
       request(1, 3, true, true), {}, removes},
      {"without lifecycle rules any event is allowed", free, {{"1", widget("1", 1)}}, "logs.1.appended",
       widget("1", 2), {}, changes},
      {"without lifecycle rules, started creates", free, {}, "logs.1.started", widget("1", 1), {}, adds},
      {"without lifecycle rules, an event for an id the view lacks reloads it", free, {}, "logs.1.appended",
       widget("1", 2), Anomaly::unknown_entry, reloads("1", 2)},
      {"a key of another length is no event of the view's", widgets, a2, "widgets.a.updated.more", widget("a", 3),
       {}, nothing},
  };
  // clang-format on
  for (const auto& row : cases) {
    CAPTURE(row.name);
    Rules view(row.options);
    view.load(row.held);
    view.message(row.key, row.body);
    CHECK(view.anomalies() == (row.anomaly ? 1u : 0u));
    if (row.anomaly) CHECK(view.stats().count(*row.anomaly) == 1);
    check_does(view, row.does);
  }
}

TEST_CASE("a late message about an entry deleted or departed is stale; made again later, it comes back") {
  struct Case {
    const char* name;
    reconcile::ViewOptions options;
    std::map<std::string, std::int64_t> deleted;  // the snapshot's deletions
    std::vector<std::pair<std::string, Json>> before;
    std::string key;
    Json body;
    std::optional<Anomaly> anomaly;
    Does does;
  };
  const auto widgets = of_type("widgets");
  const auto pending = of_type("buildrequests", {{"complete", false}});
  // clang-format off
  const std::vector<Case> cases = {
      {"a new from before a deletion the resync learned", widgets, {{"x", 5}}, {}, "widgets.x.new", widget("x", 3),
       Anomaly::stale_or_duplicate, nothing},
      {"an update from before a deletion it was told", widgets, {}, {{"widgets.x.deleted", widget("x", 5)}},
       "widgets.x.updated", widget("x", 4), Anomaly::stale_or_duplicate, nothing},
      {"a deletion told twice", widgets, {}, {{"widgets.x.deleted", widget("x", 5)}}, "widgets.x.deleted",
       widget("x", 5), Anomaly::stale_or_duplicate, nothing},
      {"a new after the deletion, with a higher revision", widgets, {{"x", 5}}, {}, "widgets.x.new",
       widget("x", 6), {}, adds},
      {"a claim from before the request left the narrowing", pending, {},
       {{"buildrequests.1.complete", request(1, 3, true, true)}}, "buildrequests.1.claimed",
       request(1, 2, true, false), Anomaly::stale_or_duplicate, nothing},
  };
  // clang-format on
  for (const auto& row : cases) {
    CAPTURE(row.name);
    Rules view(row.options);
    view.load({}, row.deleted);
    for (const auto& [key, body] : row.before) view.message(key, body);
    view.message(row.key, row.body);
    CHECK(view.anomalies() == (row.anomaly ? 1u : 0u));
    check_does(view, row.does);
  }
}

TEST_CASE("control events, a migration and an overflowing inbox resync the view") {
  using livestate::mq::ControlKind;
  struct Case {
    const char* name;
    std::function<void(Rules&)> event;
    Anomaly anomaly;
  };
  // clang-format off
  const std::vector<Case> cases = {
      {"a gap in a producer's sequence", [](Rules& view) { view.control(ControlKind::gap); }, Anomaly::stream_gap},
      {"a reconnect", [](Rules& view) { view.control(ControlKind::reconnected); }, Anomaly::transport_reset},
      {"the connector's overflow", [](Rules& view) { view.control(ControlKind::overflow); },
       Anomaly::transport_reset},
      {"a durable queue's expiry", [](Rules& view) { view.control(ControlKind::expired); },
       Anomaly::transport_reset},
      {"schema.N.migrated",
       [](Rules& view) {
         view.rules.receive(detail::SchemaMigrated{}, view.now);
         view.take();
       },
       Anomaly::schema_migrated},
      {"the view's inbox overflowed",
       [](Rules& view) {
         view.rules.inbox_overflowed();
         view.take();
       },
       Anomaly::transport_reset},
  };
  // clang-format on
  for (const auto& row : cases) {
    CAPTURE(row.name);
    Rules view(of_type("widgets"));
    view.load({{"a", widget("a", 1)}});
    view.message("widgets.b.updated", widget("b", 2));  // a reload due, covered by the resync
    row.event(view);
    CHECK(view.stats().count(row.anomaly) == 1);
    CHECK_FALSE(view.actions.read);  // asked for once, with the reload
    view.snapshot({{"a", widget("a", 1)}, {"b", widget("b", 2)}});
    CHECK(view.actions.changes.size() == 1);
    CHECK_FALSE(view.rules.next_read(view.now).has_value());
    CHECK(view.stats().resyncs == 2);
    CHECK(view.stats().resync_repairs == 1);
  }
}

TEST_CASE("reasons to resync given before it starts share one resync") {
  Rules view(of_type("widgets"));
  view.load({});
  view.control(livestate::mq::ControlKind::gap);
  CHECK(view.actions.read);
  view.control(livestate::mq::ControlKind::reconnected);
  view.rules.resync_requested();
  view.take();
  CHECK_FALSE(view.actions.read);
  view.snapshot({});
  CHECK_FALSE(view.actions.read);
  CHECK(view.stats().resyncs == 2);
  CHECK(view.anomalies() == 2);
}

TEST_CASE("reloads asked for by one burst share a query, in batches of reload_batch") {
  auto options = of_type("widgets");
  options.reload_batch = 2;
  Rules view(options);
  view.load({});
  view.message("widgets.a.updated", widget("a", 2));
  CHECK(view.actions.read);
  view.message("widgets.b.updated", widget("b", 2));
  view.message("widgets.c.updated", widget("c", 2));
  view.message("widgets.a.updated", widget("a", 3));  // the same id again: one reload, the higher revision
  CHECK_FALSE(view.actions.read);
  const auto first = view.reload({{"a", widget("a", 3)}, {"b", widget("b", 2)}});
  CHECK(first.ids == std::vector<std::string>{"a", "b"});
  CHECK(first.must_reach == std::vector<std::int64_t>{3, 2});
  CHECK(view.actions.read);  // the rest: another batch
  const auto second = view.reload({{"c", widget("c", 2)}});
  CHECK(second.ids == std::vector<std::string>{"c"});
  CHECK_FALSE(view.actions.read);
  const auto stats = view.stats();
  CHECK(stats.reload_queries == 2);
  CHECK(stats.entries_reloaded == 3);
  CHECK(stats.count(Anomaly::unknown_entry) == 4);  // a's second message too: a was still unknown
  CHECK(stats.count(Anomaly::stale_read) == 0);
  CHECK(view.rules.entries().size() == 3);
  CHECK(stats.remembered_ids == 0);
}

TEST_CASE("messages before the first load wait for it: the newer are applied, the older dropped silently") {
  Rules view(of_type("widgets"));
  view.start();
  view.message("widgets.a.updated", widget("a", 2));  // older than the snapshot
  view.message("widgets.a.updated", widget("a", 3));  // as old
  view.message("widgets.b.new", widget("b", 1));      // newer: made after the snapshot was read
  CHECK_FALSE(view.rules.ready());
  CHECK(view.actions.changes.empty());
  view.snapshot({{"a", widget("a", 3)}});
  CHECK(view.rules.ready());
  REQUIRE(view.actions.changes.size() == 2);
  CHECK(view.actions.changes[0].id == "a");
  CHECK(view.actions.changes[1].id == "b");
  CHECK(view.actions.changes[1].kind == ChangeKind::added);
  const auto stats = view.stats();
  CHECK(stats.messages == 3);
  CHECK(view.anomalies() == 0);
  CHECK(stats.reload_queries == 0);
}

TEST_CASE("messages before the first load are bounded by max_queued: past it they are discarded and counted") {
  auto options = of_type("widgets");
  options.max_queued = 2;
  Rules view(options);
  view.start();
  for (const auto* id : {"a", "b", "c", "d"}) view.message(std::string("widgets.") + id + ".new", widget(id, 1));
  auto stats = view.stats();
  CHECK(stats.queue_overflows == 1);  // at the 3rd: the load covers them
  CHECK(stats.messages_discarded == 3);
  CHECK(stats.count(Anomaly::transport_reset) == 1);
  view.snapshot({{"a", widget("a", 1)}, {"b", widget("b", 1)}, {"c", widget("c", 1)}, {"d", widget("d", 1)}});
  CHECK(view.rules.entries().size() == 4);
  CHECK(view.stats().messages == 1);  // d, kept
}
