// `livestate replay TRACE.jsonl`: replays a Buildbot message trace into the
// store and, through fault-injecting connectors, to live views of every type
// in it; at the end every view must equal the store.

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "commands.hpp"
#include "livestate/core/json.hpp"
#include "livestate/core/wire.hpp"
#include "livestate/db/errors.hpp"
#include "livestate/db/store.hpp"
#include "livestate/mq/simple_mq.hpp"
#include "livestate/reconcile/live_view.hpp"
#include "livestate/reconcile/source.hpp"
#include "views_report.hpp"

namespace livestate::cli {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* replay_help =
    "usage: livestate replay TRACE.jsonl [--db URL] [--json] [fault flags]\n"
    "\n"
    "Replays a Buildbot message trace: one JSON object a line, with \"key\" (the\n"
    "routing key, an array) and \"body\", as a real master produced them. Each\n"
    "message on its canonical path (TYPE, ID, EVENT) is written to the store as\n"
    "the current state of resource (TYPE, ID) (a replay-TYPE row of the\n"
    "resources table; Buildbot's bodies are fresh database reads), then produced,\n"
    "with the row's new revision as \"_rev\", through fault-injecting connectors\n"
    "to live views of every type in the trace. The same message on its other\n"
    "paths is counted and skipped. When the trace ends, the faults stop and the\n"
    "views must converge to the store: what a real trace holds without any fault\n"
    "(a request claimed before its own new, a step before its build, a request\n"
    "claimed twice after a crash) they must survive too.\n"
    "\n"
    "It ends with the same summary and verdict as 'livestate chaos'; --json\n"
    "prints it as one object, whose \"views\" holds each type's final entries\n"
    "(views.buildrequests: every build request's final state). Exit status 0\n"
    "only when every view equals the store.\n"
    "\n"
    "  --db URL               sqlite:PATH or postgresql://... (migrated when empty;\n"
    "                         default: a new SQLite file in a temporary directory,\n"
    "                         removed at the end)\n"
    "  --json                 print the summary as one JSON object\n"
    "Faults:\n";

constexpr std::string_view stored_prefix = "replay-";

// The trace's resources, kept in the store's resources table as replay-TYPE.
class ReplaySource final : public reconcile::Source {
 public:
  explicit ReplaySource(db::Store& store) : m_store(store) {}

  std::map<std::string, Json> read(std::string_view type, const Json& where,
                                   const std::optional<std::vector<std::string>>& ids) override {
    if (!where.empty()) throw std::invalid_argument("a replayed trace's views can't be narrowed");
    std::map<std::string, Json> rows;
    for (auto& row : m_store.list(std::string(stored_prefix) + std::string(type), Json::object(), ids)) {
      Json body = std::move(row["state"]);
      body["_rev"] = row["_rev"];
      rows.emplace(row["id"].get<std::string>(), std::move(body));
    }
    return rows;
  }

  std::map<std::string, std::int64_t> deletions(std::string_view, const std::optional<std::vector<std::string>>&,
                                                std::optional<std::chrono::milliseconds>) override {
    return {};  // a trace deletes nothing
  }

 private:
  db::Store& m_store;
};

struct Line {
  std::size_t number = 0;
  std::vector<std::string> key;
  Json body;
};

// A canonical message: (TYPE, ID, EVENT) with an object body; "control"
// messages (requests to a master, not state) are not resources.
bool canonical(const Line& line) { return line.key.size() == 3 && line.key[0] != "control" && line.body.is_object(); }

std::vector<Line> read_trace(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw db::DatabaseError("cannot read the trace " + path);
  std::vector<Line> lines;
  std::string text;
  std::size_t number = 0;
  while (std::getline(file, text)) {
    ++number;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto where = path + ":" + std::to_string(number);
    Json line = Json::parse(text, nullptr, false);
    if (line.is_discarded()) throw UsageError{where + ": not JSON"};
    if (!line.is_object() || !line.contains("key") || !line["key"].is_array() || line["key"].empty() ||
        !line.contains("body")) {
      throw UsageError{where + ": a trace line needs \"key\" (a non-empty array) and \"body\""};
    }
    // A body is stored as a resource's state, one level down in its messages.
    if (wire::nested_deeper_than(line["body"], wire::max_body_depth - 1)) {
      throw UsageError{where + ": the body nests deeper than " + std::to_string(wire::max_body_depth - 1) +
                       " levels, more than any consumer between processes accepts"};
    }
    Line parsed{number, {}, std::move(line["body"])};
    for (const auto& element : line["key"]) {
      if (!element.is_string()) throw UsageError{where + ": the key's elements must be strings"};
      parsed.key.push_back(element.get<std::string>());
    }
    try {
      (void)RoutingKey(parsed.key);
    } catch (const Error& error) {
      throw UsageError{where + ": " + error.what()};
    }
    if (canonical(parsed) && (parsed.key[0].empty() || parsed.key[1].empty() || parsed.key[2].empty())) {
      throw UsageError{where + ": a (TYPE, ID, EVENT) key needs all three, not an empty one"};
    }
    lines.push_back(std::move(parsed));
  }
  if (lines.empty()) throw UsageError{path + ": the trace holds no message"};
  return lines;
}

}  // namespace

