// The PostgreSQL connector against the harness's real server, on the suite's
// transport (pg_connector: LISTEN/NOTIFY; pg_logical_connector: logical
// decoding). What only one transport does is checked on that one.

#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <pqxx/pqxx>

#include "connector_fixtures.hpp"
#include "livestate/livestate.hpp"
#include "livestate/mq/postgres.hpp"
#include "pg_test_server.hpp"
#include "stalled_backend.hpp"

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
using livestate::test::test_server_url;

using livestate::test::fresh_channel;
using livestate::test::logical_transport;

std::unique_ptr<mq::PostgresConnector> listening(boost::asio::any_io_executor executor,
                                                 const mq::PostgresOptions& options,
                                                 const std::string& url = test_server_url()) {
  auto connector = mq::make_postgres_connector(livestate::test::connector_url(url), std::move(executor), options);
  REQUIRE(connector->wait_listening(10s));
  return connector;
}

using livestate::test::send_raw;

// The one control event so far is a gap of `missed` messages of `origin`.
void check_one_gap(Inbox& inbox, const mq::PostgresConnector& connector, const std::string& origin,
                   std::uint64_t missed) {
  REQUIRE(inbox.wait_for_event(mq::ControlKind::gap));
  const auto events = inbox.events();
  REQUIRE(events.size() == 1);
  CHECK(events[0].origin == origin);
  CHECK(events[0].missed == missed);
  CHECK(connector.postgres_stats().gaps == 1);
}

}  // namespace

TEST_CASE("two connectors exchange messages through the server, each consumer by its filter") {
  Executor executor;
  const auto options = fresh_channel();
  auto a = listening(executor.get(), options);
  auto b = listening(executor.get(), options);
  Inbox claims, everything;
  auto c1 = b->start_consuming(claims.callback(), Filter::parse("buildrequests.*.claimed"));
  auto c2 = a->start_consuming(everything.callback(), Filter::parse("#"));

  a->produce(RoutingKey{"buildrequests", "1", "new"}, {{"buildrequestid", 1}});
  a->produce(RoutingKey{"buildrequests", "1", "claimed"}, {{"buildrequestid", 1}, {"claimed_by_masterid", 7}});
  b->produce(RoutingKey{"buildrequests", "2", "claimed"}, {{"buildrequestid", 2}});

  REQUIRE(claims.wait_for(2));
  REQUIRE(everything.wait_for(3));
  const auto got = claims.messages();
  CHECK(got[0].key.str() == "buildrequests.1.claimed");
  CHECK(got[0].body["claimed_by_masterid"] == 7);
  CHECK(got[1].key.str() == "buildrequests.2.claimed");
  CHECK(everything.messages()[0].key.str() == "buildrequests.1.new");
  CHECK(a->stats().produced == 2);
  CHECK(b->postgres_stats().received >= 3);
}

TEST_CASE("a message produced by another process arrives, all of them in the producer's order") {
  Executor executor;
  const auto options = fresh_channel();
  auto consumer_side = listening(executor.get(), options);
  Inbox inbox;
  auto consumer = consumer_side->start_consuming(inbox.callback(), Filter::parse("builds.*.update"));

  constexpr int count = 500;
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int status = 0;
    try {
      boost::asio::io_context io;
      auto producer = mq::make_postgres_connector(livestate::test::connector_url(test_server_url()), io.get_executor(),
                                                  options);
      for (int i = 0; i < count; ++i) producer->produce(RoutingKey{"builds", "1", "update"}, {{"n", i}});
    } catch (...) {
      status = 1;
    }
    _exit(status);
  }
  int status = -1;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(inbox.wait_for(count));
  const auto got = inbox.messages();
  for (int i = 0; i < count; ++i) CHECK(got[static_cast<std::size_t>(i)].body["n"] == i);
  CHECK(inbox.events().empty());
}

