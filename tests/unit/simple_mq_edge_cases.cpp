// SimpleMQ at its edges: persistent names made mid-dispatch, stops and produces
// from other threads while a callback runs, wait-until-event checks that see
// a message, and a connector destroyed by its own callback.

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/error.hpp>

#include "eventually.hpp"
#include "livestate/mq/simple_mq.hpp"

using namespace livestate;
using namespace std::chrono_literals;
using Keys = std::vector<std::string>;

namespace {

mq::Callback record_into(Keys& keys) {
  return [&keys](const RoutingKey& key, const Json&) { keys.push_back(key.str()); };
}

struct Outcome {
  int calls = 0;
  boost::system::error_code error;
  std::optional<Message> message;
  auto handler() {
    return [this](boost::system::error_code e, std::optional<Message> m) {
      ++calls;
      error = e;
      message = std::move(m);
    };
  }
};

using livestate::test::eventually;

}  // namespace

TEST_CASE("a persistent name used for the first time gets nothing produced before it, not even a queued message") {
  auto mq = mq::make_simple_mq();
  Keys got;
  std::unique_ptr<mq::Consumer> fresh;
  auto starter = mq->start_consuming(
      [&](const RoutingKey&, const Json&) {
        // Produced first, so still queued when the name is created.
        mq->produce(RoutingKey{"data", "old"}, Json::object());
        fresh = mq->start_consuming(record_into(got), Filter::parse("data.*"), "fresh");
      },
      Filter::parse("go"));
  mq->produce(RoutingKey{"go"}, Json::object());
  CHECK(got.empty());
  CHECK(mq->stats().kept_for_persistent == 0);

  // Stopped and resumed, it gets what came while it was stopped, and still not the old one.
  fresh->stop_consuming();
  mq->produce(RoutingKey{"data", "new"}, Json::object());
  fresh = mq->start_consuming(record_into(got), Filter::parse("data.*"), "fresh");
  CHECK(got == Keys{"data.new"});
}

TEST_CASE("stop_consuming in another thread does not wait for another consumer's callback") {
  auto mq = mq::make_simple_mq();
  std::promise<void> entered;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  auto slow = mq->start_consuming(
      [&](const RoutingKey&, const Json&) {
        entered.set_value();
        released.wait();
      },
      Filter::parse("x"));
  std::atomic<int> later_calls{0};
  // A later target of the same message, so its turn has not come yet.
  auto later = mq->start_consuming([&](const RoutingKey&, const Json&) { ++later_calls; }, Filter::parse("#"));

  std::thread producer([&] { mq->produce(RoutingKey{"x"}, Json::object()); });
  entered.get_future().wait();
  auto stopping = std::async(std::launch::async, [&] { later->stop_consuming(); });
  const bool returned_while_slow_ran = stopping.wait_for(5s) == std::future_status::ready;
  release.set_value();
  producer.join();
  stopping.get();

  CHECK(returned_while_slow_ran);
  CHECK(later_calls.load() == 0);  // stopped before its turn: never called
  CHECK(mq->stats().delivered == 1);
}

TEST_CASE("stop_consuming in another thread waits for its own callback in progress") {
  auto mq = mq::make_simple_mq();
  std::promise<void> entered;
  std::atomic<bool> finished{false};
  auto consumer = mq->start_consuming(
      [&](const RoutingKey&, const Json&) {
        entered.set_value();
        std::this_thread::sleep_for(100ms);
        finished = true;
      },
      Filter::parse("x"));
  std::thread producer([&] { mq->produce(RoutingKey{"x"}, Json::object()); });
  entered.get_future().wait();
  consumer->stop_consuming();
  CHECK(finished.load());
  producer.join();
}

TEST_CASE("consumers stopped from another thread in mid-message are never called after their stop returned") {
  auto mq = mq::make_simple_mq();
  constexpr std::size_t rounds = 20;
  constexpr std::size_t per_round = 50;
  // Kept until the end, so that a late call is counted rather than a crash.
  std::vector<std::atomic<bool>> stop_returned(rounds * per_round);
  std::vector<std::unique_ptr<mq::Consumer>> consumers;
  std::atomic<int> late_calls{0};
  std::atomic<bool> producing{true};
  std::thread producer([&] {
    while (producing.load()) mq->produce(RoutingKey{"tick"}, Json::object());
  });
  for (std::size_t round = 0; round < rounds; ++round) {
    // Every consumer is a target of every message: most stops land while an
    // earlier or later target of the same message is being called.
    for (std::size_t i = round * per_round; i < (round + 1) * per_round; ++i) {
      consumers.push_back(mq->start_consuming(
          [&returned = stop_returned[i], &late_calls](const RoutingKey&, const Json&) {
            std::this_thread::yield();  // widens the window between being chosen and running
            if (returned.load()) ++late_calls;
          },
          Filter::parse("tick")));
    }
    std::this_thread::sleep_for(1ms);
    for (std::size_t i = round * per_round; i < (round + 1) * per_round; ++i) {
      consumers[i]->stop_consuming();
      stop_returned[i] = true;
    }
  }
  producing = false;
  producer.join();
  CHECK(late_calls.load() == 0);
  CHECK(mq->stats().consumers == 0);
}

