// A live view's rules over time (reconcile/src/view_rules.hpp), with a
// clock the test moves: the retries of a lagging copy, the windows after
// which departures and deletions are forgotten, failed reads, the periodic
// resync; and the bounded inbox.

#include <doctest/doctest.h>

#include <map>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "livestate/core/error.hpp"
#include "view_rules_harness.hpp"

using namespace livestate::test::rules;

TEST_CASE(
    "a reload through a lagging copy is retried with backoff, flagged stale past the deadline, cleared when it catches "
    "up") {
  auto options = of_type("widgets");
  options.lag_retry_initial = 20ms;
  options.lag_deadline = 300ms;
  Rules view(options, true);
  view.load({{"a", widget("a", 2)}});
  view.message("widgets.a.polished", widget("a", 4));  // unknown event at 4: the read must reach 4
  view.reload({{"a", widget("a", 3)}});                // the copy has 3
  auto stats = view.stats();
  CHECK(stats.count(Anomaly::stale_read) == 1);
  CHECK(view.rules.entries().at("a").revision == 3);  // newer than the entry: taken meanwhile
  REQUIRE(view.actions.timers.size() == 1);
  CHECK(view.actions.timers[0].kind == detail::Timer::Kind::lag_retry);
  CHECK(view.actions.timers[0].at == view.now + 20ms);
  CHECK_FALSE(view.actions.read);

  // The retries, each 20, 40, 80… ms later; past 300 ms the entry is stale.
  std::vector<Clock::duration> backoffs;
  auto timer = view.actions.timers[0];
  while (view.stats().stale_entries == 0) {
    backoffs.push_back(timer.at - view.now);
    view.now = timer.at;
    view.rules.timer_fired(timer, view.now);
    view.take();
    CHECK(view.actions.read);
    view.reload({{"a", widget("a", 3)}});
    REQUIRE(view.actions.timers.size() == 1);
    timer = view.actions.timers[0];
  }
  CHECK(backoffs == std::vector<Clock::duration>{20ms, 40ms, 80ms, 160ms, 320ms});  // 620 ms > 300
  CHECK(view.stats().count(Anomaly::stale_read) == 6);
  CHECK(view.stats().remembered_ids == 2);  // announced, lagging

  // Caught up: the next retry finds 4; the flag clears.
  view.now = timer.at;
  view.rules.timer_fired(timer, view.now);
  view.take();
  view.reload({{"a", widget("a", 4)}});
  stats = view.stats();
  CHECK(stats.stale_entries == 0);
  CHECK(stats.remembered_ids == 0);
  CHECK(view.actions.timers.empty());
  CHECK(view.rules.entries().at("a").revision == 4);
}

TEST_CASE("a retry timer superseded by an earlier one does nothing; retries due together share one query") {
  auto options = of_type("widgets");
  options.lag_retry_initial = 100ms;
  Rules view(options, true);
  view.load({{"a", widget("a", 2)}, {"b", widget("b", 2)}});
  view.message("widgets.a.polished", widget("a", 3));
  view.reload({{"a", widget("a", 2)}});
  REQUIRE(view.actions.timers.size() == 1);
  const auto a_timer = view.actions.timers[0];
  view.later(5ms);
  view.message("widgets.b.polished", widget("b", 3));
  view.reload({{"b", widget("b", 2)}});
  CHECK(view.actions.timers.empty());  // later than the one armed: it re-arms for it
  view.now = a_timer.at;
  view.rules.timer_fired(a_timer, view.now);
  view.take();
  const auto read = view.reload({{"a", widget("a", 3)}, {"b", widget("b", 3)}});
  CHECK(read.ids == std::vector<std::string>{"a", "b"});  // b's retry, 5 ms later, joins
  CHECK(view.stats().remembered_ids == 0);
}

