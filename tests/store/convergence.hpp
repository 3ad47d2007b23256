#pragma once

// The convergence property, shared by the SQLite suite (SimpleMQ) and the
// PostgreSQL one (the PostgreSQL connector): for a seed, a random workload of
// build requests and application resources runs on the store while live views
// follow it through a FaultyConnector that reorders, drops and duplicates;
// once the faults stop and what was held is delivered, every view equals the
// database, and the reloads it made are bounded by the anomalies it saw.
//
// LIVESTATE_DEBUG_CONVERGENCE=1 prints each view's counters, and, for a seed
// that fails, every message of its resource type on the bus;
// LIVESTATE_CONVERGENCE_SEED=N (PostgreSQL suite) replays one seed.

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "livestate/livestate.hpp"

namespace livestate::test {

struct ConvergenceRun {
  std::uint64_t seed = 1;
  double reorder = 0.2;
  double drop = 0.05;
  double duplicate = 0.05;
  int operations = 60;
};

struct ConvergenceResult {
  bool converged = false;
  std::uint64_t messages = 0;
  std::uint64_t anomalies = 0;
  std::uint64_t reload_queries = 0;
  std::uint64_t resyncs = 0;
  std::uint64_t full_resyncs = 0;  ///< of the resyncs, those that read the whole type
  std::uint64_t faults = 0;
};

/// What a whole run of seeds saw, for its closing message and checks.
struct ConvergenceTotals {
  std::uint64_t seeds = 0, messages = 0, anomalies = 0, reloads = 0, faults = 0, resyncs = 0, full_resyncs = 0;
  void add(const ConvergenceResult& result) {
    ++seeds;
    messages += result.messages;
    anomalies += result.anomalies;
    reloads += result.reload_queries;
    faults += result.faults;
    resyncs += result.resyncs;
    full_resyncs += result.full_resyncs;
  }
  /// Reports the totals, and checks (over the 200 seeds, not one replayed
  /// seed) that the faults really happened, reloads stayed well below the
  /// messages, and the views repaired their gaps by what changed since they
  /// last read (the store keeps change positions): only their first loads
  /// read everything.
  void check(std::uint64_t at_least_faults) const {
    MESSAGE(seeds, " seeds: ", messages, " messages, ", faults, " faults, ", anomalies, " anomalies, ", reloads,
            " reload queries, ", resyncs, " resyncs of which ", full_resyncs, " full");
    if (seeds < 200) return;
    CHECK(faults > at_least_faults);
    CHECK(reloads < messages / 4);
    CHECK(full_resyncs == 2 * seeds);
    CHECK(resyncs > full_resyncs + seeds / 4);
  }
};

/// Runs the workload of `run.seed` on `store` (announcing on `bus`), with a
/// view of build requests of a builder of its own and a view of a resource
/// type of its own, each through a FaultyConnector over `bus`. `pump` runs
/// after each operation (to let the views' executor work, when the test runs
/// it); `settle` runs it until `done` returns true or a time limit passes.
inline ConvergenceResult run_convergence(const ConvergenceRun& run, db::Store& store, mq::Connector& bus,
                                         boost::asio::any_io_executor executor,
                                         const std::function<bool(const std::function<bool()>&)>& settle,
                                         const std::function<void()>& pump) {
  std::mt19937_64 random(run.seed);
  const auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(random); };
  const auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(random) < p; };

  const std::string suffix = std::to_string(run.seed);
  const auto master = store.master_active("master-" + suffix);
  const auto other = store.master_active("other-" + suffix);
  const auto builder = store.builder_started("builder-" + suffix, master);
  const std::string type = "widgets" + suffix;

  mq::FaultOptions faults;
  faults.seed = run.seed;
  faults.reorder = run.reorder;
  faults.reorder_window = 6;
  faults.drop = run.drop;
  faults.duplicate = run.duplicate;
  faults.report_drops = true;  // as the PostgreSQL connector's sequence numbers do
  mq::FaultyConnector requests_bus(bus, faults);
  faults.seed = run.seed + 1'000'000;
  mq::FaultyConnector widgets_bus(bus, faults);

  reconcile::ViewOptions requests_options;
  requests_options.type = "buildrequests";
  requests_options.where = {{"builderid", builder}};
  reconcile::LiveView requests(requests_bus, store, executor, requests_options);
  reconcile::ViewOptions widgets_options;
  widgets_options.type = type;
  reconcile::LiveView widgets(widgets_bus, store, executor, widgets_options);
  std::vector<std::string> seen;
  std::mutex seen_mutex;
  std::unique_ptr<mq::Consumer> spy;
  if (std::getenv("LIVESTATE_DEBUG_CONVERGENCE") != nullptr) {
    spy = bus.start_consuming(
        [&](const RoutingKey& key, const Json& body) {
          std::lock_guard lock(seen_mutex);
          seen.push_back(key.str() + " " + body.dump());
        },
        Filter{type, std::nullopt, std::nullopt});
  }
  requests.start();
  widgets.start();

  std::vector<std::int64_t> ids;
  for (int i = 0; i < run.operations; ++i) {
    pump();
    const auto roll = pick(10);
    if (roll < 3) {
      const auto id = std::to_string(pick(6));
      if (chance(0.25)) {
        store.delete_resource(type, id);
      } else {
        store.upsert_resource(type, id, {{"n", i}});
      }
    } else if (roll < 5 || ids.empty()) {
      db::NewBuildset buildset;
      buildset.builderids = {builder};
      ids.push_back(store.add_buildset(buildset).buildrequestids.begin()->second);
    } else {
      const auto id = ids[pick(ids.size())];
      const auto request = store.get_buildrequest(id);
      const std::vector<std::int64_t> one{id};
      if (request->at("complete").get<bool>()) continue;
      const bool claimed = request->at("claimed").get<bool>();
      const auto holder = claimed ? request->at("claimed_by_masterid").get<std::int64_t>() : master;
      const auto action = pick(4);
      if (!claimed) {
        if (action == 0) {
          store.cancel_buildrequests(one);
        } else {
          store.claim_buildrequests(one, chance(0.5) ? master : other);
        }
      } else if (action == 0) {
        store.unclaim_buildrequests(one, holder);
      } else if (action == 1) {
        store.cancel_buildrequests(one);
      } else {
        store.complete_buildrequests(one, 0, holder);
      }
    }
  }

  // The faults stop once the workload's messages have reached the views'
  // connectors: on a transport that delivers a while after the commit (the
  // logical one, a WAL flush later), the last of them would otherwise pass
  // after the faults, and how many did would depend on the store's speed.
  std::atomic<bool> workload_delivered{false};
  {
    const std::string marker = "convergence." + suffix + ".delivered";
    const auto consumer = bus.start_consuming([&](const RoutingKey&, const Json&) { workload_delivered = true; },
                                              Filter::parse(marker));
    bus.produce(RoutingKey::parse(marker), Json::object());
    settle([&] { return workload_delivered.load(); });
  }
  requests_bus.set_enabled(false);
  widgets_bus.set_enabled(false);
  ConvergenceResult result;
  result.converged = settle([&] {
    requests_bus.flush();
    widgets_bus.flush();
    return requests.ready() && widgets.ready() && requests.verify().empty() && widgets.verify().empty();
  });
  for (const auto* view : {&requests, &widgets}) {
    const auto stats = view->stats();
    result.messages += stats.messages;
    for (const auto n : stats.anomalies) result.anomalies += n;
    result.reload_queries += stats.reload_queries;
    result.resyncs += stats.resyncs;
    result.full_resyncs += stats.full_resyncs;
    if (std::getenv("LIVESTATE_DEBUG_CONVERGENCE") != nullptr) {
      std::string line = "seed " + std::to_string(run.seed) + ": messages " + std::to_string(stats.messages) +
                         " resyncs " + std::to_string(stats.resyncs);
      for (std::size_t i = 0; i < reconcile::anomaly_kinds; ++i)
        line += std::string(", ") + reconcile::to_string(static_cast<reconcile::Anomaly>(i)) + " " +
                std::to_string(stats.anomalies[i]);
      MESSAGE(line);
    }
  }
  for (const auto* connector : {&requests_bus, &widgets_bus}) {
    const auto stats = connector->faults();
    result.faults += stats.dropped + stats.duplicated + stats.reordered;
  }
  if (!result.converged) {
    for (const auto& difference : requests.verify()) {
      MESSAGE("seed ", run.seed, ": buildrequests ", difference.id, ": view ",
              difference.in_view ? difference.in_view->dump() : "(none)", ", database ",
              difference.in_database ? difference.in_database->dump() : "(none)");
    }
    for (const auto& line : seen) MESSAGE("bus: ", line);
    for (const auto& difference : widgets.verify()) {
      MESSAGE("seed ", run.seed, ": ", type, " ", difference.id, ": view ",
              difference.in_view ? difference.in_view->dump() : "(none)", ", database ",
              difference.in_database ? difference.in_database->dump() : "(none)");
    }
  }
  return result;
}

}  // namespace livestate::test
