#pragma once

// A durable queue in the database: its row in livestate_mq_queues, the lock
// that makes one consumer of a name active at a time, its messages in
// livestate_mq_queued, read in order and deleted once acknowledged.

#include <libpq-fe.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "livestate/core/filter.hpp"
#include "livestate/core/message.hpp"

namespace livestate::mq::detail {

/// Held by the session that runs it, until that session ends or unlocks:
/// returns "t" when taken. $1 the queue's name.
inline constexpr const char* lock_queue_sql =
    "SELECT pg_try_advisory_lock(hashtextextended('livestate.queue.' || $1, 0))";
inline constexpr const char* unlock_queue_sql =
    "SELECT pg_advisory_unlock(hashtextextended('livestate.queue.' || $1, 0))";
/// A page of the queue's messages, in order: $1 the queue's name, $2 the id
/// after which it starts, $3 queue_page_rows. A consumer that resumes with a
/// long backlog holds a page of it at a time.
inline constexpr const char* read_queue_sql =
    "SELECT id, origin, sequence, array_to_json(key)::text, body FROM livestate_mq_queued "
    "WHERE queue = $1 AND id > $2 ORDER BY id LIMIT $3";
inline constexpr std::size_t queue_page_rows = 1000;

/// read_queue_sql's parameters for the page after `after_id`.
[[nodiscard]] std::vector<std::optional<std::string>> page_params(const std::string& queue, std::int64_t after_id);

/// A filter as PostgreSQL's text[] literal, a wildcard as NULL (its any_suffix
/// goes beside it).
[[nodiscard]] std::string filter_array(const Filter& filter);

/// Creates the queue, or finds it; in the caller's thread, on a connection
/// that holds its lock. Returns how many of its messages were pruned (and
/// counts them as told). Throws PersistentNameInUse when the queue was made
/// with another filter, StatementError when the server refuses.
std::uint64_t register_queue(PGconn* connection, const std::string& name, const Filter& filter,
                             std::chrono::milliseconds timeout);

struct QueueRow {
  std::int64_t id;
  std::string origin;
  std::uint64_t sequence;
  RoutingKey key;
  Json body;
};

struct QueuePage {
  std::vector<QueueRow> rows;
  std::int64_t last_id = 0;  ///< where the next page starts
  std::size_t size = 0;      ///< rows in the result, read or not; a page is full at queue_page_rows
};

/// The rows of a read_queue_sql result; a row that can't be read is logged
/// and left out (it stays in the table until a consumer of the queue stops
/// and starts again).
[[nodiscard]] QueuePage page_of(const PGresult* result, const std::string& queue);

/// What a consumer has delivered and the table should forget: rows read
/// from it (by id) and live messages (by origin and sequence).
class Acknowledgements {
 public:
  void row(std::int64_t id) { m_ids.push_back(std::to_string(id)); }
  void message(const std::string& origin, std::uint64_t sequence) {
    m_origins.push_back(origin);
    m_sequences.push_back(std::to_string(sequence));
  }
  /// Takes `other`'s too (when deleting them failed: they are tried again).
  void merge(Acknowledgements&& other);
  [[nodiscard]] std::size_t size() const noexcept { return m_ids.size() + m_sequences.size(); }
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }

  /// The statement that deletes them, and its parameters.
  static const char* const sql;
  [[nodiscard]] std::vector<std::optional<std::string>> params(const std::string& queue) const;

 private:
  std::vector<std::string> m_ids;
  std::vector<std::string> m_origins;
  std::vector<std::string> m_sequences;
};

}  // namespace livestate::mq::detail
