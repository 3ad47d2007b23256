#include "livestate/reconcile/live_view.hpp"

#include <algorithm>
#include <atomic>
#include <deque>
#include <mutex>
#include <set>
#include <stdexcept>
#include <utility>
#include <variant>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "livestate/core/error.hpp"
#include "livestate/core/filter.hpp"
#include "livestate/core/log.hpp"
#include "livestate/db/store.hpp"
#include "livestate/mq/connector.hpp"
#include "livestate/mq/control.hpp"
#include "expiring_revisions.hpp"
#include "lifecycle.hpp"
#include "livestate/reconcile/source.hpp"

namespace livestate::reconcile {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

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

namespace {

constexpr const char* component = "reconcile";

std::optional<std::int64_t> revision_of(const Json& body) {
  if (!body.is_object()) return std::nullopt;
  const auto found = body.find("_rev");
  if (found == body.end() || !found->is_number_integer()) return std::nullopt;
  return found->get<std::int64_t>();
}

struct Incoming {
  RoutingKey key;
  Json body;
};

struct SchemaMigrated {};

// What the connector hands a view, in the order it does.
using Inbound = std::variant<Incoming, mq::ControlEvent, SchemaMigrated>;

}  // namespace

class LiveView::Impl : public std::enable_shared_from_this<LiveView::Impl> {
 public:
  Impl(mq::Connector& connector, Source& source, std::unique_ptr<Source> owned, asio::any_io_executor executor,
       ViewOptions options)
      : m_connector(connector),
        m_owned_source(std::move(owned)),
        m_owned_reload(options.reload_from != nullptr && options.reload_source == nullptr
                           ? source_of(*options.reload_from)
                           : nullptr),
        m_store(source),
        m_reload_store(options.reload_source != nullptr ? *options.reload_source
                       : m_owned_reload              ? *m_owned_reload
                                                     : source),
        m_reload_may_lag(&m_reload_store != &m_store),
        m_strand(asio::make_strand(std::move(executor))),
        m_options(std::move(options)),
        m_lifecycle(m_options.lifecycle_rules ? detail::Lifecycle::of(m_options.type) : detail::Lifecycle::none()),
        m_verified_at(Clock::now()) {
    if (m_options.type.empty()) throw std::invalid_argument("LiveView: the options name no type");
    (void)RoutingKey({m_options.type});  // InvalidRoutingKey for a type that can't be a key element
    if (!m_options.where.is_object()) throw std::invalid_argument("LiveView: `where` must be a JSON object");
    if (m_options.reload_batch == 0) throw std::invalid_argument("LiveView: reload_batch must be positive");
    if (m_options.max_queued == 0) throw std::invalid_argument("LiveView: max_queued must be positive");
    // Bounded so that twice a window, and now minus one, can't overflow.
    constexpr std::chrono::milliseconds longest_window = std::chrono::hours(24 * 366);
    for (const auto& [name, window] : {std::pair{"forget_departed_after", m_options.forget_departed_after},
                                       std::pair{"forget_deleted_after", m_options.forget_deleted_after}}) {
      if (window < std::chrono::milliseconds(0) || window > longest_window) {
        throw std::invalid_argument(std::string("LiveView: ") + name + " must be between 0 and 366 days");
      }
    }
  }

  void set_callback(ChangeCallback callback) {
    if (m_started) throw std::logic_error("LiveView::on_change() after start()");
    m_callback = std::move(callback);
  }

  void start() {
    if (m_started.exchange(true)) throw std::logic_error("LiveView::start() called twice");
    std::weak_ptr<Impl> weak = weak_from_this();
    mq::ConsumeOptions consume;
    consume.on_control = [weak](const mq::ControlEvent& event) {
      if (auto self = weak.lock()) self->receive(event);
    };
    // One path per event: TYPE.ID.EVENT (the other paths are longer).
    m_messages = m_connector.start_consuming(
        [weak](const RoutingKey& key, const Json& body) {
          if (auto self = weak.lock()) self->receive(Incoming{key, body});
        },
        Filter{m_options.type, std::nullopt, std::nullopt}, std::move(consume));
    // schema.<version>.migrated, and another migration set's
    // schema.<set>.<version>.migrated: the rows a source reads through it
    // (Buildbot's) may have changed too. One consumer for both.
    m_schema = m_connector.start_consuming(
        [weak](const RoutingKey& key, const Json&) {
          if ((key.size() != 3 && key.size() != 4) || key[key.size() - 1] != "migrated") return;
          if (auto self = weak.lock()) self->receive(SchemaMigrated{});
        },
        Filter::parse("schema.#"));
    request_resync();
    schedule_periodic_resync();
  }

