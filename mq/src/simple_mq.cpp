#include "livestate/mq/simple_mq.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <stdexcept>
#include <mutex>
#include <string>
#include <vector>

#include "filter_index.hpp"
#include "livestate/core/error.hpp"
#include "livestate/core/log.hpp"

namespace livestate::mq {
namespace {

// How it works.
//
// One mutex guards the index, the queue of undelivered messages and the
// persistent queues; callbacks always run with it released. Every message gets
// a sequence number under the mutex when it is produced; a consumer gets the
// messages numbered after the one current when it started.
//
// At most one thread is "the dispatcher" at a time. A produce() that finds
// nobody dispatching and nothing queued becomes the dispatcher and delivers its
// message directly from the caller's key and body (no copy, no queue): the
// fast path. A produce() from inside a callback (the dispatcher's own thread)
// copies the message to the back of the queue and returns. A produce() from
// another thread while someone dispatches queues a reference to its message and
// waits until it has been delivered, by the dispatcher or by itself once the
// dispatcher has left: a dispatcher leaves as soon as everything it produced
// (its message and what its callbacks produced) is delivered, handing the
// queue to the waiting threads.
//
// Matching happens when a message is delivered, under the mutex, into a list
// of raw pointers; `m_in_flight` is set until the message's callbacks are done.
// A stop_consuming() from another thread marks the subscription stopped and,
// when a message is in flight, waits for it, so that after it returns the
// callback never runs again and its subscription may be freed. A stop from
// inside a callback only marks it, and hands the subscription to `m_retired`
// so that it outlives the message being delivered.
//
// A persistent queue stays in the index for the life of the SimpleMQ. A
// message for it is delivered to its active subscription if that one started
// before the message, and otherwise kept in the queue's backlog (sorted by
// sequence). Resuming a queue puts a marker message in the sequence; when the
// marker is delivered, the backlog is, so the resumed consumer gets what it
// missed in order and before anything newer.

constexpr std::string_view log_component = "mq.simple";

struct Route {
  std::uint64_t order = 0;  // start order: delivery order among consumers
  bool persistent = false;
};

struct PersistentQueue;

struct Subscription final : Route {
  Callback callback;
  Filter filter;
  std::uint64_t start_seq = 0;
  std::atomic<bool> stopped{false};
  PersistentQueue* queue = nullptr;

  Subscription(Callback cb, Filter f) : callback(std::move(cb)), filter(std::move(f)) {}
};

struct KeptMessage {
  std::uint64_t seq = 0;
  std::shared_ptr<const Message> message;
};

struct PersistentQueue final : Route {
  std::string name;
  Filter filter;
  std::shared_ptr<Subscription> active;  // null while stopped
  std::deque<KeptMessage> backlog;       // sorted by seq

  PersistentQueue(std::string n, Filter f) : name(std::move(n)), filter(std::move(f)) {
    persistent = true;
  }

  void keep(KeptMessage kept) {
    auto at = std::upper_bound(backlog.begin(), backlog.end(), kept.seq,
                               [](std::uint64_t seq, const KeptMessage& m) { return seq < m.seq; });
    backlog.insert(at, std::move(kept));
  }
};

// One produce() or resume call, waiting for what it owns to be delivered.
struct ProduceCall {
  std::uint64_t pending = 0;
};

struct QueuedItem {
  std::uint64_t seq = 0;
  const RoutingKey* key = nullptr;  // borrowed from a waiting producer, or points into `owned`
  const Json* body = nullptr;
  std::shared_ptr<const Message> owned;
  ProduceCall* owner = nullptr;
  // A resume marker: deliver `marker_queue`'s backlog to `marker_subscription`.
  PersistentQueue* marker_queue = nullptr;
  std::shared_ptr<Subscription> marker_subscription;
};

// A delivery target captured under the mutex: a subscription to call, or a
// persistent queue to keep the message for when its subscription can't take it.
struct Target {
  Subscription* subscription = nullptr;
  PersistentQueue* keep_in = nullptr;
};

class SimpleMQCore;

// The dispatchers running on this thread, innermost first (a callback may
// produce on another SimpleMQ, which then dispatches inside this one's callback).
struct DispatchFrame {
  const SimpleMQCore* core;
  ProduceCall* call;
  DispatchFrame* outer;
};
thread_local DispatchFrame* t_frames = nullptr;

class SimpleMQCore final : public std::enable_shared_from_this<SimpleMQCore> {
 public:
  ~SimpleMQCore() = default;

  void produce(const RoutingKey& key, const Json& body);
  std::shared_ptr<Subscription> start(Callback callback, Filter filter,
                                      const std::optional<std::string>& persistent_name);
  void stop(const std::shared_ptr<Subscription>& subscription);
  ConnectorStats stats() const;

