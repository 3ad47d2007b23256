#pragma once

// A live view's rules, apart from its machinery: what the view holds, what it
// makes of each message, control event and read, and what it asks its driver
// to do (changes to announce, reads to run, timers to arm). Events in,
// actions out, as a protocol without I/O: no locks, no executor, no database,
// no clock of its own (every input carries the time), so every detector can
// be tested by feeding it events (tests/unit/view_rules.cpp).
//
// Not thread-safe: the driver (live_view.cpp) calls it under the lock that
// the view's readers (get(), stats()…) take too; from the view's strand,
// except compare(), which verify() calls from its caller's thread.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "entry_table.hpp"
#include "expiring_revisions.hpp"
#include "lifecycle.hpp"
#include "livestate/core/json.hpp"
#include "livestate/reconcile/live_view_types.hpp"
#include "reload_schedule.hpp"
#include "view_inbox.hpp"

namespace livestate::reconcile::detail {

using Clock = std::chrono::steady_clock;

/// A body's revision (its integer "_rev"), none when it has none.
[[nodiscard]] std::optional<std::int64_t> revision_of(const Json& body);

/// A read for the driver to run through the view's reload source, then hand
/// back (ViewRules::read_done) or report failed (ViewRules::read_failed).
struct Read {
  enum class Kind { snapshot, reload };
  Kind kind = Kind::snapshot;
  /// Source::read's arguments: the rows matching `where` (among `ids`).
  Json where = Json::object();
  std::optional<std::vector<std::string>> ids;
  /// reload: for each of `ids`, the revision the read must reach to be
  /// trusted (0: any); a row older than that is a lagging copy's, retried.
  std::vector<std::int64_t> must_reach;
  /// snapshot: Source::deletions's `within`, the deletions that matter.
  /// (A reload reads the deletions of the ids the rows lack.)
  std::optional<std::chrono::milliseconds> deletions_within;
  /// snapshot: read what changed since this watermark (Source::changes_since)
  /// when the source can tell, else everything; none: everything.
  std::optional<std::string> since;
};

/// What a Read found.
struct ReadResult {
  std::map<std::string, Json> rows;
  std::map<std::string, std::int64_t> deletions;
  /// snapshot: the rows are all of them (matching `where`); false: those
  /// changed since Read::since, whatever their fields.
  bool full = true;
  /// snapshot: where the source's history stood before the rows were read
  /// (none: the source keeps none).
  std::optional<std::string> watermark;
};

/// A moment the rules want to be told of (ViewRules::timer_fired).
struct Timer {
  enum class Kind { resync_retry, periodic_resync, lag_retry };
  Kind kind;
  Clock::time_point at;
};

/// What the rules ask for, since the driver last took it.
struct Actions {
  /// Real changes of the view, in order: announce them.
  std::vector<Change> changes;
  /// A read became due (ask next_read() on the strand, after what waits there).
  bool read = false;
  std::vector<Timer> timers;
};

class ViewRules {
 public:
  /// std::invalid_argument (InvalidRoutingKey for the type) for options that
  /// can't make a view. `reload_may_lag`: reads go to a copy that may lag
  /// behind the messages (a replica).
  ViewRules(const ViewOptions& options, bool reload_may_lag, Clock::time_point now);

  // --- what happens ----------------------------------------------------------

  /// The view subscribed: the first load is due (and the periodic resync).
  void start(Clock::time_point now);
  /// A message, control event or schema.N.migrated, in the connector's order.
  void receive(Inbound inbound, Clock::time_point now);
  /// The inbox discarded messages (more than max_queued waited).
  void inbox_overflowed();
  /// Someone asked for a resync (LiveView::resync).
  void resync_requested();
  void timer_fired(const Timer& timer, Clock::time_point now);
  /// The read to run now (and no longer due), or none.
  [[nodiscard]] std::optional<Read> next_read(Clock::time_point now);
  void read_done(const Read& read, ReadResult result, Clock::time_point now);
  /// A read threw. `retry`: a runtime failure, retried by a resync with
  /// backoff (else a programming error that the driver lets surface).
  void read_failed(const Read& read, bool retry, Clock::time_point now);

