// Durable consumers of the PostgreSQL connector: what matches while no
// consumer of the name is active is kept in the database and delivered, in
// order, when one resumes. On the suite's transport: tables of queued copies
// (NOTIFY), or a replication slot per name (logical decoding).

#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "../unit/eventually.hpp"
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
using livestate::test::logical_transport;

struct Setup {
  livestate::test::FreshSchema schema;
  Executor executor;
  mq::PostgresOptions options = [] {
    mq::PostgresOptions fresh;
    fresh.channel = livestate::test::random_name("ch");
    return fresh;
  }();

  std::unique_ptr<mq::PostgresConnector> connector() {
    auto connector = mq::make_postgres_connector(livestate::test::connector_url(schema.url()), executor.get(), options);
    REQUIRE(connector->wait_listening(10s));
    return connector;
  }
};

std::vector<int> numbers_of(const std::vector<Message>& messages) {
  std::vector<int> numbers;
  for (const auto& message : messages) numbers.push_back(message.body["n"].get<int>());
  return numbers;
}

// PostgreSQL's text for a WAL position: high and low 32 bits in hex.
std::string lsn_text(std::uint64_t lsn) {
  std::array<char, 24> text{};
  std::snprintf(text.data(), text.size(), "%X/%X", static_cast<unsigned>(lsn >> 32),
                static_cast<unsigned>(lsn & 0xffffffffU));
  return text.data();
}

std::vector<int> range(int from, int to) {
  std::vector<int> numbers;
  for (int i = from; i < to; ++i) numbers.push_back(i);
  return numbers;
}

}  // namespace

TEST_CASE("a durable consumer gets what it missed while stopped, in order, then what comes live") {
  Setup setup;
  auto producer = setup.connector();
  auto consumer_side = setup.connector();
  Inbox first;
  auto consumer = consumer_side->start_consuming(first.callback(), Filter::parse("builds.#"), "audit");
  for (int n = 0; n < 3; ++n) producer->produce(RoutingKey{"builds", "1", "update"}, {{"n", n}});
  REQUIRE(first.wait_for(3));
  consumer->stop_consuming();

  for (int n = 3; n < 8; ++n) producer->produce(RoutingKey{"builds", "1", "update"}, {{"n", n}});
  producer->produce(RoutingKey{"steps", "1", "update"}, {{"n", -1}});  // not for this queue

  Inbox second;
  consumer = consumer_side->start_consuming(second.callback(), Filter::parse("builds.#"), "audit");
  producer->produce(RoutingKey{"builds", "2", "new"}, {{"n", 8}});
  REQUIRE(second.wait_for(6));
  std::this_thread::sleep_for(300ms);  // nothing more, nothing twice
  const auto numbers = numbers_of(second.messages());
  std::string got;
  for (const int n : numbers) got += std::to_string(n) + " ";
  INFO("the resumed consumer got n = ", got);
  CHECK(numbers == range(3, 9));
  CHECK(numbers_of(first.messages()) == range(0, 3));
}

TEST_CASE("a durable consumer's messages survive its connector: a new process resumes them") {
  Setup setup;
  auto producer = setup.connector();
  {
    auto first_life = setup.connector();
    Inbox inbox;
    auto consumer = first_life->start_consuming(inbox.callback(), Filter::parse("buildrequests.*.claimed"), "claims");
    producer->produce(RoutingKey{"buildrequests", "1", "claimed"}, {{"n", 0}});
    REQUIRE(inbox.wait_for(1));
  }  // the consumer and its connector are gone, as after a restart
  for (int n = 1; n <= 3; ++n) producer->produce(RoutingKey{"buildrequests", std::to_string(n), "claimed"}, {{"n", n}});
  auto second_life = setup.connector();
  Inbox inbox;
  auto consumer = second_life->start_consuming(inbox.callback(), Filter::parse("buildrequests.*.claimed"), "claims");
  REQUIRE(inbox.wait_for(3));
  std::this_thread::sleep_for(300ms);
  CHECK(numbers_of(inbox.messages()) == range(1, 4));
}

