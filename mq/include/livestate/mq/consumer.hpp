#pragma once

#include <functional>

#include "livestate/core/json.hpp"
#include "livestate/core/message.hpp"
#include "livestate/core/routing_key.hpp"

namespace livestate::mq {

/// Called with each message that matches a consumer's filter. The body is only
/// valid during the call: copy what you keep.
using Callback = std::function<void(const RoutingKey& key, const Json& body)>;

/// Called with each message that matches, whole: its key, its body and,
/// where the transport knows it, its commit position (Message::position).
/// Valid only during the call, as with Callback.
using MessageCallback = std::function<void(const Message& message)>;

/// A subscription, as Buildbot's QueueRef: what Connector::start_consuming
/// returns.
///
/// Object lifetimes: destroying a Consumer stops it. It may be stopped or
/// destroyed from inside its own callback, and may outlive its connector (it
/// then does nothing). Each Consumer controls only its own subscription:
/// stopping an earlier handle of the same persistent name does not stop a later
/// one.
///
/// Thread safety: stop_consuming may be called from any thread.
class Consumer {
 public:
  Consumer() = default;
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;
  virtual ~Consumer();

  /// Idempotent. Once it has returned, the callback is never invoked again: when
  /// another thread is running this consumer's callback at that moment, this
  /// waits for it to return (so never call it from a thread the callback waits
  /// for); it never waits for other consumers' callbacks, and from inside one
  /// of its connector's callbacks (its own included) it returns at once.
  virtual void stop_consuming() = 0;
};

}  // namespace livestate::mq
