#include "simple_mq_core.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "livestate/core/error.hpp"
#include "livestate/core/log.hpp"

namespace livestate::mq::detail::simple {
namespace {

constexpr std::string_view log_component = "mq.simple";

thread_local DispatchFrame* t_frames = nullptr;

}  // namespace

DispatchFrame* SimpleMQCore::frame_here() const noexcept {
  for (auto* frame = t_frames; frame; frame = frame->outer) {
    if (frame->core == this) return frame;
  }
  return nullptr;
}

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

}  // namespace livestate::mq::detail::simple