 private:
  class FrameScope {
   public:
    FrameScope(const SimpleMQCore* core, ProduceCall* call) : m_frame{core, call, t_frames} {
      t_frames = &m_frame;
    }
    ~FrameScope() { t_frames = m_frame.outer; }
    FrameScope(const FrameScope&) = delete;
    FrameScope& operator=(const FrameScope&) = delete;

   private:
    DispatchFrame m_frame;
  };

  DispatchFrame* frame_here() const noexcept {
    for (auto* frame = t_frames; frame; frame = frame->outer) {
      if (frame->core == this) return frame;
    }
    return nullptr;
  }

  // Queues `item` (owned by `call`) and returns once everything `call` owns is
  // delivered, dispatching when nobody else does. Called with `lock` held.
  void deliver_owned(std::unique_lock<std::mutex>& lock, QueuedItem item, ProduceCall& call);
  // The dispatcher's loop: delivers queued items in order until `call` owns
  // nothing undelivered. Called with `lock` held and m_dispatching set.
  void dispatch_until_done(std::unique_lock<std::mutex>& lock, ProduceCall& call);
  // Delivers one message (or marker). Called with `lock` held; releases it
  // around the callbacks.
  void deliver(std::unique_lock<std::mutex>& lock, QueuedItem& item);
  void deliver_backlog(std::unique_lock<std::mutex>& lock, PersistentQueue& queue,
                       const std::shared_ptr<Subscription>& subscription);
  void begin_flight() { m_in_flight = true; ++m_flight_number; }
  void end_flight(std::unique_lock<std::mutex>& lock);
  // Runs a callback; false when it threw (logged and counted).
  bool invoke(Subscription& subscription, const RoutingKey& key, const Json& body) noexcept;

