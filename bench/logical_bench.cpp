// logical_bench: what each transport of the PostgreSQL connector costs the
// state store's writers, beside the store without any transport, in the same
// run; and what one consumer receives of each.
//
// Cases, for 1, 4, 8 and 16 writers (--writers), each a thread with a store
// of its own paired with a connector of its own, doing claim-and-complete
// cycles on requests of its own (claim_buildrequests of one, then
// complete_buildrequests of it: two transactions; the requests are made
// before timing, untimed):
//   discard  the store's messages go to a connector that drops them: the
//            store alone, the ceiling
//   notify   the LISTEN/NOTIFY transport: each transaction NOTIFYs
//   logical  the logical transport: each transaction writes a logical message
// Transactions per second are counted by the writers. For notify and logical
// one consumer connector (its own executor thread) follows every claim
// (buildrequests.*.claimed); commit→callback latency is from the moment
// claim_buildrequests returned in the writer to the consumer's callback
// (counted as 0 when the callback came first), p50 and p99.
//
// And batch_100: --batch-writers threads each committing store transactions
// of 100 messages (--batch) on notify and on logical, one consumer counting
// them: messages per second where they arrive. The writers wait while 20,000
// are on their way, so that the consumer is kept busy but never overflows.
//
// Every message must arrive (else the program fails, exit 1, after printing
// what it measured). The cases are interleaved in each repetition; a first,
// unmeasured pass warms everything up; the tables show medians over --reps.
// The bench runs in a schema of its own (the URL gets
// options=-csearch_path=SCHEMA) on a channel of its own, and drops the schema
// at the end. It prints the server's fsync, synchronous_commit and wal_level:
// bench/logical_compare.sh runs it on a server with fsync and
// synchronous_commit on, and on the test harness's (both off).
//
// Usage: logical_bench [--db URL] [--writers 1,4,8,16] [--reps N] [--seconds S]
//                      [--pool N] [--batch N] [--batch-writers N] [--json] [--quick]
//   --db URL            the server (default: $LIVESTATE_TEST_PG); wal_level must be logical
//   --seconds S         how long writers run in each case (4)
//   --pool N            requests made before each case, shared among its writers
//                       (20000); a writer that runs out stops early, and the
//                       run says so (not with --quick: its numbers mean nothing)
//   --json              JSON lines instead of the tables
//   --quick             one short repetition, small pools: a smoke test

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <pqxx/pqxx>

#include "bench_common.hpp"
#include "livestate/db/store.hpp"
#include "livestate/mq/postgres.hpp"

namespace {

using livestate::Filter;
using livestate::Json;
using livestate::RoutingKey;
namespace mq = livestate::mq;
namespace db = livestate::db;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

struct Options {
  std::string url;
  std::vector<int> writers{1, 4, 8, 16};
  int reps = 3;
  double seconds = 4;
  int pool = 20000;
  int batch = 100;
  int batch_writers = 4;
  bool json = false;
  bool quick = false;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "logical_bench: " << message
            << "\nusage: logical_bench [--db URL] [--writers 1,4,8,16] [--reps N] [--seconds S] [--pool N]\n"
               "                     [--batch N] [--batch-writers N] [--json] [--quick]\n";
  std::exit(2);
}

int positive(const std::string& option, const std::string& text) {
  if (const auto value = livestate::bench::positive_int(text)) return *value;
  usage_error(option + " wants a positive integer, not \"" + text + "\"");
}

Options parse(int argc, char** argv) {
  Options options;
  const std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    const auto value = [&] {
      if (i + 1 >= args.size()) usage_error(arg + " needs a value");
      return args[++i];
    };
    if (arg == "--db") {
      options.url = value();
    } else if (arg == "--writers") {
      options.writers.clear();
      std::stringstream list(value());
      for (std::string item; std::getline(list, item, ',');) options.writers.push_back(positive(arg, item));
    } else if (arg == "--reps") {
      options.reps = positive(arg, value());
    } else if (arg == "--seconds") {
      options.seconds = std::atof(value().c_str());
      if (!(options.seconds > 0)) usage_error("--seconds wants a positive number");
    } else if (arg == "--pool") {
      options.pool = positive(arg, value());
    } else if (arg == "--batch") {
      options.batch = positive(arg, value());
    } else if (arg == "--batch-writers") {
      options.batch_writers = positive(arg, value());
    } else if (arg == "--json") {
      options.json = true;
    } else if (arg == "--quick") {
      options.quick = true;
    } else {
      usage_error("unknown argument \"" + arg + "\"");
    }
  }
  if (options.url.empty()) {
    const char* env = std::getenv("LIVESTATE_TEST_PG");
    if (env == nullptr || *env == '\0') usage_error("no server: give --db URL or set LIVESTATE_TEST_PG");
    options.url = env;
  }
  if (options.quick) {
    options.reps = 1;
    options.seconds = 0.5;
    options.pool = 1000;
    options.writers = {1, 4};
  }
  return options;
}

