// LiveView's driver: the machinery around the view's rules (view_rules.hpp).
// It subscribes, queues what the connector delivers (view_inbox.hpp), runs
// the rules on a strand, runs the reads they ask for through the Source, arms
// their timers and announces their changes.
//
// Two locks, one job each: m_inbox_mutex between the connector's threads and
// the strand; m_mutex over the rules, for the strand and the view's readers
// (get(), stats()…), and over stopping. A read runs on the strand with no
// lock held, so that stop() never waits for a query: it waits only for the
// rules' work in progress (short) and a change callback in progress.

#include "livestate/reconcile/live_view.hpp"

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "livestate/core/filter.hpp"
#include "livestate/core/log.hpp"
#include "livestate/mq/connector.hpp"
#include "livestate/mq/control.hpp"
#include "livestate/reconcile/source.hpp"
#include "view_inbox.hpp"
#include "view_rules.hpp"

namespace livestate::reconcile {

namespace asio = boost::asio;
using detail::Clock;

namespace {

constexpr const char* component = "reconcile";

// Messages taken from the inbox at a time: then the strand is given back to
// the executor's other work until the next batch.
constexpr std::size_t inbox_batch = 256;

// Room for this many changes is kept between steps; a larger step's (a load)
// is given back.
constexpr std::size_t retained_changes = 1024;

}  // namespace

class LiveView::Impl : public std::enable_shared_from_this<LiveView::Impl> {
 public:
  Impl(mq::Connector& connector, Source& source, std::unique_ptr<Source> owned, asio::any_io_executor executor,
       const ViewOptions& options)
      : m_connector(connector),
        m_owned_source(std::move(owned)),
        m_owned_reload(options.reload_from != nullptr && options.reload_source == nullptr
                           ? source_of(*options.reload_from)
                           : nullptr),
        m_source(source),
        m_reload_source(options.reload_source != nullptr ? *options.reload_source
                        : m_owned_reload                 ? *m_owned_reload
                                                         : source),
        m_strand(asio::make_strand(std::move(executor))),
        m_rules(options, &m_reload_source != &m_source, Clock::now()),
        m_inbox(options.max_queued) {}

  void set_callback(ChangeCallback callback) {
    std::lock_guard lock(m_mutex);
    if (m_started) throw std::logic_error("LiveView::on_change() after start()");
    m_callback = std::move(callback);
  }

  void start() {
    bool announce = false;
    {
      std::lock_guard lock(m_mutex);
      if (m_started) throw std::logic_error("LiveView::start() called twice");
      if (m_stopped) throw std::logic_error("LiveView::start() after stop()");
      m_started = true;
      announce = static_cast<bool>(m_callback);
    }
    std::weak_ptr<Impl> weak = weak_from_this();
    mq::ConsumeOptions consume;
    consume.on_control = [weak](const mq::ControlEvent& event) {
      if (auto self = weak.lock()) self->receive(event);
    };
    // One path per event: TYPE.ID.EVENT (the other paths are longer).
    auto messages = m_connector.start_consuming(
        [weak](const RoutingKey& key, const Json& body) {
          if (auto self = weak.lock()) self->receive(detail::Incoming{key, body});
        },
        Filter{m_rules.type(), std::nullopt, std::nullopt}, std::move(consume));
    // schema.<version>.migrated, and another migration set's
    // schema.<set>.<version>.migrated: the rows a source reads through it
    // (Buildbot's) may have changed too. One consumer for both.
    auto schema = m_connector.start_consuming(
        [weak](const RoutingKey& key, const Json&) {
          if ((key.size() != 3 && key.size() != 4) || key[key.size() - 1] != "migrated") return;
          if (auto self = weak.lock()) self->receive(detail::SchemaMigrated{});
        },
        Filter::parse("schema.#"));
    {
      std::lock_guard lock(m_mutex);
      if (m_stopped) return;  // by another thread meanwhile: the consumers stop here
      m_messages = std::move(messages);
      m_schema = std::move(schema);
    }
    // Without a callback (set before start()), the rules make no changes.
    on_strand([announce](detail::ViewRules& rules, Clock::time_point now) {
      rules.announce_changes(announce);
      rules.start(now);
    });
  }