  void stop() noexcept {
    m_stopped = true;
    m_messages.reset();
    m_schema.reset();
    // Wait for a step in progress (it may be querying the store).
    std::lock_guard wait(m_step_mutex);
  }

  bool ready() const {
    std::lock_guard lock(m_mutex);
    return m_ready;
  }

  std::optional<Json> get(const std::string& id) const {
    std::lock_guard lock(m_mutex);
    const auto found = m_entries.find(id);
    if (found == m_entries.end()) return std::nullopt;
    return found->second.body;
  }

  std::map<std::string, Json> entries() const {
    std::lock_guard lock(m_mutex);
    std::map<std::string, Json> copy;
    for (const auto& [id, entry] : m_entries) copy.emplace(id, entry.body);
    return copy;
  }

  std::size_t size() const {
    std::lock_guard lock(m_mutex);
    return m_entries.size();
  }

  ViewStats stats() const {
    std::lock_guard lock(m_mutex);
    ViewStats stats = m_stats;
    stats.stale_entries = m_stale.size();
    stats.remembered_ids = m_remembered;
    stats.since_verified = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - m_verified_at);
    std::lock_guard inbox(m_inbox_mutex);
    stats.queued = m_inbox_messages;
    stats.queued_peak = m_inbox_peak;
    stats.queue_overflows = m_inbox_overflows;
    stats.messages_discarded = m_inbox_discarded;
    return stats;
  }

  std::vector<Difference> verify() {
    const auto rows = m_store.read(m_options.type, m_options.where, std::nullopt);
    std::map<std::string, const Json*> database;
    for (const auto& [id, row] : rows) database.emplace(id, &row);
    std::vector<Difference> differences;
    std::lock_guard lock(m_mutex);
    auto view = m_entries.begin();
    auto table = database.begin();
    while (view != m_entries.end() || table != database.end()) {
      if (table == database.end() || (view != m_entries.end() && view->first < table->first)) {
        differences.push_back({view->first, view->second.body, std::nullopt});
        ++view;
      } else if (view == m_entries.end() || table->first < view->first) {
        differences.push_back({table->first, std::nullopt, *table->second});
        ++table;
      } else {
        if (view->second.body != *table->second) {
          differences.push_back({view->first, view->second.body, *table->second});
        }
        ++view;
        ++table;
      }
    }
    if (differences.empty()) m_verified_at = Clock::now();
    return differences;
  }

  void resync_soon() {
    asio::post(m_strand, [self = shared_from_this()] { self->step([&] { self->request_resync(); }); });
  }

 private:
  struct Entry {
    Json body;
    std::int64_t revision = 0;
  };

  // Every handler on the strand runs through here: nothing once stopped, and
  // the destructor waits for the one in progress. Change callbacks run at the
  // end of the step, outside m_mutex.
  template <class Work>
  void step(Work&& work) {
    std::lock_guard running(m_step_mutex);
    if (m_stopped) return;
    try {
      work();
    } catch (const std::logic_error&) {
      throw;  // a programming error (an unknown field in `where`): surfaces from the executor
    } catch (const std::exception& error) {
      log(LogLevel::warning, component,
          "view of " + m_options.type + ": " + error.what() + "; retrying by a resync");
      retry_resync_later();
    }
    m_remembered = m_departed.size() + m_tombstones.size() + m_announced.size() + m_lag.size();
    fire_changes();
  }

  // --- the inbox ------------------------------------------------------------

  // From the connector's callbacks (any thread), in the order it delivers:
  // queued for the strand, at most max_queued messages. Past that, what
  // waits is discarded and the view resyncs: the snapshot, read after those
  // messages arrived, holds everything they announced.
  void receive(Inbound inbound) {
    {
      std::lock_guard lock(m_inbox_mutex);
      if (std::holds_alternative<Incoming>(inbound)) {
        if (m_inbox_messages >= m_options.max_queued) {
          ++m_inbox_overflows;
          m_inbox_discarded += m_inbox_messages + 1;
          m_inbox.clear();  // control events too: the resync covers them
          m_inbox_messages = 0;
          m_inbox_overflowed = true;
        } else {
          m_inbox.push_back(std::move(inbound));
          m_inbox_peak = std::max(m_inbox_peak, ++m_inbox_messages);
        }
      } else {
        m_inbox.push_back(std::move(inbound));
      }
      if (m_inbox_scheduled) return;
      m_inbox_scheduled = true;
    }
    asio::post(m_strand, [self = shared_from_this()] { self->drain_inbox(); });
  }