// The store without a transport: its messages are dropped.
class DiscardingConnector final : public mq::Connector {
 public:
  void produce(const RoutingKey&, const Json&) override {}
  std::unique_ptr<mq::Consumer> start_consuming(mq::Callback, Filter, std::optional<std::string>) override {
    throw std::logic_error("nothing to consume here");
  }
  [[nodiscard]] mq::ConnectorStats stats() const override { return {}; }
};

enum class Transport { discard, notify, logical };
constexpr Transport transports[] = {Transport::discard, Transport::notify, Transport::logical};
const char* name_of(Transport transport) {
  return transport == Transport::discard ? "discard" : transport == Transport::notify ? "notify" : "logical";
}

// An executor run by a thread of its own, or by none (producers only).
struct Io {
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{io.get_executor()};
  std::thread thread;
  explicit Io(bool running) {
    if (running) thread = std::thread([this] { io.run(); });
  }
  Io(const Io&) = delete;
  Io& operator=(const Io&) = delete;
  ~Io() {
    work.reset();
    io.stop();
    if (thread.joinable()) thread.join();
  }
};

// When each request's claim committed (in its writer) and reached the consumer.
class Timings {
 public:
  void committed(std::int64_t id, std::int64_t at) { note(m_committed, id, at); }
  void received(std::int64_t id, std::int64_t at) { note(m_received, id, at); }
  void clear() {
    std::lock_guard lock(m_mutex);
    m_committed.clear();
    m_received.clear();
  }
  [[nodiscard]] std::size_t received_count() {
    std::lock_guard lock(m_mutex);
    return m_received.size();
  }
  // Latencies of the claims committed in this run, in ms; NAN when none.
  std::pair<double, double> percentiles() {
    std::lock_guard lock(m_mutex);
    std::vector<double> latencies;
    for (const auto& [id, at] : m_committed) {
      if (const auto found = m_received.find(id); found != m_received.end()) {
        latencies.push_back(static_cast<double>(std::max<std::int64_t>(0, found->second - at)) / 1e6);
      }
    }
    if (latencies.empty()) return {NAN, NAN};
    std::sort(latencies.begin(), latencies.end());
    const auto at = [&](double fraction) {
      return latencies[static_cast<std::size_t>(fraction * static_cast<double>(latencies.size() - 1))];
    };
    return {at(0.5), at(0.99)};
  }

 private:
  void note(std::unordered_map<std::int64_t, std::int64_t>& map, std::int64_t id, std::int64_t at) {
    std::lock_guard lock(m_mutex);
    map.emplace(id, at);
  }
  std::mutex m_mutex;
  std::unordered_map<std::int64_t, std::int64_t> m_committed, m_received;
};

struct Writer {
  std::unique_ptr<mq::Connector> connector;
  std::unique_ptr<db::Store> store;  // after its connector: destroyed first
  std::vector<std::int64_t> pool;    // unclaimed requests of its own
};

struct Sample {
  double transactions_per_s = 0;
  double p50_ms = NAN;
  double p99_ms = NAN;
  std::uint64_t messages = 0;
  double messages_per_s = 0;
};