TEST_CASE("a resync through a lagging copy neither drops nor rolls back what the view holds") {
  Rules view(of_type("widgets"), true);
  view.load({{"a", widget("a", 1)}, {"gone", widget("gone", 1)}});
  view.message("widgets.a.updated", widget("a", 2));
  view.message("widgets.b.new", widget("b", 1));
  view.message("widgets.gone.deleted", widget("gone", 2));
  view.later(1s);
  view.control(livestate::mq::ControlKind::reconnected);
  // The copy still has a at 1 and the deleted entry, and lacks b.
  view.snapshot({{"a", widget("a", 1)}, {"gone", widget("gone", 1)}});
  CHECK(view.actions.changes.empty());
  CHECK(view.rules.entries().at("a").revision == 2);
  CHECK(view.rules.entries().count("b") == 1);
  CHECK(view.rules.entries().count("gone") == 0);
  CHECK(view.stats().count(Anomaly::stale_read) == 2);  // a and b: retried
  CHECK(view.actions.timers.size() == 1);
  CHECK(view.stats().since_verified == 1s);  // a resync that lags verifies nothing
}

TEST_CASE("departures and deletions are forgotten after their windows, not before") {
  auto options = of_type("buildrequests", {{"complete", false}});
  options.forget_departed_after = 300ms;
  Rules narrowed(options);
  narrowed.load({});
  narrowed.message("buildrequests.1.complete", request(1, 3, true, true));
  narrowed.later(299ms);
  narrowed.message("buildrequests.2.complete", request(2, 3, true, true));
  CHECK(narrowed.stats().remembered_ids == 2);
  narrowed.later(2ms);
  narrowed.message("buildrequests.1.new", request(1, 1, false, false));  // late, but forgotten: back
  REQUIRE(narrowed.actions.changes.size() == 1);
  CHECK(narrowed.actions.changes[0].kind == ChangeKind::added);
  CHECK(narrowed.stats().remembered_ids == 1);

  auto widgets = of_type("widgets");
  widgets.forget_deleted_after = 1s;
  Rules view(widgets);
  view.load({}, {{"x", 5}});
  CHECK(view.stats().remembered_ids == 1);
  view.later(999ms);
  view.message("widgets.x.new", widget("x", 3));
  CHECK(view.anomalies() == 1);
  view.later(2ms);
  view.message("widgets.y.new", widget("y", 1));
  CHECK(view.stats().remembered_ids == 0);
  // The next resync reads only the deletions of twice the window.
  view.rules.resync_requested();
  const auto read = view.rules.next_read(view.now);
  REQUIRE(read.has_value());
  CHECK(read->deletions_within == 2s);
  CHECK(read->where == Json::object());
}

TEST_CASE("a failed read is retried by a resync with backoff; the periodic resync re-arms itself") {
  auto options = of_type("widgets");
  options.resync_every = 60s;
  Rules view(options);
  view.start();
  REQUIRE(view.actions.timers.size() == 1);
  CHECK(view.actions.timers[0].kind == detail::Timer::Kind::periodic_resync);
  CHECK(view.actions.timers[0].at == view.now + 60s);
  std::vector<Clock::duration> backoffs;
  for (int attempt = 0; attempt < 7; ++attempt) {
    const auto read = view.rules.next_read(view.now);
    REQUIRE(read.has_value());
    view.rules.read_failed(*read, true, view.now);
    view.take();
    REQUIRE(view.actions.timers.size() == 1);
    const auto timer = view.actions.timers[0];
    CHECK(timer.kind == detail::Timer::Kind::resync_retry);
    backoffs.push_back(timer.at - view.now);
    view.now = timer.at;
    view.rules.timer_fired(timer, view.now);
    view.take();
    CHECK(view.actions.read);
  }
  CHECK(backoffs == std::vector<Clock::duration>{100ms, 200ms, 400ms, 800ms, 1600ms, 2000ms, 2000ms});
  CHECK_FALSE(view.rules.ready());
  view.snapshot({});
  CHECK(view.rules.ready());
  view.rules.timer_fired({detail::Timer::Kind::periodic_resync, view.now}, view.now);
  view.take();
  CHECK(view.actions.read);
  REQUIRE(view.actions.timers.size() == 1);
  CHECK(view.actions.timers[0].at == view.now + 60s);

  // A reload that fails keeps its ids due: the resync retried covers them.
  view.snapshot({});
  view.message("widgets.a.updated", widget("a", 2));
  const auto read = view.rules.next_read(view.now);
  REQUIRE(read.has_value());
  view.rules.read_failed(*read, true, view.now);
  view.take();
  REQUIRE(view.actions.timers.size() == 1);
  CHECK(view.actions.timers[0].at == view.now + 100ms);  // the backoff starts over after a resync
  view.message("widgets.b.updated", widget("b", 2));
  CHECK(view.reload().ids == std::vector<std::string>{"a", "b"});
}

