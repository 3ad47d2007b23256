#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "livestate/core/message.hpp"

namespace livestate::mq {

/// The per-connection stream state a transactional sender keeps on the
/// connection it sends through: messages sent in one session's transactions
/// reach consumers in commit order, so each session is an origin of its own
/// with its own sequence (set by the connector on first use).
struct TransportStream {
  std::string origin;
  std::uint64_t sequence = 0;
};

/// Runs SQL inside a transaction that is open on a PostgreSQL database: what a
/// store hands a connector so that messages travel in the store's transaction.
class SqlRunner {
 public:
  SqlRunner() = default;
  SqlRunner(const SqlRunner&) = delete;
  SqlRunner& operator=(const SqlRunner&) = delete;
  virtual ~SqlRunner();

  /// Runs one statement with $1, $2, … text parameters (std::nullopt is NULL)
  /// and returns the first column of its first row, if it returned one.
  virtual std::optional<std::string> run(std::string_view sql, std::span<const std::optional<std::string>> params) = 0;
  /// The stream of the connection the transaction runs on.
  virtual TransportStream& stream() noexcept = 0;
};

/// A message a transaction sends, borrowed from the store's outbox for the
/// length of the call. The messages of one change share one body: their
/// `body` pointers are equal, and the body is serialized once.
struct SentMessage {
  const RoutingKey* key = nullptr;
  const Json* body = nullptr;
};

/// Implemented by connectors whose transport is a PostgreSQL database (the
/// PostgreSQL connector): they can send messages from inside a transaction on
/// that database, so that the messages are delivered if, and only if, it
/// commits. A store paired with such a connector uses it on COMMIT; the pair
/// must then be on the same database.
class TransactionalTransport {
 public:
  TransactionalTransport() = default;
  TransactionalTransport(const TransactionalTransport&) = delete;
  TransactionalTransport& operator=(const TransactionalTransport&) = delete;
  virtual ~TransactionalTransport();

  /// Sends `messages`, in order, through `sql`'s transaction. Throws what `sql`
  /// throws; the caller then rolls the transaction back.
  virtual void send_in_transaction(std::span<const SentMessage> messages, SqlRunner& sql) = 0;
};

}  // namespace livestate::mq
