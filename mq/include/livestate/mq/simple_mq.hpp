#pragma once

#include <memory>

#include "livestate/mq/connector.hpp"

namespace livestate::mq {

/// The in-process connector, Buildbot's SimpleMQ.
///
/// Delivery: produce() delivers synchronously, in the calling thread, to every
/// matching consumer before it returns, in the order the consumers started. A
/// produce() from inside a callback is queued and delivered after the current
/// message, in order (breadth-first, never depth-first), before the outermost
/// produce() returns. Every consumer sees messages in one global order, and the
/// callbacks of one SimpleMQ never run concurrently: when several threads
/// produce at once, they take turns (so a callback must not wait for another
/// thread that produces on the same SimpleMQ). A consumer gets the messages
/// produced after start_consuming returned and before stop_consuming was
/// called. A callback that throws is logged (component "mq.simple") and
/// counted in stats().callback_errors; the other consumers still get the
/// message.
///
/// Persistent consumers are kept in memory, for the life of the SimpleMQ:
/// while one is stopped, what matches its filter is kept without bound, and a
/// resumed consumer of that name gets it, in order, before start_consuming
/// returns (or, from inside a callback, in order after the current message).
/// Its callback therefore runs before the handle exists: a consumer that must
/// be able to stop itself while catching up is resumed from inside a callback,
/// where start_consuming returns first. What was produced before a name was
/// first used is never kept for it.
///
/// Object lifetimes: the SimpleMQ may be destroyed from inside one of its
/// callbacks. That callback finishes, nothing more is delivered (not even
/// messages already produced from callbacks), and the produce() that was
/// delivering returns normally. Destroying it while another thread is inside
/// one of its functions is, as for any object, the caller's error.
///
/// Failures: when memory runs out while a message is delivered, produce()
/// throws std::bad_alloc and the SimpleMQ stays usable; messages produced from
/// callbacks are still delivered, by the next produce().
///
/// Routing uses an index of filters: a produce costs about the same with 10 or
/// 10,000 consumers whose filters don't match.
std::unique_ptr<Connector> make_simple_mq();

}  // namespace livestate::mq