  // Returns at once, also while a read runs on the strand: its result is
  // discarded. Waits only for a change callback in progress in another thread.
  void stop() noexcept {
    std::unique_ptr<mq::Consumer> messages, schema;
    {
      std::lock_guard lock(m_mutex);
      m_stopped = true;
      messages = std::move(m_messages);
      schema = std::move(m_schema);
    }
    messages.reset();  // once these return, the connector calls nothing of the view's
    schema.reset();
    std::unique_lock lock(m_mutex);
    m_announced.wait(lock,
                     [&] { return m_announcing == std::thread::id() || m_announcing == std::this_thread::get_id(); });
    if (m_announcing == std::thread::id()) m_callback = nullptr;  // its captures go now, not with the last read
    if (std::exchange(m_timers_cancelled, true)) return;
    lock.unlock();
    // The timers go too, so that the executor's run() need not wait for them.
    asio::post(m_strand, [self = shared_from_this()] {
      for (const auto& weak : self->m_timers) {
        if (const auto timer = weak.lock()) timer->cancel();
      }
    });
  }

  bool ready() const {
    std::lock_guard lock(m_mutex);
    return m_rules.ready();
  }

  std::optional<Json> get(const std::string& id) const {
    std::lock_guard lock(m_mutex);
    const auto& entries = m_rules.entries();
    const auto found = entries.find(id);
    if (found == entries.end()) return std::nullopt;
    return entries.body(found->second);
  }

  std::map<std::string, Json> entries() const {
    std::lock_guard lock(m_mutex);
    const auto& entries = m_rules.entries();
    std::map<std::string, Json> copy;
    for (const auto* entry : entries.sorted()) copy.emplace_hint(copy.end(), entry->first, entries.body(entry->second));
    return copy;
  }

  std::size_t size() const {
    std::lock_guard lock(m_mutex);
    return m_rules.entries().size();
  }

  ViewStats stats() const {
    ViewStats stats;
    {
      std::lock_guard lock(m_mutex);
      stats = m_rules.stats(Clock::now());
      stats.callback_errors = m_callback_errors;
      stats.work_pending += static_cast<std::uint64_t>(m_reading);
    }
    std::lock_guard inbox(m_inbox_mutex);
    stats.queued = m_inbox.queued();
    stats.queued_peak = m_inbox.peak();
    stats.queue_overflows += m_inbox.overflows();
    stats.messages_discarded += m_inbox.discarded();
    stats.work_pending += static_cast<std::uint64_t>(m_inbox.draining());
    return stats;
  }

  std::vector<Difference> verify() {
    const auto rows = m_source.read(m_rules.type(), m_rules.where(), std::nullopt);
    std::lock_guard lock(m_mutex);
    return m_rules.compare(rows, Clock::now());
  }

  void resync_soon() {
    on_strand([](detail::ViewRules& rules, Clock::time_point) { rules.resync_requested(); });
  }

 private:
  // --- steps (strand) ---------------------------------------------------------

  // Runs `work(rules, now)` under the lock unless the view has stopped (false
  // then), then does what the rules asked: posts a read, arms timers,
  // announces changes (outside the lock, so that a callback may call get()).
  template <class Work>
  bool step(Work&& work) {
    {
      std::lock_guard lock(m_mutex);
      if (m_stopped) return false;
      work(m_rules, Clock::now());
      m_rules.take_actions(m_actions);
      if (!m_actions.changes.empty()) {
        if (m_callback) {
          m_announcing = std::this_thread::get_id();
        } else {
          m_actions.changes.clear();
        }
      }
    }
    if (m_actions.read) asio::post(m_strand, [self = shared_from_this()] { self->read(); });
    for (const auto& timer : m_actions.timers) arm(timer);
    if (!m_actions.changes.empty()) announce();
    return true;
  }

