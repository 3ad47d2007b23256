// Live views over the PostgreSQL connector and a PostgreSQL store: masters
// in one process, each with its own connector and store (as on several
// hosts), a view on a connector of its own; convergence through claim races
// and through a killed listening connection.

#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "../unit/eventually.hpp"
#include "connector_fixtures.hpp"
#include "livestate/livestate.hpp"
#include "pg_test_server.hpp"

namespace {

using namespace std::chrono_literals;
namespace db = livestate::db;
namespace mq = livestate::mq;
namespace reconcile = livestate::reconcile;
using livestate::test::Executor;
using reconcile::Anomaly;

using livestate::test::fresh_channel;

bool eventually(const std::function<bool()>& condition) {
  return livestate::test::eventually(condition, std::chrono::seconds(15));
}

struct Master {
  Master(const std::string& url, boost::asio::any_io_executor executor, const mq::PostgresOptions& options,
         const std::string& name)
      : connector(mq::make_postgres_connector(livestate::test::connector_url(url), std::move(executor), options)),
        store(db::Store::open(url, *connector)),
        id(store->master_active(name)) {}
  std::unique_ptr<mq::PostgresConnector> connector;
  std::unique_ptr<db::Store> store;
  std::int64_t id;
};

}  // namespace

TEST_CASE("a view of build requests converges while two masters race to claim and complete them") {
  livestate::test::FreshSchema schema;
  Executor executor;
  const auto options = fresh_channel();
  Master a(schema.url(), executor.get(), options, "a");
  Master b(schema.url(), executor.get(), options, "b");
  const auto builder = a.store->builder_started("builder", a.id);

  auto view_connector = mq::make_postgres_connector(livestate::test::connector_url(schema.url()), executor.get(),
                                                    options);
  REQUIRE(view_connector->wait_listening(10s));
  auto view_store = db::Store::open(schema.url(), *view_connector);
  // The view runs on an executor declared after its store, so that a read
  // still running when the view is destroyed ends before the store goes.
  Executor view_executor;
  reconcile::LiveView view(*view_connector, *view_store, view_executor.get(), {.type = "buildrequests"});
  view.start();

  auto work = [&](Master& master, int seed) {
    for (int i = 0; i < 30; ++i) {
      db::NewBuildset buildset;
      buildset.builderids = {builder};
      const auto request = master.store->add_buildset(buildset).buildrequestids.begin()->second;
      // Both try to claim the latest requests; one wins each.
      for (Master* claimer : {&a, &b}) {
        try {
          claimer->store->claim_buildrequests(std::vector<std::int64_t>{request}, claimer->id);
        } catch (const db::AlreadyClaimed&) {
        }
      }
      const auto claimed_by = master.store->get_buildrequest(request)->at("claimed_by_masterid").get<std::int64_t>();
      Master& winner = claimed_by == a.id ? a : b;
      if ((i + seed) % 3 == 0) {
        winner.store->unclaim_buildrequests(std::vector<std::int64_t>{request}, winner.id);
      } else {
        winner.store->complete_buildrequests(std::vector<std::int64_t>{request}, 0, winner.id);
      }
    }
  };
  std::thread first([&] { work(a, 0); });
  std::thread second([&] { work(b, 1); });
  first.join();
  second.join();

  CHECK(eventually([&] { return view.ready() && view.verify().empty(); }));
  CHECK(view.entries().size() == 60);
  const auto stats = view.stats();
  CHECK(stats.count(Anomaly::stream_gap) == 0);
  CHECK(stats.count(Anomaly::transport_reset) == 0);
  // Through one transport, in commit order, nothing needs a reload.
  CHECK(stats.reload_queries == 0);
}

TEST_CASE("a view whose listening connection is killed resyncs on reconnect and finds what it missed") {
  livestate::test::FreshSchema schema;
  Executor executor;
  const auto options = fresh_channel();
  Master master(schema.url(), executor.get(), options, "a");
  master.store->upsert_resource("widgets", "a", {{"size", 1}});
  master.store->upsert_resource("widgets", "b", {{"size", 1}});

  auto view_connector = mq::make_postgres_connector(livestate::test::connector_url(schema.url()), executor.get(),
                                                    options);
  REQUIRE(view_connector->wait_listening(10s));
  auto view_store = db::Store::open(schema.url(), *view_connector);
  Executor view_executor;  // after the store, as above
  reconcile::LiveView view(*view_connector, *view_store, view_executor.get(), {.type = "widgets"});
  view.start();
  REQUIRE(eventually([&] { return view.ready() && view.verify().empty(); }));

  {
    pqxx::connection admin(livestate::test::test_server_url());
    pqxx::nontransaction kill(admin);
    // Every listener on the channel: the master's and the view's (on logical
    // decoding, the view's stream: a connector that only produces has none).
    const bool logical = livestate::test::logical_transport();
    const auto killed = kill.exec("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE " +
                                  livestate::test::listening_backend(*view_connector, options.channel));
    REQUIRE(killed.size() == (logical ? 1U : 2U));
  }
  // While it is away: changes it can't hear.
  master.store->delete_resource("widgets", "a");
  master.store->upsert_resource("widgets", "b", {{"size", 2}});
  master.store->upsert_resource("widgets", "c", {{"size", 3}});

  CHECK(eventually([&] { return view.stats().count(Anomaly::transport_reset) >= 1; }));
  CHECK(eventually([&] { return view.verify().empty(); }));
  CHECK(view.entries().size() == 2);
  CHECK(view.stats().resyncs >= 2);
}

TEST_CASE("a view and its store destroyed while the view's snapshot query is blocked: the query ends on its own") {
  livestate::test::FreshSchema schema;
  auto connector = mq::make_simple_mq();
  auto store = db::Store::open(schema.url(), *connector);
  (void)store->master_active("m");
  // Another session holds the table, so that the view's snapshot blocks in
  // its SELECT on an executor thread.
  pqxx::connection locker(schema.url());
  pqxx::work hold(locker);
  hold.exec("LOCK TABLE masters IN ACCESS EXCLUSIVE MODE");
  Executor executor;  // declared after the store: the old pattern this must keep safe
  auto view = std::make_unique<reconcile::LiveView>(*connector, *store, executor.get(),
                                                    reconcile::ViewOptions{.type = "masters"});
  view->start();
  const bool blocked = eventually([&] {
    pqxx::connection observer(livestate::test::test_server_url());
    pqxx::nontransaction query(observer);
    return query
               .exec1("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = '" +
                      schema.name() + "'")[0]
               .as<int>() > 0;
  });
  REQUIRE(blocked);
  const auto started = std::chrono::steady_clock::now();
  view.reset();   // returns at once, the query still blocked
  store.reset();  // the Store object goes; the query keeps the connection it uses
  CHECK(std::chrono::steady_clock::now() - started < 5s);
  hold.commit();  // the query ends, on a connection that outlived its Store object
  std::this_thread::sleep_for(200ms);
}
