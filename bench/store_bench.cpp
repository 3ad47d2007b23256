// store_bench: what the state store's update methods cost beside the raw
// speed of the same database on this machine, in the same run.
//
// Cases (each is one transaction per operation; µs/op and ops/s):
//   store_claim_1     claim_buildrequests of one unclaimed request (3 messages)
//   raw_claim_1       the same operation by hand through the raw driver
//                     (sqlite3 C API with the store's settings, or libpqxx's
//                     pqxx::work): BEGIN; INSERT the claim if the request is
//                     incomplete; UPDATE the request's revision and change
//                     position; COMMIT
//   store_complete_1  complete_buildrequests of one claimed request, the only
//                     request of its buildset: the request and the buildset
//                     complete (two rows, four messages)
//   raw_complete_1    BEGIN; UPDATE the request if this master holds its claim
//                     (on PostgreSQL, then lock its buildset, in the same
//                     statement); UPDATE its buildset if none of its requests
//                     is incomplete, with their worst result; COMMIT
//   store_claim_100   claim_buildrequests of 100 requests in one call
//   raw_claim_100     BEGIN; INSERT 100 claims (… WHERE id IN (100) AND NOT
//                     complete); UPDATE … WHERE id IN (100); COMMIT
// The raw cases change the store's own tables (their indexes too), rows the
// store made alike, set what the store sets: revision, position (migration
// 0007), and on SQLite the change counter, and check what the store must
// check: a claim of a complete request, a completion by a master without
// the claim, a buildset with a request still incomplete are refused or left
// alone, also when two completions race (the lock). They announce nothing:
// the store's cost beyond them is its own (bodies, messages, its session).
// Those checks are about 30 µs of a PostgreSQL server's CPU per raw
// completion (nearly half of it), a few µs per claim.
//
// The store announces on an in-process connector (make_simple_mq()) with one
// consumer on "#", so every message is really delivered. After every batch the
// consumer's count is checked against what the operations must announce, and
// at the end the database is checked (every claim and completion, the
// store's and the raw driver's, is there); a wrong count fails the program
// (exit 1).
//
// Every operation changes requests no earlier operation touched, made for it
// by the store before the timing starts. The cases are interleaved within
// each repetition, so that a WAL checkpoint or a server hiccup lands on all
// of them alike; a first, unmeasured repetition warms everything up.
//
// Databases:
//   sqlite:PATH      a file that must not exist: created, and deleted at the end
//                    (default: a file in a fresh temporary directory). The raw
//                    connection opens it as the store does: WAL,
//                    synchronous=NORMAL, foreign_keys=ON, busy timeout.
//   postgresql://…   a server (or a libpq conninfo string). The bench creates a
//                    schema of its own, runs the store and the raw driver in it (the
//                    URL gets options=-csearch_path=SCHEMA) and drops it at the
//                    end. It prints the server's fsync and synchronous_commit.
//
// Usage: store_bench [--db URL] [--reps N] [--ops N] [--batches N] [--case NAME]...
//                    [--json] [--quick] [--profile]
//   --reps N     measured repetitions (15); each case reports the median
//   --ops N      single-row operations per repetition and case (600)
//   --batches N  100-row operations per repetition and case (6)
//   --case NAME  run only this case (repeatable; to profile one with perf);
//                a complete case alone still claims its requests, untimed
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
#include <cstdint>
#include <cstdlib>
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
#include "scratch_db.hpp"