TEST_CASE(
    "a 100 kB body arrives intact, in order with the messages around it (by reference on NOTIFY, inline on "
    "logical messages)") {
  Executor executor;
  const auto options = fresh_channel();
  auto connector = listening(executor.get(), options);
  Inbox inbox;
  auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("logs.#"));
  std::string text(100 * 1024, 'x');
  for (std::size_t i = 0; i < text.size(); i += 101) text[i] = static_cast<char>('a' + i % 26);
  connector->produce(RoutingKey{"logs", "1", "before"}, {{"n", 1}});
  connector->produce(RoutingKey{"logs", "1", "append"}, {{"text", text}});
  connector->produce(RoutingKey{"logs", "1", "after"}, {{"n", 3}});
  REQUIRE(inbox.wait_for(3));
  const auto got = inbox.messages();
  CHECK(got[0].key.str() == "logs.1.before");
  CHECK(got[1].body["text"] == text);
  CHECK(got[2].key.str() == "logs.1.after");
  CHECK(connector->postgres_stats().by_reference == (logical_transport() ? 0 : 1));
}

TEST_CASE("ten thousand consumers on one connector each get exactly their messages") {
  Executor executor;
  const auto options = fresh_channel();
  auto connector = listening(executor.get(), options);
  constexpr int consumers = 10000;
  std::vector<std::atomic<int>> counts(consumers);
  std::vector<std::unique_ptr<mq::Consumer>> handles;
  handles.reserve(consumers);
  for (int i = 0; i < consumers; ++i) {
    handles.push_back(connector->start_consuming(
        [&counts, i](const RoutingKey&, const Json&) { ++counts[static_cast<std::size_t>(i)]; },
        Filter{"buildrequests", std::to_string(i), std::nullopt}));
  }
  Inbox last;
  auto marker = connector->start_consuming(last.callback(), Filter::parse("done"));
  for (int i = 0; i < consumers; i += 97)
    connector->produce(RoutingKey{"buildrequests", std::to_string(i), "new"}, Json::object());
  connector->produce(RoutingKey{"done"}, Json::object());
  REQUIRE(last.wait_for(1));
  for (int i = 0; i < consumers; ++i) CHECK(counts[static_cast<std::size_t>(i)] == (i % 97 == 0 ? 1 : 0));
}

TEST_CASE("garbage on the channel is counted and dropped, and the valid messages around it all arrive") {
  Executor executor;
  const auto options = fresh_channel();
  auto connector = listening(executor.get(), options);
  Inbox inbox;
  auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("#"));
  const std::vector<std::string> garbage{
      "not json at all",
      "{\"v\":2,\"m\":[]}",
      "{\"v\":1,\"m\":[{\"k\":[\"caf\xc3\xa9\"],\"b\":{}}]}",
      "{\"v\":1,\"m\":[{\"k\":\"builds.1.new\",\"b\":{}}]}",
      "[1,2,3]",
      std::string(5000, '['),
      "{\"v\":1,\"m\":[{\"k\":[\"x\"],\"r\":123456789}]}",  // a reference to a row that isn't there
      "{\"v\":1,\"m\":[{\"k\":[\"a\"],\"b\":{},\"s\":1e400}]}",
  };
  int valid = 0;
  for (const auto& payload : garbage) {
    connector->produce(RoutingKey{"valid", std::to_string(valid++)}, Json::object());
    send_raw(options.channel, payload);
  }
  // The smallest valid foreign payload, as docs/WIRE.md shows it for psql.
  send_raw(options.channel, R"({"v":1,"m":[{"k":["builds","7","finished"],"b":{"buildid":7}}]})");
  REQUIRE(inbox.wait_for(static_cast<std::size_t>(valid) + 1));
  const auto got = inbox.messages();
  for (int i = 0; i < valid; ++i) CHECK(got[static_cast<std::size_t>(i)].key.str() == "valid." + std::to_string(i));
  CHECK(got.back().key.str() == "builds.7.finished");
  CHECK(got.back().body == Json{{"buildid", 7}});
  const auto stats = connector->postgres_stats();
  CHECK(stats.malformed == garbage.size() - 1);
  CHECK(stats.missing_references == 1);
}

TEST_CASE("a listener whose backend is terminated reconnects and tells its consumers they may have missed messages") {
  Executor executor;
  auto options = fresh_channel();
  auto connector = listening(executor.get(), options);
  Inbox inbox;
  mq::ConsumeOptions consume;
  consume.on_control = inbox.control();
  auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("#"), consume);
  connector->produce(RoutingKey{"before"}, Json::object());
  REQUIRE(inbox.wait_for(1));

  {
    pqxx::connection admin(test_server_url());
    pqxx::nontransaction work(admin);
    const auto terminated = work.exec(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = 'livestate-listener' "
        "AND " +
        livestate::test::listening_backend(*connector, options.channel));
    REQUIRE(terminated.size() == 1);
  }
  REQUIRE(inbox.wait_for_event(mq::ControlKind::reconnected));
  REQUIRE(connector->wait_listening(10s));
  connector->produce(RoutingKey{"after"}, Json::object());
  REQUIRE(inbox.wait_for(2));
  CHECK(inbox.messages().back().key.str() == "after");
  const auto stats = connector->postgres_stats();
  CHECK(stats.reconnects == 1);
  CHECK_FALSE(stats.last_reconnect_reason.empty());
}

