#pragma once

// Durable consumers: a consumer with a persistent name, whose messages are
// kept in the database while it is away.

#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>

#include "connector_config.hpp"
#include "dispatcher.hpp"
#include "listener.hpp"
#include "livestate/mq/consumer.hpp"
#include "tables.hpp"

namespace livestate::mq::detail {

/// What a durable consumer uses of its connector; it may outlive the
/// connector for a moment.
struct DurableQueueContext {
  std::shared_ptr<const ConnectorConfig> config;
  std::shared_ptr<Tables> tables;
  std::shared_ptr<Dispatcher> dispatcher;
  std::shared_ptr<ListenerStatus> status;
  boost::asio::any_io_executor executor;
};

/// Claims the queue `name` (created with `filter` on first use), subscribes,
/// and has what the queue kept delivered before anything live. In the
/// caller's thread. Throws PersistentNameInUse when a consumer of that name
/// is active, or when the filter differs from the queue's; TransportError when
/// the database can't be reached.
[[nodiscard]] std::unique_ptr<Consumer> start_durable_consumer(DurableQueueContext context, std::string name,
                                                               Filter filter, Callback callback,
                                                               ControlCallback on_control);

}  // namespace livestate::mq::detail
