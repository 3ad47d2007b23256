#pragma once

// What the two sans-io machines of a receiving connection (the NOTIFY
// listener's, the logical stream's) ask of their drivers alike, and how they
// keep track of the socket: one wait at a time in each direction, and what a
// ready socket means while connecting (poll the connection) and after
// (read, or flush). The drivers perform these alike (pq_driver.hpp).

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

#include "livestate/core/log.hpp"

namespace livestate::mq::detail {

using Clock = std::chrono::steady_clock;

/// libpq's connection status after PQconnectPoll, with its message when failed.
enum class Polled { reading, writing, ok, failed };

namespace io_action {
struct Connect {};      ///< start a new connection; report connect_polled
struct PollConnect {};  ///< PQconnectPoll; report connect_polled
struct WaitReadable {};
struct WaitWritable {};
struct ReadInput {};  ///< consume input; report what came, then input_read
struct Flush {};      ///< flush output; report output_pending if some is left
struct Close {};      ///< close the connection and stop waiting on its socket
template <class Timer>
struct ArmTimer {
  Timer timer;
  Clock::duration after;
  std::uint64_t token;
};
template <class Timer>
struct CancelTimer {
  Timer timer;
};
struct Log {
  LogLevel level;
  std::string text;
};
}  // namespace io_action

/// The socket's waits, one at a time in each direction. Not thread-safe: its
/// machine's.
class SocketWaits {
 public:
  template <class Actions>
  void wait_readable(Actions& actions) {
    if (!std::exchange(m_readable, true)) actions.emplace_back(io_action::WaitReadable{});
  }
  template <class Actions>
  void wait_writable(Actions& actions) {
    if (!std::exchange(m_writable, true)) actions.emplace_back(io_action::WaitWritable{});
  }
  /// While connecting, libpq says which way to wait; true when it said one.
  template <class Actions>
  bool connecting(Polled status, Actions& actions) {
    if (status == Polled::reading) wait_readable(actions);
    if (status == Polled::writing) wait_writable(actions);
    return status == Polled::reading || status == Polled::writing;
  }
  /// The socket is ready: while connecting, poll the connection; on an open
  /// one, read (`readable`) or flush. True when it reads.
  template <class Actions>
  bool ready(bool readable, bool connecting, bool open, Actions& actions) {
    (readable ? m_readable : m_writable) = false;
    if (connecting) {
      actions.emplace_back(io_action::PollConnect{});
    } else if (open && readable) {
      actions.emplace_back(io_action::ReadInput{});
      return true;
    } else if (open) {
      actions.emplace_back(io_action::Flush{});
    }
    return false;
  }
  /// The connection is gone: no wait stands.
  void reset() noexcept { m_readable = m_writable = false; }

 private:
  bool m_readable = false;
  bool m_writable = false;
};

}  // namespace livestate::mq::detail
