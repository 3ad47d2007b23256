// pg_notify_bench: the PostgreSQL connector end to end (produce or commit, to
// the consumer's callback in another connector) beside raw pg_notify on the
// same server, in the same run.
//
// Cases, each for 1, 2 and 4 producers (--producers):
//   raw_pgbench    pgbench -n -M simple -c N -j N -T S with the script
//                  SELECT pg_notify('CHANNEL', 'PAYLOAD'); where PAYLOAD is a
//                  real livestate payload of one message (so the same size as
//                  ours); a libpq listener (LISTEN, poll() on its socket)
//                  counts what arrives. pgbench's tps and the listener's rate.
//                  (Only -M simple: pgbench's other modes take the payload's
//                  ":null" and ":1" for its own :variables.)
//   raw_libpq      N threads, each on its own libpq connection, calling
//                  SELECT pg_notify('CHANNEL', $1) in a loop, the payload a
//                  steady_clock timestamp padded to the same size; the same
//                  listener computes receive - send: the raw latency.
//   livestate_1    N threads, each with a connector of its own (as N masters
//                  would have), calling produce() in a loop: one message per
//                  transaction. A separate consumer connector (its executor
//                  run by --consumer-threads threads) receives them.
//   livestate_100  N threads, each with a Store paired with its connector:
//                  begin(); 100 x tx.produce(); commit(): 100 messages per
//                  transaction, sent in one statement.
//
// Every message body carries the steady_clock time (ns) taken just before it
// is handed over: before produce() (livestate_1), after BEGIN and before the
// transaction's messages are queued and committed (livestate_100), before
// PQexecParams (raw_libpq). The receiver subtracts it from the time its
// callback (or PQnotifies) sees the message: send-to-callback latency, which
// includes the statement's own round trip on every side alike.
//
// Rates are measured where messages arrive: (received - 1) / (time between the
// first and the last arrival). Producers run --seconds, then the receiver is
// given time to drain; every message sent must arrive (and the consumer's
// connector must report no gap, overflow or malformed payload), else the
// program fails (exit 1) after printing what it measured.
//
// The producers' connectors are bound to an executor that never runs: they
// produce (which happens in the caller's thread) but never LISTEN, so the
// single consumer connector is the only receiver, as the raw listener is.
//
// Each repetition runs every case for every producer count, interleaved, so
// that noise lands on all of them alike; a first, shorter, unmeasured pass
// warms everything up (among other things, the first executions of the
// store's prepared send statement in each session are custom plans, which a
// server with JIT compiles for about 10 ms each). The table shows medians
// over --reps.
//
// The bench runs in a schema of its own (the URL gets
// options=-csearch_path=SCHEMA; the store's tables and the connector's go
// there) and on channels of its own; it drops the schema at the end.
//
// Usage: pg_notify_bench [--db URL] [--pgbench PATH] [--producers 1,2,4] [--reps N]
//                        [--seconds S] [--batch N] [--consumer-threads N]
//                        [--case NAME]... [--json] [--quick]
//   --db URL        the server (default: $LIVESTATE_TEST_PG)
//   --pgbench PATH  default: the newest /usr/lib/postgresql/*/bin/pgbench
//   --reps N        measured repetitions (3); medians are shown
//   --seconds S     how long producers run in each case (3; pgbench's -T is
//                   whole seconds, so at least 1)
//   --batch N       messages per transaction of livestate_100 (100)
//   --case NAME     run only this case (repeatable)
//   --consumer-threads N  threads running the consumer connector's executor (1)
//   --json          JSON lines (one per case and producer count, one per
//                   ratio, one "meta") instead of the tables
//   --quick         one repetition of about a second, no warm-up: a smoke
//                   test that everything arrives (the numbers mean little)

#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "bench_common.hpp"
#include "claim_body.hpp"
#include "livestate/core/filter.hpp"
#include "livestate/core/json.hpp"
#include "livestate/core/routing_key.hpp"
#include "livestate/core/wire.hpp"
#include "livestate/db/store.hpp"
#include "livestate/mq/postgres.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using livestate::Filter;
using livestate::Json;
using livestate::RoutingKey;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

// --- options -----------------------------------------------------------------------

struct Options {
  std::string url;
  std::string pgbench;
  std::vector<int> producers{1, 2, 4};
  std::vector<std::string> only_cases;  // empty: all
  int reps = 3;
  double seconds = 3.0;
  int batch = 100;
  int consumer_threads = 1;
  bool json = false;
  bool quick = false;
};

constexpr const char* usage_text =
    "usage: pg_notify_bench [--db URL] [--pgbench PATH] [--producers 1,2,4] [--reps N]\n"
    "                       [--seconds S] [--batch N] [--consumer-threads N]\n"
    "                       [--case NAME]... [--json] [--quick]\n";

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "pg_notify_bench: " << message << "\n" << usage_text;
  std::exit(2);
}

int positive_int(const std::string& option, const std::string& text) {
  if (const auto value = livestate::bench::positive_int(text)) return *value;
  usage_error(option + " wants a positive integer, not \"" + text + "\"");
}

