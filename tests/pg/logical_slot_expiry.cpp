// A durable consumer of the logical transport whose slot the server
// invalidated (max_slot_wal_keep_size) while it was away: it is told its
// messages expired, and goes on live from then on.
//
// Sets max_slot_wal_keep_size on the harness's own server for a moment (and
// every slot there is subject to it meanwhile): RUN_SERIAL, and skipped when
// the server is not the harness's own (server_control.hpp).

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <thread>

#include <pqxx/pqxx>

#include "../unit/eventually.hpp"
#include "connector_fixtures.hpp"
#include "livestate/livestate.hpp"
#include "livestate/mq/postgres.hpp"
#include "pg_test_server.hpp"
#include "server_control.hpp"

namespace {

using namespace std::chrono_literals;
using livestate::Filter;
using livestate::Json;
using livestate::RoutingKey;
namespace mq = livestate::mq;

std::string slot_status(const std::string& channel) {
  pqxx::connection connection(livestate::test::test_server_url());
  pqxx::nontransaction work(connection);
  const auto rows = work.exec_params(
      "SELECT s.wal_status FROM pg_replication_slots s JOIN livestate_mq_slots r ON r.slot = s.slot_name::text "
      "WHERE r.channel = $1",
      channel);
  return rows.empty() ? "none" : rows[0][0].as<std::string>();
}

}  // namespace

TEST_CASE(
    "a slot invalidated by max_slot_wal_keep_size while its consumer was away: the consumer is told its "
    "messages expired, then gets what comes live") {
  const auto ctl = livestate::test::server_control();
  if (!ctl) {
    MESSAGE(std::string(livestate::test::skip_reason));
    return;
  }
  livestate::test::Executor executor;
  const auto options = livestate::test::fresh_channel();
  const auto url = livestate::test::with_connection_parameters(livestate::test::test_server_url(), "transport=logical",
                                                               "transport=logical");
  auto connector = mq::make_postgres_connector(url, executor.get(), options);
  livestate::test::Inbox first;
  auto consumer = connector->start_consuming(first.callback(), Filter::parse("kept.#"), "expiring");
  connector->produce(RoutingKey{"kept", "0"}, {{"n", 0}});
  REQUIRE(first.wait_for(1));
  consumer->stop_consuming();
  connector->produce(RoutingKey{"kept", "1"}, {{"n", 1}});  // lost with the slot

  // The server keeps at most 1 MB of WAL for a slot; three segments of WAL
  // later, at a checkpoint, it gives up on this one.
  const std::shared_ptr<void> reset(nullptr, [](void*) {
    livestate::test::run_on_server("ALTER SYSTEM RESET max_slot_wal_keep_size");
    livestate::test::run_on_server("SELECT pg_reload_conf()");
  });
  livestate::test::run_on_server("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'");
  livestate::test::run_on_server("SELECT pg_reload_conf()");
  REQUIRE(livestate::test::eventually(
      [&] {
        livestate::test::run_on_server("CREATE TEMP TABLE filler AS SELECT generate_series(1, 1000) AS n");
        livestate::test::run_on_server("SELECT pg_switch_wal()");
        livestate::test::run_on_server("CHECKPOINT");
        return slot_status(options.channel) == "lost";
      },
      30s, 10ms));

  livestate::test::Inbox back;
  consumer = connector->start_consuming(back.callback(), Filter::parse("kept.#"),
                                        mq::ConsumeOptions{"expiring", back.control()});
  REQUIRE(back.wait_for_event(mq::ControlKind::expired));
  connector->produce(RoutingKey{"kept", "2"}, {{"n", 2}});
  REQUIRE(back.wait_for(1));
  CHECK(back.messages().front().body["n"] == 2);
  CHECK(back.events().size() == 1);
  CHECK(slot_status(options.channel) == "reserved");
}