TEST_CASE("producing to a server that is not there fails with a clear error naming it, without its password") {
  Executor executor;
  auto options = fresh_channel();
  options.connect_timeout = std::chrono::seconds(2);
  auto connector = mq::make_postgres_connector(
      livestate::test::connector_url("postgresql://someone:s3cret@127.0.0.1:1/nowhere"), executor.get(), options);
  // Nothing could have left: certainly not sent.
  try {
    connector->produce(RoutingKey{"a"}, Json::object());
    FAIL("produce should have failed");
  } catch (const mq::NotSent& error) {
    const std::string what = error.what();
    CHECK(what.find("127.0.0.1:1") != std::string::npos);
    CHECK(what.find("s3cret") == std::string::npos);
  }
  CHECK_FALSE(connector->postgres_stats().listening);
}

TEST_CASE(
    "a connector whose tables were dropped makes them again: the next produce and the next store transaction "
    "succeed" *
    doctest::skip(logical_transport())) {
  livestate::test::FreshSchema schema;
  Executor executor;
  const auto options = fresh_channel();
  auto connector = listening(executor.get(), options, schema.url());
  auto store = db::Store::open(schema.url(), *connector);
  Inbox inbox;
  auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("#"));
  connector->produce(RoutingKey{"before"}, Json::object());
  store->upsert_resource("markers", "1", Json::object());
  REQUIRE(inbox.wait_for(2));

  // As a database restored from a dump taken before the connector first ran.
  livestate::test::run_on_server("DROP TABLE " + schema.name() + ".livestate_mq_queued, " + schema.name() +
                                 ".livestate_mq_queues, " + schema.name() + ".livestate_mq_bodies");
  REQUIRE_NOTHROW(connector->produce(RoutingKey{"after"}, Json::object()));
  REQUIRE(inbox.wait_for_key("after"));

  livestate::test::run_on_server("DROP TABLE " + schema.name() + ".livestate_mq_queued, " + schema.name() +
                                 ".livestate_mq_queues, " + schema.name() + ".livestate_mq_bodies");
  // The store's transaction fails once (its send finds no table), and says so;
  // the one after it finds the tables made again.
  CHECK_THROWS_AS(store->upsert_resource("markers", "2", Json::object()), livestate::Error);
  CHECK_FALSE(store->get_resource("markers", "2").has_value());  // rolled back with its message
  REQUIRE_NOTHROW(store->upsert_resource("markers", "3", Json::object()));
  REQUIRE(inbox.wait_for_key("markers.3.new"));
  CHECK(connector->postgres_stats().gaps == 0);
}

