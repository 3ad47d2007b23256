#include "listener_machine.hpp"

#include <algorithm>
#include <utility>

#include "livestate/core/detail/json_reader.hpp"

namespace livestate::mq::detail {

namespace action = listener_action;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

namespace {

// The channel as a quoted identifier (LISTEN takes no parameter).
std::string quoted_channel(const std::string& channel) {
  std::string quoted = "\"";
  for (const char c : channel) {
    quoted += c;
    if (c == '"') quoted += '"';
  }
  return quoted + "\"";
}

}  // namespace

ListenerSettings ListenerSettings::from(std::string name, const PostgresOptions& options) {
  ListenerSettings settings;
  settings.take(std::move(name), options);
  settings.forget_origins_after = duration_cast<milliseconds>(options.forget_origins_after);
  return settings;
}

ListenerMachine::ListenerMachine(ListenerSettings settings, Random random)
    : m_settings(std::move(settings)),
      m_random(std::move(random)),
      m_backoff(m_settings.reconnect_initial, m_settings.reconnect_max),
      m_sequences(m_settings.forget_origins_after) {}

// --- events -------------------------------------------------------------------

ListenerActions ListenerMachine::start(Clock::time_point) {
  if (m_phase == Phase::idle) connect();
  return finish();
}

ListenerActions ListenerMachine::connect_polled(Polled status, std::string_view error, Clock::time_point now) {
  if (m_phase != Phase::connecting || m_waits.connecting(status, m_actions)) return finish();
  if (status == Polled::failed) {
    lost("cannot connect: " + std::string(error), now);
    return finish();
  }
  m_phase = Phase::connected;
  cancel(ListenerTimer::connect_deadline);
  m_last_traffic = now;
  send_query(QueryKind::listen, "LISTEN " + quoted_channel(m_settings.channel), {});
  m_waits.wait_readable(m_actions);
  return finish();
}

ListenerActions ListenerMachine::socket_readable(Clock::time_point now) {
  if (m_waits.ready(true, m_phase == Phase::connecting, connection_open(), m_actions)) m_last_traffic = now;
  return finish();
}

ListenerActions ListenerMachine::socket_writable(Clock::time_point) {
  m_waits.ready(false, m_phase == Phase::connecting, connection_open(), m_actions);
  return finish();
}

ListenerActions ListenerMachine::query_result(QueryResult result, Clock::time_point now) {
  if (m_phase != Phase::connected && m_phase != Phase::listening) return finish();
  if (m_queries.empty() || !m_query_sent) return finish();
  const QueryKind kind = m_queries.front().kind;
  m_queries.pop_front();
  m_query_sent = false;
  switch (kind) {
    case QueryKind::listen:
      if (!result.ok) {
        lost("LISTEN refused: " + result.error, now);
      } else {
        on_listening(now);
      }
      break;
    case QueryKind::probe:
      m_probing = false;
      cancel(ListenerTimer::probe_deadline);
      arm(ListenerTimer::probe, m_settings.probe_interval);
      break;
    case QueryKind::fetch_body:
      body_fetched(result);
      release_ready();
      break;
  }
  if (connection_open() && !m_queries.empty() && !m_query_sent) send_front();
  return finish();
}

ListenerActions ListenerMachine::notification(std::string_view channel, std::string_view payload,
                                              Clock::time_point now) {
  if (connection_open() && channel == m_settings.channel) {
    decode(payload, now);
    release_ready();
  }
  return finish(false);  // delivered at input_read, with the rest of the same read
}

ListenerActions ListenerMachine::input_read(bool connection_ok, Clock::time_point now) {
  if (connection_open()) {
    if (connection_ok) {
      m_waits.wait_readable(m_actions);
    } else {
      lost("the server closed the connection", now);
    }
  }
  return finish();
}

ListenerActions ListenerMachine::output_pending(Clock::time_point) {
  if (connection_open()) m_waits.wait_writable(m_actions);
  return finish();
}

ListenerActions ListenerMachine::failed(std::string_view reason, Clock::time_point now) {
  if (connection_open()) lost(std::string(reason), now);
  return finish();
}

ListenerActions ListenerMachine::timer_fired(ListenerTimer timer, std::uint64_t token, Clock::time_point now) {
  if (!m_timers.fired(timer, token)) return finish();  // cancelled or armed again since
  switch (timer) {
    case ListenerTimer::connect_deadline:
      if (m_phase == Phase::connecting) lost("connecting timed out", now);
      break;
    case ListenerTimer::retry:
      if (m_phase == Phase::waiting) connect();
      break;
    case ListenerTimer::probe:
      if (m_phase == Phase::listening) probe(now);
      break;
    case ListenerTimer::probe_deadline:
      if (m_phase == Phase::listening && m_probing) {
        lost("no answer to a liveness probe within " + std::to_string(m_settings.probe_timeout.count()) + " ms", now);
      }
      break;
  }
  return finish();
}

ListenerActions ListenerMachine::stop() {
  if (m_phase == Phase::stopped) return finish();
  if (connection_open()) m_actions.emplace_back(action::Close{});
  m_phase = Phase::stopped;
  for (std::size_t i = 0; i < listener_timer_count; ++i) cancel(static_cast<ListenerTimer>(i));
  m_queries.clear();
  m_pending.clear();
  m_ready.clear();
  publish_status();
  return finish();
}

// --- the connection --------------------------------------------------------------

ListenerActions ListenerMachine::finish(bool deliver) {
  if (deliver && !m_ready.empty()) m_actions.emplace_back(action::Deliver{std::exchange(m_ready, {})});
  if (m_counters_changed) {
    m_actions.emplace_back(action::PublishCounters{m_counters});
    m_counters_changed = false;
  }
  return std::exchange(m_actions, {});
}

void ListenerMachine::connect() {
  m_phase = Phase::connecting;
  m_actions.emplace_back(action::Connect{});
  arm(ListenerTimer::connect_deadline, m_settings.connect_timeout);
}

void ListenerMachine::lost(const std::string& reason, Clock::time_point) {
  const bool was_listening = m_phase == Phase::listening;
  // The cause that broke a working connection is what consumers are told
  // about when it comes back; the failed retries after it don't replace it.
  if (was_listening || m_last_reconnect_reason.empty()) m_last_reconnect_reason = reason;
  log(was_listening ? LogLevel::warning : LogLevel::info, "listening connection to " + m_settings.name +
                                                              " lost: " + reason + "; reconnecting in " +
                                                              std::to_string(m_backoff.step().count()) + " ms");
  m_actions.emplace_back(action::Close{});
  m_phase = Phase::waiting;
  m_waits.reset();
  m_queries.clear();
  m_query_sent = false;
  m_probing = false;
  m_fetching = false;
  m_pending.clear();  // undelivered leftovers of a lost connection: the reconnected event covers them
  cancel(ListenerTimer::connect_deadline);
  cancel(ListenerTimer::probe);
  cancel(ListenerTimer::probe_deadline);
  arm(ListenerTimer::retry, m_backoff.next(m_random()));
  publish_status();
}

void ListenerMachine::on_listening(Clock::time_point now) {
  m_backoff.reset();
  m_phase = Phase::listening;
  m_listening_since = now;
  const bool reconnected = std::exchange(m_ever_listened, true);
  if (reconnected) {
    ++m_counters.reconnects;
    m_counters_changed = true;
    // Whatever was produced while we were away is lost to us: the sequences
    // we knew mean nothing any more, and every consumer must know.
    m_sequences.clear();
    count_origins();
    log(LogLevel::warning, "listening again on " + m_settings.name + " after: " + m_last_reconnect_reason);
    m_ready.emplace_back(
        ControlEvent{ControlKind::reconnected, "reconnected after: " + m_last_reconnect_reason, std::nullopt, 0});
  }
  publish_status();
  arm(ListenerTimer::probe, m_settings.probe_interval);
}

void ListenerMachine::send_query(QueryKind kind, std::string sql, std::vector<std::string> params) {
  m_queries.push_back({kind, std::move(sql), std::move(params)});
  if (!m_query_sent) send_front();
}

void ListenerMachine::send_front() {
  auto& query = m_queries.front();
  m_query_sent = true;
  m_actions.emplace_back(action::SendQuery{std::move(query.sql), std::move(query.params)});
}

void ListenerMachine::arm(ListenerTimer timer, Clock::duration after) {
  m_actions.emplace_back(action::ArmTimer{timer, after, m_timers.arm(timer)});
}

void ListenerMachine::cancel(ListenerTimer timer) {
  if (m_timers.cancel(timer)) m_actions.emplace_back(action::CancelTimer{timer});
}

// After probe_interval of silence, ask the server something; no answer within
// probe_timeout means a half-open connection.
void ListenerMachine::probe(Clock::time_point now) {
  if (m_probing) return;
  const auto idle = now - m_last_traffic;
  if (idle < m_settings.probe_interval) {
    arm(ListenerTimer::probe, m_settings.probe_interval - idle);
    return;
  }
  m_probing = true;
  arm(ListenerTimer::probe_deadline, m_settings.probe_timeout);
  send_query(QueryKind::probe, "SELECT 1", {});
}

void ListenerMachine::publish_status() {
  m_actions.emplace_back(action::PublishStatus{m_phase == Phase::listening, m_last_reconnect_reason});
}

void ListenerMachine::log(LogLevel level, std::string text) {
  m_actions.emplace_back(action::Log{level, std::move(text)});
}

// --- what arrives ------------------------------------------------------------------

void ListenerMachine::decode(std::string_view payload, Clock::time_point now) {
  wire::Decoded decoded = wire::decode(payload);
  ++m_counters.notifications;
  m_counters.malformed += decoded.problems.size();
  m_counters.received += decoded.messages.size();
  m_counters_changed = true;
  for (const auto& problem : decoded.problems) report_problem(problem, now);
  // A refused entry is a message missed: told at once, in sequence order
  // with the valid ones around it.
  auto& refused = decoded.refused_sequences;
  std::sort(refused.begin(), refused.end());
  auto next_refused = refused.begin();
  for (auto& message : decoded.messages) {
    if (decoded.origin && message.sequence) {
      for (; next_refused != refused.end() && *next_refused < *message.sequence; ++next_refused) {
        check_sequence(*decoded.origin, *next_refused, true, now);
      }
      check_sequence(*decoded.origin, *message.sequence, false, now);
    }
    m_pending.emplace_back(Received{decoded.origin, std::move(message)});
  }
  if (!decoded.origin) return;
  for (; next_refused != refused.end(); ++next_refused) check_sequence(*decoded.origin, *next_refused, true, now);
}

void ListenerMachine::report_problem(const wire::Problem& problem, Clock::time_point now) {
  if (auto line = m_malformed_log.line(problem, m_settings.channel, now)) log(LogLevel::warning, std::move(*line));
}

// A gap event goes where the missed messages would have been.
void ListenerMachine::check_sequence(const std::string& origin, std::uint64_t sequence, bool refused,
                                     Clock::time_point now) {
  const auto missed = m_sequences.arrived(origin, sequence, refused, m_listening_since, now);
  count_origins();
  if (missed.count == 0) return;
  ++m_counters.gaps;
  m_pending.emplace_back(ControlEvent{ControlKind::gap,
                                      std::to_string(missed.count) + " message(s) of origin " + origin +
                                          (missed.maybe_forgotten ? " unknown (not heard for a long time, or lost)"
                                           : refused              ? " missing (refused as malformed)"
                                                                  : " missing"),
                                      origin, missed.count});
}

void ListenerMachine::count_origins() {
  m_counters_changed = m_counters_changed || m_counters.origins != m_sequences.size();
  m_counters.origins = m_sequences.size();
}

// Moves decoded messages to delivery, in order; a body sent by reference is
// fetched first, and holds back everything after it.
void ListenerMachine::release_ready() {
  while (!m_pending.empty() && !m_fetching) {
    auto& front = m_pending.front();
    if (auto* received = std::get_if<Received>(&front)) {
      if (received->message.reference) {
        m_fetching = true;
        send_query(QueryKind::fetch_body, "SELECT body FROM livestate_mq_bodies WHERE id = $1",
                   {std::to_string(*received->message.reference)});
        return;
      }
      m_ready.emplace_back(Delivery{{std::move(received->message.key), std::move(received->message.body)},
                                    std::move(received->origin),
                                    received->message.sequence.value_or(0)});
    } else {
      m_ready.emplace_back(std::move(std::get<ControlEvent>(front)));
    }
    m_pending.pop_front();
  }
}

void ListenerMachine::body_fetched(const QueryResult& result) {
  m_fetching = false;
  if (m_pending.empty()) return;
  auto& message = std::get<Received>(m_pending.front()).message;
  const auto reference = message.reference.value_or(0);
  message.reference.reset();
  bool found = false;
  if (result.ok && result.value) {
    try {
      message.body = livestate::detail::parse_json(*result.value);
      // A foreign producer's row may nest deeper than a payload may: refused
      // like one, before any consumer walks it.
      found = !wire::nested_deeper_than(message.body);
    } catch (const Json::exception&) {
    }
  }
  ++(found ? m_counters.by_reference : m_counters.missing_references);
  m_counters_changed = true;
  if (found) return;
  // The message is lost: its consumers are told in its place, as for any gap.
  const auto& received = std::get<Received>(m_pending.front());
  const std::string what = message.key.str() + ": its body (livestate_mq_bodies row " + std::to_string(reference) +
                           ") is gone or unreadable";
  log(LogLevel::warning, "dropped " + what);
  ++m_counters.gaps;
  m_pending.front() = ControlEvent{ControlKind::gap, "1 message lost, " + what, received.origin, 1};
}

}  // namespace livestate::mq::detail