  template <class Work>
  void on_strand(Work work) {
    asio::post(m_strand, [self = shared_from_this(), work = std::move(work)] { self->step(work); });
  }

  void announce() {
    std::uint64_t errors = 0;
    for (const auto& change : m_actions.changes) {
      if (m_stopped.load(std::memory_order_relaxed)) break;  // stopped meanwhile (by another thread, or this callback)
      try {
        m_callback(change);
      } catch (const std::exception& error) {
        ++errors;
        log(LogLevel::error, component, "view of " + m_rules.type() + ": a change callback threw: " + error.what());
      } catch (...) {
        ++errors;
      }
    }
    // The bodies go now, not at the next step: after a load, they would be
    // every entry's body again, as Json.
    m_actions.changes.clear();
    if (m_actions.changes.capacity() > retained_changes) m_actions.changes.shrink_to_fit();
    std::lock_guard lock(m_mutex);
    m_callback_errors += errors;
    m_announcing = std::thread::id();
    if (m_stopped) m_announced.notify_all();
  }

  // Runs `timer` as a step on the strand when it is due, unless the view is
  // gone or stopped by then (the timer holds only a weak reference to it).
  void arm(const detail::Timer& timer) {
    auto steady = std::make_shared<asio::steady_timer>(m_strand, timer.at);
    std::erase_if(m_timers, [](const auto& weak) { return weak.expired(); });
    m_timers.push_back(steady);
    steady->async_wait([weak = weak_from_this(), steady, timer](boost::system::error_code error) {
      auto self = weak.lock();
      if (error || !self) return;
      self->step([&](detail::ViewRules& rules, Clock::time_point now) { rules.timer_fired(timer, now); });
    });
  }

  // --- the inbox ----------------------------------------------------------------

  // From the connector's callbacks (any thread), in the order it delivers.
  void receive(detail::Inbound inbound) {
    bool drain = false;
    {
      std::lock_guard lock(m_inbox_mutex);
      drain = m_inbox.push(std::move(inbound));
    }
    if (drain) asio::post(m_strand, [self = shared_from_this()] { self->drain_inbox(); });
  }

  // The strand: a batch from the inbox, each a step.
  void drain_inbox() {
    m_batch.clear();
    bool overflowed = false;
    {
      std::lock_guard lock(m_inbox_mutex);
      overflowed = m_inbox.take(m_batch, inbox_batch);
    }
    // What arrived after the overflow comes after the resync it asks for.
    if (overflowed && !step([](detail::ViewRules& rules, Clock::time_point) { rules.inbox_overflowed(); })) return;
    for (auto& inbound : m_batch) {
      if (!step([&](detail::ViewRules& rules, Clock::time_point now) { rules.receive(std::move(inbound), now); })) {
        return;
      }
    }
    {
      std::lock_guard lock(m_inbox_mutex);
      if (!m_inbox.more()) return;
    }
    asio::post(m_strand, [self = shared_from_this()] { self->drain_inbox(); });
  }

  // --- reads (strand, no lock held) ---------------------------------------------

  void read() {
    std::optional<detail::Read> read;
    if (!step([&](detail::ViewRules& rules, Clock::time_point now) {
          read = rules.next_read(now);
          m_reading = read.has_value();
        }) ||
        !read) {
      return;
    }
    // Its result or its failure clears m_reading (a stopped view stays reading).
    detail::ReadResult result;
    try {
      result = run(*read);
    } catch (const std::logic_error&) {
      // A programming error (an unknown field in `where`): surfaces from the
      // executor, unless the view has stopped meanwhile.
      if (step([&](detail::ViewRules& rules, Clock::time_point now) {
            m_reading = false;
            rules.read_failed(*read, false, now);
          })) {
        throw;
      }
      return;
    } catch (const std::exception& error) {
      log(LogLevel::warning, component, "view of " + m_rules.type() + ": " + error.what() + "; retrying by a resync");
      step([&](detail::ViewRules& rules, Clock::time_point now) {
        m_reading = false;
        rules.read_failed(*read, true, now);
      });
      return;
    }
    // Once stopped, the result is discarded here.
    step([&](detail::ViewRules& rules, Clock::time_point now) {
      m_reading = false;
      rules.read_done(*read, std::move(result), now);
    });
  }

