#pragma once

// The listening connection's logic, without I/O (sans-io, as Boost.MySQL
// keeps its protocol algorithms): events in (what libpq and the socket said,
// a query's result, a notification, a timer, stop), actions out (wait on the
// socket, send a query, arm a timer, close, deliver, publish stats, log). The
// Asio driver beside it (listener.hpp) does the I/O; tests drive it with
// events alone (tests/unit/listener_machine.cpp).
//
// What it decides: connecting, LISTEN, reconnecting with exponential backoff
// and jitter; the liveness probe; gap events from each origin's sequence
// (kept by OriginSequences, which forgets silent origins); fetching bodies
// sent by reference, in order
// (a reference holds back what comes after it); rate-limited logging of
// malformed payloads.
//
// Protocol with the driver: after Connect or PollConnect, report
// connect_polled(). After ReadInput, report each finished query's result
// (query_result), then each notification (notification), then input_read().
// After SendQuery or Flush, report output_pending() when libpq has more to
// send. Report failed() when an I/O call fails. Report timer_fired() with the
// token of the ArmTimer it answers. One query runs at a time: the machine
// sends the next only after the last one's result.
//
// Thread safety: none; one driver, one strand.

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "delivery.hpp"
#include "io_actions.hpp"
#include "livestate/core/log.hpp"
#include "livestate/core/wire.hpp"
#include "livestate/mq/postgres.hpp"
#include "origin_sequences.hpp"
#include "stream_rules.hpp"

namespace livestate::mq::detail {

struct ListenerSettings : ReceiverSettings {
  std::chrono::milliseconds forget_origins_after{600000};

  [[nodiscard]] static ListenerSettings from(std::string name, const PostgresOptions& options);
};

/// The listener's share of PostgresStats.
struct ListenerCounters {
  std::uint64_t notifications = 0;
  std::uint64_t received = 0;
  std::uint64_t malformed = 0;
  std::uint64_t by_reference = 0;
  std::uint64_t missing_references = 0;
  std::uint64_t gaps = 0;
  std::uint64_t origins = 0;
  std::uint64_t reconnects = 0;
};

enum class ListenerTimer { connect_deadline, retry, probe, probe_deadline };
inline constexpr std::size_t listener_timer_count = 4;

/// The first column of the first row, when the query returned a row.
struct QueryResult {
  bool ok = false;
  std::string error;  ///< one line, when not ok
  std::optional<std::string> value;
};

namespace listener_action {
using io_action::Close;
using io_action::Connect;
using io_action::Flush;
using io_action::Log;
using io_action::PollConnect;
using io_action::ReadInput;
using io_action::WaitReadable;
using io_action::WaitWritable;
using ArmTimer = io_action::ArmTimer<ListenerTimer>;
using CancelTimer = io_action::CancelTimer<ListenerTimer>;
struct SendQuery {
  std::string sql;
  std::vector<std::string> params;
};
struct Deliver {
  std::vector<Item> items;
};
struct PublishCounters {
  ListenerCounters counters;
};
struct PublishStatus {
  bool listening;
  std::string last_reconnect_reason;
};
}  // namespace listener_action

using ListenerAction = std::variant<
    listener_action::Connect, listener_action::PollConnect, listener_action::WaitReadable,
    listener_action::WaitWritable, listener_action::ReadInput, listener_action::Flush, listener_action::SendQuery,
    listener_action::ArmTimer, listener_action::CancelTimer, listener_action::Close, listener_action::Deliver,
    listener_action::PublishCounters, listener_action::PublishStatus, listener_action::Log>;
using ListenerActions = std::vector<ListenerAction>;

class ListenerMachine {
 public:
  /// Uniform 64-bit numbers, for the reconnection jitter.
  using Random = std::function<std::uint64_t()>;
  using Polled = detail::Polled;

  ListenerMachine(ListenerSettings settings, Random random);

  ListenerActions start(Clock::time_point now);
  /// libpq's connection status, with its message when failed.
  ListenerActions connect_polled(Polled status, std::string_view error, Clock::time_point now);
  ListenerActions socket_readable(Clock::time_point now);
  ListenerActions socket_writable(Clock::time_point now);
  ListenerActions query_result(QueryResult result, Clock::time_point now);
  ListenerActions notification(std::string_view channel, std::string_view payload, Clock::time_point now);
  /// After the results and notifications of one ReadInput; `connection_ok`:
  /// libpq still has a working connection.
  ListenerActions input_read(bool connection_ok, Clock::time_point now);
  ListenerActions output_pending(Clock::time_point now);
  ListenerActions failed(std::string_view reason, Clock::time_point now);
  ListenerActions timer_fired(ListenerTimer timer, std::uint64_t token, Clock::time_point now);
  ListenerActions stop();

  [[nodiscard]] bool listening() const noexcept { return m_phase == Phase::listening; }
  [[nodiscard]] const ListenerCounters& counters() const noexcept { return m_counters; }
  /// The next reconnection's backoff step (the delay is half of it to all of it).
  [[nodiscard]] std::chrono::milliseconds backoff() const noexcept { return m_backoff.step(); }

 private:
  enum class Phase { idle, connecting, connected, listening, waiting, stopped };
  enum class QueryKind { listen, probe, fetch_body };
  struct Query {
    QueryKind kind;
    std::string sql;
    std::vector<std::string> params;
  };
  struct Received {
    std::optional<std::string> origin;
    wire::Incoming message;
  };

  [[nodiscard]] bool connection_open() const noexcept {
    return m_phase == Phase::connecting || m_phase == Phase::connected || m_phase == Phase::listening;
  }
  ListenerActions finish(bool deliver = true);
  void connect();
  void lost(const std::string& reason, Clock::time_point now);
  void on_listening(Clock::time_point now);
  void send_query(QueryKind kind, std::string sql, std::vector<std::string> params);
  void send_front();
  void arm(ListenerTimer timer, Clock::duration after);
  void cancel(ListenerTimer timer);
  void probe(Clock::time_point now);
  void decode(std::string_view payload, Clock::time_point now);
  void report_problem(const wire::Problem& problem, Clock::time_point now);
  // `refused`: the message was refused as malformed, so it is missed too.
  void check_sequence(const std::string& origin, std::uint64_t sequence, bool refused, Clock::time_point now);
  void count_origins();
  void release_ready();
  void body_fetched(const QueryResult& result);
  void publish_status();
  void log(LogLevel level, std::string text);

  const ListenerSettings m_settings;
  Random m_random;
  Phase m_phase = Phase::idle;
  Backoff m_backoff;

  ListenerActions m_actions;  // the current event's
  bool m_counters_changed = false;
  ListenerCounters m_counters;
  std::string m_last_reconnect_reason;
  bool m_ever_listened = false;

  TimerTokens<ListenerTimer, listener_timer_count> m_timers;
  SocketWaits m_waits;

  std::deque<Query> m_queries;
  bool m_query_sent = false;  // the front of m_queries is with the server
  bool m_probing = false;
  bool m_fetching = false;
  Clock::time_point m_last_traffic{};

  std::deque<std::variant<Received, ControlEvent>> m_pending;  // behind a body being fetched
  std::vector<Item> m_ready;                                   // to deliver at the end of the event
  OriginSequences m_sequences;
  Clock::time_point m_listening_since{};
  MalformedLog m_malformed_log;
};

}  // namespace livestate::mq::detail
