#pragma once

// SimpleMQ's engine: routing, dispatch and persistent queues in one process
// (livestate/mq/simple_mq.hpp is the facade).
//
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

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "asymmetric_fence.hpp"
#include "filter_index.hpp"
#include "livestate/mq/connector.hpp"

// In a namespace of its own: other parts of the connectors have types of
// these names (Subscription, Route) in detail.
namespace livestate::mq::detail::simple {

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

  // This thread's dispatch frame of this core, if it dispatches for it.
  DispatchFrame* frame_here() const noexcept;

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

}  // namespace livestate::mq::detail::simple