std::string newest_pgbench() {
  std::vector<fs::path> found;
  std::error_code ignored;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ignored)) {
    const auto candidate = entry.path() / "bin" / "pgbench";
    if (fs::exists(candidate, ignored)) found.push_back(candidate);
  }
  std::sort(found.begin(), found.end(), [](const fs::path& a, const fs::path& b) {
    const auto major = [](const fs::path& p) { return std::atoi(p.parent_path().parent_path().filename().c_str()); };
    return major(a) < major(b);
  });
  return found.empty() ? std::string() : found.back().string();
}

Options parse_options(int argc, char** argv) {
  Options options;
  bool seconds_given = false;
  const std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) usage_error(arg + " needs a value");
      return args[++i];
    };
    if (arg == "--db") {
      options.url = value();
    } else if (arg == "--pgbench") {
      options.pgbench = value();
    } else if (arg == "--producers") {
      options.producers.clear();
      std::stringstream list(value());
      for (std::string item; std::getline(list, item, ',');) options.producers.push_back(positive_int(arg, item));
      if (options.producers.empty()) usage_error("--producers wants a list such as 1,2,4");
    } else if (arg == "--reps") {
      options.reps = positive_int(arg, value());
    } else if (arg == "--batch") {
      options.batch = positive_int(arg, value());
    } else if (arg == "--consumer-threads") {
      options.consumer_threads = positive_int(arg, value());
    } else if (arg == "--seconds") {
      const std::string text = value();
      try {
        options.seconds = std::stod(text);
      } catch (const std::exception&) {
        usage_error("--seconds wants a positive number, not \"" + text + "\"");
      }
      if (!(options.seconds > 0)) usage_error("--seconds wants a positive number");
      seconds_given = true;
    } else if (arg == "--case") {
      options.only_cases.push_back(value());
    } else if (arg == "--json") {
      options.json = true;
    } else if (arg == "--quick") {
      options.quick = true;
    } else if (arg == "--help" || arg == "-h") {
      std::cout << usage_text;
      std::exit(0);
    } else {
      usage_error("unknown argument \"" + arg + "\"");
    }
  }
  if (options.url.empty()) {
    const char* env = std::getenv("LIVESTATE_TEST_PG");
    if (env == nullptr || *env == '\0') {
      usage_error("no server: give --db URL or set LIVESTATE_TEST_PG (bench/pg_compare.sh starts a throwaway one)");
    }
    options.url = env;
  }
  if (options.pgbench.empty()) options.pgbench = newest_pgbench();
  if (options.pgbench.empty() || ::access(options.pgbench.c_str(), X_OK) != 0) {
    usage_error("pgbench not found (give --pgbench PATH; Debian: /usr/lib/postgresql/15/bin/pgbench)");
  }
  if (options.quick) {
    options.reps = 1;
    if (!seconds_given) options.seconds = 1.0;
  }
  return options;
}

// --- libpq, raw ----------------------------------------------------------------------

struct ConnectionCloser {
  void operator()(PGconn* connection) const noexcept { PQfinish(connection); }
};
using Connection = std::unique_ptr<PGconn, ConnectionCloser>;

struct ResultClearer {
  void operator()(PGresult* result) const noexcept { PQclear(result); }
};
using Result = std::unique_ptr<PGresult, ResultClearer>;

Connection connect_raw(const std::string& url) {
  Connection connection(PQconnectdb(url.c_str()));
  if (!connection) throw std::bad_alloc();
  if (PQstatus(connection.get()) != CONNECTION_OK) {
    throw std::runtime_error(std::string("cannot connect: ") + PQerrorMessage(connection.get()));
  }
  return connection;
}

Result exec_checked(PGconn* connection, const std::string& sql) {
  Result result(PQexec(connection, sql.c_str()));
  const auto status = PQresultStatus(result.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    throw std::runtime_error(sql + ": " + PQerrorMessage(connection));
  }
  return result;
}

std::string query_text(PGconn* connection, const std::string& sql) {
  const Result result = exec_checked(connection, sql);
  return PQntuples(result.get()) > 0 ? PQgetvalue(result.get(), 0, 0) : "";
}

