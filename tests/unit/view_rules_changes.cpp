// A live view's repairs by what was missed (reconcile/src/view_rules_reads.cpp):
// when its source keeps a history of changes, a resync after the first reads
// only what changed since the view's watermark, and reads everything only
// when it must. The rules alone, as in view_rules.cpp.

#include <doctest/doctest.h>

#include <map>
#include <string>

#include "view_rules_harness.hpp"

using namespace livestate::test::rules;
using livestate::mq::ControlKind;

TEST_CASE("after a gap the view reads what changed since its watermark, and the next repair starts where it ended") {
  Rules view(of_type("widgets"));
  view.load({{"a", widget("a", 2)}, {"b", widget("b", 1)}}, {}, "w1");
  CHECK(view.stats().full_resyncs == 1);

  view.control(ControlKind::gap);
  const auto read = view.changes({{"b", widget("b", 4, 7)}, {"c", widget("c", 1)}}, {{"a", 3}}, "w2");
  CHECK(read.since == "w1");
  REQUIRE(view.actions.changes.size() == 3);
  CHECK(view.actions.changes[0].kind == ChangeKind::removed);  // a, deleted since
  CHECK(view.actions.changes[1].kind == ChangeKind::changed);  // b
  CHECK(view.actions.changes[1].before == widget("b", 1));
  CHECK(view.actions.changes[2].kind == ChangeKind::added);  // c
  auto stats = view.stats();
  CHECK(stats.resyncs == 2);
  CHECK(stats.full_resyncs == 1);
  CHECK(stats.resync_rows == 2 + 3);  // the load read 2
  CHECK(stats.resync_repairs == 3);
  CHECK(view.rules.entries().size() == 2);

  // A late message about the deleted entry stays out; the next gap reads
  // from where this repair ended.
  view.message("widgets.a.updated", widget("a", 2, 5));
  CHECK(view.stats().count(Anomaly::stale_or_duplicate) == 1);
  view.control(ControlKind::reconnected);
  CHECK(view.changes({}, {}, "w3").since == "w2");
  CHECK(view.actions.changes.empty());
  CHECK(view.stats().resyncs == 3);
}

TEST_CASE("a repair leaves alone what the view holds newer, and what it names of another narrowing") {
  Rules view(of_type("buildrequests", {{"complete", false}}));
  view.load({{"1", request(1, 1, false, false)}, {"2", request(2, 1, false, false)}}, {}, "w1");
  view.message("buildrequests.1.claimed", request(1, 2, true, false));
  view.control(ControlKind::gap);
  // 1 read as it was before the claim (read before it committed); 2 done,
  // out of the narrowing; 3 made and done while the view was blind.
  view.changes({{"1", request(1, 1, false, false)}, {"2", request(2, 3, true, true)}, {"3", request(3, 3, true, true)}},
               {}, "w2");
  REQUIRE(view.actions.changes.size() == 1);
  CHECK(view.actions.changes[0].kind == ChangeKind::removed);
  CHECK(view.actions.changes[0].id == "2");
  CHECK(view.rules.entries().at("1").revision == 2);
  CHECK(view.rules.entries().count("3") == 0);
  CHECK(view.stats().resync_repairs == 1);
  // A late message about 3, from before it completed, doesn't bring it in.
  view.message("buildrequests.3.new", request(3, 1, false, false));
  CHECK(view.rules.entries().count("3") == 0);
  CHECK(view.stats().count(Anomaly::stale_or_duplicate) == 1);
}

TEST_CASE("a migration, the periodic resync and a source without history read everything") {
  SUBCASE("a schema migration: the rows may read differently, changed or not") {
    Rules view(of_type("widgets"));
    view.load({}, {}, "w1");
    view.rules.receive(detail::SchemaMigrated{}, view.now);
    view.take();
    CHECK_FALSE(view.snapshot({}, {}, "w2").since.has_value());
    view.control(ControlKind::gap);
    CHECK(view.changes({}, {}, "w3").since == "w2");
    CHECK(view.stats().full_resyncs == 2);
  }
  SUBCASE("the periodic resync: it repairs what no watermark finds") {
    auto options = of_type("widgets");
    options.resync_every = std::chrono::seconds(10);
    Rules view(options);
    view.start();
    REQUIRE(view.actions.timers.size() == 1);
    const auto timer = view.actions.timers.front();
    view.snapshot({}, {}, "w1");
    view.later(std::chrono::seconds(10));
    view.rules.timer_fired(timer, view.now);
    view.take();
    CHECK_FALSE(view.snapshot({}, {}, "w2").since.has_value());
  }
  SUBCASE("a source that keeps no history") {
    Rules view(of_type("widgets"));
    view.load({{"a", widget("a", 1)}});
    view.control(ControlKind::gap);
    CHECK_FALSE(view.snapshot({}).since.has_value());
    CHECK(view.actions.changes.size() == 1);  // a, gone
    CHECK(view.stats().full_resyncs == 2);
  }
  SUBCASE("a read of everything that failed is retried reading everything") {
    Rules view(of_type("widgets"));
    view.load({}, {}, "w1");
    view.rules.receive(detail::SchemaMigrated{}, view.now);
    view.take();
    const auto failed = view.rules.next_read(view.now);
    REQUIRE(failed.has_value());
    view.rules.read_failed(*failed, true, view.now);
    view.take();
    REQUIRE(view.actions.timers.size() == 1);
    view.later(std::chrono::seconds(1));
    view.rules.timer_fired(view.actions.timers.front(), view.now);
    view.take();
    CHECK_FALSE(view.snapshot({}, {}, "w2").since.has_value());
  }
}

TEST_CASE("reloads due for ids a repair doesn't name stay due; those it names are covered") {
  Rules view(of_type("widgets"));
  view.load({{"a", widget("a", 1)}, {"b", widget("b", 1)}}, {}, "w1");
  view.message("widgets.a.polished", widget("a", 2));  // unknown event: a reload of a, at 2
  view.message("widgets.b.polished", widget("b", 2));
  view.control(ControlKind::gap);
  view.changes({{"a", widget("a", 2)}}, {}, "w2");
  CHECK(view.actions.read);  // b's reload
  const auto read = view.reload({{"b", widget("b", 2)}});
  CHECK(read.ids == std::vector<std::string>{"b"});
  CHECK(view.rules.entries().at("b").revision == 2);
  CHECK_FALSE(view.rules.next_read(view.now).has_value());
}

TEST_CASE("through a copy that may lag, a repair that doesn't name what messages changed since flags it lagging") {
  Rules view(of_type("widgets"), /*reload_may_lag=*/true);
  view.load({{"a", widget("a", 1)}}, {}, "w1");
  view.message("widgets.a.updated", widget("a", 2));
  view.message("widgets.b.new", widget("b", 1));
  view.control(ControlKind::gap);
  view.changes({}, {}, "w1");  // the copy has none of it yet
  auto stats = view.stats();
  CHECK(stats.count(Anomaly::stale_read) == 2);
  CHECK(view.rules.entries().at("a").revision == 2);  // neither rolled back
  CHECK(view.rules.entries().count("b") == 1);        // nor removed
  REQUIRE(view.actions.timers.size() == 1);           // retried
  CHECK(view.actions.timers.front().kind == detail::Timer::Kind::lag_retry);

  // Caught up: the retry's reload finds both.
  view.later(std::chrono::milliseconds(50));
  view.rules.timer_fired(view.actions.timers.front(), view.now);
  view.take();
  view.reload({{"a", widget("a", 2)}, {"b", widget("b", 1)}});
  CHECK(view.stats().remembered_ids == 0);
  CHECK(view.actions.timers.empty());
}
