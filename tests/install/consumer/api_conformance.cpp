// Written only against ../shared/API.md, the public contract: every name used
// here is one that page promises. Exits non-zero, saying what failed, when a
// behaviour the page states does not hold.
#include <utility>  // Boost 1.74's awaitable.hpp needs std::exchange without including it

#include <livestate/livestate.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

namespace {

int failures = 0;

void expect(bool condition, const char* what) {
  if (!condition) {
    std::cerr << "FAILED: " << what << "\n";
    ++failures;
  }
}

using livestate::Filter;
using livestate::Json;
using livestate::Message;
using livestate::RoutingKey;

void routing_keys_and_filters() {
  RoutingKey key{"buildrequests", "17", "claimed"};
  expect(key.size() == 3 && key[1] == "17", "RoutingKey keeps its elements");
  expect(key.str() == "buildrequests.17.claimed", "RoutingKey::str is dotted");
  expect(RoutingKey::parse("buildrequests.17.claimed") == key, "RoutingKey::parse");
  expect(RoutingKey(std::vector<std::string>{"a", "b"}) == RoutingKey{"a", "b"}, "vector constructor");
  std::size_t count = 0;
  for (const auto& element : key) count += element.empty() ? 0 : 1;
  expect(count == 3, "begin()/end()");
  std::unordered_set<RoutingKey> set{key, key};
  expect(set.size() == 1, "std::hash<RoutingKey>");

  expect(!Filter{"a", "b"}.matches(RoutingKey{"a", "b", "c"}), "a filter of another length never matches");
  expect(!Filter{"b", "c"}.matches(RoutingKey{"a", "b", "c"}), "a suffix does not match");
  expect(Filter{"a", std::nullopt, "c"}.matches(RoutingKey{"a", "", "c"}), "nullopt matches the empty string");
  expect(Filter{"a", std::nullopt, "c"}.matches(RoutingKey{"a", "b", "c"}), "nullopt matches any element");
  expect(Filter::parse("buildrequests.*.claimed").matches(key), "dotted * matches one element");
  expect(Filter::parse("builds.#").matches(RoutingKey{"builds", "7", "steps", "2", "finished"}),
         "trailing # matches any suffix");
  expect(!Filter::parse("builds.#").matches(RoutingKey{"buildsets", "1", "new"}), "# is not a string prefix");

  bool threw = false;
  try {
    RoutingKey bad{"builders", "caf\xc3\xa9"};
  } catch (const livestate::InvalidRoutingKey& error) {
    threw = std::string(error.what()).find("caf") != std::string::npos;
  }
  expect(threw, "a non-ASCII element throws InvalidRoutingKey naming the element");
  bool is_error = false;
  try {
    (void)RoutingKey::parse("\xff");
  } catch (const livestate::Error&) {
    is_error = true;
  }
  expect(is_error, "InvalidRoutingKey derives from livestate::Error");
  Message message{key, Json{{"buildrequestid", 17}}};
  expect(message.body["buildrequestid"] == 17, "Message holds key and body");
}

void connector(livestate::mq::Connector& mq) {
  std::vector<std::string> got;
  livestate::mq::Callback callback = [&](const RoutingKey& key, const Json&) { got.push_back(key.str()); };
  std::unique_ptr<livestate::mq::Consumer> consumer =
      mq.start_consuming(callback, Filter{"builds", std::nullopt, "finished"});
  mq.produce(RoutingKey{"builds", "7", "finished"}, Json::object());
  expect(got.size() == 1, "produce delivers synchronously to a matching consumer");
  mq.produce(RoutingKey{"builds", "7", "new"}, Json::object());
  expect(got.size() == 1, "a non-matching key is not delivered");
  consumer->stop_consuming();
  consumer->stop_consuming();  // twice is harmless
  mq.produce(RoutingKey{"builds", "8", "finished"}, Json::object());
  consumer = mq.start_consuming(callback, Filter{"builds", std::nullopt, "finished"});
  expect(got.size() == 1, "a non-persistent consumer gets nothing produced while it was stopped");
  consumer.reset();

  std::vector<std::string> durable;
  auto record = [&](const RoutingKey& key, const Json&) { durable.push_back(key.str()); };
  auto persistent = mq.start_consuming(record, Filter::parse("steps.*.*"), std::string("audit"));
  persistent->stop_consuming();
  mq.produce(RoutingKey{"steps", "1", "new"}, Json::object());
  mq.produce(RoutingKey{"steps", "1", "finished"}, Json::object());
  persistent = mq.start_consuming(record, Filter::parse("steps.*.*"), std::string("audit"));
  expect(durable == std::vector<std::string>{"steps.1.new", "steps.1.finished"},
         "a resumed persistent consumer gets what it missed, in order");

  std::optional<Message> from_callback;
  bool called = false;
  mq.async_wait_until_event(Filter::parse("buildsets.*.complete"), [] { return true; },
                            [&](boost::system::error_code, std::optional<Message> m) {
                              called = true;
                              from_callback = std::move(m);
                            });
  expect(called && !from_callback, "wait_until_event with check true completes with nullopt");

  auto future = mq.async_wait_until_event(Filter::parse("buildsets.*.complete"), [] { return false; },
                                          boost::asio::use_future);
  mq.produce(RoutingKey{"buildsets", "3", "complete"}, Json{{"bsid", 3}});
  auto next = future.get();
  expect(next && next->key == (RoutingKey{"buildsets", "3", "complete"}),
         "wait_until_event with check false completes with the next matching message");

  boost::asio::io_context io;
  std::optional<Message> awaited;
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        awaited = co_await mq.async_wait_until_event(Filter::parse("x"), [] { return false; },
                                                     boost::asio::use_awaitable);
      },
      boost::asio::detached);
  io.run_one();
  mq.produce(RoutingKey{"x"}, Json::object());
  io.run();
  expect(awaited.has_value(), "wait_until_event works with use_awaitable");
}

}  // namespace

int main() {
  routing_keys_and_filters();
  auto simple = livestate::mq::make_simple_mq();
  connector(*simple);
  boost::asio::io_context io;
  auto connected = livestate::mq::connect("simple:", io.get_executor());
  connector(*connected);
  if (failures == 0) std::cout << "api_conformance: every check passed\n";
  return failures == 0 ? 0 : 1;
}
