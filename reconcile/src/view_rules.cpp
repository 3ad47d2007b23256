#include "view_rules.hpp"

#include <algorithm>
#include <set>
#include <stdexcept>
#include <utility>

#include "livestate/core/routing_key.hpp"

namespace livestate::reconcile {

const char* to_string(Anomaly anomaly) noexcept {
  switch (anomaly) {
    case Anomaly::stale_or_duplicate: return "stale or duplicate";
    case Anomaly::lifecycle_violation: return "lifecycle violation";
    case Anomaly::unknown_entry: return "unknown entry";
    case Anomaly::unknown_event: return "unknown event";
    case Anomaly::no_revision: return "no revision";
    case Anomaly::stream_gap: return "stream gap";
    case Anomaly::transport_reset: return "transport reset";
    case Anomaly::schema_migrated: return "schema migrated";
    case Anomaly::stale_read: return "stale read";
  }
  return "unknown";
}

namespace detail {

std::optional<std::int64_t> revision_of(const Json& body) {
  if (!body.is_object()) return std::nullopt;
  const auto found = body.find("_rev");
  if (found == body.end() || !found->is_number_integer()) return std::nullopt;
  return found->get<std::int64_t>();
}

namespace {

const ViewOptions& checked(const ViewOptions& options) {
  if (options.type.empty()) throw std::invalid_argument("LiveView: the options name no type");
  (void)RoutingKey({options.type});  // InvalidRoutingKey for a type that can't be a key element
  if (!options.where.is_object()) throw std::invalid_argument("LiveView: `where` must be a JSON object");
  if (options.reload_batch == 0) throw std::invalid_argument("LiveView: reload_batch must be positive");
  if (options.max_queued == 0) throw std::invalid_argument("LiveView: max_queued must be positive");
  // Bounded so that twice a window, and now minus one, can't overflow.
  constexpr std::chrono::milliseconds longest_window = std::chrono::hours(24 * 366);
  for (const auto& [name, window] : {std::pair{"forget_departed_after", options.forget_departed_after},
                                     std::pair{"forget_deleted_after", options.forget_deleted_after}}) {
    if (window < std::chrono::milliseconds(0) || window > longest_window) {
      throw std::invalid_argument(std::string("LiveView: ") + name + " must be between 0 and 366 days");
    }
  }
  return options;
}

}  // namespace

ViewRules::ViewRules(const ViewOptions& options, bool reload_may_lag, Clock::time_point now)
    : m_type(checked(options).type),
      m_where(options.where),
      m_lifecycle(options.lifecycle_rules ? Lifecycle::of(options.type) : Lifecycle::none()),
      m_resync_every(options.resync_every),
      m_forget_departed_after(options.forget_departed_after),
      m_forget_deleted_after(options.forget_deleted_after),
      m_max_queued(options.max_queued),
      m_reloads_may_lag(reload_may_lag),
      m_revisionless_hints(options.revisionless_messages_are_hints),
      m_verified_at(now),
      m_reloads({options.type, reload_may_lag, options.lag_retry_initial, options.lag_deadline, options.reload_batch}) {
}

// --- what happens ------------------------------------------------------------

void ViewRules::start(Clock::time_point now) {
  request_resync();
  if (m_resync_every.count() > 0) m_actions.timers.push_back({Timer::Kind::periodic_resync, now + m_resync_every});
}

void ViewRules::receive(Inbound inbound, Clock::time_point now) {
  if (auto* message = std::get_if<Incoming>(&inbound)) {
    on_message(std::move(*message), now);
  } else if (const auto* event = std::get_if<mq::ControlEvent>(&inbound)) {
    distrust_everything(event->kind == mq::ControlKind::gap ? Anomaly::stream_gap : Anomaly::transport_reset);
  } else {
    // The rows may read differently now, changed or not.
    m_full_due = true;
    distrust_everything(Anomaly::schema_migrated);
  }
}

void ViewRules::inbox_overflowed() { distrust_everything(Anomaly::transport_reset); }

void ViewRules::resync_requested() { request_resync(); }

void ViewRules::timer_fired(const Timer& timer, Clock::time_point now) {
  switch (timer.kind) {
    case Timer::Kind::resync_retry:
      m_resync_retry_armed = false;
      request_resync();
      return;
    case Timer::Kind::periodic_resync:
      // It repairs what no detector sees, also changes that no watermark
      // finds (made around the store): it reads everything.
      m_full_due = true;
      request_resync();
      m_actions.timers.push_back({Timer::Kind::periodic_resync, now + m_resync_every});
      return;
    case Timer::Kind::lag_retry:
      if (const auto next = m_reloads.retry_timer_fired(timer.at, now)) {
        m_actions.timers.push_back({Timer::Kind::lag_retry, *next});
      }
      if (m_reloads.any_due()) want_read();
      return;
  }
}

std::optional<Read> ViewRules::next_read(Clock::time_point now) {
  m_read_asked = false;
  if (m_resync_due) {
    // A resync covers the due reloads, and every reason to resync given
    // until it starts.
    m_resync_due = false;
    forget_old_records(now);
    Read read;
    read.kind = Read::Kind::snapshot;
    read.where = m_where;
    // A message older than the snapshot about an entry deleted before it
    // must not bring the entry back: the deletions' revisions keep it out.
    // Only the recent deletions matter (those whose late messages may still
    // come); twice the window allows for the clocks of other hosts.
    read.deletions_within = 2 * m_forget_deleted_after;
    if (!std::exchange(m_full_due, false)) read.since = m_watermark;
    return read;
  }
  if (!m_reloads.any_due()) return std::nullopt;
  Read read;
  read.kind = Read::Kind::reload;
  // Not narrowed: a row that left the narrowing is told from one that a
  // lagging copy lacks by its revision (take_reloaded()).
  read.ids = m_reloads.take_batch();
  read.must_reach.reserve(read.ids->size());
  for (const auto& id : *read.ids) read.must_reach.push_back(m_reloads.required(id, held(id)));
  return read;
}

void ViewRules::read_done(const Read& read, ReadResult result, Clock::time_point now) {
  if (read.kind == Read::Kind::snapshot) {
    if (result.full) {
      resynced(result, now);
    } else {
      repaired(result, now);
    }
    m_touched.clear();
    m_watermark = std::move(result.watermark);
  } else {
    reloaded(*read.ids, result, now);
  }
  if (m_resync_due || m_reloads.any_due()) want_read();
}

void ViewRules::read_failed(const Read& read, bool retry, Clock::time_point now) {
  // Nothing is lost: the resync retried later covers the ids (and reads
  // everything, when this one was to).
  if (read.ids) m_reloads.put_back(*read.ids);
  if (read.kind == Read::Kind::snapshot && !read.since) m_full_due = true;
  if (retry) retry_resync_later(now);
}

void ViewRules::take_actions(Actions& into) {
  into.changes.clear();
  into.timers.clear();
  std::swap(into.changes, m_actions.changes);
  std::swap(into.timers, m_actions.timers);
  into.read = std::exchange(m_actions.read, false);
}

// --- messages ----------------------------------------------------------------

void ViewRules::on_message(Incoming message, Clock::time_point now) {
  if (message.key.size() != 3) return;
  forget_old_records(now);
  if (!m_loaded) {
    // Before the first load (which may be failing and retried): bounded as
    // the inbox is; the load, read after these arrived, covers them.
    if (m_buffer.size() >= m_max_queued) {
      ++m_stats.queue_overflows;
      m_stats.messages_discarded += m_buffer.size() + 1;
      m_buffer.clear();
      count(Anomaly::transport_reset);
      return;
    }
    m_buffer.push_back(std::move(message));
    return;
  }
  ++m_stats.messages;
  apply(std::move(message), false, now);
  if (m_reloads.any_due()) want_read();
}

void ViewRules::distrust_everything(Anomaly why) {
  count(why);
  request_resync();
}

void ViewRules::request_resync() {
  m_resync_due = true;
  want_read();
}

void ViewRules::want_read() {
  // Asked once: the driver runs it after what already waits on the strand
  // (often the rest of a burst), whose reloads join its batch.
  if (std::exchange(m_read_asked, true)) return;
  m_actions.read = true;
}

void ViewRules::retry_resync_later(Clock::time_point now) {
  if (std::exchange(m_resync_retry_armed, true)) return;
  m_retry_backoff = std::min(m_retry_backoff * 2, std::chrono::milliseconds(2000));
  m_actions.timers.push_back({Timer::Kind::resync_retry, now + m_retry_backoff});
}

// Applies one message; `replaying` for those buffered during the first load,
// which are expected to be older than the snapshot and so are not anomalies.
void ViewRules::apply(Incoming message, bool replaying, Clock::time_point now) {
  const std::string& id = message.key[1];
  const std::string& event = message.key[2];
  const auto revision = revision_of(message.body);
  if (!revision) {
    if (m_revisionless_hints) {
      ++m_stats.hints;  // Buildbot's messages: a reason to reload, not a fault
    } else {
      count(Anomaly::no_revision);
    }
    m_reloads.due(id);
    return;
  }
  if (m_lifecycle.deletes(event)) {
    apply_deletion(id, *revision, replaying, now);
    return;
  }
  // About an entry deleted, or gone from a narrowed view, since: late.
  if (*revision <= gone_at(id)) {
    if (!replaying) count(Anomaly::stale_or_duplicate);
    return;
  }
  const auto found = m_entries.find(id);
  if (found != m_entries.end()) {
    if (*revision <= found->second.revision) {
      if (!replaying) count(Anomaly::stale_or_duplicate);
      return;
    }
    const auto verdict = m_lifecycle.check(found->second.state, event);
    if (verdict != EventVerdict::allowed) {
      count(verdict == EventVerdict::unknown ? Anomaly::unknown_event : Anomaly::lifecycle_violation);
      m_reloads.due(id, *revision);
      return;
    }
  } else if (!matches(message.body)) {
    // Not the view's (another builder's request, or one that left it):
    // nothing to do but remember, so that an older message doesn't bring it in.
    departed(id, *revision, now);
    return;
  } else if (!m_lifecycle.creates(event)) {
    // Is it an event this type has at all?
    const auto verdict = m_lifecycle.check(Lifecycle::State{}, event);
    count(verdict == EventVerdict::unknown ? Anomaly::unknown_event : Anomaly::unknown_entry);
    m_reloads.due(id, *revision);
    return;
  }
  set(id, std::move(message.body), *revision, now);
  touched(id);
  m_reloads.confirmed(id, *revision);
}

void ViewRules::apply_deletion(const std::string& id, std::int64_t revision, bool replaying, Clock::time_point now) {
  const bool known = !m_tombstones.note(id, revision, now);
  const auto found = m_entries.find(id);
  // The entry goes if it is older than the deletion, even when a resync
  // already knew of the deletion (its snapshot raced with it).
  if (found != m_entries.end() && found->second.revision < revision) {
    remove(found);
    ++m_stats.applied;
    touched(id);
    m_reloads.confirmed(id, revision);
    return;
  }
  if ((known || found != m_entries.end()) && !replaying) count(Anomaly::stale_or_duplicate);
}

// A message changed `id` since the last resync. Through a copy that may lag,
// a resync by what changed must name it (the copy has the change since): if
// it doesn't, the copy lags, and the entry is retried as a reload would be.
// At most max_queued are remembered: past that, the next resync reads
// everything.
void ViewRules::touched(const std::string& id) {
  if (!m_reloads_may_lag || m_full_due) return;
  if (m_touched.size() >= m_max_queued) {
    m_full_due = true;
    m_touched.clear();
    return;
  }
  m_touched.insert(id);
}

bool ViewRules::matches(const Json& body) const {
  for (const auto& [field, value] : m_where.items()) {
    const auto found = body.find(field);
    if (found == body.end() || *found != value) return false;
  }
  return true;
}

// The entry becomes `body` (at `revision`): added, changed, or removed when
// it no longer matches the narrowing.
void ViewRules::set(const std::string& id, Json body, std::int64_t revision, Clock::time_point now) {
  const auto found = m_entries.find(id);
  if (!matches(body)) {
    departed(id, revision, now);
    if (found == m_entries.end()) return;
    remove(found);
    ++m_stats.applied;
    return;
  }
  // Back in the view: its departure no longer counts (the record expires on
  // its own).
  m_departed.clear(id);
  Json before;
  const bool added = m_entries.set(id, body, revision, m_lifecycle.state_of(body), m_announce ? &before : nullptr);
  if (m_announce) {
    m_actions.changes.push_back(
        {added ? ChangeKind::added : ChangeKind::changed, id, std::move(before), std::move(body)});
  }
  ++m_stats.applied;
}

EntryTable::iterator ViewRules::remove(EntryTable::iterator entry) {
  if (!m_announce) return m_entries.erase(entry, nullptr);
  Change change{ChangeKind::removed, entry->first, nullptr, nullptr};
  const auto next = m_entries.erase(entry, &change.before);
  m_actions.changes.push_back(std::move(change));
  return next;
}

// --- what the view knows of entries it doesn't hold --------------------------

// The revision at or below which a message about `id` is late: it was
// deleted, or left this narrowed view, at that revision (0: neither known).
std::int64_t ViewRules::gone_at(const std::string& id) const {
  return std::max(m_tombstones.revision(id), m_departed.revision(id));
}

// The entry's revision (0: the view lacks it).
std::int64_t ViewRules::held(const std::string& id) const {
  const auto entry = m_entries.find(id);
  return entry != m_entries.end() ? entry->second.revision : 0;
}

// `id` does not match the narrowing at `revision`.
void ViewRules::departed(const std::string& id, std::int64_t revision, Clock::time_point now) {
  if (m_where.empty() || revision <= 0) return;
  m_departed.note(id, revision, now);
}

void ViewRules::learn_deletions(const std::map<std::string, std::int64_t>& deletions, Clock::time_point now) {
  for (const auto& [id, revision] : deletions) m_tombstones.note(id, revision, now);
}

// Departures older than forget_departed_after and deletions older than
// forget_deleted_after are forgotten: the memory is as large as the recent
// ones, however long the view lives.
void ViewRules::forget_old_records(Clock::time_point now) {
  m_departed.forget_before(now - m_forget_departed_after);
  m_tombstones.forget_before(now - m_forget_deleted_after);
}

void ViewRules::lagging(const std::string& id, Clock::time_point now) {
  count(Anomaly::stale_read);
  if (const auto at = m_reloads.lagging(id, now)) m_actions.timers.push_back({Timer::Kind::lag_retry, *at});
}

// --- what the view holds -----------------------------------------------------

ViewStats ViewRules::stats(Clock::time_point now) const {
  ViewStats stats = m_stats;
  stats.stale_entries = m_reloads.stale();
  stats.remembered_ids = m_departed.size() + m_tombstones.size() + m_reloads.remembered();
  stats.since_verified = std::chrono::duration_cast<std::chrono::milliseconds>(now - m_verified_at);
  // The read running now, if any, is the driver's to count.
  stats.work_pending = static_cast<std::uint64_t>(m_resync_due) + static_cast<std::uint64_t>(m_reloads.any_due()) +
                        static_cast<std::uint64_t>(m_read_asked) + static_cast<std::uint64_t>(m_resync_retry_armed) +
                        static_cast<std::uint64_t>(m_reloads.retry_armed());
  return stats;
}

std::vector<Difference> ViewRules::compare(const std::map<std::string, Json>& rows, Clock::time_point now) {
  std::vector<Difference> differences;
  const auto entries = m_entries.sorted();
  auto view = entries.begin();
  auto table = rows.begin();
  while (view != entries.end() || table != rows.end()) {
    if (table == rows.end() || (view != entries.end() && (*view)->first < table->first)) {
      differences.push_back({(*view)->first, m_entries.body((*view)->second), std::nullopt});
      ++view;
    } else if (view == entries.end() || table->first < (*view)->first) {
      differences.push_back({table->first, std::nullopt, table->second});
      ++table;
    } else {
      if (!m_entries.holds((*view)->second, table->second)) {
        differences.push_back({(*view)->first, m_entries.body((*view)->second), table->second});
      }
      ++view;
      ++table;
    }
  }
  if (differences.empty()) m_verified_at = now;
  return differences;
}

}  // namespace detail

}  // namespace livestate::reconcile
