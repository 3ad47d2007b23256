// Stopping a live view: stop() and the destructor return at once, also while
// a reload or resync is running in another thread (its result is then
// discarded), and no change callback runs once they have returned, except
// the one that stopped the view itself. Also the work a view says it still
// has while a read is held (ViewStats::work_pending: what `livestate chaos`
// waits on). The reads go to a real SQLite store, through a Source that holds
// them until the test lets them go.

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "eventually.hpp"
#include "livestate/livestate.hpp"
#include "test_database.hpp"

namespace {

using namespace std::chrono_literals;
namespace db = livestate::db;
namespace mq = livestate::mq;
namespace reconcile = livestate::reconcile;
using livestate::Json;
using livestate::RoutingKey;

// A store's rows, read through a gate: while it is closed, read() waits.
class GatedSource final : public reconcile::Source {
 public:
  explicit GatedSource(db::Store& store) : m_store(reconcile::source_of(store)) {}
  ~GatedSource() override { open(); }

  std::map<std::string, Json> read(std::string_view type, const Json& where,
                                   const std::optional<std::vector<std::string>>& ids) override {
    {
      std::unique_lock lock(m_mutex);
      ++m_waiting;
      m_changed.notify_all();
      m_changed.wait(lock, [&] { return m_open; });
      --m_waiting;
    }
    auto rows = m_store->read(type, where, ids);
    ++m_reads_done;
    return rows;
  }
  std::map<std::string, std::int64_t> deletions(std::string_view type,
                                                const std::optional<std::vector<std::string>>& ids,
                                                std::optional<std::chrono::milliseconds> within) override {
    return m_store->deletions(type, ids, within);
  }

  void close() {
    std::lock_guard lock(m_mutex);
    m_open = false;
  }
  void open() {
    std::lock_guard lock(m_mutex);
    m_open = true;
    m_changed.notify_all();
  }
  /// Waits until a read is held at the gate.
  bool wait_held() {
    std::unique_lock lock(m_mutex);
    return m_changed.wait_for(lock, 10s, [&] { return m_waiting > 0; });
  }
  bool held() {
    std::lock_guard lock(m_mutex);
    return m_waiting > 0;
  }
  [[nodiscard]] int reads_done() const { return m_reads_done; }

 private:
  std::unique_ptr<reconcile::Source> m_store;
  std::mutex m_mutex;
  std::condition_variable m_changed;
  bool m_open = true;
  int m_waiting = 0;
  std::atomic<int> m_reads_done{0};
};

// The view's executor, run by a thread of its own until join().
struct Runner {
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{io.get_executor()};
  std::thread thread{[this] { io.run(); }};
  /// Lets the executor run out of work (the view's included), then joins.
  void join() {
    work.reset();
    if (thread.joinable()) thread.join();
  }
  ~Runner() {
    io.stop();
    join();
  }
};

// A store on a bus, its reads through a gate, and an executor thread, in the
// order the lifetime rule asks: the store outlives the runner, whose join()
// lets a held read finish before the store goes.
struct GatedStore {
  livestate::test::TestDatabase database;
  std::unique_ptr<mq::Connector> bus = mq::make_simple_mq();
  std::unique_ptr<db::Store> store = db::Store::open(database.url(), *bus);
  GatedSource gated{*store};
  Runner runner;
};

}  // namespace

TEST_CASE("destroying a view returns while its reload is held in the source, and no callback runs after") {
  GatedStore fixture;
  auto& [database, bus, store, gated, runner] = fixture;
  store->upsert_resource("widgets", "a", {{"size", 1}});
  std::atomic<bool> destroyed{false};
  std::atomic<int> changes{0}, changes_after{0};

  auto options = reconcile::ViewOptions{.type = "widgets"};
  auto view = std::make_unique<reconcile::LiveView>(*bus, gated, runner.io.get_executor(), options);
  view->on_change([&](const reconcile::Change&) {
    ++changes;
    if (destroyed) ++changes_after;
  });
  view->start();
  REQUIRE(livestate::test::eventually([&] { return view->ready() && changes == 1; }));  // a's, after the load

  // An event the type doesn't have: the view reloads the entry, and the read
  // is held. Then a change the view would announce once the read returns.
  gated.close();
  auto body = *store->get_resource("widgets", "a");
  body["_rev"] = body["_rev"].get<std::int64_t>() + 1;
  bus->produce(RoutingKey{"widgets", "a", "polished"}, body);
  REQUIRE(gated.wait_held());
  store->upsert_resource("widgets", "b", {{"size", 2}});

  auto destroying = std::async(std::launch::async, [&] {
    view.reset();
    destroyed = true;
  });
  CHECK(destroying.wait_for(10s) == std::future_status::ready);
  CHECK(gated.held());  // it returned while the read was still held
  gated.open();
  destroying.wait();
  runner.join();
  CHECK(gated.reads_done() >= 2);  // the held read ran to its end (result discarded)
  CHECK(changes_after == 0);
  CHECK(changes == 1);
}