  mutable std::mutex m_mutex;
  std::condition_variable m_items_delivered;    // a waiting producer's items were delivered, or the dispatcher left
  std::condition_variable m_flight_done;  // a message in flight finished
  detail::FilterIndex<Route*> m_index;
  std::map<std::string, std::unique_ptr<PersistentQueue>, std::less<>> m_persistent;
  std::deque<QueuedItem> m_queue;
  std::vector<Target> m_targets;  // the dispatcher's scratch list
  std::vector<Route*> m_routes;   // the dispatcher's scratch list
  std::vector<std::shared_ptr<Subscription>> m_retired;
  std::uint64_t m_seq = 0;
  std::uint64_t m_next_order = 0;
  bool m_dispatching = false;
  bool m_in_flight = false;
  std::uint64_t m_flight_number = 0;
  std::size_t m_stop_waiters = 0;
  std::size_t m_active_consumers = 0;
  std::size_t m_kept = 0;
  std::uint64_t m_produced = 0;
  std::uint64_t m_delivered = 0;
  std::uint64_t m_callback_errors = 0;
  std::uint64_t m_flight_delivered = 0;  // written by the dispatcher outside the lock
  std::uint64_t m_flight_errors = 0;
};

void SimpleMQCore::produce(const RoutingKey& key, const Json& body) {
  if (DispatchFrame* frame = frame_here()) {
    // From inside a callback: after the current message, in order.
    auto owned = std::make_shared<const Message>(Message{key, body});
    std::lock_guard lock(m_mutex);
    QueuedItem item;
    item.seq = ++m_seq;
    item.key = &owned->key;
    item.body = &owned->body;
    item.owned = std::move(owned);
    item.owner = frame->call;
    ++frame->call->pending;
    ++m_produced;
    m_queue.push_back(std::move(item));
    return;
  }
  ProduceCall call;
  std::unique_lock lock(m_mutex);
  ++m_produced;
  QueuedItem item;
  item.seq = ++m_seq;
  item.key = &key;
  item.body = &body;
  if (!m_dispatching && m_queue.empty()) {
    // The fast path: deliver straight from the caller's key and body.
    m_dispatching = true;
    FrameScope scope(this, &call);
    deliver(lock, item);
    dispatch_until_done(lock, call);
    return;
  }
  item.owner = &call;
  deliver_owned(lock, std::move(item), call);
}

void SimpleMQCore::deliver_owned(std::unique_lock<std::mutex>& lock, QueuedItem item,
                                 ProduceCall& call) {
  ++call.pending;
  m_queue.push_back(std::move(item));
  while (call.pending > 0) {
    if (!m_dispatching) {
      m_dispatching = true;
      FrameScope scope(this, &call);
      dispatch_until_done(lock, call);
      return;
    }
    m_items_delivered.wait(lock);
  }
}

void SimpleMQCore::dispatch_until_done(std::unique_lock<std::mutex>& lock, ProduceCall& call) {
  while (call.pending > 0) {
    QueuedItem item = std::move(m_queue.front());
    m_queue.pop_front();
    deliver(lock, item);
    if (item.owner && item.owner != &call && --item.owner->pending == 0) {
      m_items_delivered.notify_all();
    } else if (item.owner == &call) {
      --call.pending;
    }
  }
  m_dispatching = false;
  // Whoever waits with undelivered items takes over.
  if (!m_queue.empty()) m_items_delivered.notify_all();
}

void SimpleMQCore::deliver(std::unique_lock<std::mutex>& lock, QueuedItem& item) {
  if (item.marker_queue) {
    deliver_backlog(lock, *item.marker_queue, item.marker_subscription);
    return;
  }
  m_routes.clear();
  if (m_index.collect(*item.key, m_routes) > 1) {
    std::sort(m_routes.begin(), m_routes.end(),
              [](const Route* a, const Route* b) { return a->order < b->order; });
  }
  if (m_routes.empty()) return;
  m_targets.clear();
  for (Route* route : m_routes) {
    if (!route->persistent) {
      m_targets.push_back({static_cast<Subscription*>(route), nullptr});
    } else {
      auto* queue = static_cast<PersistentQueue*>(route);
      m_targets.push_back({queue->active.get(), queue});
    }
  }
  begin_flight();
  lock.unlock();
  std::vector<PersistentQueue*> keep_in;
  for (const Target& target : m_targets) {
    Subscription* subscription = target.subscription;
    const bool deliverable = subscription && subscription->start_seq < item.seq &&
                             !subscription->stopped.load(std::memory_order_acquire);
    if (deliverable) {
      invoke(*subscription, *item.key, *item.body);
    } else if (target.keep_in) {
      keep_in.push_back(target.keep_in);
    }
  }
  lock.lock();
  if (!keep_in.empty()) {
    if (!item.owned) item.owned = std::make_shared<const Message>(Message{*item.key, *item.body});
    for (PersistentQueue* queue : keep_in) queue->keep({item.seq, item.owned});
    m_kept += keep_in.size();
  }
  end_flight(lock);
}

void SimpleMQCore::deliver_backlog(std::unique_lock<std::mutex>& lock, PersistentQueue& queue,
                                   const std::shared_ptr<Subscription>& subscription) {
  // Stopped (or replaced) again before its backlog came up: keep it for the next one.
  if (queue.active != subscription || subscription->stopped.load()) return;
  std::deque<KeptMessage> backlog;
  backlog.swap(queue.backlog);
  m_kept -= backlog.size();
  begin_flight();
  lock.unlock();
  while (!backlog.empty() && !subscription->stopped.load(std::memory_order_acquire)) {
    invoke(*subscription, backlog.front().message->key, backlog.front().message->body);
    backlog.pop_front();
  }
  lock.lock();
  // Stopped from its own callback halfway: the rest waits for the next resume.
  m_kept += backlog.size();
  for (auto& kept : backlog) queue.keep(std::move(kept));
  end_flight(lock);
}

void SimpleMQCore::end_flight(std::unique_lock<std::mutex>& lock) {
  m_delivered += m_flight_delivered;
  m_callback_errors += m_flight_errors;
  m_flight_delivered = 0;
  m_flight_errors = 0;
  m_in_flight = false;
  if (m_stop_waiters > 0) m_flight_done.notify_all();
  if (!m_retired.empty()) {
    // Freed without the lock: a callback's destructor may do anything.
    auto retired = std::move(m_retired);
    m_retired.clear();
    lock.unlock();
    retired.clear();
    lock.lock();
  }
}

bool SimpleMQCore::invoke(Subscription& subscription, const RoutingKey& key,
                          const Json& body) noexcept {
  try {
    subscription.callback(key, body);
    ++m_flight_delivered;
    return true;
  } catch (const std::exception& error) {
    ++m_flight_errors;
    log(LogLevel::error, log_component,
        "consumer of " + subscription.filter.str() + " threw on " + key.str() + ": " + error.what());
  } catch (...) {
    ++m_flight_errors;
    log(LogLevel::error, log_component,
        "consumer of " + subscription.filter.str() + " threw a non-standard exception on " + key.str());
  }
  return false;
}

std::shared_ptr<Subscription> SimpleMQCore::start(Callback callback, Filter filter,
                                                  const std::optional<std::string>& persistent_name) {
  if (!callback) throw std::invalid_argument("livestate::mq::SimpleMQ::start_consuming: empty callback");
  auto subscription = std::make_shared<Subscription>(std::move(callback), std::move(filter));
  std::unique_lock lock(m_mutex);
  subscription->order = m_next_order++;
  if (!persistent_name) {
    subscription->start_seq = m_seq;
    m_index.insert(subscription->filter, subscription.get());
    ++m_active_consumers;
    return subscription;
  }
  auto found = m_persistent.find(*persistent_name);
  if (found == m_persistent.end()) {
    auto queue = std::make_unique<PersistentQueue>(*persistent_name, subscription->filter);
    queue->order = subscription->order;
    queue->active = subscription;
    subscription->queue = queue.get();
    subscription->start_seq = m_seq;
    m_index.insert(queue->filter, queue.get());
    m_persistent.emplace(*persistent_name, std::move(queue));
    ++m_active_consumers;
    return subscription;
  }
  PersistentQueue& queue = *found->second;
  if (queue.active) {
    throw PersistentNameInUse("persistent consumer \"" + queue.name +
                              "\" is already active; stop it first, or use another name");
  }
  if (!(queue.filter == subscription->filter)) {
    throw PersistentNameInUse("persistent consumer \"" + queue.name + "\" was created with filter " +
                              queue.filter.str() + ", not " + subscription->filter.str() +
                              "; resume it with the same filter, or use another name");
  }
  subscription->queue = &queue;
  queue.active = subscription;
  ++m_active_consumers;
  // The marker's number is the resume's place in the sequence: everything
  // before it is in the backlog when the marker is delivered.
  QueuedItem marker;
  marker.seq = ++m_seq;
  subscription->start_seq = marker.seq;
  marker.marker_queue = &queue;
  marker.marker_subscription = subscription;
  if (DispatchFrame* frame = frame_here()) {
    marker.owner = frame->call;
    ++frame->call->pending;
    m_queue.push_back(std::move(marker));
    return subscription;
  }
  ProduceCall call;
  marker.owner = &call;
  deliver_owned(lock, std::move(marker), call);
  return subscription;
}

void SimpleMQCore::stop(const std::shared_ptr<Subscription>& subscription) {
  std::unique_lock lock(m_mutex);
  if (!subscription->stopped.exchange(true)) {
    --m_active_consumers;
    if (subscription->queue) {
      if (subscription->queue->active == subscription) subscription->queue->active.reset();
    } else {
      m_index.erase(subscription->filter, subscription.get());
    }
  }
  if (!m_in_flight) return;
  if (frame_here()) {
    // From a callback: the message in flight may still point to it.
    m_retired.push_back(subscription);
    return;
  }
  const auto flight = m_flight_number;
  ++m_stop_waiters;
  m_flight_done.wait(lock, [&] { return !m_in_flight || m_flight_number != flight; });
  --m_stop_waiters;
}

ConnectorStats SimpleMQCore::stats() const {
  std::lock_guard lock(m_mutex);
  ConnectorStats stats;
  stats.produced = m_produced;
  stats.delivered = m_delivered;
  stats.callback_errors = m_callback_errors;
  stats.consumers = m_active_consumers;
  stats.kept_for_persistent = m_kept;
  return stats;
}

class SimpleConsumer final : public Consumer {
 public:
  SimpleConsumer(std::weak_ptr<SimpleMQCore> core, std::shared_ptr<Subscription> subscription)
      : m_core(std::move(core)), m_subscription(std::move(subscription)) {}
  ~SimpleConsumer() override { SimpleConsumer::stop_consuming(); }

  void stop_consuming() override {
    if (auto core = m_core.lock()) core->stop(m_subscription);
  }

 private:
  std::weak_ptr<SimpleMQCore> m_core;
  std::shared_ptr<Subscription> m_subscription;
};

class SimpleMQ final : public Connector {
 public:
  SimpleMQ() : m_core(std::make_shared<SimpleMQCore>()) {}
  ~SimpleMQ() override { abort_waits(); }

  void produce(const RoutingKey& key, const Json& body) override { m_core->produce(key, body); }

  std::unique_ptr<Consumer> start_consuming(Callback callback, Filter filter,
                                            std::optional<std::string> persistent_name) override {
    auto subscription = m_core->start(std::move(callback), std::move(filter), persistent_name);
    return std::make_unique<SimpleConsumer>(m_core, std::move(subscription));
  }

  ConnectorStats stats() const override { return m_core->stats(); }

 private:
  std::shared_ptr<SimpleMQCore> m_core;
};

}  // namespace

std::unique_ptr<Connector> make_simple_mq() { return std::make_unique<SimpleMQ>(); }

}  // namespace livestate::mq
