#pragma once

// The logical transport's durable consumers: a persistent name is a
// permanent replication slot, streamed by a replication connection of the
// consumer's own.

#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>

#include "connector_config.hpp"
#include "delivery.hpp"
#include "livestate/mq/consumer.hpp"
#include "livestate/mq/control.hpp"

namespace livestate::mq::detail {

/// Checks the server (UnsupportedServer naming what it lacks), registers the
/// name with its filter (PersistentNameInUse for another filter), then
/// streams from the name's slot and returns once the server streams
/// (PersistentNameInUse when another session streams from it, in this
/// process or another; TransportError when the server can't be reached).
/// What was committed since the slot's last acknowledged position comes
/// first, then what is committed from then on, in commit order, each with
/// its position. In the caller's thread; the executor must run in another
/// thread (the stream starts there).
[[nodiscard]] std::unique_ptr<Consumer> start_slot_consumer(std::shared_ptr<const ConnectorConfig> config,
                                                            boost::asio::any_io_executor executor,
                                                            std::shared_ptr<DispatchCounters> counters,
                                                            std::string name, Filter filter, MessageCallback callback,
                                                            ControlCallback on_control);

}  // namespace livestate::mq::detail