namespace {

using livestate::Json;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr std::size_t batch_rows = 100;
constexpr double target_ratio = 1.3;
constexpr const char* program = "store_bench";

// --- options -------------------------------------------------------------------

struct Options {
  std::optional<std::string> db;
  // Many short repetitions rather than a few long ones: on a machine shared
  // with other work, a burst of load then spoils a few repetitions of every
  // case, which the medians drop, rather than most of one case.
  int reps = 15;
  std::size_t ops = 600;
  std::size_t batches = 6;
  bool json = false;
  bool quick = false;
  bool profile = false;
  std::set<std::string, std::less<>> cases;  // empty: all
};

constexpr std::string_view case_names[] = {"raw_claim_1",      "store_claim_1", "raw_complete_1",
                                           "store_complete_1", "raw_claim_100", "store_claim_100"};

constexpr const char* usage_text =
    "usage: store_bench [--db URL] [--reps N] [--ops N] [--batches N] [--case NAME]... [--json]\n"
    "                   [--quick] [--profile]\n"
    "  --db URL     sqlite:PATH (a new file; default: a temporary one) or postgresql://…\n"
    "  --reps N     measured repetitions, medians reported (15)\n"
    "  --ops N      single-row operations per repetition and case (600)\n"
    "  --batches N  100-row operations per repetition and case (6)\n"
    "  --case NAME  only this case (repeatable): raw_claim_1, store_claim_1, raw_complete_1,\n"
    "               store_complete_1, raw_claim_100, store_claim_100\n"
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

// The same row changes as the store's operations, made by hand through the
// engine's own driver on the store's own tables (so with the same indexes),
// one transaction per operation: what a program that changes these rows
// itself, and announces nothing, would run. A row change sets `revision` and
// `position` (migration 0007) as the store does.
class RawBaseline {
 public:
  RawBaseline() = default;
  RawBaseline(const RawBaseline&) = delete;
  RawBaseline& operator=(const RawBaseline&) = delete;
  virtual ~RawBaseline() = default;

  /// Prepares the statements (once the store has made the tables).
  virtual void prepare() = 0;
  /// BEGIN; INSERT the claims of the incomplete requests among `ids`; UPDATE
  /// their revision and position; COMMIT. Throws unless every one was claimed.
  virtual void claim(std::span<const std::int64_t> ids, std::int64_t masterid, double now) = 0;
  /// BEGIN; UPDATE the request complete if `masterid` holds its claim (on
  /// PostgreSQL, then lock its buildset); UPDATE the buildset complete, with
  /// the worst result, if none of its requests is incomplete; COMMIT. Throws
  /// unless the request was completed.
  virtual void complete(std::int64_t id, std::int64_t buildsetid, std::int64_t masterid, double now) = 0;
  /// A single number from a query (counts, sums).
  [[nodiscard]] virtual std::int64_t scalar(const std::string& sql) = 0;
  /// The settings that decide the speed, for the report.
  [[nodiscard]] virtual Json settings() = 0;
};

// "(?1,?2,…)": `count` numbered parameters from `first`, `marker` being the
// engine's ('$' for PostgreSQL, '?' for SQLite).
std::string in_list(std::size_t count, char marker, std::size_t first = 1) {
  std::string text = "(";
  for (std::size_t i = 0; i < count; ++i) {
    if (i > 0) text += ',';
    text += marker;
    text += std::to_string(first + i);
  }
  return text + ")";
}

// The SQL of each operation, for an engine: its parameter `marker`, and
// `position(table)`, its expression of a row's change position. Each does
// what the store's operation must decide, not only what it writes: a claim
// only of an incomplete request, a completion only by the master holding
// the claim, the buildset complete only once none of its requests is
// incomplete, with the worst of their results (Buildbot's order of severity,
// as the store has it). A program that made these changes by hand and
// skipped those checks would claim complete requests, complete other
// masters' and complete buildsets too early.
struct RawSql {
  std::string claim_one, claim_hundred, bump_one, bump_hundred, complete_request, complete_buildset;

