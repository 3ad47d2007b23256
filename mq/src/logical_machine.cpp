#include "logical_machine.hpp"

#include <algorithm>
#include <utility>

#include "livestate/core/wire.hpp"

namespace livestate::mq::detail {

namespace action = stream_action;
using replication::Lsn;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

namespace {

std::size_t index_of(StreamTimer timer) { return static_cast<std::size_t>(timer); }

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

StreamSettings StreamSettings::from(std::string name, const PostgresOptions& options) {
  StreamSettings settings;
  settings.name = std::move(name);
  settings.channel = options.channel;
  settings.reconnect_initial = options.reconnect_initial;
  settings.reconnect_max = options.reconnect_max;
  settings.probe_interval = options.probe_interval;
  settings.probe_timeout = options.probe_timeout;
  settings.connect_timeout = duration_cast<milliseconds>(options.connect_timeout);
  settings.statement_timeout = options.statement_timeout;
  return settings;
}

LogicalMachine::LogicalMachine(StreamSettings settings, Random random)
    : m_settings(std::move(settings)),
      m_random(std::move(random)),
      m_backoff(m_settings.reconnect_initial, m_settings.reconnect_max),
      m_slot(m_settings.slot),
      m_slot_known(m_settings.slot_known) {}

// --- events --------------------------------------------------------------------

StreamActions LogicalMachine::start(Clock::time_point) {
  if (m_phase == Phase::idle) connect();
  return finish();
}

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
              literal(logical_publication) + ")");
  m_waits.wait_readable(m_actions);
  return finish();
}

StreamActions LogicalMachine::socket_readable(Clock::time_point now) {
  if (m_waits.ready(true, m_phase == Phase::connecting, connection_open() && !m_paused, m_actions)) {
    m_last_traffic = now;
  }
  return finish();
}

