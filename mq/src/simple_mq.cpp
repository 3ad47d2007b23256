#include "livestate/mq/simple_mq.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "asymmetric_fence.hpp"
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
// copies the message to the back of the queue and returns; it is owed to
// whoever owns the message being delivered (the producer that waits for it),
// so that producer's call returns only once it is delivered too. A produce()
// from another thread while someone dispatches queues a reference to its
// message and waits until it has been delivered, by the dispatcher or by itself
// once the dispatcher has left: a dispatcher leaves as soon as everything it
// owns is delivered, handing the queue to the waiting threads. A dispatcher
// that an exception (out of memory) throws out of leaves the same way: what it
// still owned is delivered by the next one.
//
// Matching happens when a message is delivered, under the mutex, into a list
// of raw pointers; `m_in_flight` is set until the message's callbacks are done.
// Before each callback the dispatcher announces the subscription in
// `m_invoking` and only then checks that it is not stopped; a stop_consuming()
// in another thread during a flight sets the flag and only then reads
// `m_invoking`. A light fence on the dispatcher's side and a heavy one on the
// stopper's (asymmetric_fence.hpp: the rare side pays) make sure that either
// the dispatcher sees the stop or the stopper sees the callback about to run.
// The stopper waits only when that callback is its own; one inside a callback
// never waits, nor one between flights (the mutex orders it before the next). A subscription
// stopped during a flight is linked into `m_retired`, so that it outlives the
// raw pointers of the message in flight without allocating.
//
// A persistent queue stays in the index for the life of the SimpleMQ and gets
// only messages numbered after its creation. A message for it is delivered to
// its active subscription if that one started before the message, and
// otherwise kept in the queue's backlog (sorted by sequence). Resuming a queue
// puts a marker message in the sequence; when the marker is delivered, the
// backlog is, so the resumed consumer gets what it missed in order and before
// anything newer. Only the dispatcher touches a backlog, so it delivers it in
// place, without the mutex.
//
// Destroying the SimpleMQ closes its core: nothing more is delivered. A
// dispatcher (the destruction may come from one of its callbacks) and every
// producer waiting for it keep the core alive until they leave.

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
  std::shared_ptr<Subscription> next_retired;  // the list of those stopped during a flight

  Subscription(Callback cb, Filter f) : callback(std::move(cb)), filter(std::move(f)) {}
};

struct KeptMessage {
  std::uint64_t seq = 0;
  std::shared_ptr<const Message> message;
};

struct PersistentQueue final : Route {
  std::string name;
  Filter filter;
  std::uint64_t created_seq = 0;         // messages numbered up to this one predate it
  std::shared_ptr<Subscription> active;  // null while stopped
  std::deque<KeptMessage> backlog;       // sorted by seq

  PersistentQueue(std::string n, Filter f) : name(std::move(n)), filter(std::move(f)) { persistent = true; }

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
  ProduceCall* owner = nullptr;  // null: nobody waits for it
  // A resume marker: deliver `marker_queue`'s backlog to `marker_subscription`.
  PersistentQueue* marker_queue = nullptr;
  std::shared_ptr<Subscription> marker_subscription;
};

// A delivery target captured under the mutex: a subscription to call, or a
// persistent queue to keep the message for when its subscription can't take it.
struct Target {
  Subscription* subscription = nullptr;
  PersistentQueue* keep_in = nullptr;
  bool keep = false;  // set without the mutex, acted on with it
};

class SimpleMQCore;

// The dispatchers running on this thread, innermost first (a callback may
// produce on another SimpleMQ, which then dispatches inside this one's callback).
// `call` owns what the callbacks running now produce.
struct DispatchFrame {
  const SimpleMQCore* core;
  ProduceCall* call;
  DispatchFrame* outer;
};
thread_local DispatchFrame* t_frames = nullptr;

class SimpleMQCore final : public std::enable_shared_from_this<SimpleMQCore> {
 public:
  SimpleMQCore() noexcept { detail::register_membarrier(); }
  ~SimpleMQCore() = default;

