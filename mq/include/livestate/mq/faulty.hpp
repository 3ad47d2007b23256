#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "livestate/mq/connector.hpp"

namespace livestate::mq {

/// What a FaultyConnector does to the messages its consumers get. Every
/// probability is in [0, 1] and applies to each message a consumer receives
/// from the inner connector, independently of the others; the constructor
/// throws std::invalid_argument naming the field for anything else.
struct FaultOptions {
  /// Seeds every consumer's random sequence: the n-th consumer started
  /// through the decorator (counting from 0, async_wait_until_event's included)
  /// draws from a std::mt19937_64 seeded with `seed` mixed with n. Given the
  /// same options and the same messages, drop, duplicate and reorder replay
  /// exactly; delay and partitions also depend on the wall clock.
  std::uint64_t seed = 1;
  /// Hold a message back until between 1 and `reorder_window` later messages
  /// (dropped ones included) have arrived for the consumer; it is delivered
  /// right after the last of them. So no message arrives more than
  /// `reorder_window` places later than it would have.
  double reorder = 0;
  std::size_t reorder_window = 8;  ///< at least 1 when reorder > 0
  double drop = 0;                 ///< never deliver the message
  /// Tell consumers about drops, as a transport with sequence numbers would
  /// (the PostgreSQL connector's `gap`): after the next message a consumer
  /// gets following a drop (or at flush()), a ControlEvent of kind `gap` whose
  /// `missed` counts the drops since the last one. Off: drops are silent, and
  /// only a periodic resync (reconcile::ViewOptions::resync_every) repairs them.
  bool report_drops = false;
  double duplicate = 0;  ///< deliver the message twice in a row
  /// Hold a message (not already held for reordering) for between 1 ms and
  /// `max_delay` of wall time.
  double delay = 0;
  std::chrono::milliseconds max_delay{0};  ///< more than 0 when delay > 0
  /// Partitions: each consumer is connected for `partition_every`, then gets
  /// nothing for `partition_length` (what arrives meanwhile is dropped), then
  /// a ControlEvent of kind `reconnected` whose `missed` counts what it lost,
  /// and so on. 0 turns partitions off.
  std::chrono::milliseconds partition_every{0};
  std::chrono::milliseconds partition_length{0};  ///< more than 0 when partition_every > 0
};

/// What a FaultyConnector has done to its consumers' messages since it was made.
struct FaultStats {
  std::uint64_t dropped = 0;             ///< by `drop`
  std::uint64_t duplicated = 0;          ///< messages delivered twice
  std::uint64_t reordered = 0;           ///< messages held for reordering
  std::uint64_t delayed = 0;             ///< messages held for a while
  std::uint64_t partitions = 0;          ///< partitions begun
  std::uint64_t lost_to_partitions = 0;  ///< messages dropped during a partition
  std::uint64_t control_events = 0;      ///< `reconnected` and `gap` events injected (not the inner connector's)
  std::uint64_t delivered = 0;           ///< callback invocations (messages and control events) that returned
  std::uint64_t callback_errors = 0;     ///< callback invocations that threw
  std::uint64_t held = 0;                ///< messages held (reordered or delayed) now
};

namespace detail {
class FaultCore;
}

/// A decorator over any Connector that makes its consumers' messages arrive
/// late, twice, out of order or never: for testing consumers (live views)
/// that must survive it.
///
/// produce(), stats() and persistent names pass through to the inner
/// connector unchanged: faults are injected on the consuming side, separately
/// for each consumer started through the decorator, between the inner
/// connector's delivery and the consumer's callback. Control events from the
/// inner connector pass through unchanged, in order with the messages; the
/// decorator adds `reconnected` events for its partitions (reason "partition
/// injected by FaultyConnector"). Only consumers that pass
/// ConsumeOptions::on_control get control events; the others lose what a
/// partition drops without being told.
///
/// Delivery: a consumer's callback runs in the thread the inner connector
/// delivers in, in the thread that calls flush() or set_enabled(), or in the
/// decorator's fault thread (delayed messages and partition events). One
/// consumer's callbacks never run concurrently: a thread that finds one
/// running leaves its messages to that thread, in order, and returns (so a
/// produce() through SimpleMQ may return before its message was delivered).
/// Different consumers' callbacks may run concurrently when there is a fault
/// thread. A callback that throws is logged (component "mq.faulty") and
/// counted in faults().callback_errors; the inner connector sees the
/// delivery succeed.
///
/// The fault thread is started by the constructor only when `delay` or
/// `partition_every` is above 0, and joined by the destructor (which, run
/// from inside one of the decorator's callbacks, lets it end by itself).
/// Reproducible tests use flush() rather than waiting for it.
///
/// Thread safety: every member function may be called from any thread; a
/// callback may produce, start or stop consumers, flush() and set_enabled().
///
/// Object lifetimes: the inner connector is borrowed and must outlive the
/// decorator. Destroying the decorator stops every consumer it started and
/// discards what they held; it then waits, as Consumer::stop_consuming does,
/// for callbacks running in other threads. Stopping a consumer discards what
/// it held: a held message of a persistent consumer is lost for good, since
/// the inner connector counts it as delivered.
class FaultyConnector final : public Connector {
 public:
  /// Throws std::invalid_argument when an option is out of range.
  FaultyConnector(Connector& inner, FaultOptions options);
  ~FaultyConnector() override;

  void produce(const RoutingKey& key, const Json& body) override;

  using Connector::start_consuming;
  std::unique_ptr<Consumer> start_consuming(Callback callback, Filter filter,
                                            std::optional<std::string> persistent_name = std::nullopt) override;

  /// The inner connector's statistics: its deliveries are the decorator's
  /// arrivals, before faults (see faults()).
  [[nodiscard]] ConnectorStats stats() const override;

  [[nodiscard]] FaultStats faults() const;

  /// Delivers every message held now by every consumer, each consumer's in
  /// the order they were held, in the calling thread (or, for a consumer whose
  /// callback another thread is running, in that thread: flush() then waits
  /// for it, unless called from inside one of the decorator's callbacks). What
  /// a callback produces meanwhile goes through faults as usual. With faults
  /// disabled, flush() brings the decorator to quiescence.
  void flush();

  /// false: no new fault from now on (held messages stay held until their
  /// time, their later messages or flush()), and partitions in progress end
  /// now, their `reconnected` events delivered as flush() delivers. true:
  /// faults again, the next partitions `partition_every` from now.
  void set_enabled(bool enabled);

 protected:
  std::unique_ptr<Consumer> start_consuming_with(Callback callback, Filter filter, ConsumeOptions options) override;

 private:
  Connector& m_inner;
  std::shared_ptr<detail::FaultCore> m_core;
};

}  // namespace livestate::mq
