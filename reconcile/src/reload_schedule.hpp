#pragma once

// Which entries a live view must reload, and how long it waits for a copy
// that lags: the ids due for a reload (coalesced into batches), the revision
// each reload must reach (announced by the message that asked for it), and
// the retries of reads that fell short, with backoff, one timer for them all,
// and the stale flag past the deadline.
//
// Part of the view's rules: no locks, no clock of its own (every call that
// needs the time is given it). Not thread-safe.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace livestate::reconcile::detail {

class ReloadSchedule {
 public:
  using Clock = std::chrono::steady_clock;

  struct Options {
    std::string type;  ///< for log lines
    /// Reads go to a copy that may lag: a read must also reach what the view holds.
    bool may_lag = false;
    std::chrono::milliseconds retry_initial{20};
    std::chrono::milliseconds deadline{5000};
    std::size_t batch = 500;
  };

  explicit ReloadSchedule(Options options) : m_options(std::move(options)) {}

  /// `id` is due for a reload.
  void due(const std::string& id) { m_due.insert(id); }
  /// The same, because of a message at `announced`: the read must find that
  /// revision or a later one, else it lags (a replica) and is retried.
  void due(const std::string& id, std::int64_t announced);
  [[nodiscard]] bool any_due() const noexcept { return !m_due.empty(); }
  /// The next batch of due ids (at most Options::batch), no longer due.
  [[nodiscard]] std::vector<std::string> take_batch();
  /// A read of these failed: due again.
  void put_back(const std::vector<std::string>& ids) { m_due.insert(ids.begin(), ids.end()); }
  /// A resync covers every due id.
  void clear_due() noexcept { m_due.clear(); }
  /// A resync by what changed covers the ids it read.
  void not_due(const std::string& id) { m_due.erase(id); }

  /// The revision a read of `id` must reach to be trusted: what a message
  /// announced and, when reads go to a copy that may lag, also what the view
  /// holds (`held`, 0 for none): a lagging copy that lacks the entry, or has
  /// an older row, can't tell that it is gone or changed.
  [[nodiscard]] std::int64_t required(const std::string& id, std::int64_t held) const;

  /// A read of `id` fell short at `now`: a retry is scheduled (one pending per
  /// entry, with backoff), and the entry is flagged stale once it has lagged
  /// past the deadline (a stale entry keeps being retried, at the longest
  /// backoff, so that the flag clears as soon as the copy catches up).
  /// Returns a moment for the retry timer when it must fire earlier than the
  /// one armed.
  [[nodiscard]] std::optional<Clock::time_point> lagging(const std::string& id, Clock::time_point now);
  /// The retry timer armed for `armed` fired at `now`: the retries due by then
  /// (or within a few milliseconds: they share one query) are due for a
  /// reload. Returns the moment for the next timer, if any.
  [[nodiscard]] std::optional<Clock::time_point> retry_timer_fired(Clock::time_point armed, Clock::time_point now);
  /// A read or a message reached what `id` waited for.
  void caught_up(const std::string& id);
  /// A message brought `id` to `revision` (or deleted it there): it catches
  /// up when that reaches what was announced (or what a lagging read waits for).
  void confirmed(const std::string& id, std::int64_t revision);

  /// Every id waiting for a read to catch up (announced, lagging or stale):
  /// what a resync must check.
  void waiting(std::set<std::string>& ids) const;

  [[nodiscard]] std::size_t stale() const noexcept { return m_stale.size(); }
  /// Is a retry of a lagging read waiting for its timer?
  [[nodiscard]] bool retry_armed() const noexcept { return !m_retry_at.empty(); }
  /// Ids remembered besides the entries: revisions announced, lagging reads.
  [[nodiscard]] std::size_t remembered() const noexcept { return m_announced.size() + m_lag.size(); }

 private:
  struct Lag {
    Clock::time_point since;
    std::chrono::milliseconds backoff;
    std::uint64_t retry = 0;  ///< the pending retry's number (0: none)
  };

  [[nodiscard]] std::optional<Clock::time_point> arm(Clock::time_point at);
  void flag_stale(const std::string& id, Clock::time_point now);

  Options m_options;
  std::set<std::string> m_due;
  std::map<std::string, std::int64_t> m_announced;
  std::map<std::string, Lag> m_lag;
  std::set<std::string> m_stale;
  std::uint64_t m_retries = 0;
  std::multimap<Clock::time_point, std::pair<std::string, std::uint64_t>> m_retry_at;  // -> (id, retry)
  Clock::time_point m_armed_at = Clock::time_point::max();
  std::uint64_t m_unlogged_stale = 0;                  // flagged stale since the last line about it
  std::optional<Clock::time_point> m_stale_logged_at;  // none yet
};

}  // namespace livestate::reconcile::detail
