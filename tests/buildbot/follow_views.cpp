// Live views of a real Buildbot database, for tests/buildbot/views_end_to_end.py:
// views of build requests and of builds follow the masters' messages (the
// plug-in's LISTEN/NOTIFY), reading through reconcile::buildbot_source; one
// pair directly, one pair through a FaultyConnector. Buildbot's messages carry
// no _rev: every view takes them as hints.
//
// usage: buildbot_follow_views DB_URL
// Prints {"ready":true} once every view has its snapshot, then waits for a
// line on stdin (the builds are done), stops the faults, delivers what they
// hold, waits for the views to be quiet and verifies them: one JSON line per
// view, then {"converged":…}. Exit status 0 when every view equals the
// database.

#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "livestate/db/store.hpp"
#include "livestate/mq/faulty.hpp"
#include "livestate/mq/postgres.hpp"
#include "livestate/reconcile/buildbot_source.hpp"
#include "livestate/reconcile/live_view.hpp"

namespace {

using namespace livestate;
using Clock = std::chrono::steady_clock;

struct Followed {
  std::string name;
  std::unique_ptr<reconcile::LiveView> view;
};

Json report(const Followed& followed, std::size_t differences, bool clean_at_first) {
  const auto stats = followed.view->stats();
  Json anomalies = Json::object();
  for (std::size_t kind = 0; kind < reconcile::anomaly_kinds; ++kind) {
    if (stats.anomalies[kind] > 0)
      anomalies[reconcile::to_string(static_cast<reconcile::Anomaly>(kind))] = stats.anomalies[kind];
  }
  return {{"view", followed.name},
          {"entries", followed.view->size()},
          {"differences", differences},
          {"clean_at_first_verify", clean_at_first},
          {"messages", stats.messages},
          {"hints", stats.hints},
          {"anomalies", anomalies},
          {"resyncs", stats.resyncs},
          {"reload_queries", stats.reload_queries},
          {"entries_reloaded", stats.entries_reloaded}};
}

std::uint64_t messages_seen(const std::vector<Followed>& views) {
  std::uint64_t total = 0;
  for (const auto& followed : views) total += followed.view->stats().messages;
  return total;
}

bool quiet(const std::vector<Followed>& views) {
  for (const auto& followed : views) {
    if (followed.view->stats().queued != 0) return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: buildbot_follow_views DB_URL\n";
    return 2;
  }
  const std::string url = argv[1];
  boost::asio::io_context io;
  auto guard = boost::asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  int status = 1;
  try {
    auto connector = mq::make_postgres_connector(url, io.get_executor());
    if (!connector->wait_listening(std::chrono::seconds(10))) throw std::runtime_error("not listening after 10 s");
    db::StoreOptions options;
    options.migrate = false;
    options.read_only = true;
    auto store = db::Store::open(url, *connector, options);
    auto source = reconcile::buildbot_source(*store);

    mq::FaultOptions faults;
    faults.seed = 17;
    faults.reorder = 0.3;
    faults.drop = 0.1;
    faults.report_drops = true;
    faults.duplicate = 0.1;
    faults.delay = 0.1;
    faults.max_delay = std::chrono::milliseconds(40);
    mq::FaultyConnector faulty(*connector, faults);

    std::vector<Followed> views;
    for (const char* type : {"buildrequests", "builds"}) {
      for (const bool with_faults : {false, true}) {
        reconcile::ViewOptions view_options{.type = type};
        view_options.revisionless_messages_are_hints = true;
        mq::Connector& through = with_faults ? static_cast<mq::Connector&>(faulty) : *connector;
        views.push_back({std::string(type) + (with_faults ? " through faults" : ""),
                         std::make_unique<reconcile::LiveView>(through, *source, io.get_executor(), view_options)});
        views.back().view->start();
      }
    }
    for (const auto& followed : views) {
      while (!followed.view->ready()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::cout << Json{{"ready", true}}.dump() << std::endl;

    std::string line;
    std::getline(std::cin, line);  // the builds are done
    const auto started = Clock::now();
    faulty.set_enabled(false);
    faulty.flush();
    // Quiet: nothing waiting, and no new message for 300 ms.
    for (auto seen = messages_seen(views), last = seen + 1; seen != last || !quiet(views);) {
      last = seen;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      seen = messages_seen(views);
    }
    bool converged = false;
    int attempts = 0;
    std::vector<bool> clean_at_first;
    std::vector<std::size_t> differences(views.size(), 0);
    while (!converged && Clock::now() - started < std::chrono::seconds(20)) {
      ++attempts;
      converged = true;
      for (std::size_t i = 0; i < views.size(); ++i) {
        differences[i] = views[i].view->verify().size();
        if (attempts == 1) clean_at_first.push_back(differences[i] == 0);
        converged = converged && differences[i] == 0;
      }
      if (!converged) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    for (std::size_t i = 0; i < views.size(); ++i) {
      std::cout << report(views[i], differences[i], clean_at_first[i]).dump() << std::endl;
    }
    const auto fault_stats = faulty.faults();
    std::cout << Json{{"faults",
                       {{"dropped", fault_stats.dropped},
                        {"duplicated", fault_stats.duplicated},
                        {"reordered", fault_stats.reordered},
                        {"delayed", fault_stats.delayed}}}}
                     .dump()
              << std::endl;
    std::cout << Json{{"converged", converged}, {"verify_attempts", attempts}}.dump() << std::endl;
    status = converged ? 0 : 1;
    views.clear();
  } catch (const std::exception& error) {
    std::cerr << "buildbot_follow_views: " << error.what() << std::endl;
    status = 1;
  }
  guard.reset();
  io.stop();
  runner.join();
  return status;
}