StreamActions LogicalMachine::socket_writable(Clock::time_point) {
  m_waits.ready(false, m_phase == Phase::connecting, connection_open(), m_actions);
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

StreamActions LogicalMachine::copy_data(std::string_view bytes, Clock::time_point now) {
  if (m_phase != Phase::streaming) return finish();
  m_last_traffic = now;
  if (m_probing) {
    m_probing = false;
    cancel(StreamTimer::probe_deadline);
    arm(StreamTimer::probe, m_settings.probe_interval);
  }
  const auto parsed = replication::parse_server_message(bytes);
  if (const auto* data = std::get_if<replication::XLogData>(&parsed)) {
    record(*data, now);
  } else if (const auto* keepalive = std::get_if<replication::Keepalive>(&parsed)) {
    // Decoding has reached wal_end: past everything sent. With nothing
    // received still waiting for its consumer, it is acknowledged too, so
    // that the slot keeps no WAL for other databases' or channels' traffic.
    if (!m_in_transaction && (m_settings.temporary || m_delivered_end >= m_received_end)) {
      acknowledge(keepalive->wal_end);
    }
    if (keepalive->reply_requested) send_status(false);
  } else {
    lost("unreadable replication data: " + std::get<replication::Unreadable>(parsed).why);
  }
  return finish();
}

StreamActions LogicalMachine::input_read(bool connection_ok, Clock::time_point) {
  if (!connection_open()) return finish();
  if (!connection_ok) {
    lost("the server closed the connection");
  } else if (!m_paused) {
    m_waits.wait_readable(m_actions);
  }
  return finish();
}

StreamActions LogicalMachine::output_pending(Clock::time_point) {
  if (connection_open()) m_waits.wait_writable(m_actions);
  return finish();
}

StreamActions LogicalMachine::failed(std::string_view reason, Clock::time_point) {
  if (connection_open()) lost(std::string(reason));
  return finish();
}

StreamActions LogicalMachine::timer_fired(StreamTimer timer, std::uint64_t token, Clock::time_point now) {
  auto& armed = m_timer_tokens[index_of(timer)];
  if (token == 0 || token != armed) return finish();
  armed = 0;
  switch (timer) {
    case StreamTimer::connect_deadline:
      if (m_phase == Phase::connecting) lost("connecting timed out");
      break;
    case StreamTimer::command_deadline:
      if (m_phase == Phase::setup) lost("no answer to a setup command in time");
      break;
    case StreamTimer::retry:
      if (m_phase == Phase::waiting) connect();
      break;
    case StreamTimer::probe:
      if (m_phase != Phase::streaming || m_probing) break;
      if (m_paused) {
        // Not reading: a status update now and then tells the server we are
        // alive (else it gives up after wal_sender_timeout).
        send_status(false);
        arm(StreamTimer::probe, m_settings.probe_interval);
        break;
      }
      if (now - m_last_traffic < m_settings.probe_interval) {
        arm(StreamTimer::probe, m_settings.probe_interval);
        break;
      }
      // A status update asking for an answer: the server replies at once.
      m_probing = true;
      arm(StreamTimer::probe_deadline, m_settings.probe_timeout);
      send_status(true);
      break;
    case StreamTimer::probe_deadline:
      if (m_phase == Phase::streaming && m_probing) {
        lost("no answer to a liveness probe within " + std::to_string(m_settings.probe_timeout.count()) + " ms");
      }
      break;
    case StreamTimer::ack:
      if (m_phase == Phase::streaming && m_ack > m_sent_ack) send_status(false);
      break;
  }
  return finish();
}

StreamActions LogicalMachine::delivered(Lsn end, Clock::time_point) {
  m_delivered_end = std::max(m_delivered_end, end);
  if (m_phase == Phase::streaming) acknowledge(end);
  return finish();
}

StreamActions LogicalMachine::pause() {
  m_paused = true;
  return finish();
}

StreamActions LogicalMachine::resume(Clock::time_point) {
  if (!std::exchange(m_paused, false)) return finish();
  // libpq may hold messages already read from the socket: read those first.
  if (connection_open()) m_actions.emplace_back(action::ReadInput{});
  return finish();
}

StreamActions LogicalMachine::stop(Clock::time_point) {
  if (m_phase == Phase::stopped) return finish();
  if (m_phase == Phase::streaming && m_ack > m_sent_ack) send_status(false);
  if (connection_open()) m_actions.emplace_back(action::Close{});
  m_phase = Phase::stopped;
  for (std::size_t i = 0; i < stream_timer_count; ++i) cancel(static_cast<StreamTimer>(i));
  m_ready.clear();
  publish_status();
  return finish();
}

// --- setup ---------------------------------------------------------------------

StreamActions LogicalMachine::finish() {
  if (!m_in_transaction) flush_ready();
  if (m_counters_changed) {
    m_actions.emplace_back(action::PublishCounters{m_counters});
    m_counters_changed = false;
  }
  return std::exchange(m_actions, {});
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

// --- the stream ------------------------------------------------------------------

void LogicalMachine::record(const replication::XLogData& data, Clock::time_point now) {
  const auto record = replication::parse_record(data.record);
  if (const auto* begin = std::get_if<replication::Begin>(&record)) {
    m_in_transaction = true;
    m_transaction_position = begin->final_lsn;
  } else if (const auto* commit = std::get_if<replication::Commit>(&record)) {
    m_in_transaction = false;
    m_received_end = std::max(m_received_end, commit->end_lsn);
    if (m_settings.temporary) {
      acknowledge(commit->end_lsn);
      flush_ready();
    } else {
      // With its end: acknowledged once its messages are delivered.
      m_actions.emplace_back(action::Deliver{std::exchange(m_ready, {}), commit->end_lsn});
    }
  } else if (const auto* logical = std::get_if<replication::LogicalMessage>(&record)) {
    message(*logical, now);
  } else if (const auto* unreadable = std::get_if<replication::Unreadable>(&record)) {
    lost("unreadable pgoutput record: " + unreadable->why);
  }
}

void LogicalMachine::message(const replication::LogicalMessage& logical, Clock::time_point now) {
  if (logical.prefix != m_settings.channel) return;
  const auto position = logical.transactional && m_in_transaction ? m_transaction_position : logical.lsn;
  wire::Decoded decoded = wire::decode(logical.content);
  ++m_counters.notifications;
  m_counters.malformed += decoded.problems.size();
  m_counters_changed = true;
  for (const auto& problem : decoded.problems) {
    if (auto line = m_malformed_log.line(problem, m_settings.channel, now)) {
      log(LogLevel::warning, std::move(*line));
    }
  }
  std::uint64_t lost_here = decoded.refused_sequences.size();
  for (auto& incoming : decoded.messages) {
    // Bodies travel inline on this transport: a reference (a foreign
    // producer's) points to nothing a consumer here reads.
    if (incoming.reference) {
      ++m_counters.missing_references;
      ++lost_here;
      continue;
    }
    ++m_counters.received;
    Delivery delivery{
        {std::move(incoming.key), std::move(incoming.body), position}, decoded.origin, incoming.sequence.value_or(0)};
    m_ready.emplace_back(std::move(delivery));
  }
  // Never lost without a word: what was refused or can't be read, of a
  // producer that numbers its messages, is told in its place.
  if (lost_here > 0 && decoded.origin) {
    ++m_counters.gaps;
    m_ready.emplace_back(ControlEvent{ControlKind::gap,
                                      std::to_string(lost_here) + " message(s) of origin " + *decoded.origin +
                                          " refused (malformed, or a body by reference)",
                                      decoded.origin, lost_here});
  }
}

void LogicalMachine::acknowledge(Lsn position) {
  if (position <= m_ack) return;
  m_ack = position;
  if (m_timer_tokens[index_of(StreamTimer::ack)] == 0) arm(StreamTimer::ack, m_settings.ack_interval);
}

void LogicalMachine::send_status(bool reply_requested) {
  m_actions.emplace_back(action::SendCopyData{replication::status_update(
      m_ack, replication::postgres_time(std::chrono::system_clock::now()), reply_requested)});
  m_sent_ack = m_ack;
}

void LogicalMachine::flush_ready() {
  if (!m_ready.empty()) m_actions.emplace_back(action::Deliver{std::exchange(m_ready, {})});
}

void LogicalMachine::arm(StreamTimer timer, Clock::duration after) {
  const auto token = ++m_next_token;
  m_timer_tokens[index_of(timer)] = token;
  m_actions.emplace_back(action::ArmTimer{timer, after, token});
}

void LogicalMachine::cancel(StreamTimer timer) {
  if (std::exchange(m_timer_tokens[index_of(timer)], 0) != 0) m_actions.emplace_back(action::CancelTimer{timer});
}

void LogicalMachine::publish_status() {
  m_actions.emplace_back(action::PublishStatus{m_phase == Phase::streaming, m_last_reconnect_reason});
}

void LogicalMachine::log(LogLevel level, std::string text) {
  m_actions.emplace_back(action::Log{level, std::move(text)});
}

}  // namespace livestate::mq::detail