  void produce(const RoutingKey& key, const Json& body);
  std::shared_ptr<Subscription> start(Callback callback, Filter filter,
                                      const std::optional<std::string>& persistent_name);
  void stop(const std::shared_ptr<Subscription>& subscription);
  ConnectorStats stats() const;
  // The connector is being destroyed: nothing more is delivered. `self` is its
  // reference; a dispatch in progress keeps it until it ends.
  void close(std::shared_ptr<SimpleMQCore> self) noexcept;

 private:
  using Pin = std::shared_ptr<SimpleMQCore>;
  class DispatchScope;
  class FlightScope;

  DispatchFrame* frame_here() const noexcept {
    for (auto* frame = t_frames; frame; frame = frame->outer) {
      if (frame->core == this) return frame;
    }
    return nullptr;
  }

  // Queues `item` (owned by `call`) and returns once everything `call` owns is
  // delivered, dispatching when nobody else does. Called with `lock` held; sets
  // `pin` when it waits (declare it before the lock).
  void queue_and_wait(std::unique_lock<std::mutex>& lock, QueuedItem item, ProduceCall& call, Pin& pin);
  // The dispatcher: delivers `first` (the fast path's message, owned by nobody)
  // if any, then queued items in order until `call` owns nothing undelivered.
  // Called with `lock` held; returns with it held.
  void dispatch(std::unique_lock<std::mutex>& lock, ProduceCall& call, QueuedItem* first, Pin& pin);
  // Delivers one message (or marker). Called with `lock` held; releases it
  // around the callbacks.
  void deliver(std::unique_lock<std::mutex>& lock, QueuedItem& item);
  void deliver_backlog(std::unique_lock<std::mutex>& lock, PersistentQueue& queue,
                       const std::shared_ptr<Subscription>& subscription);
  // Announces the subscription about to be invoked; false when it must not be.
  // Inline: it runs once per delivery.
  bool begin_invoke(Subscription& subscription) noexcept {
    // Announce, then check; stop() flags, then reads the announcement. Release:
    // a stopper that sees the dispatcher moved on also sees what the callback
    // before did.
    m_invoking.store(&subscription, std::memory_order_release);
    detail::asymmetric_fence_light();  // pairs with the heavy fence in stop()
    if (m_attention.load(std::memory_order_relaxed) != 0) [[unlikely]]
      return begin_invoke_attending(subscription);
    return !subscription.stopped.load(std::memory_order_acquire);
  }
  bool begin_invoke_attending(Subscription& subscription) noexcept;
  [[nodiscard]] bool closed() const noexcept { return (m_attention.load(std::memory_order_relaxed) & closed_bit) != 0; }
  void end_flight(std::unique_lock<std::mutex>& lock) noexcept;
  // Runs a callback; false when it threw (logged and counted).
  bool invoke(Subscription& subscription, const RoutingKey& key, const Json& body) noexcept;
  void log_callback_error(const Subscription& subscription, const RoutingKey& key, const char* what) noexcept;
  // Marks it stopped and takes it out of routing (once). Called with the mutex held.
  void withdraw(const std::shared_ptr<Subscription>& subscription) noexcept;
  // Drops a reference with the mutex released: the last one destroys a
  // callback, whose destructor may do anything (stop a consumer, say).
  static void release_unlocked(std::unique_lock<std::mutex>& lock,
                               std::shared_ptr<Subscription>& subscription) noexcept {
    lock.unlock();
    subscription.reset();
    lock.lock();
  }