TEST_CASE("a second active consumer of a durable name is refused, from any connector, and so is another filter") {
  Setup setup;
  auto a = setup.connector();
  auto b = setup.connector();
  Inbox inbox;
  auto consumer = a->start_consuming(inbox.callback(), Filter::parse("builds.#"), "only-one");
  CHECK_THROWS_WITH_AS(b->start_consuming(inbox.callback(), Filter::parse("builds.#"), "only-one"),
                       doctest::Contains("durable consumer 'only-one' is already active"),
                       livestate::PersistentNameInUse);
  CHECK_THROWS_AS(a->start_consuming(inbox.callback(), Filter::parse("builds.#"), "only-one"),
                  livestate::PersistentNameInUse);
  consumer->stop_consuming();
  CHECK_THROWS_WITH_AS(b->start_consuming(inbox.callback(), Filter::parse("steps.#"), "only-one"),
                       doctest::Contains("another filter"), livestate::PersistentNameInUse);
  // Stopped, the name is free again, with its own filter.
  auto again = b->start_consuming(inbox.callback(), Filter::parse("builds.#"), "only-one");
  CHECK(again != nullptr);
}

TEST_CASE(
    "ten thousand messages from two producers with interleaved long transactions all reach a resumed durable consumer, "
    "in each producer's order") {
  Setup setup;
  auto consumer_side = setup.connector();
  {
    Inbox ignored;
    auto consumer = consumer_side->start_consuming(ignored.callback(), Filter::parse("work.#"), "worker");
  }  // created, then stopped: from now on its messages are kept

  // Two masters, each with a store paired with its connector: their messages
  // travel in their transactions, and each transaction is long (500 messages)
  // while the other commits.
  constexpr int per_producer = 5000;
  constexpr int per_transaction = 500;
  auto run_producer = [&](const std::string& name) {
    auto connector = setup.connector();
    auto store = db::Store::open(setup.schema.url(), *connector);
    for (int start = 0; start < per_producer; start += per_transaction) {
      auto tx = store->begin();
      for (int n = start; n < start + per_transaction; ++n) {
        tx.produce(RoutingKey{"work", name, "item"}, {{"n", n}, {"producer", name}});
        if (n % 100 == 0) std::this_thread::yield();
      }
      std::this_thread::sleep_for(5ms);  // the other producer commits meanwhile
      tx.commit();
    }
  };
  {
    std::thread a(run_producer, "a");
    std::thread b(run_producer, "b");
    a.join();
    b.join();
  }

  Inbox inbox;
  auto consumer = consumer_side->start_consuming(inbox.callback(), Filter::parse("work.#"), "worker");
  REQUIRE(inbox.wait_for(2 * per_producer, 60s));
  std::map<std::string, std::vector<int>> by_producer;
  for (const auto& message : inbox.messages()) {
    by_producer[message.body["producer"].get<std::string>()].push_back(message.body["n"].get<int>());
  }
  CHECK(by_producer["a"] == range(0, per_producer));
  CHECK(by_producer["b"] == range(0, per_producer));
}

TEST_CASE(
    "a store transaction's messages reach a stopped durable consumer exactly: bodies by reference, odd text, NUL, only "
    "the keys its filter matches") {
  Setup setup;
  auto consumer_side = setup.connector();
  {
    Inbox ignored;
    auto consumer = consumer_side->start_consuming(ignored.callback(), Filter::parse("builds.*.update"), "exact");
  }  // stopped: what matches is kept from now on

  const std::string large(100'000, 'x');
  const std::vector<Json> bodies = {
      {{"n", 0}, {"text", "quote \" backslash \\ semicolon ; dollar $1 brace {\"k\":[1]} unicode é ☃ 𝄞"}},
      {{"n", 1}, {"large", large}},
      Json(nullptr),
      {{"n", 3}, {"nested", {{"array", {1, 2.5, "three", nullptr, true}}}}},
      // \u0000, which PostgreSQL's json functions refuse to read
      {{"n", 4}, {"nul", std::string("a\0b", 3)}, {"control", "\x01\x1f"}},
  };
  auto producer = setup.connector();
  auto store = db::Store::open(setup.schema.url(), *producer);
  {
    auto tx = store->begin();
    for (std::size_t i = 0; i < bodies.size(); ++i) {
      tx.produce(RoutingKey{"builds", std::to_string(i), "update"}, bodies[i]);
      tx.produce(RoutingKey{"steps", std::to_string(i), "update"}, {{"not", "for this queue"}});
    }
    tx.produce(RoutingKey{"builds", "9", "update", "extra"}, {{"not", "for this queue"}});
    tx.commit();
  }

  Inbox inbox;
  auto consumer = consumer_side->start_consuming(inbox.callback(), Filter::parse("builds.*.update"), "exact");
  REQUIRE(inbox.wait_for(bodies.size()));
  std::this_thread::sleep_for(300ms);  // nothing more
  const auto messages = inbox.messages();
  REQUIRE(messages.size() == bodies.size());
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    CHECK(messages[i].key == RoutingKey{"builds", std::to_string(i), "update"});
    CHECK(messages[i].body == bodies[i]);
  }
}

