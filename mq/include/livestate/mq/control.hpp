#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace livestate::mq {

/// What a transport tells its consumers besides messages: that the stream they
/// see may be incomplete. Buildbot's two-argument callback has no room for it;
/// a consumer that keeps state derived from messages (a live view) resyncs from
/// the database when it gets one.
enum class ControlKind {
  /// The connection was lost and made again: whatever was produced meanwhile
  /// was not seen (PostgreSQL delivers nothing to a session that is away).
  reconnected,
  /// A producer's per-origin sequence skipped: a notification was lost or
  /// dropped on the way (`origin` names the producer).
  gap,
  /// The connector dropped messages because its consumers fell behind and its
  /// buffer reached its bound.
  overflow,
  /// Messages kept for a durable consumer were pruned before it came back.
  expired,
};

[[nodiscard]] std::string_view to_string(ControlKind kind) noexcept;

/// One control event. Every one of them means "you may have missed messages".
struct ControlEvent {
  ControlKind kind;
  std::string reason;                 ///< one line, for logs
  std::optional<std::string> origin;  ///< gap: the producer whose messages are missing
  std::uint64_t missed = 0;           ///< gap and overflow: how many, when known (0 if not)
};

/// Called with each control event, in order with the consumer's messages: an
/// event is delivered after every message received before the cause and
/// before every message received after it.
using ControlCallback = std::function<void(const ControlEvent& event)>;

/// What start_consuming takes besides the callback and the filter.
struct ConsumeOptions {
  /// A durable consumer's name (see Connector::start_consuming).
  std::optional<std::string> persistent_name;
  /// Control events; a connector that never loses messages (SimpleMQ) sends
  /// none.
  ControlCallback on_control;
};

}  // namespace livestate::mq
