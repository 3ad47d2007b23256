#include <doctest/doctest.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "livestate/core/log.hpp"
#include "livestate/mq/simple_mq.hpp"

using namespace livestate;

namespace {

// Records what a consumer got, as dotted keys.
struct Recorder {
  std::vector<std::string> keys;
  std::vector<Json> bodies;
  mq::Callback callback() {
    return [this](const RoutingKey& key, const Json& body) {
      keys.push_back(key.str());
      bodies.push_back(body);
    };
  }
};

using Keys = std::vector<std::string>;

}  // namespace

TEST_CASE("produce delivers to every matching consumer before it returns") {
  auto mq = mq::make_simple_mq();
  Recorder claimed, all_requests, builds;
  auto c1 = mq->start_consuming(claimed.callback(), Filter::parse("buildrequests.*.claimed"));
  auto c2 = mq->start_consuming(all_requests.callback(), Filter::parse("buildrequests.#"));
  auto c3 = mq->start_consuming(builds.callback(), Filter::parse("builds.*.*"));

  mq->produce(RoutingKey{"buildrequests", "17", "claimed"}, {{"buildrequestid", 17}, {"_rev", 3}});
  CHECK(claimed.keys == Keys{"buildrequests.17.claimed"});
  CHECK(claimed.bodies.at(0) == Json{{"buildrequestid", 17}, {"_rev", 3}});
  CHECK(all_requests.keys == Keys{"buildrequests.17.claimed"});
  CHECK(builds.keys.empty());

  mq->produce(RoutingKey{"buildrequests", "17", "complete"}, Json::object());
  CHECK(claimed.keys.size() == 1);
  CHECK(all_requests.keys == Keys{"buildrequests.17.claimed", "buildrequests.17.complete"});
}

TEST_CASE("a filter of another length never gets the message") {
  auto mq = mq::make_simple_mq();
  Recorder shorter, longer;
  auto c1 = mq->start_consuming(shorter.callback(), Filter{"builds", std::nullopt});
  auto c2 = mq->start_consuming(longer.callback(), Filter{"builds", std::nullopt, "finished", std::nullopt});
  mq->produce(RoutingKey{"builds", "7", "finished"}, Json::object());
  CHECK(shorter.keys.empty());
  CHECK(longer.keys.empty());
}

TEST_CASE("an empty slot in a consumer's filter matches an empty key element") {
  auto mq = mq::make_simple_mq();
  Recorder recorder;
  auto consumer = mq->start_consuming(recorder.callback(), Filter{"a", std::nullopt, "c"});
  mq->produce(RoutingKey{"a", "", "c"}, Json::object());
  CHECK(recorder.keys == Keys{"a..c"});
}

TEST_CASE("consumers get a message in the order they started, whatever their filters") {
  auto mq = mq::make_simple_mq();
  std::vector<int> order;
  std::vector<std::unique_ptr<mq::Consumer>> consumers;
  const char* filters[] = {"#", "builds.7.finished", "builds.*.finished", "*.7.*", "builds.#", "*.*.*"};
  for (int i = 0; i < 6; ++i) {
    consumers.push_back(mq->start_consuming([&order, i](const RoutingKey&, const Json&) { order.push_back(i); },
                                            Filter::parse(filters[i])));
  }
  mq->produce(RoutingKey{"builds", "7", "finished"}, Json::object());
  CHECK(order == std::vector<int>{0, 1, 2, 3, 4, 5});
}

TEST_CASE("a consumer gets nothing produced before it started or after it stopped") {
  auto mq = mq::make_simple_mq();
  Recorder recorder;
  mq->produce(RoutingKey{"x", "before"}, Json::object());
  auto consumer = mq->start_consuming(recorder.callback(), Filter::parse("x.*"));
  mq->produce(RoutingKey{"x", "during"}, Json::object());
  consumer->stop_consuming();
  mq->produce(RoutingKey{"x", "after"}, Json::object());
  CHECK(recorder.keys == Keys{"x.during"});
}

TEST_CASE("stopping a consumer twice is harmless, and destroying it after stopping too") {
  auto mq = mq::make_simple_mq();
  Recorder recorder;
  auto consumer = mq->start_consuming(recorder.callback(), Filter::parse("x"));
  consumer->stop_consuming();
  CHECK_NOTHROW(consumer->stop_consuming());
  CHECK_NOTHROW(consumer.reset());
  mq->produce(RoutingKey{"x"}, Json::object());
  CHECK(recorder.keys.empty());
  CHECK(mq->stats().consumers == 0);
}