TEST_CASE("stop() returns while a resync is held, and the view's timers leave the executor") {
  livestate::test::TestDatabase database;
  auto bus = mq::make_simple_mq();
  auto store = db::Store::open(database.url(), *bus);
  GatedSource gated(*store);
  Runner runner;
  auto options = reconcile::ViewOptions{.type = "widgets"};
  options.resync_every = std::chrono::hours(1);  // a timer that would keep run() busy for an hour
  reconcile::LiveView view(*bus, gated, runner.io.get_executor(), options);
  std::atomic<int> changes{0};
  view.on_change([&](const reconcile::Change&) { ++changes; });
  gated.close();
  view.start();
  REQUIRE(gated.wait_held());
  store->upsert_resource("widgets", "a", {{"size", 1}});
  auto stopping = std::async(std::launch::async, [&] { view.stop(); });
  CHECK(stopping.wait_for(10s) == std::future_status::ready);
  CHECK(gated.held());  // it returned while the snapshot was still held
  gated.open();
  stopping.wait();
  view.stop();  // idempotent
  CHECK_THROWS_AS(view.start(), std::logic_error);
  runner.join();  // returns: the held read ended, the hourly timer was cancelled
  CHECK(changes == 0);
  CHECK_FALSE(view.ready());  // the held snapshot was discarded
}

TEST_CASE("a view destroyed from its own change callback: that callback finishes, no other runs") {
  livestate::test::TestDatabase database;
  auto bus = mq::make_simple_mq();
  auto store = db::Store::open(database.url(), *bus);
  for (const auto* id : {"a", "b", "c"}) store->upsert_resource("widgets", id, {{"size", 1}});
  boost::asio::io_context io;
  auto view = std::make_unique<reconcile::LiveView>(*bus, *store, io.get_executor(),
                                                    reconcile::ViewOptions{.type = "widgets"});
  int calls = 0;
  bool finished = false;
  view->on_change([&](const reconcile::Change&) {
    ++calls;
    view.reset();  // the snapshot's first change of three
    finished = true;
  });
  view->start();
  io.run();
  CHECK(calls == 1);
  CHECK(finished);
  store->upsert_resource("widgets", "d", {{"size", 1}});
  io.restart();
  io.run();
  CHECK(calls == 1);
}

TEST_CASE("stop() from another thread waits for a change callback in progress, then none runs") {
  livestate::test::TestDatabase database;
  auto bus = mq::make_simple_mq();
  auto store = db::Store::open(database.url(), *bus);
  Runner runner;
  reconcile::LiveView view(*bus, *store, runner.io.get_executor(), reconcile::ViewOptions{.type = "widgets"});
  std::promise<void> entered;
  std::promise<void> release;
  auto released = release.get_future().share();
  std::atomic<int> calls{0};
  view.on_change([&](const reconcile::Change&) {
    if (++calls == 1) {
      entered.set_value();
      released.wait();
    }
  });
  view.start();
  REQUIRE(livestate::test::eventually([&] { return view.ready(); }));
  store->upsert_resource("widgets", "a", {{"size", 1}});
  store->upsert_resource("widgets", "b", {{"size", 1}});
  REQUIRE(entered.get_future().wait_for(10s) == std::future_status::ready);
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    view.stop();
    stopped = true;
  });
  std::this_thread::sleep_for(50ms);
  CHECK_FALSE(stopped);  // the callback in progress holds it
  release.set_value();
  stopper.join();
  CHECK(stopped);
  runner.join();
  CHECK(calls == 1);  // b's change was not announced
}

TEST_CASE("a view's pending work counts a held read and what waits behind it, and is none once it is quiet") {
  GatedStore fixture;
  auto& [database, bus, store, gated, runner] = fixture;
  store->upsert_resource("widgets", "a", {{"size", 1}});
  reconcile::LiveView view(*bus, gated, runner.io.get_executor(), reconcile::ViewOptions{.type = "widgets"});
  const auto quiet = [&] {
    const auto stats = view.stats();
    return view.ready() && stats.queued == 0 && stats.work_pending == 0;
  };
  view.start();
  REQUIRE(livestate::test::eventually(quiet));

  gated.close();
  view.resync();
  REQUIRE(gated.wait_held());
  CHECK(view.stats().work_pending >= 1);
  store->upsert_resource("widgets", "b", {{"size", 2}});  // its message waits behind the held read
  CHECK(view.stats().work_pending >= 2);
  CHECK_FALSE(quiet());
  gated.open();
  REQUIRE(livestate::test::eventually(quiet));
  CHECK(view.size() == 2);
  CHECK(view.verify().empty());
  view.stop();
  runner.join();
}
