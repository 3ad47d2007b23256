#pragma once

// The logical transport's replication connection, without I/O (sans-io, as
// the NOTIFY listener's machine): events in (what libpq and the socket said,
// a command's result, a CopyData message, a timer, what the consumer has
// delivered, stop), actions out (wait on the socket, send a command or
// CopyData, arm a timer, close, deliver, acknowledge, publish, log). The Asio
// driver beside it (logical_stream.hpp) does the I/O; tests drive it with
// events alone (tests/unit/logical_machine.cpp).
//
// What it decides: connecting on a `replication=database` connection;
// checking the server (PostgreSQL 14 or later, wal_level = logical) and
// making the publication pgoutput needs; the slot (a temporary one for a
// connector's live consumers, a permanent one per durable consumer: made
// when missing, made again after the server invalidated it, refused when
// another session has it); START_REPLICATION with pgoutput's `messages`
// option; reading the stream (transactions' logical messages on the
// connector's channel, in commit order, each with its commit position);
// answering keepalives, probing a silent server, acknowledging in batches
// with standby status updates; reconnecting with backoff and jitter.
//
// Protocol with the driver, as the listener's: after Connect or PollConnect
// report connect_polled(). After ReadInput report a command's result
// (command_result; a result in CopyBoth mode starts the stream), then each
// CopyData message (copy_data), then input_read(). Stop reading once
// paused() turns true (durable consumers' flow control), and start again at
// the ReadInput that resume() gives. After SendCommand, SendCopyData or Flush
// report output_pending() when libpq has more to send. Report failed() when
// an I/O call fails, timer_fired() with the token of the ArmTimer it answers.
//
// Thread safety: none; one driver, one strand.

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "delivery.hpp"
#include "listener_machine.hpp"
#include "replication_protocol.hpp"
#include "stream_rules.hpp"

namespace livestate::mq::detail {

/// The publication pgoutput is started with. It holds no table: logical
/// messages reach a pgoutput stream whatever its publications hold, but
/// pgoutput wants one that exists.
inline constexpr std::string_view logical_publication = "livestate_messages";

/// What keeps `server` (for messages) from carrying the logical transport,
/// from its server_version_num and wal_level as current_setting() gives
/// them: one line naming the setting, or nothing when it can.
[[nodiscard]] std::optional<std::string> logical_server_problem(std::string_view version_number,
                                                                std::string_view wal_level, const std::string& server);

struct StreamSettings : ReceiverSettings {
  /// The slot; a temporary one gets "_N" added for each connection.
  std::string slot;
  /// Live consumers: a temporary slot, gone with its session; what arrives is
  /// acknowledged once received. Durable: a permanent slot, acknowledged as
  /// the consumer delivers (delivered()).
  bool temporary = true;
  /// Durable: the slot was made before; finding it gone means its messages
  /// were lost (an `expired` event).
  bool slot_known = false;
  std::chrono::milliseconds statement_timeout{5000};
  /// CREATE_REPLICATION_SLOT waits until every transaction older than the
  /// slot has ended; this long at most.
  std::chrono::milliseconds slot_timeout{60000};
  /// Acknowledgements are sent at most this often.
  std::chrono::milliseconds ack_interval{200};

  [[nodiscard]] static StreamSettings from(std::string name, const PostgresOptions& options);
};

enum class StreamTimer { connect_deadline, command_deadline, retry, probe, probe_deadline, ack };
inline constexpr std::size_t stream_timer_count = 6;

/// A replication command's or a query's outcome.
struct CommandResult {
  enum class Status { ok, copy_both, failed };
  Status status = Status::failed;
  std::string sqlstate;  ///< when failed and the server said why
  std::string error;     ///< one line, when failed
  std::vector<std::vector<std::optional<std::string>>> rows;
};

/// Why the server refused to stream (also the first time, which a durable
/// consumer's start turns into an exception).
enum class Refusal {
  in_use,       ///< another session streams from the slot
  unsupported,  ///< the server can't: its version, wal_level, a privilege, no free slot
};

namespace stream_action {
using io_action::Close;
using io_action::Connect;
using io_action::Flush;
using io_action::Log;
using io_action::PollConnect;
using io_action::ReadInput;  ///< report the result or the CopyData messages, then input_read
using io_action::WaitReadable;
using io_action::WaitWritable;
using ArmTimer = io_action::ArmTimer<StreamTimer>;
using CancelTimer = io_action::CancelTimer<StreamTimer>;
struct SendCommand {
  std::string sql;  ///< simple query protocol: replication commands take no parameters
};
struct SendCopyData {
  std::string bytes;
};
/// Items in order: a whole transaction's at a time (so that one cut short by
/// a lost connection is never half delivered), or control events alone.
struct Deliver {
  std::vector<Item> items;
  /// Durable: the end of the transaction these items are; report
  /// delivered() with it once they have been (0: none).
  replication::Lsn end = 0;
};
struct PublishCounters {
  ListenerCounters counters;
};
struct PublishStatus {
  bool streaming;
  std::string last_reconnect_reason;
};
struct Refused {
  Refusal why;
  std::string text;               ///< one line, naming the setting or privilege
  std::optional<int> active_pid;  ///< in_use: the session that has the slot
};
}  // namespace stream_action

using StreamAction = std::variant<
    stream_action::Connect, stream_action::PollConnect, stream_action::WaitReadable, stream_action::WaitWritable,
    stream_action::ReadInput, stream_action::Flush, stream_action::SendCommand, stream_action::SendCopyData,
    stream_action::ArmTimer, stream_action::CancelTimer, stream_action::Close, stream_action::Deliver,
    stream_action::PublishCounters, stream_action::PublishStatus, stream_action::Refused, stream_action::Log>;
using StreamActions = std::vector<StreamAction>;

class LogicalMachine {
 public:
  using Random = std::function<std::uint64_t()>;
  using Polled = detail::Polled;

