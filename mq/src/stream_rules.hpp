#pragma once

// What both receiving connections of the PostgreSQL connector (the NOTIFY
// listener and the logical replication stream) decide alike, without I/O:
// how long to wait before connecting again, and how often to log payloads
// refused as malformed.
//
// Thread safety: none; each belongs to one machine.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "livestate/core/wire.hpp"

namespace livestate::mq::detail {

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
