#pragma once

// What flows from the PostgreSQL connector's listener to its consumers, in
// order, and what every consumer's deliveries add up to.

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include "livestate/core/message.hpp"
#include "livestate/mq/control.hpp"

namespace livestate::mq::detail {

/// A message received, ready for consumers: the message itself (a consumer
/// of whole messages is handed it as it is), and who sent it.
struct Delivery : Message {
  std::optional<std::string> origin;
  std::uint64_t sequence = 0;  ///< 0: none
  /// The logical transport's durable consumers: once this message is
  /// delivered, its transaction is, up to this position (0: not the last).
  std::uint64_t acknowledges = 0;
};

/// What the listener hands to consumers: messages, and control events in
/// order with them.
using Item = std::variant<Delivery, ControlEvent>;

[[nodiscard]] inline ControlEvent overflow_event(std::uint64_t missed) {
  return ControlEvent{ControlKind::overflow, std::to_string(missed) + " message(s) dropped: consumers fell behind",
                      std::nullopt, missed};
}

/// Shared by the connector and its consumers, which may outlive it for a
/// moment.
struct DispatchCounters {
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> callback_errors{0};
  std::atomic<std::uint64_t> dropped{0};
  std::atomic<std::uint64_t> backlog_peak{0};
  std::atomic<std::uint64_t> queue_rows_read{0};
  std::atomic<std::uint64_t> queue_page_peak{0};
};

/// Raises `peak` to `value` if that is more.
inline void raise_peak(std::atomic<std::uint64_t>& peak, std::uint64_t value) noexcept {
  std::uint64_t seen = peak.load(std::memory_order_relaxed);
  while (value > seen && !peak.compare_exchange_weak(seen, value)) {
  }
}

}  // namespace livestate::mq::detail