TEST_CASE("compare lists the differences with the database; none resets since_verified") {
  Rules view(of_type("widgets"));
  view.load({{"a", widget("a", 1)}, {"b", widget("b", 1)}});
  view.later(5s);
  CHECK(view.stats().since_verified == 5s);
  const auto differences = view.rules.compare({{"b", widget("b", 2)}, {"c", widget("c", 1)}}, view.now);
  REQUIRE(differences.size() == 3);
  CHECK((differences[0].id == "a" && differences[0].in_view && !differences[0].in_database));
  CHECK((differences[1].id == "b" && differences[1].in_view && differences[1].in_database));
  CHECK((differences[2].id == "c" && !differences[2].in_view && differences[2].in_database));
  CHECK(view.stats().since_verified == 5s);
  CHECK(view.rules.compare({{"a", widget("a", 1)}, {"b", widget("b", 1)}}, view.now).empty());
  CHECK(view.stats().since_verified == 0s);
}

TEST_CASE("the inbox holds at most max_queued messages, keeps control events in their place, and asks for one drain") {
  detail::ViewInbox inbox(3);
  const auto message = [](const std::string& id) { return detail::Incoming{RoutingKey{"widgets", id, "new"}, {}}; };
  CHECK(inbox.push(message("a")));  // the first asks for a drain
  CHECK_FALSE(inbox.push(livestate::mq::ControlEvent{livestate::mq::ControlKind::gap, "", std::nullopt, 0}));
  CHECK_FALSE(inbox.push(message("b")));
  CHECK_FALSE(inbox.push(message("c")));
  CHECK(inbox.queued() == 3);
  CHECK_FALSE(inbox.push(message("d")));  // the 4th: what waits is discarded
  CHECK(inbox.queued() == 0);
  CHECK(inbox.overflows() == 1);
  CHECK(inbox.discarded() == 4);
  CHECK_FALSE(inbox.push(message("e")));
  std::vector<detail::Inbound> batch;
  CHECK(inbox.take(batch, 10));  // overflowed: the resync comes first
  REQUIRE(batch.size() == 1);
  CHECK(std::get<detail::Incoming>(batch[0]).key[1] == "e");
  CHECK_FALSE(inbox.more());        // the drain ends
  CHECK(inbox.push(message("f")));  // and the next message asks again
  batch.clear();
  CHECK_FALSE(inbox.take(batch, 10));
  CHECK(inbox.peak() == 3);
}

TEST_CASE("options that can't make a view are refused by the rules") {
  const auto now = Clock::now();
  CHECK_THROWS_AS(detail::ViewRules(of_type(""), false, now), std::invalid_argument);
  CHECK_THROWS_AS(detail::ViewRules(of_type("widg\xc3\xa9ts"), false, now), livestate::InvalidRoutingKey);
  auto unbatched = of_type("widgets");
  unbatched.reload_batch = 0;
  CHECK_THROWS_AS(detail::ViewRules(unbatched, false, now), std::invalid_argument);
}
