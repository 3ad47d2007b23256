// store_bench: what the state store's update methods cost beside the raw
// speed of the same database on this machine, in the same run.
//
// Cases (each is one transaction per operation; µs/op and ops/s):
//   raw_update_1         BEGIN; UPDATE bench_raw SET v = v + 1, revision = revision + 1
//                        WHERE id = ?; COMMIT — through the raw driver (sqlite3 C API
//                        with the store's settings, or libpqxx's pqxx::work)
//   raw_update_100       the same UPDATE with WHERE id IN (100 bound ids): one
//                        statement for 100 rows, the shape the store's batch uses
//   raw_update_100_each  100 single-row UPDATE statements in one transaction
//   store_claim_1        claim_buildrequests of one unclaimed request
//   store_complete_1     complete_buildrequests of one claimed request, the only
//                        request of its buildset: updates the request and the
//                        buildset (two rows, four messages)
//   store_claim_100      claim_buildrequests of 100 requests in one call
//
// The store announces on an in-process connector (make_simple_mq()) with one
// consumer on "#", so every message is really delivered. After every batch the
// consumer's count is checked against what the operations must announce, and
// at the end the database is checked (every raw update counted, every request
// claimed or completed); a wrong count fails the program (exit 1).
//
// bench_raw has as many rows as the store's buildrequests when the timing
// starts; every operation touches rows no earlier operation of its case
// touched (the raw cases cycle through the table). The cases are interleaved
// within each repetition, so that a WAL checkpoint or a server hiccup lands
// on all of them alike; a first, unmeasured repetition warms everything up.
//
// Databases:
//   sqlite:PATH      a file that must not exist: created, and deleted at the end
//                    (default: a file in a fresh temporary directory). The raw
//                    connection opens it as the store does: WAL,
//                    synchronous=NORMAL, foreign_keys=ON, busy timeout.
//   postgresql://…   a server (or a libpq conninfo string). The bench creates a
//                    schema of its own, runs the store and bench_raw in it (the
//                    URL gets options=-csearch_path=SCHEMA) and drops it at the
//                    end. It prints the server's fsync and synchronous_commit.
//
// Usage: store_bench [--db URL] [--reps N] [--ops N] [--batches N] [--case NAME]...
//                    [--json] [--quick] [--profile]
//   --reps N     measured repetitions (5); each case reports the median
//   --ops N      single-row operations per repetition and case (2000)
//   --batches N  100-row operations per repetition and case (20)
//   --case NAME  run only this case (repeatable; to profile one with perf);
//                store_complete_1 alone still claims its requests, untimed
//   --json       JSON lines (one per case, one per ratio, one "meta") instead
//                of the table; bench/store_compare.sh reads them
//   --quick      tiny counts, one repetition: a smoke test that it runs and
//                announces what it must (the rates mean nothing)
//   --profile    SQLite only: trace every statement of every connection
//                (sqlite3_trace_v2) and print, per case, the statements per
//                operation and the time spent inside SQLite (SQLite's clock
//                ticks in milliseconds, so only averages over many operations
//                mean something); the timings then include the tracing's cost

#include <sqlite3.h>
#include <stdlib.h>
#include <unistd.h>

#include <pqxx/pqxx>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "livestate/livestate.hpp"

namespace {

using livestate::Json;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr std::size_t batch_rows = 100;
constexpr double target_ratio = 2.0;
constexpr const char* program = "store_bench";

// --- options -------------------------------------------------------------------

struct Options {
  std::optional<std::string> db;
  int reps = 5;
  std::size_t ops = 2000;
  std::size_t batches = 20;
  bool json = false;
  bool quick = false;
  bool profile = false;
  std::set<std::string, std::less<>> cases;  // empty: all
};

constexpr std::string_view case_names[] = {"raw_update_1",  "raw_update_100",   "raw_update_100_each",
                                           "store_claim_1", "store_complete_1", "store_claim_100"};

constexpr const char* usage_text =
    "usage: store_bench [--db URL] [--reps N] [--ops N] [--batches N] [--case NAME]... [--json]\n"
    "                   [--quick] [--profile]\n"
    "  --db URL     sqlite:PATH (a new file; default: a temporary one) or postgresql://…\n"
    "  --reps N     measured repetitions, medians reported (5)\n"
    "  --ops N      single-row operations per repetition and case (2000)\n"
    "  --batches N  100-row operations per repetition and case (20)\n"
    "  --case NAME  only this case (repeatable): raw_update_1, raw_update_100,\n"
    "               raw_update_100_each, store_claim_1, store_complete_1, store_claim_100\n"
    "  --json       JSON lines instead of the table\n"
    "  --quick      a smoke test: tiny counts, one repetition\n"
    "  --profile    SQLite: count and time every statement (slows the run)\n";

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << program << ": " << message << '\n' << usage_text;
  std::exit(2);
}

std::size_t positive(const std::string& option, const std::string& text) {
  std::size_t end = 0;
  long long value = 0;
  try {
    value = std::stoll(text, &end);
  } catch (const std::exception&) {
    end = 0;
  }
  if (end != text.size() || value < 1) usage_error(option + " wants a positive integer, not \"" + text + "\"");
  return static_cast<std::size_t>(value);
}