  LogicalMachine(StreamSettings settings, Random random);

  StreamActions start(Clock::time_point now);
  StreamActions connect_polled(Polled status, std::string_view error, Clock::time_point now);
  StreamActions socket_readable(Clock::time_point now);
  StreamActions socket_writable(Clock::time_point now);
  StreamActions command_result(CommandResult result, Clock::time_point now);
  StreamActions copy_data(std::string_view message, Clock::time_point now);
  StreamActions input_read(bool connection_ok, Clock::time_point now);
  StreamActions output_pending(Clock::time_point now);
  StreamActions failed(std::string_view reason, Clock::time_point now);
  StreamActions timer_fired(StreamTimer timer, std::uint64_t token, Clock::time_point now);
  /// Durable: the consumer has delivered every message up to `end` (a
  /// Deliver's).
  StreamActions delivered(replication::Lsn end, Clock::time_point now);
  /// Durable: the consumer's queue is full; stop reading until resume().
  StreamActions pause();
  StreamActions resume(Clock::time_point now);
  /// Sends the last acknowledgement, then closes.
  StreamActions stop(Clock::time_point now);

  [[nodiscard]] bool streaming() const noexcept { return m_phase == Phase::streaming; }
  [[nodiscard]] bool paused() const noexcept { return m_paused; }
  [[nodiscard]] const ListenerCounters& counters() const noexcept { return m_counters; }
  /// The position acknowledged to the server last (0: none yet).
  [[nodiscard]] replication::Lsn acknowledged() const noexcept { return m_sent_ack; }
  /// The slot of the current (or last) connection.
  [[nodiscard]] const std::string& slot() const noexcept { return m_slot; }

 private:
  enum class Phase { idle, connecting, setup, streaming, waiting, stopped };
  enum class Step { check, publication, slot_state, drop_slot, create_slot, start };

  [[nodiscard]] bool connection_open() const noexcept {
    return m_phase == Phase::connecting || m_phase == Phase::setup || m_phase == Phase::streaming;
  }
  StreamActions finish();
  void connect();
  void lost(const std::string& reason);
  void refuse(Refusal why, const std::string& text, std::optional<int> active_pid = std::nullopt);
  void command(Step step, std::string sql);
  void after_check(const CommandResult& result);
  void after_slot_state(const CommandResult& result);
  void create_slot();
  void start_streaming();
  void on_streaming(Clock::time_point now);
  void slot_gone(const std::string& why);
  void arm(StreamTimer timer, Clock::duration after);
  void cancel(StreamTimer timer);
  void record(const replication::XLogData& data, Clock::time_point now);
  void message(const replication::LogicalMessage& message, Clock::time_point now);
  void acknowledge(replication::Lsn position);
  void send_status(bool reply_requested);
  void flush_ready();
  void publish_status();
  void log(LogLevel level, std::string text);

  const StreamSettings m_settings;
  Random m_random;
  Phase m_phase = Phase::idle;
  Backoff m_backoff;
  std::uint64_t m_attempts = 0;
  std::string m_slot;
  bool m_slot_known;
  bool m_expired_pending = false;  // tell consumers once streaming
  Step m_step = Step::check;
  bool m_command_sent = false;

  StreamActions m_actions;
  bool m_counters_changed = false;
  ListenerCounters m_counters;
  std::string m_last_reconnect_reason;
  bool m_ever_streamed = false;
  TimerTokens<StreamTimer, stream_timer_count> m_timers;
  SocketWaits m_waits;
  bool m_paused = false;
  bool m_probing = false;
  Clock::time_point m_last_traffic{};
  // How long the server may take to answer a probe beyond probe_timeout:
  // wal_sender_timeout / 2 (see timer_fired).
  std::chrono::milliseconds m_server_keepalive{0};

  // The stream.
  bool m_in_transaction = false;
  replication::Lsn m_transaction_position = 0;
  replication::Lsn m_received_end = 0;   // the last transaction's end received
  replication::Lsn m_delivered_end = 0;  // durable: delivered up to
  // durable: a keepalive's position, to acknowledge once what had been
  // received before it is delivered
  replication::Lsn m_keepalive_end = 0;
  replication::Lsn m_keepalive_needs = 0;
  replication::Lsn m_ack = 0;       // to acknowledge
  replication::Lsn m_sent_ack = 0;  // acknowledged
  std::vector<Item> m_ready;
  MalformedLog m_malformed_log;
};

}  // namespace livestate::mq::detail
