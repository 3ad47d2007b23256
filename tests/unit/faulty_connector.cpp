// FaultyConnector: each fault on its own (drop, duplicate, reorder, delay,
// partition), replay by seed, quiescence by flush(), stops that discard what
// is held, bad options, throwing callbacks, and several producing threads.

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/error.hpp>

#include "eventually.hpp"
#include "livestate/core/error.hpp"
#include "livestate/mq/faulty.hpp"
#include "livestate/mq/simple_mq.hpp"

using namespace livestate;
using namespace std::chrono_literals;
using Keys = std::vector<std::string>;

namespace {

// Collects what a consumer gets; locked, since delayed messages and partition
// events come from the fault thread.
class Inbox {
 public:
  mq::Callback callback() {
    return [this](const RoutingKey& key, const Json&) {
      std::lock_guard lock(m_mutex);
      m_keys.push_back(key.str());
    };
  }
  mq::ControlCallback on_control() {
    return [this](const mq::ControlEvent& event) {
      std::lock_guard lock(m_mutex);
      m_events.push_back(event);
      m_keys.push_back("control");
    };
  }
  Keys keys() const {
    std::lock_guard lock(m_mutex);
    return m_keys;
  }
  std::vector<mq::ControlEvent> events() const {
    std::lock_guard lock(m_mutex);
    return m_events;
  }
  std::size_t size() const { return keys().size(); }

 private:
  mutable std::mutex m_mutex;
  Keys m_keys;
  std::vector<mq::ControlEvent> m_events;
};

RoutingKey numbered(int i) { return RoutingKey{"m", std::to_string(i)}; }

Keys numbered_keys(int count) {
  Keys keys;
  for (int i = 0; i < count; ++i) keys.push_back("m." + std::to_string(i));
  return keys;
}

void produce_numbered(mq::Connector& connector, int count) {
  for (int i = 0; i < count; ++i) connector.produce(numbered(i), {{"i", i}});
}

int number_of(const std::string& key) { return std::stoi(key.substr(2)); }

using livestate::test::eventually;

// A connector whose control events the test sends by hand.
class ControlledConnector final : public mq::Connector {
 public:
  void produce(const RoutingKey& key, const Json& body) override {
    for (auto& [callback, control] : m_consumers) callback(key, body);
  }
  std::unique_ptr<mq::Consumer> start_consuming(mq::Callback callback, Filter, std::optional<std::string>) override {
    m_consumers.push_back({std::move(callback), nullptr});
    return std::make_unique<Handle>();
  }
  [[nodiscard]] mq::ConnectorStats stats() const override { return {}; }
  void send_control(const mq::ControlEvent& event) {
    for (auto& [callback, control] : m_consumers) {
      if (control) control(event);
    }
  }

 protected:
  std::unique_ptr<mq::Consumer> start_consuming_with(mq::Callback callback, Filter,
                                                     mq::ConsumeOptions options) override {
    m_consumers.push_back({std::move(callback), std::move(options.on_control)});
    return std::make_unique<Handle>();
  }

 private:
  struct Handle final : mq::Consumer {
    void stop_consuming() override {}
  };
  std::vector<std::pair<mq::Callback, mq::ControlCallback>> m_consumers;
};

}  // namespace

TEST_CASE("with every fault off, a consumer gets exactly what SimpleMQ delivers, in order") {
  auto inner = mq::make_simple_mq();
  mq::FaultyConnector faulty(*inner, {});
  Keys direct, through;
  std::vector<Json> direct_bodies, through_bodies;
  auto plain = inner->start_consuming(
      [&](const RoutingKey& key, const Json& body) {
        direct.push_back(key.str());
        direct_bodies.push_back(body);
      },
      Filter::parse("m.*"));
  auto decorated = faulty.start_consuming(
      [&](const RoutingKey& key, const Json& body) {
        through.push_back(key.str());
        through_bodies.push_back(body);
      },
      Filter::parse("m.*"));
  produce_numbered(faulty, 200);
  inner->produce(RoutingKey{"other"}, Json::object());  // matches neither

  CHECK(through == numbered_keys(200));
  CHECK(through == direct);
  CHECK(through_bodies == direct_bodies);
  const auto faults = faulty.faults();
  CHECK(faults.delivered == 200);
  CHECK(faults.dropped + faults.duplicated + faults.reordered + faults.delayed + faults.partitions == 0);
  CHECK(faulty.stats().produced == 201);  // the inner connector's
}

