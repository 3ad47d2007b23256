// What only the logical transport does, against the harness's server: commit
// positions on every message, bodies of any size inline, no WAL sender for a
// connector that only produces, durable consumers' slots as operators see
// them, and the server's settings and privileges named when they are missing.
// (The behaviour both transports share runs in the pg_logical_* suites.)

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/use_future.hpp>
#include <pqxx/pqxx>

#include "../unit/eventually.hpp"
#include "connector_fixtures.hpp"
#include "livestate/livestate.hpp"
#include "livestate/mq/postgres.hpp"
#include "pg_test_server.hpp"

namespace {

using namespace std::chrono_literals;
using livestate::Filter;
using livestate::Json;
using livestate::Message;
using livestate::RoutingKey;
namespace mq = livestate::mq;
namespace db = livestate::db;
using livestate::test::Executor;
using livestate::test::Inbox;

std::string logical(const std::string& url) {
  return livestate::test::with_connection_parameters(url, "transport=logical", "transport=logical");
}

std::unique_ptr<mq::PostgresConnector> connector_on(const std::string& url, boost::asio::any_io_executor executor,
                                                    const mq::PostgresOptions& options) {
  return mq::make_postgres_connector(logical(url), std::move(executor), options);
}

// A schema, a channel and an executor of the test's own.
struct Setup {
  livestate::test::FreshSchema schema;
  Executor executor;
  mq::PostgresOptions options = livestate::test::fresh_channel();

  std::unique_ptr<mq::PostgresConnector> connector() { return connector_on(schema.url(), executor.get(), options); }
  std::unique_ptr<mq::PostgresConnector> listening() {
    auto made = connector();
    REQUIRE(made->wait_listening(10s));
    return made;
  }
};

std::int64_t count(const std::string& sql) {
  pqxx::connection connection(livestate::test::test_server_url());
  return pqxx::nontransaction(connection).exec1(sql)[0].as<std::int64_t>();
}

// Whole messages, with their positions.
class Positions {
 public:
  mq::MessageCallback callback() {
    return [this](const Message& message) {
      std::lock_guard lock(m_mutex);
      m_messages.push_back(message);
    };
  }
  std::vector<Message> messages() {
    std::lock_guard lock(m_mutex);
    return m_messages;
  }

 private:
  std::mutex m_mutex;
  std::vector<Message> m_messages;
};

}  // namespace

TEST_CASE(
    "every message carries its commit position: one transaction's share it, and a consumer of two producers "
    "can put them in commit order") {
  Setup setup;
  const auto& schema = setup.schema;
  auto consumer_side = setup.listening();
  Positions positions;
  auto consumer = consumer_side->start_consuming(positions.callback(), Filter::parse("pair.#"));

  auto a = setup.connector();
  auto b = setup.connector();
  auto store_a = db::Store::open(logical(schema.url()), *a);
  auto store_b = db::Store::open(logical(schema.url()), *b);
  const auto wal_before = count("SELECT pg_current_wal_lsn() - '0/0'");
  for (int n = 0; n < 10; ++n) {
    auto& store = n % 2 == 0 ? store_a : store_b;
    auto tx = store->begin();
    tx.produce(RoutingKey{"pair", std::to_string(n), "first"}, {{"n", n}});
    tx.produce(RoutingKey{"pair", std::to_string(n), "second"}, {{"n", n}});
    tx.commit();
  }
  REQUIRE(livestate::test::eventually([&] { return positions.messages().size() == 20; }, 10s));
  const auto wal_after = count("SELECT pg_current_wal_lsn() - '0/0'");
  const auto got = positions.messages();
  for (std::size_t i = 0; i < got.size(); i += 2) {
    CAPTURE(i);
    REQUIRE(got[i].position.has_value());
    CHECK(got[i].key[2] == "first");
    CHECK(got[i + 1].position == got[i].position);  // one transaction
    CHECK(*got[i].position > static_cast<std::uint64_t>(wal_before));
    CHECK(*got[i].position < static_cast<std::uint64_t>(wal_after));
    if (i > 0) CHECK(*got[i].position > *got[i - 1].position);  // committed later
    CHECK(got[i].body["n"] == static_cast<int>(i / 2));         // and they arrive in commit order
  }
  // A waiter's message has its position too; equality is still key and body.
  auto next = consumer_side->async_wait_until_event(
      Filter::parse("last"), [] { return false; }, boost::asio::use_future);
  a->produce(RoutingKey{"last"}, {{"n", 99}});
  REQUIRE(next.wait_for(10s) == std::future_status::ready);
  const auto last = next.get();
  REQUIRE(last.has_value());
  CHECK(last->position > got.back().position);
  CHECK(*last == Message{RoutingKey{"last"}, {{"n", 99}}});
}

