// The view's rules for what its reads return (ViewRules, view_rules.hpp): a
// resync's snapshot, a batch of reloaded entries. A read may come from a copy
// that lags behind the messages (a replica), and its two queries (rows, then
// deletions) are not one snapshot: neither may roll the view back.

#include <algorithm>
#include <set>

#include "view_rules.hpp"

namespace livestate::reconcile::detail {

// Everything read again: rows the view lacks are added, vanished ones
// removed, newer ones taken; the view's own newer entries are kept (a
// lagging read).
void ViewRules::resynced(ReadResult& result, Clock::time_point now) {
  learn_deletions(result.deletions, now);
  m_retry_backoff = std::chrono::milliseconds(50);
  auto& database = result.rows;
  ++m_stats.resyncs;
  // A row at or below a known deletion's revision was read before the
  // deletion committed (the two reads are not one snapshot): it is gone.
  std::erase_if(database, [&](const auto& row) { return revision_of(row.second).value_or(0) <= gone_at(row.first); });
  const auto snapshot_revision = [&](const std::string& id) -> std::int64_t {
    const auto row = database.find(id);
    return row != database.end() ? revision_of(row->second).value_or(0) : 0;
  };
  const bool first = !m_loaded;
  // Entries the snapshot is older than (a lagging replica): kept as they are.
  std::set<std::string> behind;
  for (auto entry = m_entries.begin(); entry != m_entries.end();) {
    const auto& id = entry->first;
    if (m_reloads.required(id, entry->second.revision) > std::max(snapshot_revision(id), gone_at(id))) {
      behind.insert(id);
      ++entry;
    } else if (database.count(id) == 0) {
      departed(id, entry->second.revision, now);
      remove(entry++);
      ++m_stats.resync_repairs;
    } else {
      ++entry;
    }
  }
  for (const auto& [id, row] : database) {
    const std::int64_t revision = revision_of(row).value_or(0);
    const auto entry = m_entries.find(id);
    if (entry != m_entries.end() && entry->second.revision >= revision) continue;
    if (!first) ++m_stats.resync_repairs;
    set(id, row, revision, now);
  }
  // What was due is covered, except where the snapshot lags behind what was
  // announced or what the view holds: those are retried (and stay stale, or
  // become so past the deadline); the others have caught up.
  m_reloads.clear_due();
  m_reloads.waiting(behind);
  bool lags = false;
  for (const auto& id : behind) {
    if (m_reloads.required(id, held(id)) > std::max(snapshot_revision(id), gone_at(id))) {
      lagging(id, now);
      lags = true;
    } else {
      m_reloads.caught_up(id);
    }
  }
  if (!lags) m_verified_at = now;
  if (first) {
    m_loaded = true;
    auto buffered = std::move(m_buffer);
    m_buffer.clear();
    m_stats.messages += buffered.size();
    for (auto& message : buffered) apply(std::move(message), true, now);
  }
}

void ViewRules::reloaded(const std::vector<std::string>& ids, ReadResult& result, Clock::time_point now) {
  ++m_stats.reload_queries;
  m_stats.entries_reloaded += ids.size();
  // Those deleted: their tombstones keep late messages about them out.
  learn_deletions(result.deletions, now);
  for (const auto& id : ids) {
    const auto row = result.rows.find(id);
    take_reloaded(id, row == result.rows.end() ? nullptr : &row->second, now);
  }
}

// A reloaded row (nullptr: none): applied when newer than the entry (set()
// drops it when it no longer matches the narrowing); retried when older than
// what the read had to reach (a lagging replica), and then never taken as a
// deletion nor in place of a newer entry.
void ViewRules::take_reloaded(const std::string& id, Json* row, Clock::time_point now) {
  const std::int64_t known_gone = gone_at(id);
  if (row != nullptr && revision_of(*row).value_or(0) <= known_gone) row = nullptr;  // deleted since
  const std::int64_t revision = row != nullptr ? revision_of(*row).value_or(0) : 0;
  if (m_reloads.required(id, held(id)) > std::max(revision, known_gone)) {
    lagging(id, now);
    if (row == nullptr) return;
  } else {
    m_reloads.caught_up(id);
  }
  const auto entry = m_entries.find(id);
  if (row == nullptr) {
    if (entry == m_entries.end()) return;
    remove(entry);
    ++m_stats.applied;
    return;
  }
  if (entry != m_entries.end() && entry->second.revision >= revision) return;
  set(id, std::move(*row), revision, now);
}

}  // namespace livestate::reconcile::detail