Options parse_options(int argc, char** argv) {
  Options options;
  std::optional<int> reps;
  std::optional<std::size_t> ops;
  std::optional<std::size_t> batches;
  const std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) usage_error(arg + " needs a value");
      return args[++i];
    };
    if (arg == "--db") {
      options.db = value();
    } else if (arg == "--reps") {
      reps = static_cast<int>(std::min<std::size_t>(positive(arg, value()), 1000));
    } else if (arg == "--ops") {
      ops = positive(arg, value());
    } else if (arg == "--batches") {
      batches = positive(arg, value());
    } else if (arg == "--case") {
      const std::string name = value();
      if (std::find(std::begin(case_names), std::end(case_names), name) == std::end(case_names)) {
        usage_error("unknown case \"" + name + "\"");
      }
      options.cases.insert(name);
    } else if (arg == "--json") {
      options.json = true;
    } else if (arg == "--quick") {
      options.quick = true;
    } else if (arg == "--profile") {
      options.profile = true;
    } else if (arg == "--help" || arg == "-h") {
      std::cout << usage_text;
      std::exit(0);
    } else {
      usage_error("unknown argument \"" + arg + "\"");
    }
  }
  if (options.quick) {
    options.reps = 1;
    options.ops = 20;
    options.batches = 2;
  }
  // Explicit counts win over --quick's.
  if (reps) options.reps = *reps;
  if (ops) options.ops = *ops;
  if (batches) options.batches = *batches;
  return options;
}

bool is_postgres_url(std::string_view url) {
  return url.starts_with("postgresql://") || url.starts_with("postgres://") ||
         (!url.starts_with("sqlite:") && url.find('=') != std::string_view::npos);
}

// --- the raw baselines -----------------------------------------------------------

// BEGIN; UPDATE …; COMMIT on bench_raw, through the engine's own driver. Every
// method is one whole transaction.
class RawBaseline {
 public:
  RawBaseline() = default;
  RawBaseline(const RawBaseline&) = delete;
  RawBaseline& operator=(const RawBaseline&) = delete;
  virtual ~RawBaseline() = default;

  /// (Re)creates bench_raw with ids 1..rows.
  virtual void create_table(std::int64_t rows) = 0;
  virtual void update_one(std::int64_t id) = 0;
  /// One statement: WHERE id IN (ids), ids.size() == batch_rows.
  virtual void update_in(const std::vector<std::int64_t>& ids) = 0;
  /// One statement per id, in one transaction.
  virtual void update_each(const std::vector<std::int64_t>& ids) = 0;
  /// A single number from a query (counts, sums).
  [[nodiscard]] virtual std::int64_t scalar(const std::string& sql) = 0;
  /// The settings that decide the speed, for the report.
  [[nodiscard]] virtual Json settings() = 0;
};

const std::string raw_update_one_sql = "UPDATE bench_raw SET v = v + 1, revision = revision + 1 WHERE id = ";

std::string in_list(std::size_t count, bool numbered) {
  std::string text = "(";
  for (std::size_t i = 0; i < count; ++i) {
    if (i > 0) text += ',';
    if (numbered) {
      text += '$';
      text += std::to_string(i + 1);
    } else {
      text += '?';
    }
  }
  return text + ")";
}

std::string raw_update_in_sql(bool numbered) {
  return "UPDATE bench_raw SET v = v + 1, revision = revision + 1 WHERE id IN " + in_list(batch_rows, numbered);
}

struct SqliteCloser {
  void operator()(sqlite3* connection) const noexcept { sqlite3_close_v2(connection); }
};
struct SqliteFinalizer {
  void operator()(sqlite3_stmt* statement) const noexcept { sqlite3_finalize(statement); }
};
using SqliteStatement = std::unique_ptr<sqlite3_stmt, SqliteFinalizer>;

class SqliteRaw final : public RawBaseline {
 public:
  // Opened exactly as db/src/sqlite_session.cpp opens a store's connection.
  explicit SqliteRaw(const std::string& path) {
    sqlite3* raw = nullptr;
    const int code = sqlite3_open_v2(path.c_str(), &raw,
                                     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                                         SQLITE_OPEN_URI,
                                     nullptr);
    m_connection.reset(raw);
    if (code != SQLITE_OK) fail("open " + path);
    sqlite3_extended_result_codes(raw, 1);
    sqlite3_busy_timeout(raw, 5000);
    exec("PRAGMA foreign_keys = ON");
    exec("PRAGMA journal_mode = WAL");
    exec("PRAGMA synchronous = NORMAL");
    m_begin = prepare("BEGIN");
    m_commit = prepare("COMMIT");
  }