TEST_CASE(
    "a store paired with the connector sends its messages in its transactions: delivered at commit, never after "
    "rollback") {
  livestate::test::FreshSchema schema;
  Executor executor;
  const auto options = fresh_channel();
  auto connector = listening(executor.get(), options, schema.url());
  db::StoreOptions store_options;
  // The connector's URL: the store takes its transport parameter too.
  auto store = db::Store::open(livestate::test::connector_url(schema.url()), *connector, store_options);
  Inbox inbox;
  std::vector<bool> claimed_on_reload;
  std::mutex reload_mutex;
  auto reloader = connector->start_consuming(
      [&](const RoutingKey&, const Json& body) {
        const bool claimed =
            store->get_buildrequest(body["buildrequestid"].get<std::int64_t>())->at("claimed").get<bool>();
        std::lock_guard lock(reload_mutex);
        claimed_on_reload.push_back(claimed);
      },
      Filter::parse("buildrequests.*.claimed"));
  auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("#"));

  const auto master = store->master_active("m");
  db::NewBuildset buildset;
  buildset.builderids = {store->builder_started("b", master)};
  const auto request = store->add_buildset(buildset).buildrequestids.begin()->second;
  {
    auto tx = store->begin();
    tx.claim_buildrequests(std::vector<std::int64_t>{request}, master);
    tx.produce(RoutingKey{"app", "rolled", "back"}, Json::object());
  }  // rolled back
  store->claim_buildrequests(std::vector<std::int64_t>{request}, master);
  store->upsert_resource("markers", "end", Json::object());
  REQUIRE(inbox.wait_for_key("markers.end.new"));
  const auto got = inbox.messages();
  std::vector<std::string> keys;
  for (const auto& message : got) keys.push_back(message.key.str());
  CHECK(std::find(keys.begin(), keys.end(), "app.rolled.back") == keys.end());
  CHECK(keys.back() == "markers.end.new");
  CHECK(std::count(keys.begin(), keys.end(), "buildrequests." + std::to_string(request) + ".claimed") == 1);
  // The reloading consumer runs on a strand of its own, beside the inbox:
  // its reload may still be under way.
  const auto reloads = [&] {
    std::lock_guard lock(reload_mutex);
    return claimed_on_reload.size();
  };
  for (int i = 0; i < 200 && reloads() == 0; ++i) std::this_thread::sleep_for(50ms);
  std::lock_guard lock(reload_mutex);
  CHECK(claimed_on_reload == std::vector<bool>{true});
  CHECK(connector->postgres_stats().gaps == 0);
}

