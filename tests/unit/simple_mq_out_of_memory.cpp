// SimpleMQ when memory runs out: each allocation that a produce() or a
// start_consuming() makes (callbacks included) is made to fail in turn. Each
// time the call either throws std::bad_alloc or carries on, and afterwards the
// connector still delivers, stops and resumes: nothing hangs, no name stays
// taken, no consumer stays active without a handle.
//
// This executable replaces the global operator new to inject the failures.

#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <future>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "livestate/core/log.hpp"
#include "livestate/mq/simple_mq.hpp"

namespace {
// Allocations on this thread since the failure was armed, and the one (counted
// from 1) that throws; 0: none does.
thread_local std::size_t t_allocations = 0;
thread_local std::size_t t_fail_at = 0;
}  // namespace

// GCC, seeing free() take what operator new returned once both are inlined,
// warns of a mismatch: here they are the same allocator.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  if (t_fail_at != 0 && ++t_allocations == t_fail_at) throw std::bad_alloc();
  if (void* memory = std::malloc(size == 0 ? 1 : size)) return memory;
  throw std::bad_alloc();
}
void operator delete(void* memory) noexcept { std::free(memory); }
void operator delete(void* memory, std::size_t) noexcept { std::free(memory); }
#pragma GCC diagnostic pop

using namespace livestate;
using Keys = std::vector<std::string>;

namespace {

// Fails the n-th allocation on this thread while it lives.
class FailingAllocation {
 public:
  explicit FailingAllocation(std::size_t n) noexcept {
    t_allocations = 0;
    t_fail_at = n;
  }
  ~FailingAllocation() { t_fail_at = 0; }
  FailingAllocation(const FailingAllocation&) = delete;
  FailingAllocation& operator=(const FailingAllocation&) = delete;
  [[nodiscard]] bool reached() const noexcept { return t_allocations >= t_fail_at; }
};

void ignore(const RoutingKey&, const Json&) {}

// A connector with consumers of every kind: a plain one, one that throws (so
// errors are logged), a persistent one that keeps everything, a stopped
// persistent one with a backlog, and a busy one that on "go" produces, resumes,
// stops and starts from inside its callback.
struct World {
  // Bodies are made before any failure is armed: nlohmann::json's
  // initializer-list constructor terminates when an allocation fails in it.
  const Json body = Json{{"n", 1}};
  std::unique_ptr<mq::Connector> mq = mq::make_simple_mq();
  std::vector<std::unique_ptr<mq::Consumer>> handles;
  std::unique_ptr<mq::Consumer> resumable;
  std::unique_ptr<mq::Consumer> victim;
  Keys plain;
  int nested = 0;  // what the busy consumer produces before it resumes