  void create_table(std::int64_t rows) override {
    exec("DROP TABLE IF EXISTS bench_raw");
    exec("CREATE TABLE bench_raw (id INTEGER PRIMARY KEY, v INTEGER NOT NULL DEFAULT 0, "
         "revision INTEGER NOT NULL DEFAULT 1)");
    exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < " + std::to_string(rows) +
         ") INSERT INTO bench_raw (id) SELECT i FROM n");
    m_update_one = prepare(raw_update_one_sql + "?");
    m_update_in = prepare(raw_update_in_sql(false));
  }

  void update_one(std::int64_t id) override {
    step(m_begin.get());
    bind(m_update_one.get(), 1, id);
    step(m_update_one.get());
    step(m_commit.get());
  }

  void update_in(const std::vector<std::int64_t>& ids) override {
    step(m_begin.get());
    for (std::size_t i = 0; i < ids.size(); ++i) bind(m_update_in.get(), static_cast<int>(i + 1), ids[i]);
    step(m_update_in.get());
    step(m_commit.get());
  }

  void update_each(const std::vector<std::int64_t>& ids) override {
    step(m_begin.get());
    for (const auto id : ids) {
      bind(m_update_one.get(), 1, id);
      step(m_update_one.get());
    }
    step(m_commit.get());
  }

  std::int64_t scalar(const std::string& sql) override {
    const SqliteStatement statement = prepare(sql);
    if (sqlite3_step(statement.get()) != SQLITE_ROW) fail("run " + sql);
    return sqlite3_column_int64(statement.get(), 0);
  }

  Json settings() override {
    auto text = [&](const std::string& sql) {
      const SqliteStatement statement = prepare(sql);
      if (sqlite3_step(statement.get()) != SQLITE_ROW) fail("run " + sql);
      return std::string(reinterpret_cast<const char*>(sqlite3_column_text(statement.get(), 0)));
    };
    return {{"engine", std::string("SQLite ") + sqlite3_libversion()},
            {"journal_mode", text("PRAGMA journal_mode")},
            {"synchronous", text("PRAGMA synchronous") == "1" ? "NORMAL" : text("PRAGMA synchronous")},
            {"foreign_keys", text("PRAGMA foreign_keys") == "1" ? "on" : "off"}};
  }

 private:
  [[noreturn]] void fail(const std::string& doing) const {
    throw std::runtime_error("raw SQLite: cannot " + doing + ": " +
                             (m_connection ? sqlite3_errmsg(m_connection.get()) : "out of memory"));
  }

  void exec(const std::string& sql) {
    if (sqlite3_exec(m_connection.get(), sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) fail("run " + sql);
  }

  SqliteStatement prepare(const std::string& sql) {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v3(m_connection.get(), sql.c_str(), static_cast<int>(sql.size()),
                           SQLITE_PREPARE_PERSISTENT, &raw, nullptr) != SQLITE_OK) {
      fail("prepare " + sql.substr(0, 60));
    }
    return SqliteStatement(raw);
  }

  void bind(sqlite3_stmt* statement, int index, std::int64_t value) {
    if (sqlite3_bind_int64(statement, index, value) != SQLITE_OK) fail("bind a parameter");
  }

  void step(sqlite3_stmt* statement) {
    const int code = sqlite3_step(statement);
    sqlite3_reset(statement);
    if (code != SQLITE_DONE) fail(std::string("run ") + sqlite3_sql(statement));
  }

  // Declared first: closed after the statements are finalized.
  std::unique_ptr<sqlite3, SqliteCloser> m_connection;
  SqliteStatement m_begin;
  SqliteStatement m_commit;
  SqliteStatement m_update_one;
  SqliteStatement m_update_in;
};

class PostgresRaw final : public RawBaseline {
 public:
  explicit PostgresRaw(const std::string& url) : m_connection(url) {}

  void create_table(std::int64_t rows) override {
    {
      pqxx::work work(m_connection);
      work.exec0("DROP TABLE IF EXISTS bench_raw");
      work.exec0("CREATE TABLE bench_raw (id BIGINT PRIMARY KEY, v BIGINT NOT NULL DEFAULT 0, "
                 "revision BIGINT NOT NULL DEFAULT 1)");
      work.exec_params0("INSERT INTO bench_raw (id) SELECT generate_series(1, $1::bigint)", rows);
      work.commit();
    }
    m_connection.prepare("bench_update_one", raw_update_one_sql + "$1");
    m_connection.prepare("bench_update_in", raw_update_in_sql(true));
  }

  void update_one(std::int64_t id) override {
    pqxx::work work(m_connection);
    work.exec_prepared0("bench_update_one", id);
    work.commit();
  }

  void update_in(const std::vector<std::int64_t>& ids) override {
    pqxx::work work(m_connection);
    work.exec_prepared0("bench_update_in", pqxx::prepare::make_dynamic_params(ids));
    work.commit();
  }

  void update_each(const std::vector<std::int64_t>& ids) override {
    pqxx::work work(m_connection);
    for (const auto id : ids) work.exec_prepared0("bench_update_one", id);
    work.commit();
  }

  std::int64_t scalar(const std::string& sql) override {
    pqxx::nontransaction work(m_connection);
    return work.exec1(sql)[0].as<std::int64_t>();
  }

  Json settings() override {
    pqxx::nontransaction work(m_connection);
    auto show = [&](const char* name) { return work.exec1(std::string("SHOW ") + name)[0].as<std::string>(); };
    return {{"engine", "PostgreSQL " + show("server_version")},
            {"fsync", show("fsync")},
            {"synchronous_commit", show("synchronous_commit")},
            {"full_page_writes", show("full_page_writes")},
            {"host", m_connection.hostname() != nullptr ? m_connection.hostname() : "(socket)"}};
  }

  void analyze(const std::vector<std::string>& tables) {
    pqxx::nontransaction work(m_connection);
    for (const auto& table : tables) work.exec0("ANALYZE " + table);
  }

 private:
  pqxx::connection m_connection;
};

// --- where the bench runs --------------------------------------------------------