TEST_CASE("a body of a megabyte travels inline, in one logical message, and arrives intact") {
  Setup setup;
  auto connector = setup.listening();
  Inbox inbox;
  auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("#"));
  std::string text(1024 * 1024, 'x');
  for (std::size_t i = 0; i < text.size(); i += 97) text[i] = static_cast<char>('a' + i % 26);
  connector->produce(RoutingKey{"logs", "1"}, {{"text", text}});
  REQUIRE(inbox.wait_for(1));
  CHECK(inbox.messages()[0].body["text"] == text);
  CHECK(connector->postgres_stats().by_reference == 0);
  // No table of bodies was needed.
  CHECK(count("SELECT count(*) FROM pg_tables WHERE schemaname = '" + setup.schema.name() + "'") == 0);
}

TEST_CASE(
    "a connector that only produces holds no WAL sender and no slot; its first consumer makes one, and it "
    "goes with the connector") {
  Executor executor;
  const auto options = livestate::test::fresh_channel();
  auto connector = connector_on(livestate::test::test_server_url(), executor.get(), options);
  connector->produce(RoutingKey{"a"}, Json::object());
  const std::string slots = "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'livestate_live_" +
                            connector->origin() + "%'";
  CHECK(count(slots) == 0);
  Inbox inbox;
  auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("#"));
  REQUIRE(connector->wait_listening(10s));
  CHECK(count(slots + " AND temporary") == 1);
  consumer.reset();
  connector.reset();
  CHECK(livestate::test::eventually([&] { return count(slots) == 0; }, 10s));
}

TEST_CASE(
    "a durable consumer's slot is listed with its name, channel, filter and the WAL it keeps; dropping it "
    "forgets the name, and the next consumer starts afresh") {
  Setup setup;
  const auto& [schema, executor, options] = setup;
  auto connector = setup.connector();
  Inbox first;
  auto consumer = connector->start_consuming(first.callback(), Filter::parse("builds.#"), "audit");
  for (int n = 0; n < 50; ++n) connector->produce(RoutingKey{"builds", std::to_string(n)}, {{"n", n}});
  REQUIRE(first.wait_for(50));

  const auto ours = [&] {
    std::vector<mq::LogicalSlot> found;
    for (auto& slot : mq::list_logical_slots(logical(schema.url()))) {
      if (slot.channel == options.channel) found.push_back(std::move(slot));
    }
    return found;
  };
  auto slots = ours();
  REQUIRE(slots.size() == 1);
  CHECK(slots[0].name == "audit");
  CHECK(slots[0].filter == "builds.#");
  CHECK_FALSE(slots[0].temporary);
  CHECK(slots[0].active_pid.has_value());
  CHECK(slots[0].slot.starts_with("livestate_audit_"));
  CHECK(slots[0].wal_status == "reserved");
  CHECK(slots[0].retained_bytes > 0);
  CHECK_THROWS_AS(mq::drop_logical_slot(logical(schema.url()), "audit", options.channel),
                  livestate::PersistentNameInUse);

  consumer->stop_consuming();
  for (int n = 50; n < 60; ++n) connector->produce(RoutingKey{"builds", std::to_string(n)}, {{"n", n}});
  CHECK(livestate::test::eventually([&] { return !ours().front().active_pid; }, 10s));
  CHECK(mq::drop_logical_slot(logical(schema.url()), "audit", options.channel));
  CHECK(ours().empty());
  CHECK_FALSE(mq::drop_logical_slot(logical(schema.url()), "audit", options.channel));

  // What was kept for it went with its slot: a new consumer of the name gets
  // only what comes from now on, and may have another filter.
  Inbox second;
  consumer = connector->start_consuming(second.callback(), Filter::parse("#"), "audit");
  connector->produce(RoutingKey{"builds", "new"}, {{"n", 60}});
  REQUIRE(second.wait_for(1));
  std::this_thread::sleep_for(300ms);
  CHECK(second.messages().size() == 1);
  CHECK(second.messages()[0].body["n"] == 60);
}

TEST_CASE(
    "a durable consumer stopped and started again at once, in the same process, waits for the server to give "
    "its slot back rather than being refused, and misses nothing") {
  Setup setup;
  auto producer = setup.connector();
  auto connector = setup.connector();
  Inbox inbox;
  int produced = 0;
  for (int round = 0; round < 5; ++round) {
    auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("r.#"), "restarted");
    producer->produce(RoutingKey{"r", std::to_string(produced)}, {{"n", produced}});
    ++produced;
    REQUIRE(inbox.wait_for(static_cast<std::size_t>(produced)));
    consumer->stop_consuming();
    producer->produce(RoutingKey{"r", std::to_string(produced)}, {{"n", produced}});  // while stopped
    ++produced;
  }
  auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("r.#"), "restarted");
  // (Counting is not enough: repeats count too.)
  REQUIRE(inbox.wait_for_key("r." + std::to_string(produced - 1)));
  // At least once, in order: a repeat is never newer than what came first.
  int next = 0;
  std::string got;
  for (const auto& message : inbox.messages()) {
    const int n = message.body["n"].get<int>();
    got += std::to_string(n) + " ";
    CHECK(n <= next);
    if (n == next) ++next;
  }
  INFO("the consumers got n = ", got);
  CHECK(next == produced);
}