  // The strand: a batch from the inbox, each entry a step; then the strand
  // is given back to the executor's other work until the next batch.
  void drain_inbox() {
    std::vector<Inbound> batch;
    bool overflowed = false;
    {
      std::lock_guard lock(m_inbox_mutex);
      const auto count = std::min<std::size_t>(m_inbox.size(), 256);
      batch.reserve(count);
      for (std::size_t i = 0; i < count; ++i) {
        if (std::holds_alternative<Incoming>(m_inbox.front())) --m_inbox_messages;
        batch.push_back(std::move(m_inbox.front()));
        m_inbox.pop_front();
      }
      overflowed = std::exchange(m_inbox_overflowed, false);
    }
    // What arrived after the overflow comes after the resync it asks for.
    if (overflowed) step([&] { distrust_everything(Anomaly::transport_reset); });
    for (auto& inbound : batch) {
      step([&] {
        if (auto* message = std::get_if<Incoming>(&inbound)) {
          on_message(std::move(*message));
        } else if (const auto* event = std::get_if<mq::ControlEvent>(&inbound)) {
          on_control(*event);
        } else {
          distrust_everything(Anomaly::schema_migrated);
        }
      });
    }
    {
      std::lock_guard lock(m_inbox_mutex);
      if (m_inbox.empty() && !m_inbox_overflowed) {
        m_inbox_scheduled = false;
        return;
      }
    }
    asio::post(m_strand, [self = shared_from_this()] { self->drain_inbox(); });
  }

  // --- messages (strand) ----------------------------------------------------

  void on_message(Incoming message) {
    if (message.key.size() != 3) return;
    forget_old_records();
    if (!m_loaded) {
      // Before the first load (which may be failing and retried): bounded
      // as the inbox is; the load, read after these arrived, covers them.
      if (m_buffer.size() >= m_options.max_queued) {
        {
          std::lock_guard lock(m_inbox_mutex);
          ++m_inbox_overflows;
          m_inbox_discarded += m_buffer.size() + 1;
        }
        m_buffer.clear();
        count(Anomaly::transport_reset);
        return;
      }
      m_buffer.push_back(std::move(message));
      return;
    }
    {
      std::lock_guard lock(m_mutex);
      ++m_stats.messages;
    }
    apply(message, false);
    flush_reloads_soon();
  }

  void on_control(const mq::ControlEvent& event) {
    distrust_everything(event.kind == mq::ControlKind::gap ? Anomaly::stream_gap : Anomaly::transport_reset);
  }

  void distrust_everything(Anomaly why) {
    count(why);
    request_resync();
  }

  // Applies one message; `replaying` for those buffered during a load, which
  // are expected to be older than the snapshot and so are not anomalies.
  void apply(const Incoming& message, bool replaying) {
    const std::string& id = message.key[1];
    const std::string& event = message.key[2];
    const auto revision = revision_of(message.body);
    if (!revision) {
      if (m_options.revisionless_messages_are_hints) {
        std::lock_guard lock(m_mutex);
        ++m_stats.hints;
      } else {
        count(Anomaly::no_revision);
      }
      reload(id);
      return;
    }
    if (m_lifecycle.deletes(event)) {
      apply_deletion(id, *revision, replaying);
      return;
    }
    // About an entry deleted, or gone from a narrowed view, since: late.
    if (*revision <= gone_at(id)) {
      if (!replaying) count(Anomaly::stale_or_duplicate);
      return;
    }
    std::unique_lock lock(m_mutex);
    const auto found = m_entries.find(id);
    if (found != m_entries.end()) {
      if (*revision <= found->second.revision) {
        lock.unlock();
        if (!replaying) count(Anomaly::stale_or_duplicate);
        return;
      }
      const auto verdict = m_lifecycle.check(found->second.body, event);
      if (verdict != detail::EventVerdict::allowed) {
        lock.unlock();
        count(verdict == detail::EventVerdict::unknown ? Anomaly::unknown_event : Anomaly::lifecycle_violation);
        reload(id, *revision);
        return;
      }
      lock.unlock();
      set(id, message.body, *revision);
      confirmed(id, *revision);
      return;
    }
    lock.unlock();
    // Not the view's (another builder's request, or one that left it): nothing
    // to do but remember, so that an older message doesn't bring it in.
    if (!matches(message.body)) {
      departed(id, *revision);
      return;
    }
    if (!m_lifecycle.creates(event)) {
      // Is it an event this type has at all?
      const auto verdict = m_lifecycle.check(Json::object(), event);
      count(verdict == detail::EventVerdict::unknown ? Anomaly::unknown_event : Anomaly::unknown_entry);
      reload(id, *revision);
      return;
    }
    set(id, message.body, *revision);
    confirmed(id, *revision);
  }