// A SQLite file that did not exist before the run, removed (with its -wal and
// -shm) at the end.
class SqliteScratch {
 public:
  explicit SqliteScratch(const std::optional<std::string>& url) {
    if (!url) {
      std::string pattern = (fs::temp_directory_path() / "livestate-store-bench-XXXXXX").string();
      if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed in " + pattern);
      m_directory = pattern;
      m_path = (fs::path(pattern) / "store_bench.db").string();
      return;
    }
    std::string_view rest = std::string_view(*url).substr(7);  // after "sqlite:"
    if (rest.starts_with("//")) rest.remove_prefix(2);
    if (rest.empty() || rest == ":memory:" || rest.starts_with("file:")) {
      throw std::invalid_argument(
          "--db " + *url + ": give sqlite:PATH of a file that does not exist yet (the raw baseline "
          "opens the same file; the bench deletes it at the end)");
    }
    m_path = std::string(rest);
    if (fs::exists(m_path)) {
      throw std::invalid_argument("--db " + *url + ": " + m_path +
                                  " exists; the bench writes and then deletes its database, so give "
                                  "a path that does not exist yet");
    }
  }
  SqliteScratch(const SqliteScratch&) = delete;
  SqliteScratch& operator=(const SqliteScratch&) = delete;
  ~SqliteScratch() {
    std::error_code ignored;
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) fs::remove(m_path + suffix, ignored);
    if (!m_directory.empty()) fs::remove_all(m_directory, ignored);
  }

  [[nodiscard]] const std::string& path() const noexcept { return m_path; }
  [[nodiscard]] std::string url() const { return "sqlite:" + m_path; }

 private:
  std::string m_directory;  // ours to remove, when we made it
  std::string m_path;
};

// A schema of our own on the server, dropped (with everything in it) at the end.
class PostgresScratch {
 public:
  explicit PostgresScratch(const std::string& url) : m_admin(connect(url)) {
    if (url.find("options=") != std::string::npos) {
      throw std::invalid_argument("--db: the URL sets options= already; the bench sets "
                                  "options=-csearch_path=… to run in a schema of its own");
    }
    std::random_device random;
    m_schema = "livestate_store_bench_" + std::to_string(::getpid()) + "_" + std::to_string(random() % 100000);
    pqxx::nontransaction work(m_admin);
    work.exec0("CREATE SCHEMA " + m_schema);
    if (url.starts_with("postgresql://") || url.starts_with("postgres://")) {
      m_url = url + (url.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" + m_schema;
    } else {
      m_url = url + " options='-csearch_path=" + m_schema + "'";
    }
  }
  PostgresScratch(const PostgresScratch&) = delete;
  PostgresScratch& operator=(const PostgresScratch&) = delete;

  // libpq's message spans lines; the bench's errors are one line.
  static pqxx::connection connect(const std::string& url) {
    try {
      return pqxx::connection(url);
    } catch (const pqxx::broken_connection& error) {
      std::string reason = error.what();
      std::replace_if(reason.begin(), reason.end(), [](char c) { return c == '\n' || c == '\t'; }, ' ');
      while (!reason.empty() && (reason.back() == ' ' || reason.back() == '\t')) reason.pop_back();
      throw std::runtime_error("cannot connect to the --db server: " + reason);
    }
  }
  ~PostgresScratch() {
    try {
      pqxx::nontransaction work(m_admin);
      work.exec0("DROP SCHEMA " + m_schema + " CASCADE");
    } catch (const std::exception& error) {
      std::cerr << program << ": could not drop schema " << m_schema << ": " << error.what() << '\n';
    }
  }

  [[nodiscard]] const std::string& url() const noexcept { return m_url; }
  [[nodiscard]] const std::string& schema() const noexcept { return m_schema; }

 private:
  pqxx::connection m_admin;
  std::string m_schema;
  std::string m_url;
};

// --- --profile: every statement of every SQLite connection ----------------------

struct StatementProfile {
  std::uint64_t count = 0;
  std::uint64_t nanoseconds = 0;
};

struct SqliteProfiler {
  bool enabled = false;
  std::map<std::string, StatementProfile> by_sql;  // SQL text (shortened) -> totals

  void reset() { by_sql.clear(); }
};

SqliteProfiler g_profiler;

int on_sqlite_trace(unsigned type, void*, void* statement, void* nanoseconds) {
  if (type != SQLITE_TRACE_PROFILE || !g_profiler.enabled) return 0;
  const char* sql = sqlite3_sql(static_cast<sqlite3_stmt*>(statement));
  std::string key = sql != nullptr ? sql : "?";
  if (key.size() > 90) key = key.substr(0, 90) + "…";
  auto& profile = g_profiler.by_sql[key];
  ++profile.count;
  profile.nanoseconds += *static_cast<const sqlite3_int64*>(nanoseconds);
  return 0;
}

// Runs for every connection opened afterwards, the store's included.
int trace_new_connection(sqlite3* connection, const char**, const struct sqlite3_api_routines*) {
  sqlite3_trace_v2(connection, SQLITE_TRACE_PROFILE, &on_sqlite_trace, nullptr);
  return SQLITE_OK;
}

// --- the store side ----------------------------------------------------------

// A store on an in-process connector with one consumer on "#", the requests
// the store cases use, and the count of messages that must have been delivered.
class StoreSide {
 public:
  explicit StoreSide(const std::string& url)
      : m_mq(livestate::mq::make_simple_mq()),
        m_consumer(m_mq->start_consuming([this](const livestate::RoutingKey&, const Json&) { ++m_received; },
                                         livestate::Filter::parse("#"))),
        m_store(livestate::db::Store::open(url, *m_mq)) {
    m_master = m_store->master_active("store-bench-master");
    for (std::size_t i = 0; i < batch_rows; ++i) {
      m_builders.push_back(m_store->builder_started("store-bench-builder-" + std::to_string(i), m_master));
    }
    m_expected = m_received;
  }