// A schema of our own, dropped with everything in it at the end.
class Scratch {
 public:
  explicit Scratch(const std::string& url) : m_admin(connect_raw(url)) {
    if (url.find("options=") != std::string::npos) {
      throw std::invalid_argument(
          "--db: the URL sets options= already; the bench sets "
          "options=-csearch_path=… to run in a schema of its own");
    }
    const std::string suffix = std::to_string(::getpid());
    m_schema = "livestate_notify_bench_" + suffix;
    m_channel = "livestate_bench_" + suffix;
    m_raw_channel = "raw_bench_" + suffix;
    exec_checked(m_admin.get(), "SET client_min_messages = warning");  // no NOTICE for DROP … CASCADE
    exec_checked(m_admin.get(), "CREATE SCHEMA " + m_schema);
    if (url.starts_with("postgresql://") || url.starts_with("postgres://")) {
      m_url = url + (url.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" + m_schema;
    } else {
      m_url = url + " options='-csearch_path=" + m_schema + "'";
    }
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    try {
      exec_checked(m_admin.get(), "DROP SCHEMA " + m_schema + " CASCADE");
    } catch (const std::exception& error) {
      std::cerr << "pg_notify_bench: could not drop schema " << m_schema << ": " << error.what() << "\n";
    }
  }

  [[nodiscard]] PGconn* admin() const noexcept { return m_admin.get(); }
  [[nodiscard]] const std::string& url() const noexcept { return m_url; }
  [[nodiscard]] const std::string& channel() const noexcept { return m_channel; }
  [[nodiscard]] const std::string& raw_channel() const noexcept { return m_raw_channel; }

 private:
  Connection m_admin;
  std::string m_schema;
  std::string m_url;
  std::string m_channel;
  std::string m_raw_channel;
};

// --- receiving -------------------------------------------------------------------------

// What one run's receiver saw.
struct Receipts {
  std::uint64_t count = 0;
  std::int64_t first_ns = 0;
  std::int64_t last_ns = 0;
  std::vector<std::int64_t> latencies_ns;
};

// Receipts of the current run; written by the receiving thread, read by the
// main thread. Arrivals tagged with another run are ignored.
class Recorder {
 public:
  void start(std::uint64_t run) {
    std::lock_guard lock(m_mutex);
    m_run = run;
    m_receipts = Receipts{};
    m_receipts.latencies_ns.reserve(1 << 20);
  }
  void record(std::uint64_t run, std::int64_t received_ns, std::optional<std::int64_t> sent_ns) {
    std::lock_guard lock(m_mutex);
    if (run != m_run) return;
    if (m_receipts.count++ == 0) m_receipts.first_ns = received_ns;
    m_receipts.last_ns = received_ns;
    if (sent_ns) m_receipts.latencies_ns.push_back(received_ns - *sent_ns);
  }
  [[nodiscard]] std::uint64_t count() const {
    std::lock_guard lock(m_mutex);
    return m_receipts.count;
  }
  Receipts finish() {
    std::lock_guard lock(m_mutex);
    m_run = 0;
    return std::move(m_receipts);
  }

 private:
  mutable std::mutex m_mutex;
  std::uint64_t m_run = 0;
  Receipts m_receipts;
};

// Waits until `expected` arrived, or nothing arrived for `quiet`. True when
// everything arrived.
bool wait_for_arrivals(const Recorder& recorder, std::uint64_t expected, std::chrono::milliseconds quiet) {
  std::uint64_t seen = recorder.count();
  auto last_progress = Clock::now();
  while (seen < expected) {
    std::this_thread::sleep_for(2ms);
    const std::uint64_t now = recorder.count();
    if (now != seen) {
      seen = now;
      last_progress = Clock::now();
    } else if (Clock::now() - last_progress > quiet) {
      return false;
    }
  }
  return true;
}

double thread_cpu_seconds(std::thread& thread) {
  clockid_t clock = 0;
  if (pthread_getcpuclockid(thread.native_handle(), &clock) != 0) return 0;
  timespec spent{};
  if (clock_gettime(clock, &spent) != 0) return 0;
  return static_cast<double>(spent.tv_sec) + static_cast<double>(spent.tv_nsec) * 1e-9;
}

// A libpq listener on a thread of its own, waiting on its socket with poll();
// a payload that starts with a number is a send time (raw_libpq), others are
// only counted (pgbench's constant payload).
class RawListener {
 public:
  RawListener(const std::string& url, const std::string& channel, std::uint64_t run)
      : m_connection(connect_raw(url)), m_run(run) {
    exec_checked(m_connection.get(), "LISTEN \"" + channel + "\"");
    m_recorder.start(run);
    m_thread = std::thread([this] { listen(); });
  }
  RawListener(const RawListener&) = delete;
  RawListener& operator=(const RawListener&) = delete;
  ~RawListener() { stop(); }

  [[nodiscard]] const Recorder& recorder() const noexcept { return m_recorder; }
  [[nodiscard]] double cpu_seconds() { return thread_cpu_seconds(m_thread); }

  void stop() {
    m_stop = true;
    if (m_thread.joinable()) m_thread.join();
  }
  Receipts finish() {
    stop();
    if (m_error) std::rethrow_exception(m_error);
    return m_recorder.finish();
  }

 private:
  void listen() {
    try {
      PGconn* connection = m_connection.get();
      while (!m_stop.load(std::memory_order_relaxed)) {
        pollfd socket{PQsocket(connection), POLLIN, 0};
        if (::poll(&socket, 1, 20) <= 0) continue;
        if (PQconsumeInput(connection) == 0) throw std::runtime_error(PQerrorMessage(connection));
        while (PGnotify* notification = PQnotifies(connection)) {
          const std::int64_t received = now_ns();
          std::optional<std::int64_t> sent;
          const char* payload = notification->extra;
          if (payload[0] >= '0' && payload[0] <= '9') sent = std::strtoll(payload, nullptr, 10);
          m_recorder.record(m_run, received, sent);
          PQfreemem(notification);
        }
      }
    } catch (...) {
      m_error = std::current_exception();
    }
  }

