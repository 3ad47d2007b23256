#pragma once

#include <cstdint>
#include <optional>

#include "livestate/core/json.hpp"
#include "livestate/core/routing_key.hpp"

namespace livestate {

/// One message: where it goes and what it says, and, when its transport
/// knows it, where it was committed.
struct Message {
  RoutingKey key;
  Json body;
  /// The commit position of the transaction that sent it: the PostgreSQL
  /// LSN of its commit record, as a number (pg_current_wal_lsn() and
  /// `livestate slots` show it as two hex halves, "16/B374D848"). Set by
  /// transports that read the database's log (the PostgreSQL connector's
  /// logical transport); std::nullopt elsewhere (SimpleMQ, LISTEN/NOTIFY,
  /// a Message a program makes). Messages of one transaction share it and
  /// arrive in the order they were sent; a larger one committed later,
  /// whichever producer sent it: so a consumer of several producers can put
  /// what it got in commit order. Left out of `Message{key, body}`.
  std::optional<std::uint64_t> position{};

  /// Equal when they go to the same key and say the same: where a message
  /// was committed is no part of what it says (and a message delivered
  /// again has the same position anyway), so that a message compares equal
  /// to the one a program expects, whichever transport carried it.
  friend bool operator==(const Message& a, const Message& b) { return a.key == b.key && a.body == b.body; }
};

}  // namespace livestate
