#pragma once

// Each origin's sequence, as the listener hears it: what a gap is, and
// forgetting origins not heard from for a while, so that what is kept grows
// with the producers of the last while, not with every producer ever heard.
// Pure: time comes with each call. Not thread-safe: the listener's.

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

namespace livestate::mq::detail {

class OriginSequences {
 public:
  using Clock = std::chrono::steady_clock;

  /// `forget_after`: how long an origin may be silent before it is forgotten.
  explicit OriginSequences(Clock::duration forget_after) : m_forget_after(forget_after) {}

  struct Missed {
    std::uint64_t count = 0;       ///< messages missed before this one (and it too, when refused)
    bool maybe_forgotten = false;  ///< an unknown origin past its first message
  };

  /// Message `sequence` of `origin` arrived (`refused`: as malformed, so it is
  /// missed too). An unknown origin past its first message may be one
  /// forgotten, so what it sent meanwhile may be lost, unless the listener
  /// has not listened (since `listening_since`) long enough to know.
  Missed arrived(const std::string& origin, std::uint64_t sequence, bool refused, Clock::time_point listening_since,
                 Clock::time_point now);

  /// After a reconnection: what it knew means nothing any more.
  void clear() noexcept { m_next.clear(); }
  [[nodiscard]] std::size_t size() const noexcept { return m_next.size(); }

 private:
  void forget_silent(Clock::time_point now);

  struct Sequence {
    std::uint64_t next;  // the sequence expected next
    Clock::time_point heard;
  };
  const Clock::duration m_forget_after;
  std::map<std::string, Sequence> m_next;  // by origin
  Clock::time_point m_swept{};
};

}  // namespace livestate::mq::detail
