#pragma once

// A live view's plain types (live_view.hpp): its options, its changes, why it
// distrusts what it is told, its counters, and a difference with the
// database. Apart from LiveView, so that they carry no executor.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "livestate/core/json.hpp"

namespace livestate::db {
class Store;
}

namespace livestate::reconcile {

class Source;

struct ViewOptions {
  /// The resource type: masters, builders, workers, buildsets, buildrequests,
  /// builds, steps, or an application type kept in `resources`.
  std::string type;
  /// Narrowing: equalities on the type's body fields (as db::Store::list
  /// takes them), e.g. {{"builderid", 3}}. An entry whose body stops matching
  /// leaves the view (`removed`).
  Json where = Json::object();
  /// Reads for reloads go here when set (e.g. a store on a read-only replica);
  /// else to the store the view was given. Borrowed: must outlive the view's
  /// reads (LiveView's Object lifetimes).
  db::Store* reload_from = nullptr;
  /// The same for any Source (takes precedence over reload_from).
  Source* reload_source = nullptr;
  /// false: no lifecycle rules, every event is allowed from any state ("new"
  /// and "started" create), for types whose events the view doesn't know
  /// (a replayed trace's logs, workers, changes…).
  bool lifecycle_rules = true;
  /// A reload that returns an older revision than a message already announced
  /// (a lagging replica) is retried, with backoff from `lag_retry_initial`
  /// (doubling, at most 1 s). Past `lag_deadline` the entry is flagged stale
  /// (counted in ViewStats::stale_entries) and still retried; the flag clears
  /// when a read or a message reaches the announced revision, and only then:
  /// a resync through a copy that still lags keeps it.
  /// With reload_from or reload_source (a copy that may lag), a read must
  /// also reach the revision the view holds: a resync or reload that lacks
  /// an entry, or has an older row of it, neither removes nor replaces it; the
  /// entry is retried and flagged the same way.
  std::chrono::milliseconds lag_retry_initial{20};
  std::chrono::milliseconds lag_deadline{5000};
  /// Resync (reload everything and compare) this often even without a reason,
  /// to repair losses that no detector can see (a message silently lost on a
  /// transport without sequence numbers). Zero: never.
  std::chrono::milliseconds resync_every{0};
  /// A narrowed view remembers, for each entry that left it (its body stopped
  /// matching `where`), the revision at which it left, so that a late message
  /// from before (reordered, duplicated, delayed) does not bring it back. It
  /// forgets an id between one and two times this long after the id last
  /// left, so that this memory stays as large as the departures of the last
  /// `forget_departed_after`, not of the view's whole life (about 100 bytes
  /// an id); a message delayed longer than that can bring an entry back until
  /// the next resync (see resync_every).
  std::chrono::milliseconds forget_departed_after{30'000};
  /// A deleted entry's id and revision keep late messages about it (sent
  /// before the deletion, arriving after it) from bringing it back. The view
  /// forgets a deletion between one and two times this long after it learned
  /// it, and a resync reads only the deletions of the last twice this long
  /// (by the deleting stores' clocks), so that memory and resyncs cost what
  /// the recent deletions do, not what every deletion ever made does; a
  /// message delayed longer can bring a deleted entry back until the next
  /// resync (see resync_every). Both windows: 0 to 366 days.
  std::chrono::milliseconds forget_deleted_after{30'000};
  /// Messages applied between two checks of whether a reload is due: a
  /// reload is batched with whatever else became due meanwhile.
  std::size_t reload_batch = 500;
  /// Messages received and not yet applied (the view's executor is busy, a
  /// reload is slow): at most this many wait. Past it the view discards what
  /// waits and resyncs instead (Anomaly::transport_reset; counted in
  /// ViewStats::queue_overflows and messages_discarded): a snapshot read after
  /// those messages arrived holds everything they announced, and a view that
  /// falls behind holds bounded memory. At least 1.
  std::size_t max_queued = 10'000;
  /// Messages without "_rev" are hints, not anomalies: for a producer whose
  /// messages carry no revision (Buildbot's own, through its plug-in), each
  /// such message says only that its entry changed; the entry is reloaded,
  /// batched with the other reloads due (counted in ViewStats::hints, not as
  /// Anomaly::no_revision). Messages that carry "_rev" are applied as usual.
  bool revisionless_messages_are_hints = false;
};

enum class ChangeKind { added, changed, removed };

/// One real change of the view: fired once per change, never for a duplicate
/// or a stale message. `before` is null for added, `after` null for removed.
struct Change {
  ChangeKind kind;
  std::string id;
  Json before;
  Json after;
};

/// Why a view distrusted what it was told.
enum class Anomaly {
  stale_or_duplicate,   ///< _rev at or below the entry's: dropped
  lifecycle_violation,  ///< an event not allowed from the entry's state: entry reloaded
  unknown_entry,        ///< a non-creating event for an id the view lacks: entry reloaded
  unknown_event,        ///< an event the type doesn't have: entry reloaded
  no_revision,          ///< a body without an integer _rev: entry reloaded
  stream_gap,           ///< a hole in a producer's sequence: resync
  transport_reset,      ///< reconnected, overflow, expired queue: resync
  schema_migrated,      ///< schema.N.migrated: resync
  stale_read,           ///< a reload older than an announced revision (lagging replica): retried
};
inline constexpr std::size_t anomaly_kinds = 9;
[[nodiscard]] const char* to_string(Anomaly anomaly) noexcept;

struct ViewStats {
  std::uint64_t messages = 0;  ///< messages received (after the start-up buffer)
  std::uint64_t applied = 0;   ///< messages that changed the view
  std::uint64_t anomalies[anomaly_kinds] = {};
  std::uint64_t reload_queries = 0;    ///< queries issued for entry reloads
  std::uint64_t entries_reloaded = 0;  ///< entries those queries asked for
  /// Resyncs, the start-up load included: reads of what changed since the
  /// view last read, when its source can tell (Source::changes_since), else
  /// of the whole type (full_resyncs).
  std::uint64_t resyncs = 0;
  std::uint64_t resync_repairs = 0;      ///< entries a resync found different from the view
  std::uint64_t stale_entries = 0;       ///< entries now flagged stale (a reload never caught up)
  std::uint64_t callback_errors = 0;     ///< change callbacks that threw (logged)
  std::uint64_t queued = 0;              ///< messages received and waiting to be applied now
  std::uint64_t queued_peak = 0;         ///< the most that have waited at once
  std::uint64_t queue_overflows = 0;     ///< times more than max_queued waited: discarded, resynced
  std::uint64_t messages_discarded = 0;  ///< messages discarded by those overflows
  /// Ids the view remembers beyond its entries: deletions' tombstones
  /// (forget_deleted_after), departures from a narrowed view
  /// (forget_departed_after), revisions
  /// announced to a reload not yet caught up with, lagging reloads.
  std::uint64_t remembered_ids = 0;
  /// Time since the view was last equal to a snapshot of the database (the
  /// last resync, or a verify() that found no difference).
  std::chrono::milliseconds since_verified{0};
  /// Messages without "_rev" taken as hints (revisionless_messages_are_hints).
  std::uint64_t hints = 0;
  /// Resyncs that read the whole type: the start-up load, after a schema
  /// migration, the periodic ones (resync_every), and those whose source
  /// could not tell what changed since the view's watermark (no history, or
  /// not as far back).
  std::uint64_t full_resyncs = 0;
  /// Rows (and deletions) the resyncs read: what they cost the database.
  std::uint64_t resync_rows = 0;
  /// Work the view still has to do, whatever a message may bring: what
  /// arrived from its connector and is not yet applied (messages or control
  /// events), a resync or reloads due, a read asked for or running now, a
  /// retry armed (of a failed resync, of a lagging reload). 0: the view is
  /// quiet, and changes again only when a message, a control event or a
  /// periodic resync (resync_every) comes.
  std::uint64_t work_pending = 0;
  [[nodiscard]] std::uint64_t count(Anomaly anomaly) const noexcept {
    return anomalies[static_cast<std::size_t>(anomaly)];
  }
};

/// A difference between the view and the database (verify()).
struct Difference {
  std::string id;
  std::optional<Json> in_view;
  std::optional<Json> in_database;
};

}  // namespace livestate::reconcile