  Connection m_connection;
  std::uint64_t m_run;
  Recorder m_recorder;
  std::atomic<bool> m_stop{false};
  std::exception_ptr m_error;
  std::thread m_thread;
};

// --- what a run measured ---------------------------------------------------------------

struct Sample {
  double sent_per_s = 0;      // transactions/s as the producers (or pgbench) saw them
  double received_per_s = 0;  // messages/s where they arrive
  std::uint64_t sent = 0;     // messages
  std::uint64_t received = 0;
  double p50_ms = NAN;
  double p99_ms = NAN;
  double receiver_cpu = 0;  // CPU seconds of the receiving thread(s) per wall second
};

double percentile_ms(std::vector<std::int64_t>& values, double fraction) {
  if (values.empty()) return NAN;
  const auto index = static_cast<std::size_t>(fraction * static_cast<double>(values.size() - 1));
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(index), values.end());
  return static_cast<double>(values[index]) / 1e6;
}

void fill_from(Sample& sample, Receipts& receipts) {
  sample.received = receipts.count;
  if (receipts.count > 1 && receipts.last_ns > receipts.first_ns) {
    sample.received_per_s = static_cast<double>(receipts.count - 1) * 1e9 /
                            static_cast<double>(receipts.last_ns - receipts.first_ns);
  }
  sample.p50_ms = percentile_ms(receipts.latencies_ns, 0.50);
  sample.p99_ms = percentile_ms(receipts.latencies_ns, 0.99);
}

// Runs `body(index)` on `count` threads that start together, for `seconds`
// (body returns how many messages it sent and checks `stop`). Returns the
// messages sent and the wall time from start to the last thread's end.
template <class Body>
std::pair<std::uint64_t, double> run_producers(int count, double seconds, Body body) {
  std::vector<std::uint64_t> sent(static_cast<std::size_t>(count), 0);
  const double elapsed = livestate::bench::run_together(count, seconds, [&](int i, std::atomic<bool>& stop) {
    const auto index = static_cast<std::size_t>(i);
    sent[index] = body(index, stop);
  });
  std::uint64_t total = 0;
  for (const auto n : sent) total += n;
  return {total, elapsed};
}

// --- the bench -----------------------------------------------------------------------

const RoutingKey message_key{"buildrequests", "42", "claimed"};

// A Buildbot build request claim, as the store announces it, plus the run it
// belongs to and its send time.
Json make_body(std::uint64_t run, std::int64_t sent_ns) {
  Json body = livestate::bench::claim_body();
  body["_rev"] = 2;
  body["run"] = run;
  body["sent_ns"] = sent_ns;
  return body;
}

struct Problems {
  std::vector<std::string> lines;
  void add(std::string line) { lines.push_back(std::move(line)); }
};

class Bench {
 public:
  Bench(const Options& options, Scratch& scratch, Problems& problems)
      : m_options(options), m_scratch(scratch), m_problems(problems) {
    livestate::mq::PostgresOptions connector_options;
    connector_options.channel = scratch.channel();
    m_consumer = livestate::mq::make_postgres_connector(scratch.url(), m_consumer_io.io.get_executor(),
                                                        connector_options);
    for (int i = 0; i < options.consumer_threads; ++i) {
      m_consumer_io.threads.emplace_back([this] { m_consumer_io.io.run(); });
    }
    if (!m_consumer->wait_listening(10s))
      throw std::runtime_error("the consumer connector is not listening after 10 s");
    m_subscription = m_consumer->start_consuming(
        [this](const RoutingKey&, const Json& body) {
          const std::int64_t received = now_ns();
          const auto run = body.find("run");
          const auto sent = body.find("sent_ns");
          if (run == body.end() || sent == body.end()) return;
          m_recorder.record(run->get<std::uint64_t>(), received, sent->get<std::int64_t>());
        },
        Filter{"buildrequests", "42", "claimed"});

    const int most = *std::max_element(options.producers.begin(), options.producers.end());
    for (int i = 0; i < most; ++i) {
      Producer producer;
      // Never run: these connectors produce in the caller's thread and never
      // LISTEN, so that the consumer connector is the only receiver.
      producer.connector = livestate::mq::make_postgres_connector(scratch.url(), m_idle_io.get_executor(),
                                                                  connector_options);
      producer.store = livestate::db::Store::open(scratch.url(), *producer.connector);
      m_producers.push_back(std::move(producer));
    }

    // pgbench sends a real payload of ours: one message, as produce() sends it.
    const Json body = make_body(1, now_ns());
    const livestate::wire::Outgoing entry{&message_key, &body, 0, 100000};
    m_payload = livestate::wire::encode(m_producers.front().connector->origin(),
                                        std::span<const livestate::wire::Outgoing>(&entry, 1))
                    .front();
    if (m_payload.find('\'') != std::string::npos) throw std::logic_error("the payload must not contain a quote");
    char directory[] = "/tmp/pg_notify_bench.XXXXXX";
    if (::mkdtemp(directory) == nullptr) throw std::runtime_error("mkdtemp failed");
    m_directory = directory;
    m_script = m_directory + "/notify.sql";
    std::ofstream(m_script) << "SELECT pg_notify('" << scratch.raw_channel() << "', '" << m_payload << "');\n";
  }