  RawSql(char marker, const std::function<std::string(const std::string&)>& position) {
    const auto p = [&](std::size_t n) { return marker + std::to_string(n); };
    const auto bump = [&](const std::string& table) {
      return "revision = revision + 1, position = " + position(table);
    };
    // ids at 1..n, the master at n+1, the time at n+2.
    const auto claim = [&](std::size_t rows) {
      return "INSERT INTO buildrequest_claims (brid, masterid, claimed_at) SELECT id, CAST(" + p(rows + 1) +
             " AS BIGINT), CAST(" + p(rows + 2) + " AS DOUBLE PRECISION) FROM buildrequests WHERE " +
             (rows == 1 ? "id = " + p(1) : "id IN " + in_list(rows, marker)) + " AND NOT complete";
    };
    claim_one = claim(1);
    claim_hundred = claim(batch_rows);
    bump_one = "UPDATE buildrequests SET " + bump("buildrequests") + " WHERE id = " + p(1);
    bump_hundred = "UPDATE buildrequests SET " + bump("buildrequests") + " WHERE id IN " + in_list(batch_rows, marker);
    // complete, results, complete_at, request, master (and on PostgreSQL the buildset).
    complete_request = "UPDATE buildrequests SET complete = " + p(1) + ", results = " + p(2) + ", complete_at = " +
                       p(3) + ", " + bump("buildrequests") + " WHERE id = " + p(4) +
                       " AND NOT complete AND EXISTS (SELECT 1 FROM buildrequest_claims WHERE brid = " + p(4) +
                       " AND masterid = " + p(5) + ")";
    // complete, complete_at, buildset.
    complete_buildset = "UPDATE buildsets SET complete = " + p(1) + ", complete_at = " + p(2) + ", " +
                        bump("buildsets") + ", results = (SELECT results FROM buildrequests WHERE buildsetid = " +
                        p(3) +
                        " ORDER BY CASE results WHEN 3 THEN 0 WHEN 0 THEN 1 WHEN 1 THEN 2 WHEN 2 THEN 3 WHEN 4 "
                        "THEN 4 WHEN 5 THEN 5 WHEN 6 THEN 6 ELSE -1 END DESC LIMIT 1) WHERE id = " +
                        p(3) + " AND NOT complete AND NOT EXISTS (SELECT 1 FROM buildrequests WHERE buildsetid = " +
                        p(3) + " AND NOT complete)";
  }
};

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
                                     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI,
                                     nullptr);
    m_connection.reset(raw);
    if (code != SQLITE_OK) fail("open " + path);
    sqlite3_extended_result_codes(raw, 1);
    sqlite3_busy_timeout(raw, 5000);
    exec("PRAGMA foreign_keys = ON");
    exec("PRAGMA journal_mode = WAL");
    exec("PRAGMA synchronous = NORMAL");
    m_begin = prepare("BEGIN IMMEDIATE");
    m_commit = prepare("COMMIT");
  }

  void prepare() override {
    const RawSql sql(
        '?', [](const std::string& table) { return "(SELECT IFNULL(MAX(position), 0) + 1 FROM " + table + ")"; });
    m_claim_one = prepare(sql.claim_one);
    m_claim_hundred = prepare(sql.claim_hundred);
    m_bump_one = prepare(sql.bump_one);
    m_bump_hundred = prepare(sql.bump_hundred);
    m_complete_request = prepare(sql.complete_request);
    m_complete_buildset = prepare(sql.complete_buildset);
  }

  void claim(std::span<const std::int64_t> ids, std::int64_t masterid, double now) override {
    const bool one = ids.size() == 1;
    sqlite3_stmt* insert = one ? m_claim_one.get() : m_claim_hundred.get();
    sqlite3_stmt* bump = one ? m_bump_one.get() : m_bump_hundred.get();
    step(m_begin.get());
    const int count = static_cast<int>(ids.size());
    for (int i = 0; i < count; ++i) {
      bind(insert, i + 1, ids[static_cast<std::size_t>(i)]);
      bind(bump, i + 1, ids[static_cast<std::size_t>(i)]);
    }
    bind(insert, count + 1, masterid);
    bind(insert, count + 2, now);
    step(insert);
    expect_changed(ids.size(), "claim");
    step(bump);
    step(m_commit.get());
  }

  void complete(std::int64_t id, std::int64_t buildsetid, std::int64_t masterid, double now) override {
    step(m_begin.get());
    sqlite3_stmt* request = m_complete_request.get();
    bind(request, 1, std::int64_t{1});
    bind(request, 2, std::int64_t{livestate::db::results::success});
    bind(request, 3, now);
    bind(request, 4, id);
    bind(request, 5, masterid);
    step(request);
    expect_changed(1, "complete");
    sqlite3_stmt* buildset = m_complete_buildset.get();
    bind(buildset, 1, std::int64_t{1});
    bind(buildset, 2, now);
    bind(buildset, 3, buildsetid);
    step(buildset);
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
    if (sqlite3_prepare_v3(m_connection.get(), sql.c_str(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                           &raw, nullptr) != SQLITE_OK) {
      fail("prepare " + sql.substr(0, 60));
    }
    return SqliteStatement(raw);
  }

  void bind(sqlite3_stmt* statement, int index, std::int64_t value) {
    if (sqlite3_bind_int64(statement, index, value) != SQLITE_OK) fail("bind a parameter");
  }
  void bind(sqlite3_stmt* statement, int index, double value) {
    if (sqlite3_bind_double(statement, index, value) != SQLITE_OK) fail("bind a parameter");
  }

  void step(sqlite3_stmt* statement) {
    const int code = sqlite3_step(statement);
    sqlite3_reset(statement);
    if (code != SQLITE_DONE) fail(std::string("run ") + sqlite3_sql(statement));
  }

  // The last statement changed `rows` rows, or the operation was refused.
  void expect_changed(std::size_t rows, const char* what) {
    if (sqlite3_changes64(m_connection.get()) != static_cast<sqlite3_int64>(rows)) {
      throw std::runtime_error(std::string("raw SQLite: ") + what + " refused");
    }
  }

  // Declared first: closed after the statements are finalized.
  std::unique_ptr<sqlite3, SqliteCloser> m_connection;
  SqliteStatement m_begin, m_commit, m_claim_one, m_claim_hundred, m_bump_one, m_bump_hundred, m_complete_request,
      m_complete_buildset;
};