class Bench {
 public:
  Bench(const Options& options, std::string url, std::string channel)
      : m_options(options), m_url(std::move(url)), m_channel(std::move(channel)) {
    DiscardingConnector setup_connector;
    auto setup = db::Store::open(m_url, setup_connector);
    m_master = setup->master_active("logical_bench");
    m_builder = setup->builder_started("logical_bench", m_master);
    mq::PostgresOptions connector_options;
    connector_options.channel = m_channel;
    const int most = *std::max_element(options.writers.begin(), options.writers.end());
    for (const auto transport : transports) {
      auto& lane = m_lanes[transport];
      lane.writers.resize(static_cast<std::size_t>(std::max(most, options.batch_writers)));
      for (auto& writer : lane.writers) {
        if (transport == Transport::discard) {
          writer.connector = std::make_unique<DiscardingConnector>();
        } else {
          // Bound to an executor that never runs: they only produce.
          writer.connector = mq::make_postgres_connector(url_for(transport), m_idle.io.get_executor(),
                                                         connector_options);
        }
        writer.store = db::Store::open(url_for(transport), *writer.connector);
      }
      if (transport == Transport::discard) continue;
      lane.consumer = mq::make_postgres_connector(url_for(transport), lane.io.io.get_executor(), connector_options);
      if (!lane.consumer->wait_listening(30s))
        throw std::runtime_error(std::string(name_of(transport)) + ": not listening");
      lane.claims = lane.consumer->start_consuming(
          [this, transport](const RoutingKey& key, const Json&) {
            m_lanes[transport].timings.received(std::stoll(key[1]), now_ns());
          },
          Filter{"buildrequests", std::nullopt, "claimed"});
      lane.batches = lane.consumer->start_consuming(
          [this, transport](const RoutingKey&, const Json&) { m_lanes[transport].batch_arrivals.note(now_ns()); },
          Filter{"batch", std::nullopt});
    }
  }

  Sample cycles(Transport transport, int writers, double seconds) {
    auto& lane = m_lanes[transport];
    // Fewer each when there are more writers: together they go no faster
    // than the server commits.
    const auto share = static_cast<std::size_t>(std::max(1, m_options.pool / writers));
    for (int i = 0; i < writers; ++i) refill(lane.writers[static_cast<std::size_t>(i)], share);
    lane.timings.clear();
    std::atomic<std::uint64_t> claims{0}, transactions{0};
    std::atomic<bool> ran_dry{false};
    const double elapsed = livestate::bench::run_together(
        writers, seconds, [&](int index, const std::atomic<bool>& stop) {
          auto& writer = lane.writers[static_cast<std::size_t>(index)];
          while (!stop.load(std::memory_order_relaxed)) {
            if (writer.pool.empty()) {
              ran_dry = true;
              return;
            }
            const std::int64_t id = writer.pool.back();
            writer.pool.pop_back();
            const std::vector<std::int64_t> one{id};
            writer.store->claim_buildrequests(one, m_master);
            lane.timings.committed(id, now_ns());
            writer.store->complete_buildrequests(one, db::results::success, m_master);
            transactions += 2;
            ++claims;
          }
        });
    if (ran_dry && !m_options.quick)
      problem(std::string(name_of(transport)) + " with " + std::to_string(writers) +
              " writer(s): a writer ran out of requests (raise --pool)");
    Sample sample;
    sample.transactions_per_s = static_cast<double>(transactions) / elapsed;
    if (transport != Transport::discard) {
      if (!settle([&] { return std::uint64_t{lane.timings.received_count()}; }, claims)) {
        problem(std::string(name_of(transport)) + " with " + std::to_string(writers) +
                " writer(s): " + std::to_string(claims.load()) + " claims, " +
                std::to_string(lane.timings.received_count()) + " arrived");
      }
      std::tie(sample.p50_ms, sample.p99_ms) = lane.timings.percentiles();
    }
    return sample;
  }