TEST_CASE("drop 1.0 delivers nothing and counts every drop") {
  auto inner = mq::make_simple_mq();
  mq::FaultOptions options;
  options.drop = 1.0;
  mq::FaultyConnector faulty(*inner, options);
  Inbox inbox;
  auto consumer = faulty.start_consuming(inbox.callback(), Filter::parse("m.*"));
  produce_numbered(faulty, 100);
  faulty.flush();
  CHECK(inbox.size() == 0);
  CHECK(faulty.faults().dropped == 100);
  CHECK(faulty.stats().delivered == 100);  // the inner connector did deliver them
}

TEST_CASE("with report_drops, drops are told as one gap event after the next message that gets through, or at flush") {
  auto inner = mq::make_simple_mq();
  mq::FaultOptions options;
  options.report_drops = true;
  options.drop = 1.0;
  mq::FaultyConnector faulty(*inner, options);
  Inbox told, untold;
  auto with_control = faulty.start_consuming(told.callback(), Filter::parse("m.*"),
                                             mq::ConsumeOptions{std::nullopt, told.on_control()});
  auto without = faulty.start_consuming(untold.callback(), Filter::parse("m.*"));
  produce_numbered(faulty, 3);
  CHECK(told.size() == 0);  // nothing got through yet to reveal the hole
  faulty.set_enabled(false);
  faulty.produce(RoutingKey{"m", "after"}, Json::object());
  CHECK(told.keys() == Keys{"m.after", "control"});
  REQUIRE(told.events().size() == 1);
  CHECK(told.events()[0].kind == mq::ControlKind::gap);
  CHECK(told.events()[0].missed == 3);
  CHECK(told.events()[0].reason == "drop injected by FaultyConnector");
  CHECK(untold.keys() == Keys{"m.after"});  // without on_control: silent

  faulty.set_enabled(true);
  faulty.produce(RoutingKey{"m", "lost"}, Json::object());
  faulty.flush();
  REQUIRE(told.events().size() == 2);
  CHECK(told.events()[1].missed == 1);
  CHECK(faulty.faults().control_events == 2);
}

TEST_CASE("duplicate 1.0 delivers every message twice, in a row") {
  auto inner = mq::make_simple_mq();
  mq::FaultOptions options;
  options.duplicate = 1.0;
  mq::FaultyConnector faulty(*inner, options);
  Inbox inbox;
  auto consumer = faulty.start_consuming(inbox.callback(), Filter::parse("m.*"));
  produce_numbered(faulty, 50);
  Keys expected;
  for (const auto& key : numbered_keys(50)) expected.insert(expected.end(), {key, key});
  CHECK(inbox.keys() == expected);
  CHECK(faulty.faults().duplicated == 50);
}

TEST_CASE("reorder with a window of W delays no message by more than W places, and after flush() each came once") {
  constexpr std::size_t window = 5;
  constexpr int count = 500;
  auto inner = mq::make_simple_mq();
  mq::FaultOptions options;
  options.seed = 42;
  options.reorder = 0.5;
  options.reorder_window = window;
  mq::FaultyConnector faulty(*inner, options);
  Inbox inbox;
  auto consumer = faulty.start_consuming(inbox.callback(), Filter::parse("m.*"));
  produce_numbered(faulty, count);
  const Keys before_flush = inbox.keys();
  faulty.flush();
  const Keys got = inbox.keys();

  CHECK(before_flush.size() < got.size());  // with this seed, some were still held at the end
  REQUIRE(got.size() == count);
  Keys sorted = got;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return number_of(a) < number_of(b); });
  CHECK(sorted == numbered_keys(count));  // a permutation: each exactly once
  // Only the ones still held at the end may be later than the window allows.
  bool within_window = true;
  bool some_moved = false;
  for (std::size_t place = 0; place < before_flush.size(); ++place) {
    const auto original = static_cast<std::size_t>(number_of(before_flush[place]));
    within_window = within_window && place <= original + window;
    some_moved = some_moved || place != original;
  }
  CHECK(within_window);
  CHECK(some_moved);
  CHECK(faulty.faults().reordered > 0);
  CHECK(faulty.faults().held == 0);
}