  void apply_deletion(const std::string& id, std::int64_t revision, bool replaying) {
    const bool known = !m_tombstones.note(id, revision, Clock::now());
    std::unique_lock lock(m_mutex);
    const auto found = m_entries.find(id);
    // The entry goes if it is older than the deletion, even when a resync
    // already knew of the deletion (its snapshot raced with it).
    if (found != m_entries.end() && found->second.revision < revision) {
      m_changes.push_back({ChangeKind::removed, id, std::move(found->second.body), nullptr});
      m_entries.erase(found);
      ++m_stats.applied;
      lock.unlock();
      confirmed(id, revision);
      return;
    }
    lock.unlock();
    if ((known || found != m_entries.end()) && !replaying) count(Anomaly::stale_or_duplicate);
  }

  bool matches(const Json& body) const {
    for (const auto& [field, value] : m_options.where.items()) {
      const auto found = body.find(field);
      if (found == body.end() || *found != value) return false;
    }
    return true;
  }

  // The entry becomes `body` (at `revision`): added, changed, or removed when
  // it no longer matches the narrowing.
  void set(const std::string& id, const Json& body, std::int64_t revision) {
    std::lock_guard lock(m_mutex);
    const auto found = m_entries.find(id);
    if (!matches(body)) {
      departed(id, revision);
      if (found == m_entries.end()) return;
      m_changes.push_back({ChangeKind::removed, id, std::move(found->second.body), nullptr});
      m_entries.erase(found);
      ++m_stats.applied;
      return;
    }
    // Back in the view: its departure no longer counts (the record expires
    // on its own).
    m_departed.clear(id);
    if (found == m_entries.end()) {
      m_entries.emplace(id, Entry{body, revision});
      m_changes.push_back({ChangeKind::added, id, nullptr, body});
    } else {
      Json before = std::exchange(found->second.body, body);
      found->second.revision = revision;
      m_changes.push_back({ChangeKind::changed, id, std::move(before), body});
    }
    ++m_stats.applied;
  }


  void count(Anomaly anomaly) {
    std::lock_guard lock(m_mutex);
    ++m_stats.anomalies[static_cast<std::size_t>(anomaly)];
  }

  // --- what the view knows of entries it doesn't hold (strand) ---------------

  bool narrowed() const { return !m_options.where.empty(); }

  // The revision at or below which a message about `id` is late: it was
  // deleted, or left this narrowed view, at that revision (0: neither known).
  std::int64_t gone_at(const std::string& id) const {
    return std::max(m_tombstones.revision(id), m_departed.revision(id));
  }

  // `id` does not match the narrowing at `revision`.
  void departed(const std::string& id, std::int64_t revision) {
    if (!narrowed() || revision <= 0) return;
    m_departed.note(id, revision, Clock::now());
  }

  // Departures older than forget_departed_after and deletions older than
  // forget_deleted_after are forgotten: the memory is as large as the recent
  // ones, however long the view lives.
  void forget_old_records() {
    const auto now = Clock::now();
    m_departed.forget_before(now - m_options.forget_departed_after);
    m_tombstones.forget_before(now - m_options.forget_deleted_after);
  }

  // --- reloads (strand) -----------------------------------------------------

  void reload(const std::string& id) { m_due.insert(id); }
  // A reload because of a message at `announced`: the reload must find that
  // revision or a later one, else the read lags (a replica) and is retried.
  void reload(const std::string& id, std::int64_t announced) {
    auto& known = m_announced[id];
    known = std::max(known, announced);
    m_due.insert(id);
  }

