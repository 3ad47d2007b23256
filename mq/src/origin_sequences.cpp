#include "origin_sequences.hpp"

#include <algorithm>

namespace livestate::mq::detail {

OriginSequences::Missed OriginSequences::arrived(const std::string& origin, std::uint64_t sequence, bool refused,
                                                 Clock::time_point listening_since, Clock::time_point now) {
  forget_silent(now);
  auto [next, first] = m_next.try_emplace(origin, Sequence{sequence, now});
  Missed missed;
  missed.maybe_forgotten = first && sequence > 1 && now - listening_since > m_forget_after;
  if (missed.maybe_forgotten) {
    missed.count = sequence - 1;
  } else if (sequence > next->second.next) {
    missed.count = sequence - next->second.next;
  }
  if (refused && sequence >= next->second.next) ++missed.count;
  next->second.next = std::max(next->second.next, sequence + 1);
  next->second.heard = now;
  return missed;
}

// At most every tenth of m_forget_after: the silent origins go.
void OriginSequences::forget_silent(Clock::time_point now) {
  if (now - m_swept < m_forget_after / 10) return;
  m_swept = now;
  std::erase_if(m_next, [&](const auto& entry) { return now - entry.second.heard > m_forget_after; });
}

}  // namespace livestate::mq::detail
