// The PostgreSQL connector's listening connection, as logic alone: events in,
// actions out, no server, no executor, a clock and a random source of the
// test's own.

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "listener_machine.hpp"
#include "machine_actions.hpp"
#include "origin_sequences.hpp"

namespace {

using namespace std::chrono_literals;
using livestate::mq::ControlEvent;
using livestate::mq::ControlKind;
namespace detail = livestate::mq::detail;
namespace action = detail::listener_action;
using detail::Clock;
using detail::ListenerActions;
using detail::ListenerMachine;
using detail::ListenerTimer;
using Polled = ListenerMachine::Polled;

using livestate::test::all_of;
using livestate::test::has;

std::vector<std::string> delivered(const ListenerActions& actions) {
  return livestate::test::delivered<action::Deliver>(actions);
}
std::vector<ControlEvent> events(const ListenerActions& actions) {
  return livestate::test::events<action::Deliver>(actions);
}

// A machine, the time it lives in and the timers it armed, driven as the Asio
// driver would drive it.
struct Harness {
  explicit Harness(detail::ListenerSettings settings = defaults())
      : machine(std::move(settings), [this] { return random_value; }) {}

  static detail::ListenerSettings defaults() {
    detail::ListenerSettings settings;
    settings.name = "postgresql://u:***@db/test";
    settings.channel = "livestate";
    settings.reconnect_initial = 100ms;
    settings.reconnect_max = 1000ms;
    settings.probe_interval = 2000ms;
    settings.probe_timeout = 3000ms;
    settings.connect_timeout = 5000ms;
    settings.forget_origins_after = 600s;
    return settings;
  }

  // Remembers the timers armed (and when) and cancelled.
  ListenerActions note(ListenerActions actions) {
    timers.note(actions);
    return actions;
  }

  [[nodiscard]] bool armed(ListenerTimer timer) const { return timers.armed(timer); }
  [[nodiscard]] Clock::duration delay(ListenerTimer timer) const { return timers.delay(timer); }

  // Lets time pass until `timer` fires, and fires it.
  ListenerActions fire(ListenerTimer timer) {
    const auto token = timers.expire(timer);
    return note(machine.timer_fired(timer, token, now));
  }

  // Connects (the socket writable, then readable, then connected) and answers
  // LISTEN; returns the actions of the answer.
  ListenerActions listen() {
    auto actions = note(machine.connect_polled(Polled::writing, {}, now));
    CHECK(has<action::WaitWritable>(actions));
    actions = note(machine.socket_writable(now));
    REQUIRE(has<action::PollConnect>(actions));
    actions = note(machine.connect_polled(Polled::ok, {}, now));
    const auto sent = all_of<action::SendQuery>(actions);
    REQUIRE(sent.size() == 1);
    CHECK(sent[0].sql == "LISTEN \"" + channel() + "\"");
    CHECK(has<action::WaitReadable>(actions));
    return answer({true, {}, std::nullopt});
  }

  // The socket readable, and the query in flight answered.
  ListenerActions answer(detail::QueryResult result) {
    auto actions = note(machine.socket_readable(now));
    REQUIRE(has<action::ReadInput>(actions));
    actions = note(machine.query_result(std::move(result), now));
    append(actions, note(machine.input_read(true, now)));
    return actions;
  }

  // Payloads arriving in one read.
  ListenerActions receive(const std::vector<std::string>& payloads) {
    auto actions = note(machine.socket_readable(now));
    REQUIRE(has<action::ReadInput>(actions));
    actions.clear();
    for (const auto& payload : payloads) append(actions, note(machine.notification(channel(), payload, now)));
    append(actions, note(machine.input_read(true, now)));
    return actions;
  }

  static void append(ListenerActions& to, ListenerActions more) {
    for (auto& each : more) to.push_back(std::move(each));
  }

  [[nodiscard]] std::string channel() const { return "livestate"; }