  void flush_reloads_soon() {
    if (m_due.empty() || m_flush_posted) return;
    m_flush_posted = true;
    // Posted, so that the messages already waiting on the strand (often the
    // rest of a burst) are applied first and their reloads join this batch.
    asio::post(m_strand, [self = shared_from_this()] {
      self->step([&] {
        self->m_flush_posted = false;
        self->flush_reloads();
      });
    });
  }

  void flush_reloads() {
    while (!m_due.empty() && !m_resync_posted) {
      std::vector<std::string> ids;
      while (!m_due.empty() && ids.size() < m_options.reload_batch) {
        ids.push_back(*m_due.begin());
        m_due.erase(m_due.begin());
      }
      std::map<std::string, Json> rows;
      try {
        // Not narrowed: a row that left the narrowing is told from one that
        // a lagging copy lacks by its revision (take_reloaded()).
        rows = m_reload_store.read(m_options.type, Json::object(), ids);
      } catch (...) {
        m_due.insert(ids.begin(), ids.end());  // nothing is lost: the resync retried later covers them
        throw;
      }
      {
        std::lock_guard lock(m_mutex);
        ++m_stats.reload_queries;
        m_stats.entries_reloaded += ids.size();
      }
      std::map<std::string, const Json*> found;
      for (const auto& [id, row] : rows) found.emplace(id, &row);
      if (found.size() < ids.size()) {
        // Those deleted: their tombstones keep late messages about them out.
        std::vector<std::string> missing;
        for (const auto& id : ids) {
          if (found.count(id) == 0) missing.push_back(id);
        }
        learn_deletions(m_reload_store.deletions(m_options.type, std::move(missing), std::nullopt));
      }
      for (const auto& id : ids) {
        const auto row = found.find(id);
        take_reloaded(id, row == found.end() ? nullptr : row->second);
      }
    }
  }

  // The revision a read of `id` must reach to be trusted: what a message
  // announced and, when reloads read a copy that may lag, also what the view
  // holds (`held`, 0 for none): a lagging copy that lacks the entry, or has an
  // older row, can't tell that it is gone or changed.
  std::int64_t required(const std::string& id, std::int64_t held) const {
    std::int64_t needed = m_reload_may_lag ? held : 0;
    const auto announced = m_announced.find(id);
    if (announced != m_announced.end()) needed = std::max(needed, announced->second);
    return needed;
  }

  // The entry's revision (0: the view lacks it). Strand only: the entries
  // change only there.
  std::int64_t held(const std::string& id) const {
    const auto entry = m_entries.find(id);
    return entry != m_entries.end() ? entry->second.revision : 0;
  }

  // A reloaded row (nullptr: none): applied when newer than the entry (set()
  // drops it when it no longer matches the narrowing); retried when older than
  // what the read had to reach (a lagging replica), and then never taken as a
  // deletion nor in place of a newer entry.
  void take_reloaded(const std::string& id, const Json* row) {
    const std::int64_t known_gone = gone_at(id);
    if (row != nullptr && revision_of(*row).value_or(0) <= known_gone) row = nullptr;  // deleted since
    const std::int64_t revision = row != nullptr ? revision_of(*row).value_or(0) : 0;
    if (required(id, held(id)) > std::max(revision, known_gone)) {
      lagging(id);
      if (row == nullptr) return;
    } else {
      caught_up(id);
    }
    std::unique_lock lock(m_mutex);
    const auto entry = m_entries.find(id);
    if (row == nullptr) {
      if (entry == m_entries.end()) return;
      m_changes.push_back({ChangeKind::removed, id, std::move(entry->second.body), nullptr});
      m_entries.erase(entry);
      ++m_stats.applied;
      return;
    }
    if (entry != m_entries.end() && entry->second.revision >= revision) return;
    lock.unlock();
    set(id, *row, revision);
  }