  Bench(const Bench&) = delete;
  Bench& operator=(const Bench&) = delete;

  ~Bench() {
    std::error_code ignored;
    fs::remove_all(m_directory, ignored);
  }

  [[nodiscard]] std::size_t payload_bytes() const noexcept { return m_payload.size(); }

  Sample run(const std::string& name, int producers, double seconds) {
    if (name == "raw_pgbench") return raw_pgbench(producers, seconds);
    if (name == "raw_libpq") return raw_libpq(producers, seconds);
    if (name == "livestate_1") return livestate(producers, seconds, 1);
    return livestate(producers, seconds, m_options.batch);
  }

  [[nodiscard]] livestate::mq::PostgresStats consumer_stats() const { return m_consumer->postgres_stats(); }

 private:
  struct Producer {
    std::unique_ptr<livestate::mq::PostgresConnector> connector;
    std::unique_ptr<livestate::db::Store> store;  // declared after: destroyed before its connector
  };

  // The consumer's executor and the threads that run it, stopped and joined
  // when this goes (after the consumer connector, declared later).
  struct IoThreads {
    boost::asio::io_context io;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{io.get_executor()};
    std::vector<std::thread> threads;
    IoThreads() = default;
    IoThreads(const IoThreads&) = delete;
    IoThreads& operator=(const IoThreads&) = delete;
    ~IoThreads() {
      work.reset();
      io.stop();
      for (auto& thread : threads) thread.join();
    }
  };

  void check_arrivals(const std::string& what, int producers, const Sample& sample) {
    if (sample.received != sample.sent) {
      m_problems.add(what + " with " + std::to_string(producers) + " producer(s): " + std::to_string(sample.sent) +
                     " sent, " + std::to_string(sample.received) + " arrived");
    }
  }

  Sample raw_pgbench(int clients, double seconds) {
    RawListener listener(m_scratch.url(), m_scratch.raw_channel(), ++m_run);
    const double cpu_before = listener.cpu_seconds();
    const auto began = Clock::now();
    const std::string duration = std::to_string(std::max(1L, std::lround(seconds)));
    const std::string count = std::to_string(clients);
    const std::string output = spawn({m_options.pgbench, "-n", "-M", "simple", "-f", m_script, "-c", count, "-j", count,
                                      "-T", duration, m_options.url});
    Sample sample;
    sample.sent = number_after(output, "number of transactions actually processed:");
    sample.sent_per_s = static_cast<double>(number_after(output, "tps = ", true)) / 1000.0;
    wait_for_arrivals(listener.recorder(), sample.sent, 3000ms);
    const double wall = std::chrono::duration<double>(Clock::now() - began).count();
    sample.receiver_cpu = (listener.cpu_seconds() - cpu_before) / wall;
    Receipts receipts = listener.finish();
    fill_from(sample, receipts);
    check_arrivals("raw_pgbench", clients, sample);
    return sample;
  }

