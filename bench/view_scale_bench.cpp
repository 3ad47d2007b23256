// view_scale_bench: what a live view costs as it holds more entries.
//
// For each size N (10,000, 100,000 and 1,000,000 build requests, every other
// one claimed, put in the database through the raw driver), a view of every
// build request, on SQLite or on PostgreSQL (--db):
//   load     the view's first load (start() to ready(), the change callback
//            counting), beside the raw driver reading the same rows (the
//            store's SELECT of build requests, every column of every row read
//            into a local)
//   memory   the heap the loaded view holds per entry (glibc's mallinfo2,
//            before and after, the store's connection warmed first), beside
//            the JSON text of the entries' bodies (Json::dump())
//   repair   a gap with 100 changes missed: 100 requests claimed while the
//            view's connector drops every message (each drop told as a gap),
//            then the time until the view is quiet again and the rows its
//            resync read; and, the same way, the full resync it falls back to
//            (after schema.N.migrated)
//   apply    an in-order message applied on the view's executor (claimed and
//            unclaimed in turn, entries drawn at random), change callback set
// Every repaired entry is checked against the store; a view that is wrong,
// reloads, or reads more than it must fails the program (exit 1).
//
// Usage: view_scale_bench [--db URL] [--sizes N,N,...] [--messages N] [--quick]
//   --db URL      sqlite: (a temporary file per size, the default) or
//                 postgresql://… (a schema of its own per size)
//   --sizes LIST  entries (10000,100000,1000000)
//   --messages N  messages applied per size (100000)
//   --quick       sizes 1000,4000 and 2000 messages: a smoke test
// Prints one JSON line per size and one "meta" line; bench/view_scale.sh
// makes the table.

#include <malloc.h>
#include <sqlite3.h>

#include <pqxx/pqxx>

#include <chrono>
#include <cstdint>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "livestate/livestate.hpp"
#include "scratch_db.hpp"

namespace {

namespace db = livestate::db;
namespace mq = livestate::mq;
namespace reconcile = livestate::reconcile;
using livestate::Json;
using livestate::RoutingKey;
using Clock = std::chrono::steady_clock;

constexpr const char* program = "view_scale_bench";
constexpr std::size_t requests_per_buildset = 10;
constexpr int missed_changes = 100;

// What the raw reads add up, so that the compiler keeps them.
volatile std::int64_t g_sink = 0;

[[noreturn]] void fail(const std::string& why) {
  std::cerr << program << ": FAILED: " << why << "\n";
  std::exit(1);
}

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

long long heap_in_use() {
  const auto info = mallinfo2();
  return static_cast<long long>(info.uordblks + info.hblkhd);
}

void run_until_idle(boost::asio::io_context& io) {
  for (;;) {
    io.restart();
    if (io.poll() == 0) return;
  }
}

// The store's read of every build request (db/src/operations.cpp's
// buildrequest columns), for the raw driver to read the same rows.
const std::string select_requests =
    "SELECT id, buildsetid, builderid, priority, complete, results, submitted_at, complete_at, waited_for, "
    "properties, revision, (SELECT masterid FROM buildrequest_claims WHERE brid = buildrequests.id), "
    "(SELECT claimed_at FROM buildrequest_claims WHERE brid = buildrequests.id) FROM buildrequests ORDER BY id";

// The database under the views, reached through the raw driver too.
class Database {
 public:
  virtual ~Database() = default;
  [[nodiscard]] virtual std::string url() const = 0;
  /// N requests of `builder`, every other one claimed by `master`, in one transaction.
  virtual void fill(std::size_t requests, std::int64_t builder, std::int64_t master) = 0;
  /// Reads select_requests, every column of every row; returns the rows.
  virtual std::size_t read_all() = 0;
};

class SqliteDatabase final : public Database {
 public:
  SqliteDatabase() : m_scratch(std::nullopt, "livestate-view-scale") {}
  std::string url() const override { return m_scratch.url(); }