  // A read of `id` fell short: retried with backoff (one retry pending per
  // entry), and flagged stale once it has lagged past the deadline. A stale
  // entry keeps being retried, at the longest backoff, so that the flag clears
  // as soon as the copy catches up.
  void lagging(const std::string& id) {
    count(Anomaly::stale_read);
    const auto now = Clock::now();
    auto& lag = m_lag.try_emplace(id, Lag{now, m_options.lag_retry_initial, 0}).first->second;
    if (now - lag.since > m_options.lag_deadline) {
      std::lock_guard lock(m_mutex);
      if (m_stale.insert(id).second) {
        // One line for the first, then at most one every 10 s with the
        // count since: a lagging replica makes hundreds stale at once.
        ++m_unlogged_stale;
        if (now - m_stale_logged_at >= std::chrono::seconds(10)) {
          log(LogLevel::warning, component,
              "view of " + m_options.type + ": entry " + id +
                  (m_unlogged_stale > 1 ? " and " + std::to_string(m_unlogged_stale - 1) + " other(s) are" : " is") +
                  " stale: reloads keep returning an older revision (" + std::to_string(m_stale.size()) +
                  " stale now)");
          m_stale_logged_at = now;
          m_unlogged_stale = 0;
        }
      }
    }
    if (lag.retry != 0) return;
    lag.retry = ++m_retries;
    const auto at = now + lag.backoff;
    lag.backoff = std::min(lag.backoff * 2, std::chrono::milliseconds(1000));
    m_retry_at.emplace(at, std::make_pair(id, lag.retry));
    arm_retries(at);
  }

  // One timer for every pending retry, at the earliest; retries due within
  // a few milliseconds of each other share one reload query.
  void arm_retries(Clock::time_point at) {
    if (at >= m_retries_armed_at) return;  // an earlier tick re-arms for this one
    m_retries_armed_at = at;
    after(std::chrono::duration_cast<std::chrono::milliseconds>(std::max(at - Clock::now(), Clock::duration::zero())),
          [at](Impl& self) {
            if (self.m_retries_armed_at != at) return;  // superseded by an earlier tick
            self.m_retries_armed_at = Clock::time_point::max();
            self.run_retries();
          });
  }

  void run_retries() {
    const auto horizon = Clock::now() + std::chrono::milliseconds(10);
    while (!m_retry_at.empty() && m_retry_at.begin()->first <= horizon) {
      const auto [id, retry] = std::move(m_retry_at.begin()->second);
      m_retry_at.erase(m_retry_at.begin());
      const auto found = m_lag.find(id);
      if (found == m_lag.end() || found->second.retry != retry) continue;  // caught up meanwhile
      found->second.retry = 0;
      reload(id);
    }
    flush_reloads_soon();
    if (!m_retry_at.empty()) arm_retries(m_retry_at.begin()->first);
  }

  void caught_up(const std::string& id) {
    m_lag.erase(id);
    m_announced.erase(id);
    std::lock_guard lock(m_mutex);
    m_stale.erase(id);
  }

  // A message brought the entry to `revision` (or deleted it there): what a
  // lagging read was waiting for, when it reaches what was announced.
  void confirmed(const std::string& id, std::int64_t revision) {
    const auto announced = m_announced.find(id);
    if (announced == m_announced.end() ? m_lag.count(id) != 0 : announced->second <= revision) caught_up(id);
  }

  // --- resyncs (strand) -----------------------------------------------------

  void request_resync() {
    if (m_resync_posted) return;  // the one waiting covers this reason too
    m_resync_posted = true;
    asio::post(m_strand, [self = shared_from_this()] {
      self->step([&] {
        self->m_resync_posted = false;
        self->resync_now();
      });
    });
  }

  void retry_resync_later() {
    if (m_retry_posted) return;
    m_retry_posted = true;
    m_retry_backoff = std::min(m_retry_backoff * 2, std::chrono::milliseconds(2000));
    after(m_retry_backoff, [](Impl& self) {
      self.m_retry_posted = false;
      self.request_resync();
    });
  }

  void schedule_periodic_resync() {
    if (m_options.resync_every.count() <= 0) return;
    after(m_options.resync_every, [](Impl& self) {
      self.request_resync();
      self.schedule_periodic_resync();
    });
  }

  // Runs `work(*this)` as a step on the strand after `delay`, unless the view
  // is gone by then (the timer holds only a weak reference to it).
  template <class Work>
  void after(std::chrono::milliseconds delay, Work work) {
    auto timer = std::make_shared<asio::steady_timer>(m_strand, delay);
    timer->async_wait([weak = weak_from_this(), timer, work = std::move(work)](boost::system::error_code error) {
      auto self = weak.lock();
      if (error || !self) return;
      self->step([&] { work(*self); });
    });
  }