  mutable std::mutex m_mutex;
  std::condition_variable m_items_delivered;  // a waiting producer's items were delivered, or the dispatcher left
  std::condition_variable m_invoke_done;      // m_invoking moved on from a subscription a stopper waits for
  detail::FilterIndex<Route*> m_index;
  std::map<std::string, std::unique_ptr<PersistentQueue>, std::less<>> m_persistent;
  std::deque<QueuedItem> m_queue;
  std::vector<Target> m_targets;            // the dispatcher's scratch list
  std::vector<Route*> m_routes;             // the dispatcher's scratch list
  std::shared_ptr<Subscription> m_retired;  // stopped during this flight, linked by next_retired
  Pin m_self_pin;                           // set by close() during a dispatch
  std::uint64_t m_seq = 0;
  std::uint64_t m_next_order = 0;
  bool m_dispatching = false;
  bool m_in_flight = false;
  std::atomic<Subscription*> m_invoking{nullptr};  // the callback running or about to run
  // Nonzero when the dispatcher must look up from its loop: closed_bit once
  // closed, plus stop_waiter for each stopper waiting for a callback. One word,
  // so that the loop tests one thing.
  static constexpr std::uint32_t closed_bit = 1;
  static constexpr std::uint32_t stop_waiter = 2;
  std::atomic<std::uint32_t> m_attention{0};
  std::size_t m_active_consumers = 0;
  std::size_t m_kept = 0;
  std::uint64_t m_produced = 0;
  std::uint64_t m_delivered = 0;
  std::uint64_t m_callback_errors = 0;
  std::uint64_t m_flight_delivered = 0;  // written by the dispatcher outside the lock
  std::uint64_t m_flight_errors = 0;
};

// Being the dispatcher: the frame that tells nested produce() calls whom they
// are owed to, and the way out, also when an exception leaves: relock, settle
// the item being delivered, hand what this call still owns to the next
// dispatcher, clear the flag and wake the waiting producers.
class SimpleMQCore::DispatchScope {
 public:
  DispatchScope(SimpleMQCore& core, std::unique_lock<std::mutex>& lock, ProduceCall& call, Pin& pin) noexcept
      : m_core(core), m_lock(lock), m_call(call), m_pin(pin), m_frame{&core, &call, t_frames} {
    core.m_dispatching = true;
    t_frames = &m_frame;
  }
  DispatchScope(const DispatchScope&) = delete;
  DispatchScope& operator=(const DispatchScope&) = delete;

  ~DispatchScope() {
    if (!m_lock.owns_lock()) m_lock.lock();
    if (m_item_open) end_item();  // cut short by an exception: as delivered as it will be
    if (m_call.pending > 0) {
      for (QueuedItem& queued : m_core.m_queue) {
        if (queued.owner == &m_call) queued.owner = nullptr;
      }
      m_call.pending = 0;
    }
    m_core.m_dispatching = false;
    if (!m_core.m_queue.empty()) m_core.m_items_delivered.notify_all();  // a waiter takes over
    t_frames = m_frame.outer;
    if (m_core.m_self_pin) m_pin = std::move(m_core.m_self_pin);  // released after the lock
  }

  // What the callbacks of `owner`'s item produce is owed to `owner`; an item
  // nobody waits for charges the dispatcher's own call.
  void begin_item(ProduceCall* owner) noexcept {
    m_owner = owner;
    m_frame.call = owner ? owner : &m_call;
    m_item_open = true;
  }

  void end_item() noexcept {
    m_item_open = false;
    m_frame.call = &m_call;
    if (m_owner == &m_call) {
      --m_call.pending;
    } else if (m_owner && --m_owner->pending == 0) {
      m_core.m_items_delivered.notify_all();
    }
  }

 private:
  SimpleMQCore& m_core;
  std::unique_lock<std::mutex>& m_lock;
  ProduceCall& m_call;
  Pin& m_pin;
  DispatchFrame m_frame;
  ProduceCall* m_owner = nullptr;
  bool m_item_open = false;
};

// One message's callbacks: m_in_flight set, and ended under the lock however
// the delivery leaves.
class SimpleMQCore::FlightScope {
 public:
  FlightScope(SimpleMQCore& core, std::unique_lock<std::mutex>& lock) noexcept : m_core(core), m_lock(lock) {
    core.m_in_flight = true;
  }
  FlightScope(const FlightScope&) = delete;
  FlightScope& operator=(const FlightScope&) = delete;
  ~FlightScope() {
    if (!m_lock.owns_lock()) m_lock.lock();
    m_core.end_flight(m_lock);
  }

