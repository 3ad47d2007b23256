// `livestate demo`: a Buildbot-shaped run through the in-process connector,
// watched by consumers with different filters, each printing what it got.

#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "livestate/core/filter.hpp"
#include "livestate/core/json.hpp"
#include "livestate/mq/simple_mq.hpp"

namespace livestate::cli {
namespace {

constexpr const char* demo_help =
    "usage: livestate demo [--json]\n"
    "\n"
    "Produces the messages of one Buildbot buildset (two build requests, a build\n"
    "with two steps) through the in-process connector, to consumers with these\n"
    "filters, and prints what each consumer received:\n"
    "  buildrequests.*.*      every build request event, on its canonical path\n"
    "  builds.*.finished      finished builds\n"
    "  steps.#                everything about steps (any suffix)\n"
    "  buildsets.1.complete   one buildset's completion\n"
    "  #                      everything, counted\n"
    "  'audit' (persistent)   build requests; stopped halfway and resumed, it\n"
    "                         still gets every message, in order\n"
    "\n"
    "  --json   one JSON object per consumer instead of text\n";

// Buildbot produces one event of a resource on several paths, back to back.
void produce_on_paths(mq::Connector& mq, const std::vector<std::vector<std::string>>& paths, const Json& body) {
  for (const auto& path : paths) mq.produce(RoutingKey(path), body);
}

Json build_request(int id, int builder, bool claimed, bool complete) {
  return {{"buildrequestid", id},
          {"buildsetid", 1},
          {"builderid", builder},
          {"priority", 0},
          {"claimed", claimed},
          {"claimed_at", claimed ? Json(1795838741.2) : Json(nullptr)},
          {"claimed_by_masterid", claimed ? Json(1) : Json(nullptr)},
          {"complete", complete},
          {"results", complete ? 0 : -1},
          {"submitted_at", 1795838740.0},
          {"complete_at", complete ? Json(1795838745.9) : Json(nullptr)},
          {"waited_for", false},
          {"properties", nullptr}};
}

void request_event(mq::Connector& mq, int id, int builder, const std::string& event, const Json& body) {
  const auto request = std::to_string(id);
  const auto builder_id = std::to_string(builder);
  produce_on_paths(mq,
                   {{"buildsets", "1", "builders", builder_id, "buildrequests", request, event},
                    {"buildrequests", request, event},
                    {"builders", builder_id, "buildrequests", request, event}},
                   body);
}

void build_event(mq::Connector& mq, const std::string& event, const Json& body) {
  produce_on_paths(
      mq, {{"builders", "2", "builds", "1", event}, {"builds", "1", event}, {"workers", "1", "builds", "1", event}},
      body);
}

void step_event(mq::Connector& mq, int step, const std::string& event, const Json& body) {
  const auto id = std::to_string(step);
  produce_on_paths(mq, {{"builds", "1", "steps", id, event}, {"steps", id, event}}, body);
}

void run_buildset(mq::Connector& mq, const std::function<void()>& halfway) {
  mq.produce(RoutingKey{"buildsets", "1", "new"},
             {{"bsid", 1},
              {"reason", "The Periodic scheduler named 'periodic-pair' triggered this build"},
              {"submitted_at", 1795838740},
              {"complete", false},
              {"results", nullptr}});
  request_event(mq, 1, 2, "new", build_request(1, 2, false, false));
  request_event(mq, 2, 5, "new", build_request(2, 5, false, false));
  request_event(mq, 1, 2, "claimed", build_request(1, 2, true, false));
  halfway();
  Json build = {{"buildid", 1},
                {"number", 1},
                {"builderid", 2},
                {"buildrequestid", 1},
                {"workerid", 1},
                {"masterid", 1},
                {"started_at", 1795838741.3},
                {"complete", false},
                {"state_string", "created"},
                {"results", nullptr}};
  build_event(mq, "new", build);
  for (int step = 1; step <= 2; ++step) {
    Json body = {{"stepid", step},    {"number", step - 1}, {"buildid", 1}, {"name", step == 1 ? "git" : "compile"},
                 {"complete", false}, {"results", nullptr}};
    step_event(mq, step, "new", body);
    step_event(mq, step, "started", body);
    body["complete"] = true;
    body["results"] = 0;
    step_event(mq, step, "finished", body);
  }
  build["complete"] = true;
  build["results"] = 0;
  build["state_string"] = "build successful";
  build_event(mq, "finished", build);
  request_event(mq, 1, 2, "complete", build_request(1, 2, true, true));
  request_event(mq, 2, 5, "claimed", build_request(2, 5, true, false));
  request_event(mq, 2, 5, "complete", build_request(2, 5, true, true));
  mq.produce(RoutingKey{"buildsets", "1", "complete"},
             {{"bsid", 1}, {"complete", true}, {"complete_at", 1795838746}, {"results", 0}});
}

struct Watcher {
  std::string name;
  std::vector<std::string> keys;
  std::size_t stopped_after = 0;  // for the persistent one: received before it stopped
};

}  // namespace

int run_demo(const std::vector<std::string>& args, std::ostream& out) {
  bool json = false;
  for (const auto& arg : args) {
    if (arg == "--help" || arg == "-h") {
      out << demo_help;
      return 0;
    }
    if (arg == "--json") {
      json = true;
      continue;
    }
    throw UsageError{"unknown option '" + arg + "'; run 'livestate demo --help'"};
  }

  auto mq = mq::make_simple_mq();
  std::vector<Watcher> watchers;
  std::vector<std::unique_ptr<mq::Consumer>> consumers;
  for (const char* filter : {"buildrequests.*.*", "builds.*.finished", "steps.#", "buildsets.1.complete"}) {
    watchers.push_back({filter, {}});
  }
  for (std::size_t i = 0; i < watchers.size(); ++i) {
    consumers.push_back(mq->start_consuming(
        [&watchers, i](const RoutingKey& key, const Json&) { watchers[i].keys.push_back(key.str()); },
        Filter::parse(watchers[i].name)));
  }
  std::size_t everything = 0;
  consumers.push_back(mq->start_consuming([&](const RoutingKey&, const Json&) { ++everything; }, Filter::parse("#")));

  Watcher audit{"audit (persistent, buildrequests.*.*)", {}};
  const auto audit_callback = [&](const RoutingKey& key, const Json&) { audit.keys.push_back(key.str()); };
  auto audit_consumer = mq->start_consuming(audit_callback, Filter::parse("buildrequests.*.*"), "audit");

  run_buildset(*mq, [&] {
    audit_consumer->stop_consuming();
    audit.stopped_after = audit.keys.size();
    // Resumed later, below: what it misses meanwhile is kept for it.
  });
  audit_consumer = mq->start_consuming(audit_callback, Filter::parse("buildrequests.*.*"), "audit");
  watchers.push_back(std::move(audit));

  const auto stats = mq->stats();
  if (json) {
    Json report = {{"produced", stats.produced},
                   {"delivered", stats.delivered},
                   {"every_message_consumer_got", everything},
                   {"consumers", Json::array()}};
    for (const auto& watcher : watchers) {
      Json entry = {{"filter", watcher.name}, {"received", watcher.keys}};
      if (watcher.stopped_after > 0) entry["received_before_stopping"] = watcher.stopped_after;
      report["consumers"].push_back(std::move(entry));
    }
    out << report.dump(2) << "\n";
    return 0;
  }
  out << "produced " << stats.produced << " messages, " << stats.delivered << " deliveries\n";
  out << "'#' received every message: " << everything << "\n";
  for (const auto& watcher : watchers) {
    out << "\n" << watcher.name << " received " << watcher.keys.size() << ":\n";
    for (std::size_t i = 0; i < watcher.keys.size(); ++i) {
      if (watcher.stopped_after > 0 && i == watcher.stopped_after) {
        out << "  -- stopped here; resumed after the buildset completed, it caught up with:\n";
      }
      out << "  " << watcher.keys[i] << "\n";
    }
  }
  return 0;
}

}  // namespace livestate::cli