  // One buildset of one request per element (for claim and complete), in
  // transactions of a few hundred buildsets.
  std::vector<std::int64_t> add_single_requests(std::size_t count) {
    std::vector<std::int64_t> ids;
    ids.reserve(count);
    livestate::db::NewBuildset buildset;
    buildset.builderids = {m_builders.front()};
    buildset.reason = "store_bench";
    for (std::size_t done = 0; done < count;) {
      auto transaction = m_store->begin();
      for (std::size_t i = 0; i < 250 && done < count; ++i, ++done) {
        ids.push_back(transaction.add_buildset(buildset).buildrequestids.at(m_builders.front()));
      }
      transaction.commit();
    }
    sync_expected();
    return ids;
  }

  // One buildset of batch_rows requests (one per builder) per element.
  std::vector<std::vector<std::int64_t>> add_batch_requests(std::size_t count) {
    std::vector<std::vector<std::int64_t>> batches;
    livestate::db::NewBuildset buildset;
    buildset.builderids = m_builders;
    buildset.reason = "store_bench";
    for (std::size_t done = 0; done < count;) {
      auto transaction = m_store->begin();
      for (std::size_t i = 0; i < 10 && done < count; ++i, ++done) {
        std::vector<std::int64_t> ids;
        for (const auto& [builder, request] : transaction.add_buildset(buildset).buildrequestids) ids.push_back(request);
        batches.push_back(std::move(ids));
      }
      transaction.commit();
    }
    sync_expected();
    return batches;
  }

  void claim(std::span<const std::int64_t> ids) { m_store->claim_buildrequests(ids, m_master); }
  void complete(std::span<const std::int64_t> ids) {
    m_store->complete_buildrequests(ids, livestate::db::results::success, m_master);
  }

  /// After a batch: the consumer must have got `messages` more.
  void expect_delivered(std::uint64_t messages, std::string_view what) {
    m_expected += messages;
    const auto stats = m_mq->stats();
    if (m_received != m_expected || stats.callback_errors != 0) {
      throw std::runtime_error(std::string(what) + ": the consumer on \"#\" got " + std::to_string(m_received) +
                               " messages in all, expected " + std::to_string(m_expected) + " (" +
                               std::to_string(stats.callback_errors) + " callback errors)");
    }
  }

  [[nodiscard]] livestate::db::Store& store() const noexcept { return *m_store; }

 private:
  void sync_expected() { m_expected = m_received; }

  std::uint64_t m_received = 0;
  std::uint64_t m_expected = 0;
  // The connector outlives the store and the consumer.
  std::unique_ptr<livestate::mq::Connector> m_mq;
  std::unique_ptr<livestate::mq::Consumer> m_consumer;
  std::unique_ptr<livestate::db::Store> m_store;
  std::int64_t m_master = 0;
  std::vector<std::int64_t> m_builders;
};

// --- cases, timing, report -------------------------------------------------------

struct CaseResult {
  std::string name;
  std::string what;
  std::size_t rows_per_op = 0;
  std::size_t messages_per_op = 0;
  std::size_t ops_per_rep = 0;
  std::vector<double> us_per_op;  // one per measured repetition
  std::optional<StatementProfile> profile;  // per operation, --profile
  std::map<std::string, StatementProfile> statements;  // --profile, totals over the measured reps

  [[nodiscard]] double median_us() const {
    std::vector<double> values = us_per_op;
    std::sort(values.begin(), values.end());
    const std::size_t n = values.size();
    return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
  }
  [[nodiscard]] double ops_per_second() const { return 1e6 / median_us(); }
};

// Runs `operation(i)` for i in [0, ops) and returns µs per operation.
template <class Operation>
double time_ops(std::size_t ops, Operation&& operation) {
  const auto start = Clock::now();
  for (std::size_t i = 0; i < ops; ++i) operation(i);
  const auto stop = Clock::now();
  return std::chrono::duration<double, std::micro>(stop - start).count() / static_cast<double>(ops);
}

std::string fixed(double value, int decimals) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(decimals) << value;
  return out.str();
}

std::string grouped(double value) {
  const std::string digits = std::to_string(static_cast<long long>(value + 0.5));
  std::string text;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) text += ',';
    text += digits[i];
  }
  return text;
}

struct Ratio {
  std::string name;
  std::string numerator;
  std::string denominator;
  double value = 0;
  bool has_target = true;
};

class Bench {
 public:
  Bench(const Options& options, std::string backend, const std::string& store_url,
        std::unique_ptr<RawBaseline> raw)
      : m_options(options), m_backend(std::move(backend)), m_raw(std::move(raw)), m_store(store_url) {}