  Sample raw_libpq(int producers, double seconds) {
    RawListener listener(m_scratch.url(), m_scratch.raw_channel(), ++m_run);
    std::vector<Connection> connections;
    for (int i = 0; i < producers; ++i) connections.push_back(connect_raw(m_scratch.url()));
    const std::string sql = "SELECT pg_notify('" + m_scratch.raw_channel() + "', $1)";
    const double cpu_before = listener.cpu_seconds();
    const auto began = Clock::now();
    auto [sent, elapsed] = run_producers(producers, seconds, [&](std::size_t index, std::atomic<bool>& stop) {
      PGconn* connection = connections[index].get();
      std::string payload;
      std::uint64_t sent_here = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        payload = std::to_string(now_ns());
        payload.resize(m_payload.size(), 'x');
        payload[payload.find('x')] = ' ';
        const char* values[] = {payload.c_str()};
        const Result result(PQexecParams(connection, sql.c_str(), 1, nullptr, values, nullptr, nullptr, 0));
        if (PQresultStatus(result.get()) != PGRES_TUPLES_OK) {
          throw std::runtime_error(std::string("raw pg_notify failed: ") + PQerrorMessage(connection));
        }
        ++sent_here;
      }
      return sent_here;
    });
    Sample sample;
    sample.sent = sent;
    sample.sent_per_s = static_cast<double>(sent) / elapsed;
    wait_for_arrivals(listener.recorder(), sent, 3000ms);
    const double wall = std::chrono::duration<double>(Clock::now() - began).count();
    sample.receiver_cpu = (listener.cpu_seconds() - cpu_before) / wall;
    Receipts receipts = listener.finish();
    fill_from(sample, receipts);
    check_arrivals("raw_libpq", producers, sample);
    return sample;
  }

  double consumer_cpu_seconds() {
    double total = 0;
    for (auto& thread : m_consumer_io.threads) total += thread_cpu_seconds(thread);
    return total;
  }

  Sample livestate(int producers, double seconds, int per_transaction) {
    const std::uint64_t run = ++m_run;
    m_recorder.start(run);
    const auto before = m_consumer->postgres_stats();
    const double cpu_before = consumer_cpu_seconds();
    const auto began = Clock::now();
    auto [sent, elapsed] = run_producers(producers, seconds, [&](std::size_t index, std::atomic<bool>& stop) {
      Producer& producer = m_producers[index];
      Json body = make_body(run, 0);
      Json& sent_ns = body["sent_ns"];
      std::uint64_t sent_here = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        if (per_transaction == 1) {
          sent_ns = now_ns();
          producer.connector->produce(message_key, body);
          ++sent_here;
          continue;
        }
        auto transaction = producer.store->begin();
        sent_ns = now_ns();
        for (int i = 0; i < per_transaction; ++i) transaction.produce(message_key, body);
        transaction.commit();
        sent_here += static_cast<std::uint64_t>(per_transaction);
      }
      return sent_here;
    });
    const std::string what = per_transaction == 1 ? "livestate_1" : "livestate_" + std::to_string(per_transaction);
    Sample sample;
    sample.sent = sent;
    sample.sent_per_s = static_cast<double>(sent) / elapsed / per_transaction;
    wait_for_arrivals(m_recorder, sent, 5000ms);
    const double wall = std::chrono::duration<double>(Clock::now() - began).count();
    sample.receiver_cpu = (consumer_cpu_seconds() - cpu_before) / wall;
    Receipts receipts = m_recorder.finish();
    fill_from(sample, receipts);
    check_arrivals(what, producers, sample);
    const auto after = m_consumer->postgres_stats();
    const auto differ = [&](const char* counter, std::uint64_t a, std::uint64_t b) {
      if (a != b) {
        m_problems.add(what + " with " + std::to_string(producers) + " producer(s): the consumer counted " +
                       std::to_string(b - a) + " " + counter);
      }
    };
    differ("gap(s)", before.gaps, after.gaps);
    differ("message(s) dropped on overflow", before.dropped_overflow, after.dropped_overflow);
    differ("malformed payload(s)", before.malformed, after.malformed);
    differ("reconnect(s)", before.reconnects, after.reconnects);
    return sample;
  }

  // Runs a program, returns what it printed (stdout and stderr); fails unless
  // it exits 0.
  static std::string spawn(const std::vector<std::string>& argv) {
    int pipe_ends[2];
    if (::pipe(pipe_ends) != 0) throw std::runtime_error("pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_ends[1], 1);
    posix_spawn_file_actions_adddup2(&actions, pipe_ends[1], 2);
    posix_spawn_file_actions_addclose(&actions, pipe_ends[0]);
    std::vector<char*> arguments;
    for (const auto& arg : argv) arguments.push_back(const_cast<char*>(arg.c_str()));
    arguments.push_back(nullptr);
    pid_t child = 0;
    const int spawned = posix_spawn(&child, argv.front().c_str(), &actions, nullptr, arguments.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipe_ends[1]);
    if (spawned != 0) {
      ::close(pipe_ends[0]);
      throw std::runtime_error("cannot run " + argv.front() + ": " + std::strerror(spawned));
    }
    std::string output;
    char buffer[4096];
    for (ssize_t n; (n = ::read(pipe_ends[0], buffer, sizeof buffer)) != 0;) {
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) break;
      output.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(pipe_ends[0]);
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      throw std::runtime_error(argv.front() + " failed:\n" + output);
    }
    return output;
  }

  // The number after `label` in pgbench's output (times 1000 with `milli`,
  // for tps with decimals).
  static std::uint64_t number_after(const std::string& output, const std::string& label, bool milli = false) {
    const auto at = output.find(label);
    if (at == std::string::npos) throw std::runtime_error("pgbench printed no \"" + label + "\":\n" + output);
    const double value = std::strtod(output.c_str() + at + label.size(), nullptr);
    return static_cast<std::uint64_t>(std::llround(milli ? value * 1000.0 : value));
  }

  const Options& m_options;
  Scratch& m_scratch;
  Problems& m_problems;
  std::uint64_t m_run = 0;
  Recorder m_recorder;
  boost::asio::io_context m_idle_io;  // the producers' executor, never run
  IoThreads m_consumer_io;
  std::unique_ptr<livestate::mq::PostgresConnector> m_consumer;
  std::unique_ptr<livestate::mq::Consumer> m_subscription;
  std::vector<Producer> m_producers;
  std::string m_payload;
  std::string m_directory;
  std::string m_script;
};

// --- results -------------------------------------------------------------------------

using livestate::bench::fixed;
using livestate::bench::median;

struct Summary {
  double sent_per_s, received_per_s, p50_ms, p99_ms, receiver_cpu;
  std::uint64_t sent, received;
};