class PostgresRaw final : public RawBaseline {
 public:
  explicit PostgresRaw(const std::string& url) : m_connection(url) {}

  void prepare() override {
    const RawSql sql('$', [](const std::string&) { return std::string("pg_current_xact_id()"); });
    m_connection.prepare("claim_one", sql.claim_one);
    m_connection.prepare("claim_hundred", sql.claim_hundred);
    m_connection.prepare("bump_one", sql.bump_one);
    m_connection.prepare("bump_hundred", sql.bump_hundred);
    // Completions of a buildset's last two requests, running at once, must
    // not each see the other's request incomplete (READ COMMITTED): the
    // buildset is locked before its UPDATE, whose snapshot then sees what
    // the other committed. In the same statement, as the store does it.
    m_connection.prepare("complete_request", "WITH done AS (" + sql.complete_request +
                                                 " RETURNING 1) SELECT id FROM buildsets WHERE id = $6 AND EXISTS "
                                                 "(SELECT 1 FROM done) FOR UPDATE");
    m_connection.prepare("complete_buildset", sql.complete_buildset);
  }

  void claim(std::span<const std::int64_t> ids, std::int64_t masterid, double now) override {
    const bool one = ids.size() == 1;
    std::vector<std::string> claims;  // text: the parameters mix bigint and double
    claims.reserve(ids.size() + 2);
    for (const auto id : ids) claims.push_back(std::to_string(id));
    claims.push_back(std::to_string(masterid));
    claims.push_back(to_text(now));
    const std::vector<std::int64_t> bumped(ids.begin(), ids.end());
    pqxx::work work(m_connection);
    const auto claimed =
        work.exec_prepared(one ? "claim_one" : "claim_hundred", pqxx::prepare::make_dynamic_params(claims));
    if (claimed.affected_rows() != ids.size()) throw std::runtime_error("raw PostgreSQL: claim refused");
    work.exec_prepared0(one ? "bump_one" : "bump_hundred", pqxx::prepare::make_dynamic_params(bumped));
    work.commit();
  }

