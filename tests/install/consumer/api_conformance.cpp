// The public API contract (API.md), checked from the outside.
//
// Written only against API.md: it uses the names and meanings that page
// promises and nothing else, so a build or check failure here is a break in
// the contract, not in an implementation detail. Each check prints what was
// expected on stderr when it fails; main returns non-zero if any failed.

#include <livestate/livestate.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include <chrono>
#include <exception>
#include <functional>
#include <future>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
using livestate::Filter;
using livestate::Json;
using livestate::Message;
using livestate::RoutingKey;
using namespace std::chrono_literals;

// --- the contract's types, as API.md declares them -------------------------

static_assert(std::is_base_of_v<std::runtime_error, livestate::Error>);
static_assert(std::is_base_of_v<livestate::Error, livestate::InvalidRoutingKey>);
static_assert(std::is_same_v<livestate::Json, nlohmann::json>);
static_assert(std::is_same_v<livestate::mq::Callback, std::function<void(const RoutingKey&, const Json&)>>);
static_assert(std::is_same_v<decltype(Message::key), RoutingKey>);
static_assert(std::is_same_v<decltype(Message::body), Json>);
static_assert(std::has_virtual_destructor_v<livestate::mq::Consumer>);
static_assert(std::has_virtual_destructor_v<livestate::mq::Connector>);
static_assert(std::is_same_v<decltype(livestate::mq::make_simple_mq()), std::unique_ptr<livestate::mq::Connector>>);
static_assert(
    std::is_same_v<decltype(livestate::mq::connect(std::string_view{}, std::declval<asio::any_io_executor>())),
                   std::unique_ptr<livestate::mq::Connector>>);
static_assert(!std::is_convertible_v<std::vector<std::string>, RoutingKey>,
              "RoutingKey(std::vector<std::string>) is explicit");

// --- reporting --------------------------------------------------------------

int failures = 0;
int checks = 0;
std::string current_section;

void check(bool ok, std::string_view what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::cerr << "FAILED [" << current_section << "] " << what << "\n";
  }
}

// Runs one group of checks; an exception escaping it is a failure of that group.
void section(std::string name, const std::function<void()>& body) {
  current_section = std::move(name);
  try {
    body();
  } catch (const std::exception& error) {
    ++failures;
    std::cerr << "FAILED [" << current_section << "] unexpected exception: " << error.what() << "\n";
  } catch (...) {
    ++failures;
    std::cerr << "FAILED [" << current_section << "] unexpected non-standard exception\n";
  }
}

template <class Function>
bool throws_invalid_routing_key(Function&& function) {
  try {
    function();
  } catch (const livestate::InvalidRoutingKey& error) {
    // Catchable through the documented root as well.
    const livestate::Error& root = error;
    return root.what() != nullptr;
  } catch (...) {
    return false;
  }
  return false;
}

// Completion handlers may run inline or through the executor the connector
// runs on; either way this makes them run, for at most `limit`.
bool run_until(asio::io_context& io, const std::function<bool()>& done, std::chrono::milliseconds limit = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    io.restart();
    io.run_for(5ms);
  }
  return true;
}

struct Recorded {
  std::vector<std::string> keys;
  std::vector<Json> bodies;
  livestate::mq::Callback callback() {
    return [this](const RoutingKey& key, const Json& body) {
      keys.push_back(key.str());
      bodies.push_back(body);
    };
  }
};

using Keys = std::vector<std::string>;

// --- core -------------------------------------------------------------------

