#pragma once

// Ids a live view remembers with a revision for a while only: those that left
// a narrowed view, those deleted. One record per id (its highest revision and
// when that was noted) and one queue entry per record, so that the memory is
// as large as the ids noted recently, however long the view lives.
//
// Not thread-safe: a view uses it on its strand.

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <string>

namespace livestate::reconcile::detail {

class ExpiringRevisions {
 public:
  using Clock = std::chrono::steady_clock;

  /// Notes `id` at `revision` (a positive one) at `now`; a record keeps its
  /// highest revision, and is kept from when that was noted. True when the
  /// revision was new (higher than the one remembered).
  bool note(const std::string& id, std::int64_t revision, Clock::time_point now) {
    const auto [record, first] = m_records.try_emplace(id, Record{revision, now});
    if (first) {
      m_queue.push_back({now, record});
      return true;
    }
    if (revision <= record->second.revision) return false;
    record->second = {revision, now};  // its queue entry will see the new time
    return true;
  }

  /// The remembered revision of `id`, 0 when none.
  [[nodiscard]] std::int64_t revision(const std::string& id) const {
    const auto record = m_records.find(id);
    return record != m_records.end() ? record->second.revision : 0;
  }

  /// `id`'s revision no longer counts (the record expires on its own).
  void clear(const std::string& id) {
    if (const auto record = m_records.find(id); record != m_records.end()) record->second.revision = 0;
  }

  /// Forgets the records not noted again since `horizon`.
  void forget_before(Clock::time_point horizon) {
    while (!m_queue.empty() && m_queue.front().queued_at <= horizon) {
      const auto record = m_queue.front().record;
      m_queue.pop_front();
      if (record->second.at <= horizon) {
        m_records.erase(record);
      } else {
        m_queue.push_back({record->second.at, record});  // noted again since
      }
    }
  }

  [[nodiscard]] std::size_t size() const noexcept { return m_records.size(); }

 private:
  struct Record {
    std::int64_t revision = 0;  // 0: cleared
    Clock::time_point at;
  };
  using Records = std::map<std::string, Record>;
  struct Queued {
    Clock::time_point queued_at;
    Records::iterator record;
  };

  Records m_records;
  std::deque<Queued> m_queue;  // by queued_at
};

}  // namespace livestate::reconcile::detail