  void complete(std::int64_t id, std::int64_t buildsetid, std::int64_t masterid, double now) override {
    pqxx::work work(m_connection);
    // One row: the request was completed and its buildset is locked.
    work.exec_prepared1("complete_request", true, livestate::db::results::success, now, id, masterid, buildsetid);
    work.exec_prepared0("complete_buildset", true, now, buildsetid);
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
  static std::string to_text(double value) {
    std::ostringstream text;
    text << std::setprecision(17) << value;
    return text.str();
  }

  pqxx::connection m_connection;
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

  // A request, the only one of its buildset.
  struct Single {
    std::int64_t request = 0;
    std::int64_t buildset = 0;
  };

  // One buildset of one request per element (for claim and complete), in
  // transactions of a few hundred buildsets.
  std::vector<Single> add_single_requests(std::size_t count) {
    std::vector<Single> singles;
    singles.reserve(count);
    livestate::db::NewBuildset buildset;
    buildset.builderids = {m_builders.front()};
    buildset.reason = "store_bench";
    for (std::size_t done = 0; done < count;) {
      auto transaction = m_store->begin();
      for (std::size_t i = 0; i < 250 && done < count; ++i, ++done) {
        const auto added = transaction.add_buildset(buildset);
        singles.push_back({added.buildrequestids.at(m_builders.front()), added.bsid});
      }
      transaction.commit();
    }
    sync_expected();
    return singles;
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
        for (const auto& [builder, request] : transaction.add_buildset(buildset).buildrequestids)
          ids.push_back(request);
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
  [[nodiscard]] std::int64_t master() const noexcept { return m_master; }

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
  std::vector<double> us_per_op;                       // one per measured repetition
  std::optional<StatementProfile> profile;             // per operation, --profile
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
  Bench(const Options& options, std::string backend, const std::string& store_url, std::unique_ptr<RawBaseline> raw)
      : m_options(options), m_backend(std::move(backend)), m_raw(std::move(raw)), m_store(store_url) {}

  void run(const std::function<void()>& before_timing) {
    const std::size_t rounds = static_cast<std::size_t>(m_options.reps) + 1;  // round 0 warms up
    const std::size_t ops = m_options.ops;
    const std::size_t batches = m_options.batches;

    // The requests of each round, made untimed by the store: the store's and
    // the raw driver's, alike.
    struct Round {
      std::vector<StoreSide::Single> store_singles, raw_singles;
      std::vector<std::vector<std::int64_t>> store_hundreds, raw_hundreds;
    };
    std::vector<Round> work(rounds);
    for (auto& round : work) {
      round.store_singles = m_store.add_single_requests(ops);
      round.raw_singles = m_store.add_single_requests(ops);
      round.store_hundreds = m_store.add_batch_requests(batches);
      round.raw_hundreds = m_store.add_batch_requests(batches);
    }
    m_table_rows = m_raw->scalar("SELECT COUNT(*) FROM buildrequests");
    m_raw->prepare();
    before_timing();

    CaseResult raw_claim_one{"raw_claim_1", "INSERT 1 claim if incomplete, UPDATE its request", 1, 0, ops, {}, {}, {}};
    CaseResult claim_one{"store_claim_1", "claim_buildrequests([1 request])", 1, 3, ops, {}, {}, {}};
    CaseResult raw_complete_one{
        "raw_complete_1", "UPDATE 1 claimed request and its finished buildset", 2, 0, ops, {}, {}, {}};
    CaseResult complete_one{
        "store_complete_1", "complete_buildrequests([1 request]) + its buildset", 2, 4, ops, {}, {}, {}};
    CaseResult raw_claim_hundred{
        "raw_claim_100", "INSERT 100 claims, UPDATE their requests", batch_rows, 0, batches, {}, {}, {}};
    CaseResult claim_hundred{
        "store_claim_100", "claim_buildrequests([100 requests])", batch_rows, 3 * batch_rows, batches, {}, {}, {}};

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

    // A case not selected by --case is skipped, except that the claims a
    // complete case needs are then made untimed.
    auto selected = [&](const CaseResult& result) {
      return m_options.cases.empty() || m_options.cases.contains(result.name);
    };
    // Runs `timed` as `result`'s case when selected, else untimed when `needed`.
    auto run_case = [&](CaseResult& result, bool measured, bool needed, std::size_t count, auto&& operation) {
      if (selected(result)) {
        measure(result, measured, [&] { return time_ops(count, operation); });
      } else if (needed) {
        time_ops(count, operation);
      }
    };
    const double now = 1795838740.0;
    const std::int64_t master = m_store.master();
    std::size_t store_claims = 0, raw_claims = 0, store_completions = 0, raw_completions = 0;

    for (std::size_t round = 0; round < rounds; ++round) {
      const bool measured = round > 0;
      const Round& r = work[round];
      const bool raw_singles = selected(raw_claim_one) || selected(raw_complete_one);
      run_case(raw_claim_one, measured, raw_singles, ops,
               [&](std::size_t i) { m_raw->claim(std::span(&r.raw_singles[i].request, 1), master, now); });
      if (raw_singles) raw_claims += ops;

      const bool store_singles = selected(claim_one) || selected(complete_one);
      run_case(claim_one, measured, store_singles, ops,
               [&](std::size_t i) { m_store.claim(std::span(&r.store_singles[i].request, 1)); });
      if (store_singles) {
        m_store.expect_delivered(3 * ops, "store_claim_1");
        store_claims += ops;
      }

      run_case(raw_complete_one, measured, false, ops,
               [&](std::size_t i) { m_raw->complete(r.raw_singles[i].request, r.raw_singles[i].buildset, master, now); });
      if (selected(raw_complete_one)) raw_completions += ops;

      run_case(complete_one, measured, false, ops,
               [&](std::size_t i) { m_store.complete(std::span(&r.store_singles[i].request, 1)); });
      if (selected(complete_one)) {
        m_store.expect_delivered(4 * ops, "store_complete_1");
        store_completions += ops;
      }

      run_case(raw_claim_hundred, measured, false, batches,
               [&](std::size_t b) { m_raw->claim(r.raw_hundreds[b], master, now); });
      if (selected(raw_claim_hundred)) raw_claims += batches * batch_rows;

      run_case(claim_hundred, measured, false, batches, [&](std::size_t b) { m_store.claim(r.store_hundreds[b]); });
      if (selected(claim_hundred)) {
        m_store.expect_delivered(3 * batch_rows * batches, "store_claim_100");
        store_claims += batches * batch_rows;
      }
    }

    verify(store_claims + raw_claims, store_completions + raw_completions);
    for (const CaseResult* result :
         {&raw_claim_one, &claim_one, &raw_complete_one, &complete_one, &raw_claim_hundred, &claim_hundred}) {
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
      // "claim_1": the store's operation against the same changes made raw.
      ratios.push_back(
          {top->name.substr(6), top->name, bottom->name, top->median_us() / bottom->median_us(), has_target});
    };
    ratio("store_claim_1", "raw_claim_1", true);
    ratio("store_complete_1", "raw_complete_1", true);
    // For information: the store reads back the rows it changed, to announce them.
    ratio("store_claim_100", "raw_claim_100", false);
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

  // The database holds exactly the claims and completions (each completing
  // its buildset too) that the store and the raw driver made.
  void verify(std::size_t claimed, std::size_t completed) {
    const std::string yes = m_backend == "postgresql" ? "TRUE" : "1";
    const auto complete = m_raw->scalar("SELECT COUNT(*) FROM buildrequests WHERE complete = " + yes);
    const auto claims = m_raw->scalar("SELECT COUNT(*) FROM buildrequest_claims");
    const auto buildsets = m_raw->scalar("SELECT COUNT(*) FROM buildsets WHERE complete = " + yes);
    if (complete != static_cast<std::int64_t>(completed) || buildsets != static_cast<std::int64_t>(completed) ||
        claims != static_cast<std::int64_t>(claimed)) {
      throw std::runtime_error("the database holds " + std::to_string(complete) + " complete requests, " +
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
      Ordered line{{"bench", "store"},     {"backend", m_backend},         {"ratio", ratio.name},
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
    std::cout << "\n  buildrequests: " << m_table_rows << " rows; " << m_options.reps << " repetitions (medians) of "
              << m_options.ops << " single-row and " << m_options.batches << " 100-row transactions per case"
              << (m_options.quick ? "; --quick: the numbers mean nothing" : "")
              << (m_options.profile ? "; --profile: timings include statement tracing" : "") << "\n\n";

    std::cout << pad("case", -21) << pad("one operation", -52) << pad("rows", 5) << pad("msgs", 6) << pad("µs/op", 10)
              << pad("ops/s", 10) << pad("min–max µs/op", 18);
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
    if (!ratios.empty()) std::cout << "\nratios of µs/op (target ≤ " << fixed(target_ratio, 1) << "x):\n";
    for (const auto& ratio : ratios) {
      std::cout << "  " << pad(ratio.numerator + " / " + ratio.denominator, -42) << pad(fixed(ratio.value, 2), 8) << "x"
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
                    << pad(fixed(static_cast<double>(profile.nanoseconds) / 1000.0 / operations, 2), 9) << "  " << sql
                    << '\n';
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
    const livestate::bench::PostgresScratch scratch(url, program, "livestate_store_bench");
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
    bench.run([&] { raw_postgres.analyze({"buildrequests", "buildsets"}); });
    bench.report(settings);
    return 0;
  }
  if (!url.starts_with("sqlite:")) usage_error("--db wants sqlite:PATH or postgresql://…, not \"" + url + "\"");
  if (options.profile) {
    sqlite3_auto_extension(reinterpret_cast<void (*)()>(&trace_new_connection));
    g_profiler.enabled = true;
  }
  const livestate::bench::SqliteScratch scratch(options.db, "livestate-store-bench");
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
