#include "logical_machine.hpp"

#include <algorithm>
#include <utility>

#include "livestate/core/wire.hpp"

namespace livestate::mq::detail {

namespace action = stream_action;
using replication::Lsn;

StreamSettings StreamSettings::from(std::string name, const PostgresOptions& options) {
  StreamSettings settings;
  settings.take(std::move(name), options);
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
    // Decoding has reached wal_end: past everything sent. Once nothing
    // received before it waits for its consumer, it is acknowledged too, so
    // that the slot keeps no WAL for other databases' or channels' traffic
    // (the server asks again only when it next waits for WAL).
    if (!m_in_transaction) {
      if (m_settings.temporary || m_delivered_end >= m_received_end) {
        acknowledge(keepalive->wal_end);
      } else {
        m_keepalive_end = std::max(m_keepalive_end, keepalive->wal_end);
        m_keepalive_needs = m_received_end;
      }
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
  if (!m_timers.fired(timer, token)) return finish();  // cancelled or armed again since
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
      // A status update asking for an answer. The server replies at once,
      // except while it replays a transaction whose changes the stream
      // doesn't carry (a large one can take minutes): it then reads what we
      // send only every wal_sender_timeout / 2, when it also sends a
      // keepalive. Declared lost before that, the stream would reconnect
      // and a durable one would replay the same transaction again, for ever.
      m_probing = true;
      arm(StreamTimer::probe_deadline, m_settings.probe_timeout + m_server_keepalive);
      send_status(true);
      break;
    case StreamTimer::probe_deadline:
      if (m_phase == Phase::streaming && m_probing) {
        lost("no answer to a liveness probe within " +
             std::to_string((m_settings.probe_timeout + m_server_keepalive).count()) + " ms");
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
  if (m_phase != Phase::streaming) return finish();
  acknowledge(end);
  if (m_keepalive_end != 0 && m_delivered_end >= m_keepalive_needs) acknowledge(std::exchange(m_keepalive_end, 0));
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

// --- what every event ends with ------------------------------------------------

StreamActions LogicalMachine::finish() {
  if (!m_in_transaction) flush_ready();
  if (m_counters_changed) {
    m_actions.emplace_back(action::PublishCounters{m_counters});
    m_counters_changed = false;
  }
  return std::exchange(m_actions, {});
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
  if (!m_timers.armed(StreamTimer::ack)) arm(StreamTimer::ack, m_settings.ack_interval);
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
  m_actions.emplace_back(action::ArmTimer{timer, after, m_timers.arm(timer)});
}

void LogicalMachine::cancel(StreamTimer timer) {
  if (m_timers.cancel(timer)) m_actions.emplace_back(action::CancelTimer{timer});
}

void LogicalMachine::publish_status() {
  m_actions.emplace_back(action::PublishStatus{m_phase == Phase::streaming, m_last_reconnect_reason});
}

void LogicalMachine::log(LogLevel level, std::string text) {
  m_actions.emplace_back(action::Log{level, std::move(text)});
}

}  // namespace livestate::mq::detail