TEST_CASE(
    "a durable consumer whose server connection stalls delays nobody: another consumer of the same connector "
    "gets what is produced meanwhile at once, and the queue catches up when the server answers again") {
  Setup setup;
  // The schema's search_path without its application_name: the queue's
  // connection keeps the connector's own ("livestate-queue").
  const std::string url = livestate::test::with_connection_parameters(
      livestate::test::test_server_url(), "options=-csearch_path%3D" + setup.schema.name(),
      "options='-csearch_path=" + setup.schema.name() + "'");
  auto producer = mq::make_postgres_connector(livestate::test::connector_url(url), setup.executor.get(), setup.options);
  auto consumer_side = mq::make_postgres_connector(livestate::test::connector_url(url), setup.executor.get(),
                                                   setup.options);
  REQUIRE(consumer_side->wait_listening(10s));
  Inbox durable, other;
  mq::ConsumeOptions durable_options;
  durable_options.persistent_name = "stalled";
  auto stalled = consumer_side->start_consuming(durable.message_callback(), Filter::parse("work.#"), durable_options);
  auto prompt = consumer_side->start_consuming(other.callback(), Filter::parse("work.#"));
  producer->produce(RoutingKey{"work", "0"}, {{"n", 0}});
  REQUIRE(durable.wait_for(1));
  REQUIRE(other.wait_for(1));

  // The queue's connection, or the slot's WAL sender.
  const auto backends = livestate::test::own_backends(logical_transport() ? "livestate-slot" : "livestate-queue");
  REQUIRE(backends.size() == 1);
  // Its slot (other runs' consumers named "stalled" left theirs).
  std::string slot;
  if (logical_transport()) {
    pqxx::connection connection(setup.schema.url());
    slot = pqxx::nontransaction(connection)
               .exec_params1("SELECT slot_name FROM pg_replication_slots WHERE active_pid = $1", backends.front())[0]
               .as<std::string>();
  }
  livestate::test::StoppedBackend stall(backends.front());
  REQUIRE(stall.stopped());
  // The durable consumer acknowledges what it got (200 ms after it, or at
  // once past 256) to a server that answers nothing now; on an executor of
  // one thread, the other consumer's callbacks still run at once.
  constexpr int count = 20;
  auto slowest = std::chrono::steady_clock::duration::zero();
  for (int n = 1; n <= count; ++n) {
    const auto sent = std::chrono::steady_clock::now();
    producer->produce(RoutingKey{"work", std::to_string(n)}, {{"n", n}});
    REQUIRE(other.wait_for(static_cast<std::size_t>(n) + 1, 5s));
    slowest = std::max(slowest, std::chrono::steady_clock::now() - sent);
    std::this_thread::sleep_for(150ms);
  }
  MESSAGE("slowest delivery to the other consumer while the queue's server stalled: ",
          std::chrono::duration_cast<std::chrono::milliseconds>(slowest).count(), " ms");
  CHECK(slowest < 1s);
  // Live messages need nothing from the queue's connection: it gets them too.
  // (On logical decoding they come through its stalled WAL sender: once it
  // runs again.)
  if (!logical_transport()) CHECK(durable.wait_for(count + 1, 5s));
  stall.resume();
  CHECK(durable.wait_for(count + 1, 30s));

  // Once the server answers, its acknowledgements go through and the queue
  // empties: no row waits for it (NOTIFY), its slot has confirmed the commit
  // of the last message it got (logical decoding: a consumer resumed now
  // would get nothing again). The slot is not asked to pass the server's
  // whole WAL: what other sessions write keeps coming, and is confirmed only
  // at the WAL sender's next keepalive.
  const auto last_commit = durable.messages().back().position;
  if (logical_transport()) REQUIRE(last_commit.has_value());
  std::string slot_state;
  const auto queued = [&] {
    pqxx::connection connection(setup.schema.url());
    pqxx::nontransaction work(connection);
    if (logical_transport()) {
      const auto row = work.exec_params1(
          "SELECT confirmed_flush_lsn::text, (confirmed_flush_lsn > $1::text::pg_lsn)::int, active_pid, "
          "pg_current_wal_lsn()::text FROM pg_replication_slots WHERE slot_name = $2",
          lsn_text(*last_commit), slot);
      slot_state = slot + ": confirmed " + row[0].as<std::string>("none") + ", last message's commit at " +
                   lsn_text(*last_commit) + ", server WAL at " + row[3].as<std::string>() + ", streamed by process " +
                   row[2].as<std::string>("none");
      return 1 - row[1].as<int>();
    }
    return work.exec("SELECT count(*) FROM livestate_mq_queued WHERE queue = 'stalled'")[0][0].as<int>();
  };
  const bool emptied = livestate::test::eventually([&] { return queued() == 0; }, 40s, 100ms);
  if (!emptied && logical_transport()) MESSAGE("the stalled queue's slot: ", slot_state);
  CHECK(emptied);
  std::vector<int> firsts;
  for (const int n : numbers_of(durable.messages())) {
    if (std::find(firsts.begin(), firsts.end(), n) == firsts.end()) firsts.push_back(n);
  }
  CHECK(firsts == range(0, count + 1));
}