Summary summarize(const std::vector<Sample>& samples) {
  auto field = [&](double Sample::*member) {
    std::vector<double> values;
    for (const auto& sample : samples) values.push_back(sample.*member);
    return median(values);
  };
  Summary summary{field(&Sample::sent_per_s),
                  field(&Sample::received_per_s),
                  field(&Sample::p50_ms),
                  field(&Sample::p99_ms),
                  field(&Sample::receiver_cpu),
                  0,
                  0};
  for (const auto& sample : samples) {
    summary.sent += sample.sent;
    summary.received += sample.received;
  }
  return summary;
}

std::string rate(double value) {
  if (std::isnan(value)) return "n/a";
  const std::string digits = std::to_string(std::llround(value));
  std::string grouped;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0 && digits[i - 1] != '-') grouped += ',';
    grouped += digits[i];
  }
  return grouped;
}

Json number_or_null(double value) { return std::isnan(value) ? Json(nullptr) : Json(value); }

std::string load_average() {
  std::ifstream file("/proc/loadavg");
  std::string one, five, fifteen;
  file >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

std::string cpu_model() {
  std::ifstream file("/proc/cpuinfo");
  for (std::string line; std::getline(file, line);) {
    if (line.starts_with("model name")) {
      const auto colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(colon + 2);
    }
  }
  return "unknown CPU";
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse_options(argc, argv);
  Problems problems;
  const std::vector<std::string> cases{"raw_pgbench", "raw_libpq", "livestate_1",
                                       "livestate_" + std::to_string(options.batch)};
  for (const auto& name : options.only_cases) {
    if (std::find(cases.begin(), cases.end(), name) == cases.end()) usage_error("unknown case \"" + name + "\"");
  }
  const auto selected = [&](const std::string& name) {
    return options.only_cases.empty() ||
           std::find(options.only_cases.begin(), options.only_cases.end(), name) != options.only_cases.end();
  };
  std::map<std::string, std::map<int, std::vector<Sample>>> samples;
  Json meta;
  try {
    Scratch scratch(options.url);
    const auto setting = [&](const char* name) { return query_text(scratch.admin(), std::string("SHOW ") + name); };
    meta = Json{{"server", "PostgreSQL " + setting("server_version")},
                {"fsync", setting("fsync")},
                {"synchronous_commit", setting("synchronous_commit")},
                {"full_page_writes", setting("full_page_writes")},
                {"cpu", cpu_model()},
                {"nproc", std::thread::hardware_concurrency()},
                {"load_before", load_average()},
                {"reps", options.reps},
                {"seconds", options.seconds},
                {"batch", options.batch},
                {"consumer_threads", options.consumer_threads},
                {"pgbench", options.pgbench}};
    Bench bench(options, scratch, problems);
    meta["payload_bytes"] = bench.payload_bytes();

    if (!options.quick) {
      std::cerr << "pg_notify_bench: warming up\n";
      const int most = *std::max_element(options.producers.begin(), options.producers.end());
      for (const auto& name : cases) {
        if (selected(name)) (void)bench.run(name, most, std::min(1.0, options.seconds));
      }
    }
    for (int rep = 1; rep <= options.reps; ++rep) {
      for (const int producers : options.producers) {
        for (const auto& name : cases) {
          if (!selected(name)) continue;
          std::cerr << "pg_notify_bench: repetition " << rep << "/" << options.reps << ", " << name << ", " << producers
                    << " producer(s)\n";
          samples[name][producers].push_back(bench.run(name, producers, options.seconds));
        }
      }
    }
    meta["load_after"] = load_average();
  } catch (const std::exception& error) {
    std::cerr << "pg_notify_bench: " << error.what() << "\n";
    return 1;
  }

  const std::string& batched = cases[3];
  struct Row {
    int producers;
    Summary pgbench, libpq, single, batch;
  };
  std::vector<Row> rows;
  for (const int producers : options.producers) {
    rows.push_back(Row{producers, summarize(samples["raw_pgbench"][producers]),
                       summarize(samples["raw_libpq"][producers]), summarize(samples["livestate_1"][producers]),
                       summarize(samples[batched][producers])});
  }

  if (options.json) {
    for (const auto& name : cases) {
      for (const int producers : options.producers) {
        const auto& runs = samples[name][producers];
        if (runs.empty()) continue;
        const Summary summary = summarize(runs);
        Json reps = Json::array();
        for (const auto& sample : runs) {
          reps.push_back({{"sent_tx_per_s", sample.sent_per_s},
                          {"received_msgs_per_s", sample.received_per_s},
                          {"p50_ms", number_or_null(sample.p50_ms)},
                          {"p99_ms", number_or_null(sample.p99_ms)},
                          {"receiver_cpu", sample.receiver_cpu},
                          {"sent", sample.sent},
                          {"received", sample.received}});
        }
        std::cout << Json{{"case", name},
                          {"producers", producers},
                          {"sent_tx_per_s", summary.sent_per_s},
                          {"received_msgs_per_s", summary.received_per_s},
                          {"p50_ms", number_or_null(summary.p50_ms)},
                          {"p99_ms", number_or_null(summary.p99_ms)},
                          {"receiver_cpu", summary.receiver_cpu},
                          {"reps", reps}}
                         .dump()
                  << "\n";
      }
    }
    for (const auto& row : rows) {
      std::cout << Json{{"ratio", "livestate_1_msgs_per_raw_tps"},
                        {"producers", row.producers},
                        {"value", row.single.received_per_s / row.pgbench.sent_per_s},
                        {"target", 0.9}}
                       .dump()
                << "\n"
                << Json{{"ratio", batched + "_msgs_per_raw_msgs"},
                        {"producers", row.producers},
                        {"value", row.batch.received_per_s / row.pgbench.received_per_s},
                        {"target", 20}}
                       .dump()
                << "\n"
                << Json{{"ratio", "livestate_1_p50_minus_raw_p50_ms"},
                        {"producers", row.producers},
                        {"value", number_or_null(row.single.p50_ms - row.libpq.p50_ms)},
                        {"target", 0.2}}
                       .dump()
                << "\n";
    }
    meta["meta"] = true;
    meta["problems"] = problems.lines;
    std::cout << meta.dump() << "\n";
  } else {
    // "0.95 yes", "0.19 **no**", or "n/a" when a case was not run.
    const auto verdict = [](double value, int decimals, const char* unit, bool met) {
      if (std::isnan(value)) return std::string("n/a");
      return fixed(value, decimals) + unit + (met ? " yes" : " **no**");
    };
    std::cout << "Throughput (messages/s where they arrive; "
              << (options.reps == 1 ? std::string("one run") : "medians of " + std::to_string(options.reps) + " runs")
              << " of " << fixed(options.seconds, 1) << " s per case)\n\n"
              << "| producers | raw pgbench tx/s | raw received msgs/s | livestate 1/tx msgs/s | ÷ raw tx/s "
                 "(≥ 0.90) | livestate "
              << options.batch << "/tx msgs/s (sent) | ÷ raw msgs/s (≥ 20) |\n"
              << "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
    for (const auto& row : rows) {
      const double single = row.single.received_per_s / row.pgbench.sent_per_s;
      const double batch = row.batch.received_per_s / row.pgbench.received_per_s;
      std::cout << "| " << row.producers << " | " << rate(row.pgbench.sent_per_s) << " | "
                << rate(row.pgbench.received_per_s) << " | " << rate(row.single.received_per_s) << " | "
                << verdict(single, 2, "", single >= 0.9) << " | " << rate(row.batch.received_per_s) << " ("
                << rate(row.batch.sent_per_s * options.batch) << ") | " << verdict(batch, 1, "x", batch >= 20)
                << " |\n";
    }
    std::cout << "\nLatency, send to callback (ms; raw: libpq SELECT pg_notify to PQnotifies, same payload size)\n\n"
              << "| producers | raw libpq tx/s | raw p50 | raw p99 | livestate 1/tx p50 | p99 | p50 − raw (≤ 0.2) | "
                 "livestate "
              << options.batch << "/tx p50 | p99 |\n"
              << "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
    for (const auto& row : rows) {
      const double difference = row.single.p50_ms - row.libpq.p50_ms;
      std::cout << "| " << row.producers << " | " << rate(row.libpq.sent_per_s) << " | " << fixed(row.libpq.p50_ms, 3)
                << " | " << fixed(row.libpq.p99_ms, 3) << " | " << fixed(row.single.p50_ms, 3) << " | "
                << fixed(row.single.p99_ms, 3) << " | " << verdict(difference, 3, "", difference <= 0.2) << " | "
                << fixed(row.batch.p50_ms, 3) << " | " << fixed(row.batch.p99_ms, 3) << " |\n";
    }
    std::cout << "\nLatency is measured while producers send as fast as they can; where the consumer "
                 "receives less than is sent (the throughput table's sent column), a backlog grows during "
                 "the run and the latency grows with --seconds.\n";
    std::cout << "\nReceiving thread CPU (s per s): ";
    for (const auto& row : rows) {
      std::cout << row.producers << " producer(s): raw " << fixed(row.pgbench.receiver_cpu, 2) << ", 1/tx "
                << fixed(row.single.receiver_cpu, 2) << ", " << options.batch << "/tx "
                << fixed(row.batch.receiver_cpu, 2) << "; ";
    }
    std::cout << "\n\n"
              << meta["server"].get<std::string>() << " on the same machine (fsync=" << meta["fsync"].get<std::string>()
              << ", synchronous_commit=" << meta["synchronous_commit"].get<std::string>()
              << ", full_page_writes=" << meta["full_page_writes"].get<std::string>() << "); "
              << meta["cpu"].get<std::string>() << ", nproc " << meta["nproc"].get<unsigned>() << "; payload "
              << meta["payload_bytes"].get<std::size_t>() << " bytes; load average "
              << meta["load_before"].get<std::string>() << " before, " << meta["load_after"].get<std::string>()
              << " after\n";
    for (const auto& line : problems.lines) std::cout << "\nProblem: " << line << "\n";
  }
  if (!problems.lines.empty()) {
    for (const auto& line : problems.lines) std::cerr << "pg_notify_bench: " << line << "\n";
    return 1;
  }
  return 0;
}
