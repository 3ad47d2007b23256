#include <doctest/doctest.h>

#include <future>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>  // before Boost 1.74's awaitable.hpp, which needs std::exchange and forgets it

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include "livestate/mq/simple_mq.hpp"

using namespace livestate;
using boost::system::error_code;

namespace {
struct Outcome {
  int calls = 0;
  error_code error;
  std::optional<Message> message;
  auto handler() {
    return [this](error_code e, std::optional<Message> m) {
      ++calls;
      error = e;
      message = std::move(m);
    };
  }
};
}  // namespace

TEST_CASE("wait_until_event completes at once with no message when the check is true") {
  auto mq = mq::make_simple_mq();
  Outcome outcome;
  mq->async_wait_until_event(
      Filter::parse("builds.*.finished"), [] { return true; }, outcome.handler());
  CHECK(outcome.calls == 1);
  CHECK_FALSE(outcome.error);
  CHECK_FALSE(outcome.message.has_value());
  CHECK(mq->stats().consumers == 0);  // unsubscribed
}

TEST_CASE("wait_until_event with a false check completes with the next matching message, once") {
  auto mq = mq::make_simple_mq();
  Outcome outcome;
  mq->async_wait_until_event(
      Filter::parse("builds.*.finished"), [] { return false; }, outcome.handler());
  CHECK(outcome.calls == 0);
  mq->produce(RoutingKey{"builds", "7", "new"}, Json::object());
  CHECK(outcome.calls == 0);
  mq->produce(RoutingKey{"builds", "7", "finished"}, {{"results", 0}});
  mq->produce(RoutingKey{"builds", "8", "finished"}, {{"results", 2}});
  CHECK(outcome.calls == 1);
  REQUIRE(outcome.message.has_value());
  CHECK(outcome.message->key == RoutingKey{"builds", "7", "finished"});
  CHECK(outcome.message->body == Json{{"results", 0}});
  CHECK(mq->stats().consumers == 0);
}

TEST_CASE("wait_until_event subscribes before it checks: an event during the check is not lost") {
  auto mq = mq::make_simple_mq();
  Outcome outcome;
  // The check looks (finds nothing), and the event happens right after it looked.
  mq->async_wait_until_event(
      Filter::parse("buildsets.1.complete"),
      [&] {
        mq->produce(RoutingKey{"buildsets", "1", "complete"}, {{"bsid", 1}});
        return false;
      },
      outcome.handler());
  CHECK(outcome.calls == 1);
  REQUIRE(outcome.message.has_value());
  CHECK(outcome.message->body == Json{{"bsid", 1}});
}

TEST_CASE("wait_until_event works with use_future") {
  auto mq = mq::make_simple_mq();
  auto pending = mq->async_wait_until_event(
      Filter::parse("x.*"), [] { return false; }, boost::asio::use_future);
  auto immediate = mq->async_wait_until_event(
      Filter::parse("x.*"), [] { return true; }, boost::asio::use_future);
  CHECK(immediate.get() == std::nullopt);
  CHECK(pending.wait_for(std::chrono::seconds(0)) == std::future_status::timeout);
  mq->produce(RoutingKey{"x", "1"}, {{"n", 1}});
  auto message = pending.get();
  REQUIRE(message.has_value());
  CHECK(message->key == RoutingKey{"x", "1"});
}

TEST_CASE("wait_until_event works in a coroutine with use_awaitable") {
  boost::asio::io_context io;
  auto mq = mq::make_simple_mq();
  std::optional<Message> received;
  bool immediate_was_empty = false;
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        auto none = co_await mq->async_wait_until_event(
            Filter::parse("x.*"), [] { return true; }, boost::asio::use_awaitable);
        immediate_was_empty = !none.has_value();
        received = co_await mq->async_wait_until_event(
            Filter::parse("x.*"), [] { return false; }, boost::asio::use_awaitable);
      },
      boost::asio::detached);
  io.run_one();  // the coroutine starts and suspends, waiting
  CHECK(immediate_was_empty);
  CHECK_FALSE(received.has_value());
  // Produced from another thread: the coroutine resumes on the io_context's.
  std::thread producer([&] { mq->produce(RoutingKey{"x", "9"}, {{"n", 9}}); });
  producer.join();
  io.run();
  REQUIRE(received.has_value());
  CHECK(received->key == RoutingKey{"x", "9"});
}

TEST_CASE("a handler bound to an executor runs there, not in the producing thread") {
  boost::asio::io_context io;
  auto mq = mq::make_simple_mq();
  std::thread::id ran_on;
  mq->async_wait_until_event(
      Filter::parse("x"), [] { return false; },
      boost::asio::bind_executor(io, [&](error_code, std::optional<Message>) { ran_on = std::this_thread::get_id(); }));
  std::thread producer([&] { mq->produce(RoutingKey{"x"}, Json::object()); });
  producer.join();
  CHECK(ran_on == std::thread::id{});
  io.run();
  CHECK(ran_on == std::this_thread::get_id());
}

TEST_CASE("destroying the connector completes a pending wait with operation_aborted") {
  auto mq = mq::make_simple_mq();
  Outcome outcome;
  mq->async_wait_until_event(
      Filter::parse("never"), [] { return false; }, outcome.handler());
  mq.reset();
  CHECK(outcome.calls == 1);
  CHECK(outcome.error == boost::asio::error::operation_aborted);
  CHECK_FALSE(outcome.message.has_value());
}

TEST_CASE("a check that throws propagates, unsubscribes, and never calls the handler") {
  auto mq = mq::make_simple_mq();
  Outcome outcome;
  CHECK_THROWS_WITH_AS(
      mq->async_wait_until_event(
          Filter::parse("x"), []() -> bool { throw std::runtime_error("database is gone"); }, outcome.handler()),
      "database is gone", std::runtime_error);
  CHECK(mq->stats().consumers == 0);
  mq->produce(RoutingKey{"x"}, Json::object());
  mq.reset();
  CHECK(outcome.calls == 0);
}
