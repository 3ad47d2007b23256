// view_bench: what a live view costs.
//
//   apply_in_order   a view of 1,000 application resources, loaded; N messages
//                    about them, in order, each newer than the entry, produced
//                    through SimpleMQ and applied on the view's executor. Time
//                    per message: produce (routing, the copy posted to the
//                    view's strand) and apply, together and apply alone.
//   reloads_faulty   build requests through their lifecycle (new, claimed,
//                    complete; some unclaimed and claimed again) and resource
//                    updates, made by the store (SQLite) while views of both
//                    follow through a FaultyConnector that reorders 10% of the
//                    messages (window 8) and drops 1% (told as gaps). Reload
//                    queries (entry reloads and resyncs) per message seen, and
//                    whether the views converged.
//
// Usage: view_bench [--messages N] [--reps N] [--json] [--quick]
// Medians over --reps repetitions (5).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "livestate/livestate.hpp"

namespace {

using Clock = std::chrono::steady_clock;
namespace db = livestate::db;
namespace mq = livestate::mq;
namespace reconcile = livestate::reconcile;
using livestate::Json;
using livestate::RoutingKey;

struct TemporaryFile {
  std::filesystem::path path;
  TemporaryFile() {
    std::random_device device;
    path = std::filesystem::temp_directory_path() / ("livestate-view-bench-" + std::to_string(device()) + ".db");
  }
  ~TemporaryFile() {
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path.string() + suffix);
  }
};

void run_until_idle(boost::asio::io_context& io) {
  for (;;) {
    io.restart();
    if (io.poll() == 0) return;
  }
}

struct ApplyResult {
  double total_ns = 0;  // produce and apply, per message
  double apply_ns = 0;  // apply alone, per message
};

ApplyResult apply_in_order(int messages) {
  TemporaryFile file;
  auto bus = mq::make_simple_mq();
  auto store = db::Store::open("sqlite:" + file.path.string(), *bus);
  constexpr int entries = 1000;
  {
    auto tx = store->begin();
    for (int i = 0; i < entries; ++i) tx.upsert_resource("widgets", std::to_string(i), {{"n", 0}});
    tx.commit();
  }
  boost::asio::io_context io;
  reconcile::ViewOptions options;
  options.type = "widgets";
  // Every message waits before the view runs (produce and apply are timed
  // apart): the inbox must hold them all.
  options.max_queued = static_cast<std::size_t>(messages);
  reconcile::LiveView view(*bus, *store, io.get_executor(), options);
  std::uint64_t changes = 0;
  view.on_change([&](const reconcile::Change&) { ++changes; });
  view.start();
  run_until_idle(io);
  changes = 0;

  // The messages, built before timing: each entry's revisions go up by one.
  std::vector<RoutingKey> keys;
  std::vector<Json> bodies;
  keys.reserve(static_cast<std::size_t>(messages));
  bodies.reserve(static_cast<std::size_t>(messages));
  for (int m = 0; m < messages; ++m) {
    const int id = m % entries;
    const int revision = 2 + m / entries;
    keys.push_back(RoutingKey{"widgets", std::to_string(id), "updated"});
    bodies.push_back({{"type", "widgets"}, {"id", std::to_string(id)}, {"state", {{"n", m}}}, {"_rev", revision}});
  }
  const auto started = Clock::now();
  for (int m = 0; m < messages; ++m)
    bus->produce(keys[static_cast<std::size_t>(m)], bodies[static_cast<std::size_t>(m)]);
  const auto produced = Clock::now();
  run_until_idle(io);
  const auto applied = Clock::now();
  if (changes != static_cast<std::uint64_t>(messages) || view.stats().reload_queries != 0) {
    std::cerr << "view_bench: apply_in_order: " << changes << " changes for " << messages << " messages\n";
    std::exit(1);
  }
  ApplyResult result;
  result.total_ns = std::chrono::duration<double, std::nano>(applied - started).count() / messages;
  result.apply_ns = std::chrono::duration<double, std::nano>(applied - produced).count() / messages;
  return result;
}

struct ReloadResult {
  std::uint64_t messages = 0;
  std::uint64_t reload_queries = 0;
  std::uint64_t resyncs = 0;
  std::uint64_t anomalies = 0;
  bool converged = false;
};