  std::uint64_t random_value = 0;
  livestate::test::TimerBook<action::ArmTimer, action::CancelTimer, ListenerTimer, detail::listener_timer_count> timers;
  Clock::time_point& now = timers.now;
  ListenerMachine machine;
};

ListenerActions started(Harness& harness) {
  auto actions = harness.note(harness.machine.start(harness.now));
  REQUIRE(has<action::Connect>(actions));
  CHECK(harness.armed(ListenerTimer::connect_deadline));
  return actions;
}

bool publishes_listening(const ListenerActions& actions, bool listening) {
  const auto statuses = all_of<action::PublishStatus>(actions);
  return !statuses.empty() && statuses.back().listening == listening;
}

}  // namespace

TEST_CASE("connecting sends LISTEN on the quoted channel, and its answer makes the connection listening") {
  auto settings = Harness::defaults();
  settings.channel = "odd \"name\"";
  Harness harness(settings);
  started(harness);
  harness.note(harness.machine.connect_polled(Polled::writing, {}, harness.now));
  harness.note(harness.machine.socket_writable(harness.now));
  auto actions = harness.note(harness.machine.connect_polled(Polled::ok, {}, harness.now));
  CHECK_FALSE(harness.armed(ListenerTimer::connect_deadline));
  const auto sent = all_of<action::SendQuery>(actions);
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].sql == R"(LISTEN "odd ""name""")");
  CHECK_FALSE(harness.machine.listening());

  actions = harness.answer({true, {}, std::nullopt});
  CHECK(harness.machine.listening());
  CHECK(publishes_listening(actions, true));
  CHECK(harness.armed(ListenerTimer::probe));
  CHECK(events(actions).empty());  // the first time is no reconnection
  CHECK(has<action::WaitReadable>(actions));
}

TEST_CASE("a gap in an origin's sequence yields a gap event after the messages before it, and before those after") {
  Harness harness;
  started(harness);
  harness.listen();
  const auto actions = harness.receive({
      R"({"v":1,"o":"m1","m":[{"s":1,"k":["a"],"b":{}},{"s":2,"k":["b"],"b":{}}]})",
      R"({"v":1,"o":"m1","m":[{"s":5,"k":["c"],"b":{}},{"s":6,"k":["d"],"b":{}}]})",
  });
  CHECK(delivered(actions) == std::vector<std::string>{"a", "b", "control:gap", "c", "d"});
  const auto gaps = events(actions);
  REQUIRE(gaps.size() == 1);
  CHECK(gaps[0].origin == "m1");
  CHECK(gaps[0].missed == 2);
  const auto counters = all_of<action::PublishCounters>(actions);
  REQUIRE_FALSE(counters.empty());
  CHECK(counters.back().counters.gaps == 1);
  CHECK(counters.back().counters.received == 4);
  CHECK(counters.back().counters.notifications == 2);
  CHECK(counters.back().counters.origins == 1);
  // Duplicates and old messages are no gap.
  CHECK(events(harness.receive({R"({"v":1,"o":"m1","m":[{"s":6,"k":["again"],"b":{}}]})"})).empty());
}

TEST_CASE(
    "an entry refused as malformed is a message missed: a gap event at once, between the messages around "
    "it, and none again at the next message") {
  Harness harness;
  started(harness);
  harness.listen();
  auto actions = harness.receive(
      {R"({"v":1,"o":"m1","m":[{"s":1,"k":["a"],"b":{}},{"s":2,"k":"not an array","b":{}},{"s":3,"k":["c"],"b":{}}]})"});
  CHECK(delivered(actions) == std::vector<std::string>{"a", "control:gap", "c"});
  REQUIRE(events(actions).size() == 1);
  CHECK(events(actions)[0].origin == "m1");
  CHECK(events(actions)[0].missed == 1);
  CHECK(all_of<action::PublishCounters>(actions).back().counters.malformed == 1);
  actions = harness.receive({R"({"v":1,"o":"m1","m":[{"s":4,"k":["d"],"b":{}}]})"});
  CHECK(delivered(actions) == std::vector<std::string>{"d"});
}

TEST_CASE(
    "a body sent by reference holds back the messages after it until it arrives; a missing one is dropped, "
    "counted, logged and told as a gap in its place") {
  Harness harness;
  started(harness);
  harness.listen();
  auto actions = harness.receive({
      R"({"v":1,"o":"m1","m":[{"s":1,"k":["before"],"b":{}},{"s":2,"k":["large"],"r":42}]})",
      R"({"v":1,"o":"m1","m":[{"s":3,"k":["after"],"b":{}},{"s":4,"k":["gone"],"r":43},{"s":5,"k":["last"],"b":{}}]})",
  });
  CHECK(delivered(actions) == std::vector<std::string>{"before"});
  auto sent = all_of<action::SendQuery>(actions);
  REQUIRE(sent.size() == 1);  // one query at a time
  CHECK(sent[0].sql == "SELECT body FROM livestate_mq_bodies WHERE id = $1");
  CHECK(sent[0].params == std::vector<std::string>{"42"});

  actions = harness.answer({true, {}, R"({"text":"large"})"});
  CHECK(delivered(actions) == std::vector<std::string>{"large", "after"});
  const auto deliveries = all_of<action::Deliver>(actions);
  CHECK(std::get<detail::Delivery>(deliveries[0].items[0]).body == livestate::Json{{"text", "large"}});
  CHECK(std::get<detail::Delivery>(deliveries[0].items[0]).sequence == 2);
  sent = all_of<action::SendQuery>(actions);
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].params == std::vector<std::string>{"43"});

  actions = harness.answer({true, {}, std::nullopt});  // no such row
  CHECK(delivered(actions) == std::vector<std::string>{"control:gap", "last"});
  CHECK(events(actions)[0].origin == "m1");
  CHECK(events(actions)[0].missed == 1);
  CHECK(has<action::Log>(actions));
  const auto counters = all_of<action::PublishCounters>(actions);
  REQUIRE_FALSE(counters.empty());
  CHECK(counters.back().counters.by_reference == 1);
  CHECK(counters.back().counters.missing_references == 1);
  CHECK(counters.back().counters.gaps == 1);
}

TEST_CASE("a body by reference nested deeper than any payload may be is refused like one, and told as a gap") {
  Harness harness;
  started(harness);
  harness.listen();
  (void)harness.receive({R"({"v":1,"o":"f","m":[{"s":1,"k":["deep"],"r":7},{"s":2,"k":["next"],"b":{}}]})"});
  const auto actions = harness.answer({true, {}, std::string(200, '[') + std::string(200, ']')});
  CHECK(delivered(actions) == std::vector<std::string>{"control:gap", "next"});
  CHECK(all_of<action::PublishCounters>(actions).back().counters.missing_references == 1);
}

TEST_CASE(
    "a lost connection reconnects after a backoff with jitter that doubles up to reconnect_max; once "
    "listening again, consumers are told, and the backoff starts over") {
  Harness harness;
  started(harness);
  harness.listen();

  auto actions = harness.note(harness.machine.failed("server closed the connection unexpectedly", harness.now));
  CHECK(has<action::Close>(actions));
  CHECK(publishes_listening(actions, false));
  CHECK(all_of<action::PublishStatus>(actions).back().last_reconnect_reason ==
        "server closed the connection unexpectedly");
  CHECK_FALSE(harness.armed(ListenerTimer::probe));
  REQUIRE(harness.armed(ListenerTimer::retry));
  CHECK(harness.delay(ListenerTimer::retry) == 50ms);  // random 0: half the step of 100 ms

  // Each failed attempt doubles the step, up to reconnect_max; the jitter
  // picks within [half, all] of it.
  harness.random_value = 1'000'000'007;
  std::vector<Clock::duration> delays;
  for (int attempt = 0; attempt < 5; ++attempt) {
    actions = harness.fire(ListenerTimer::retry);
    REQUIRE(has<action::Connect>(actions));
    actions = harness.note(harness.machine.connect_polled(Polled::failed, "connection refused", harness.now));
    CHECK(has<action::Close>(actions));
    delays.push_back(harness.delay(ListenerTimer::retry));
  }
  const std::vector<std::chrono::milliseconds> steps{200ms, 400ms, 800ms, 1000ms, 1000ms};
  for (std::size_t i = 0; i < steps.size(); ++i) {
    CAPTURE(i);
    CHECK(delays[i] >= steps[i] / 2);
    CHECK(delays[i] <= steps[i]);
  }

  actions = harness.fire(ListenerTimer::retry);
  REQUIRE(has<action::Connect>(actions));
  actions = harness.listen();
  CHECK(delivered(actions) == std::vector<std::string>{"control:reconnected"});
  // The cause told is what broke the working connection, not the failed
  // attempts after it.
  CHECK(events(actions)[0].reason.find("server closed the connection unexpectedly") != std::string::npos);
  CHECK(all_of<action::PublishCounters>(actions).back().counters.reconnects == 1);
  CHECK(harness.machine.backoff() == 100ms);
}

TEST_CASE("a reconnection forgets the sequences it knew: no false gap for what was produced meanwhile") {
  Harness harness;
  started(harness);
  harness.listen();
  harness.receive({R"({"v":1,"o":"m1","m":[{"s":1,"k":["a"],"b":{}}]})"});
  harness.note(harness.machine.failed("gone", harness.now));
  harness.fire(ListenerTimer::retry);
  harness.listen();
  const auto actions = harness.receive({R"({"v":1,"o":"m1","m":[{"s":9,"k":["b"],"b":{}}]})"});
  CHECK(delivered(actions) == std::vector<std::string>{"b"});
}

TEST_CASE("a probe without an answer within probe_timeout is a lost connection; an answer keeps it") {
  Harness harness;
  started(harness);
  harness.listen();

  // Traffic meanwhile puts the probe off.
  harness.now += 1500ms;
  harness.receive({R"({"v":1,"m":[{"k":["a"],"b":{}}]})"});
  auto actions = harness.fire(ListenerTimer::probe);
  CHECK_FALSE(has<action::SendQuery>(actions));
  REQUIRE(harness.armed(ListenerTimer::probe));
  CHECK(harness.delay(ListenerTimer::probe) == 1500ms);

  actions = harness.fire(ListenerTimer::probe);
  auto sent = all_of<action::SendQuery>(actions);
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].sql == "SELECT 1");
  CHECK(harness.delay(ListenerTimer::probe_deadline) == 3000ms);
  actions = harness.answer({true, {}, "1"});
  CHECK_FALSE(harness.armed(ListenerTimer::probe_deadline));
  CHECK(harness.armed(ListenerTimer::probe));
  CHECK(harness.machine.listening());

  harness.fire(ListenerTimer::probe);
  actions = harness.fire(ListenerTimer::probe_deadline);
  CHECK(has<action::Close>(actions));
  CHECK_FALSE(harness.machine.listening());
  CHECK(all_of<action::PublishStatus>(actions).back().last_reconnect_reason ==
        "no answer to a liveness probe within 3000 ms");
  CHECK(harness.armed(ListenerTimer::retry));
}

TEST_CASE("connecting for longer than connect_timeout is a lost connection") {
  Harness harness;
  started(harness);
  harness.note(harness.machine.connect_polled(Polled::reading, {}, harness.now));
  const auto actions = harness.fire(ListenerTimer::connect_deadline);
  CHECK(has<action::Close>(actions));
  CHECK(all_of<action::PublishStatus>(actions).back().last_reconnect_reason == "connecting timed out");
  CHECK(harness.armed(ListenerTimer::retry));
}

TEST_CASE(
    "origins silent for forget_origins_after are forgotten but their sequences kept: a quiet one comes back "
    "without a gap, one that skipped counts what it skipped, a stranger counts as a gap but not right after LISTEN") {
  auto settings = Harness::defaults();
  settings.forget_origins_after = 10s;
  Harness harness(settings);
  started(harness);
  harness.listen();

  // Just after LISTEN, an origin past its first message started before us.
  auto actions = harness.receive(
      {R"({"v":1,"o":"early","m":[{"s":5,"k":["a"],"b":{}}]})", R"({"v":1,"o":"m1","m":[{"s":1,"k":["b"],"b":{}}]})"});
  CHECK(events(actions).empty());
  CHECK(all_of<action::PublishCounters>(actions).back().counters.origins == 2);

  harness.now += 11s;
  actions = harness.receive({R"({"v":1,"o":"m2","m":[{"s":1,"k":["c"],"b":{}}]})"});
  CHECK(events(actions).empty());
  CHECK(all_of<action::PublishCounters>(actions).back().counters.origins == 1);  // early and m1 forgotten

  // m1 was only quiet: its next message is no gap.
  actions = harness.receive({R"({"v":1,"o":"m1","m":[{"s":2,"k":["d"],"b":{}}]})"});
  CHECK(delivered(actions) == std::vector<std::string>{"d"});
  CHECK(all_of<action::PublishCounters>(actions).back().counters.origins == 2);

  // "early" comes back having skipped 6 and 7: exactly those are missing.
  actions = harness.receive({R"({"v":1,"o":"early","m":[{"s":8,"k":["e"],"b":{}}]})"});
  CHECK(delivered(actions) == std::vector<std::string>{"control:gap", "e"});
  CHECK(events(actions)[0].origin == "early");
  CHECK(events(actions)[0].missed == 2);

  // Never heard, past its first message, long after LISTEN: maybe lost.
  actions = harness.receive({R"({"v":1,"o":"stranger","m":[{"s":4,"k":["f"],"b":{}}]})"});
  CHECK(delivered(actions) == std::vector<std::string>{"control:gap", "f"});
  CHECK(events(actions)[0].missed == 3);
}

TEST_CASE("the archive of forgotten origins is bounded: the oldest forgotten go first") {
  using livestate::mq::detail::OriginSequences;
  OriginSequences sequences(std::chrono::seconds(10));
  auto now = OriginSequences::Clock::now();
  const auto since = now;
  now += std::chrono::seconds(11);
  const auto limit = OriginSequences::archive_limit;
  for (std::size_t i = 0; i < limit + 10; ++i) (void)sequences.arrived("o" + std::to_string(i), 1, false, since, now);
  now += std::chrono::seconds(11);
  (void)sequences.arrived("sweeper", 1, false, since, now);  // forgets (archives) every other one
  CHECK(sequences.size() == 1);
  // The ten archived first were dropped to keep the bound: they count as strangers.
  CHECK(sequences.arrived("o0", 2, false, since, now).count == 1);
  CHECK(sequences.arrived("o0", 3, false, since, now).count == 0);
  CHECK(sequences.arrived("o" + std::to_string(limit + 9), 2, false, since, now).count == 0);
}

TEST_CASE(
    "malformed payloads are counted, dropped without stopping the valid ones, and logged at most once a "
    "minute per kind") {
  Harness harness;
  started(harness);
  harness.listen();
  auto actions = harness.receive({"not json", R"({"v":1,"m":[{"k":["ok"],"b":{}}]})", "still not json"});
  CHECK(delivered(actions) == std::vector<std::string>{"ok"});
  CHECK(all_of<action::Log>(actions).size() == 1);
  CHECK(all_of<action::PublishCounters>(actions).back().counters.malformed == 2);
  harness.now += 30s;
  CHECK_FALSE(has<action::Log>(harness.receive({"not json again"})));
  CHECK(all_of<action::Log>(harness.receive({"[]"})).size() == 1);  // not an envelope: another kind
  harness.now += 31s;
  CHECK(all_of<action::Log>(harness.receive({"not json"})).size() == 1);
}

TEST_CASE("notifications on other channels, stale timers and events after stop do nothing") {
  Harness harness;
  started(harness);
  harness.listen();
  harness.note(harness.machine.socket_readable(harness.now));
  auto actions = harness.machine.notification("another", R"({"v":1,"m":[{"k":["a"],"b":{}}]})", harness.now);
  Harness::append(actions, harness.machine.input_read(true, harness.now));
  CHECK(delivered(actions).empty());

  // A probe timer that was armed again: the old firing is ignored.
  const auto old_token = harness.timers.token(ListenerTimer::probe);
  harness.receive({});
  CHECK(harness.machine.timer_fired(ListenerTimer::probe, old_token + 1000, harness.now).empty());

  actions = harness.machine.stop();
  CHECK(has<action::Close>(actions));
  CHECK(has<action::CancelTimer>(actions));
  CHECK(publishes_listening(actions, false));
  CHECK(harness.machine.failed("late", harness.now).empty());
  CHECK(harness.machine.timer_fired(ListenerTimer::probe, old_token, harness.now).empty());
  CHECK(harness.machine.start(harness.now).empty());
}