 private:
  SimpleMQCore& m_core;
  std::unique_lock<std::mutex>& m_lock;
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
    // Counted once queued: a push that throws leaves nothing pending.
    m_queue.push_back(std::move(item));
    ++frame->call->pending;
    ++m_produced;
    return;
  }
  Pin pin;  // before the lock: it may hold the last reference to this core
  ProduceCall call;
  std::unique_lock lock(m_mutex);
  ++m_produced;
  QueuedItem item;
  item.seq = ++m_seq;
  item.key = &key;
  item.body = &body;
  if (!m_dispatching && m_queue.empty()) {
    // The fast path: deliver straight from the caller's key and body.
    dispatch(lock, call, &item, pin);
    return;
  }
  item.owner = &call;
  queue_and_wait(lock, std::move(item), call, pin);
}

void SimpleMQCore::queue_and_wait(std::unique_lock<std::mutex>& lock, QueuedItem item, ProduceCall& call, Pin& pin) {
  m_queue.push_back(std::move(item));
  ++call.pending;
  while (call.pending > 0) {
    if (!m_dispatching) {
      dispatch(lock, call, nullptr, pin);
      return;
    }
    // The connector may be destroyed, by a callback, while this waits.
    if (!pin) pin = shared_from_this();
    m_items_delivered.wait(lock);
  }
}

void SimpleMQCore::dispatch(std::unique_lock<std::mutex>& lock, ProduceCall& call, QueuedItem* first, Pin& pin) {
  DispatchScope scope(*this, lock, call, pin);
  if (first) deliver(lock, *first);
  while (call.pending > 0) {
    QueuedItem item = std::move(m_queue.front());
    m_queue.pop_front();
    scope.begin_item(item.owner);
    // Closed: what is queued is dropped, and its producers are released.
    if (!closed()) deliver(lock, item);
    scope.end_item();
    if (item.marker_subscription) release_unlocked(lock, item.marker_subscription);
  }
}

void SimpleMQCore::deliver(std::unique_lock<std::mutex>& lock, QueuedItem& item) {
  if (item.marker_queue) {
    deliver_backlog(lock, *item.marker_queue, item.marker_subscription);
    return;
  }
  m_routes.clear();
  if (m_index.collect(*item.key, m_routes) > 1) {
    std::sort(m_routes.begin(), m_routes.end(), [](const Route* a, const Route* b) { return a->order < b->order; });
  }
  m_targets.clear();
  for (Route* route : m_routes) {
    if (!route->persistent) {
      m_targets.push_back({static_cast<Subscription*>(route), nullptr});
    } else {
      auto* queue = static_cast<PersistentQueue*>(route);
      // A queue never gets what was produced before it existed.
      if (item.seq > queue->created_seq) m_targets.push_back({queue->active.get(), queue});
    }
  }
  if (m_targets.empty()) return;
  FlightScope flight(*this, lock);
  lock.unlock();
  bool keep = false;
  for (Target& target : m_targets) {
    Subscription* subscription = target.subscription;
    if (subscription && subscription->start_seq < item.seq && begin_invoke(*subscription)) {
      invoke(*subscription, *item.key, *item.body);
    } else if (target.keep_in) {
      target.keep = true;
      keep = true;
    }
  }
  lock.lock();
  if (keep && !closed()) {
    if (!item.owned) item.owned = std::make_shared<const Message>(Message{*item.key, *item.body});
    for (const Target& target : m_targets) {
      if (!target.keep) continue;
      target.keep_in->keep({item.seq, item.owned});
      ++m_kept;
    }
  }
}