TEST_CASE(
    "a WAL sender replaying a large transaction the stream doesn't carry is not taken for a lost one: it answers "
    "at its keepalive interval, and the stream waits for that") {
  Setup setup;
  // Probes far quicker than the replay below takes, so that a stream that
  // expected an answer within them would reconnect (and a durable one would
  // replay the transaction again, for ever).
  setup.options.probe_interval = 100ms;
  setup.options.probe_timeout = 200ms;
  auto connector = setup.listening();
  Inbox inbox;
  auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("busy.#"));
  connector->produce(RoutingKey{"busy", "before"}, Json::object());
  REQUIRE(inbox.wait_for(1, 10s));

  // Two million row changes of a table no publication holds: pgoutput skips
  // them one by one as the WAL sender replays the transaction at its commit,
  // for a second or more, and the WAL sender reads what the stream sends it
  // only every wal_sender_timeout / 2 meanwhile.
  pqxx::connection connection(setup.schema.url());
  pqxx::nontransaction(connection).exec(
      "CREATE TABLE busy (n INTEGER); INSERT INTO busy SELECT generate_series(1, 2000000)");
  connector->produce(RoutingKey{"busy", "after"}, Json::object());
  REQUIRE(inbox.wait_for(2, 60s));
  const auto stats = connector->postgres_stats();
  INFO("last reconnect: ", stats.last_reconnect_reason);
  CHECK(stats.reconnects == 0);
}

TEST_CASE(
    "a role without the REPLICATION privilege: a durable consumer is refused naming it, and the live stream "
    "says why it can't listen") {
  const auto role = livestate::test::random_name("noreplication");
  livestate::test::run_on_server("CREATE ROLE " + role + " LOGIN");
  const std::shared_ptr<void> drop_role(nullptr, [&](void*) {
    try {
      livestate::test::run_on_server("DROP ROLE IF EXISTS " + role);
    } catch (...) {
    }
  });
  std::string url = livestate::test::test_server_url();
  url.replace(url.find("postgres@"), std::string("postgres@").size(), role + "@");
  Executor executor;
  auto options = livestate::test::fresh_channel();
  auto connector = connector_on(url, executor.get(), options);
  Inbox inbox;
  CHECK_THROWS_WITH_AS(connector->start_consuming(inbox.callback(), Filter::parse("#"), "denied"),
                       doctest::Contains("REPLICATION"), mq::UnsupportedServer);
  CHECK_FALSE(connector->wait_listening(2s));
  const auto reason = connector->postgres_stats().last_reconnect_reason;
  INFO("reason: ", reason);
  CHECK(reason.find("replication") != std::string::npos);
  // Producing needs no privilege.
  CHECK_NOTHROW(connector->produce(RoutingKey{"allowed"}, Json::object()));
  connector.reset();
}

TEST_CASE(
    "the transport parameter works in a conninfo string for the store and the connector; an unknown "
    "transport is refused") {
  livestate::test::FreshSchema schema;
  // postgresql://postgres@127.0.0.1:PORT/livestate_test as conninfo words.
  const std::string url = livestate::test::test_server_url();
  const auto host_at = url.find('@') + 1;
  const auto port_at = url.find(':', host_at) + 1;
  const auto database_at = url.find('/', port_at) + 1;
  const std::string conninfo = "host=127.0.0.1 port=" + url.substr(port_at, database_at - 1 - port_at) +
                               " user=postgres dbname=" + url.substr(database_at) +
                               " options='-csearch_path=" + schema.name() + "' transport=logical";
  Executor executor;
  const auto options = livestate::test::fresh_channel();
  auto connector = mq::make_postgres_connector(conninfo, executor.get(), options);
  REQUIRE(connector->wait_listening(10s));
  auto store = db::Store::open(conninfo, *connector);
  Inbox inbox;
  auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("widgets.#"));
  store->upsert_resource("widgets", "1", {{"size", 1}});
  REQUIRE(inbox.wait_for(1));
  CHECK(connector->postgres_stats().by_reference == 0);

  CHECK_THROWS_WITH_AS(mq::make_postgres_connector(url + "?transport=carrier-pigeon", executor.get(), options),
                       doctest::Contains("unknown transport 'carrier-pigeon'"), livestate::UnsupportedUrl);
}