  void run(const std::function<void()>& before_timing) {
    const std::size_t rounds = static_cast<std::size_t>(m_options.reps) + 1;  // round 0 warms up
    const std::size_t ops = m_options.ops;
    const std::size_t batches = m_options.batches;

    std::vector<std::vector<std::int64_t>> singles;
    std::vector<std::vector<std::vector<std::int64_t>>> hundreds;
    for (std::size_t round = 0; round < rounds; ++round) {
      singles.push_back(m_store.add_single_requests(ops));
      hundreds.push_back(m_store.add_batch_requests(batches));
    }
    m_table_rows = m_raw->scalar("SELECT COUNT(*) FROM buildrequests");
    m_raw->create_table(m_table_rows);
    before_timing();

    CaseResult raw_one{"raw_update_1", "BEGIN; UPDATE 1 row; COMMIT (raw driver)", 1, 0, ops, {}, {}, {}};
    CaseResult raw_in{"raw_update_100", "BEGIN; UPDATE … WHERE id IN (100 ids); COMMIT", batch_rows, 0, batches,
                      {}, {}, {}};
    CaseResult raw_each{"raw_update_100_each", "BEGIN; 100 × UPDATE 1 row; COMMIT", batch_rows, 0, batches,
                        {}, {}, {}};
    CaseResult claim_one{"store_claim_1", "claim_buildrequests([1 request])", 1, 3, ops, {}, {}, {}};
    CaseResult complete_one{"store_complete_1", "complete_buildrequests([1 request]) + its buildset", 2, 4, ops,
                            {}, {}, {}};
    CaseResult claim_hundred{"store_claim_100", "claim_buildrequests([100 requests])", batch_rows,
                             3 * batch_rows, batches, {}, {}, {}};

    std::int64_t next_raw_id = 0;  // cycles through bench_raw
    auto next_ids = [&](std::size_t count) {
      std::vector<std::int64_t> ids;
      for (std::size_t i = 0; i < count; ++i) {
        ids.push_back(next_raw_id + 1);
        next_raw_id = (next_raw_id + 1) % m_table_rows;
      }
      return ids;
    };
    std::vector<std::vector<std::int64_t>> raw_ids;
    std::int64_t raw_row_updates = 0;

    auto measure = [&](CaseResult& result, bool measured, auto&& body) {
      g_profiler.reset();
      const double us = body();
      if (!measured) return;
      result.us_per_op.push_back(us);
      if (m_options.profile) {
        for (const auto& [sql, profile] : g_profiler.by_sql) {
          auto& total = result.statements[sql];
          total.count += profile.count;
          total.nanoseconds += profile.nanoseconds;
        }
      }
    };

    // A case not selected by --case is skipped, except that the claims the
    // complete case needs are then made untimed.
    auto selected = [&](const CaseResult& result) {
      return m_options.cases.empty() || m_options.cases.contains(result.name);
    };
    const bool claim_singles = selected(claim_one) || selected(complete_one);

    for (std::size_t round = 0; round < rounds; ++round) {
      const bool measured = round > 0;
      if (selected(raw_one)) {
        raw_ids.assign(1, next_ids(ops));  // drawn before the clock starts
        measure(raw_one, measured, [&] {
          const auto& ids = raw_ids.front();
          return time_ops(ops, [&](std::size_t i) { m_raw->update_one(ids[i]); });
        });
        raw_row_updates += static_cast<std::int64_t>(ops);
      }

      const auto& claim_ids = singles[round];
      auto claim_each = [&](std::size_t i) { m_store.claim(std::span(&claim_ids[i], 1)); };
      if (selected(claim_one)) {
        measure(claim_one, measured, [&] { return time_ops(ops, claim_each); });
      } else if (claim_singles) {
        time_ops(ops, claim_each);
      }
      if (claim_singles) m_store.expect_delivered(3 * ops, "store_claim_1");

      if (selected(complete_one)) {
        measure(complete_one, measured, [&] {
          return time_ops(ops, [&](std::size_t i) { m_store.complete(std::span(&claim_ids[i], 1)); });
        });
        m_store.expect_delivered(4 * ops, "store_complete_1");
      }

      if (selected(raw_in)) {
        raw_ids.clear();
        for (std::size_t b = 0; b < batches; ++b) raw_ids.push_back(next_ids(batch_rows));
        measure(raw_in, measured, [&] {
          return time_ops(batches, [&](std::size_t b) { m_raw->update_in(raw_ids[b]); });
        });
        raw_row_updates += static_cast<std::int64_t>(batches * batch_rows);
      }

      if (selected(claim_hundred)) {
        const auto& hundred_ids = hundreds[round];
        measure(claim_hundred, measured, [&] {
          return time_ops(batches, [&](std::size_t b) { m_store.claim(hundred_ids[b]); });
        });
        m_store.expect_delivered(3 * batch_rows * batches, "store_claim_100");
      }

      if (selected(raw_each)) {
        raw_ids.clear();
        for (std::size_t b = 0; b < batches; ++b) raw_ids.push_back(next_ids(batch_rows));
        measure(raw_each, measured, [&] {
          return time_ops(batches, [&](std::size_t b) { m_raw->update_each(raw_ids[b]); });
        });
        raw_row_updates += static_cast<std::int64_t>(batches * batch_rows);
      }
    }

    verify(raw_row_updates, selected(complete_one) ? rounds * ops : 0,
           (claim_singles ? rounds * ops : 0) + (selected(claim_hundred) ? rounds * batches * batch_rows : 0));
    for (const CaseResult* result : {&raw_one, &raw_in, &raw_each, &claim_one, &complete_one, &claim_hundred}) {
      if (selected(*result)) m_results.push_back(*result);
    }
    if (m_options.profile) {
      for (auto& result : m_results) {
        StatementProfile per_op;
        const double operations = static_cast<double>(result.ops_per_rep) * static_cast<double>(m_options.reps);
        for (const auto& [sql, profile] : result.statements) {
          per_op.count += profile.count;
          per_op.nanoseconds += profile.nanoseconds;
        }
        result.profile = StatementProfile{
            static_cast<std::uint64_t>(static_cast<double>(per_op.count) / operations + 0.5),
            static_cast<std::uint64_t>(static_cast<double>(per_op.nanoseconds) / operations)};
      }
    }
  }