void SimpleMQCore::deliver_backlog(std::unique_lock<std::mutex>& lock, PersistentQueue& queue,
                                   const std::shared_ptr<Subscription>& subscription) {
  // Stopped (or replaced) again before its backlog came up: keep it for the next one.
  if (queue.active != subscription || subscription->stopped.load() || queue.backlog.empty()) return;
  FlightScope flight(*this, lock);
  lock.unlock();
  // In place: what a consumer that stops itself halfway leaves is already
  // where the next resume finds it. Nothing here throws.
  std::size_t delivered = 0;
  if (begin_invoke(*subscription)) {
    do {
      const KeptMessage& next = queue.backlog.front();
      invoke(*subscription, next.message->key, next.message->body);
      queue.backlog.pop_front();
      ++delivered;
    } while (!queue.backlog.empty() && !subscription->stopped.load() && !closed());
  }
  lock.lock();
  m_kept -= delivered;
}

bool SimpleMQCore::begin_invoke_attending(Subscription& subscription) noexcept {
  if (m_attention.load(std::memory_order_relaxed) >= stop_waiter) {
    // A stopper may wait for the callback before: it is done. Taking the mutex
    // orders this after the stopper's check, so the notification is not lost.
    { std::lock_guard lock(m_mutex); }
    m_invoke_done.notify_all();
  }
  return !closed() && !subscription.stopped.load(std::memory_order_acquire);
}

void SimpleMQCore::end_flight(std::unique_lock<std::mutex>& lock) noexcept {
  m_delivered += m_flight_delivered;
  m_callback_errors += m_flight_errors;
  m_flight_delivered = 0;
  m_flight_errors = 0;
  m_in_flight = false;
  // Under the mutex, which a stopper holds while it looks: no fence needed.
  m_invoking.store(nullptr, std::memory_order_relaxed);
  if (m_attention.load(std::memory_order_relaxed) >= stop_waiter) m_invoke_done.notify_all();
  if (m_retired) {
    // Freed without the lock: a callback's destructor may do anything.
    auto retired = std::move(m_retired);
    lock.unlock();
    while (retired) retired = std::move(retired->next_retired);
    lock.lock();
  }
}

bool SimpleMQCore::invoke(Subscription& subscription, const RoutingKey& key, const Json& body) noexcept {
  try {
    subscription.callback(key, body);
    ++m_flight_delivered;
    return true;
  } catch (const std::exception& error) {
    ++m_flight_errors;
    log_callback_error(subscription, key, error.what());
  } catch (...) {
    ++m_flight_errors;
    log_callback_error(subscription, key, nullptr);
  }
  return false;
}

void SimpleMQCore::log_callback_error(const Subscription& subscription, const RoutingKey& key,
                                      const char* what) noexcept {
  if (!log_enabled(LogLevel::error)) return;
  try {
    std::string line = "consumer of " + subscription.filter.str() + " threw ";
    if (what) {
      line += "on " + key.str() + ": " + what;
    } else {
      line += "a non-standard exception on " + key.str();
    }
    log(LogLevel::error, log_component, line);
  } catch (...) {
    // Out of memory for the line: the error is still counted.
    log(LogLevel::error, log_component, "a consumer threw (no memory to say more)");
  }
}

std::shared_ptr<Subscription> SimpleMQCore::start(Callback callback, Filter filter,
                                                  const std::optional<std::string>& persistent_name) {
  if (!callback) throw std::invalid_argument("livestate::mq::SimpleMQ::start_consuming: empty callback");
  auto subscription = std::make_shared<Subscription>(std::move(callback), std::move(filter));
  Pin pin;  // before the lock: it may hold the last reference to this core
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
    // Stored before it is indexed, so the index never points to a queue that
    // failed to be stored.
    const auto stored = m_persistent
                            .emplace(*persistent_name,
                                     std::make_unique<PersistentQueue>(*persistent_name, subscription->filter))
                            .first;
    PersistentQueue& queue = *stored->second;
    queue.order = subscription->order;
    queue.created_seq = m_seq;
    try {
      m_index.insert(queue.filter, &queue);
    } catch (...) {
      m_persistent.erase(stored);
      throw;
    }
    queue.active = subscription;
    subscription->queue = &queue;
    subscription->start_seq = m_seq;
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
  try {
    if (DispatchFrame* frame = frame_here()) {
      marker.owner = frame->call;
      m_queue.push_back(std::move(marker));
      ++frame->call->pending;
      return subscription;
    }
    ProduceCall call;
    marker.owner = &call;
    queue_and_wait(lock, std::move(marker), call, pin);
  } catch (...) {
    // No handle will be returned, so the name must not stay taken.
    if (!lock.owns_lock()) lock.lock();
    withdraw(subscription);
    throw;
  }
  return subscription;
}

