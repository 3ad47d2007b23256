#pragma once

// Hands what the listener received to the consumers' queues: each message to
// the queues whose filter matches its key (found through the filter index),
// each control event to every queue that takes control events, in order.
// Nothing here runs a callback: a queue is drained on its consumer's strand,
// so handing over is quick and the listener does it in its own strand.

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include "filter_index.hpp"
#include "livestate/mq/consumer.hpp"
#include "subscriber.hpp"

namespace livestate::mq::detail {

class Dispatcher;

/// A consumer's queue, joined to a dispatcher; stop() (or the destructor)
/// leaves it and stops the queue.
class Subscription {
 public:
  Subscription() = default;
  Subscription(std::shared_ptr<Dispatcher> dispatcher, std::shared_ptr<Subscriber> subscriber)
      : m_dispatcher(std::move(dispatcher)), m_subscriber(std::move(subscriber)) {}
  Subscription(Subscription&&) noexcept = default;
  Subscription& operator=(Subscription&& other) noexcept {
    stop();
    m_dispatcher = std::move(other.m_dispatcher);
    m_subscriber = std::move(other.m_subscriber);
    return *this;
  }
  ~Subscription() { stop(); }

  /// Waits for a callback in progress in another thread; idempotent.
  void stop() noexcept;
  [[nodiscard]] Subscriber* subscriber() const noexcept { return m_subscriber.get(); }

 private:
  std::shared_ptr<Dispatcher> m_dispatcher;
  std::shared_ptr<Subscriber> m_subscriber;
};

/// A consumer without a persistent name: its queue, stopped with it.
class SubscriptionConsumer final : public Consumer {
 public:
  explicit SubscriptionConsumer(Subscription subscription) : m_subscription(std::move(subscription)) {}
  ~SubscriptionConsumer() override { stop_consuming(); }
  void stop_consuming() override { m_subscription.stop(); }

 private:
  Subscription m_subscription;
};

/// Thread safety: every function may be called from any thread; deliver()
/// from one thread at a time (the listener's strand).
class Dispatcher final : public std::enable_shared_from_this<Dispatcher> {
 public:
  Dispatcher(boost::asio::any_io_executor executor, std::size_t bound, std::shared_ptr<DispatchCounters> counters)
      : m_executor(std::move(executor)), m_bound(bound), m_counters(std::move(counters)) {}

  /// A queue of its own for a consumer: the messages that match `filter`
  /// and, with `on_control`, control events. Refused (a stopped queue) once
  /// the dispatcher is stopped.
  [[nodiscard]] Subscription subscribe(const Filter& filter, std::string name, Subscriber::MessageHandler on_message,
                                       ControlCallback on_control);

  /// Hands `items` over, in order (moving from them).
  void deliver(std::vector<Item>& items);

  /// Stops every queue; nothing is delivered afterwards. Waits for callbacks
  /// in progress in other threads.
  void stop() noexcept;

  [[nodiscard]] std::size_t consumers() const;
  [[nodiscard]] const std::shared_ptr<DispatchCounters>& counters() const noexcept { return m_counters; }

 private:
  friend class Subscription;
  void remove(const Subscriber* subscriber) noexcept;

  struct Route {
    std::shared_ptr<Subscriber> subscriber;
    Filter filter;
    std::uint64_t order;  // start order: delivery order among consumers
  };

  const boost::asio::any_io_executor m_executor;
  const std::size_t m_bound;
  const std::shared_ptr<DispatchCounters> m_counters;

  mutable std::mutex m_mutex;
  bool m_stopped = false;
  std::uint64_t m_next_order = 0;
  std::unordered_map<const Subscriber*, std::unique_ptr<Route>> m_routes;
  FilterIndex<Route*> m_index;
  std::vector<Route*> m_control_routes;  // in start order
  std::vector<Route*> m_matched;         // deliver()'s scratch
};

}  // namespace livestate::mq::detail