  void report(const Json& settings) const {
    std::vector<Ratio> ratios;
    auto ratio = [&](std::string_view numerator, std::string_view denominator, bool has_target) {
      const CaseResult* top = find(numerator);
      const CaseResult* bottom = find(denominator);
      if (top == nullptr || bottom == nullptr) return;
      ratios.push_back({top->name.substr(6) + "/" + bottom->name.substr(4), top->name, bottom->name,
                        top->median_us() / bottom->median_us(), has_target});
    };
    ratio("store_claim_1", "raw_update_1", true);
    ratio("store_complete_1", "raw_update_1", true);
    // Only single operations have a target (2x); the batch is for information.
    ratio("store_claim_100", "raw_update_100", false);
    ratio("store_claim_100", "raw_update_100_each", false);
    if (m_options.json) {
      report_json(settings, ratios);
    } else {
      report_table(settings, ratios);
    }
  }

 private:
  [[nodiscard]] const CaseResult* find(std::string_view name) const {
    for (const auto& result : m_results) {
      if (result.name == name) return &result;
    }
    return nullptr;
  }

  // Every raw update landed; the store holds exactly the completions (each
  // completing its buildset too) and the claims the operations made.
  void verify(std::int64_t raw_row_updates, std::size_t completed, std::size_t claimed) {
    const auto sum = m_raw->scalar("SELECT COALESCE(SUM(v), 0) FROM bench_raw");
    if (sum != raw_row_updates) {
      throw std::runtime_error("bench_raw counts " + std::to_string(sum) + " updates, expected " +
                               std::to_string(raw_row_updates));
    }
    const auto complete = m_raw->scalar("SELECT COUNT(*) FROM buildrequests WHERE complete = " +
                                        std::string(m_backend == "postgresql" ? "TRUE" : "1"));
    const auto claims = m_raw->scalar("SELECT COUNT(*) FROM buildrequest_claims");
    const auto buildsets = m_raw->scalar("SELECT COUNT(*) FROM buildsets WHERE complete = " +
                                         std::string(m_backend == "postgresql" ? "TRUE" : "1"));
    if (complete != static_cast<std::int64_t>(completed) || buildsets != static_cast<std::int64_t>(completed) ||
        claims != static_cast<std::int64_t>(claimed)) {
      throw std::runtime_error("the store holds " + std::to_string(complete) + " complete requests, " +
                               std::to_string(buildsets) + " complete buildsets and " + std::to_string(claims) +
                               " claims; expected " + std::to_string(completed) + ", " + std::to_string(completed) +
                               " and " + std::to_string(claimed));
    }
  }

  void report_json(const Json& settings, const std::vector<Ratio>& ratios) const {
    using Ordered = nlohmann::ordered_json;
    std::cout << Ordered{{"bench", "store"},
                         {"backend", m_backend},
                         {"meta", true},
                         {"db", m_store.store().name()},
                         {"settings", Ordered::parse(settings.dump())},
                         {"buildrequests_rows", m_table_rows},
                         {"reps", m_options.reps},
                         {"quick", m_options.quick},
                         {"profile", m_options.profile}}
                     .dump()
              << '\n';
    for (const auto& result : m_results) {
      Ordered line{{"bench", "store"},
                   {"backend", m_backend},
                   {"case", result.name},
                   {"unit", "transactions/s"},
                   {"median", result.ops_per_second()},
                   {"median_us", result.median_us()},
                   {"reps_us", result.us_per_op},
                   {"ops_per_rep", result.ops_per_rep},
                   {"rows_per_op", result.rows_per_op},
                   {"messages_per_op", result.messages_per_op}};
      if (result.profile) {
        line["sqlite_statements_per_op"] = result.profile->count;
        line["sqlite_us_per_op"] = static_cast<double>(result.profile->nanoseconds) / 1000.0;
      }
      std::cout << line.dump() << '\n';
    }
    for (const auto& ratio : ratios) {
      Ordered line{{"bench", "store"},   {"backend", m_backend},           {"ratio", ratio.name},
                   {"value", ratio.value}, {"numerator", ratio.numerator}, {"denominator", ratio.denominator}};
      if (ratio.has_target) {
        line["target"] = target_ratio;
        line["met"] = ratio.value <= target_ratio;
      }
      std::cout << line.dump() << '\n';
    }
    std::cout.flush();
  }

