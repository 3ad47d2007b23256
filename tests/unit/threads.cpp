#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "livestate/mq/simple_mq.hpp"

using namespace livestate;

TEST_CASE(
    "several threads producing: every message delivered once, each producer's in its order, "
    "and every consumer sees the same global order") {
  auto mq = mq::make_simple_mq();
  constexpr int producers = 4;
  constexpr int per_producer = 2000;
  // Callbacks of one SimpleMQ never run concurrently, so these need no lock;
  // TSan would report it if they did.
  std::vector<std::string> seen_a, seen_b;
  auto a = mq->start_consuming([&](const RoutingKey& key, const Json&) { seen_a.push_back(key.str()); },
                               Filter::parse("p.*.*"));
  auto b = mq->start_consuming([&](const RoutingKey& key, const Json&) { seen_b.push_back(key.str()); },
                               Filter::parse("p.#"));
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < per_producer; ++i) {
        mq->produce(RoutingKey{"p", std::to_string(p), std::to_string(i)}, {{"i", i}});
      }
    });
  }
  for (auto& thread : threads) thread.join();

  REQUIRE(seen_a.size() == producers * per_producer);
  CHECK(seen_a == seen_b);
  std::map<std::string, int> next;
  bool in_order = true;
  for (const auto& key : seen_a) {
    const auto parsed = RoutingKey::parse(key);
    in_order = in_order && std::stoi(parsed[2]) == next[parsed[1]]++;
  }
  CHECK(in_order);
  CHECK(mq->stats().delivered == 2 * producers * per_producer);
}

TEST_CASE("callbacks that produce while other threads produce: nothing lost, nothing twice") {
  auto mq = mq::make_simple_mq();
  std::map<std::string, int> echoes;
  auto echo = mq->start_consuming(
      [&](const RoutingKey& key, const Json&) {
        mq->produce(RoutingKey{"echo", key[1], key[2]}, Json::object());
      },
      Filter::parse("in.*.*"));
  auto counter = mq->start_consuming([&](const RoutingKey& key, const Json&) { ++echoes[key.str()]; },
                                     Filter::parse("echo.*.*"));
  std::vector<std::thread> threads;
  for (int p = 0; p < 3; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < 1000; ++i) mq->produce(RoutingKey{"in", std::to_string(p), std::to_string(i)}, Json{});
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(echoes.size() == 3000);
  bool all_once = true;
  for (const auto& [key, count] : echoes) all_once = all_once && count == 1;
  CHECK(all_once);
}

TEST_CASE("once stop_consuming returns in another thread, the callback never runs again") {
  auto mq = mq::make_simple_mq();
  std::atomic<bool> stopped{false};
  std::atomic<int> calls_after_stop{0};
  std::atomic<bool> running{true};
  auto consumer = mq->start_consuming(
      [&](const RoutingKey&, const Json&) {
        if (stopped.load()) ++calls_after_stop;
        std::this_thread::sleep_for(std::chrono::microseconds(50));  // widen the window
      },
      Filter::parse("tick"));
  std::thread producer([&] {
    while (running.load()) mq->produce(RoutingKey{"tick"}, Json::object());
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  consumer->stop_consuming();
  stopped = true;
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  running = false;
  producer.join();
  CHECK(calls_after_stop.load() == 0);
}

TEST_CASE("consumers start and stop from several threads while messages flow") {
  auto mq = mq::make_simple_mq();
  std::atomic<bool> running{true};
  std::atomic<long> delivered{0};
  std::thread producer([&] {
    int i = 0;
    while (running.load()) mq->produce(RoutingKey{"load", std::to_string(i++ % 50)}, Json::object());
  });
  std::vector<std::thread> churners;
  for (int t = 0; t < 3; ++t) {
    churners.emplace_back([&, t] {
      for (int round = 0; round < 300; ++round) {
        auto filter = (round % 3 == 0)   ? Filter::parse("load.*")
                      : (round % 3 == 1) ? Filter::parse("load.#")
                                         : Filter{"load", std::to_string(round % 50)};
        std::optional<std::string> name;
        if (round % 5 == 0) {
          name = "p" + std::to_string(t);
          filter = Filter::parse("load.#");  // a persistent name keeps its filter
        }
        auto consumer = mq->start_consuming([&](const RoutingKey&, const Json&) { ++delivered; }, filter, name);
        if (round % 2 == 0) std::this_thread::yield();
        consumer.reset();
      }
    });
  }
  for (auto& thread : churners) thread.join();
  running = false;
  producer.join();
  CHECK(mq->stats().consumers == 0);
  CHECK(mq->stats().callback_errors == 0);
}