TEST_CASE("destroying a consumer stops it") {
  auto mq = mq::make_simple_mq();
  int calls = 0;
  auto consumer = mq->start_consuming([&](const RoutingKey&, const Json&) { ++calls; }, Filter::parse("x"));
  mq->produce(RoutingKey{"x"}, Json::object());
  consumer.reset();
  mq->produce(RoutingKey{"x"}, Json::object());
  CHECK(calls == 1);
}

TEST_CASE("a consumer may outlive its connector") {
  auto mq = mq::make_simple_mq();
  auto consumer = mq->start_consuming([](const RoutingKey&, const Json&) {}, Filter::parse("x"));
  mq.reset();
  CHECK_NOTHROW(consumer->stop_consuming());
  CHECK_NOTHROW(consumer.reset());
}

TEST_CASE("a message produced from a callback is delivered after the current one, to everyone, in order") {
  auto mq = mq::make_simple_mq();
  std::vector<std::string> log;
  // Consumer A reacts to "new" by producing "claimed" and "started"; B and C
  // must still see "new" before either of them (breadth-first, not depth-first).
  auto a = mq->start_consuming(
      [&](const RoutingKey& key, const Json&) {
        log.push_back("A:" + key.str());
        if (key[2] == "new") {
          mq->produce(RoutingKey{"req", "1", "claimed"}, Json::object());
          mq->produce(RoutingKey{"req", "1", "started"}, Json::object());
          log.push_back("A returned");
        }
      },
      Filter::parse("req.1.*"));
  auto b = mq->start_consuming([&](const RoutingKey& key, const Json&) { log.push_back("B:" + key.str()); },
                               Filter::parse("req.#"));
  mq->produce(RoutingKey{"req", "1", "new"}, Json::object());
  // Everything, the nested messages included, was delivered before produce returned.
  CHECK(log == Keys{"A:req.1.new", "A returned", "B:req.1.new", "A:req.1.claimed", "B:req.1.claimed", "A:req.1.started",
                    "B:req.1.started"});
}

TEST_CASE("a nested message's body is the producer's, even if the producer's copy is gone") {
  auto mq = mq::make_simple_mq();
  Recorder recorder;
  auto relay = mq->start_consuming(
      [&](const RoutingKey&, const Json& body) {
        Json temporary = {{"relayed", body["n"]}};
        mq->produce(RoutingKey{"out"}, temporary);
      },
      Filter::parse("in"));
  auto sink = mq->start_consuming(recorder.callback(), Filter::parse("out"));
  mq->produce(RoutingKey{"in"}, {{"n", 5}});
  REQUIRE(recorder.bodies.size() == 1);
  CHECK(recorder.bodies[0] == Json{{"relayed", 5}});
}

TEST_CASE("a consumer stopped during a dispatch gets nothing more, not even the current message") {
  auto mq = mq::make_simple_mq();
  std::unique_ptr<mq::Consumer> victim;
  int victim_calls = 0;
  auto stopper = mq->start_consuming([&](const RoutingKey&, const Json&) { victim->stop_consuming(); },
                                     Filter::parse("x"));
  victim = mq->start_consuming([&](const RoutingKey&, const Json&) { ++victim_calls; }, Filter::parse("x"));
  mq->produce(RoutingKey{"x"}, Json::object());
  mq->produce(RoutingKey{"x"}, Json::object());
  CHECK(victim_calls == 0);
}

TEST_CASE("a consumer may stop and destroy itself from its own callback") {
  auto mq = mq::make_simple_mq();
  std::unique_ptr<mq::Consumer> self;
  int calls = 0;
  self = mq->start_consuming(
      [&](const RoutingKey&, const Json&) {
        ++calls;
        self.reset();
      },
      Filter::parse("x"));
  Recorder after;
  auto other = mq->start_consuming(after.callback(), Filter::parse("x"));
  mq->produce(RoutingKey{"x"}, Json::object());
  mq->produce(RoutingKey{"x"}, Json::object());
  CHECK(calls == 1);
  CHECK(after.keys.size() == 2);
}

