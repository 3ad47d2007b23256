#pragma once

// The producing connection: produce() runs in the calling thread, on one
// connection of the connector's own, under a mutex; and sending through a
// store's transaction (TransactionalTransport), on the store's connection.
// Either transport: NOTIFY (sender.hpp's send, with the connector's tables)
// or logical messages (send_logical, on a server checked for them once).

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>

#include "connector_config.hpp"
#include "livestate/mq/transactional.hpp"
#include "pq_connection.hpp"
#include "tables.hpp"

namespace livestate::mq::detail {

/// Thread safety: every function may be called from any thread.
class Producer {
 public:
  Producer(const ConnectorConfig& config, std::shared_ptr<Tables> tables)
      : m_config(config), m_tables(std::move(tables)) {}

  /// Throws NotSent or MaybeSent.
  void produce(const RoutingKey& key, const Json& body);
  /// Throws what `sql` throws; NotSent when the tables could not be made.
  void send_in_transaction(std::span<const SentMessage> messages, SqlRunner& sql);

  [[nodiscard]] std::uint64_t produced() const noexcept { return m_produced; }

 private:
  // With m_mutex held.
  PGconn* connection();
  void prepare_send(PGconn* connection);
  // What sending needs on the server: the NOTIFY transport's tables, or a
  // server that decodes logical messages. Throws StatementError, or NotSent
  // naming the setting the server lacks.
  void ensure_ready(PGconn* connection);
  void forget_tables() noexcept;
  void rollback(PGconn* connection) noexcept;

  const ConnectorConfig& m_config;
  const std::shared_ptr<Tables> m_tables;
  std::atomic<std::uint64_t> m_produced{0};

  std::mutex m_mutex;
  Connection m_connection;
  std::uint64_t m_sequence = 0;
  bool m_send_prepared = false;               // on m_connection
  std::atomic<bool> m_server_checked{false};  // the logical transport's check passed
};

}  // namespace livestate::mq::detail