void SimpleMQCore::withdraw(const std::shared_ptr<Subscription>& subscription) noexcept {
  if (subscription->stopped.exchange(true, std::memory_order_seq_cst)) return;
  --m_active_consumers;
  if (subscription->queue) {
    if (subscription->queue->active == subscription) subscription->queue->active.reset();
  } else {
    m_index.erase(subscription->filter, subscription.get());
  }
  if (m_in_flight) {
    // The message in flight may still point to it.
    subscription->next_retired = std::move(m_retired);
    m_retired = subscription;
  }
}

void SimpleMQCore::stop(const std::shared_ptr<Subscription>& subscription) {
  std::unique_lock lock(m_mutex);
  withdraw(subscription);
  // Wait only for this subscription's own callback, running in another thread:
  // not for another consumer's, and not from inside a callback (its own would
  // never return). Between flights the mutex orders the flag before the next
  // flight's check.
  if (!m_in_flight || frame_here()) return;
  Subscription* const stopping = subscription.get();
  m_attention.fetch_add(stop_waiter, std::memory_order_relaxed);
  // After it, either the dispatcher sees the flag and this waiter, or this sees
  // the dispatcher's announcement (pairs with the light fence in begin_invoke).
  detail::asymmetric_fence_heavy();
  m_invoke_done.wait(lock, [&] { return m_invoking.load(std::memory_order_acquire) != stopping; });
  m_attention.fetch_sub(stop_waiter, std::memory_order_relaxed);
}

void SimpleMQCore::close(std::shared_ptr<SimpleMQCore> self) noexcept {
  std::lock_guard lock(m_mutex);
  m_attention.fetch_or(closed_bit, std::memory_order_relaxed);
  // Destroyed from a callback (or while another thread dispatches): the
  // dispatcher releases the core once it has left.
  if (m_dispatching) m_self_pin = std::move(self);
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
  explicit SimpleConsumer(std::weak_ptr<SimpleMQCore> core) : m_core(std::move(core)) {}
  ~SimpleConsumer() override { SimpleConsumer::stop_consuming(); }

  void attach(std::shared_ptr<Subscription> subscription) noexcept { m_subscription = std::move(subscription); }

  void stop_consuming() override {
    if (!m_subscription) return;
    if (auto core = m_core.lock()) core->stop(m_subscription);
  }

 private:
  std::weak_ptr<SimpleMQCore> m_core;
  std::shared_ptr<Subscription> m_subscription;
};

class SimpleMQ final : public Connector {
 public:
  SimpleMQ() : m_core(std::make_shared<SimpleMQCore>()) {}
  ~SimpleMQ() override {
    abort_waits();
    SimpleMQCore& core = *m_core;
    core.close(std::move(m_core));
  }

  void produce(const RoutingKey& key, const Json& body) override { m_core->produce(key, body); }

  std::unique_ptr<Consumer> start_consuming(Callback callback, Filter filter,
                                            std::optional<std::string> persistent_name) override {
    // The handle first: once the subscription is active, nothing may throw
    // before the handle that stops it is returned.
    auto consumer = std::make_unique<SimpleConsumer>(m_core);
    consumer->attach(m_core->start(std::move(callback), std::move(filter), persistent_name));
    return consumer;
  }

  ConnectorStats stats() const override { return m_core->stats(); }

 private:
  std::shared_ptr<SimpleMQCore> m_core;
};

}  // namespace

std::unique_ptr<Connector> make_simple_mq() { return std::make_unique<SimpleMQ>(); }

}  // namespace livestate::mq
