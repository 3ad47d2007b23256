#include "logical_slots.hpp"

#include <cstdio>
#include <deque>
#include <mutex>
#include <utility>

#include "livestate/core/detail/json_reader.hpp"
#include "livestate/core/detail/postgres.hpp"
#include "livestate/core/error.hpp"
#include "livestate/mq/postgres.hpp"
#include "logical_machine.hpp"
#include "pq_connection.hpp"
#include "queue_table.hpp"

namespace livestate::mq::detail {

namespace {

// FNV-1a: stable across processes, builds and versions, as a slot's name
// must be.
std::uint64_t stable_hash(std::string_view text, std::uint64_t hash = 14695981039346656037ULL) {
  for (const char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 1099511628211ULL;
  }
  return hash;
}

// Who registered which slot, and with what filter. The slot is the queue;
// this row is what its name and filter were.
constexpr const char* slot_table_sql =
    "CREATE TABLE IF NOT EXISTS livestate_mq_slots ("
    " slot TEXT PRIMARY KEY, name TEXT NOT NULL, channel TEXT NOT NULL, filter TEXT[] NOT NULL,"
    " any_suffix BOOLEAN NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())";

std::mutex g_released_mutex;
std::deque<std::pair<std::string, int>> g_released;  // the latest ones

// A plain connection (not a WAL sender) to the URL, for the caller's thread.
Connection plain_connection(std::string_view url, const char* application) {
  const std::string for_libpq = livestate::detail::take_transport_parameter(url).url;
  Connection connection = start_connection(
      for_libpq, {application, std::chrono::seconds(5), std::chrono::milliseconds(5000)}, true);
  if (PQstatus(connection.get()) != CONNECTION_OK) {
    throw TransportError("cannot connect to " + livestate::detail::redact_postgres_url(url) + ": " +
                         livestate::detail::scrub_postgres_secrets(one_line(PQerrorMessage(connection.get())), url));
  }
  return connection;
}

constexpr std::chrono::milliseconds admin_timeout{10000};

}  // namespace

std::string live_slot_name(std::string_view origin) { return std::string(slot_prefix) + "live_" + std::string(origin); }

std::string durable_slot_name(std::string_view database, std::string_view channel, std::string_view name) {
  std::string slot(slot_prefix);
  for (const char c : name.substr(0, 20)) {
    const bool safe = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    slot += safe ? c : (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : '_';
  }
  auto hash = stable_hash(database);
  hash = stable_hash(std::string_view("\0", 1), hash);
  hash = stable_hash(channel, hash);
  hash = stable_hash(std::string_view("\0", 1), hash);
  hash = stable_hash(name, hash);
  char digits[24];
  std::snprintf(digits, sizeof digits, "_%016llx", static_cast<unsigned long long>(hash));
  return slot + digits;
}

void note_released_slot(const std::string& slot, int pid) {
  std::lock_guard lock(g_released_mutex);
  g_released.emplace_back(slot, pid);
  if (g_released.size() > 256) g_released.pop_front();
}

bool released_by_this_process(const std::string& slot, int pid) {
  std::lock_guard lock(g_released_mutex);
  for (const auto& [released, released_pid] : g_released) {
    if (released == slot && released_pid == pid) return true;
  }
  return false;
}

SlotRegistration register_durable_slot(PGconn* connection, const std::string& server, std::string_view channel,
                                       const std::string& name, const Filter& filter,
                                       std::chrono::milliseconds timeout) {
  const Result facts = exec_blocking(connection,
                                     "SELECT current_setting('server_version_num'), current_setting('wal_level'), "
                                     "(SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user), "
                                     "current_database(), current_user",
                                     {}, timeout);
  const auto column = [&](int i) { return std::string(PQgetvalue(facts.get(), 0, i)); };
  if (const auto problem = logical_server_problem(column(0), column(1), server)) throw UnsupportedServer(*problem);
  if (column(2) != "t") {
    throw UnsupportedServer(
        "the logical transport's durable consumers stream from replication slots, which needs "
        "the REPLICATION privilege: the role " +
        column(4) + " on " + server + " has none (ALTER ROLE " + column(4) + " REPLICATION)");
  }
  SlotRegistration registration;
  registration.slot = durable_slot_name(column(3), channel, name);
  run_blocking(connection, slot_table_sql, {}, timeout);
  const std::string filter_literal = filter_array(filter);
  const auto existed = run_blocking(
      connection,
      "WITH added AS (INSERT INTO livestate_mq_slots (slot, name, channel, filter, any_suffix) "
      "VALUES ($1, $2, $3, $4::text[], $5) ON CONFLICT (slot) DO NOTHING RETURNING 1) "
      "SELECT CASE WHEN EXISTS (SELECT 1 FROM added) THEN 'new' "
      "WHEN (SELECT filter IS NOT DISTINCT FROM $4::text[] AND any_suffix = $5 FROM livestate_mq_slots "
      "WHERE slot = $1) THEN 'same' ELSE 'other' END",
      {registration.slot, name, std::string(channel), filter_literal, filter.any_suffix() ? "true" : "false"}, timeout);
  if (existed == "other") {
    throw PersistentNameInUse("durable consumer '" + name + "' was created with another filter than " + filter.str() +
                              ": use that filter, or another name (or drop it: livestate slots drop)");
  }
  registration.known = existed == "same";
  return registration;
}

}  // namespace livestate::mq::detail

namespace livestate::mq {

std::vector<LogicalSlot> list_logical_slots(std::string_view url) {
  const auto connection = detail::plain_connection(url, "livestate-slots");
  // The registry may not exist yet (no durable consumer ever ran here).
  const auto registry = detail::run_blocking(connection.get(), "SELECT to_regclass('livestate_mq_slots')::text", {},
                                             detail::admin_timeout);
  const std::string joined = registry ? "LEFT JOIN livestate_mq_slots r ON r.slot = s.slot_name::text"
                                      : "LEFT JOIN (SELECT NULL::text AS slot, "
                                        "NULL::text AS name, NULL::text AS "
                                        "channel, NULL::text[] AS filter, "
                                        "NULL::boolean AS any_suffix) r ON false";
  const auto result = detail::exec_blocking(
      connection.get(),
      "SELECT s.slot_name, r.name, r.channel, array_to_json(r.filter)::text, r.any_suffix, s.temporary, "
      "s.active_pid, COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn), 0)::bigint, "
      "COALESCE(s.wal_status, ''), COALESCE(s.confirmed_flush_lsn::text, '') "
      "FROM pg_replication_slots s " +
          joined + " WHERE s.database = current_database() AND s.slot_name LIKE 'livestate\\_%' ORDER BY s.slot_name",
      {}, detail::admin_timeout);
  std::vector<LogicalSlot> slots;
  const auto text = [&](int row, int column) -> std::optional<std::string> {
    if (PQgetisnull(result.get(), row, column) != 0) return std::nullopt;
    return std::string(PQgetvalue(result.get(), row, column));
  };
  for (int row = 0; row < PQntuples(result.get()); ++row) {
    LogicalSlot slot;
    slot.slot = *text(row, 0);
    slot.name = text(row, 1);
    slot.channel = text(row, 2);
    if (const auto elements = text(row, 3)) {
      std::vector<Filter::Element> filter;
      for (const auto& element : livestate::detail::parse_json(*elements)) {
        filter.push_back(element.is_null() ? Filter::Element() : Filter::Element(element.get<std::string>()));
      }
      slot.filter = Filter(std::move(filter), text(row, 4) == "t").str();
    }
    slot.temporary = text(row, 5) == "t";
    if (const auto pid = text(row, 6)) slot.active_pid = std::stoi(*pid);
    slot.retained_bytes = std::stoull(text(row, 7).value_or("0"));
    slot.wal_status = text(row, 8).value_or("");
    slot.confirmed = text(row, 9).value_or("");
    slots.push_back(std::move(slot));
  }
  return slots;
}

bool drop_logical_slot(std::string_view url, std::string_view name, std::string_view channel) {
  const auto connection = detail::plain_connection(url, "livestate-slots");
  const auto database =
      detail::run_blocking(connection.get(), "SELECT current_database()", {}, detail::admin_timeout).value_or("");
  const std::string slot = detail::durable_slot_name(database, channel, name);
  try {
    const auto dropped = detail::run_blocking(
        connection.get(),
        "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE slot_name = $1", {slot},
        detail::admin_timeout);
    if (detail::run_blocking(connection.get(), "SELECT to_regclass('livestate_mq_slots') IS NOT NULL", {},
                             detail::admin_timeout) == "t") {
      detail::run_blocking(connection.get(), "DELETE FROM livestate_mq_slots WHERE slot = $1", {slot},
                           detail::admin_timeout);
    }
    return dropped == "1";
  } catch (const detail::StatementError& error) {
    if (error.sqlstate() == "55006") {
      throw PersistentNameInUse("durable consumer '" + std::string(name) + "' is active (its slot " + slot +
                                " is in use): stop it first");
    }
    throw TransportError("cannot drop durable consumer '" + std::string(name) + "' on " +
                         livestate::detail::redact_postgres_url(url) + ": " + error.what());
  }
}

}  // namespace livestate::mq