  // Reloads everything: rows the view lacks are added, vanished ones removed,
  // newer ones taken; the view's own newer entries are kept (a lagging read).
  void learn_deletions(const std::map<std::string, std::int64_t>& deletions) {
    const auto now = Clock::now();
    for (const auto& [id, revision] : deletions) m_tombstones.note(id, revision, now);
  }

  void resync_now() {
    forget_old_records();
    const auto rows = m_reload_store.read(m_options.type, m_options.where, std::nullopt);
    // A message older than this snapshot about an entry deleted before it
    // must not bring the entry back: the deletions' revisions keep it out.
    // Only the recent deletions matter (those whose late messages may still
    // come); twice the window allows for the clocks of other hosts.
    learn_deletions(m_reload_store.deletions(m_options.type, std::nullopt, 2 * m_options.forget_deleted_after));
    m_retry_backoff = std::chrono::milliseconds(50);
    std::map<std::string, const Json*> database;
    for (const auto& [id, row] : rows) database.emplace(id, &row);
    const auto snapshot_revision = [&](const std::string& id) -> std::int64_t {
      const auto row = database.find(id);
      return row != database.end() ? revision_of(*row->second).value_or(0) : 0;
    };
    const bool first = !m_loaded;
    std::vector<std::pair<std::string, const Json*>> updates;
    // Entries the snapshot is older than (a lagging replica): kept as they are.
    std::set<std::string> behind;
    {
      std::lock_guard lock(m_mutex);
      ++m_stats.resyncs;
      // A row at or below a known deletion's revision was read before the
      // deletion committed (the two reads are not one snapshot): it is gone.
      for (auto row = database.begin(); row != database.end();) {
        if (revision_of(*row->second).value_or(0) <= gone_at(row->first)) {
          row = database.erase(row);
        } else {
          ++row;
        }
      }
      for (auto entry = m_entries.begin(); entry != m_entries.end();) {
        const auto& id = entry->first;
        if (required(id, entry->second.revision) > std::max(snapshot_revision(id), gone_at(id))) {
          behind.insert(id);
          ++entry;
        } else if (database.count(id) == 0) {
          departed(id, entry->second.revision);
          m_changes.push_back({ChangeKind::removed, id, std::move(entry->second.body), nullptr});
          entry = m_entries.erase(entry);
          ++m_stats.resync_repairs;
        } else {
          ++entry;
        }
      }
      for (const auto& [id, row] : database) {
        const auto entry = m_entries.find(id);
        const std::int64_t revision = revision_of(*row).value_or(0);
        if (entry == m_entries.end() || entry->second.revision < revision) {
          updates.emplace_back(id, row);
          if (!first) ++m_stats.resync_repairs;
        }
      }
    }
    for (const auto& [id, row] : updates) set(id, *row, revision_of(*row).value_or(0));
    // What was due is covered, except where the snapshot lags behind what was
    // announced or what the view holds: those are retried (and stay stale, or
    // become so past the deadline); the others have caught up.
    m_due.clear();
    for (const auto& [id, announced] : m_announced) behind.insert(id);
    for (const auto& [id, lag] : m_lag) behind.insert(id);
    {
      std::lock_guard lock(m_mutex);
      behind.insert(m_stale.begin(), m_stale.end());
    }
    bool lags = false;
    for (const auto& id : behind) {
      if (required(id, held(id)) > std::max(snapshot_revision(id), gone_at(id))) {
        lagging(id);
        lags = true;
      } else {
        caught_up(id);
      }
    }
    if (!lags) {
      std::lock_guard lock(m_mutex);
      m_verified_at = Clock::now();
    }
    if (first) {
      m_loaded = true;
      {
        std::lock_guard lock(m_mutex);
        m_ready = true;
      }
      auto buffered = std::move(m_buffer);
      m_buffer.clear();
      {
        std::lock_guard lock(m_mutex);
        m_stats.messages += buffered.size();
      }
      for (const auto& message : buffered) apply(message, true);
    }
    flush_reloads_soon();
  }

  // --- change callbacks -----------------------------------------------------

  void fire_changes() {
    if (m_changes.empty()) return;
    auto changes = std::move(m_changes);
    m_changes.clear();
    if (!m_callback) return;
    for (const auto& change : changes) {
      try {
        m_callback(change);
      } catch (const std::exception& error) {
        {
          std::lock_guard lock(m_mutex);
          ++m_stats.callback_errors;
        }
        log(LogLevel::error, component,
            "view of " + m_options.type + ": a change callback threw: " + error.what());
      } catch (...) {
        std::lock_guard lock(m_mutex);
        ++m_stats.callback_errors;
      }
    }
  }