  Sample batches(Transport transport, double seconds) {
    auto& lane = m_lanes[transport];
    lane.batch_arrivals.clear();
    std::atomic<std::uint64_t> sent{0};
    constexpr std::uint64_t in_flight = 20'000;
    livestate::bench::run_together(m_options.batch_writers, seconds, [&](int index, const std::atomic<bool>& stop) {
      auto& writer = lane.writers[static_cast<std::size_t>(index)];
      const Json body{{"buildrequestid", 42}, {"claimed", true}, {"claimed_by_masterid", 7}, {"_rev", 2}};
      while (!stop.load(std::memory_order_relaxed)) {
        // Writers can outrun one consumer many times over: past its
        // connector's max_buffered it would be told of an overflow, not
        // measured. Keep the consumer busy, not drowned.
        if (sent.load() > lane.batch_arrivals.count() + in_flight) {
          std::this_thread::sleep_for(1ms);
          continue;
        }
        auto transaction = writer.store->begin();
        for (int i = 0; i < m_options.batch; ++i) transaction.produce(RoutingKey{"batch", std::to_string(i)}, body);
        transaction.commit();
        sent += static_cast<std::uint64_t>(m_options.batch);
      }
    });
    Sample sample;
    if (!settle([&] { return lane.batch_arrivals.count(); }, sent)) {
      problem(std::string(name_of(transport)) + " batch_" + std::to_string(m_options.batch) + ": " +
              std::to_string(sent.load()) + " sent, " + std::to_string(lane.batch_arrivals.count()) + " arrived");
    }
    sample.messages = lane.batch_arrivals.count();
    sample.messages_per_s = lane.batch_arrivals.rate();
    return sample;
  }

  [[nodiscard]] const std::vector<std::string>& problems() const noexcept { return m_problems; }

 private:
  // Arrivals counted, first and last.
  class Arrivals {
   public:
    void note(std::int64_t at) {
      std::lock_guard lock(m_mutex);
      if (m_count++ == 0) m_first = at;
      m_last = at;
    }
    void clear() {
      std::lock_guard lock(m_mutex);
      m_count = 0;
    }
    [[nodiscard]] std::uint64_t count() {
      std::lock_guard lock(m_mutex);
      return m_count;
    }
    [[nodiscard]] double rate() {
      std::lock_guard lock(m_mutex);
      return m_count > 1 && m_last > m_first
                 ? static_cast<double>(m_count - 1) * 1e9 / static_cast<double>(m_last - m_first)
                 : 0;
    }

   private:
    std::mutex m_mutex;
    std::uint64_t m_count = 0;
    std::int64_t m_first = 0, m_last = 0;
  };

  struct Lane {
    Io io{true};  // the consumer's executor: before the consumer, destroyed after it
    std::unique_ptr<mq::PostgresConnector> consumer;
    std::unique_ptr<mq::Consumer> claims, batches;
    std::vector<Writer> writers;
    Timings timings;
    Arrivals batch_arrivals;
  };

  [[nodiscard]] std::string url_for(Transport transport) const {
    if (transport != Transport::logical) return m_url;
    return m_url + (m_url.find("://") == std::string::npos ? " transport=logical" : "&transport=logical");
  }

  // Up to `count` requests of the writer's own, one per buildset, made in
  // transactions of 250.
  void refill(Writer& writer, std::size_t count) {
    db::NewBuildset buildset;
    buildset.builderids = {m_builder};
    buildset.reason = "logical_bench";
    while (writer.pool.size() < count) {
      auto transaction = writer.store->begin();
      for (int i = 0; i < 250 && writer.pool.size() < count; ++i) {
        writer.pool.push_back(transaction.add_buildset(buildset).buildrequestids.at(m_builder));
      }
      transaction.commit();
    }
  }

  // Until `arrived()` reaches `expected`, or 10 s without progress.
  template <class Count>
  static bool settle(Count arrived, std::uint64_t expected) {
    // A consumer slower than the writers is still working through what
    // they wrote: only a count that stops moving is a loss.
    std::uint64_t last = arrived();
    for (auto deadline = Clock::now() + 10s; Clock::now() < deadline; std::this_thread::sleep_for(2ms)) {
      const std::uint64_t now = arrived();
      if (now >= expected) return true;
      if (now != last) deadline = Clock::now() + 10s;
      last = now;
    }
    return arrived() >= expected;
  }

  void problem(std::string line) { m_problems.push_back(std::move(line)); }

  const Options& m_options;
  const std::string m_url;
  const std::string m_channel;
  Io m_idle{false};
  std::int64_t m_master = 0;
  std::int64_t m_builder = 0;
  std::map<Transport, Lane> m_lanes;
  std::vector<std::string> m_problems;
};

