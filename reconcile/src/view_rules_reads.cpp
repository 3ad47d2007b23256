// The view's rules for what its reads return (ViewRules, view_rules.hpp): a
// resync's snapshot, a batch of reloaded entries. A read may come from a copy
// that lags behind the messages (a replica), and its two queries (rows, then
// deletions) are not one snapshot: neither may roll the view back.

#include <algorithm>
#include <map>
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
  ++m_stats.full_resyncs;
  m_stats.resync_rows += database.size() + result.deletions.size();
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
      entry = remove(entry);
      ++m_stats.resync_repairs;
    } else {
      ++entry;
    }
  }
  // What waits for a read to catch up, and what the snapshot holds of it
  // (read now: the rows are moved into the view below).
  m_reloads.waiting(behind);
  std::map<std::string, std::int64_t> read_revisions;
  for (const auto& id : behind) read_revisions.emplace(id, snapshot_revision(id));
  for (auto& [id, row] : database) {
    const std::int64_t revision = revision_of(row).value_or(0);
    const auto entry = m_entries.find(id);
    if (entry != m_entries.end() && entry->second.revision >= revision) continue;
    if (!first) ++m_stats.resync_repairs;
    set(id, std::move(row), revision, now);
  }
  // What was due is covered, except where the snapshot lags behind what was
  // announced or what the view holds: those are retried (and stay stale, or
  // become so past the deadline); the others have caught up.
  m_reloads.clear_due();
  bool lags = false;
  for (const auto& id : behind) lags = !caught_up_with(id, read_revisions[id], now) || lags;
  if (!lags) m_verified_at = now;
  if (first) {
    m_loaded = true;
    auto buffered = std::move(m_buffer);
    m_buffer.clear();
    m_stats.messages += buffered.size();
    for (auto& message : buffered) apply(std::move(message), true, now);
  }
}

// What changed since the view's watermark, read after the view missed
// messages: the changed rows are taken as a resync takes them, the deleted
// entries go. An entry the read doesn't name has not changed since the view
// last read it, so it is as that read found it or newer (from messages).
// Reloads due for ids the read doesn't name stay due.
void ViewRules::repaired(ReadResult& result, Clock::time_point now) {
  learn_deletions(result.deletions, now);
  m_retry_backoff = std::chrono::milliseconds(50);
  ++m_stats.resyncs;
  m_stats.resync_rows += result.rows.size() + result.deletions.size();
  std::set<std::string> waiting;
  m_reloads.waiting(waiting);
  bool lags = false;
  const auto read = [&](const std::string& id, std::int64_t read_revision) {
    m_reloads.not_due(id);
    if (waiting.count(id) != 0) lags = !caught_up_with(id, read_revision, now) || lags;
  };
  for (const auto& [id, revision] : result.deletions) {
    const auto entry = m_entries.find(id);
    // Held newer, it was made again since the deletion was read.
    if (entry != m_entries.end() && entry->second.revision < revision) {
      remove(entry);
      ++m_stats.resync_repairs;
    }
    read(id, revision);
  }
  for (auto& [id, row] : result.rows) {
    const std::int64_t revision = revision_of(row).value_or(0);
    // At or below a known deletion, read before it committed: gone.
    if (revision <= gone_at(id)) continue;
    const auto entry = m_entries.find(id);
    // A lagging read, or a message the view applied since.
    const bool newer = entry == m_entries.end() || entry->second.revision < revision;
    if (newer) {
      // (A row of another narrowing that the view doesn't hold changes nothing.)
      if (entry != m_entries.end() || matches(row)) ++m_stats.resync_repairs;
      set(id, std::move(row), revision, now);
    }
    read(id, revision);
  }
  // Changed by messages since the last resync, through a copy that may lag,
  // and not named by this read: the copy hasn't got the change yet.
  for (const auto& id : m_touched) {
    if (result.rows.count(id) == 0 && result.deletions.count(id) == 0) {
      lags = !caught_up_with(id, 0, now) || lags;
    }
  }
  if (!lags && !m_reloads.any_due()) m_verified_at = now;
}

// `id` waited for a read to reach a revision (announced by a message, or
// held, through a copy that may lag): did this one, at `read_revision`? Else
// the read is retried (and the entry flagged stale past the deadline).
bool ViewRules::caught_up_with(const std::string& id, std::int64_t read_revision, Clock::time_point now) {
  if (m_reloads.required(id, held(id)) > std::max(read_revision, gone_at(id))) {
    lagging(id, now);
    return false;
  }
  m_reloads.caught_up(id);
  return true;
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
