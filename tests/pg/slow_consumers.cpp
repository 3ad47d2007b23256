// Slow and failing consumers on the PostgreSQL connector: a callback that
// blocks for seconds and one that throws on every message, beside consumers
// and a live view that keep up, on one connector and an executor with threads
// to spare. The others get everything at full rate, memory stays bounded (a
// consumer's queue never outgrows max_buffered), and the slow one loses only
// its own messages and is told how many; a durable one loses nothing.

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/thread_pool.hpp>

#include "../unit/eventually.hpp"
#include "connector_fixtures.hpp"
#include "livestate/livestate.hpp"
#include "pg_test_server.hpp"

namespace {

using namespace std::chrono_literals;
namespace db = livestate::db;
namespace mq = livestate::mq;
namespace reconcile = livestate::reconcile;
using livestate::Filter;
using livestate::Json;
using livestate::RoutingKey;
using livestate::test::fresh_channel;
using livestate::test::Gate;
using livestate::test::Inbox;

bool eventually(const std::function<bool()>& condition) {
  return livestate::test::eventually(condition, std::chrono::seconds(30));
}

// `count` upserts of "job" resources in transactions of 100, from `first` on.
void write_jobs(db::Store& store, int first, int count) {
  for (int start = first; start < first + count; start += 100) {
    auto transaction = store.begin();
    for (int n = start; n < std::min(start + 100, first + count); ++n) {
      transaction.upsert_resource("job", "j" + std::to_string(n % 500), {{"n", n}});
    }
    transaction.commit();
  }
}

int n_of(const Json& body) { return body.at("state").at("n").get<int>(); }

// A fresh schema, an executor with threads to spare, the consumers'
// connector (listening) and a store producing through a connector of its own.
struct Setup {
  explicit Setup(std::size_t max_buffered) : options(fresh_channel()) {
    options.max_buffered = max_buffered;  // before the connectors: declared after
    connector = mq::make_postgres_connector(livestate::test::connector_url(schema.url()), pool.get_executor(), options);
    producer_connector = mq::make_postgres_connector(livestate::test::connector_url(schema.url()), pool.get_executor(),
                                                     options);
    producer = db::Store::open(schema.url(), *producer_connector);
    REQUIRE(connector->wait_listening(10s));
  }
  livestate::test::FreshSchema schema;
  boost::asio::thread_pool pool{4};
  mq::PostgresOptions options;
  std::unique_ptr<mq::PostgresConnector> connector;
  std::unique_ptr<mq::PostgresConnector> producer_connector;
  std::unique_ptr<db::Store> producer;
};

}  // namespace