TEST_CASE("the same seed gives the same delivered sequence, and another seed another one") {
  auto run = [](std::uint64_t seed) {
    auto inner = mq::make_simple_mq();
    mq::FaultOptions options;
    options.seed = seed;
    options.drop = 0.1;
    options.duplicate = 0.1;
    options.reorder = 0.2;
    options.reorder_window = 10;
    mq::FaultyConnector faulty(*inner, options);
    Inbox first, second;
    auto a = faulty.start_consuming(first.callback(), Filter::parse("m.*"));
    auto b = faulty.start_consuming(second.callback(), Filter::parse("m.*"));
    produce_numbered(faulty, 1000);
    faulty.flush();
    // Each consumer draws from its own sequence.
    CHECK(first.keys() != second.keys());
    return first.keys();
  };
  const Keys once = run(7);
  const Keys again = run(7);
  const Keys other = run(8);
  CHECK(once.size() > 900);
  CHECK(once != numbered_keys(1000));
  CHECK(once == again);
  CHECK(once != other);
}

TEST_CASE("delay holds messages until flush() releases them, in the order they came") {
  auto inner = mq::make_simple_mq();
  mq::FaultOptions options;
  options.delay = 1.0;
  options.max_delay = std::chrono::hours(1);
  mq::FaultyConnector faulty(*inner, options);
  Inbox inbox;
  auto consumer = faulty.start_consuming(inbox.callback(), Filter::parse("m.*"));
  produce_numbered(faulty, 20);
  CHECK(inbox.size() == 0);
  CHECK(faulty.faults().delayed == 20);
  CHECK(faulty.faults().held == 20);
  faulty.flush();
  CHECK(inbox.keys() == numbered_keys(20));
  CHECK(faulty.faults().held == 0);
}

TEST_CASE("delayed messages arrive by themselves, from the fault thread, within max_delay") {
  auto inner = mq::make_simple_mq();
  mq::FaultOptions options;
  options.delay = 0.5;
  options.max_delay = 20ms;
  mq::FaultyConnector faulty(*inner, options);
  Inbox inbox;
  auto consumer = faulty.start_consuming(inbox.callback(), Filter::parse("m.*"));
  produce_numbered(faulty, 100);
  CHECK(faulty.faults().delayed > 0);
  REQUIRE(eventually([&] { return inbox.size() == 100; }));
  Keys sorted = inbox.keys();
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return number_of(a) < number_of(b); });
  CHECK(sorted == numbered_keys(100));
  CHECK(faulty.faults().held == 0);
}

TEST_CASE(
    "a partition drops what comes and then sends a reconnected event with the number missed, "
    "to consumers with on_control only") {
  auto inner = mq::make_simple_mq();
  mq::FaultOptions options;
  options.partition_every = 1ms;
  options.partition_length = std::chrono::hours(1);
  mq::FaultyConnector faulty(*inner, options);
  Inbox told, untold;
  auto with_control = faulty.start_consuming(told.callback(), Filter::parse("m.*"),
                                             mq::ConsumeOptions{std::nullopt, told.on_control()});
  auto without = faulty.start_consuming(untold.callback(), Filter::parse("m.*"));
  std::this_thread::sleep_for(5ms);  // the partitions have begun
  produce_numbered(faulty, 7);
  CHECK(told.size() == 0);
  CHECK(untold.size() == 0);
  faulty.set_enabled(false);  // ends the partitions
  faulty.produce(RoutingKey{"m", "after"}, Json::object());

  CHECK(told.keys() == Keys{"control", "m.after"});
  REQUIRE(told.events().size() == 1);
  const auto event = told.events().front();
  CHECK(event.kind == mq::ControlKind::reconnected);
  CHECK(event.reason == "partition injected by FaultyConnector");
  CHECK(event.missed == 7);
  CHECK(untold.keys() == Keys{"m.after"});
  const auto faults = faulty.faults();
  CHECK(faults.partitions == 2);
  CHECK(faults.lost_to_partitions == 14);
  CHECK(faults.control_events == 1);
}

TEST_CASE("repeated partitions: what is delivered and what partitions dropped add up to what was produced") {
  auto inner = mq::make_simple_mq();
  mq::FaultOptions options;
  options.partition_every = 10ms;
  options.partition_length = 10ms;
  mq::FaultyConnector faulty(*inner, options);
  Inbox inbox;
  auto consumer = faulty.start_consuming(inbox.callback(), Filter::parse("m.*"),
                                         mq::ConsumeOptions{std::nullopt, inbox.on_control()});
  constexpr int count = 200;
  for (int i = 0; i < count; ++i) {
    faulty.produce(numbered(i), Json::object());
    std::this_thread::sleep_for(500us);  // at least 100 ms in all: several partitions
  }
  faulty.set_enabled(false);
  const auto faults = faulty.faults();
  const auto events = inbox.events();
  std::uint64_t missed = 0;
  for (const auto& event : events) missed += event.missed;
  CHECK(faults.partitions >= 2);
  CHECK(events.size() == faults.partitions);
  CHECK(missed == faults.lost_to_partitions);
  CHECK(inbox.size() - events.size() + missed == count);
}