  struct Lag {
    Clock::time_point since;
    std::chrono::milliseconds backoff;
    std::uint64_t retry = 0;  ///< the pending retry's number (0: none)
  };

  mq::Connector& m_connector;
  std::unique_ptr<Source> m_owned_source;
  std::unique_ptr<Source> m_owned_reload;
  Source& m_store;
  Source& m_reload_store;
  // Reloads read another copy (a replica), which may lag behind the messages.
  const bool m_reload_may_lag;
  asio::strand<asio::any_io_executor> m_strand;
  ViewOptions m_options;
  detail::Lifecycle m_lifecycle;
  ChangeCallback m_callback;
  std::atomic<bool> m_started{false};
  std::atomic<bool> m_stopped{false};
  std::unique_ptr<mq::Consumer> m_messages;
  std::unique_ptr<mq::Consumer> m_schema;
  std::mutex m_step_mutex;
  std::atomic<std::size_t> m_remembered{0};  // set by each step

  // The inbox: m_inbox_mutex (taken after m_mutex, never before it).
  mutable std::mutex m_inbox_mutex;
  std::deque<Inbound> m_inbox;
  std::uint64_t m_inbox_messages = 0;  // the messages among m_inbox
  std::uint64_t m_inbox_peak = 0;
  std::uint64_t m_inbox_overflows = 0;
  std::uint64_t m_inbox_discarded = 0;
  bool m_inbox_overflowed = false;  // since the strand last looked
  bool m_inbox_scheduled = false;   // a drain is posted or running

  // Read from any thread: m_mutex.
  mutable std::mutex m_mutex;
  std::map<std::string, Entry> m_entries;
  ViewStats m_stats;
  std::set<std::string> m_stale;
  Clock::time_point m_verified_at;
  bool m_ready = false;

  // The strand's own.
  bool m_loaded = false;
  std::vector<Incoming> m_buffer;
  std::set<std::string> m_due;
  bool m_flush_posted = false;
  bool m_resync_posted = false;
  bool m_retry_posted = false;
  std::chrono::milliseconds m_retry_backoff{50};
  std::map<std::string, std::int64_t> m_announced;
  detail::ExpiringRevisions m_tombstones;  // id -> the revision it was deleted at
  std::map<std::string, Lag> m_lag;
  std::uint64_t m_retries = 0;
  std::multimap<Clock::time_point, std::pair<std::string, std::uint64_t>> m_retry_at;  // -> (id, retry)
  Clock::time_point m_retries_armed_at = Clock::time_point::max();
  std::uint64_t m_unlogged_stale = 0;  // flagged stale since the last line about it
  Clock::time_point m_stale_logged_at{};
  detail::ExpiringRevisions m_departed;  // id -> the revision it left the view at (0: back since)
  std::vector<Change> m_changes;
};

LiveView::LiveView(mq::Connector& connector, db::Store& store, asio::any_io_executor executor, ViewOptions options) {
  auto source = source_of(store);
  Source& borrowed = *source;
  m_impl = std::make_shared<Impl>(connector, borrowed, std::move(source), std::move(executor), std::move(options));
}

LiveView::LiveView(mq::Connector& connector, Source& source, asio::any_io_executor executor, ViewOptions options)
    : m_impl(std::make_shared<Impl>(connector, source, nullptr, std::move(executor), std::move(options))) {}

LiveView::~LiveView() { m_impl->stop(); }

void LiveView::on_change(ChangeCallback callback) { m_impl->set_callback(std::move(callback)); }
void LiveView::start() { m_impl->start(); }
bool LiveView::ready() const { return m_impl->ready(); }
std::optional<Json> LiveView::get(const std::string& id) const { return m_impl->get(id); }
std::map<std::string, Json> LiveView::entries() const { return m_impl->entries(); }
std::size_t LiveView::size() const { return m_impl->size(); }
ViewStats LiveView::stats() const { return m_impl->stats(); }
std::vector<Difference> LiveView::verify() { return m_impl->verify(); }
void LiveView::resync() { m_impl->resync_soon(); }

}  // namespace livestate::reconcile
