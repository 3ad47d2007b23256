// `livestate chaos`: several masters run Buildbot's build-request lifecycle
// on one database while live views of every type follow their messages
// through fault-injecting connectors; at the end every view must equal the
// database.

#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <limits>
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
#include "livestate/reconcile/source.hpp"
#include "views_report.hpp"

namespace livestate::cli {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* chaos_help =
    "usage: livestate chaos [--db URL] [--masters N] [--builders N] [--buildsets N]\n"
    "                       [--seed N] [--reorder P] [--drop P] [--duplicate P]\n"
    "                       [--delay-ms N] [--partition-every-ms N] [--duration D]\n"
    "                       [--views all|pending|none] [--first-master N]\n"
    "                       [--backlog N] [--rss-warmup D] [--resync-every D]\n"
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
    "  --duration D           stop adding work after D (e.g. 30s, 10m; default:\n"
    "                         when the buildsets are done); the masters then\n"
    "                         finish the requests already added\n"
    "  --views all|pending|none\n"
    "                         what the views hold: every row (default), only the\n"
    "                         unfinished ones (complete = false: a row leaves its\n"
    "                         view when it completes, so the views stay as small\n"
    "                         as the work in progress), or no views at all (a\n"
    "                         worker process that only runs masters)\n"
    "  --backlog N            add a buildset only while fewer than N requests wait\n"
    "                         unclaimed (default: always), so that a long run's\n"
    "                         unfinished work stays as large as N, not growing\n"
    "  --first-master N       the masters are chaos-master-N, N+1, ... (default 0).\n"
    "                         A master starting under a name that was active\n"
    "                         before does what Buildbot's housekeeping does for a\n"
    "                         master that died: releases its claims and finishes\n"
    "                         its unfinished builds and steps as RETRY\n"
    "  --rss-warmup D         measure the process's resident memory (VmRSS) after\n"
    "                         D of work, when the work ends (before the masters\n"
    "                         drain what they hold) and after the views converge\n"
    "                         (default 10s)\n"
    "  --resync-every D       the views also resync every D (default: never)\n"
    "  --json                 print the summary as one JSON object (with\n"
    "                         \"converged\" and \"views\": type -> entries)\n"
    "Faults:\n";

enum class ViewMode { all, pending, none };

struct ChaosOptions {
  std::string url;
  int masters = 3;
  int first_master = 0;
  std::size_t backlog = 0;  // 0: no limit
  ViewMode views = ViewMode::all;
  std::chrono::milliseconds rss_warmup{10'000};
  std::chrono::milliseconds resync_every{0};
  int builders = 4;
  int buildsets = 1000;
  FaultFlags faults;
  std::optional<std::chrono::milliseconds> duration;
  bool json = false;
};

std::chrono::milliseconds duration_of(const std::string& flag, const std::string& value) {
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
    throw UsageError{flag + " needs a positive duration such as 30s, 10m or 1h, not '" + value + "'"};
  }
  return std::chrono::milliseconds(static_cast<long long>(number * factor));
}

ChaosOptions parse(const std::vector<std::string>& args) {
  ChaosOptions options;
  const std::vector<std::pair<std::string_view, std::function<void(const std::string&)>>> takes_value = {
      {"--db", [&](const std::string& v) { options.url = v; }},
      {"--masters",
       [&](const std::string& v) { options.masters = static_cast<int>(whole_number("--masters", v, 1, 64)); }},
      {"--builders",
       [&](const std::string& v) { options.builders = static_cast<int>(whole_number("--builders", v, 1, 1000)); }},
      {"--buildsets",
       [&](const std::string& v) {
         options.buildsets = static_cast<int>(whole_number("--buildsets", v, 0, std::numeric_limits<int>::max()));
       }},
      {"--duration", [&](const std::string& v) { options.duration = duration_of("--duration", v); }},
      {"--backlog",
       [&](const std::string& v) {
         options.backlog = static_cast<std::size_t>(whole_number("--backlog", v, 1, 1'000'000'000));
       }},
      {"--first-master",
       [&](const std::string& v) {
         options.first_master = static_cast<int>(whole_number("--first-master", v, 0, 1'000'000));
       }},
      {"--rss-warmup", [&](const std::string& v) { options.rss_warmup = duration_of("--rss-warmup", v); }},
      {"--resync-every", [&](const std::string& v) { options.resync_every = duration_of("--resync-every", v); }},
      {"--views",
       [&](const std::string& v) {
         if (v == "all") {
           options.views = ViewMode::all;
         } else if (v == "pending") {
           options.views = ViewMode::pending;
         } else if (v == "none") {
           options.views = ViewMode::none;
         } else {
           throw UsageError{"--views needs all, pending or none, not '" + v + "'"};
         }
       }},
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--json") {
      options.json = true;
      continue;
    }
    if (take_fault_flag(args, i, options.faults, "chaos")) continue;
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
  return options;
}

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
  std::atomic<int> retried{0};     // transactions that failed (busy, serialization) and were retried
  std::atomic<int> restarts{0};    // masters restarted after losing their connection
  std::atomic<bool> adding{true};  // false once --duration is over: the masters finish what was added
};

// One master: its own store and connector (the transport on PostgreSQL), and
// a "silent" store whose messages reach nobody, for what a crash loses.
class Master {
 public:
  Master(const ChaosOptions& options, mq::Connector& bus, boost::asio::any_io_executor executor, int index)
      : m_index(index),
        m_random(options.faults.seed * 1'000'003 + static_cast<std::uint64_t>(options.first_master + index)) {
    if (is_postgres(options.url)) {
      m_own_bus = mq::connect(options.url, std::move(executor));
      m_store = db::Store::open(options.url, *m_own_bus);
    } else {
      m_store = db::Store::open(options.url, bus);
    }
    m_silent_bus = mq::make_simple_mq();
    m_silent = db::Store::open(options.url, *m_silent_bus);
    m_name = "chaos-master-" + std::to_string(options.first_master + index);
    m_id = retrying([&] { return m_store->master_active(m_name); });
    clean_up_after();
  }

  /// After a lost connection (a commit in doubt, say) the master restarts as
  /// a Buildbot master would: what it held is released (clean_up_after).
  void restart() { clean_up_after(); }

  void set_builders(std::vector<std::int64_t> builders) { m_builders = std::move(builders); }
  [[nodiscard]] std::int64_t id() const noexcept { return m_id; }
  /// Messages this master's own connector sent (PostgreSQL; 0 on SQLite,
  /// where the masters share the bus).
  [[nodiscard]] std::uint64_t produced() const { return m_own_bus ? m_own_bus->stats().produced : 0; }

  // What a previous master of this name (a process killed at random) left:
  // its claims are released and its unfinished builds and steps finished as
  // RETRY, as Buildbot's housekeeping does for a master that died, each
  // announced. Without it a killed master's requests would stay claimed, and
  // its builds unfinished, for ever.
  void clean_up_after() {
    db::BuildRequestFilter held;
    held.claimed_by_masterid = m_id;
    held.complete = false;
    if (!retrying([&] { return m_store->list_buildrequests(held); }).empty()) {
      retrying([&] { m_store->master_stopped(m_id); });
      m_id = retrying([&] { return m_store->master_active(m_name); });
    }
    const Json unfinished_builds = {{"masterid", m_id}, {"complete", false}};
    for (const auto& build : retrying([&] { return m_store->list("builds", unfinished_builds); })) {
      const auto buildid = build.at("buildid").get<std::int64_t>();
      const Json unfinished_steps = {{"buildid", buildid}, {"complete", false}};
      for (const auto& step : retrying([&] { return m_store->list("steps", unfinished_steps); })) {
        retrying([&] { m_store->finish_step(step.at("stepid").get<std::int64_t>(), retry_results); });
      }
      retrying([&] { m_store->finish_build(buildid, retry_results); });
    }
  }

  // One step of the lifecycle; false when there was nothing left to do.
  bool step(const ChaosOptions& options, Work& work) {
    bool did = false;
    // As a Buildbot master's request distributor does with a long backlog:
    // it counts the waiting requests only up to the bound, and looks at the
    // oldest few, so that a step costs the same however many wait.
    db::BuildRequestFilter unclaimed;
    unclaimed.claimed = false;
    unclaimed.complete = false;
    if (options.backlog != 0) unclaimed.limit = options.backlog;
    const bool room = options.backlog == 0 ||
                      retrying([&] { return m_store->count_buildrequests(unclaimed); }) < options.backlog;
    if (!room || !work.adding) {
      // The others have enough to do, or the work is winding down.
    } else if (work.buildsets.fetch_add(1) < options.buildsets) {
      db::NewBuildset buildset;
      const auto first = pick(m_builders.size());
      buildset.builderids = {m_builders[first]};
      if (m_builders.size() > 1 && chance(0.5))
        buildset.builderids.push_back(m_builders[(first + 1) % m_builders.size()]);
      buildset.reason = "chaos";
      retrying([&] { m_store->add_buildset(buildset); });
      did = true;
    } else {
      work.buildsets.fetch_sub(1);
    }
    unclaimed.limit = candidates_looked_at;
    const auto candidates = retrying([&] { return m_store->list_buildrequests(unclaimed); });
    if (candidates.empty()) return did;
    const auto& request = candidates[pick(candidates.size())];
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
      // message, and finishes the build it left as RETRY (announced).
      retrying([&] { m_silent->unclaim_buildrequests(std::vector<std::int64_t>{request}, m_id); });
      retrying([&] { m_store->finish_build(build.buildid, retry_results); });
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

  static constexpr int retry_results = 4;  // Buildbot's RETRY
  // A master claims one of the oldest few waiting requests: masters racing
  // for the very oldest would lose most races.
  static constexpr std::size_t candidates_looked_at = 4;

  int m_index;
  std::mt19937_64 m_random;
  std::unique_ptr<mq::Connector> m_own_bus;
  std::unique_ptr<db::Store> m_store;
  std::unique_ptr<mq::Connector> m_silent_bus;
  std::unique_ptr<db::Store> m_silent;
  std::string m_name;
  std::int64_t m_id = 0;
  std::vector<std::int64_t> m_builders;
};

constexpr const char* view_types[] = {"buildsets", "buildrequests", "builds", "steps"};

// This process's resident memory in kB (VmRSS), 0 when unknown.
long long resident_kb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      try {
        return std::stoll(line.substr(6));
      } catch (const std::exception&) {
        return 0;
      }
    }
  }
  return 0;
}

