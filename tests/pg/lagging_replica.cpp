// Lagging replica (reliability, issue 6 item 3): live views follow the
// primary's messages but reload through a streaming replica that applies
// everything 5 s late (recovery_min_apply_delay). While it lags, the views
// flag the entries its reads can't confirm as stale and keep what they hold:
// no entry goes back to an older revision, none is dropped because the
// replica lacks it, nothing is applied twice. Once the replica has replayed
// everything, the flags clear (by the views' retries, or their next resync)
// and the views equal the primary.
//
// Needs the harness's own server (replica.hpp): RUN_SERIAL, and skipped when
// the server is not the harness's.

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../unit/eventually.hpp"
#include "connector_fixtures.hpp"
#include "livestate/livestate.hpp"
#include "pg_test_server.hpp"
#include "replica.hpp"
#include "server_control.hpp"

namespace {

using namespace std::chrono_literals;
namespace db = livestate::db;
namespace mq = livestate::mq;
namespace reconcile = livestate::reconcile;
using Clock = std::chrono::steady_clock;

// What a view's change callbacks said: an entry must never come back at a
// revision at or below one the view already held (older: it went back; equal:
// applied twice), and only deleted ids may be removed, once.
class Follower {
 public:
  explicit Follower(std::set<std::string> deleted) : m_deleted(std::move(deleted)) {}

  reconcile::LiveView::ChangeCallback callback() {
    return [this](const reconcile::Change& change) {
      std::lock_guard lock(m_mutex);
      if (change.kind == reconcile::ChangeKind::removed) {
        if (m_deleted.count(change.id) == 0 || ++m_removed[change.id] > 1) m_wrong.push_back("removed " + change.id);
        return;
      }
      const auto revision = change.after.at("_rev").get<std::int64_t>();
      const auto [held, first] = m_highest.try_emplace(change.id, revision);
      if (first) return;
      if (revision <= held->second) {
        m_wrong.push_back(change.id + " at revision " + std::to_string(revision) + " after " +
                          std::to_string(held->second));
      }
      held->second = std::max(held->second, revision);
    };
  }
  std::vector<std::string> wrong() {
    std::lock_guard lock(m_mutex);
    return m_wrong;
  }

 private:
  std::mutex m_mutex;
  std::set<std::string> m_deleted;
  std::map<std::string, std::int64_t> m_highest;
  std::map<std::string, int> m_removed;
  std::vector<std::string> m_wrong;
};

// The most entries each view had flagged stale at once, sampled.
class StalePeaks {
 public:
  StalePeaks(reconcile::LiveView& first, reconcile::LiveView& second)
      : m_thread([this, &first, &second] {
          while (!m_stop) {
            m_first = std::max<std::uint64_t>(m_first, first.stats().stale_entries);
            m_second = std::max<std::uint64_t>(m_second, second.stats().stale_entries);
            std::this_thread::sleep_for(5ms);
          }
        }) {}
  StalePeaks(const StalePeaks&) = delete;
  StalePeaks& operator=(const StalePeaks&) = delete;
  ~StalePeaks() {
    m_stop = true;
    m_thread.join();
  }
  std::uint64_t first() const { return m_first; }
  std::uint64_t second() const { return m_second; }

 private:
  std::atomic<bool> m_stop{false};
  std::atomic<std::uint64_t> m_first{0};
  std::atomic<std::uint64_t> m_second{0};
  std::thread m_thread;
};

std::string widget(const char* prefix, int index) { return std::string(prefix) + "-" + std::to_string(index); }

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

}  // namespace

