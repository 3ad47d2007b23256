// `livestate produce KEY JSON`: one message, on the connector of the database.

#include <iostream>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "commands.hpp"
#include "livestate/core/error.hpp"
#include "livestate/core/json.hpp"
#include "livestate/core/routing_key.hpp"
#include "livestate/core/wire.hpp"
#include "livestate/mq/postgres.hpp"
#include "livestate/mq/simple_mq.hpp"

namespace livestate::cli {
namespace {

constexpr const char* produce_help =
    "usage: livestate produce KEY JSON [--db URL] [--json]\n"
    "\n"
    "Produces one message: KEY is its routing key, dotted (e.g.\n"
    "buildrequests.17.claimed; elements are 7-bit ASCII, 'a..b' has an empty\n"
    "middle one), JSON its body, a JSON object (e.g. '{\"buildrequestid\":17}').\n"
    "\n"
    "On PostgreSQL it is sent with NOTIFY in a transaction of its own, to every\n"
    "process listening on the database (livestate watch, or a program with the\n"
    "PostgreSQL connector); a body too large for one notification travels by\n"
    "reference through the table livestate_mq_bodies. The connector's tables\n"
    "(livestate_mq_*) are created when missing.\n"
    "\n"
    "The embedded default (sqlite:...) has no transport between processes: its\n"
    "connector is in-process, so the message reaches nobody. produce says so on\n"
    "stderr and exits 0.\n"
    "\n"
    "  --db URL   postgresql://..., postgres://... or a libpq conninfo string\n"
    "             ('host=... dbname=...'); or sqlite:PATH (default:\n"
    "             sqlite:livestate.db)\n"
    "  --json     print {\"produced\":KEY} once it is sent; otherwise nothing\n"
    "\n"
    "Exit status: 0 once sent (on PostgreSQL: committed), 1 when the server does\n"
    "not take it (the error says whether it may have been sent anyway), 2 for\n"
    "bad input.\n";

RoutingKey parse_key(const std::string& text) {
  try {
    return RoutingKey::parse(text);
  } catch (const InvalidRoutingKey& error) {
    throw UsageError{std::string("KEY: ") + error.what()};
  }
}

Json parse_body(const std::string& text) {
  Json body;
  try {
    body = Json::parse(text);
  } catch (const Json::parse_error& error) {
    // nlohmann's messages start with "[json.exception.parse_error.101] ".
    std::string reason = error.what();
    if (const auto end = reason.find("] "); reason.starts_with("[json.exception.") && end != reason.npos) {
      reason.erase(0, end + 2);
    }
    throw UsageError{"JSON is not valid JSON: " + reason};
  } catch (const Json::out_of_range&) {
    // A number beyond a double's range, such as 1e400: JSON allows it, no reader here does.
    throw UsageError{"JSON holds a number too large for a double (beyond about 1.8e308)"};
  }
  if (!body.is_object()) {
    const std::string type = body.type_name();
    const std::string what = body.is_null() ? type : (body.is_array() ? "an " : "a ") + type;
    throw UsageError{"JSON must be an object, e.g. '{\"buildid\":7}', not " + what};
  }
  if (wire::nested_deeper_than(body)) {
    throw UsageError{"JSON nests deeper than " + std::to_string(wire::max_body_depth) +
                     " levels, more than any consumer between processes accepts"};
  }
  return body;
}

}  // namespace

int run_produce(const std::vector<std::string>& args, std::ostream& out) {
  bool json = false;
  std::string url = default_database;
  std::vector<std::string> operands;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      out << produce_help;
      return 0;
    }
    if (arg == "--json") {
      json = true;
    } else if (auto db = take_option(args, i, "--db", "produce")) {
      url = *db;
    } else if (arg.size() > 1 && arg[0] == '-') {
      throw UsageError{"unknown option '" + arg + "'; run 'livestate produce --help'"};
    } else if (operands.size() == 2) {
      throw UsageError{"one message at a time: KEY and JSON, then nothing more, not '" + arg + "'"};
    } else {
      operands.push_back(arg);
    }
  }
  if (operands.size() < 2) {
    throw UsageError{std::string(operands.empty() ? "which KEY and JSON?" : "which JSON body?") +
                     " e.g. livestate produce buildrequests.17.claimed '{\"buildrequestid\":17}'"};
  }
  const RoutingKey key = parse_key(operands[0]);
  const Json body = parse_body(operands[1]);

  if (transport_of(url, "produce") == Transport::in_process) {
    mq::make_simple_mq()->produce(key, body);
    std::cerr << "livestate produce: " << url
              << " has no transport between processes: the message went to this process's "
                 "in-process connector, where nobody consumes it (use --db postgresql://...)\n";
  } else {
    // produce() runs in this thread; the executor is only for listening, which
    // this connector never gets to do: the handlers it queued at construction
    // are dropped with the io_context.
    boost::asio::io_context io;
    const auto connector = mq::make_postgres_connector(url, io.get_executor());
    connector->produce(key, body);
  }
  if (json) out << Json{{"produced", key.str()}}.dump() << "\n";
  return 0;
}

}  // namespace livestate::cli