void routing_keys() {
  const RoutingKey key{"buildrequests", "17", "claimed"};
  check(key.size() == 3, "RoutingKey{a,b,c}.size() == 3");
  check(key[0] == "buildrequests" && key[1] == "17" && key[2] == "claimed", "operator[]");
  check(key.str() == "buildrequests.17.claimed", "str() is the dotted form");
  check(RoutingKey::parse("buildrequests.17.claimed") == key, "parse(dotted) == the same key");
  check(RoutingKey{std::vector<std::string>{"buildrequests", "17", "claimed"}} == key,
        "RoutingKey(vector) == RoutingKey{initializer list}");
  check(!(RoutingKey{"buildrequests", "17", "new"} == key), "keys with another element differ");
  std::vector<std::string> elements;
  for (const auto& element : key) elements.emplace_back(element);
  check(elements == Keys{"buildrequests", "17", "claimed"}, "begin()/end() iterate the elements");
  std::unordered_set<RoutingKey> set{key, RoutingKey::parse("buildrequests.17.claimed")};
  check(set.size() == 1, "std::hash<RoutingKey>: equal keys hash together");
  check(std::hash<RoutingKey>{}(key) == std::hash<RoutingKey>{}(RoutingKey::parse(key.str())),
        "equal keys have equal hashes");
  check(RoutingKey{"a", "", "c"}.size() == 3, "an empty element is an element");
}

void non_ascii_routing_keys() {
  check(throws_invalid_routing_key([] {
          RoutingKey key{"builds", "caf\xc3\xa9"};
          (void)key;
        }),
        "a non-ASCII element (initializer list) throws InvalidRoutingKey");
  check(throws_invalid_routing_key([] {
          RoutingKey key{std::vector<std::string>{"builds", "\xff"}};
          (void)key;
        }),
        "a non-ASCII element (vector) throws InvalidRoutingKey");
  check(throws_invalid_routing_key([] { (void)RoutingKey::parse("builds.\xc3\xa9t\xc3\xa9.finished"); }),
        "a non-ASCII element (parse) throws InvalidRoutingKey");
  bool caught_as_error = false;
  try {
    RoutingKey key{"\x80"};
    (void)key;
  } catch (const livestate::Error&) {
    caught_as_error = true;
  }
  check(caught_as_error, "InvalidRoutingKey is caught as livestate::Error");
  check(RoutingKey{"plain", "ascii_~!"}.size() == 2, "7-bit ASCII elements are accepted");
}

void tuple_matching() {
  const RoutingKey abc{"a", "b", "c"};
  check(Filter{"a", "b", "c"}.matches(abc), "equal elements match");
  check(!Filter{"a", "b", "x"}.matches(abc), "a different element doesn't match");
  check(!Filter{"a", "b"}.matches(abc), "a shorter filter (a prefix) never matches");
  check(!Filter{"b", "c"}.matches(abc), "a shorter filter (a suffix) never matches");
  check(!Filter{"a", "b", "c", "d"}.matches(abc), "a longer filter never matches");
  check(!Filter{std::nullopt, std::nullopt}.matches(abc), "nullopt slots of another length never match");
  check(!Filter{std::nullopt, std::nullopt, std::nullopt, std::nullopt}.matches(abc),
        "four nullopts never match three elements");

  const Filter middle{"a", std::nullopt, "c"};
  check(middle.matches(abc), "nullopt matches any element");
  check(middle.matches(RoutingKey{"a", "", "c"}), "nullopt matches the empty element");
  check(!middle.matches(RoutingKey{"a", "b", "x"}), "nullopt doesn't make other elements optional");
  check(Filter{std::nullopt, std::nullopt, std::nullopt}.matches(RoutingKey{"", "", ""}),
        "all-nullopt matches all-empty of the same length");

  const auto claimed = Filter::parse("buildrequests.*.claimed");
  check(claimed.matches(RoutingKey::parse("buildrequests.17.claimed")), "dotted * matches one element");
  check(claimed.matches(RoutingKey{"buildrequests", "", "claimed"}), "dotted * matches an empty element");
  check(!claimed.matches(RoutingKey::parse("buildrequests.17.new")), "dotted filter: other last element");
  check(!claimed.matches(RoutingKey::parse("buildrequests.17")), "dotted filter: shorter key");
  check(!claimed.matches(RoutingKey::parse("buildrequests.17.claimed.x")), "dotted filter: longer key");
  check(Filter::parse("a.b.c").matches(abc), "a dotted filter without wildcards matches its key");

  const auto builds = Filter::parse("builds.#");
  check(builds.matches(RoutingKey{"builds", "7"}), "builds.# matches builds.7");
  check(builds.matches(RoutingKey{"builds", "7", "finished"}), "builds.# matches builds.7.finished");
  check(builds.matches(RoutingKey{"builds", "7", "steps", "2", "logs", "1", "new"}), "builds.# matches a long key");
  check(!builds.matches(RoutingKey{"buildsets", "7", "complete"}), "builds.# doesn't match buildsets.7.complete");
  check(!builds.matches(RoutingKey{"buildrequests", "7"}), "builds.# doesn't match buildrequests.7");
  check(!builds.matches(RoutingKey{"x", "builds", "7"}), "builds.# only matches at the start");
}