TEST_CASE("a consumer started inside a callback gets the messages produced after it started") {
  auto mq = mq::make_simple_mq();
  Recorder late;
  std::unique_ptr<mq::Consumer> late_consumer;
  auto starter = mq->start_consuming(
      [&](const RoutingKey& key, const Json&) {
        if (key[0] == "first" && !late_consumer) {
          mq->produce(RoutingKey{"queued", "before"}, Json::object());
          late_consumer = mq->start_consuming(late.callback(), Filter::parse("#"));
          mq->produce(RoutingKey{"queued", "after"}, Json::object());
        }
      },
      Filter::parse("first"));
  mq->produce(RoutingKey{"first"}, Json::object());
  mq->produce(RoutingKey{"second"}, Json::object());
  // Not "first" (in flight when it started) nor "queued.before" (produced
  // before it started, though delivered after).
  CHECK(late.keys == Keys{"queued.after", "second"});
}

TEST_CASE("a callback that throws is logged and counted, and the other consumers still get the message") {
  std::vector<std::string> logged;
  set_log_sink([&](LogLevel, std::string_view component, std::string_view message) {
    logged.push_back(std::string(component) + ": " + std::string(message));
  });
  auto mq = mq::make_simple_mq();
  Recorder before, after;
  auto c1 = mq->start_consuming(before.callback(), Filter::parse("x.*"));
  auto thrower = mq->start_consuming([](const RoutingKey&, const Json&) { throw std::runtime_error("view is broken"); },
                                     Filter::parse("x.*"));
  auto weird = mq->start_consuming([](const RoutingKey&, const Json&) { throw 42; }, Filter::parse("x.2"));
  auto c2 = mq->start_consuming(after.callback(), Filter::parse("x.*"));
  mq->produce(RoutingKey{"x", "1"}, Json::object());
  mq->produce(RoutingKey{"x", "2"}, Json::object());
  set_log_sink(nullptr);

  CHECK(before.keys == Keys{"x.1", "x.2"});
  CHECK(after.keys == Keys{"x.1", "x.2"});
  const auto stats = mq->stats();
  CHECK(stats.callback_errors == 3);
  CHECK(stats.delivered == 4);
  CHECK(stats.produced == 2);
  REQUIRE(logged.size() == 3);
  CHECK(logged[0] == "mq.simple: consumer of x.* threw on x.1: view is broken");
  CHECK(logged[2] == "mq.simple: consumer of x.2 threw a non-standard exception on x.2");
}

TEST_CASE("routing stays exact with many consumers on distinct and overlapping filters") {
  auto mq = mq::make_simple_mq();
  std::vector<int> hits(2000, 0);
  std::vector<std::unique_ptr<mq::Consumer>> consumers;
  for (int i = 0; i < 1000; ++i) {
    consumers.push_back(mq->start_consuming([&hits, i](const RoutingKey&, const Json&) { ++hits[i]; },
                                            Filter{"buildrequests", std::to_string(i), "claimed"}));
  }
  for (int i = 1000; i < 2000; ++i) {
    // Every other wildcard consumer is stopped again, to exercise removal from the index.
    consumers.push_back(mq->start_consuming([&hits, i](const RoutingKey&, const Json&) { ++hits[i]; },
                                            Filter{"buildrequests", std::nullopt, "claimed"}));
  }
  for (int i = 1000; i < 2000; i += 2) consumers[i].reset();
  for (int i = 0; i < 500; i += 2) consumers[i].reset();

  for (int i = 0; i < 1000; ++i) mq->produce(RoutingKey{"buildrequests", std::to_string(i), "claimed"}, Json{});
  mq->produce(RoutingKey{"buildrequests", "5000", "claimed"}, Json{});
  mq->produce(RoutingKey{"buildrequests", "1", "complete"}, Json{});
  for (int i = 0; i < 1000; ++i) CHECK(hits[i] == ((i < 500 && i % 2 == 0) ? 0 : 1));
  for (int i = 1000; i < 2000; ++i) CHECK(hits[i] == (i % 2 == 0 ? 0 : 1001));
}

TEST_CASE("start_consuming refuses an empty callback") {
  auto mq = mq::make_simple_mq();
  CHECK_THROWS_AS(mq->start_consuming(mq::Callback{}, Filter::parse("x")), std::invalid_argument);
}
