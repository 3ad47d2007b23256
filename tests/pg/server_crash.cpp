// Server crash (reliability, item 1): `pg_ctl stop -m immediate` of the
// harness's server while two masters write and a live view and a durable
// consumer follow, then start it again. Every transaction that reported
// success is in the database with its message delivered to the durable
// consumer (at least once); every one that reported "not committed" left no
// trace; the view reconnects, resyncs and converges, never going back.
//
// Stops the server the other suites use: RUN_SERIAL, and skipped when the
// server is not the harness's own (server_control.hpp).

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
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
#include "server_control.hpp"

namespace {

using namespace std::chrono_literals;
namespace db = livestate::db;
namespace mq = livestate::mq;
namespace reconcile = livestate::reconcile;
using livestate::Filter;
using livestate::Json;
using livestate::RoutingKey;

// Outcomes of the masters' writes, by the resource id they wrote.
struct Ledger {
  std::mutex mutex;
  std::map<std::string, int> committed;  // id -> the value whose commit returned
  std::set<std::string> in_doubt;        // a commit that failed may or may not have happened
};

}  // namespace

TEST_CASE(
    "a server crash while masters write: committed writes and their messages survive, failed ones leave no trace, "
    "views converge") {
  const auto ctl = livestate::test::server_control();
  if (!ctl) {
    MESSAGE(std::string(livestate::test::skip_reason));
    return;
  }
  livestate::test::Server server(*ctl);
  REQUIRE(server.running());
  livestate::test::FreshSchema schema;
  // Commits durable when they return (the harness's server runs with
  // synchronous_commit off, which an immediate stop would make lose them).
  const auto& name = schema.name();
  const auto url = livestate::test::with_connection_parameters(
      livestate::test::test_server_url(),
      "options=-csearch_path%3D" + name + "%20-csynchronous_commit%3Don&application_name=" + name,
      "options='-csearch_path=" + name + " -csynchronous_commit=on' application_name=" + name);
  livestate::test::Executor executor;
  const auto options = livestate::test::fresh_channel();

  auto view_connector = mq::make_postgres_connector(livestate::test::connector_url(url), executor.get(), options);
  REQUIRE(view_connector->wait_listening(20s));
  auto view_store = db::Store::open(url, *view_connector);
  // The durable consumer's queue exists before anything is written.
  std::mutex queue_mutex;
  std::map<std::string, int> queued;  // id -> the highest value received
  auto durable = view_connector->start_consuming(
      [&](const RoutingKey& key, const Json& body) {
        std::lock_guard lock(queue_mutex);
        auto& value = queued[key[1]];
        value = std::max(value, body.at("state").at("n").get<int>());
      },
      Filter::parse("widgets.*.*"), mq::ConsumeOptions{"audit", {}});
  reconcile::ViewOptions view_options;
  view_options.type = "widgets";
  // The view runs on an executor declared after its store, so that a read
  // still running when the view is destroyed ends before the store goes.
  livestate::test::Executor view_executor;
  reconcile::LiveView view(*view_connector, *view_store, view_executor.get(), view_options);
  std::atomic<bool> went_back{false};
  std::map<std::string, std::int64_t> last_revision;
  view.on_change([&](const reconcile::Change& change) {
    if (change.kind == reconcile::ChangeKind::removed) return;
    auto& last = last_revision[change.id];
    const auto revision = change.after.at("_rev").get<std::int64_t>();
    if (revision <= last) went_back = true;
    last = revision;
  });
  view.start();

  Ledger ledger;
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  const auto master = [&](int index) {
    auto connector = mq::make_postgres_connector(livestate::test::connector_url(url), executor.get(), options);
    auto store = db::Store::open(url, *connector);
    for (int n = 1; !stop; ++n) {
      const std::string id = "m" + std::to_string(index) + "-" + std::to_string(n % 40);
      try {
        store->upsert_resource("widgets", id, {{"n", n}});
        std::lock_guard lock(ledger.mutex);
        ledger.committed[id] = n;
        ledger.in_doubt.erase(id);
      } catch (const livestate::Error&) {
        ++failures;
        std::lock_guard lock(ledger.mutex);
        ledger.in_doubt.insert(id);
        std::this_thread::sleep_for(20ms);
      }
    }
  };
  std::thread first(master, 1), second(master, 2);
  std::this_thread::sleep_for(500ms);
  REQUIRE(livestate::test::pg_ctl(*ctl, {"stop", "-m", "immediate", "-w", "-t", "20"}) == 0);
  std::this_thread::sleep_for(500ms);
  REQUIRE(server.start());
  std::this_thread::sleep_for(1500ms);  // the masters write again
  stop = true;
  first.join();
  second.join();

  CHECK(failures > 0);  // the crash was felt
  REQUIRE(view_connector->wait_listening(20s));
  CHECK(livestate::test::eventually([&] { return view.verify().empty(); }, 20s));
  CHECK_FALSE(went_back);
  CHECK(view.stats().count(reconcile::Anomaly::transport_reset) >= 1);

  // Every write whose commit returned is there, or a later one of its id;
  // and it reached the durable consumer.
  std::lock_guard lock(ledger.mutex);
  for (const auto& [id, n] : ledger.committed) {
    CAPTURE(id);
    const auto row = view_store->get_resource("widgets", id);
    REQUIRE(row.has_value());
    if (ledger.in_doubt.count(id) == 0) CHECK(row->at("state").at("n").get<int>() >= n);
  }
  CHECK(livestate::test::eventually(
      [&] {
        std::lock_guard queue_lock(queue_mutex);
        for (const auto& [id, n] : ledger.committed) {
          const auto found = queued.find(id);
          if (found == queued.end() || found->second < n) return false;
        }
        return true;
      },
      20s));
  MESSAGE(ledger.committed.size(), " ids written, ", failures.load(),
          " writes failed around the crash; view: ", view.stats().resyncs, " resyncs");
}