TEST_CASE("a produce() that waited for its turn returns only once what its message caused is delivered") {
  auto mq = mq::make_simple_mq();
  std::atomic<bool> caused_delivered{false};
  bool caused_delivered_at_return = false;
  bool queued_in_time = false;
  std::thread other;
  auto gate = mq->start_consuming(
      [&](const RoutingKey&, const Json&) {
        // Another thread produces while this one dispatches, so it queues and waits.
        other = std::thread([&] {
          mq->produce(RoutingKey{"in"}, Json::object());
          caused_delivered_at_return = caused_delivered.load();
        });
        queued_in_time = eventually([&] { return mq->stats().produced == 2; });
        // This dispatcher still owns something after the other thread's message.
        mq->produce(RoutingKey{"mine"}, Json::object());
      },
      Filter::parse("gate"));
  auto relay = mq->start_consuming(
      [&](const RoutingKey&, const Json&) { mq->produce(RoutingKey{"caused"}, Json::object()); }, Filter::parse("in"));
  auto sink = mq->start_consuming(
      [&](const RoutingKey&, const Json&) {
        std::this_thread::sleep_for(100ms);  // a producer that returned too early has returned by now
        caused_delivered = true;
      },
      Filter::parse("caused"));
  mq->produce(RoutingKey{"gate"}, Json::object());
  other.join();
  REQUIRE(queued_in_time);
  CHECK(caused_delivered_at_return);
  CHECK(mq->stats().delivered == 3);  // gate, in, caused ("mine" has no consumer)
}

TEST_CASE("wait_until_event: a check that throws after a message came propagates, and the handler is never called") {
  auto mq = mq::make_simple_mq();
  Outcome outcome;
  CHECK_THROWS_WITH_AS(mq->async_wait_until_event(
                           Filter::parse("builds.*.finished"),
                           [&]() -> bool {
                             mq->produce(RoutingKey{"builds", "7", "finished"}, {{"results", 0}});
                             throw std::runtime_error("database is gone");
                           },
                           outcome.handler()),
                       "database is gone", std::runtime_error);
  CHECK(mq->stats().consumers == 0);
  mq->produce(RoutingKey{"builds", "8", "finished"}, Json::object());
  mq.reset();
  CHECK(outcome.calls == 0);
}

TEST_CASE("wait_until_event: a message during the check completes the wait only after the check said no") {
  auto mq = mq::make_simple_mq();
  Outcome outcome;
  int calls_during_check = -1;
  mq->async_wait_until_event(
      Filter::parse("buildsets.*.complete"),
      [&] {
        mq->produce(RoutingKey{"buildsets", "1", "complete"}, {{"bsid", 1}});
        mq->produce(RoutingKey{"buildsets", "2", "complete"}, {{"bsid", 2}});
        calls_during_check = outcome.calls;
        return false;
      },
      outcome.handler());
  CHECK(calls_during_check == 0);
  CHECK(outcome.calls == 1);
  CHECK_FALSE(outcome.error);
  REQUIRE(outcome.message.has_value());
  CHECK(outcome.message->body == Json{{"bsid", 1}});  // the first one
  CHECK(mq->stats().consumers == 0);
}

TEST_CASE("wait_until_event: a check that says yes completes with no message, even if one came during it") {
  auto mq = mq::make_simple_mq();
  Outcome outcome;
  mq->async_wait_until_event(
      Filter::parse("buildsets.1.complete"),
      [&] {
        mq->produce(RoutingKey{"buildsets", "1", "complete"}, {{"bsid", 1}});
        return true;
      },
      outcome.handler());
  CHECK(outcome.calls == 1);
  CHECK_FALSE(outcome.error);
  CHECK_FALSE(outcome.message.has_value());
  CHECK(mq->stats().consumers == 0);
}

TEST_CASE("a connector destroyed from inside its own callback finishes that callback and delivers nothing more") {
  auto mq = mq::make_simple_mq();
  mq::Connector* const connector = mq.get();
  Keys got;
  bool callback_finished = false;
  Outcome pending_wait;
  mq->async_wait_until_event(
      Filter::parse("never"), [] { return false; }, pending_wait.handler());
  std::unique_ptr<mq::Consumer> persistent = mq->start_consuming(record_into(got), Filter::parse("#"), "p");
  persistent->stop_consuming();  // keeps what comes
  auto destroyer = mq->start_consuming(
      [&](const RoutingKey&, const Json&) {
        mq->produce(RoutingKey{"queued"}, Json::object());  // never delivered
        mq.reset();
        callback_finished = true;
      },
      Filter::parse("go"));
  auto later = mq->start_consuming(record_into(got), Filter::parse("#"));

  CHECK_NOTHROW(connector->produce(RoutingKey{"go"}, Json::object()));
  CHECK(mq == nullptr);
  CHECK(callback_finished);
  CHECK(got.empty());
  CHECK(pending_wait.calls == 1);
  CHECK(pending_wait.error == boost::asio::error::operation_aborted);
  // The handles outlive their connector.
  CHECK_NOTHROW(later->stop_consuming());
  CHECK_NOTHROW(later.reset());
  CHECK_NOTHROW(destroyer.reset());
  CHECK_NOTHROW(persistent.reset());
}

TEST_CASE("a connector destroyed by a persistent consumer catching up ends the catch-up") {
  auto mq = mq::make_simple_mq();
  Keys got;
  auto persistent = mq->start_consuming(record_into(got), Filter::parse("n.*"), "p");
  persistent.reset();
  for (int i = 1; i <= 3; ++i) mq->produce(RoutingKey{"n", std::to_string(i)}, Json::object());
  persistent = mq->start_consuming(
      [&](const RoutingKey& key, const Json&) {
        got.push_back(key.str());
        mq.reset();
      },
      Filter::parse("n.*"), "p");
  CHECK(mq == nullptr);
  CHECK(got == Keys{"n.1"});
  CHECK_NOTHROW(persistent.reset());
}