  void report_table(const Json& settings, const std::vector<Ratio>& ratios) const {
    std::cout << "store_bench: " << m_backend << " (" << m_store.store().name() << ")\n  ";
    bool first = true;
    for (const auto& [key, value] : settings.items()) {
      std::cout << (first ? "" : ", ") << key << " " << (value.is_string() ? value.get<std::string>() : value.dump());
      first = false;
    }
    std::cout << "\n  buildrequests and bench_raw: " << m_table_rows << " rows; " << m_options.reps
              << " repetitions (medians) of " << m_options.ops << " single-row and " << m_options.batches
              << " 100-row transactions per case" << (m_options.quick ? "; --quick: the numbers mean nothing" : "")
              << (m_options.profile ? "; --profile: timings include statement tracing" : "") << "\n\n";

    std::cout << pad("case", -21) << pad("one operation", -52) << pad("rows", 5) << pad("msgs", 6)
              << pad("µs/op", 10) << pad("ops/s", 10) << pad("min–max µs/op", 18);
    if (m_options.profile) std::cout << pad("stmts", 7) << pad("in SQLite µs", 14);
    std::cout << '\n';
    for (const auto& result : m_results) {
      const auto [low, high] = std::minmax_element(result.us_per_op.begin(), result.us_per_op.end());
      std::cout << pad(result.name, -21) << pad(result.what, -52) << pad(std::to_string(result.rows_per_op), 5)
                << pad(std::to_string(result.messages_per_op), 6) << pad(fixed(result.median_us(), 1), 10)
                << pad(grouped(result.ops_per_second()), 10) << pad(fixed(*low, 1) + "–" + fixed(*high, 1), 18);
      if (result.profile) {
        std::cout << pad(std::to_string(result.profile->count), 7)
                  << pad(fixed(static_cast<double>(result.profile->nanoseconds) / 1000.0, 1), 14);
      }
      std::cout << '\n';
    }
    if (!ratios.empty()) std::cout << "\nratios of µs/op (target ≤ " << fixed(target_ratio, 0) << "x):\n";
    for (const auto& ratio : ratios) {
      std::cout << "  " << pad(ratio.numerator + " / " + ratio.denominator, -42) << pad(fixed(ratio.value, 2), 8)
                << "x"
                << (ratio.has_target ? (ratio.value <= target_ratio ? "  met" : "  NOT MET") : "  (for information)")
                << '\n';
    }
    if (m_options.profile) {
      std::cout << "\nstatements per operation: count, µs inside SQLite (SQLite's clock ticks in ms: an "
                   "average over many operations)\n";
      for (const auto& result : m_results) {
        const double operations = static_cast<double>(result.ops_per_rep) * static_cast<double>(m_options.reps);
        std::cout << "  " << result.name << ":\n";
        for (const auto& [sql, profile] : result.statements) {
          std::cout << "    " << pad(fixed(static_cast<double>(profile.count) / operations, 2), 6)
                    << pad(fixed(static_cast<double>(profile.nanoseconds) / 1000.0 / operations, 2), 9) << "  "
                    << sql << '\n';
        }
      }
    }
    std::cout.flush();
  }

  // `text` padded to `width` characters (UTF-8 aware): right-aligned, or
  // left-aligned for a negative width.
  static std::string pad(const std::string& text, int width) {
    const auto characters = static_cast<int>(
        std::count_if(text.begin(), text.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
    const std::string spaces(static_cast<std::size_t>(std::max(0, std::abs(width) - characters)), ' ');
    return width < 0 ? text + spaces : spaces + text;
  }

  const Options& m_options;
  std::string m_backend;
  std::unique_ptr<RawBaseline> m_raw;
  StoreSide m_store;
  std::int64_t m_table_rows = 0;
  std::vector<CaseResult> m_results;
};

int run(const Options& options) {
  const std::string url = options.db.value_or("sqlite:");
  if (is_postgres_url(url)) {
    if (options.profile) usage_error("--profile traces SQLite only");
    const PostgresScratch scratch(url);
    auto raw = std::make_unique<PostgresRaw>(scratch.url());
    PostgresRaw& raw_postgres = *raw;
    Json settings = raw->settings();
    settings["schema"] = scratch.schema();
    // Destroyed before the scratch schema is dropped: the store's and the raw
    // connections close first.
    Bench bench(options, "postgresql", scratch.url(), std::move(raw));
    // Statistics for the filled tables, as autovacuum would soon have them.
    // Not buildrequest_claims: ANALYZEd while empty, it gets plans that scan
    // it, which stay cached in the store's sessions as it grows.
    bench.run([&] { raw_postgres.analyze({"bench_raw", "buildrequests", "buildsets"}); });
    bench.report(settings);
    return 0;
  }
  if (!url.starts_with("sqlite:")) usage_error("--db wants sqlite:PATH or postgresql://…, not \"" + url + "\"");
  if (options.profile) {
    sqlite3_auto_extension(reinterpret_cast<void (*)()>(&trace_new_connection));
    g_profiler.enabled = true;
  }
  const SqliteScratch scratch(options.db);
  auto raw = std::make_unique<SqliteRaw>(scratch.path());
  const Json settings = raw->settings();
  Bench bench(options, "sqlite", scratch.url(), std::move(raw));
  bench.run([] {});
  bench.report(settings);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse_options(argc, argv);
  try {
    return run(options);
  } catch (const std::exception& error) {
    std::cerr << program << ": FAILED: " << error.what() << '\n';
    return 1;
  }
}
