// `livestate chaos`: several masters run Buildbot's build-request lifecycle
// on one database while live views of every type follow their messages
// through fault-injecting connectors; at the end every view must equal the
// database.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "commands.hpp"
#include "livestate/core/json.hpp"
#include "livestate/db/errors.hpp"
#include "livestate/db/store.hpp"
#include "livestate/mq/connect.hpp"
#include "livestate/mq/faulty.hpp"
#include "livestate/mq/simple_mq.hpp"
#include "livestate/reconcile/live_view.hpp"

namespace livestate::cli {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* chaos_help =
    "usage: livestate chaos [--db URL] [--masters N] [--builders N] [--buildsets N]\n"
    "                       [--seed N] [--reorder P] [--drop P] [--duplicate P]\n"
    "                       [--delay-ms N] [--partition-every-ms N] [--duration D]\n"
    "                       [--json]\n"
    "\n"
    "Runs Buildbot's build-request lifecycle for real on one database: masters\n"
    "(threads, each with its own store and connector) add buildsets, race to\n"
    "claim their requests (the losers get AlreadyClaimed), run builds and steps,\n"
    "finish them and complete the requests; some requests are cancelled, and some\n"
    "masters 'crash' holding a claim (it is released without a message, as a\n"
    "Buildbot master's restart does). Meanwhile live views of buildsets, build\n"
    "requests, builds and steps follow the messages through connectors that\n"
    "reorder, drop, duplicate, delay and partition them. When the masters are\n"
    "done, the faults stop and the views must converge to the database.\n"
    "\n"
    "It prints progress while it runs, then a summary: messages, faults injected\n"
    "by kind, anomalies the views detected by kind, reloads, resyncs, the time to\n"
    "converge and the verdict. Exit status 0 only when every view equals the\n"
    "database.\n"
    "\n"
    "  --db URL               sqlite:PATH or postgresql://... (migrated when empty;\n"
    "                         default: a new SQLite file in a temporary directory,\n"
    "                         removed at the end). On PostgreSQL the messages\n"
    "                         travel through LISTEN/NOTIFY.\n"
    "  --masters N            masters (default 3)\n"
    "  --builders N           builders (default 4)\n"
    "  --buildsets N          buildsets to add in all (default 1000)\n"
    "  --seed N               the fault generators' seed (default 1): a run's\n"
    "                         faults replay with the same seed\n"
    "  --reorder P            probability that a message is held back and\n"
    "                         delivered up to 8 messages later (default 0.1)\n"
    "  --drop P               probability that a message is lost (default 0.01)\n"
    "  --duplicate P          probability that a message arrives twice (0.02)\n"
    "  --delay-ms N           messages are delayed by up to N ms, with\n"
    "                         probability 0.05 (default 20)\n"
    "  --partition-every-ms N every N ms a view's connector drops everything for\n"
    "                         N/10 ms, then reports a reset (default 1000; 0: never)\n"
    "  --duration D           stop adding work after D (e.g. 30s, 10m; default:\n"
    "                         when the buildsets are done)\n"
    "  --json                 print the summary as one JSON object (with\n"
    "                         \"converged\" and \"views\": type -> entries)\n";

struct ChaosOptions {
  std::string url;
  int masters = 3;
  int builders = 4;
  int buildsets = 1000;
  std::uint64_t seed = 1;
  double reorder = 0.1;
  double drop = 0.01;
  double duplicate = 0.02;
  int delay_ms = 20;
  int partition_every_ms = 1000;
  std::optional<std::chrono::milliseconds> duration;
  bool json = false;
};

double probability(const std::string& name, const std::string& value) {
  std::size_t used = 0;
  double parsed = 0;
  try {
    parsed = std::stod(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || !(parsed >= 0 && parsed <= 1)) {
    throw UsageError{name + " needs a probability between 0 and 1, not '" + value + "'"};
  }
  return parsed;
}

long long whole(const std::string& name, const std::string& value, long long minimum) {
  std::size_t used = 0;
  long long parsed = 0;
  try {
    parsed = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || parsed < minimum) {
    throw UsageError{name + " needs a whole number of at least " + std::to_string(minimum) + ", not '" + value +
                     "'"};
  }
  return parsed;
}

std::chrono::milliseconds duration_of(const std::string& value) {
  std::size_t used = 0;
  double number = 0;
  try {
    number = std::stod(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = used == 0 ? "" : value.substr(used);
  double factor = 0;
  if (unit == "ms") factor = 1;
  if (unit == "s" || unit.empty()) factor = 1000;
  if (unit == "m") factor = 60'000;
  if (unit == "h") factor = 3'600'000;
  if (used == 0 || factor == 0 || !(number > 0) || !std::isfinite(number)) {
    throw UsageError{"--duration needs a positive duration such as 30s, 10m or 1h, not '" + value + "'"};
  }
  return std::chrono::milliseconds(static_cast<long long>(number * factor));
}

ChaosOptions parse(const std::vector<std::string>& args) {
  ChaosOptions options;
  const std::vector<std::pair<std::string_view, std::function<void(const std::string&)>>> takes_value = {
      {"--db", [&](const std::string& v) { options.url = v; }},
      {"--masters", [&](const std::string& v) { options.masters = static_cast<int>(whole("--masters", v, 1)); }},
      {"--builders", [&](const std::string& v) { options.builders = static_cast<int>(whole("--builders", v, 1)); }},
      {"--buildsets",
       [&](const std::string& v) { options.buildsets = static_cast<int>(whole("--buildsets", v, 0)); }},
      {"--seed", [&](const std::string& v) { options.seed = static_cast<std::uint64_t>(whole("--seed", v, 0)); }},
      {"--reorder", [&](const std::string& v) { options.reorder = probability("--reorder", v); }},
      {"--drop", [&](const std::string& v) { options.drop = probability("--drop", v); }},
      {"--duplicate", [&](const std::string& v) { options.duplicate = probability("--duplicate", v); }},
      {"--delay-ms", [&](const std::string& v) { options.delay_ms = static_cast<int>(whole("--delay-ms", v, 0)); }},
      {"--partition-every-ms",
       [&](const std::string& v) {
         options.partition_every_ms = static_cast<int>(whole("--partition-every-ms", v, 0));
       }},
      {"--duration", [&](const std::string& v) { options.duration = duration_of(v); }},
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--json") {
      options.json = true;
      continue;
    }
    bool known = false;
    for (const auto& [name, apply] : takes_value) {
      if (auto value = take_option(args, i, name, "chaos")) {
        apply(*value);
        known = true;
        break;
      }
    }
    if (!known) throw UsageError{"unknown option '" + args[i] + "'; run 'livestate chaos --help'"};
  }
  if (options.masters > 64) throw UsageError{"--masters: at most 64"};
  if (options.builders > 1000) throw UsageError{"--builders: at most 1000"};
  return options;
}

// A temporary directory for the default database, removed at the end.
class TemporaryDirectory {
 public:
  TemporaryDirectory() {
    std::string pattern = (std::filesystem::temp_directory_path() / "livestate-chaos.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw db::DatabaseError("cannot create a temporary directory");
    m_path = pattern;
  }
  ~TemporaryDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(m_path, ignored);
  }
  TemporaryDirectory(const TemporaryDirectory&) = delete;
  TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return m_path; }

 private:
  std::filesystem::path m_path;
};

bool is_postgres(const std::string& url) { return transport_of(url, "chaos") == Transport::postgresql; }

// What the masters did, counted across threads.
struct Work {
  std::atomic<int> buildsets{0};
  std::atomic<int> claims{0};
  std::atomic<int> claim_races_lost{0};
  std::atomic<int> builds{0};
  std::atomic<int> completed{0};
  std::atomic<int> cancelled{0};
  std::atomic<int> crashes{0};
  std::atomic<int> retried{0};  // transactions that failed (busy, serialization) and were retried
};

// One master: its own store and connector (the transport on PostgreSQL), and
// a "silent" store whose messages reach nobody, for what a crash loses.
class Master {
 public:
  Master(const ChaosOptions& options, mq::Connector& bus, boost::asio::any_io_executor executor, int index)
      : m_index(index), m_random(options.seed * 1'000'003 + static_cast<std::uint64_t>(index)) {
    if (is_postgres(options.url)) {
      m_own_bus = mq::connect(options.url, std::move(executor));
      m_store = db::Store::open(options.url, *m_own_bus);
    } else {
      m_store = db::Store::open(options.url, bus);
    }
    m_silent_bus = mq::make_simple_mq();
    m_silent = db::Store::open(options.url, *m_silent_bus);
    m_id = retrying([&] { return m_store->master_active("chaos-master-" + std::to_string(index)); });
  }

  void set_builders(std::vector<std::int64_t> builders) { m_builders = std::move(builders); }
  [[nodiscard]] std::int64_t id() const noexcept { return m_id; }
  /// Messages this master's own connector sent (PostgreSQL; 0 on SQLite,
  /// where the masters share the bus).
  [[nodiscard]] std::uint64_t produced() const { return m_own_bus ? m_own_bus->stats().produced : 0; }

  // One step of the lifecycle; false when there was nothing left to do.
  bool step(const ChaosOptions& options, Work& work) {
    bool did = false;
    if (work.buildsets.fetch_add(1) < options.buildsets) {
      db::NewBuildset buildset;
      const auto first = pick(m_builders.size());
      buildset.builderids = {m_builders[first]};
      if (m_builders.size() > 1 && chance(0.5)) buildset.builderids.push_back(m_builders[(first + 1) % m_builders.size()]);
      buildset.reason = "chaos";
      retrying([&] { m_store->add_buildset(buildset); });
      did = true;
    } else {
      work.buildsets.fetch_sub(1);
    }
    db::BuildRequestFilter unclaimed;
    unclaimed.claimed = false;
    unclaimed.complete = false;
    const auto candidates = retrying([&] { return m_store->list_buildrequests(unclaimed); });
    if (candidates.empty()) return did;
    const auto& request = candidates[pick(std::min<std::size_t>(candidates.size(), 4))];
    const auto id = request.at("buildrequestid").get<std::int64_t>();
    try {
      retrying([&] { m_store->claim_buildrequests(std::vector<std::int64_t>{id}, m_id); });
    } catch (const db::AlreadyClaimed&) {
      ++work.claim_races_lost;
      return true;
    }
    ++work.claims;
    run_build(id, request.at("builderid").get<std::int64_t>(), work);
    return true;
  }

 private:
  void run_build(std::int64_t request, std::int64_t builder, Work& work) {
    const double roll = uniform();
    if (roll < 0.05) {
      retrying([&] { m_store->cancel_buildrequests(std::vector<std::int64_t>{request}); });
      ++work.cancelled;
      return;
    }
    const auto build = retrying([&] { return m_store->add_build(builder, request, std::nullopt, m_id, "starting"); });
    ++work.builds;
    const int steps = 1 + static_cast<int>(pick(3));
    for (int i = 0; i < steps; ++i) {
      const auto step = retrying([&] { return m_store->add_step(build.buildid, "step"); });
      retrying([&] { m_store->start_step(step.stepid); });
      retrying([&] { m_store->set_step_state_string(step.stepid, "running"); });
      retrying([&] { m_store->finish_step(step.stepid, 0); });
      retrying([&] { m_store->set_build_state_string(build.buildid, "step " + std::to_string(i) + " done"); });
    }
    if (roll < 0.08) {
      // The master dies holding the claim; its restart releases it without a
      // message. Its build is left unfinished, as a dead master leaves it.
      retrying([&] { m_silent->unclaim_buildrequests(std::vector<std::int64_t>{request}, m_id); });
      ++work.crashes;
      return;
    }
    retrying([&] { m_store->finish_build(build.buildid, 0); });
    retrying([&] { m_store->complete_buildrequests(std::vector<std::int64_t>{request}, 0, m_id); });
    ++work.completed;
  }

  // SQLite's busy timeout: try again.
  template <class Call>
  auto retrying(Call&& call) -> decltype(call()) {
    for (int attempt = 1;; ++attempt) {
      try {
        return call();
      } catch (const db::DatabaseBusy&) {
        // (The store retries serialization failures and lost connections itself.)
        if (attempt == 20) throw;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(attempt));
    }
  }

  std::size_t pick(std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(m_random); }
  double uniform() { return std::uniform_real_distribution<double>(0, 1)(m_random); }
  bool chance(double p) { return uniform() < p; }

  int m_index;
  std::mt19937_64 m_random;
  std::unique_ptr<mq::Connector> m_own_bus;
  std::unique_ptr<db::Store> m_store;
  std::unique_ptr<mq::Connector> m_silent_bus;
  std::unique_ptr<db::Store> m_silent;
  std::int64_t m_id = 0;
  std::vector<std::int64_t> m_builders;
};

constexpr const char* view_types[] = {"buildsets", "buildrequests", "builds", "steps"};

struct Totals {
  mq::FaultStats faults;
  reconcile::ViewStats views;
};

Totals totals(const std::vector<std::unique_ptr<mq::FaultyConnector>>& faulty,
              const std::vector<std::unique_ptr<reconcile::LiveView>>& views) {
  Totals total;
  for (const auto& connector : faulty) {
    const auto stats = connector->faults();
    total.faults.dropped += stats.dropped;
    total.faults.duplicated += stats.duplicated;
    total.faults.reordered += stats.reordered;
    total.faults.delayed += stats.delayed;
    total.faults.partitions += stats.partitions;
    total.faults.lost_to_partitions += stats.lost_to_partitions;
  }
  for (const auto& view : views) {
    const auto stats = view->stats();
    total.views.messages += stats.messages;
    total.views.applied += stats.applied;
    for (std::size_t i = 0; i < reconcile::anomaly_kinds; ++i) total.views.anomalies[i] += stats.anomalies[i];
    total.views.reload_queries += stats.reload_queries;
    total.views.entries_reloaded += stats.entries_reloaded;
    total.views.resyncs += stats.resyncs;
    total.views.resync_repairs += stats.resync_repairs;
    total.views.stale_entries += stats.stale_entries;
  }
  return total;
}

std::string seconds(Clock::duration elapsed) {
  std::ostringstream text;
  text << std::fixed << std::setprecision(2) << std::chrono::duration<double>(elapsed).count() << " s";
  return text.str();
}

}  // namespace

int run_chaos(const std::vector<std::string>& args, std::ostream& out) {
  for (const auto& arg : args) {
    if (arg == "--help" || arg == "-h") {
      out << chaos_help;
      return 0;
    }
  }
  ChaosOptions options = parse(args);
  std::optional<TemporaryDirectory> temporary;
  if (options.url.empty()) {
    temporary.emplace();
    options.url = "sqlite:" + (temporary->path() / "chaos.db").string();
  }
  const bool postgres = is_postgres(options.url);
  std::ostream& progress = options.json ? std::cerr : out;

  boost::asio::io_context io;
  auto guard = boost::asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  struct Join {
    boost::asio::io_context& io;
    std::thread& thread;
    decltype(guard)& work;
    ~Join() {
      work.reset();
      io.stop();
      if (thread.joinable()) thread.join();
    }
  } join{io, runner, guard};

  // The bus the SQLite masters announce on; on PostgreSQL, the views' own
  // listening connector (each master has its own).
  std::unique_ptr<mq::Connector> bus =
      postgres ? mq::connect(options.url, io.get_executor()) : mq::make_simple_mq();
  std::vector<std::unique_ptr<Master>> masters;
  for (int i = 0; i < options.masters; ++i) {
    masters.push_back(std::make_unique<Master>(options, *bus, io.get_executor(), i));
  }
  auto view_store = db::Store::open(options.url, *bus);
  std::vector<std::int64_t> builders;
  for (int i = 0; i < options.builders; ++i) {
    builders.push_back(view_store->builder_started("chaos-builder-" + std::to_string(i), masters.front()->id()));
  }
  for (auto& master : masters) master->set_builders(builders);

  // The views, each through a faulty connector of its own.
  std::vector<std::unique_ptr<mq::FaultyConnector>> faulty;
  std::vector<std::unique_ptr<reconcile::LiveView>> views;
  for (std::size_t i = 0; i < std::size(view_types); ++i) {
    mq::FaultOptions faults;
    faults.seed = options.seed * 31 + i;
    faults.reorder = options.reorder;
    faults.reorder_window = 8;
    faults.drop = options.drop;
    faults.report_drops = true;  // as the PostgreSQL connector's sequence numbers would
    faults.duplicate = options.duplicate;
    faults.delay = options.delay_ms > 0 ? 0.05 : 0.0;
    faults.max_delay = std::chrono::milliseconds(options.delay_ms);
    faults.partition_every = std::chrono::milliseconds(options.partition_every_ms);
    faults.partition_length = std::chrono::milliseconds(options.partition_every_ms / 10);
    faulty.push_back(std::make_unique<mq::FaultyConnector>(*bus, faults));
    reconcile::ViewOptions view_options;
    view_options.type = view_types[i];
    views.push_back(std::make_unique<reconcile::LiveView>(*faulty.back(), *view_store, io.get_executor(), view_options));
    views.back()->start();
  }
  const auto produced = [&] {
    std::uint64_t total = bus->stats().produced;
    for (const auto& master : masters) total += master->produced();
    return total;
  };
  const auto produced_before = produced();

  // The masters work.
  const auto started = Clock::now();
  Work work;
  std::atomic<bool> stop{false};
  std::atomic<int> finished{0};
  std::vector<std::thread> threads;
  std::mutex failure_mutex;
  std::string failure;
  for (auto& master : masters) {
    threads.emplace_back([&, master = master.get()] {
      try {
        int idle = 0;
        struct Done {
          std::atomic<int>& finished;
          ~Done() { ++finished; }
        } done{finished};
        while (!stop) {
          if (master->step(options, work)) {
            idle = 0;
          } else if (++idle > 20) {
            break;  // nothing left to claim, all buildsets added
          } else {
            std::this_thread::sleep_for(5ms);
          }
        }
      } catch (const std::exception& error) {
        std::lock_guard lock(failure_mutex);
        if (failure.empty()) failure = error.what();
        stop = true;
      }
    });
  }
  auto last_progress = Clock::now();
  while (finished < options.masters) {
    std::this_thread::sleep_for(50ms);
    if (options.duration && Clock::now() - started > *options.duration) stop = true;
    if (Clock::now() - last_progress >= 1s) {
      last_progress = Clock::now();
      const auto total = totals(faulty, views);
      std::uint64_t anomalies = 0;
      for (const auto n : total.views.anomalies) anomalies += n;
      progress << "chaos: " << seconds(Clock::now() - started) << ": " << std::min(work.buildsets.load(), options.buildsets)
               << "/" << options.buildsets << " buildsets, " << work.completed << " requests complete, "
               << total.views.messages << " messages seen, " << anomalies << " anomalies, "
               << total.views.reload_queries << " reloads, " << total.views.resyncs << " resyncs\n"
               << std::flush;
    }
  }
  for (auto& thread : threads) thread.join();
  const auto worked = Clock::now() - started;
  if (!failure.empty()) {
    std::cerr << "livestate chaos: a master failed: " << failure << "\n";
    return 1;
  }

  // Quiescence: no new faults, everything held is delivered; the views must
  // now converge.
  for (auto& connector : faulty) connector->set_enabled(false);
  const auto healed = Clock::now();
  bool converged = false;
  std::vector<std::pair<std::string, reconcile::Difference>> differences;
  while (Clock::now() - healed < 30s) {
    for (auto& connector : faulty) connector->flush();
    differences.clear();
    for (std::size_t i = 0; i < views.size(); ++i) {
      if (!views[i]->ready()) {
        differences.push_back({view_types[i], {"(not loaded)", std::nullopt, std::nullopt}});
        continue;
      }
      for (auto& difference : views[i]->verify()) differences.emplace_back(view_types[i], std::move(difference));
    }
    if (differences.empty()) {
      converged = true;
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  const auto convergence = Clock::now() - healed;
  const auto total = totals(faulty, views);
  const auto messages = produced() - produced_before;

  if (options.json) {
    Json faults{{"dropped", total.faults.dropped},     {"duplicated", total.faults.duplicated},
                {"reordered", total.faults.reordered}, {"delayed", total.faults.delayed},
                {"partitions", total.faults.partitions}, {"lost_to_partitions", total.faults.lost_to_partitions}};
    Json anomalies = Json::object();
    for (std::size_t i = 0; i < reconcile::anomaly_kinds; ++i) {
      anomalies[reconcile::to_string(static_cast<reconcile::Anomaly>(i))] = total.views.anomalies[i];
    }
    Json final_views = Json::object();
    for (std::size_t i = 0; i < views.size(); ++i) {
      Json entries = Json::object();
      for (auto& [id, body] : views[i]->entries()) entries[id] = std::move(body);
      final_views[view_types[i]] = std::move(entries);
    }
    Json summary{{"converged", converged},
                 {"seed", options.seed},
                 {"database", postgres ? "postgresql" : "sqlite"},
                 {"masters", options.masters},
                 {"buildsets", std::min(work.buildsets.load(), options.buildsets)},
                 {"claims", work.claims.load()},
                 {"claim_races_lost", work.claim_races_lost.load()},
                 {"builds", work.builds.load()},
                 {"completed", work.completed.load()},
                 {"cancelled", work.cancelled.load()},
                 {"crashes", work.crashes.load()},
                 {"messages", messages},
                 {"messages_seen_by_views", total.views.messages},
                 {"faults", faults},
                 {"anomalies", anomalies},
                 {"reload_queries", total.views.reload_queries},
                 {"entries_reloaded", total.views.entries_reloaded},
                 {"resyncs", total.views.resyncs},
                 {"resync_repairs", total.views.resync_repairs},
                 {"stale_entries", total.views.stale_entries},
                 {"work_seconds", std::chrono::duration<double>(worked).count()},
                 {"convergence_seconds", std::chrono::duration<double>(convergence).count()},
                 {"differences", differences.size()},
                 {"views", final_views}};
    out << summary.dump() << "\n";
    return converged ? 0 : 1;
  }

  const auto row = [&](const std::string& what, const auto& value) {
    out << "  " << std::left << std::setw(34) << what << std::right << std::setw(12) << value << "\n";
  };
  out << "\nlivestate chaos: " << options.masters << " masters on " << (postgres ? "PostgreSQL" : "SQLite")
      << ", seed " << options.seed << ", worked " << seconds(worked) << "\n\n";
  out << "work\n";
  row("buildsets added", std::min(work.buildsets.load(), options.buildsets));
  row("requests claimed", work.claims.load());
  row("claim races lost (AlreadyClaimed)", work.claim_races_lost.load());
  row("builds", work.builds.load());
  row("requests completed", work.completed.load());
  row("requests cancelled", work.cancelled.load());
  row("master crashes (silent unclaim)", work.crashes.load());
  row("messages produced", messages);
  out << "faults injected\n";
  row("dropped", total.faults.dropped);
  row("duplicated", total.faults.duplicated);
  row("reordered", total.faults.reordered);
  row("delayed", total.faults.delayed);
  row("partitions", total.faults.partitions);
  row("dropped by partitions", total.faults.lost_to_partitions);
  out << "anomalies detected\n";
  for (std::size_t i = 0; i < reconcile::anomaly_kinds; ++i) {
    row(reconcile::to_string(static_cast<reconcile::Anomaly>(i)), total.views.anomalies[i]);
  }
  out << "repairs\n";
  row("reload queries", total.views.reload_queries);
  row("entries reloaded", total.views.entries_reloaded);
  row("resyncs", total.views.resyncs);
  row("entries a resync repaired", total.views.resync_repairs);
  row("entries stale now", total.views.stale_entries);
  out << "views\n";
  for (std::size_t i = 0; i < views.size(); ++i) row(std::string(view_types[i]) + " entries", views[i]->entries().size());
  row("time to converge", seconds(convergence));
  out << "\nverdict: " << (converged ? "CONVERGED: every view equals the database" : "NOT CONVERGED") << "\n";
  if (!converged) {
    std::size_t shown = 0;
    for (const auto& [type, difference] : differences) {
      if (++shown > 10) break;
      out << "  " << type << " " << difference.id << ": view "
          << (difference.in_view ? difference.in_view->dump() : "(none)") << "\n      database "
          << (difference.in_database ? difference.in_database->dump() : "(none)") << "\n";
    }
  }
  return converged ? 0 : 1;
}

}  // namespace livestate::cli