TEST_CASE("control events from the inner connector pass through unchanged, in order with the messages") {
  ControlledConnector inner;
  mq::FaultyConnector faulty(inner, {});
  Inbox told, untold;
  auto with_control = faulty.start_consuming(told.callback(), Filter::parse("#"),
                                             mq::ConsumeOptions{std::nullopt, told.on_control()});
  auto without = faulty.start_consuming(untold.callback(), Filter::parse("#"));
  faulty.produce(RoutingKey{"a"}, Json::object());
  inner.send_control({mq::ControlKind::gap, "a gap", std::string("origin-1"), 3});
  faulty.produce(RoutingKey{"b"}, Json::object());

  CHECK(told.keys() == Keys{"a", "control", "b"});
  REQUIRE(told.events().size() == 1);
  CHECK(told.events()[0].kind == mq::ControlKind::gap);
  CHECK(told.events()[0].reason == "a gap");
  CHECK(told.events()[0].origin == std::optional<std::string>("origin-1"));
  CHECK(told.events()[0].missed == 3);
  CHECK(untold.keys() == Keys{"a", "b"});
  CHECK(faulty.faults().control_events == 0);  // none injected
}

TEST_CASE("stop_consuming discards held messages and the callback never runs afterwards") {
  auto inner = mq::make_simple_mq();
  mq::FaultOptions options;
  options.reorder = 0.5;
  options.reorder_window = 1000;
  options.delay = 0.5;
  options.max_delay = 5ms;
  mq::FaultyConnector faulty(*inner, options);
  std::atomic<bool> stopped{false};
  std::atomic<int> calls_after_stop{0};
  auto consumer = faulty.start_consuming(
      [&](const RoutingKey&, const Json&) {
        if (stopped.load()) ++calls_after_stop;
      },
      Filter::parse("m.*"));
  produce_numbered(faulty, 100);
  CHECK(faulty.faults().held > 0);
  consumer->stop_consuming();
  stopped = true;
  CHECK(faulty.faults().held == 0);
  faulty.flush();
  produce_numbered(faulty, 10);
  std::this_thread::sleep_for(20ms);  // past every delay
  CHECK(calls_after_stop.load() == 0);
}

TEST_CASE("a consumer stopped from another thread while the fault thread delivers is never called after stop returns") {
  auto inner = mq::make_simple_mq();
  mq::FaultOptions options;
  options.delay = 1.0;
  options.max_delay = 2ms;
  mq::FaultyConnector faulty(*inner, options);
  constexpr int consumers = 20;
  std::vector<std::atomic<bool>> stop_returned(consumers);
  std::atomic<int> late_calls{0};
  std::vector<std::unique_ptr<mq::Consumer>> handles;
  for (int i = 0; i < consumers; ++i) {
    handles.push_back(faulty.start_consuming(
        [&returned = stop_returned[static_cast<std::size_t>(i)], &late_calls](const RoutingKey&, const Json&) {
          std::this_thread::yield();  // widens the window
          if (returned.load()) ++late_calls;
        },
        Filter::parse("tick")));
  }
  std::atomic<bool> producing{true};
  std::thread producer([&] {
    while (producing.load()) {
      faulty.produce(RoutingKey{"tick"}, Json::object());
      std::this_thread::sleep_for(100us);
    }
  });
  for (int i = 0; i < consumers; ++i) {
    std::this_thread::sleep_for(2ms);
    handles[static_cast<std::size_t>(i)]->stop_consuming();
    stop_returned[static_cast<std::size_t>(i)] = true;
  }
  producing = false;
  producer.join();
  std::this_thread::sleep_for(10ms);
  CHECK(late_calls.load() == 0);
  CHECK(faulty.faults().delivered > 0);
}

