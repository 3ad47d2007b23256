// Killed backends (reliability, item 2): the connections of a producing
// store, of the listener and of the store a view reloads through are all
// terminated while a transaction with messages is open. The transaction
// fails and leaves no trace (no row, no message); everything reconnects on its
// own; the view converges; no message is applied twice.

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <string>

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

}  // namespace

TEST_CASE("connections killed mid-transaction: the transaction leaves no trace, all reconnect, the view converges") {
  livestate::test::FreshSchema schema;
  livestate::test::Executor executor;
  const auto options = livestate::test::fresh_channel();
  auto connector = mq::make_postgres_connector(livestate::test::connector_url(schema.url()), executor.get(), options);
  REQUIRE(connector->wait_listening(10s));
  auto store = db::Store::open(schema.url(), *connector);
  auto view_store = db::Store::open(schema.url(), *connector);
  for (const char* id : {"a", "b"}) store->upsert_resource("widgets", id, {{"n", 0}});

  livestate::test::Inbox inbox;
  auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("#"));
  reconcile::ViewOptions view_options;
  view_options.type = "widgets";
  // The view runs on an executor declared after its store, so that a read
  // still running when the view is destroyed ends before the store goes.
  livestate::test::Executor view_executor;
  reconcile::LiveView view(*connector, *view_store, view_executor.get(), view_options);
  std::map<std::string, std::int64_t> last_revision;
  bool went_back = false;
  view.on_change([&](const reconcile::Change& change) {
    if (change.kind == reconcile::ChangeKind::removed) return;
    auto& last = last_revision[change.id];
    const auto revision = change.after.at("_rev").get<std::int64_t>();
    went_back = went_back || revision <= last;
    last = revision;
  });
  view.start();
  REQUIRE(livestate::test::eventually([&] { return view.ready() && view.verify().empty(); }, 15s));

  {
    auto tx = store->begin();
    tx.upsert_resource("widgets", "lost", {{"n", 1}});
    tx.upsert_resource("widgets", "a", {{"n", 1}});
    tx.produce(RoutingKey{"app", "lost"}, {{"n", 1}});
    // Every connection of this schema: the transaction's, the listener's,
    // the producer's and the view store's.
    CHECK(schema.terminate_connections() >= 3);
    CHECK_THROWS_AS(tx.commit(), livestate::Error);
  }
  // While the listener reconnects, changes go on.
  store->upsert_resource("widgets", "b", {{"n", 2}});
  store->upsert_resource("widgets", "c", {{"n", 3}});
  REQUIRE(connector->wait_listening(15s));
  store->upsert_resource("markers", "end", Json::object());
  REQUIRE(inbox.wait_for_key("markers.end.new", 15s));

  CHECK_FALSE(store->get_resource("widgets", "lost").has_value());
  CHECK(store->get_resource("widgets", "a")->at("state") == Json{{"n", 0}});
  const auto messages = inbox.messages();
  CHECK(std::none_of(messages.begin(), messages.end(), [](const auto& message) {
    return message.key.str() == "app.lost" || message.key.str() == "widgets.lost.new";
  }));
  CHECK(livestate::test::eventually([&] { return view.verify().empty(); }, 15s));
  CHECK(view.entries().size() == 3);
  CHECK_FALSE(went_back);
  CHECK(connector->postgres_stats().reconnects >= 1);
}