// --- mq: the in-process connector -------------------------------------------

void produce_delivers_synchronously() {
  auto mq = livestate::mq::make_simple_mq();
  Recorded finished;
  Recorded everything;
  auto finished_consumer = mq->start_consuming(finished.callback(), Filter{"builds", std::nullopt, "finished"});
  auto everything_consumer = mq->start_consuming(everything.callback(), Filter::parse("builds.#"));

  mq->produce(RoutingKey{"builds", "7", "finished"}, Json{{"buildid", 7}, {"results", 0}});
  check(finished.keys == Keys{"builds.7.finished"}, "a matching consumer got the message before produce() returned");
  check(everything.keys == Keys{"builds.7.finished"}, "every matching consumer got it before produce() returned");
  check(!finished.bodies.empty() && finished.bodies[0] == Json{{"buildid", 7}, {"results", 0}},
        "the body is delivered unchanged");

  mq->produce(RoutingKey{"builds", "7", "started"}, Json{{"buildid", 7}});
  check(finished.keys.size() == 1, "a non-matching consumer gets nothing");
  check(everything.keys == Keys{"builds.7.finished", "builds.7.started"}, "messages arrive in produce order");

  mq->produce(RoutingKey{"changes", "1", "new"}, Json::object());
  check(everything.keys.size() == 2, "a key matching no filter reaches no one");
}

void produce_from_a_callback_is_delivered_after_the_current_message() {
  auto mq = livestate::mq::make_simple_mq();
  Recorded before;
  Recorded after;
  // One consumer registered before and one after the consumer that produces,
  // so both orders of delivery are observed.
  auto first = mq->start_consuming(before.callback(), Filter::parse("chain.*"));
  auto producer = mq->start_consuming(
      [&](const RoutingKey& key, const Json&) {
        if (key[1] == "1") mq->produce(RoutingKey{"chain", "2"}, Json::object());
      },
      Filter::parse("chain.*"));
  auto last = mq->start_consuming(after.callback(), Filter::parse("chain.*"));
  mq->produce(RoutingKey{"chain", "1"}, Json::object());
  check(before.keys == Keys{"chain.1", "chain.2"}, "earlier consumer: current message first, then the nested one");
  check(after.keys == Keys{"chain.1", "chain.2"}, "later consumer: current message first, then the nested one");
}

void a_throwing_callback_does_not_stop_others() {
  auto mq = livestate::mq::make_simple_mq();
  Recorded others;
  auto thrower = mq->start_consuming(
      [](const RoutingKey&, const Json&) {
        throw std::runtime_error("api_conformance: this callback throws on purpose");
      },
      Filter::parse("builds.#"));
  auto other = mq->start_consuming(others.callback(), Filter::parse("builds.#"));
  bool produce_threw = false;
  try {
    mq->produce(RoutingKey{"builds", "1", "new"}, Json::object());
  } catch (...) {
    produce_threw = true;
  }
  check(!produce_threw, "a throwing callback doesn't make produce() throw");
  check(others.keys == Keys{"builds.1.new"}, "other consumers still get the message");
}