TEST_CASE(
    "a durable consumer resuming with a backlog of 50,000 messages gets them all, in order, before what comes "
    "live, reading its table a page of 1,000 rows at a time") {
  Setup setup;
  auto consumer_side = setup.connector();
  {
    Inbox ignored;
    auto consumer = consumer_side->start_consuming(ignored.callback(), Filter::parse("backlog.#"), "long");
  }  // created, then stopped: from now on its messages are kept

  auto producer = setup.connector();
  auto store = db::Store::open(setup.schema.url(), *producer);
  constexpr int total = 50'000;
  for (int start = 0; start < total; start += 1000) {
    auto tx = store->begin();
    for (int n = start; n < start + 1000; ++n) tx.produce(RoutingKey{"backlog", "item"}, {{"n", n}});
    tx.commit();
  }

  Inbox inbox;
  auto consumer = consumer_side->start_consuming(inbox.callback(), Filter::parse("backlog.#"), "long");
  producer->produce(RoutingKey{"backlog", "live"}, {{"n", total}});
  REQUIRE(inbox.wait_for(total + 1, 60s));
  std::this_thread::sleep_for(300ms);  // nothing more, nothing twice
  CHECK(numbers_of(inbox.messages()) == range(0, total + 1));
  const auto stats = consumer_side->postgres_stats();
  if (!logical_transport()) {
    CHECK(stats.queue_rows_read >= static_cast<std::uint64_t>(total));
    // Never the whole backlog in memory: a page at most.
    CHECK(stats.queue_page_peak == 1000);
  }
}

// On logical decoding the server keeps a slot's WAL (max_slot_wal_keep_size
// bounds it): tests/pg/logical_slot_expiry.cpp.
TEST_CASE(
    "what is kept past its retention is pruned also when every message travels in store transactions, and "
    "the durable consumer that comes back is told how many it lost" *
    doctest::skip(logical_transport())) {
  Setup setup;
  setup.options.queue_retention = 1s;
  setup.options.body_retention = 1s;
  auto connector = setup.connector();
  {
    Inbox gone;
    auto consumer = connector->start_consuming(gone.callback(), Filter::parse("audit.#"), "away");
    consumer->stop_consuming();
  }
  auto store = db::Store::open(setup.schema.url(), *connector);
  {
    auto transaction = store->begin();
    for (int n = 0; n < 5; ++n) transaction.produce(RoutingKey{"audit", std::to_string(n)}, {{"n", n}});
    // Too large for a notification: its body is kept by reference.
    transaction.produce(RoutingKey{"big", "1"}, {{"text", std::string(10000, 'x')}});
    transaction.commit();
  }
  const auto count = [&](const std::string& table) {
    pqxx::connection connection(setup.schema.url());
    pqxx::nontransaction query(connection);
    return query.exec1("SELECT count(*) FROM " + table)[0].as<int>();
  };
  REQUIRE(count("livestate_mq_queued") == 5);
  REQUIRE(count("livestate_mq_bodies") == 1);
  std::this_thread::sleep_for(1500ms);  // past both retentions

  {  // A thousand more messages, all in one store transaction: a pruning round.
    auto transaction = store->begin();
    for (int n = 0; n < 1000; ++n) transaction.produce(RoutingKey{"other", std::to_string(n)}, {{"n", n}});
    transaction.commit();
  }
  CHECK(livestate::test::eventually([&] { return count("livestate_mq_queued") == 0; }, 10s));
  CHECK(livestate::test::eventually([&] { return count("livestate_mq_bodies") == 0; }, 10s));

  Inbox back;
  mq::ConsumeOptions resume{"away", back.control()};
  auto consumer = connector->start_consuming(back.callback(), Filter::parse("audit.#"), std::move(resume));
  REQUIRE(back.wait_for_event(mq::ControlKind::expired));
  CHECK(back.events().front().missed == 5);
  CHECK(back.messages().empty());
}
