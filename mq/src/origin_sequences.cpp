#include "origin_sequences.hpp"

#include <algorithm>

namespace livestate::mq::detail {

OriginSequences::Missed OriginSequences::arrived(const std::string& origin, std::uint64_t sequence, bool refused,
                                                 Clock::time_point listening_since, Clock::time_point now) {
  forget_silent(now);
  auto [next, first] = m_next.try_emplace(origin, Sequence{sequence, now});
  if (first) {
    // An origin forgotten while it was only quiet: known again, exactly.
    if (const auto archived = m_archive.find(origin); archived != m_archive.end()) {
      next->second.next = archived->second.first;
      m_archive.erase(archived);
      first = false;
    }
  }
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
  std::erase_if(m_next, [&](const auto& entry) {
    if (now - entry.second.heard <= m_forget_after) return false;
    archive(entry.first, entry.second.next);
    return true;
  });
}

void OriginSequences::archive(const std::string& origin, std::uint64_t next) {
  m_archive[origin] = {next, ++m_archived};
  m_archive_order.emplace_back(origin, m_archived);
  while (m_archive.size() > archive_limit && !m_archive_order.empty()) {
    const auto& [oldest, number] = m_archive_order.front();
    if (const auto found = m_archive.find(oldest); found != m_archive.end() && found->second.second == number) {
      m_archive.erase(found);
    }
    m_archive_order.pop_front();
  }
  // Copies left behind by origins that came back: trimmed once they outnumber the live ones.
  if (m_archive_order.size() > 2 * archive_limit) {
    std::erase_if(m_archive_order, [&](const auto& entry) {
      const auto found = m_archive.find(entry.first);
      return found == m_archive.end() || found->second.second != entry.second;
    });
  }
}

}  // namespace livestate::mq::detail
