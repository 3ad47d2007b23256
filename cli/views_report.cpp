#include "views_report.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <ostream>
#include <sstream>
#include <thread>

#include "commands.hpp"
#include "livestate/db/errors.hpp"
#include "livestate/db/migrator.hpp"
#include "livestate/db/store.hpp"
#include "livestate/mq/simple_mq.hpp"

namespace livestate::cli {

using Clock = std::chrono::steady_clock;

const char* const fault_flags_help =
    "  --seed N               the fault generators' seed (default 1): drops,\n"
    "                         duplicates and reorders replay with the same seed\n"
    "                         and the same messages\n"
    "  --reorder P            probability that a message is held back and\n"
    "                         delivered up to 8 messages later (default 0.1)\n"
    "  --drop P               probability that a message is lost (default 0.01);\n"
    "                         each loss is told as a gap, as sequence numbers do\n"
    "  --duplicate P          probability that a message arrives twice (0.02)\n"
    "  --delay-ms N           messages are delayed by up to N ms, with\n"
    "                         probability 0.05 (default 20)\n"
    "  --partition-every-ms N every N ms a view's connector drops everything for\n"
    "                         N/10 ms, then reports a reset (default 1000; 0: never)\n";

namespace {

double probability(const std::string& flag, const std::string& value) {
  std::size_t used = 0;
  double parsed = 0;
  try {
    parsed = std::stod(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || !(parsed >= 0 && parsed <= 1)) {
    throw UsageError{flag + " needs a probability between 0 and 1, not '" + value + "'"};
  }
  return parsed;
}

}  // namespace

void migrate_if_empty_or_ours(const std::string& url, std::string_view command) {
  auto nobody = mq::make_simple_mq();
  db::StoreOptions options;
  options.migrate = false;
  const auto store = db::Store::open(url, *nobody, options);
  const auto status = db::migration_status(*store);
  if (status.database_version == 0 && !status.other_tables.empty()) {
    std::string tables;
    for (std::size_t i = 0; i < status.other_tables.size() && i < 5; ++i) {
      tables += (i > 0 ? ", " : "") + status.other_tables[i];
    }
    if (status.other_tables.size() > 5) tables += ", …";
    throw UsageError{store->name() + " holds another application's tables (" + tables + "): " + std::string(command) +
                     " writes only to an empty database or one livestate migrated; give it "
                     "another --db"};
  }
  (void)db::migrate(*store);
}

long long whole_number(const std::string& flag, const std::string& value, long long minimum, long long maximum) {
  std::size_t used = 0;
  long long parsed = 0;
  try {
    parsed = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || parsed < minimum || parsed > maximum) {
    const std::string range = maximum == std::numeric_limits<long long>::max()
                                  ? "of at least " + std::to_string(minimum)
                                  : "from " + std::to_string(minimum) + " to " + std::to_string(maximum);
    throw UsageError{flag + " needs a whole number " + range + ", not '" + value + "'"};
  }
  return parsed;
}

bool take_fault_flag(const std::vector<std::string>& args, std::size_t& index, FaultFlags& flags,
                     std::string_view command) {
  if (auto value = take_option(args, index, "--seed", command)) {
    flags.seed = static_cast<std::uint64_t>(whole_number("--seed", *value, 0));
  } else if (auto reorder = take_option(args, index, "--reorder", command)) {
    flags.reorder = probability("--reorder", *reorder);
  } else if (auto drop = take_option(args, index, "--drop", command)) {
    flags.drop = probability("--drop", *drop);
  } else if (auto duplicate = take_option(args, index, "--duplicate", command)) {
    flags.duplicate = probability("--duplicate", *duplicate);
  } else if (auto delay = take_option(args, index, "--delay-ms", command)) {
    flags.delay_ms = static_cast<int>(whole_number("--delay-ms", *delay, 0, 60'000));
  } else if (auto every = take_option(args, index, "--partition-every-ms", command)) {
    flags.partition_every_ms = static_cast<int>(whole_number("--partition-every-ms", *every, 0, 3'600'000));
  } else {
    return false;
  }
  return true;
}

TemporaryDirectory::TemporaryDirectory(const std::string& prefix) {
  std::string pattern = (std::filesystem::temp_directory_path() / (prefix + ".XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) throw db::DatabaseError("cannot create a temporary directory");
  m_path = pattern;
}

TemporaryDirectory::~TemporaryDirectory() {
  std::error_code ignored;
  std::filesystem::remove_all(m_path, ignored);
}

ExecutorThread::ExecutorThread() : m_work(m_io.get_executor()), m_thread([this] { m_io.run(); }) {}

ExecutorThread::~ExecutorThread() {
  m_work.reset();
  m_io.stop();
  m_thread.join();
}

std::string seconds_text(Clock::duration elapsed) {
  std::ostringstream text;
  text << std::fixed << std::setprecision(2) << std::chrono::duration<double>(elapsed).count() << " s";
  return text.str();
}

ViewSet::ViewSet(mq::Connector& bus, boost::asio::any_io_executor executor, FaultFlags flags)
    : m_bus(bus), m_executor(std::move(executor)), m_flags(flags) {}

ViewSet::~ViewSet() {
  m_views.clear();  // before the connectors they consume from
  m_faulty.clear();
}

void ViewSet::add(reconcile::Source& source, reconcile::ViewOptions options) {
  mq::FaultOptions faults;
  faults.seed = m_flags.seed * 31 + m_views.size();
  faults.reorder = m_flags.reorder;
  faults.reorder_window = 8;
  faults.drop = m_flags.drop;
  faults.report_drops = true;  // as the PostgreSQL connector's sequence numbers would
  faults.duplicate = m_flags.duplicate;
  faults.delay = m_flags.delay_ms > 0 ? 0.05 : 0.0;
  faults.max_delay = std::chrono::milliseconds(m_flags.delay_ms);
  faults.partition_every = std::chrono::milliseconds(m_flags.partition_every_ms);
  faults.partition_length = std::chrono::milliseconds(std::max(1, m_flags.partition_every_ms / 10));
  m_faulty.push_back(std::make_unique<mq::FaultyConnector>(m_bus, faults));
  m_types.push_back(options.type);
  m_views.push_back(std::make_unique<reconcile::LiveView>(*m_faulty.back(), source, m_executor, std::move(options)));
  m_views.back()->start();
}

bool ViewSet::wait_ready(std::chrono::seconds limit) const {
  const auto deadline = Clock::now() + limit;
  for (;;) {
    bool ready = true;
    for (const auto& view : m_views) ready = ready && view->ready();
    if (ready) return true;
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

ViewSet::Totals ViewSet::totals() const {
  Totals total;
  for (const auto& connector : m_faulty) {
    const auto stats = connector->faults();
    total.faults.dropped += stats.dropped;
    total.faults.duplicated += stats.duplicated;
    total.faults.reordered += stats.reordered;
    total.faults.delayed += stats.delayed;
    total.faults.partitions += stats.partitions;
    total.faults.lost_to_partitions += stats.lost_to_partitions;
    total.faults.held += stats.held;
  }
  for (const auto& view : m_views) {
    const auto stats = view->stats();
    total.views.messages += stats.messages;
    total.views.applied += stats.applied;
    for (std::size_t i = 0; i < reconcile::anomaly_kinds; ++i) {
      total.views.anomalies[i] += stats.anomalies[i];
      total.anomalies += stats.anomalies[i];
    }
    total.views.reload_queries += stats.reload_queries;
    total.views.entries_reloaded += stats.entries_reloaded;
    total.views.resyncs += stats.resyncs;
    total.views.full_resyncs += stats.full_resyncs;
    total.views.resync_rows += stats.resync_rows;
    total.views.resync_repairs += stats.resync_repairs;
    total.views.stale_entries += stats.stale_entries;
    total.views.remembered_ids += stats.remembered_ids;
    total.views.queued += stats.queued;
    total.views.queued_peak = std::max(total.views.queued_peak, stats.queued_peak);
    total.views.queue_overflows += stats.queue_overflows;
    total.views.messages_discarded += stats.messages_discarded;
    total.entries += view->size();
  }
  return total;
}

std::string ViewSet::progress() const {
  const auto total = totals();
  return std::to_string(total.views.messages) + " messages seen, " + std::to_string(total.anomalies) + " anomalies, " +
         std::to_string(total.views.reload_queries) + " reloads, " + std::to_string(total.views.resyncs) +
         " resyncs, " + std::to_string(total.entries) + " entries, " + std::to_string(total.views.remembered_ids) +
         " ids remembered, " + std::to_string(total.views.queued) + " messages queued, " +
         std::to_string(total.faults.held) + " held by the faults";
}

std::optional<std::vector<std::uint64_t>> ViewSet::quiet() const {
  for (const auto& connector : m_faulty) {
    if (connector->faults().held > 0) return std::nullopt;
  }
  std::vector<std::uint64_t> done;
  done.reserve(m_views.size() * 7);
  for (const auto& view : m_views) {
    const auto stats = view->stats();
    if (!view->ready() || stats.queued > 0 || stats.work_pending > 0) return std::nullopt;
    std::uint64_t anomalies = 0;
    for (const auto count : stats.anomalies) anomalies += count;
    done.insert(done.end(), {stats.messages, stats.applied, anomalies, stats.resyncs, stats.resync_repairs,
                             stats.reload_queries, stats.queue_overflows});
  }
  return done;
}

void ViewSet::verify(Outcome& outcome) {
  const auto start = Clock::now();
  outcome.differences.clear();
  for (std::size_t i = 0; i < m_views.size(); ++i) {
    if (!m_views[i]->ready()) {
      outcome.differences.push_back({m_types[i], {"(not loaded)", std::nullopt, std::nullopt}});
      continue;
    }
    for (auto& difference : m_views[i]->verify()) outcome.differences.emplace_back(m_types[i], std::move(difference));
  }
  outcome.verifying += Clock::now() - start;
  ++outcome.verify_passes;
}

ViewSet::Outcome ViewSet::settle(std::chrono::seconds limit) {
  for (auto& connector : m_faulty) connector->set_enabled(false);
  const auto healed = Clock::now();
  Outcome outcome;
  // The views converge when they are quiet and equal to the database: the
  // first moment that they are quiet is the candidate, confirmed by verify()
  // if they stay quiet and do nothing meanwhile (then they held the same
  // entries all along). Verifying reads every type in full, so it is not
  // part of the time to converge, and it runs only on quiet views. Quiet
  // views that differ stay so until a periodic resync: the comparisons come
  // further apart then (20 ms doubling to 320 ms), leaving it the connection.
  //
  // Views that don't fall quiet within a second (another process still
  // writing, a resync every few milliseconds) are compared anyway whenever
  // nothing waits for them, as often; one comparison finding no difference
  // is then the moment they converged, its own time included.
  auto pause = std::chrono::milliseconds(20);
  auto compare_busy_views_at = healed + std::chrono::seconds(1);
  while (Clock::now() - healed < limit) {
    for (auto& connector : m_faulty) connector->flush();
    const auto before = quiet();
    if (!before) {
      const bool waiting = std::any_of(m_views.begin(), m_views.end(),
                                       [](const auto& view) { return view->stats().queued > 0; });
      if (!waiting && Clock::now() >= compare_busy_views_at) {
        verify(outcome);
        if (outcome.differences.empty()) {
          outcome.converged = true;
          outcome.convergence = Clock::now() - healed;
          break;
        }
        compare_busy_views_at = Clock::now() + pause;
        pause = std::min(pause * 2, std::chrono::milliseconds(320));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
      continue;
    }
    const auto candidate = Clock::now();
    verify(outcome);
    if (quiet() != before) continue;  // it moved meanwhile: the comparison says nothing
    if (outcome.differences.empty()) {
      outcome.converged = true;
      outcome.quiet = true;
      outcome.convergence = candidate - healed;
      break;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(320));
  }
  if (!outcome.converged) {
    // What differs at the end (when the views never were quiet, or moved
    // during the last comparison, the differences are not yet known).
    verify(outcome);
    outcome.convergence = Clock::now() - healed;
  }
  outcome.settling = Clock::now() - healed;
  return outcome;
}

void ViewSet::report(std::ostream& out, bool json, const std::string& title,
                     const std::vector<std::pair<std::string, Json>>& work, const Outcome& outcome, Json extra) const {
  const auto total = totals();
  const std::vector<std::pair<std::string, std::uint64_t>> faults = {
      {"dropped", total.faults.dropped},       {"duplicated", total.faults.duplicated},
      {"reordered", total.faults.reordered},   {"delayed", total.faults.delayed},
      {"partitions", total.faults.partitions}, {"lost_to_partitions", total.faults.lost_to_partitions}};
  const std::vector<std::pair<std::string, std::uint64_t>> repairs = {
      {"reload_queries", total.views.reload_queries},
      {"entries_reloaded", total.views.entries_reloaded},
      {"resyncs", total.views.resyncs},
      {"full_resyncs", total.views.full_resyncs},
      {"resync_rows", total.views.resync_rows},
      {"resync_repairs", total.views.resync_repairs},
      {"stale_entries", total.views.stale_entries},
      {"queued_peak", total.views.queued_peak},
      {"queue_overflows", total.views.queue_overflows},
      {"messages_discarded", total.views.messages_discarded}};
  if (json) {
    Json summary = std::move(extra);
    summary["converged"] = outcome.converged;
    for (const auto& [name, value] : work) summary[name] = value;
    summary["messages_seen_by_views"] = total.views.messages;
    summary["faults"] = Json::object();
    for (const auto& [name, value] : faults) summary["faults"][name] = value;
    summary["anomalies"] = Json::object();
    for (std::size_t i = 0; i < reconcile::anomaly_kinds; ++i) {
      summary["anomalies"][reconcile::to_string(static_cast<reconcile::Anomaly>(i))] = total.views.anomalies[i];
    }
    for (const auto& [name, value] : repairs) summary[name] = value;
    summary["convergence_seconds"] = std::chrono::duration<double>(outcome.convergence).count();
    summary["verify_seconds"] = std::chrono::duration<double>(outcome.verifying).count();
    summary["verify_passes"] = outcome.verify_passes;
    summary["settle_seconds"] = std::chrono::duration<double>(outcome.settling).count();
    summary["converged_quiet"] = outcome.quiet;
    summary["differences"] = outcome.differences.size();
    summary["first_differences"] = Json::array();
    for (std::size_t i = 0; i < std::min<std::size_t>(outcome.differences.size(), 10); ++i) {
      const auto& [type, difference] = outcome.differences[i];
      const auto or_null = [](const std::optional<Json>& value) { return value ? *value : Json(nullptr); };
      summary["first_differences"].push_back({{"type", type},
                                              {"id", difference.id},
                                              {"view", or_null(difference.in_view)},
                                              {"database", or_null(difference.in_database)}});
    }
    summary["views"] = Json::object();
    for (std::size_t i = 0; i < m_views.size(); ++i) {
      Json entries = Json::object();
      for (auto& [id, body] : m_views[i]->entries()) entries[id] = std::move(body);
      summary["views"][m_types[i]] = std::move(entries);
    }
    out << summary.dump() << "\n";
    return;
  }
  const auto row = [&](const std::string& what, const Json& value) {
    out << "  " << std::left << std::setw(34) << what << std::right << std::setw(12)
        << (value.is_string() ? value.get<std::string>() : value.dump()) << "\n";
  };
  const auto words = [](std::string name) {
    std::replace(name.begin(), name.end(), '_', ' ');
    return name;
  };
  out << "\n" << title << "\n\nwork\n";
  for (const auto& [name, value] : work) row(words(name), value);
  out << "faults injected\n";
  for (const auto& [name, value] : faults) row(words(name), value);
  out << "anomalies detected\n";
  for (std::size_t i = 0; i < reconcile::anomaly_kinds; ++i) {
    row(reconcile::to_string(static_cast<reconcile::Anomaly>(i)), total.views.anomalies[i]);
  }
  out << "repairs\n";
  for (const auto& [name, value] : repairs) row(words(name), value);
  out << "views\n";
  for (std::size_t i = 0; i < m_views.size(); ++i) row(m_types[i] + " entries", m_views[i]->entries().size());
  row("time to converge", seconds_text(outcome.convergence));
  row("time to verify", seconds_text(outcome.verifying));
  row("verify passes", outcome.verify_passes);
  out << "\nverdict: " << (outcome.converged ? "CONVERGED: every view equals the database" : "NOT CONVERGED") << "\n";
  std::size_t shown = 0;
  for (const auto& [type, difference] : outcome.differences) {
    if (++shown > 10) break;
    out << "  " << type << " " << difference.id << ": view "
        << (difference.in_view ? difference.in_view->dump() : "(none)") << "\n      database "
        << (difference.in_database ? difference.in_database->dump() : "(none)") << "\n";
  }
}

}  // namespace livestate::cli
