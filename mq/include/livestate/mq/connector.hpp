#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <boost/system/error_code.hpp>

#include "livestate/core/filter.hpp"
#include "livestate/core/message.hpp"
#include "livestate/mq/consumer.hpp"
#include "livestate/mq/control.hpp"

namespace livestate::mq {

/// What a connector has done since it was made.
struct ConnectorStats {
  std::uint64_t produced = 0;             ///< messages accepted by produce()
  std::uint64_t delivered = 0;            ///< callback invocations that returned
  std::uint64_t callback_errors = 0;      ///< callback invocations that threw
  std::uint64_t consumers = 0;            ///< active consumers now
  std::uint64_t kept_for_persistent = 0;  ///< messages waiting for stopped persistent consumers
};

/// Buildbot's MQ connector: produce messages, consume them by filter.
///
/// Thread safety: produce, start_consuming, stop_consuming and
/// async_wait_until_event may be called from any thread. Each implementation
/// documents on which thread callbacks run.
///
/// Object lifetimes: destroying a connector stops every consumer it made and
/// completes every pending async_wait_until_event with
/// boost::asio::error::operation_aborted.
class Connector {
 public:
  Connector() = default;
  Connector(const Connector&) = delete;
  Connector& operator=(const Connector&) = delete;
  virtual ~Connector();

  virtual void produce(const RoutingKey& key, const Json& body) = 0;

  /// Starts delivering the messages that match `filter` and are produced from
  /// now on. With a persistent name, messages that match while no consumer of
  /// that name is active are kept and delivered, in order, before anything newer
  /// when a consumer of that name starts again (with the same filter). Throws
  /// PersistentNameInUse when a consumer of that name is active, or when the
  /// filter differs from the one the name was created with. A name seen for the
  /// first time gets nothing produced before this call, not even a message
  /// still waiting to be delivered.
  ///
  /// Object lifetimes: the callback may run before this returns (SimpleMQ
  /// delivers a resumed consumer's backlog then), so it must not rely on the
  /// returned handle during that catch-up, e.g. to stop itself through it.
  virtual std::unique_ptr<Consumer> start_consuming(Callback callback, Filter filter,
                                                    std::optional<std::string> persistent_name = std::nullopt) = 0;

  /// start_consuming with options: a durable name and a callback for control
  /// events (control.hpp), which tell a consumer that it may have missed
  /// messages (the PostgreSQL connector reconnected, saw a gap, overflowed).
  /// Connectors that never lose messages (SimpleMQ) send none.
  std::unique_ptr<Consumer> start_consuming(Callback callback, Filter filter, ConsumeOptions options) {
    return start_consuming_with(std::move(callback), std::move(filter), std::move(options));
  }

  /// start_consuming with the whole message: `callback` gets a Message, with
  /// its commit position where the transport knows it (Message::position:
  /// the PostgreSQL connector's logical transport), so that a consumer of
  /// several producers can put what it got in commit order. Otherwise the
  /// same as the options form; the callback may not be empty.
  ///
  /// Buildbot's two-argument Callback has no room for the position; this form
  /// gives it without changing that one, and any callable taking a
  /// `const Message&` picks it.
  std::unique_ptr<Consumer> start_consuming(MessageCallback callback, Filter filter, ConsumeOptions options = {}) {
    return start_consuming_messages(std::move(callback), std::move(filter), std::move(options));
  }

  [[nodiscard]] virtual ConnectorStats stats() const = 0;

  /// Buildbot's waitUntilEvent: subscribes to `filter`, then calls `check`; if
  /// it returns true, completes at once with std::nullopt, else with the first
  /// matching message (also one produced while `check` ran: it is held until
  /// `check` returns, and completes the wait only if `check` returned false).
  /// Unsubscribes either way.
  ///
  /// Handler signature: void(boost::system::error_code, std::optional<Message>).
  /// The message has its commit position where the transport knows it
  /// (Message::position).
  /// The error is operation_aborted when the connector is destroyed first.
  /// The handler is dispatched to its associated executor; a plain callback
  /// without one runs in the thread that delivers the message (or in the
  /// caller's, when `check` returns true). Accepts any Asio completion token:
  /// a callback, boost::asio::use_future, boost::asio::use_awaitable.
  /// An exception from `check` propagates from this call, after unsubscribing;
  /// the handler is then never called, even when a message came during `check`
  /// (that message is dropped).
  template <class CompletionToken>
  auto async_wait_until_event(Filter filter, std::function<bool()> check, CompletionToken&& token);

 protected:
  /// The options form of start_consuming; by default the plain form, without
  /// control events.
  virtual std::unique_ptr<Consumer> start_consuming_with(Callback callback, Filter filter, ConsumeOptions options);

  /// The Message form of start_consuming; by default the options form, with
  /// messages without a position.
  virtual std::unique_ptr<Consumer> start_consuming_messages(MessageCallback callback, Filter filter,
                                                             ConsumeOptions options);

  using WaitCompletion = std::function<void(boost::system::error_code, std::optional<Message>)>;

  /// The connector-independent part of async_wait_until_event: calls
  /// `complete` exactly once, unless `check` throws.
  void start_wait(Filter filter, std::function<bool()> check, WaitCompletion complete);

  /// Completes every pending wait with operation_aborted. Called by the base
  /// destructor; a connector may call it earlier, when it stops delivering.
  void abort_waits() noexcept;

 private:
  struct WaitState;
  static void finish_wait(const std::shared_ptr<WaitState>& state, boost::system::error_code error,
                          std::optional<Message> message);

  std::mutex m_waits_mutex;
  std::vector<std::weak_ptr<WaitState>> m_waits;
};

}  // namespace livestate::mq

#include "livestate/mq/detail/wait_until_event.hpp"