TEST_CASE(
    "a consumer that blocks for seconds delays nobody: the others get every message, it loses only its own past "
    "the bound and is told how many") {
  Setup setup(1000);
  auto& [schema, pool, options, connector, producer_connector, producer] = setup;
  auto view_store = db::Store::open(schema.url(), *connector);

  Inbox fast;
  auto fast_consumer = connector->start_consuming(fast.callback(), Filter::parse("job.#"));

  std::atomic<int> thrown{0};
  auto thrower = connector->start_consuming(
      [&](const RoutingKey&, const Json&) {
        ++thrown;
        throw std::runtime_error("this consumer fails on every message");
      },
      Filter::parse("job.#"));

  Gate gate;
  Inbox slow;
  const auto blocked_at = std::chrono::steady_clock::now();
  std::atomic<bool> blocking{false};
  mq::ConsumeOptions slow_options;
  slow_options.on_control = slow.control();
  auto slow_consumer = connector->start_consuming(
      [&, record = slow.callback(), first = true](const RoutingKey& key, const Json& body) mutable {
        record(key, body);
        if (std::exchange(first, false)) {
          blocking = true;
          gate.wait();
          blocking = false;
        }
      },
      Filter::parse("job.#"), slow_options);
  const std::shared_ptr<void> open_on_exit(nullptr, [&](void*) { gate.open(); });

  // Nothing is applied twice, nothing goes back: each change of an entry
  // brings a newer revision than the last. (Declared before the view: its
  // callbacks use them until it is gone.)
  std::mutex revisions_mutex;
  std::map<std::string, std::int64_t> revisions;
  std::atomic<int> repeated{0};
  // The view runs on an executor declared after its store, so that a read
  // still running when the view is destroyed ends before the store goes.
  livestate::test::Executor view_executor;
  reconcile::LiveView view(*connector, *view_store, view_executor.get(), {.type = "job"});
  view.on_change([&](const reconcile::Change& change) {
    if (change.after.is_null()) return;
    std::lock_guard lock(revisions_mutex);
    auto& last = revisions[change.id];
    if (change.after.at("_rev").get<std::int64_t>() <= last) ++repeated;
    last = change.after.at("_rev").get<std::int64_t>();
  });
  view.start();

  // While the slow consumer is stuck in its first message, the fast one,
  // the failing one and the view get everything. Written in chunks that the
  // others take in before the next: each consumer's bound (max_buffered)
  // applies to them too, and on a loaded machine a burst of a WAL flush's
  // worth of commits could outrun a consumer that is merely starved of CPU.
  constexpr int total = 10'000;
  constexpr int chunk = 500;
  for (int first = 0; first < total; first += chunk) {
    write_jobs(*producer, first, chunk);
    REQUIRE(fast.wait_for(static_cast<std::size_t>(first + chunk), 60s));
    REQUIRE(eventually([&] { return thrown.load() >= first + chunk; }));
  }
  REQUIRE(eventually([&] { return thrown.load() == total; }));
  REQUIRE(eventually([&] { return view.verify().empty() && view.entries().size() == 500; }));
  CHECK(blocking.load());
  CHECK(slow.messages().size() == 1);
  const auto messages = fast.messages();
  REQUIRE(messages.size() == total);
  for (int n = 0; n < total; ++n) CHECK(n_of(messages[static_cast<std::size_t>(n)].body) == n);
  CHECK(view.stats().stale_entries == 0);
  CHECK(repeated.load() == 0);

  auto stats = connector->postgres_stats();
  CHECK(stats.callback_errors == static_cast<std::uint64_t>(total));
  // Memory is bounded: the stuck consumer holds at most max_buffered
  // messages; the rest of its share was dropped, for it alone.
  CHECK(stats.backlog_peak <= options.max_buffered);
  CHECK(stats.dropped_overflow == total - 1 - options.max_buffered);

  // Blocked for seconds, then let go: it gets what it kept, then is told how
  // many it lost, then gets what comes next.
  while (std::chrono::steady_clock::now() - blocked_at < 2s) std::this_thread::sleep_for(50ms);
  gate.open();
  REQUIRE(slow.wait_for_event(mq::ControlKind::overflow, 30s));
  write_jobs(*producer, total, 100);
  REQUIRE(slow.wait_for(1 + options.max_buffered + 100, 30s));
  const auto slow_messages = slow.messages();
  const auto events = slow.events();
  REQUIRE(events.size() == 1);
  CHECK(events[0].kind == mq::ControlKind::overflow);
  CHECK(events[0].missed == stats.dropped_overflow);
  REQUIRE(slow_messages.size() == 1 + options.max_buffered + 100);
  for (std::size_t i = 0; i <= options.max_buffered; ++i) CHECK(n_of(slow_messages[i].body) == static_cast<int>(i));
  for (std::size_t i = 0; i < 100; ++i) {
    CHECK(n_of(slow_messages[1 + options.max_buffered + i].body) == total + static_cast<int>(i));
  }

  // The failing consumer is still called, the others still served.
  REQUIRE(eventually([&] { return thrown.load() == total + 100; }));
  REQUIRE(fast.wait_for(total + 100, 30s));
  REQUIRE(eventually([&] { return view.verify().empty(); }));
  stats = connector->postgres_stats();
  CHECK(stats.callback_errors == static_cast<std::uint64_t>(total + 100));
  CHECK(stats.reconnects == 0);
}

TEST_CASE(
    "a durable consumer that falls behind past the bound loses nothing: what it missed comes from its table "
    "(NOTIFY) or its slot (logical decoding), in order") {
  Setup setup(100);
  auto& [schema, pool, options, connector, producer_connector, producer] = setup;

  Gate gate;
  std::mutex mutex;
  std::vector<int> received;
  mq::ConsumeOptions durable;
  durable.persistent_name = "slow-durable";
  auto consumer = connector->start_consuming(
      [&, first = true](const RoutingKey&, const Json& body) mutable {
        {
          std::lock_guard lock(mutex);
          received.push_back(n_of(body));
        }
        if (std::exchange(first, false)) gate.wait();
      },
      Filter::parse("job.#"), durable);
  const std::shared_ptr<void> open_on_exit(nullptr, [&](void*) { gate.open(); });

  constexpr int total = 2'000;
  write_jobs(*producer, 0, total);
  // (and the schema.N.migrated of the producer's store, opened after it)
  REQUIRE(eventually([&] { return connector->postgres_stats().received >= total; }));
  if (livestate::test::logical_transport()) {
    // Its own stream stops reading past the bound instead: the server keeps
    // the rest in the slot's WAL.
    CHECK(connector->postgres_stats().dropped_overflow == 0);
  } else {
    CHECK(connector->postgres_stats().dropped_overflow > 0);
  }
  gate.open();

  // Every message at least once, in order: after the first copy of n comes
  // nothing older than n.
  REQUIRE(eventually([&] {
    std::lock_guard lock(mutex);
    return !received.empty() && received.back() == total - 1;
  }));
  std::this_thread::sleep_for(500ms);  // duplicates, if any, would come now
  std::lock_guard lock(mutex);
  int next = 0;
  for (const int n : received) {
    CHECK(n <= next);
    if (n == next) ++next;
  }
  CHECK(next == total);
}