ReloadResult reloads_faulty(int operations, std::uint64_t seed) {
  TemporaryFile file;
  auto bus = mq::make_simple_mq();
  auto store = db::Store::open("sqlite:" + file.path.string(), *bus);
  const auto master = store->master_active("m");
  const auto builder = store->builder_started("b", master);
  boost::asio::io_context io;
  mq::FaultOptions faults;
  faults.seed = seed;
  faults.reorder = 0.10;
  faults.reorder_window = 8;
  faults.drop = 0.01;
  faults.report_drops = true;
  mq::FaultyConnector faulty(*bus, faults);
  reconcile::ViewOptions requests_options;
  requests_options.type = "buildrequests";
  reconcile::LiveView requests(faulty, *store, io.get_executor(), requests_options);
  reconcile::ViewOptions widgets_options;
  widgets_options.type = "widgets";
  reconcile::LiveView widgets(faulty, *store, io.get_executor(), widgets_options);
  requests.start();
  widgets.start();
  run_until_idle(io);

  std::mt19937_64 random(seed);
  std::vector<std::int64_t> open;
  for (int i = 0; i < operations; ++i) {
    const auto roll = random() % 10;
    if (roll < 4) {
      store->upsert_resource("widgets", std::to_string(random() % 500), {{"n", i}});
    } else if (roll < 6 || open.empty()) {
      db::NewBuildset buildset;
      buildset.builderids = {builder};
      const auto id = store->add_buildset(buildset).buildrequestids.begin()->second;
      store->claim_buildrequests(std::vector<std::int64_t>{id}, master);
      open.push_back(id);
    } else {
      const auto index = random() % open.size();
      const std::vector<std::int64_t> one{open[index]};
      if (random() % 4 == 0) {
        store->unclaim_buildrequests(one, master);
        store->claim_buildrequests(one, master);
      } else {
        store->complete_buildrequests(one, 0, master);
        open.erase(open.begin() + static_cast<std::ptrdiff_t>(index));
      }
    }
    io.restart();
    io.poll();
  }
  faulty.set_enabled(false);
  faulty.flush();
  run_until_idle(io);
  ReloadResult result;
  result.converged = requests.verify().empty() && widgets.verify().empty();
  for (const auto* view : {&requests, &widgets}) {
    const auto stats = view->stats();
    result.messages += stats.messages;
    result.reload_queries += stats.reload_queries;
    result.resyncs += stats.resyncs - 1;  // not the start-up load
    for (const auto n : stats.anomalies) result.anomalies += n;
  }
  return result;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int messages = 200'000;
  int operations = 20'000;
  int reps = 5;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--messages" && i + 1 < argc) {
      messages = std::stoi(argv[++i]);
    } else if (arg == "--reps" && i + 1 < argc) {
      reps = std::stoi(argv[++i]);
    } else if (arg == "--json") {
      json = true;
    } else if (arg == "--quick") {
      messages = 5'000;
      operations = 1'000;
      reps = 1;
    } else {
      std::cerr << "usage: view_bench [--messages N] [--reps N] [--json] [--quick]\n";
      return 2;
    }
  }
  livestate::set_log_level(livestate::LogLevel::error);

  std::vector<double> total, apply, ratio, resync_ratio;
  bool converged = true;
  ReloadResult last;
  for (int rep = 0; rep < reps; ++rep) {
    const auto applied = apply_in_order(messages);
    total.push_back(applied.total_ns);
    apply.push_back(applied.apply_ns);
    last = reloads_faulty(operations, static_cast<std::uint64_t>(rep + 1));
    converged = converged && last.converged;
    ratio.push_back(static_cast<double>(last.reload_queries + last.resyncs) / static_cast<double>(last.messages));
    resync_ratio.push_back(static_cast<double>(last.resyncs) / static_cast<double>(last.messages));
  }
  if (json) {
    std::cout << Json{{"apply_in_order_total_ns", median(total)},
                      {"apply_in_order_apply_ns", median(apply)},
                      {"reload_queries_per_message", median(ratio)},
                      {"resyncs_per_message", median(resync_ratio)},
                      {"converged", converged},
                      {"messages", messages},
                      {"operations", operations},
                      {"reps", reps}}
                     .dump()
              << "\n";
  } else {
    std::printf("| case | median | target |\n| --- | ---: | ---: |\n");
    std::printf("| in-order message, produce + apply | %.2f µs | — |\n", median(total) / 1000);
    std::printf("| in-order message, apply on the view's executor | %.2f µs | ≤ 2 µs |\n", median(apply) / 1000);
    std::printf(
        "| reload queries (entry reloads + resyncs) per message, 10%% reordered, 1%% dropped | %.2f%% | ≤ 5%% |\n",
        100 * median(ratio));
    std::printf("| of which resyncs (one per reported drop) | %.2f%% | — |\n", 100 * median(resync_ratio));
    std::printf(
        "\n%d repetitions; %d in-order messages; %d store operations (last: %llu messages seen by the views, "
        "%llu anomalies); views converged: %s\n",
        reps, messages, operations, static_cast<unsigned long long>(last.messages),
        static_cast<unsigned long long>(last.anomalies), converged ? "yes" : "NO");
  }
  return converged ? 0 : 1;
}