  /// Moves what the rules ask for into `into` (cleared first; its buffers are
  /// reused).
  void take_actions(Actions& into);
  /// Whether anyone listens to the changes (Actions::changes): when nobody
  /// does, the rules don't make them (nor decode the bodies they replace).
  /// On by default.
  void announce_changes(bool announce) noexcept { m_announce = announce; }

  // --- what the view holds ---------------------------------------------------

  /// Has the first snapshot been loaded?
  [[nodiscard]] bool ready() const noexcept { return m_loaded; }
  [[nodiscard]] const EntryTable& entries() const noexcept { return m_entries; }
  [[nodiscard]] ViewStats stats(Clock::time_point now) const;
  /// The differences between the view and `rows` (the database's, by id);
  /// none resets since_verified.
  [[nodiscard]] std::vector<Difference> compare(const std::map<std::string, Json>& rows, Clock::time_point now);
  [[nodiscard]] const std::string& type() const noexcept { return m_type; }
  [[nodiscard]] const Json& where() const noexcept { return m_where; }

 private:
  void on_message(Incoming message, Clock::time_point now);
  void apply(Incoming message, bool replaying, Clock::time_point now);
  void apply_deletion(const std::string& id, std::int64_t revision, bool replaying, Clock::time_point now);
  void set(const std::string& id, Json body, std::int64_t revision, Clock::time_point now);
  EntryTable::iterator remove(EntryTable::iterator entry);
  [[nodiscard]] bool matches(const Json& body) const;
  void count(Anomaly anomaly) noexcept { ++m_stats.anomalies[static_cast<std::size_t>(anomaly)]; }
  void distrust_everything(Anomaly why);
  void request_resync();
  void want_read();
  void retry_resync_later(Clock::time_point now);

  [[nodiscard]] std::int64_t gone_at(const std::string& id) const;
  [[nodiscard]] std::int64_t held(const std::string& id) const;
  void departed(const std::string& id, std::int64_t revision, Clock::time_point now);
  void learn_deletions(const std::map<std::string, std::int64_t>& deletions, Clock::time_point now);
  void forget_old_records(Clock::time_point now);
  void lagging(const std::string& id, Clock::time_point now);
  void touched(const std::string& id);

  void resynced(ReadResult& result, Clock::time_point now);
  void repaired(ReadResult& result, Clock::time_point now);
  [[nodiscard]] bool caught_up_with(const std::string& id, std::int64_t read_revision, Clock::time_point now);
  void reloaded(const std::vector<std::string>& ids, ReadResult& result, Clock::time_point now);
  void take_reloaded(const std::string& id, Json* row, Clock::time_point now);

  std::string m_type;
  Json m_where;
  Lifecycle m_lifecycle;
  std::chrono::milliseconds m_resync_every;
  std::chrono::milliseconds m_forget_departed_after;
  std::chrono::milliseconds m_forget_deleted_after;
  std::size_t m_max_queued;
  bool m_reloads_may_lag;
  bool m_revisionless_hints;  // ViewOptions::revisionless_messages_are_hints

  EntryTable m_entries;
  bool m_announce = true;
  ViewStats m_stats;  // the counters the rules keep (not the inbox's)
  Clock::time_point m_verified_at;
  bool m_loaded = false;
  std::vector<Incoming> m_buffer;  // messages before the first load
  bool m_resync_due = false;
  // Where the source's history stood at the view's last resync (none: it
  // keeps none), and whether the next resync must read everything anyway.
  std::optional<std::string> m_watermark;
  bool m_full_due = true;
  std::unordered_set<std::string> m_touched;  // changed by messages since the last resync (see touched())
  bool m_read_asked = false;                  // the driver was asked for a read and hasn't asked next_read()
  bool m_resync_retry_armed = false;
  std::chrono::milliseconds m_retry_backoff{50};
  ReloadSchedule m_reloads;
  ExpiringRevisions m_tombstones;  // id -> the revision it was deleted at
  ExpiringRevisions m_departed;    // id -> the revision it left the view at (0: back since)
  Actions m_actions;
};

}  // namespace livestate::reconcile::detail