  // `shift` messages pass through the queue first, so that each run's queued
  // items fall elsewhere in the queue's storage blocks (whose allocation is
  // what a push can fail on).
  World(int nested_messages, int shift) : nested(nested_messages) {
    handles.reserve(64);  // the busy callback adds to it: no allocation there
    handles.push_back(mq->start_consuming([this](const RoutingKey& key, const Json&) { plain.push_back(key.str()); },
                                          Filter::parse("#")));
    handles.push_back(mq->start_consuming(
        [](const RoutingKey&, const Json&) { throw std::runtime_error("view is broken"); }, Filter::parse("#")));
    mq->start_consuming(ignore, Filter::parse("#"), "keeper").reset();
    mq->start_consuming(ignore, Filter::parse("#"), "resumable").reset();
    victim = mq->start_consuming(ignore, Filter::parse("#"));
    handles.push_back(mq->start_consuming(
        [this](const RoutingKey&, const Json&) {
          for (int i = 0; i < nested; ++i) mq->produce(RoutingKey{"nested", std::to_string(i)}, body);
          resumable = mq->start_consuming(ignore, Filter::parse("#"), "resumable");
          victim.reset();
          handles.push_back(mq->start_consuming(ignore, Filter::parse("#")));
          mq->produce(RoutingKey{"after"}, body);
        },
        Filter::parse("go")));
    handles.push_back(mq->start_consuming(
        [this, shift](const RoutingKey&, const Json&) {
          for (int i = 0; i < shift; ++i) mq->produce(RoutingKey{"shifted"}, body);
        },
        Filter::parse("shift")));
    mq->produce(RoutingKey{"shift"}, Json::object());
    mq->produce(RoutingKey{"backlog"}, {{"kept", true}});
  }
};

// After a failure: drops every handle, then checks that no consumer is left
// active, that a new consumer gets what is produced, and that both persistent
// names can be resumed. Returns what is wrong, or "" when nothing is.
std::string still_works(World& world) {
  try {
    world.handles.clear();
    world.resumable.reset();
    world.victim.reset();
    const auto left = world.mq->stats().consumers;
    if (left != 0) return std::to_string(left) + " consumer(s) still active without a handle";
    Keys probed;
    auto probe = world.mq->start_consuming([&](const RoutingKey& key, const Json&) { probed.push_back(key.str()); },
                                           Filter::parse("probe"));
    world.mq->produce(RoutingKey{"probe"}, Json::object());
    if (probed != Keys{"probe"}) return "a new consumer did not get the message produced after the failure";
    auto resumed = world.mq->start_consuming(ignore, Filter::parse("#"), "resumable");
    auto created = world.mq->start_consuming(ignore, Filter::parse("x.*"), "brand-new");
    world.mq->produce(RoutingKey{"x", "1"}, Json::object());
    return "";
  } catch (const std::exception& error) {
    return std::string("afterwards: ") + error.what();
  }
}

// Runs `operation` on fresh worlds with its 1st, 2nd, ... allocation failing,
// until it completes without reaching the failing one. The checks afterwards
// run in another thread, so that a connector left hanging fails the test
// instead of stopping it; such a world is leaked, as that thread still uses it.
void fail_each_allocation(const std::function<void(World&)>& operation) {
  set_log_sink([](LogLevel, std::string_view, std::string_view) {});
  for (int nested = 0; nested <= 8; ++nested) {
    for (int shift = 0; shift < 8; shift += 3) {
      for (std::size_t n = 1; n < 100'000; ++n) {
        auto world = std::make_unique<World>(nested, shift);
        bool reached = false;
        bool threw_bad_alloc = false;
        std::string other_exception;
        {
          FailingAllocation failing(n);
          try {
            operation(*world);
          } catch (const std::bad_alloc&) {
            threw_bad_alloc = true;
          } catch (const std::exception& error) {
            other_exception = error.what();
          }
          reached = failing.reached();
        }
        INFO("allocation ", n, " failing, ", nested, " nested message(s), queue shifted by ", shift);
        CHECK(other_exception == "");
        if (threw_bad_alloc) CHECK(reached);
        auto verdict = std::make_shared<std::promise<std::string>>();
        auto verdict_future = verdict->get_future();
        std::thread([&world = *world, verdict] { verdict->set_value(still_works(world)); }).detach();
        if (verdict_future.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
          FAIL_CHECK("the connector hangs after the failure");
          static_cast<void>(world.release());
          set_log_sink(nullptr);
          return;
        }
        CHECK(verdict_future.get() == "");
        if (!reached) break;
      }
    }
  }
  set_log_sink(nullptr);
}

}  // namespace

TEST_CASE("a produce() that runs out of memory anywhere leaves the connector working") {
  fail_each_allocation([](World& world) { world.mq->produce(RoutingKey{"go"}, world.body); });
}

TEST_CASE("a resume that runs out of memory anywhere leaves the name free and the connector working") {
  fail_each_allocation(
      [](World& world) { world.resumable = world.mq->start_consuming(ignore, Filter::parse("#"), "resumable"); });
}

TEST_CASE("a new persistent name that runs out of memory anywhere leaves the connector working") {
  fail_each_allocation([](World& world) {
    world.handles.push_back(world.mq->start_consuming(ignore, Filter::parse("x.*"), "brand-new"));
  });
}

TEST_CASE("a callback error logged while memory is short is still counted, and nothing terminates") {
  auto mq = mq::make_simple_mq();
  auto thrower = mq->start_consuming([](const RoutingKey&, const Json&) { throw std::runtime_error("view is broken"); },
                                     Filter::parse("x"));
  std::vector<std::string> logged;
  logged.reserve(4);
  set_log_sink([&](LogLevel, std::string_view, std::string_view message) {
    if (logged.size() < logged.capacity()) logged.emplace_back(message);  // may fail: log() catches
  });
  const Json body = Json::object();
  mq->produce(RoutingKey{"x"}, body);  // the connector's own scratch space is allocated now
  // The callback's exception takes the first allocation, building the line
  // the next ones.
  for (std::size_t n = 1; n <= 4; ++n) {
    const RoutingKey key{"x"};
    FailingAllocation failing(n);
    mq->produce(key, body);
  }
  set_log_sink(nullptr);
  CHECK(mq->stats().callback_errors == 5);
  CHECK(mq->stats().delivered == 0);
}