void stop_consuming() {
  auto mq = livestate::mq::make_simple_mq();
  Recorded recorded;
  auto consumer = mq->start_consuming(recorded.callback(), Filter::parse("builds.#"));
  mq->produce(RoutingKey{"builds", "1", "new"}, Json::object());
  consumer->stop_consuming();
  consumer->stop_consuming();  // harmless
  mq->produce(RoutingKey{"builds", "2", "new"}, Json::object());
  check(recorded.keys == Keys{"builds.1.new"}, "nothing is delivered after stop_consuming (called twice)");

  Recorded destroyed;
  auto short_lived = mq->start_consuming(destroyed.callback(), Filter::parse("builds.#"));
  short_lived.reset();
  mq->produce(RoutingKey{"builds", "3", "new"}, Json::object());
  check(destroyed.keys.empty(), "destroying a consumer stops it");

  consumer.reset();  // destroying a stopped consumer is harmless too
  check(true, "destroying a stopped consumer");
}

void non_persistent_consumer_gets_nothing_while_stopped() {
  auto mq = livestate::mq::make_simple_mq();
  Recorded recorded;
  auto consumer = mq->start_consuming(recorded.callback(), Filter::parse("builds.*.new"));
  mq->produce(RoutingKey{"builds", "1", "new"}, Json::object());
  consumer->stop_consuming();
  mq->produce(RoutingKey{"builds", "2", "new"}, Json::object());
  consumer = mq->start_consuming(recorded.callback(), Filter::parse("builds.*.new"));
  check(recorded.keys == Keys{"builds.1.new"}, "restarting a non-persistent consumer delivers nothing missed");
  mq->produce(RoutingKey{"builds", "3", "new"}, Json::object());
  check(recorded.keys == (Keys{"builds.1.new", "builds.3.new"}), "the restarted consumer gets new messages");
}

void persistent_consumer_gets_what_it_missed_in_order() {
  auto mq = livestate::mq::make_simple_mq();
  Recorded recorded;
  const Filter filter = Filter::parse("buildrequests.#");
  auto consumer = mq->start_consuming(recorded.callback(), filter, "conformance-audit");
  mq->produce(RoutingKey{"buildrequests", "1", "new"}, Json{{"n", 1}});
  consumer->stop_consuming();

  mq->produce(RoutingKey{"buildrequests", "2", "new"}, Json{{"n", 2}});
  mq->produce(RoutingKey{"builds", "9", "new"}, Json{{"n", 0}});  // doesn't match: not kept
  mq->produce(RoutingKey{"buildrequests", "2", "claimed"}, Json{{"n", 3}});
  mq->produce(RoutingKey{"buildrequests", "3", "new"}, Json{{"n", 4}});
  check(recorded.keys == Keys{"buildrequests.1.new"}, "nothing is delivered while stopped");

  // The documented idiom: the old handle is destroyed after the new one exists.
  consumer = mq->start_consuming(recorded.callback(), filter, "conformance-audit");
  mq->produce(RoutingKey{"buildrequests", "4", "new"}, Json{{"n", 5}});
  check(recorded.keys == (Keys{"buildrequests.1.new", "buildrequests.2.new", "buildrequests.2.claimed",
                               "buildrequests.3.new", "buildrequests.4.new"}),
        "resumed with the same name: everything that matched while stopped, in order, then new ones");
  check(recorded.bodies.size() == 5 && recorded.bodies[1] == Json{{"n", 2}} && recorded.bodies[3] == Json{{"n", 4}},
        "missed messages keep their bodies");

  // Another name is another queue: it starts from now.
  Recorded other;
  auto other_consumer = mq->start_consuming(other.callback(), filter, "conformance-other");
  check(other.keys.empty(), "a new persistent name has missed nothing");
}

