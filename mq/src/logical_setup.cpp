// The logical stream's setup: connecting, checking the server, the
// publication and the slot, starting to stream, and losing the connection;
// the commands' results decide the next step, or a refusal that names what
// the server lacks. The events and the stream itself: logical_machine.cpp.

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <utility>

#include "logical_machine.hpp"

namespace livestate::mq::detail {

namespace action = stream_action;

namespace {

// A SQL string literal; slot names are [a-z0-9_] anyway.
std::string literal(std::string_view text) {
  std::string quoted = "'";
  for (const char c : text) {
    quoted += c;
    if (c == '\'') quoted += '\'';
  }
  return quoted + "'";
}

const std::optional<std::string>& cell(const CommandResult& result, std::size_t column) {
  static const std::optional<std::string> none;
  if (result.rows.empty() || result.rows.front().size() <= column) return none;
  return result.rows.front()[column];
}

// SQLSTATEs the setup tells apart.
constexpr std::string_view duplicate_object = "42710";
constexpr std::string_view undefined_object = "42704";
constexpr std::string_view object_in_use = "55006";
constexpr std::string_view not_in_prerequisite_state = "55000";
constexpr std::string_view configuration_limit_exceeded = "53400";
constexpr std::string_view insufficient_privilege = "42501";

}  // namespace

StreamActions LogicalMachine::connect_polled(Polled status, std::string_view error, Clock::time_point now) {
  if (m_phase != Phase::connecting || m_waits.connecting(status, m_actions)) return finish();
  if (status == Polled::failed) {
    lost("cannot connect: " + std::string(error));
    return finish();
  }
  m_phase = Phase::setup;
  cancel(StreamTimer::connect_deadline);
  m_last_traffic = now;
  command(Step::check,
          "SELECT current_setting('server_version_num')::int, current_setting('wal_level'), "
          "EXISTS (SELECT 1 FROM pg_publication WHERE pubname = " +
              literal(logical_publication) +
              "), (SELECT setting FROM pg_settings WHERE name = 'wal_sender_timeout')");
  m_waits.wait_readable(m_actions);
  return finish();
}

StreamActions LogicalMachine::command_result(CommandResult result, Clock::time_point now) {
  if (m_phase != Phase::setup || !m_command_sent) return finish();
  m_command_sent = false;
  cancel(StreamTimer::command_deadline);
  const bool ok = result.status != CommandResult::Status::failed;
  const auto& state = result.sqlstate;
  switch (m_step) {
    case Step::check:
      if (ok)
        after_check(result);
      else
        lost("checking the server failed: " + result.error);
      break;
    case Step::publication:
      // Made by another process meanwhile: as good.
      if (ok || state == duplicate_object) {
        create_slot();
      } else if (state == insufficient_privilege) {
        refuse(Refusal::unsupported,
               "cannot create the publication " + std::string(logical_publication) +
                   " that the logical transport streams with: the role needs the CREATE privilege on the database "
                   "once, or an administrator runs CREATE PUBLICATION " +
                   std::string(logical_publication) + "; (" + result.error + ")");
      } else {
        lost("creating the publication failed: " + result.error);
      }
      break;
    case Step::slot_state:
      if (ok)
        after_slot_state(result);
      else
        lost("reading the slot's state failed: " + result.error);
      break;
    case Step::drop_slot:
      if (ok || state == undefined_object)
        create_slot();
      else
        lost("dropping the invalidated slot " + m_slot + " failed: " + result.error);
      break;
    case Step::create_slot:
      if (ok || (!m_settings.temporary && state == duplicate_object)) {
        m_slot_known = true;
        start_streaming();
      } else if (state == configuration_limit_exceeded) {
        refuse(Refusal::unsupported, "no free replication slot on " + m_settings.name +
                                         ": every one of max_replication_slots is in use; raise it (a restart), or "
                                         "drop slots no longer used (livestate slots): " +
                                         result.error);
      } else if (state == not_in_prerequisite_state || state == insufficient_privilege) {
        refuse(Refusal::unsupported, "cannot create the replication slot " + m_slot + ": " + result.error);
      } else {
        lost("creating the replication slot " + m_slot + " failed: " + result.error);
      }
      break;
    case Step::start:
      if (result.status == CommandResult::Status::copy_both) {
        on_streaming(now);
      } else if (state == object_in_use) {
        refuse(Refusal::in_use, "the replication slot " + m_slot + " is in use by another session: " + result.error);
      } else if (!m_settings.temporary && state == undefined_object) {
        slot_gone("the slot " + m_slot + " is gone");
        create_slot();
      } else if (!m_settings.temporary && state == not_in_prerequisite_state) {
        // Invalidated (max_slot_wal_keep_size): its messages are lost.
        slot_gone("the slot " + m_slot + " was invalidated by the server: " + result.error);
        command(Step::drop_slot, "DROP_REPLICATION_SLOT \"" + m_slot + "\"");
      } else {
        lost("START_REPLICATION failed: " + result.error);
      }
      break;
  }
  return finish();
}

void LogicalMachine::connect() {
  m_phase = Phase::connecting;
  ++m_attempts;
  // A temporary slot of a connection the server has not seen end yet still
  // holds its name: each connection's has a name of its own.
  m_slot = m_settings.temporary ? m_settings.slot + "_" + std::to_string(m_attempts) : m_settings.slot;
  m_actions.emplace_back(action::Connect{});
  arm(StreamTimer::connect_deadline, m_settings.connect_timeout);
}

void LogicalMachine::lost(const std::string& reason) {
  const bool was_streaming = m_phase == Phase::streaming;
  if (was_streaming || m_last_reconnect_reason.empty()) m_last_reconnect_reason = reason;
  log(was_streaming ? LogLevel::warning : LogLevel::info, "replication connection to " + m_settings.name +
                                                              " lost: " + reason + "; reconnecting in " +
                                                              std::to_string(m_backoff.step().count()) + " ms");
  // What was received whole is delivered; a transaction cut short is not
  // (a durable stream gets it again; live consumers are told they missed it).
  if (m_in_transaction) m_ready.clear();
  flush_ready();
  m_actions.emplace_back(action::Close{});
  m_phase = Phase::waiting;
  m_waits.reset();
  m_command_sent = false;
  m_probing = false;
  m_in_transaction = false;
  // What was received but not delivered comes again from the slot.
  m_received_end = m_delivered_end;
  m_keepalive_end = 0;
  m_ack = m_sent_ack = 0;
  for (const auto timer : {StreamTimer::connect_deadline, StreamTimer::command_deadline, StreamTimer::probe,
                           StreamTimer::probe_deadline, StreamTimer::ack}) {
    cancel(timer);
  }
  arm(StreamTimer::retry, m_backoff.next(m_random()));
  publish_status();
}

void LogicalMachine::refuse(Refusal why, const std::string& text, std::optional<int> active_pid) {
  m_actions.emplace_back(action::Refused{why, text, active_pid});
  log(why == Refusal::unsupported ? LogLevel::error : LogLevel::info, text);
  // A setting or a privilege is not fixed in milliseconds.
  if (why == Refusal::unsupported) m_backoff.give_up_hurrying();
  lost(text);
}

void LogicalMachine::command(Step step, std::string sql) {
  m_step = step;
  m_command_sent = true;
  m_actions.emplace_back(action::SendCommand{std::move(sql)});
  arm(StreamTimer::command_deadline,
      step == Step::create_slot ? m_settings.slot_timeout : m_settings.statement_timeout);
}

std::optional<std::string> logical_server_problem(std::string_view version_number, std::string_view wal_level,
                                                  const std::string& server) {
  long version = 0;
  try {
    version = std::stol(std::string(version_number));
  } catch (const std::exception&) {
  }
  if (version < 140000) {
    return "the logical transport needs PostgreSQL 14 or later (pgoutput's messages option); " + server +
           " runs server_version_num " + std::string(version_number);
  }
  if (wal_level != "logical") {
    return "the logical transport needs wal_level = logical on " + server + " (it is '" + std::string(wal_level) +
           "'): set it in postgresql.conf and restart the server";
  }
  return std::nullopt;
}

void LogicalMachine::after_check(const CommandResult& result) {
  if (const auto problem = logical_server_problem(cell(result, 0).value_or("?"), cell(result, 1).value_or("?"),
                                                  m_settings.name)) {
    return refuse(Refusal::unsupported, *problem);
  }
  // In milliseconds; 0 (no timeout) when missing or unreadable.
  std::int64_t wal_sender_timeout = 0;
  if (const auto& text = cell(result, 3)) {
    std::from_chars(text->data(), text->data() + text->size(), wal_sender_timeout);
  }
  m_server_keepalive = std::chrono::milliseconds(std::max<std::int64_t>(wal_sender_timeout, 0) / 2);
  if (cell(result, 2) != "t") {
    return command(Step::publication, "CREATE PUBLICATION \"" + std::string(logical_publication) + "\"");
  }
  if (!m_settings.temporary) {
    return command(Step::slot_state,
                   "SELECT wal_status, active_pid FROM pg_replication_slots WHERE slot_name = " + literal(m_slot));
  }
  create_slot();
}

void LogicalMachine::after_slot_state(const CommandResult& result) {
  if (result.rows.empty()) {
    if (m_slot_known) slot_gone("the slot " + m_slot + " is gone");
    return create_slot();
  }
  if (const auto& pid = cell(result, 1)) {
    std::optional<int> active;
    try {
      active = std::stoi(*pid);
    } catch (const std::exception&) {
    }
    return refuse(Refusal::in_use, "the replication slot " + m_slot + " is in use by the server process " + *pid,
                  active);
  }
  if (cell(result, 0) == "lost") {
    slot_gone("the slot " + m_slot + " was invalidated by the server (max_slot_wal_keep_size)");
    return command(Step::drop_slot, "DROP_REPLICATION_SLOT \"" + m_slot + "\"");
  }
  m_slot_known = true;
  start_streaming();
}

void LogicalMachine::create_slot() {
  command(Step::create_slot, "CREATE_REPLICATION_SLOT \"" + m_slot + "\"" + (m_settings.temporary ? " TEMPORARY" : "") +
                                 " LOGICAL pgoutput NOEXPORT_SNAPSHOT");
}

void LogicalMachine::start_streaming() {
  command(Step::start, "START_REPLICATION SLOT \"" + m_slot +
                           "\" LOGICAL 0/0 (proto_version '1', "
                           "publication_names '\"" +
                           std::string(logical_publication) + "\"', messages 'true')");
}

void LogicalMachine::slot_gone(const std::string& why) {
  m_slot_known = false;
  if (!m_expired_pending) log(LogLevel::warning, "durable consumer's " + why + ": its waiting messages are lost");
  m_expired_pending = true;
}

void LogicalMachine::on_streaming(Clock::time_point now) {
  m_phase = Phase::streaming;
  m_backoff.reset();
  m_last_traffic = now;
  m_received_end = m_delivered_end = 0;
  m_keepalive_end = 0;
  if (std::exchange(m_expired_pending, false)) {
    m_ready.emplace_back(ControlEvent{ControlKind::expired,
                                      "the replication slot " + m_slot +
                                          " was lost with its messages (invalidated "
                                          "by max_slot_wal_keep_size, or dropped); going on from now",
                                      std::nullopt, 0});
  }
  if (std::exchange(m_ever_streamed, true)) {
    ++m_counters.reconnects;
    m_counters_changed = true;
    log(LogLevel::warning, "streaming again from " + m_settings.name + " after: " + m_last_reconnect_reason);
    // A permanent slot resumes where it was acknowledged: nothing was missed.
    if (m_settings.temporary) {
      m_ready.emplace_back(
          ControlEvent{ControlKind::reconnected, "reconnected after: " + m_last_reconnect_reason, std::nullopt, 0});
    }
  }
  publish_status();
  arm(StreamTimer::probe, m_settings.probe_interval);
  m_waits.wait_readable(m_actions);
}

}  // namespace livestate::mq::detail