TEST_CASE("invalid options throw std::invalid_argument naming the field and the value") {
  auto inner = mq::make_simple_mq();
  auto with = [](auto change) {
    mq::FaultOptions options;
    change(options);
    return options;
  };
  CHECK_THROWS_WITH_AS(mq::FaultyConnector(*inner, with([](auto& o) { o.drop = 1.5; })),
                       "livestate::mq::FaultyConnector: drop must be a probability in [0, 1], not 1.5",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(mq::FaultyConnector(*inner, with([](auto& o) { o.reorder = -0.25; })),
                       doctest::Contains("reorder must be a probability in [0, 1], not -0.25"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      mq::FaultyConnector(*inner, with([](auto& o) { o.duplicate = std::numeric_limits<double>::quiet_NaN(); })),
      doctest::Contains("duplicate must be a probability in [0, 1], not nan"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(mq::FaultyConnector(*inner, with([](auto& o) { o.delay = 0.5; })),
                       doctest::Contains("max_delay must be more than 0 ms when delay is 0.5"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(mq::FaultyConnector(*inner, with([](auto& o) {
                         o.reorder = 0.5;
                         o.reorder_window = 0;
                       })),
                       doctest::Contains("reorder_window must be at least 1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(mq::FaultyConnector(*inner, with([](auto& o) { o.partition_every = 10ms; })),
                       doctest::Contains("partition_length must be more than 0 ms"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(mq::FaultyConnector(*inner, with([](auto& o) { o.partition_every = -1ms; })),
                       doctest::Contains("partition_every must not be negative"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(mq::FaultyConnector(*inner, with([](auto& o) { o.max_delay = -1ms; })),
                       doctest::Contains("max_delay must not be negative, not -1 ms"), std::invalid_argument);
  CHECK_NOTHROW(mq::FaultyConnector(*inner, with([](auto& o) {
    o.drop = 1.0;
    o.duplicate = 0.0;
  })));
}

TEST_CASE("a callback that throws is logged and counted, and the consumer keeps getting messages") {
  auto inner = mq::make_simple_mq();
  mq::FaultOptions options;
  options.duplicate = 1.0;
  mq::FaultyConnector faulty(*inner, options);
  Keys got;
  auto consumer = faulty.start_consuming(
      [&](const RoutingKey& key, const Json&) {
        got.push_back(key.str());
        if (key[1] == "1") throw std::runtime_error("this one is bad");
      },
      Filter::parse("m.*"));
  Inbox other;
  auto bystander = faulty.start_consuming(other.callback(), Filter::parse("m.*"));
  produce_numbered(faulty, 3);
  // The second copy of the bad one still came.
  CHECK(got == Keys{"m.0", "m.0", "m.1", "m.1", "m.2", "m.2"});
  CHECK(other.size() == 6);
  CHECK(faulty.faults().callback_errors == 2);
  CHECK(faulty.stats().callback_errors == 0);  // the inner connector saw its deliveries succeed
}

TEST_CASE("async_wait_until_event works through the decorator, faults included") {
  auto inner = mq::make_simple_mq();
  mq::FaultOptions options;
  options.delay = 1.0;
  options.max_delay = std::chrono::hours(1);
  mq::FaultyConnector faulty(*inner, options);
  int calls = 0;
  std::optional<Message> got;
  faulty.async_wait_until_event(
      Filter::parse("builds.*.finished"), [] { return false; },
      [&](boost::system::error_code error, std::optional<Message> message) {
        CHECK_FALSE(error);
        ++calls;
        got = std::move(message);
      });
  faulty.produce(RoutingKey{"builds", "1", "finished"}, {{"results", 0}});
  CHECK(calls == 0);  // delayed
  faulty.flush();
  CHECK(calls == 1);
  REQUIRE(got.has_value());
  CHECK(got->key == RoutingKey{"builds", "1", "finished"});
  CHECK(faulty.stats().consumers == 0);  // unsubscribed
}

TEST_CASE("a pending async_wait_until_event is aborted when the decorator is destroyed") {
  auto inner = mq::make_simple_mq();
  boost::system::error_code error;
  int calls = 0;
  {
    mq::FaultyConnector faulty(*inner, {});
    faulty.async_wait_until_event(
        Filter::parse("never"), [] { return false; },
        [&](boost::system::error_code e, std::optional<Message>) {
          ++calls;
          error = e;
        });
  }
  CHECK(calls == 1);
  CHECK(error == boost::asio::error::operation_aborted);
  CHECK(inner->stats().consumers == 0);
}

TEST_CASE("persistent names pass through: a resumed consumer gets what it missed") {
  auto inner = mq::make_simple_mq();
  mq::FaultyConnector faulty(*inner, {});
  Inbox inbox;
  auto consumer = faulty.start_consuming(inbox.callback(), Filter::parse("m.*"), "durable");
  faulty.produce(numbered(0), Json::object());
  consumer->stop_consuming();
  faulty.produce(numbered(1), Json::object());
  faulty.produce(numbered(2), Json::object());
  CHECK(faulty.stats().kept_for_persistent == 2);
  consumer = faulty.start_consuming(inbox.callback(), Filter::parse("m.*"), "durable");
  CHECK(inbox.keys() == numbered_keys(3));
  CHECK_THROWS_AS(faulty.start_consuming(inbox.callback(), Filter::parse("m.*"), "durable"),
                  livestate::PersistentNameInUse);
}

TEST_CASE("a callback may produce through the decorator and stop its own consumer") {
  auto inner = mq::make_simple_mq();
  mq::FaultOptions options;
  options.reorder = 0.5;
  options.reorder_window = 3;
  options.duplicate = 0.3;
  mq::FaultyConnector faulty(*inner, options);
  Inbox echoes;
  auto echo_consumer = faulty.start_consuming(echoes.callback(), Filter::parse("echo.*"));
  std::unique_ptr<mq::Consumer> echoer;
  int calls = 0;
  echoer = faulty.start_consuming(
      [&](const RoutingKey& key, const Json&) {
        ++calls;
        faulty.produce(RoutingKey{"echo", key[1]}, Json::object());
        if (key[1] == "9") echoer->stop_consuming();
      },
      Filter::parse("m.*"));
  produce_numbered(faulty, 20);
  faulty.set_enabled(false);
  faulty.flush();
  faulty.flush();  // what the first flush's callbacks produced, if held
  const int after_stop = calls;
  produce_numbered(faulty, 5);
  faulty.flush();
  CHECK(calls == after_stop);                               // stopped: nothing more, held ones included
  CHECK(echoes.size() >= static_cast<std::size_t>(calls));  // every call echoed, some twice
}

TEST_CASE("destroying the decorator stops its consumers, and a handle may outlive it") {
  auto inner = mq::make_simple_mq();
  Inbox inbox;
  std::unique_ptr<mq::Consumer> consumer;
  {
    mq::FaultyConnector faulty(*inner, {});
    consumer = faulty.start_consuming(inbox.callback(), Filter::parse("m.*"));
    CHECK(inner->stats().consumers == 1);
  }
  CHECK(inner->stats().consumers == 0);
  inner->produce(numbered(0), Json::object());
  CHECK(inbox.size() == 0);
  consumer->stop_consuming();  // does nothing
  consumer.reset();
}

TEST_CASE("the decorator may be destroyed from inside one of its callbacks") {
  auto inner = mq::make_simple_mq();
  auto faulty = std::make_unique<mq::FaultyConnector>(*inner, mq::FaultOptions{});
  int calls = 0;
  auto consumer = faulty->start_consuming(
      [&](const RoutingKey&, const Json&) {
        ++calls;
        faulty.reset();
      },
      Filter::parse("m.*"));
  inner->produce(numbered(0), Json::object());
  inner->produce(numbered(1), Json::object());
  CHECK(calls == 1);
  CHECK(faulty == nullptr);
}

TEST_CASE("several producing threads with faults: after healing and a flush, every message arrived exactly once") {
  auto inner = mq::make_simple_mq();
  mq::FaultOptions options;
  options.seed = 3;
  options.reorder = 0.2;
  options.reorder_window = 16;
  options.delay = 0.2;
  options.max_delay = 3ms;
  mq::FaultyConnector faulty(*inner, options);
  Inbox inbox;
  auto consumer = faulty.start_consuming(inbox.callback(), Filter::parse("p.*.*"));
  constexpr int producers = 4;
  constexpr int per_producer = 500;
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < per_producer; ++i) faulty.produce(RoutingKey{"p", std::to_string(p), std::to_string(i)}, {});
    });
  }
  // Stopping and starting another consumer meanwhile, from this thread.
  for (int round = 0; round < 20; ++round) {
    Inbox passing;
    auto transient = faulty.start_consuming(passing.callback(), Filter::parse("p.#"));
    std::this_thread::sleep_for(1ms);
  }
  for (auto& thread : threads) thread.join();
  faulty.set_enabled(false);
  faulty.flush();

  std::map<std::string, int> seen;
  for (const auto& key : inbox.keys()) ++seen[key];
  CHECK(seen.size() == producers * per_producer);
  bool all_once = true;
  for (const auto& [key, count] : seen) all_once = all_once && count == 1;
  CHECK(all_once);
  CHECK(faulty.faults().reordered > 0);
  CHECK(faulty.faults().delayed > 0);
  CHECK(faulty.faults().held == 0);
}