TEST_CASE(
    "a change whose large body goes out on three routing keys stores the body once, and all three arrive intact, "
    "fetched one after another") {
  livestate::test::FreshSchema schema;
  Executor executor;
  const auto options = fresh_channel();
  auto connector = listening(executor.get(), options, schema.url());
  auto store = db::Store::open(schema.url(), *connector);
  Inbox inbox;

  const auto master = store->master_active("m");
  db::NewBuildset buildset;
  buildset.builderids = {store->builder_started("b", master)};
  buildset.properties = {{"log", std::string(20'000, 'p') + " \"quoted\" \\ é"}};
  const auto request = store->add_buildset(buildset).buildrequestids.begin()->second;
  // Logical messages carry the body inline: nothing is stored.
  const auto stored_bodies = [&] {
    if (logical_transport()) return 0;
    pqxx::connection connection(schema.url());
    pqxx::nontransaction work(connection);
    return work.exec("SELECT count(*) FROM livestate_mq_bodies")[0][0].as<int>();
  };
  const int stored_before = stored_bodies();
  std::vector<std::unique_ptr<livestate::mq::Consumer>> consumers;
  for (const auto* filter : {"buildsets.*.builders.*.buildrequests.*.claimed", "buildrequests.*.claimed",
                             "builders.*.buildrequests.*.claimed"}) {
    consumers.push_back(connector->start_consuming(inbox.callback(), Filter::parse(filter)));
  }
  store->claim_buildrequests(std::vector<std::int64_t>{request}, master);

  REQUIRE(inbox.wait_for(3));
  std::this_thread::sleep_for(200ms);  // nothing more
  REQUIRE(inbox.messages().size() == 3);
  for (const auto& message : inbox.messages()) {
    CAPTURE(message.key.str());
    CHECK(message.body["buildrequestid"] == request);
    CHECK(message.body["properties"] == buildset.properties);
    CHECK(message.body["claimed"] == true);
  }
  CHECK(stored_bodies() == stored_before + (logical_transport() ? 0 : 1));
  // Each message fetched its body in turn, on the one listening connection,
  // which was never lost.
  CHECK(connector->postgres_stats().missing_references == 0);
  CHECK(connector->postgres_stats().reconnects == 0);
}

// Logical decoding loses nothing while connected: sequences are not checked there.
TEST_CASE("a hole in a producer's sequence reaches consumers as a gap event, in order with the messages" *
          doctest::skip(logical_transport())) {
  Executor executor;
  const auto options = fresh_channel();
  auto connector = listening(executor.get(), options);
  Inbox inbox;
  mq::ConsumeOptions consume;
  consume.on_control = inbox.control();
  auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("#"), consume);
  send_raw(options.channel, R"({"v":1,"o":"master-x","m":[{"s":1,"k":["a"],"b":{}},{"s":2,"k":["b"],"b":{}}]})");
  send_raw(options.channel, R"({"v":1,"o":"master-x","m":[{"s":5,"k":["c"],"b":{}}]})");
  REQUIRE(inbox.wait_for(3));
  check_one_gap(inbox, *connector, "master-x", 2);
}

TEST_CASE(
    "origins silent for forget_origins_after are forgotten but their sequences kept: a quiet producer comes "
    "back without a gap, one that skipped counts what it skipped, a stranger counts as one" *
    doctest::skip(logical_transport())) {
  Executor executor;
  auto options = fresh_channel();
  options.forget_origins_after = 1s;
  auto connector = listening(executor.get(), options);
  Inbox inbox;
  mq::ConsumeOptions consume;
  consume.on_control = inbox.control();
  auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("#"), consume);
  // Just after LISTEN, an origin past its first message started before us.
  send_raw(options.channel, R"({"v":1,"o":"early","m":[{"s":5,"k":["a"],"b":{}}]})");
  send_raw(options.channel, R"({"v":1,"o":"master-x","m":[{"s":1,"k":["b"],"b":{}},{"s":2,"k":["c"],"b":{}}]})");
  REQUIRE(inbox.wait_for(3));
  CHECK(connector->postgres_stats().origins == 2);

  std::this_thread::sleep_for(1200ms);
  send_raw(options.channel, R"({"v":1,"o":"master-y","m":[{"s":1,"k":["d"],"b":{}}]})");
  REQUIRE(inbox.wait_for(4));
  CHECK(connector->postgres_stats().origins == 1);  // early and master-x forgotten
  CHECK(inbox.events().empty());

  // master-x was only quiet (an idle master): its next message is no gap.
  send_raw(options.channel, R"({"v":1,"o":"master-x","m":[{"s":3,"k":["e"],"b":{}}]})");
  send_raw(options.channel, R"({"v":1,"o":"master-z","m":[{"s":1,"k":["f"],"b":{}}]})");
  REQUIRE(inbox.wait_for(6));
  CHECK(inbox.events().empty());
  CHECK(connector->postgres_stats().origins == 3);

  // early skipped 6 to 8 while forgotten: exactly those are missing.
  send_raw(options.channel, R"({"v":1,"o":"early","m":[{"s":9,"k":["g"],"b":{}}]})");
  REQUIRE(inbox.wait_for(7));
  check_one_gap(inbox, *connector, "early", 3);

  // Never heard, past its first message, long after LISTEN: maybe lost.
  send_raw(options.channel, R"({"v":1,"o":"ghost","m":[{"s":4,"k":["h"],"b":{}}]})");
  REQUIRE(inbox.wait_for(8));
  REQUIRE(inbox.events().size() == 2);
  CHECK(inbox.events()[1].origin == "ghost");
  CHECK(inbox.events()[1].missed == 3);
}

TEST_CASE(
    "consumers that fall behind lose messages past the bound, counted, and are told so; the listener keeps reading") {
  // Two threads: the listener reads on one while a consumer blocks the other.
  struct TwoThreads {
    boost::asio::io_context io;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{io.get_executor()};
    std::thread first{[this] { io.run(); }};
    std::thread second{[this] { io.run(); }};
    ~TwoThreads() {
      work.reset();
      io.stop();
      first.join();
      second.join();
    }
  } executor;
  auto& io = executor.io;
  {
    auto options = fresh_channel();
    options.max_buffered = 20;
    auto connector = listening(io.get_executor(), options);
    std::mutex gate;
    std::unique_lock closed(gate);
    Inbox inbox;
    mq::ConsumeOptions consume;
    consume.on_control = inbox.control();
    auto slow = connector->start_consuming(
        [&](const RoutingKey& key, const Json& body) {
          if (key.str() == "first") std::lock_guard wait(gate);  // blocks until the gate opens
          inbox.callback()(key, body);
        },
        Filter::parse("#"), consume);
    connector->produce(RoutingKey{"first"}, Json::object());
    for (int i = 0; i < 200; ++i) connector->produce(RoutingKey{"next"}, {{"n", i}});
    // All 200 were read off the socket while the consumer was stuck.
    for (int i = 0; i < 100 && connector->postgres_stats().received < 201; ++i) std::this_thread::sleep_for(50ms);
    CHECK(connector->postgres_stats().received == 201);
    closed.unlock();
    REQUIRE(inbox.wait_for_event(mq::ControlKind::overflow));
    const auto stats = connector->postgres_stats();
    CHECK(stats.dropped_overflow > 0);
    REQUIRE(inbox.wait_for(201 - stats.dropped_overflow));
    // Dropped in the connector's queue or in the consumer's: each drop is
    // told, by one event or two (the last after the last message), in all as
    // many as were dropped.
    const auto told = [&] {
      std::uint64_t missed = 0;
      for (const auto& event : inbox.events()) {
        CHECK(event.kind == mq::ControlKind::overflow);
        missed += event.missed;
      }
      return missed;
    };
    for (int i = 0; i < 200 && told() < stats.dropped_overflow; ++i) std::this_thread::sleep_for(50ms);
    CHECK(told() == stats.dropped_overflow);
    CHECK(inbox.messages().size() == 201 - stats.dropped_overflow);
    CHECK(stats.backlog_peak <= options.max_buffered);
  }
}

TEST_CASE(
    "a produce whose server stops answering fails within statement_timeout with MaybeSent; a producer waiting "
    "behind it waits no longer, and goes through a new connection") {
  using Clock = std::chrono::steady_clock;
  Executor executor;
  auto options = fresh_channel();
  options.statement_timeout = 1s;
  auto connector = listening(executor.get(), options);
  Inbox inbox;
  auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("stall.#"));
  connector->produce(RoutingKey{"stall", "before"}, Json::object());
  REQUIRE(inbox.wait_for(1));

  const auto backends = livestate::test::own_backends("livestate-producer");
  REQUIRE(backends.size() == 1);
  livestate::test::StoppedBackend stall(backends.front());
  REQUIRE(stall.stopped());

  Clock::duration second_took{};
  bool second_threw = false;
  std::thread second([&] {
    std::this_thread::sleep_for(200ms);  // behind the first, which holds the producing connection
    const auto begun = Clock::now();
    try {
      connector->produce(RoutingKey{"stall", "second"}, Json::object());
    } catch (const std::exception& error) {
      second_threw = true;
      MESSAGE("the second produce threw: ", error.what());
    }
    second_took = Clock::now() - begun;
  });
  const auto started = Clock::now();
  // Sent, and then nothing: it may have been sent (and it is, once the
  // backend runs again and finds the statement waiting).
  CHECK_THROWS_AS(connector->produce(RoutingKey{"stall", "stalled"}, Json::object()), mq::MaybeSent);
  const auto took = Clock::now() - started;
  second.join();
  MESSAGE("the stalled produce failed after ", std::chrono::duration_cast<std::chrono::milliseconds>(took).count(),
          " ms, the one behind it returned after ",
          std::chrono::duration_cast<std::chrono::milliseconds>(second_took).count(), " ms");
  CHECK(took >= 900ms);
  CHECK(took < 3s);
  CHECK_FALSE(second_threw);
  CHECK(second_took < 3s);
  REQUIRE(inbox.wait_for_key("stall.second"));
  stall.resume();
}

