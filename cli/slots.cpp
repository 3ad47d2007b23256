// `livestate slots`: the logical transport's replication slots on a database
// and the WAL each keeps; `livestate slots drop NAME` drops a durable
// consumer's.

#include <cstdint>
#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "livestate/core/json.hpp"
#include "livestate/mq/postgres.hpp"
#include "table.hpp"

namespace livestate::cli {
namespace {

constexpr const char* slots_help =
    "usage: livestate slots [--db URL] [--json]\n"
    "       livestate slots drop NAME [--channel CHANNEL] [--db URL]\n"
    "\n"
    "The logical transport (--db postgresql://...?transport=logical) keeps\n"
    "each durable consumer's messages in a replication slot: the server keeps\n"
    "the WAL from the slot's last acknowledged position on, however long its\n"
    "consumer is away (bounded by the server's max_slot_wal_keep_size, past\n"
    "which the slot is invalidated and its consumer told its messages\n"
    "expired). Connectors' live consumers have temporary slots, gone with\n"
    "their connection.\n"
    "\n"
    "Without a subcommand, lists livestate's slots on the database of --db:\n"
    "the durable consumer (name, channel, filter) or 'live', whether a\n"
    "server process streams from it now, the WAL it keeps, its status\n"
    "(reserved, extended, unreserved, lost) and the position acknowledged last.\n"
    "\n"
    "'drop NAME' drops the slot of the durable consumer NAME on CHANNEL (the\n"
    "default channel is livestate) and forgets the name, which frees the WAL\n"
    "kept for it: a consumer of that name starting later gets only what is\n"
    "committed from then on. An active consumer's slot is not dropped (exit 1).\n"
    "\n"
    "  --db URL            a PostgreSQL URL or conninfo string (transport is ignored)\n"
    "  --channel CHANNEL   with drop: the consumer's channel (default: livestate)\n"
    "  --json              one JSON object per slot\n";

std::string size_text(std::uint64_t bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(units)) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return text;
}

Json as_json(const mq::LogicalSlot& slot) {
  Json json{{"slot", slot.slot},
            {"temporary", slot.temporary},
            {"active_pid", slot.active_pid ? Json(*slot.active_pid) : Json(nullptr)},
            {"retained_bytes", slot.retained_bytes},
            {"wal_status", slot.wal_status},
            {"confirmed", slot.confirmed}};
  json["name"] = slot.name ? Json(*slot.name) : Json(nullptr);
  json["channel"] = slot.channel ? Json(*slot.channel) : Json(nullptr);
  json["filter"] = slot.filter ? Json(*slot.filter) : Json(nullptr);
  return json;
}

void print_table(const std::vector<mq::LogicalSlot>& slots, std::ostream& out) {
  std::vector<std::vector<std::string>> lines{
      {"name", "channel", "filter", "active", "retained", "status", "confirmed", "slot"}};
  for (const auto& slot : slots) {
    lines.push_back({slot.name.value_or(slot.temporary ? "(live)" : "(unregistered)"), slot.channel.value_or("-"),
                     slot.filter.value_or("-"), slot.active_pid ? "pid " + std::to_string(*slot.active_pid) : "no",
                     size_text(slot.retained_bytes), slot.wal_status, slot.confirmed, slot.slot});
  }
  print_aligned(lines, out);
}

}  // namespace

int run_slots(const std::vector<std::string>& args, std::ostream& out) {
  bool json = false;
  std::optional<std::string> url;
  std::string channel = "livestate";
  bool channel_given = false;
  std::vector<std::string> words;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      out << slots_help;
      return 0;
    }
    if (arg == "--json") {
      json = true;
    } else if (auto db = take_option(args, i, "--db", "slots")) {
      url = *db;
    } else if (auto given = take_option(args, i, "--channel", "slots")) {
      channel = *given;
      channel_given = true;
    } else if (arg.size() > 1 && arg[0] == '-') {
      throw UsageError{"unknown option '" + arg + "'; run 'livestate slots --help'"};
    } else {
      words.push_back(arg);
    }
  }
  if (!url || transport_of(*url, "slots") != Transport::postgresql) {
    throw UsageError{
        "--db needs the PostgreSQL database whose slots to show (a postgresql:// URL or a libpq conninfo "
        "string); run 'livestate slots --help'"};
  }
  if (words.empty()) {
    if (channel_given) throw UsageError{"--channel goes with 'drop NAME'; run 'livestate slots --help'"};
    const auto slots = mq::list_logical_slots(*url);
    if (json) {
      for (const auto& slot : slots) out << as_json(slot).dump() << "\n";
    } else if (slots.empty()) {
      out << "no slots of livestate's\n";
    } else {
      print_table(slots, out);
    }
    return 0;
  }
  if (words.front() != "drop") {
    throw UsageError{"unknown subcommand '" + words.front() + "'; run 'livestate slots --help'"};
  }
  if (words.size() != 2) throw UsageError{"which durable consumer? 'livestate slots drop NAME'"};
  if (json) throw UsageError{"--json goes with the list, not with drop"};
  if (!mq::drop_logical_slot(*url, words[1], channel)) {
    out << "no slot for durable consumer '" << words[1] << "' on channel " << channel << " (nothing dropped)\n";
    return 0;
  }
  out << "dropped the slot of durable consumer '" << words[1] << "' on channel " << channel << "\n";
  return 0;
}

}  // namespace livestate::cli