TEST_CASE(
    "views reloading through a lagging replica flag stale entries, never go back, and converge once it catches up") {
  const auto harness = livestate::test::harness_for_replica();
  if (!harness) {
    MESSAGE(std::string(livestate::test::skip_reason));
    return;
  }
  constexpr auto apply_delay = 5s;
  livestate::test::Replica replica(*harness, apply_delay);
  livestate::test::FreshSchema schema;
  const auto replica_url = schema.url_on(replica.url());
  livestate::test::Executor executor;
  // Every write and every LISTEN on the primary: a hot standby refuses LISTEN.
  auto connector = mq::make_postgres_connector(schema.url(), executor.get(), livestate::test::fresh_channel());
  REQUIRE(connector->wait_listening(20s));
  auto store = db::Store::open(schema.url(), *connector);
  livestate::test::ReplayWatch replay(schema.url(), replica_url);
  int writes = 0;
  const auto write = [&](const std::string& id, int n) {
    store->upsert_resource("widgets", id, {{"n", n}});
    ++writes;
  };

  // The replica has the tables and 50 widgets before it is made to lag.
  for (int i = 0; i < 50; ++i) write(widget("old", i), 0);
  const auto seeded = replay.mark();
  REQUIRE(livestate::test::eventually([&] { return replay.replayed(seeded); }, 60s, 20ms));
  // Reads only: no migration (the standby is read-only), no messages.
  auto replica_mq = mq::make_simple_mq();
  db::StoreOptions read_only;
  read_only.migrate = false;
  auto replica_store = db::Store::open(replica_url, *replica_mq, read_only);
  REQUIRE(replica_store->list("widgets").size() == 50);

  std::set<std::string> deleted;
  for (int i = 40; i < 50; ++i) deleted.insert(widget("old", i));
  for (int i = 140; i < 150; ++i) deleted.insert(widget("new", i));
  reconcile::ViewOptions options;
  options.type = "widgets";
  options.reload_from = replica_store.get();
  options.lag_retry_initial = 20ms;
  options.lag_deadline = 300ms;  // far under the replica's delay
  // The first view follows from before the lag and repairs by retries alone;
  // the second starts while the replica lags and resyncs every second.
  Follower first_changes(deleted), second_changes(deleted);
  // The views run on an executor declared after their stores, so that a read
  // still running when a view is destroyed ends before the stores go.
  livestate::test::Executor view_executor;
  reconcile::LiveView first(*connector, *store, view_executor.get(), options);
  first.on_change(first_changes.callback());
  first.start();
  REQUIRE(livestate::test::eventually([&] { return first.ready(); }, 20s));
  REQUIRE(first.entries().size() == 50);
  options.resync_every = 1s;
  reconcile::LiveView second(*connector, *store, view_executor.get(), options);
  second.on_change(second_changes.callback());
  StalePeaks peaks(first, second);

  // Phase 1: new widgets, updates and deletions, which the first view takes
  // from the messages; then it resyncs, as after a reconnect, through the
  // replica, which has none of it yet: it lacks the new widgets, has older
  // rows of the updated ones and still has the deleted ones.
  const auto lag_start = Clock::now();
  for (int i = 0; i < 150; ++i) write(widget("new", i), 1);
  for (int i = 0; i < 20; ++i) write(widget("old", i), 1);
  for (const auto& id : deleted) {
    REQUIRE(store->delete_resource("widgets", id));
    ++writes;
  }
  const auto phase1 = replay.mark();
  REQUIRE(livestate::test::eventually([&] { return first.verify().empty(); }, 20s, 10ms));
  first.resync();
  REQUIRE(livestate::test::eventually([&] { return first.stats().stale_entries > 0; }, 30s));
  CHECK_FALSE(replay.replayed(phase1));  // flagged while the replica lags
  CHECK(first.verify().empty());         // and nothing dropped, rolled back or brought back

  // Phase 2: the second view starts on the lagging replica's snapshot, then
  // hears of updates to widgets it doesn't know yet: their reloads lag.
  second.start();
  REQUIRE(livestate::test::eventually([&] { return second.ready(); }, 20s));
  for (int i = 0; i < 140; i += 2) write(widget("new", i), 2);
  for (int i = 0; i < 10; ++i) write(widget("old", i), 2);
  const auto written = replay.mark();
  const auto writes_done = Clock::now();
  REQUIRE(livestate::test::eventually([&] { return second.stats().stale_entries > 0; }, 30s));
  CHECK_FALSE(replay.replayed(written));
  CHECK(first.stats().stale_entries > 0);  // those the updates didn't confirm

  // The replica catches up; the views' retries and resyncs follow.
  REQUIRE(livestate::test::eventually([&] { return replay.replayed(written); }, 60s, 20ms));
  const double replica_lag = seconds_since(writes_done);
  const auto caught_up = Clock::now();
  CHECK(replica_store->list("widgets") == store->list("widgets"));
  const auto converged = [](reconcile::LiveView& view) {
    return view.stats().stale_entries == 0 && view.verify().empty();
  };
  CHECK(livestate::test::eventually([&] { return converged(first) && converged(second); }, 30s, 10ms));
  const double convergence = seconds_since(caught_up);

  std::map<std::string, livestate::Json> primary;
  for (const auto& row : store->list("widgets")) primary.emplace(row.at("id").get<std::string>(), row);
  CHECK(first.entries() == primary);
  CHECK(second.entries() == primary);
  CHECK(first_changes.wrong().empty());
  CHECK(second_changes.wrong().empty());
  for (const auto& wrong : first_changes.wrong()) MESSAGE("first view: ", wrong);
  for (const auto& wrong : second_changes.wrong()) MESSAGE("second view: ", wrong);
  const auto a = first.stats();
  const auto b = second.stats();
  CHECK(a.count(reconcile::Anomaly::stale_read) > 0);
  CHECK(b.count(reconcile::Anomaly::stale_read) > 0);
  CHECK(b.count(reconcile::Anomaly::unknown_entry) > 0);
  MESSAGE("lagging replica (", apply_delay.count(), " s apply delay): ", writes, " writes, ", a.messages + b.messages,
          " messages to 2 views; stale entries at peak ", peaks.first(), " and ", peaks.second(), "; ",
          a.count(reconcile::Anomaly::stale_read) + b.count(reconcile::Anomaly::stale_read), " stale reads, ",
          a.reload_queries + b.reload_queries, " reload queries, ", a.resyncs + b.resyncs,
          " resyncs; replica caught up ", replica_lag, " s after the last write, views converged ", convergence,
          " s later (", seconds_since(lag_start), " s after the lag began)");
}
