#pragma once

// Each origin's sequence, as the listener hears it: what a gap is, and
// forgetting origins not heard from for a while, so that what is kept grows
// with the producers of the last while, not with every producer ever heard.
// A forgotten origin's next sequence stays in a bounded archive (the most
// recently forgotten ones), so that a producer that was only idle — a quiet
// master — comes back without a false gap. Pure: time comes with each call.
// Not thread-safe: the listener's.

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>

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
  void clear() noexcept {
    m_next.clear();
    m_archive.clear();
    m_archive_order.clear();
  }
  /// The origins heard from lately (the archive not counted).
  [[nodiscard]] std::size_t size() const noexcept { return m_next.size(); }

  /// How many forgotten origins' sequences are kept, at most.
  static constexpr std::size_t archive_limit = 4096;

 private:
  void forget_silent(Clock::time_point now);
  void archive(const std::string& origin, std::uint64_t next);

  struct Sequence {
    std::uint64_t next;  // the sequence expected next
    Clock::time_point heard;
  };
  const Clock::duration m_forget_after;
  std::map<std::string, Sequence> m_next;  // by origin
  Clock::time_point m_swept{};
  // Forgotten origins: the sequence expected next, and the archiving's
  // number, so that the order queue's stale copies are told apart.
  std::unordered_map<std::string, std::pair<std::uint64_t, std::uint64_t>> m_archive;
  std::deque<std::pair<std::string, std::uint64_t>> m_archive_order;  // oldest first
  std::uint64_t m_archived = 0;
};

}  // namespace livestate::mq::detail