  detail::ReadResult run(const detail::Read& read) {
    detail::ReadResult result;
    if (read.kind == detail::Read::Kind::snapshot) {
      if (read.since) {
        if (auto changes = m_reload_source.changes_since(m_rules.type(), *read.since)) {
          result.full = false;
          result.rows = std::move(changes->rows);
          result.deletions = std::move(changes->deletions);
          result.watermark = std::move(changes->watermark);
          return result;
        }
      }
      // Before the rows: a change made meanwhile is found by the next
      // resync, if not by this one.
      result.watermark = m_reload_source.watermark(m_rules.type());
    }
    result.rows = m_reload_source.read(m_rules.type(), read.where, read.ids);
    if (!read.ids) {
      result.deletions = m_reload_source.deletions(m_rules.type(), std::nullopt, read.deletions_within);
    } else if (result.rows.size() < read.ids->size()) {
      std::vector<std::string> missing;
      for (const auto& id : *read.ids) {
        if (result.rows.count(id) == 0) missing.push_back(id);
      }
      result.deletions = m_reload_source.deletions(m_rules.type(), std::move(missing), std::nullopt);
    }
    return result;
  }

  mq::Connector& m_connector;
  std::unique_ptr<Source> m_owned_source;
  std::unique_ptr<Source> m_owned_reload;
  Source& m_source;
  Source& m_reload_source;
  asio::strand<asio::any_io_executor> m_strand;

  // m_mutex: the rules, and what stop() looks at.
  mutable std::mutex m_mutex;
  detail::ViewRules m_rules;
  ChangeCallback m_callback;
  std::uint64_t m_callback_errors = 0;
  bool m_reading = false;  // a read runs on the strand (ViewStats::work_pending)
  std::unique_ptr<mq::Consumer> m_messages;
  std::unique_ptr<mq::Consumer> m_schema;
  bool m_started = false;
  std::atomic<bool> m_stopped{false};  // also read, without the lock, between callbacks
  bool m_timers_cancelled = false;
  std::thread::id m_announcing;  // the thread calling the change callback, if one is
  std::condition_variable m_announced;

  // m_inbox_mutex: the inbox.
  mutable std::mutex m_inbox_mutex;
  detail::ViewInbox m_inbox;

  // The strand's own.
  detail::Actions m_actions;
  std::vector<detail::Inbound> m_batch;
  std::vector<std::weak_ptr<asio::steady_timer>> m_timers;
};

LiveView::LiveView(mq::Connector& connector, db::Store& store, asio::any_io_executor executor, ViewOptions options) {
  auto source = source_of(store);
  Source& borrowed = *source;
  m_impl = std::make_shared<Impl>(connector, borrowed, std::move(source), std::move(executor), options);
}

LiveView::LiveView(mq::Connector& connector, Source& source, asio::any_io_executor executor, ViewOptions options)
    : m_impl(std::make_shared<Impl>(connector, source, nullptr, std::move(executor), options)) {}

LiveView::~LiveView() { m_impl->stop(); }

void LiveView::on_change(ChangeCallback callback) { m_impl->set_callback(std::move(callback)); }
void LiveView::start() { m_impl->start(); }
void LiveView::stop() noexcept { m_impl->stop(); }
bool LiveView::ready() const { return m_impl->ready(); }
std::optional<Json> LiveView::get(const std::string& id) const { return m_impl->get(id); }
std::map<std::string, Json> LiveView::entries() const { return m_impl->entries(); }
std::size_t LiveView::size() const { return m_impl->size(); }
ViewStats LiveView::stats() const { return m_impl->stats(); }
std::vector<Difference> LiveView::verify() { return m_impl->verify(); }
void LiveView::resync() { m_impl->resync_soon(); }

}  // namespace livestate::reconcile