// Bytes the allocator has handed out and not had back, in kB (glibc's
// mallinfo2), 0 when unknown: beside RSS, it tells a growing heap from
// memory the allocator keeps.
long long heap_in_use_kb() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  const auto info = mallinfo2();
  return static_cast<long long>((info.uordblks + info.hblkhd) / 1024);
#else
  return 0;
#endif
}

// The process's memory at one moment, in kB.
struct MemoryUse {
  long long resident_kb = 0;
  long long heap_kb = 0;  // 0 when unknown
};

MemoryUse memory_now() { return {resident_kb(), heap_in_use_kb()}; }

}  // namespace

int run_chaos(const std::vector<std::string>& args, std::ostream& out) {
  for (const auto& arg : args) {
    if (arg == "--help" || arg == "-h") {
      out << chaos_help << fault_flags_help;
      return 0;
    }
  }
  ChaosOptions options = parse(args);
  std::optional<TemporaryDirectory> temporary;
  if (options.url.empty()) {
    temporary.emplace("livestate-chaos");
    options.url = "sqlite:" + (temporary->path() / "chaos.db").string();
  }
  const bool postgres = is_postgres(options.url);
  std::ostream& progress = options.json ? std::cerr : out;
  migrate_if_empty_or_ours(options.url, "chaos");

  ExecutorThread executor;

  // The bus the SQLite masters announce on; on PostgreSQL, the views' own
  // listening connector (each master has its own).
  std::unique_ptr<mq::Connector> bus = postgres ? mq::connect(options.url, executor.get()) : mq::make_simple_mq();
  std::vector<std::unique_ptr<Master>> masters;
  for (int i = 0; i < options.masters; ++i) {
    masters.push_back(std::make_unique<Master>(options, *bus, executor.get(), i));
  }
  auto view_store = db::Store::open(options.url, *bus);
  std::vector<std::int64_t> builders;
  for (int i = 0; i < options.builders; ++i) {
    builders.push_back(view_store->builder_started("chaos-builder-" + std::to_string(i), masters.front()->id()));
  }
  for (auto& master : masters) master->set_builders(builders);

  // The views, each through a faulty connector of its own.
  auto source = reconcile::source_of(*view_store);
  // On an executor declared after their store: a read still running when the
  // views are destroyed ends before the store goes.
  ExecutorThread view_executor;
  ViewSet views(*bus, view_executor.get(), options.faults);
  for (const char* type : view_types) {
    if (options.views == ViewMode::none) break;
    reconcile::ViewOptions view_options;
    view_options.type = type;
    if (options.views == ViewMode::pending) view_options.where = {{"complete", false}};
    view_options.resync_every = options.resync_every;
    views.add(*source, view_options);
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
          try {
            if (master->step(options, work)) {
              idle = 0;
            } else if (++idle > 20) {
              break;  // nothing left to claim, all buildsets added
            } else {
              std::this_thread::sleep_for(5ms);
            }
          } catch (const db::ConnectionFailed& error) {
            // Its connection was ended (pg_terminate_backend), maybe during a
            // commit: the master restarts.
            ++work.restarts;
            master->restart();
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
  std::optional<MemoryUse> warmup;
  std::optional<MemoryUse> work_end;
  while (finished < options.masters) {
    std::this_thread::sleep_for(50ms);
    if (!warmup && Clock::now() - started >= options.rss_warmup) {
      warmup = memory_now();
      progress << "chaos: resident memory after the warm-up: " << warmup->resident_kb << " kB\n" << std::flush;
    }
    if (options.duration && Clock::now() - started > *options.duration && work.adding) {
      // The last moment of the steady work, like the warm-up's: from here
      // the masters drain at once what they hold, and the views catch up.
      work_end = memory_now();
      work.adding = false;
    }
    if (Clock::now() - last_progress >= 1s) {
      last_progress = Clock::now();
      progress << "chaos: " << seconds_text(Clock::now() - started) << ": "
               << std::min(work.buildsets.load(), options.buildsets) << "/" << options.buildsets << " buildsets, "
               << work.completed << " requests complete, " << views.progress();
      const auto memory = memory_now();
      progress << ", resident " << memory.resident_kb << " kB, heap in use " << memory.heap_kb << " kB\n" << std::flush;
    }
  }
  for (auto& thread : threads) thread.join();
  const auto worked = Clock::now() - started;
  if (!work_end) work_end = memory_now();  // the work ran out (--buildsets) before --duration
  if (!failure.empty()) {
    std::cerr << "livestate chaos: a master failed: " << failure << "\n";
    return 1;
  }

  // Quiescence: no new faults, everything held is delivered; the views must
  // now converge.
  const auto outcome = views.settle(std::chrono::seconds(30));
  const std::optional<MemoryUse> converged = memory_now();
  const auto rss = [](const std::optional<MemoryUse>& memory) {
    return memory ? Json(memory->resident_kb) : Json(nullptr);
  };
  const auto heap = [](const std::optional<MemoryUse>& memory) {
    return memory && memory->heap_kb > 0 ? Json(memory->heap_kb) : Json(nullptr);
  };
  const std::vector<std::pair<std::string, Json>> rows = {
      {"buildsets_added", std::min(work.buildsets.load(), options.buildsets)},
      {"requests_claimed", work.claims.load()},
      {"claim_races_lost", work.claim_races_lost.load()},
      {"builds", work.builds.load()},
      {"requests_completed", work.completed.load()},
      {"requests_cancelled", work.cancelled.load()},
      {"master_crashes", work.crashes.load()},
      {"master_restarts_after_lost_connections", work.restarts.load()},
      {"messages_produced", produced() - produced_before},
      // null when the work ended before the warm-up
      {"rss_warmup_kb", rss(warmup)},
      {"rss_work_end_kb", rss(work_end)},
      {"rss_end_kb", rss(converged)},
      // the allocator's bytes in use (glibc), null when unknown
      {"heap_warmup_kb", heap(warmup)},
      {"heap_work_end_kb", heap(work_end)},
      {"heap_end_kb", heap(converged)}};
  std::ostringstream title;
  title << "livestate chaos: " << options.masters << " masters on " << (postgres ? "PostgreSQL" : "SQLite") << ", seed "
        << options.faults.seed << ", worked " << seconds_text(worked);
  views.report(out, options.json, title.str(), rows, outcome,
               {{"seed", options.faults.seed},
                {"database", postgres ? "postgresql" : "sqlite"},
                {"masters", options.masters},
                {"views_of", options.views == ViewMode::all       ? "all"
                             : options.views == ViewMode::pending ? "pending"
                                                                  : "none"},
                {"work_seconds", std::chrono::duration<double>(worked).count()}});
  return outcome.converged ? 0 : 1;
}

}  // namespace livestate::cli
