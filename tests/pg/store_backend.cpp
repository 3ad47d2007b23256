// The store on PostgreSQL where it meets the server: connections that can't be
// made or break, and values that must reach the database and come back
// exactly as given. Each case works in a schema of its own (FreshSchema).

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "livestate/livestate.hpp"
#include "pg_test_server.hpp"
#include "session.hpp"
#include "stalled_backend.hpp"

namespace {

namespace db = livestate::db;
using livestate::Filter;
using livestate::Json;
using livestate::RoutingKey;
using livestate::test::fresh_schema_url;
using livestate::test::FreshSchema;
using livestate::test::test_server_url;

constexpr const char* password = "s3cr3t-Pa55";

// A TCP port on 127.0.0.1 that nothing listens on: one the kernel just gave
// out and that was closed again.
int closed_port() {
  const int socket_fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(socket_fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = 0;
  REQUIRE(::inet_pton(AF_INET, "127.0.0.1", &address.sin_addr) == 1);
  REQUIRE(::bind(socket_fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  socklen_t length = sizeof address;
  REQUIRE(::getsockname(socket_fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  ::close(socket_fd);
  return ntohs(address.sin_port);
}

// The test server's URL with another user, password and database: a URL
// rebuilt, or a conninfo string with the keywords added (the last one wins).
std::string server_url_as(const std::string& user, const std::string& secret, const std::string& database) {
  const std::string url = test_server_url();
  const auto scheme = url.find("://");
  if (scheme == std::string::npos) {
    return url + " user=" + user + " password=" + secret + " dbname=" + database;
  }
  const auto authority = scheme + 3;
  const auto path = url.find_first_of("/?", authority);
  std::string host = url.substr(authority, (path == std::string::npos ? url.size() : path) - authority);
  if (const auto at = host.rfind('@'); at != std::string::npos) host.erase(0, at + 1);
  std::string query;
  if (const auto question = url.find('?', authority); question != std::string::npos) {
    query = url.substr(question);
  }
  return url.substr(0, authority) + user + ":" + secret + "@" + host + "/" + database + query;
}

// Opens a store on `url` and returns the DatabaseError it fails with.
template <class Expected>
std::string open_failure(const std::string& url) {
  auto mq = livestate::mq::make_simple_mq();
  try {
    (void)db::Store::open(url, *mq);
  } catch (const Expected& error) {
    return error.what();
  } catch (const std::exception& error) {
    FAIL("opening " << url << " threw another error: " << error.what());
  }
  FAIL("opening " << url << " succeeded");
  return {};
}

// A store on a fresh schema, with a consumer recording every message's key.
struct Fixture {
  FreshSchema schema = fresh_schema_url();
  std::unique_ptr<livestate::mq::Connector> mq = livestate::mq::make_simple_mq();
  std::mutex mutex;
  std::vector<std::string> keys;
  std::unique_ptr<livestate::mq::Consumer> consumer = mq->start_consuming(
      [this](const RoutingKey& key, const Json&) {
        std::lock_guard lock(mutex);
        keys.push_back(key.str());
      },
      Filter::parse("widgets.#"));
  double clock = 1795838740.0;
  std::unique_ptr<db::Store> store = open();

  std::unique_ptr<db::Store> open() {
    db::StoreOptions options;
    options.clock = [this] { return clock; };
    return db::Store::open(schema.url(), *mq, options);
  }

  std::vector<std::string> messages() {
    std::lock_guard lock(mutex);
    return keys;
  }

  // Asked on a connection of its own, not through the store.
  long count_resources() const {
    pqxx::connection connection(test_server_url());
    pqxx::nontransaction work(connection);
    return work.exec1("SELECT count(*) FROM " + schema.name() + ".resources")[0].as<long>();
  }
};

}  // namespace

TEST_CASE("opening a store where no server listens throws ConnectionFailed naming the URL without its password") {
  const std::string port = std::to_string(closed_port());

  SUBCASE("a URL") {
    const std::string url = "postgresql://livestate:" + std::string(password) + "@127.0.0.1:" + port +
                            "/livestate_test";
    const std::string message = open_failure<db::ConnectionFailed>(url);
    CHECK_MESSAGE(message.find("postgresql://livestate:***@127.0.0.1:" + port + "/livestate_test") != std::string::npos,
                  message);
    CHECK_MESSAGE(message.find("Connection refused") != std::string::npos, message);
    CHECK_MESSAGE(message.find(password) == std::string::npos, message);
    CHECK_MESSAGE(message.find('\n') == std::string::npos, message);
  }
  SUBCASE("a postgres:// URL") {
    const std::string url = "postgres://livestate:" + std::string(password) + "@127.0.0.1:" + port + "/x";
    const std::string message = open_failure<db::ConnectionFailed>(url);
    CHECK_MESSAGE(message.find("postgres://livestate:***@127.0.0.1:" + port + "/x") != std::string::npos, message);
    CHECK_MESSAGE(message.find(password) == std::string::npos, message);
  }
  SUBCASE("a conninfo string") {
    const std::string url = "host=127.0.0.1 port=" + port +
                            " dbname=livestate_test user=livestate password=" + std::string(password);
    const std::string message = open_failure<db::ConnectionFailed>(url);
    CHECK_MESSAGE(message.find("host=127.0.0.1 port=" + port + " dbname=livestate_test user=livestate password=***") !=
                      std::string::npos,
                  message);
    CHECK_MESSAGE(message.find(password) == std::string::npos, message);
  }
}

TEST_CASE("opening a database the server does not have throws a DatabaseError that says so") {
  const std::string url = server_url_as("postgres", password, "livestate_no_such_database");
  const std::string message = open_failure<db::DatabaseError>(url);
  CHECK_MESSAGE(message.find(R"(database "livestate_no_such_database" does not exist)") != std::string::npos, message);
  CHECK_MESSAGE(message.find(server_url_as("postgres", "***", "livestate_no_such_database")) != std::string::npos,
                message);
  CHECK_MESSAGE(message.find(password) == std::string::npos, message);
}

TEST_CASE("a user the server does not know is refused with a DatabaseError that says so") {
  // The harness's server trusts every local connection, so a wrong password
  // can't be refused; an unknown role is the authentication failure it has.
  const std::string url = server_url_as("livestate_nobody", password, "livestate_test");
  const std::string message = open_failure<db::DatabaseError>(url);
  CHECK_MESSAGE(message.find(R"(role "livestate_nobody" does not exist)") != std::string::npos, message);
  CHECK_MESSAGE(message.find("livestate_nobody:***@") != std::string::npos, message);
  CHECK_MESSAGE(message.find(password) == std::string::npos, message);
}

TEST_CASE("a connection terminated inside a transaction fails it, leaves nothing behind, and the store goes on") {
  Fixture f;
  auto transaction = f.store->begin();
  transaction.upsert_resource("widgets", "1", {{"size", 1}});
  REQUIRE(f.schema.terminate_connections() >= 1);

  std::string message;
  CHECK_THROWS_AS(
      [&] {
        try {
          transaction.upsert_resource("widgets", "2", {{"size", 2}});
          transaction.commit();
        } catch (const db::DatabaseError& error) {
          message = error.what();
          throw;
        }
      }(),
      db::ConnectionFailed);
  CHECK_MESSAGE(message.find(f.store->name()) != std::string::npos, message);
  CHECK_FALSE(transaction.active());

  CHECK(f.count_resources() == 0);
  CHECK(f.messages().empty());

  // The broken connection was dropped; the next call gets a new one.
  CHECK_FALSE(f.store->get_resource("widgets", "1").has_value());
  CHECK(f.store->upsert_resource("widgets", "3", {{"size", 3}}) == 1);
  CHECK(f.store->get_resource("widgets", "3").value()["state"] == Json{{"size", 3}});
  CHECK(f.count_resources() == 1);
  CHECK(f.messages() == std::vector<std::string>{"widgets.3.new"});
}

// A buildset of two requests, both claimed by one master.
struct TwoClaimed {
  std::int64_t master = 0;
  std::int64_t bsid = 0;
  std::int64_t first = 0;
  std::int64_t second = 0;
};

TwoClaimed two_claimed_requests(db::Store& store) {
  const auto master = store.master_active("m1");
  const auto b1 = store.builder_started("b1", master);
  const auto b2 = store.builder_started("b2", master);
  db::NewBuildset buildset;
  buildset.builderids = {b1, b2};
  const auto added = store.add_buildset(buildset);
  const std::int64_t first = added.buildrequestids.at(b1);
  const std::int64_t second = added.buildrequestids.at(b2);
  store.claim_buildrequests(std::vector<std::int64_t>{first, second}, master);
  return {master, added.bsid, first, second};
}

TEST_CASE("the last two requests of a buildset completed at once, by two connections, complete the buildset") {
  Fixture f;
  auto other = f.open();
  const auto [master, bsid, first, second] = two_claimed_requests(*f.store);

  // The first is completed in a transaction left open while the second is
  // completed on another connection; then the first commits.
  auto transaction = f.store->begin();
  transaction.complete_buildrequests(std::vector<std::int64_t>{first}, 0, master);
  std::thread concurrent([&] { other->complete_buildrequests(std::vector<std::int64_t>{second}, 0, master); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  transaction.commit();
  concurrent.join();

  const auto complete = f.store->get_buildset(bsid).value();
  CHECK(complete.at("complete") == true);
  CHECK(complete.at("results") == 0);
}

TEST_CASE("the last two requests of a buildset completed at once announce the buildset complete once, worst result") {
  Fixture f;
  std::vector<Json> completions;
  const auto consumer = f.mq->start_consuming(
      [&](const RoutingKey&, const Json& body) {
        std::lock_guard lock(f.mutex);
        completions.push_back(body);
      },
      Filter::parse("buildsets.*.complete"));
  auto other = f.open();
  const auto [master, bsid, first, second] = two_claimed_requests(*f.store);

  // The failure waits on the buildset locked by the open transaction.
  auto transaction = f.store->begin();
  transaction.complete_buildrequests(std::vector<std::int64_t>{first}, db::results::success, master);
  std::thread concurrent(
      [&] { other->complete_buildrequests(std::vector<std::int64_t>{second}, db::results::failure, master); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  transaction.commit();
  concurrent.join();

  std::lock_guard lock(f.mutex);
  REQUIRE(completions.size() == 1);
  CHECK(completions.front().at("bsid") == bsid);
  CHECK(completions.front().at("results") == db::results::failure);
  CHECK(f.store->get_buildset(bsid).value() == completions.front());
}

TEST_CASE("builds of one builder added at once by four connections all get numbers, each once") {
  Fixture f;
  const auto master = f.store->master_active("m1");
  const auto builder = f.store->builder_started("b1", master);
  db::NewBuildset buildset;
  buildset.builderids = {builder};
  const auto request = f.store->add_buildset(buildset).buildrequestids.at(builder);
  constexpr int threads = 4;
  constexpr int each = 50;
  std::vector<std::unique_ptr<db::Store>> stores;
  for (int i = 0; i < threads; ++i) stores.push_back(f.open());
  std::mutex mutex;
  std::vector<int> numbers;
  std::vector<std::string> failures;
  std::vector<std::thread> running;
  for (auto& store : stores) {
    running.emplace_back([&, store = store.get()] {
      for (int i = 0; i < each; ++i) {
        try {
          const auto added = store->add_build(builder, request, std::nullopt, master, "starting");
          std::lock_guard lock(mutex);
          numbers.push_back(added.number);
        } catch (const std::exception& error) {
          std::lock_guard lock(mutex);
          failures.emplace_back(error.what());
        }
      }
    });
  }
  for (auto& thread : running) thread.join();
  CHECK_MESSAGE(failures.empty(), (failures.empty() ? "" : failures.front()));
  std::sort(numbers.begin(), numbers.end());
  std::vector<int> expected(numbers.size());
  std::iota(expected.begin(), expected.end(), 1);
  CHECK(numbers == expected);
  CHECK(numbers.size() == threads * each);
}

TEST_CASE("a connection terminated just before COMMIT fails the commit without committing anything") {
  Fixture f;
  auto transaction = f.store->begin();
  transaction.upsert_resource("widgets", "1", {{"size", 1}});
  REQUIRE(f.schema.terminate_connections() >= 1);

  // Either the store finds the connection gone before it sends COMMIT (a
  // ConnectionFailed: rolled back), or COMMIT is sent on a connection that has
  // gone and no answer comes (CommitInDoubt, also a ConnectionFailed): the
  // client can't know what the server did, and must say so by its type.
  std::string message;
  bool in_doubt = false;
  try {
    transaction.commit();
    FAIL("commit() succeeded on a terminated connection");
  } catch (const db::CommitInDoubt& error) {
    message = error.what();
    in_doubt = true;
  } catch (const db::ConnectionFailed& error) {
    message = error.what();
  }
  CHECK_MESSAGE(message.find(f.store->name()) != std::string::npos, message);
  MESSAGE("the commit was ", std::string(in_doubt ? "in doubt" : "refused before COMMIT was sent"));
  CHECK(f.count_resources() == 0);
  CHECK(f.messages().empty());

  CHECK(f.store->upsert_resource("widgets", "1", {{"size", 2}}) == 1);
  CHECK(f.messages() == std::vector<std::string>{"widgets.1.new"});
}

TEST_CASE("after the server ends every pooled connection, the next call still succeeds") {
  Fixture f;
  {
    // Four transactions at once leave four connections in the pool.
    std::vector<db::Transaction> transactions;
    transactions.reserve(4);
    for (int i = 0; i < 4; ++i) transactions.push_back(f.store->begin());
    for (int i = 0; i < 4; ++i) {
      transactions[static_cast<std::size_t>(i)].upsert_resource("widgets", std::to_string(i), {{"n", i}});
    }
    for (auto& transaction : transactions) transaction.commit();
  }
  REQUIRE(f.schema.terminate_connections() >= 4);

  CHECK(f.store->upsert_resource("widgets", "0", {{"n", 10}}) == 2);
  CHECK(f.store->get_resource("widgets", "0").value()["state"] == Json{{"n", 10}});
}

TEST_CASE("strings with quotes, backslashes, SQL and unicode reach the database and come back exactly") {
  Fixture f;
  const std::vector<std::string> nasty = {
      "it's",
      "\"double\"",
      "back\\slash\\\\",
      "semi;colon;",
      "'); DROP TABLE builds; --",
      "$1 ? $2 ?",
      "\\x00 E'\\n'",
      "tab\there\nnewline\r\n",
      "Grüße, 日本語, emoji 🚀, \u2028 line separator",
      "",
  };
  Json state = Json::object();
  Json list = Json::array();
  for (std::size_t i = 0; i < nasty.size(); ++i) {
    state["k" + std::to_string(i)] = nasty[i];
    list.push_back(nasty[i]);
  }
  state["list"] = list;
  state["numbers"] = {0.1, 1e-7, 1795838740.1234567, -0.5, 9007199254740993LL, -9223372036854775807LL};
  state[nasty[4]] = nasty[8];  // as a key, too

  // Identifiers are routing-key elements (7-bit ASCII), but quotes and SQL
  // are fine there.
  const std::vector<std::string> ids = {"it's", "back\\slash", "'); DROP TABLE builds; --", "a;b", "?"};
  for (const auto& id : ids) CHECK(f.store->upsert_resource("widgets", id, state) == 1);
  for (const auto& id : ids) {
    const auto read = f.store->get_resource("widgets", id);
    REQUIRE_MESSAGE(read.has_value(), id);
    CHECK((*read)["id"] == id);
    CHECK((*read)["state"] == state);
  }

  // And stored as given, as another client sees them.
  pqxx::connection connection(test_server_url());
  pqxx::nontransaction work(connection);
  const auto rows = work.exec("SELECT id, state->>'k4', state->'list'->>8 FROM " + f.schema.name() +
                              ".resources ORDER BY id");
  REQUIRE(rows.size() == ids.size());
  for (const auto& row : rows) {
    CHECK(row[1].as<std::string>() == nasty[4]);
    CHECK(row[2].as<std::string>() == nasty[8]);
  }
  CHECK(work.exec1("SELECT to_regclass('" + f.schema.name() + ".builds') IS NOT NULL")[0].as<bool>());
}

TEST_CASE("a 1 MB JSON body round-trips exactly") {
  Fixture f;
  std::string text;
  text.reserve(1 << 20);
  for (std::size_t i = 0; text.size() < (1u << 20); ++i) {
    text += "line " + std::to_string(i) + ": \"quoted\", 'single', \\back\\, ünïcödé;\n";
  }
  Json state = {{"log", text}, {"chunks", Json::array()}};
  for (int i = 0; i < 2000; ++i) state["chunks"].push_back({{"i", i}, {"x", i * 0.25}, {"s", std::to_string(i)}});
  REQUIRE(state.dump().size() > (1u << 20));

  CHECK(f.store->upsert_resource("widgets", "big", state) == 1);
  const auto read = f.store->get_resource("widgets", "big");
  REQUIRE(read.has_value());
  CHECK((*read)["state"]["log"].get<std::string>() == text);
  CHECK((*read)["state"] == state);

  state["log"] = text + "more";
  CHECK(f.store->upsert_resource("widgets", "big", state) == 2);
  CHECK(f.store->get_resource("widgets", "big").value()["state"] == state);
}

TEST_CASE("timestamps written as doubles read back as the same double") {
  Fixture f;
  f.clock = 1795838741.1234567;  // needs all 17 significant digits
  const auto masterid = f.store->master_active("master-1");
  const auto builderid = f.store->builder_started("quick", masterid);
  db::NewBuildset buildset;
  buildset.builderids = {builderid};
  const auto added = f.store->add_buildset(buildset);
  const auto brid = added.buildrequestids.at(builderid);
  const std::vector<std::int64_t> brids{brid};
  f.store->claim_buildrequests(brids, masterid);

  const auto request = f.store->get_buildrequest(brid);
  REQUIRE(request.has_value());
  CHECK((*request)["claimed_at"].get<double>() == 1795838741.1234567);
  CHECK((*request)["submitted_at"].get<double>() == 1795838741.1234567);
}

// --- the session, below the store ------------------------------------------
// What the store relies on from the PostgreSQL session: binding, reading,
// failure kinds, and session-level state.

namespace {

namespace detail = livestate::db::detail;

std::unique_ptr<detail::Session> open_session(const FreshSchema& schema) {
  const auto maker = detail::postgres_backend();
  const bool registered = maker != nullptr;
  REQUIRE_MESSAGE(registered, "livestate::db_postgres did not register itself");
  return maker(schema.url(), detail::SessionOptions{})->open();
}

// Runs `work` and returns the SessionFailure it throws.
template <class Work>
detail::SessionFailure failure_of(Work&& work) {
  try {
    work();
  } catch (const detail::SessionFailure& failure) {
    return failure;
  }
  FAIL("no SessionFailure");
  return detail::SessionFailure(detail::FailureKind::other, "");
}

}  // namespace

TEST_CASE("a PostgreSQL session binds every kind of value and reads it back") {
  const FreshSchema schema = fresh_schema_url();
  const auto session = open_session(schema);
  CHECK(session->backend() == db::Backend::postgresql);
  session->begin(true);
  session->execute_script(
      "CREATE TABLE t (i BIGINT, d DOUBLE PRECISION, s TEXT, b BOOLEAN, j JSONB, n TEXT);"
      "CREATE TABLE u (k INTEGER)");
  const std::vector<detail::Value> values = {std::int64_t{-9223372036854775807LL - 1},
                                             0.1,
                                             std::string("it's ? $1 \\ 'x'"),
                                             true,
                                             std::string(R"({"a": "?"})"),
                                             std::monostate{}};
  CHECK(session->execute("INSERT INTO t (i, d, s, b, j, n) VALUES (?, ?, ?, ?, ?, ?)", values) == 1);
  CHECK(session->execute("INSERT INTO t (i, d, s, b, j, n) VALUES (?, ?, ?, ?, ?, ?)",
                         std::vector<detail::Value>{std::int64_t{7}, 1795838741.1234567, std::string(), false,
                                                    std::string("[]"), std::string("x")}) == 1);

  const auto rows = session->query("SELECT i, d, s, b, j, n, '?' FROM t WHERE i < ? ORDER BY i",
                                   std::vector<detail::Value>{std::int64_t{100}});
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].as_int(0) == -9223372036854775807LL - 1);
  CHECK(rows[0].as_double(1) == 0.1);
  CHECK(rows[0].as_text(2) == "it's ? $1 \\ 'x'");
  CHECK(rows[0].as_bool(3));
  CHECK(rows[0].as_json(4) == Json{{"a", "?"}});
  CHECK(rows[0].is_null(5));
  CHECK(rows[0].as_text(6) == "?");  // a `?` inside quotes is not a placeholder
  CHECK(rows[1].as_double(1) == 1795838741.1234567);
  CHECK(rows[1].as_text(2).empty());
  CHECK_FALSE(rows[1].is_null(2));
  CHECK_FALSE(rows[1].as_bool(3));

  // Doubles that have no digits, and affected-row counts.
  CHECK(session->execute("UPDATE t SET d = ?", std::vector<detail::Value>{-std::numeric_limits<double>::infinity()}) ==
        2);
  CHECK(session->query("SELECT d FROM t")[0].as_text(0) == "-Infinity");
  CHECK(session->execute("DELETE FROM t WHERE n IS NULL") == 1);
  session->commit();

  // The same statement again, from the session's cache, in a new transaction.
  session->begin(false);
  CHECK(session
            ->query("SELECT i, d, s, b, j, n, '?' FROM t WHERE i < ? ORDER BY i",
                    std::vector<detail::Value>{std::int64_t{100}})
            .size() == 1);
  session->rollback();
  CHECK(session->healthy());
}

TEST_CASE("a PostgreSQL session's failures say what failed, where, and of what kind") {
  const FreshSchema schema = fresh_schema_url();
  const auto session = open_session(schema);
  session->begin(true);
  session->execute_script("CREATE TABLE t (k INTEGER PRIMARY KEY)");
  session->commit();

  session->begin(true);
  CHECK(session->execute("INSERT INTO t (k) VALUES (?)", std::vector<detail::Value>{std::int64_t{1}}) == 1);
  const auto duplicate = failure_of(
      [&] { (void)session->execute("INSERT INTO t (k) VALUES (?)", std::vector<detail::Value>{std::int64_t{1}}); });
  CHECK(duplicate.kind() == detail::FailureKind::unique_violation);
  const std::string message = duplicate.what();
  CHECK_MESSAGE(message.find(schema.url()) == 0, message);
  CHECK_MESSAGE(message.find("INSERT INTO t (k) VALUES (?)") != std::string::npos, message);
  CHECK_MESSAGE(message.find("duplicate key value violates unique constraint") != std::string::npos, message);
  CHECK_MESSAGE(message.find("(SQLSTATE 23505)") != std::string::npos, message);
  CHECK(duplicate.sqlstate() == "23505");
  CHECK_MESSAGE(message.find('\n') == std::string::npos, message);

  // PostgreSQL would answer COMMIT with a silent ROLLBACK; the session says so.
  const auto commit = failure_of([&] { session->commit(); });
  CHECK(commit.kind() == detail::FailureKind::other);
  CHECK_MESSAGE(std::string(commit.what()).find("rolled the whole transaction back") != std::string::npos,
                commit.what());
  session->begin(false);
  CHECK(session->query("SELECT count(*) FROM t")[0].as_int(0) == 0);
  session->rollback();

  // After ROLLBACK TO SAVEPOINT the transaction is usable again.
  session->begin(true);
  (void)session->execute("INSERT INTO t (k) VALUES (?)", std::vector<detail::Value>{std::int64_t{1}});
  (void)session->execute("SAVEPOINT s");
  CHECK(failure_of([&] { (void)session->execute("SELECT no_such_column FROM t"); }).kind() ==
        detail::FailureKind::other);
  (void)session->execute("ROLLBACK TO SAVEPOINT s");
  session->commit();
  session->begin(false);
  CHECK(session->query("SELECT count(*) FROM t")[0].as_int(0) == 1);
  session->rollback();

  session->begin(true);
  session->execute_script("SET TRANSACTION READ ONLY");
  CHECK(failure_of([&] {
          (void)session->execute("INSERT INTO t (k) VALUES (?)", std::vector<detail::Value>{std::int64_t{2}});
        }).kind() == detail::FailureKind::read_only);
  session->rollback();

  const auto script = failure_of([&] {
    session->begin(true);
    session->execute_script("CREATE TABLE v (k INTEGER); SELECT 1/0");
  });
  CHECK_MESSAGE(std::string(script.what()).find("(SQLSTATE 22012)") != std::string::npos, script.what());
  CHECK(script.sqlstate() == "22012");
  session->rollback();
  CHECK(session->healthy());
}

TEST_CASE("a store's DatabaseError carries the server's SQLSTATE, so callers branch on it, not on the text") {
  Fixture f;
  livestate::test::run_on_server("DROP TABLE " + f.schema.name() + ".resources CASCADE");
  try {
    (void)f.store->upsert_resource("widgets", "1", {{"size", 1}});
    FAIL("a write to a dropped table succeeded");
  } catch (const db::DatabaseError& error) {
    CHECK(error.sqlstate() == "42P01");  // undefined_table
  }
  CHECK(f.messages().empty());
}

TEST_CASE("statements outside a transaction are a programming error") {
  const FreshSchema schema = fresh_schema_url();
  const auto session = open_session(schema);
  CHECK_THROWS_AS((void)session->query("SELECT 1"), std::logic_error);
  CHECK_THROWS_AS((void)session->execute("SELECT 1"), std::logic_error);
  CHECK_THROWS_AS(session->execute_script("SELECT 1"), std::logic_error);
  CHECK_THROWS_AS(session->commit(), std::logic_error);
  session->begin(true);
  CHECK_THROWS_AS(session->begin(true), std::logic_error);
  session->rollback();
  session->rollback();  // nothing to roll back: nothing happens
  CHECK(session->healthy());
}

TEST_CASE("two sessions that deadlock: one of them fails with a serialization failure") {
  const FreshSchema schema = fresh_schema_url();
  const auto first = open_session(schema);
  const auto second = open_session(schema);
  first->begin(true);
  first->execute_script("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER); INSERT INTO t VALUES (1, 0), (2, 0)");
  first->commit();

  const std::string update = "UPDATE t SET v = v + 1 WHERE k = ?";
  first->begin(true);
  second->begin(true);
  (void)first->execute(update, std::vector<detail::Value>{std::int64_t{1}});
  (void)second->execute(update, std::vector<detail::Value>{std::int64_t{2}});
  std::optional<detail::FailureKind> first_failure;
  std::thread waiting([&] {
    try {
      (void)first->execute(update, std::vector<detail::Value>{std::int64_t{2}});
    } catch (const detail::SessionFailure& failure) {
      first_failure = failure.kind();
      first->rollback();  // lets the other one go on
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // `first` waits for `second`
  std::optional<detail::FailureKind> second_failure;
  try {
    (void)second->execute(update, std::vector<detail::Value>{std::int64_t{1}});
  } catch (const detail::SessionFailure& failure) {
    second_failure = failure.kind();
    second->rollback();
  }
  waiting.join();
  REQUIRE((first_failure.has_value() != second_failure.has_value()));
  CHECK(first_failure.value_or(second_failure.value_or(detail::FailureKind::other)) ==
        detail::FailureKind::serialization);
  if (!first_failure) first->rollback();
  if (!second_failure) second->rollback();
}

TEST_CASE("an advisory lock belongs to the session, across its transactions, until released") {
  const FreshSchema schema = fresh_schema_url();
  const auto holder = open_session(schema);
  const auto other = open_session(schema);
  const auto other_can_take_it = [&] {
    other->begin(false);
    const bool taken =
        other->query("SELECT pg_try_advisory_lock(?)", std::vector<detail::Value>{std::int64_t{4242}})[0].as_bool(0);
    other->rollback();
    if (taken) other->unlock_advisory(4242);
    return taken;
  };

  holder->lock_advisory(4242);
  CHECK_FALSE(other_can_take_it());
  holder->begin(true);
  holder->rollback();
  holder->begin(true);
  holder->commit();
  CHECK_FALSE(other_can_take_it());
  holder->unlock_advisory(4242);
  CHECK(other_can_take_it());
  CHECK(holder->healthy());
  CHECK(other->healthy());
}

TEST_CASE("a session the server ended while it was idle reports itself unhealthy") {
  const FreshSchema schema = fresh_schema_url();
  const auto session = open_session(schema);
  session->begin(true);
  CHECK(session->query("SELECT 1").size() == 1);
  session->commit();
  CHECK(session->healthy());
  REQUIRE(schema.terminate_connections() == 1);
  CHECK_FALSE(session->healthy());
  CHECK(failure_of([&] { session->begin(true); }).kind() == detail::FailureKind::connection);
  CHECK_FALSE(session->healthy());
}

TEST_CASE("a session runs any number of distinct statements, past its prepared-statement cache") {
  const FreshSchema schema = fresh_schema_url();
  const auto session = open_session(schema);
  session->begin(false);
  for (int round = 0; round < 2; ++round) {
    for (std::int64_t i = 0; i < 300; ++i) {
      // A new text each time, as the store's IN (?, ?, …) lists of every length are.
      const auto rows = session->query("SELECT CAST(? AS BIGINT) + " + std::to_string(i),
                                       std::vector<detail::Value>{std::int64_t{1000}});
      REQUIRE(rows.size() == 1);
      CHECK(rows[0].as_int(0) == 1000 + i);
    }
  }
  session->rollback();
}

TEST_CASE("a string with a NUL character is refused, not cut short") {
  const FreshSchema schema = fresh_schema_url();
  const auto session = open_session(schema);
  session->begin(false);
  const auto refused = failure_of(
      [&] { (void)session->query("SELECT ?", std::vector<detail::Value>{std::string("before\0after", 12)}); });
  CHECK_MESSAGE(std::string(refused.what()).find("NUL") != std::string::npos, refused.what());
  // Nothing was sent: the transaction goes on.
  CHECK(session->query("SELECT 1").size() == 1);
  session->commit();
}

TEST_CASE("a statement with more parameters than PostgreSQL takes is refused before it is sent") {
  const FreshSchema schema = fresh_schema_url();
  const auto session = open_session(schema);
  session->begin(false);
  std::string sql = "SELECT 1 WHERE 0 IN (?";
  std::vector<detail::Value> params{std::int64_t{1}};
  for (std::int64_t i = 2; i <= 70000; ++i) {
    sql += ",?";
    params.emplace_back(i);
  }
  const auto refused = failure_of([&] { (void)session->query(sql + ")", params); });
  CHECK(refused.kind() == detail::FailureKind::other);
  CHECK_MESSAGE(std::string(refused.what()).find("70000 parameters") != std::string::npos, refused.what());
  CHECK_MESSAGE(std::string(refused.what()).find("at most 65535") != std::string::npos, refused.what());
  // Not a lost connection: the session and its transaction go on.
  CHECK(session->healthy());
  CHECK(session->query("SELECT 1").size() == 1);
  session->commit();
}

TEST_CASE("a session ended after begin() fails its first statement as a lost connection, with the server's reason") {
  const FreshSchema schema = fresh_schema_url();
  const auto session = open_session(schema);
  session->begin(true);
  REQUIRE(schema.terminate_connections() == 1);
  const auto lost = failure_of([&] { (void)session->query("SELECT 1"); });
  CHECK(lost.kind() == detail::FailureKind::connection);
  CHECK_MESSAGE(std::string(lost.what()).find("terminating connection due to administrator command") !=
                    std::string::npos,
                lost.what());
  CHECK(lost.sqlstate() == "57P01");  // admin_shutdown: the server's answer to BEGIN, kept
  CHECK_FALSE(session->healthy());
  session->rollback();
}

TEST_CASE(
    "a store whose server stops answering gives up on that connection after statement_timeout: a statement "
    "is retried on a new one, a COMMIT is reported in doubt") {
  Fixture f;
  db::StoreOptions options;
  options.statement_timeout = std::chrono::milliseconds(1000);
  options.clock = [&f] { return f.clock; };
  auto store = db::Store::open(f.schema.url(), *f.mq, options);
  CHECK(store->upsert_resource("widgets", "1", {{"size", 1}}) == 1);

  {  // A statement: its connection is given up, the store retries on a new one.
    std::vector<std::unique_ptr<livestate::test::StoppedBackend>> stopped;
    for (const int pid : livestate::test::own_backends(f.schema.name())) {
      stopped.push_back(std::make_unique<livestate::test::StoppedBackend>(pid));
    }
    REQUIRE_FALSE(stopped.empty());
    const auto started = std::chrono::steady_clock::now();
    CHECK(store->upsert_resource("widgets", "2", {{"size", 2}}) == 1);
    const auto took = std::chrono::steady_clock::now() - started;
    CHECK(took >= std::chrono::milliseconds(900));
    CHECK(took < std::chrono::seconds(20));
  }
  {  // A COMMIT sent to a backend that stopped: nobody can tell whether it committed.
    auto transaction = store->begin();
    transaction.upsert_resource("widgets", "3", {{"size", 3}});
    std::vector<std::unique_ptr<livestate::test::StoppedBackend>> stopped;
    for (const int pid : livestate::test::own_backends(f.schema.name())) {
      stopped.push_back(std::make_unique<livestate::test::StoppedBackend>(pid));
    }
    try {
      transaction.commit();
      FAIL("a COMMIT to a stopped backend succeeded");
    } catch (const db::CommitInDoubt& error) {
      CHECK(std::string(error.what()).find("statement timeout") != std::string::npos);
    }
  }
  CHECK(store->upsert_resource("widgets", "4", {{"size", 4}}) == 1);  // and the store goes on
}