using livestate::bench::fixed;
using livestate::bench::median;

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  try {
    // A schema of its own.
    const std::string suffix = std::to_string(::getpid());
    const std::string schema = "livestate_logical_bench_" + suffix;
    pqxx::connection admin(options.url);
    pqxx::nontransaction(admin).exec("CREATE SCHEMA " + schema);
    const auto settings = pqxx::nontransaction(admin).exec1(
        "SELECT current_setting('fsync'), current_setting('synchronous_commit'), current_setting('wal_level')");
    const std::string url = options.url.find("://") == std::string::npos
                                ? options.url + " options='-csearch_path=" + schema + "'"
                                : options.url + (options.url.find('?') == std::string::npos ? "?" : "&") +
                                      "options=-csearch_path%3D" + schema;
    std::map<std::pair<std::string, int>, std::vector<Sample>> samples;
    std::vector<std::string> problems;
    {
      Bench bench(options, url, "logical_bench_" + suffix);
      for (int rep = options.quick ? 1 : 0; rep <= options.reps; ++rep) {  // rep 0: the warm-up
        const double seconds = rep == 0 ? std::min(1.0, options.seconds) : options.seconds;
        for (const int writers : options.writers) {
          for (const auto transport : transports) {
            const auto sample = bench.cycles(transport, writers, seconds);
            if (rep > 0) samples[{name_of(transport), writers}].push_back(sample);
          }
        }
        for (const auto transport : {Transport::notify, Transport::logical}) {
          const auto sample = bench.batches(transport, seconds);
          if (rep > 0) samples[{std::string(name_of(transport)) + "_batch", options.batch_writers}].push_back(sample);
        }
      }
      problems = bench.problems();
    }
    pqxx::nontransaction(admin).exec("DROP SCHEMA " + schema + " CASCADE");

    const auto med = [&](const std::string& name, int writers, auto field) {
      std::vector<double> values;
      for (const auto& sample : samples[{name, writers}]) values.push_back(sample.*field);
      return median(values);
    };
    if (options.json) {
      for (const auto& [key, list] : samples) {
        std::cout << Json{{"case", key.first},
                          {"writers", key.second},
                          {"transactions_per_s", med(key.first, key.second, &Sample::transactions_per_s)},
                          {"p50_ms", med(key.first, key.second, &Sample::p50_ms)},
                          {"p99_ms", med(key.first, key.second, &Sample::p99_ms)},
                          {"messages_per_s", med(key.first, key.second, &Sample::messages_per_s)}}
                         .dump()
                  << "\n";
      }
    } else {
      std::cout << "Server: fsync=" << settings[0].c_str() << ", synchronous_commit=" << settings[1].c_str()
                << ", wal_level=" << settings[2].c_str() << "; " << options.reps << " repetitions of "
                << options.seconds << " s, medians.\n\n"
                << "| writers | discard tx/s | notify tx/s | notify ÷ discard | logical tx/s | logical ÷ discard | "
                   "notify p50 / p99 ms | logical p50 / p99 ms |\n"
                << "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
      for (const int writers : options.writers) {
        const double ceiling = med("discard", writers, &Sample::transactions_per_s);
        const double notify = med("notify", writers, &Sample::transactions_per_s);
        const double logical = med("logical", writers, &Sample::transactions_per_s);
        std::cout << "| " << writers << " | " << fixed(ceiling, 0) << " | " << fixed(notify, 0) << " | "
                  << fixed(notify / ceiling, 2) << " | " << fixed(logical, 0) << " | " << fixed(logical / ceiling, 2)
                  << " | " << fixed(med("notify", writers, &Sample::p50_ms), 2) << " / "
                  << fixed(med("notify", writers, &Sample::p99_ms), 2) << " | "
                  << fixed(med("logical", writers, &Sample::p50_ms), 2) << " / "
                  << fixed(med("logical", writers, &Sample::p99_ms), 2) << " |\n";
      }
      std::cout << "\nOne consumer, " << options.batch_writers << " writers committing " << options.batch
                << " messages per transaction: notify "
                << fixed(med("notify_batch", options.batch_writers, &Sample::messages_per_s), 0)
                << " messages/s, logical "
                << fixed(med("logical_batch", options.batch_writers, &Sample::messages_per_s), 0) << " messages/s.\n";
    }
    for (const auto& line : problems) std::cerr << "logical_bench: problem: " << line << "\n";
    return problems.empty() ? 0 : 1;
  } catch (const std::exception& error) {
    std::cerr << "logical_bench: " << error.what() << "\n";
    return 1;
  }
}