  void fill(std::size_t requests, std::int64_t builder, std::int64_t master) override {
    auto connection = open();
    const auto n = std::to_string(requests), sets = std::to_string((requests + 9) / requests_per_buildset);
    exec(connection.get(),
         "BEGIN; "
         "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < " +
             sets +
             ") "
             "INSERT INTO buildsets (id, reason, submitted_at) SELECT i, 'view_scale_bench', 1795838740 + i FROM n; "
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < " +
             n +
             ") "
             "INSERT INTO buildrequests (id, buildsetid, builderid, submitted_at) "
             "SELECT i, (i - 1) / 10 + 1, " +
             std::to_string(builder) +
             ", 1795838740.25 + i FROM n; "
             "INSERT INTO buildrequest_claims (brid, masterid, claimed_at) "
             "SELECT id, " +
             std::to_string(master) +
             ", submitted_at + 1.5 FROM buildrequests WHERE id % 2 = 0; "
             "COMMIT");
  }

  std::size_t read_all() override {
    auto connection = open();
    sqlite3_stmt* statement = nullptr;
    if (sqlite3_prepare_v2(connection.get(), select_requests.c_str(), -1, &statement, nullptr) != SQLITE_OK) {
      fail(sqlite3_errmsg(connection.get()));
    }
    std::size_t rows = 0;
    std::int64_t sum = 0;
    double total = 0;
    while (sqlite3_step(statement) == SQLITE_ROW) {
      for (int column : {0, 1, 2, 3, 4, 5, 8, 10, 11}) sum += sqlite3_column_int64(statement, column);
      for (int column : {6, 7, 12}) total += sqlite3_column_double(statement, column);
      const auto* properties = sqlite3_column_text(statement, 9);
      sum += properties != nullptr ? properties[0] : 0;
      ++rows;
    }
    sqlite3_finalize(statement);
    g_sink = sum + static_cast<std::int64_t>(total);
    return rows;
  }