// --- mq: async_wait_until_event ---------------------------------------------

using WaitResult = std::optional<std::pair<boost::system::error_code, std::optional<Message>>>;

void wait_until_event_with_a_callback() {
  asio::io_context io;
  auto mq = livestate::mq::connect("simple:", io.get_executor());

  // check() true: completes with nullopt, and check() ran after subscribing.
  WaitResult done;
  bool checked = false;
  mq->async_wait_until_event(
      Filter::parse("buildsets.1.complete"),
      [&] {
        checked = true;
        return true;
      },
      [&](boost::system::error_code error, std::optional<Message> message) {
        done.emplace(error, std::move(message));
      });
  check(run_until(io, [&] { return done.has_value(); }), "check true: the callback is invoked");
  check(checked, "check true: check() was called");
  check(done && !done->first, "check true: no error");
  check(done && !done->second.has_value(), "check true: completes with nullopt");

  // check() false: completes with the next matching message, not a non-matching one.
  done.reset();
  mq->async_wait_until_event(
      Filter::parse("buildsets.1.complete"), [] { return false; },
      [&](boost::system::error_code error, std::optional<Message> message) {
        done.emplace(error, std::move(message));
      });
  mq->produce(RoutingKey{"buildsets", "2", "complete"}, Json{{"bsid", 2}});
  run_until(
      io, [&] { return done.has_value(); }, 100ms);
  check(!done.has_value(), "check false: a non-matching message doesn't complete the wait");
  mq->produce(RoutingKey{"buildsets", "1", "complete"}, Json{{"bsid", 1}, {"results", 0}});
  mq->produce(RoutingKey{"buildsets", "1", "complete"}, Json{{"bsid", 1}, {"results", 2}});
  check(run_until(io, [&] { return done.has_value(); }), "check false: a matching message completes the wait");
  check(done && !done->first, "check false: no error");
  check(done && done->second && done->second->key == RoutingKey{"buildsets", "1", "complete"},
        "check false: completes with the matching key");
  check(done && done->second && done->second->body == Json{{"bsid", 1}, {"results", 0}},
        "check false: completes with the first matching message's body");
}

void wait_until_event_with_use_future() {
  asio::io_context io;
  auto mq = livestate::mq::connect("simple:", io.get_executor());

  std::future<std::optional<Message>> immediate = mq->async_wait_until_event(
      Filter::parse("builds.*.finished"), [] { return true; }, asio::use_future);
  check(run_until(io, [&] { return immediate.wait_for(0s) == std::future_status::ready; }),
        "use_future, check true: the future becomes ready");
  check(immediate.wait_for(0s) == std::future_status::ready && !immediate.get().has_value(),
        "use_future, check true: nullopt");

  std::future<std::optional<Message>> next = mq->async_wait_until_event(
      Filter::parse("builds.*.finished"), [] { return false; }, asio::use_future);
  mq->produce(RoutingKey{"builds", "5", "started"}, Json{{"buildid", 5}});
  run_until(
      io, [&] { return next.wait_for(0s) == std::future_status::ready; }, 100ms);
  check(next.wait_for(0s) != std::future_status::ready, "use_future, check false: not ready before a match");
  mq->produce(RoutingKey{"builds", "5", "finished"}, Json{{"buildid", 5}});
  check(run_until(io, [&] { return next.wait_for(0s) == std::future_status::ready; }),
        "use_future, check false: ready after a matching message");
  const auto message = next.wait_for(0s) == std::future_status::ready ? next.get() : std::nullopt;
  check(message && message->key.str() == "builds.5.finished" && message->body == Json{{"buildid", 5}},
        "use_future, check false: the matching message");

  // The make_simple_mq connector supports the same token.
  auto simple = livestate::mq::make_simple_mq();
  auto from_simple = simple->async_wait_until_event(
      Filter::parse("a.b"), [] { return false; }, asio::use_future);
  simple->produce(RoutingKey{"a", "b"}, Json{{"x", 1}});
  check(from_simple.wait_for(5s) == std::future_status::ready, "make_simple_mq + use_future completes");
  const auto simple_message = from_simple.wait_for(0s) == std::future_status::ready ? from_simple.get() : std::nullopt;
  check(simple_message && simple_message->body == Json{{"x", 1}}, "make_simple_mq + use_future: the message");
}