TEST_CASE(
    "a channel PostgreSQL would cut short (over 63 bytes), an empty one and one with a NUL byte are refused "
    "when the connector is made; 63 bytes work") {
  Executor executor;
  auto options = fresh_channel();
  options.channel = std::string(64, 'c');
  const auto url = livestate::test::connector_url(test_server_url());
  CHECK_THROWS_WITH_AS(mq::make_postgres_connector(url, executor.get(), options), doctest::Contains("63 bytes"),
                       std::invalid_argument);
  options.channel = "\xc3\xa9" + std::string(62, 'c');  // 63 characters, 64 bytes
  CHECK_THROWS_AS(mq::make_postgres_connector(url, executor.get(), options), std::invalid_argument);
  options.channel = "";
  CHECK_THROWS_AS(mq::make_postgres_connector(url, executor.get(), options), std::invalid_argument);
  options.channel = std::string("a\0b", 3);
  CHECK_THROWS_AS(mq::make_postgres_connector(url, executor.get(), options), std::invalid_argument);

  options.channel = livestate::test::random_name("ch") + std::string(63 - 19, 'x');
  REQUIRE(options.channel.size() == 63);
  auto connector = listening(executor.get(), options);
  Inbox inbox;
  auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("#"));
  connector->produce(RoutingKey{"long", "channel"}, Json::object());
  REQUIRE(inbox.wait_for(1));
}
