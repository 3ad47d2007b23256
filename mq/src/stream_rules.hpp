#pragma once

// What both receiving connections of the PostgreSQL connector (the NOTIFY
// listener and the logical replication stream) decide alike, without I/O:
// the settings they share, which of their timers are armed, how long to wait
// before connecting again, and how often to log payloads refused as
// malformed.
//
// Thread safety: none; each belongs to one machine.

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "livestate/core/wire.hpp"
#include "livestate/mq/postgres.hpp"

namespace livestate::mq::detail {

/// What a receiving connection takes from PostgresOptions, either kind.
struct ReceiverSettings {
  std::string name;     ///< the server, for log lines (no password)
  std::string channel;  ///< the NOTIFY channel, or the logical messages' prefix
  std::chrono::milliseconds reconnect_initial{100};
  std::chrono::milliseconds reconnect_max{5000};
  std::chrono::milliseconds probe_interval{2000};
  std::chrono::milliseconds probe_timeout{3000};
  std::chrono::milliseconds connect_timeout{5000};

  /// Sets these from `options`, `name` for the server.
  void take(std::string server, const PostgresOptions& options) {
    name = std::move(server);
    channel = options.channel;
    reconnect_initial = options.reconnect_initial;
    reconnect_max = options.reconnect_max;
    probe_interval = options.probe_interval;
    probe_timeout = options.probe_timeout;
    connect_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(options.connect_timeout);
  }
};

/// Which of a machine's timers (an enum of `count` values) are armed, each by
/// a token of its own: a timer that fires after it was cancelled or armed
/// again carries an older token, and is ignored.
template <class Timer, std::size_t count>
class TimerTokens {
 public:
  /// Arms `timer` (again): the token its firing must bring.
  std::uint64_t arm(Timer timer) noexcept { return m_tokens[index(timer)] = ++m_last; }
  /// Whether it was armed (it is not any more).
  bool cancel(Timer timer) noexcept { return std::exchange(m_tokens[index(timer)], 0) != 0; }
  /// Whether a firing with `token` is the one awaited (then it is disarmed).
  bool fired(Timer timer, std::uint64_t token) noexcept {
    auto& armed = m_tokens[index(timer)];
    if (token == 0 || token != armed) return false;
    armed = 0;
    return true;
  }
  [[nodiscard]] bool armed(Timer timer) const noexcept { return m_tokens[index(timer)] != 0; }

 private:
  static std::size_t index(Timer timer) noexcept { return static_cast<std::size_t>(timer); }
  std::array<std::uint64_t, count> m_tokens{};  // 0: not armed
  std::uint64_t m_last = 0;
};

/// Exponential backoff with jitter: each delay is between half of the
/// current step and all of it, and the step doubles up to `max`.
class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max)
      : m_initial(initial), m_max(max), m_step(initial) {}

  /// The step the next delay is drawn from.
  [[nodiscard]] std::chrono::milliseconds step() const noexcept { return m_step; }
  /// The next delay, from a uniform 64-bit number; the step grows.
  std::chrono::milliseconds next(std::uint64_t random) noexcept {
    const auto low = static_cast<std::uint64_t>(m_step.count() / 2);
    const auto high = static_cast<std::uint64_t>(m_step.count());
    const auto delay = std::chrono::milliseconds(
        static_cast<std::chrono::milliseconds::rep>(low + random % (high - low + 1)));
    m_step = std::min(m_step * 2, m_max);
    return delay;
  }
  /// Straight to the longest step (a server that refuses for a reason that
  /// won't go away soon).
  void give_up_hurrying() noexcept { m_step = m_max; }
  void reset() noexcept { m_step = m_initial; }

 private:
  std::chrono::milliseconds m_initial;
  std::chrono::milliseconds m_max;
  std::chrono::milliseconds m_step;
};

/// One log line per kind of refused payload per minute, not one per payload.
class MalformedLog {
 public:
  using Clock = std::chrono::steady_clock;

  /// The line to log for `problem`, or nothing when one of its kind was
  /// logged less than a minute ago.
  std::optional<std::string> line(const wire::Problem& problem, const std::string& channel, Clock::time_point now) {
    auto& last = m_logged[problem.kind];
    if (last.time_since_epoch().count() != 0 && now - last < std::chrono::minutes(1)) return std::nullopt;
    last = now;
    return "dropped a malformed message on channel " + channel + " (" + std::string(wire::to_string(problem.kind)) +
           "): " + problem.detail + " (further ones of this kind are counted, logged at most once a minute)";
  }

 private:
  std::map<wire::ProblemKind, Clock::time_point> m_logged;
};

}  // namespace livestate::mq::detail