 private:
  struct Closer {
    void operator()(sqlite3* connection) const noexcept { sqlite3_close_v2(connection); }
  };
  std::unique_ptr<sqlite3, Closer> open() const {
    sqlite3* raw = nullptr;
    if (sqlite3_open_v2(m_scratch.path().c_str(), &raw, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      fail("cannot open " + m_scratch.path());
    }
    std::unique_ptr<sqlite3, Closer> connection(raw);
    sqlite3_busy_timeout(raw, 5000);
    return connection;
  }
  static void exec(sqlite3* connection, const std::string& sql) {
    char* error = nullptr;
    if (sqlite3_exec(connection, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
      fail(std::string("raw SQLite: ") + (error != nullptr ? error : "?"));
    }
  }
  livestate::bench::SqliteScratch m_scratch;
};

class PostgresDatabase final : public Database {
 public:
  explicit PostgresDatabase(const std::string& server) : m_scratch(server, program, "livestate_view_scale") {}
  std::string url() const override { return m_scratch.url(); }

  void fill(std::size_t requests, std::int64_t builder, std::int64_t master) override {
    pqxx::connection connection(url());
    pqxx::work work(connection);
    work.exec_params0(
        "INSERT INTO buildsets (id, reason, submitted_at) "
        "SELECT i, 'view_scale_bench', 1795838740 + i FROM generate_series(1, $1::bigint) AS i",
        static_cast<long long>((requests + 9) / requests_per_buildset));
    work.exec_params0(
        "INSERT INTO buildrequests (id, buildsetid, builderid, submitted_at) "
        "SELECT i, (i - 1) / 10 + 1, $2, 1795838740.25 + i FROM generate_series(1, $1::bigint) AS i",
        static_cast<long long>(requests), builder);
    work.exec_params0(
        "INSERT INTO buildrequest_claims (brid, masterid, claimed_at) "
        "SELECT id, $1, submitted_at + 1.5 FROM buildrequests WHERE id % 2 = 0",
        master);
    // The sequences go on after the rows made here.
    work.exec("SELECT setval(pg_get_serial_sequence('buildsets', 'id'), (SELECT MAX(id) FROM buildsets))");
    work.exec("SELECT setval(pg_get_serial_sequence('buildrequests', 'id'), (SELECT MAX(id) FROM buildrequests))");
    work.commit();
    pqxx::nontransaction analyze(connection);
    for (const char* table : {"buildsets", "buildrequests", "buildrequest_claims"}) {
      analyze.exec0(std::string("ANALYZE ") + table);
    }
  }

  std::size_t read_all() override {
    pqxx::connection connection(url());
    pqxx::work work(connection);
    const auto result = work.exec(select_requests);
    std::int64_t sum = 0;
    double total = 0;
    for (const auto& row : result) {
      for (int column : {0, 1, 2, 3, 5, 10}) sum += row[column].as<std::int64_t>();
      sum += row[4].as<bool>() + row[8].as<bool>();
      sum += row[11].is_null() ? 0 : row[11].as<std::int64_t>();
      total += row[6].as<double>() + (row[12].is_null() ? 0 : row[12].as<double>());
      sum += row[7].is_null() ? 0 : 1;
      sum += row[9].is_null() ? 0 : row[9].size();
    }
    g_sink = sum + static_cast<std::int64_t>(total);
    return result.size();
  }

 private:
  livestate::bench::PostgresScratch m_scratch;
};

struct SizeResult {
  std::size_t entries = 0;
  double text_bytes = 0, heap_bytes = 0;
  double load_seconds = 0, raw_read_seconds = 0;
  double repair_ms = 0, full_resync_ms = 0;
  std::uint64_t repair_rows = 0, full_resync_rows = 0;
  double apply_ns = 0;
};

SizeResult measure(std::size_t size, int messages, const std::function<std::unique_ptr<Database>()>& make) {
  SizeResult result;
  result.entries = size;
  const auto database = make();
  auto bus = mq::make_simple_mq();
  auto store = db::Store::open(database->url(), *bus);
  const auto master = store->master_active("view-scale-master");
  const auto builder = store->builder_started("view-scale-builder", master);
  database->fill(size, builder, master);

  auto started = Clock::now();
  if (database->read_all() != size) fail("the raw read found another number of rows");
  result.raw_read_seconds = seconds_since(started);

  // Warm the store's connection (its page cache), then the view's heap alone.
  (void)store->count_buildrequests({});
  (void)store->list("buildrequests", Json::object(), std::vector<std::string>{"1"});
  boost::asio::io_context io;
  mq::FaultOptions faults;
  faults.drop = 1.0;
  faults.report_drops = true;
  mq::FaultyConnector lossy(*bus, faults);
  lossy.set_enabled(false);
  reconcile::ViewOptions options;
  options.type = "buildrequests";
  options.max_queued = static_cast<std::size_t>(messages) + 1000;
  const auto heap_before = heap_in_use();
  auto view = std::make_unique<reconcile::LiveView>(lossy, *store, io.get_executor(), options);
  std::uint64_t changes = 0;
  view->on_change([&](const reconcile::Change&) { ++changes; });
  started = Clock::now();
  view->start();
  run_until_idle(io);
  result.load_seconds = seconds_since(started);
  if (!view->ready() || view->size() != size || changes != size) fail("the view did not load every request");
  result.heap_bytes = static_cast<double>(heap_in_use() - heap_before) / static_cast<double>(size);
  double text = 0;
  for (std::size_t id = 1; id <= size; ++id) text += static_cast<double>(view->get(std::to_string(id))->dump().size());
  result.text_bytes = text / static_cast<double>(size);

  // A gap: 100 claims the view never hears of, each drop told as a gap.
  auto stats = view->stats();
  lossy.set_enabled(true);
  std::vector<std::int64_t> claimed;
  for (std::int64_t id = 1; claimed.size() < missed_changes; id += 2) {  // odd ids: unclaimed
    store->claim_buildrequests(std::vector<std::int64_t>{id}, master);
    claimed.push_back(id);
  }
  lossy.set_enabled(false);
  lossy.flush();
  started = Clock::now();
  run_until_idle(io);
  result.repair_ms = seconds_since(started) * 1000;
  auto after = view->stats();
  result.repair_rows = after.resync_rows - stats.resync_rows;
  if (after.resyncs != stats.resyncs + 1 || after.full_resyncs != stats.full_resyncs) {
    fail("the gap was not repaired by one resync of what changed");
  }
  for (const auto id : claimed) {
    if (view->get(std::to_string(id)) != store->get_buildrequest(id)) fail("a repaired entry differs from the store");
  }

  // The fallback: everything read again.
  stats = after;
  bus->produce(RoutingKey{"schema", "7", "migrated"}, {{"version", 7}, {"previous", 7}});
  started = Clock::now();
  run_until_idle(io);
  result.full_resync_ms = seconds_since(started) * 1000;
  after = view->stats();
  result.full_resync_rows = after.resync_rows - stats.resync_rows;
  if (after.full_resyncs != stats.full_resyncs + 1) fail("the migration did not read everything");

  // In-order messages, bodies made before the clock starts (they announce
  // what the store never did: last, the view is thrown away after).
  std::mt19937_64 random(size);
  std::vector<std::pair<RoutingKey, Json>> inbound;
  inbound.reserve(static_cast<std::size_t>(messages));
  std::map<std::string, Json> current;
  for (int m = 0; m < messages; ++m) {
    const auto id = std::to_string(1 + random() % size);
    auto found = current.find(id);
    if (found == current.end()) found = current.emplace(id, *view->get(id)).first;
    Json& body = found->second;
    const bool claim = !body["claimed"].get<bool>();
    body["claimed"] = claim;
    body["claimed_by_masterid"] = claim ? Json(master) : Json(nullptr);
    body["claimed_at"] = claim ? Json(1795900000.5 + m) : Json(nullptr);
    body["_rev"] = body["_rev"].get<std::int64_t>() + 1;
    inbound.emplace_back(RoutingKey{"buildrequests", id, claim ? "claimed" : "unclaimed"}, body);
  }
  for (const auto& [key, body] : inbound) bus->produce(key, body);
  stats = view->stats();
  changes = 0;
  started = Clock::now();
  run_until_idle(io);
  result.apply_ns = seconds_since(started) * 1e9 / messages;
  if (changes != static_cast<std::uint64_t>(messages) || view->stats().reload_queries != stats.reload_queries) {
    fail("the in-order messages were not all applied without a reload");
  }
  view.reset();
  return result;
}

std::vector<std::size_t> parse_sizes(const std::string& text) {
  std::vector<std::size_t> sizes;
  std::stringstream list(text);
  for (std::string item; std::getline(list, item, ',');) sizes.push_back(std::stoul(item));
  return sizes;
}

}  // namespace

int main(int argc, char** argv) {
  std::string url = "sqlite:";
  std::vector<std::size_t> sizes{10'000, 100'000, 1'000'000};
  int messages = 100'000;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--db" && i + 1 < argc) {
      url = argv[++i];
    } else if (arg == "--sizes" && i + 1 < argc) {
      sizes = parse_sizes(argv[++i]);
    } else if (arg == "--messages" && i + 1 < argc) {
      messages = std::stoi(argv[++i]);
    } else if (arg == "--quick") {
      sizes = {1'000, 4'000};
      messages = 2'000;
    } else {
      std::cerr << "usage: view_scale_bench [--db URL] [--sizes N,N,...] [--messages N] [--quick]\n";
      return 2;
    }
  }
  livestate::set_log_level(livestate::LogLevel::error);
  const bool postgres = !url.starts_with("sqlite:");
  const auto make = [&]() -> std::unique_ptr<Database> {
    if (postgres) return std::make_unique<PostgresDatabase>(url);
    return std::make_unique<SqliteDatabase>();
  };
  try {
    for (const auto size : sizes) {
      const auto r = measure(size, messages, make);
      std::cout << Json{{"backend", postgres ? "postgresql" : "sqlite"},
                        {"entries", r.entries},
                        {"json_text_bytes_per_entry", r.text_bytes},
                        {"heap_bytes_per_entry", r.heap_bytes},
                        {"load_seconds", r.load_seconds},
                        {"raw_read_seconds", r.raw_read_seconds},
                        {"repair_ms", r.repair_ms},
                        {"repair_rows", r.repair_rows},
                        {"full_resync_ms", r.full_resync_ms},
                        {"full_resync_rows", r.full_resync_rows},
                        {"apply_ns", r.apply_ns},
                        {"missed_changes", missed_changes},
                        {"messages", messages}}
                       .dump()
                << std::endl;
    }
  } catch (const std::exception& error) {
    fail(error.what());
  }
  std::cout
      << Json{{"meta", true}, {"backend", postgres ? "postgresql" : "sqlite"}, {"sqlite", sqlite3_libversion()}}.dump()
      << "\n";
  return 0;
}