int run_replay(const std::vector<std::string>& args, std::ostream& out) {
  std::optional<std::string> trace;
  std::string url;
  bool json = false;
  FaultFlags faults;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      out << replay_help << fault_flags_help;
      return 0;
    }
    if (args[i] == "--json") {
      json = true;
    } else if (auto db = take_option(args, i, "--db", "replay")) {
      url = *db;
    } else if (take_fault_flag(args, i, faults, "replay")) {
    } else if (args[i].starts_with("-")) {
      throw UsageError{"unknown option '" + args[i] + "'; run 'livestate replay --help'"};
    } else if (trace) {
      throw UsageError{"one trace at a time, not '" + *trace + "' and '" + args[i] + "'"};
    } else {
      trace = args[i];
    }
  }
  if (!trace) throw UsageError{"which trace? run 'livestate replay --help'"};
  const auto lines = read_trace(*trace);

  std::optional<TemporaryDirectory> temporary;
  if (url.empty()) {
    temporary.emplace("livestate-replay");
    url = "sqlite:" + (temporary->path() / "replay.db").string();
  }
  (void)transport_of(url, "replay");
  migrate_if_empty_or_ours(url, "replay");
  // The store's own messages (replay-TYPE rows) reach nobody: the trace's
  // messages are what the views follow.
  auto silent = mq::make_simple_mq();
  auto store = db::Store::open(url, *silent);
  ReplaySource source(*store);

  ExecutorThread executor;

  auto bus = mq::make_simple_mq();
  std::set<std::string> types;
  for (const auto& line : lines) {
    if (canonical(line)) types.insert(line.key[0]);
  }
  ViewSet views(*bus, executor.get(), faults);
  for (const auto& type : types) {
    reconcile::ViewOptions options;
    options.type = type;
    // Buildbot's own types keep their lifecycle rules; the others (logs,
    // changes…) are followed without rules.
    options.lifecycle_rules = db::Store::is_builtin_type(type);
    views.add(source, options);
  }

  // The views load their (empty) snapshots first, so that they follow the
  // whole trace message by message.
  if (!views.wait_ready(std::chrono::seconds(30))) throw db::DatabaseError("the views could not load the store");
  const auto started = Clock::now();
  std::uint64_t replayed = 0, other_paths = 0;
  for (const auto& line : lines) {
    if (!canonical(line)) {
      ++other_paths;
      continue;
    }
    const auto revision = store->upsert_resource(std::string(stored_prefix) + line.key[0], line.key[1], line.body);
    Json message = line.body;
    message["_rev"] = revision;
    bus->produce(RoutingKey(line.key), message);
    ++replayed;
  }
  const auto worked = Clock::now() - started;
  const auto outcome = views.settle(std::chrono::seconds(30));
  const std::vector<std::pair<std::string, Json>> rows = {{"trace_lines", lines.size()},
                                                          {"messages_replayed", replayed},
                                                          {"same_messages_on_other_paths", other_paths},
                                                          {"types", types.size()}};
  views.report(out, json,
               "livestate replay: " + *trace + ", seed " + std::to_string(faults.seed) + ", replayed in " +
                   seconds_text(worked),
               rows, outcome, {{"trace", *trace}, {"seed", faults.seed}});
  return outcome.converged ? 0 : 1;
}

}  // namespace livestate::cli