void wait_until_event_with_use_awaitable() {
  asio::io_context io;
  auto mq = livestate::mq::connect("simple:", io.get_executor());

  bool checked_true = false;
  bool checked_false = false;
  std::optional<std::optional<Message>> with_true;
  std::optional<std::optional<Message>> with_false;
  std::exception_ptr failure;

  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        with_true.emplace(co_await mq->async_wait_until_event(
            Filter::parse("changes.*.new"),
            [&] {
              checked_true = true;
              return true;
            },
            asio::use_awaitable));
        with_false.emplace(co_await mq->async_wait_until_event(
            Filter::parse("changes.*.new"),
            [&] {
              checked_false = true;
              return false;
            },
            asio::use_awaitable));
      },
      [&](std::exception_ptr error) { failure = error; });

  // The coroutine runs until it waits for a message (its check() was called).
  check(run_until(io, [&] { return checked_false; }), "use_awaitable: the coroutine reaches the second wait");
  check(checked_true && with_true.has_value() && !with_true->has_value(),
        "use_awaitable, check true: co_await yields nullopt");
  check(!with_false.has_value(), "use_awaitable, check false: still waiting before a message");
  mq->produce(RoutingKey{"changes", "3", "new"}, Json{{"changeid", 3}});
  check(run_until(io, [&] { return with_false.has_value() || failure != nullptr; }),
        "use_awaitable, check false: the coroutine resumes after a matching message");
  check(failure == nullptr, "use_awaitable: no exception in the coroutine");
  check(with_false && *with_false && (*with_false)->key.str() == "changes.3.new" &&
            (*with_false)->body == Json{{"changeid", 3}},
        "use_awaitable, check false: the matching message");
}

void wait_until_event_unsubscribes() {
  asio::io_context io;
  auto mq = livestate::mq::connect("simple:", io.get_executor());
  int completions = 0;
  mq->async_wait_until_event(
      Filter::parse("x.*"), [] { return false; },
      [&](boost::system::error_code, std::optional<Message>) { ++completions; });
  mq->produce(RoutingKey{"x", "1"}, Json::object());
  mq->produce(RoutingKey{"x", "2"}, Json::object());
  run_until(
      io, [] { return false; }, 100ms);
  check(completions == 1, "the wait completes once; later messages don't invoke its handler again");
}

}  // namespace

int main() {
  section("routing keys", routing_keys);
  section("non-ASCII routing keys", non_ascii_routing_keys);
  section("tuple matching", tuple_matching);
  section("produce delivers synchronously", produce_delivers_synchronously);
  section("produce from a callback", produce_from_a_callback_is_delivered_after_the_current_message);
  section("a throwing callback", a_throwing_callback_does_not_stop_others);
  section("stop_consuming", stop_consuming);
  section("non-persistent consumer", non_persistent_consumer_gets_nothing_while_stopped);
  section("persistent consumer", persistent_consumer_gets_what_it_missed_in_order);
  section("wait_until_event, callback", wait_until_event_with_a_callback);
  section("wait_until_event, use_future", wait_until_event_with_use_future);
  section("wait_until_event, use_awaitable", wait_until_event_with_use_awaitable);
  section("wait_until_event unsubscribes", wait_until_event_unsubscribes);

  if (failures != 0) {
    std::cerr << "api_conformance: " << failures << " of " << checks << " checks failed\n";
    return 1;
  }
  std::cout << "api_conformance: all " << checks << " checks passed\n";
  return 0;
}
