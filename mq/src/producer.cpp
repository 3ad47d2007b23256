#include "producer.hpp"

#include "livestate/core/log.hpp"
#include "livestate/core/wire.hpp"
#include "logical_machine.hpp"
#include "sender.hpp"

namespace livestate::mq::detail {

// Connected (again) when needed.
PGconn* Producer::connection() {
  if (idle_connection_alive(m_connection.get())) return m_connection.get();
  m_send_prepared = false;
  m_connection = start_connection(m_config.url, m_config.connection("livestate-producer"), true);
  if (PQstatus(m_connection.get()) != CONNECTION_OK) {
    const std::string reason = one_line(PQerrorMessage(m_connection.get()));
    m_connection.reset();
    throw NotSent("cannot produce: cannot connect to " + m_config.name + ": " + reason + " (the message was not sent)");
  }
  // The send statement is prepared once per connection and planned once
  // (its cost is in planning, not running); JIT would spend milliseconds
  // compiling a statement that runs in microseconds.
  try {
    run_blocking(m_connection.get(),
                 "SELECT set_config('jit', 'off', false), set_config('plan_cache_mode', 'force_generic_plan', false)",
                 {}, m_config.options.statement_timeout);
  } catch (const StatementError& error) {
    m_connection.reset();
    throw NotSent("cannot produce: setting up the connection to " + m_config.name + " failed: " + error.what() +
                  " (the message was not sent)");
  }
  return m_connection.get();
}

void Producer::produce(const RoutingKey& key, const Json& body) {
  wire::check_depth(body, key.str());  // before anything serializes it, and before anything is sent
  std::lock_guard lock(m_mutex);
  const SentMessage message{&key, &body};
  const auto timeout = m_config.options.statement_timeout;
  for (int attempt = 1;; ++attempt) {
    PGconn* connection = this->connection();
    const std::uint64_t sequence_before = m_sequence;
    bool in_transaction = false;
    bool committing = false;
    try {
      ensure_ready(connection);
      prepare_send(connection);
      // One statement, atomic on its own; a body stored by reference joins it
      // in a transaction.
      const auto sender = m_config.transport == Transport::logical ? &send_logical : &send;
      sender(std::span<const SentMessage>(&message, 1), m_config.origin, m_config.options.channel, m_sequence,
             [&](SendStatement statement, const Params& params) {
               if (const char* prepared = prepared_name(statement)) {
                 committing = !in_transaction;
                 return run_blocking(connection, {}, params, timeout, prepared);
               }
               if (!in_transaction) {
                 run_blocking(connection, "BEGIN", {}, timeout);
                 in_transaction = true;
               }
               return run_blocking(connection, sql_of(statement), params, timeout);
             });
      if (in_transaction) {
        committing = true;
        run_blocking(connection, "COMMIT", {}, timeout);
      }
      break;
    } catch (const StatementError& error) {
      if (error.broken()) {
        m_connection.reset();
      } else if (in_transaction) {
        rollback(connection);
      }
      // Only a statement that commits may have sent the message: a broken
      // transaction is rolled back by the server.
      if (error.in_doubt() && committing) {
        throw MaybeSent("produce(" + key.str() + ") on " + m_config.name +
                        ": the connection broke or the server did not answer while sending: "
                        "the message may or may not have been sent: " +
                        error.what());
      }
      m_sequence = sequence_before;
      // The connector's tables are gone (a database restored from a dump
      // taken before they existed, or dropped by hand): make them again, once.
      if (attempt == 1 && !error.broken() && error.sqlstate() == undefined_table) {
        log(LogLevel::warning, log_component,
            "the connector's tables on " + m_config.name + " are gone; creating them again");
        forget_tables();
        continue;
      }
      throw NotSent("produce(" + key.str() + ") on " + m_config.name +
                    " failed (the message was not sent): " + error.what());
    }
  }
  ++m_produced;
}

void Producer::rollback(PGconn* connection) noexcept {
  try {
    run_blocking(connection, "ROLLBACK", {}, m_config.options.statement_timeout);
  } catch (const StatementError& error) {
    if (error.broken()) m_connection.reset();
  } catch (...) {
    m_connection.reset();  // out of memory: start afresh
  }
}

void Producer::ensure_ready(PGconn* connection) {
  const auto timeout = m_config.options.statement_timeout;
  if (m_config.transport == Transport::notify) return m_tables->ensure(connection, timeout);
  if (m_server_checked) return;
  const Result result = exec_blocking(
      connection, "SELECT current_setting('server_version_num'), current_setting('wal_level')", {}, timeout);
  if (const auto problem = logical_server_problem(PQgetvalue(result.get(), 0, 0), PQgetvalue(result.get(), 0, 1),
                                                  m_config.name)) {
    throw NotSent("cannot produce: " + *problem + " (the message was not sent)");
  }
  m_server_checked = true;
}

void Producer::prepare_send(PGconn* connection) {
  if (m_send_prepared) return;
  const auto statements = m_config.transport == Transport::logical
                              ? std::vector<SendStatement>{SendStatement::emit}
                              : std::vector<SendStatement>{SendStatement::batch, SendStatement::one};
  for (const auto statement : statements) {
    exec_blocking(
        connection,
        [&](PGconn* target) {
          return PQsendPrepare(target, prepared_name(statement), sql_of(statement).c_str(), 0, nullptr);
        },
        m_config.options.statement_timeout);
  }
  m_send_prepared = true;
}

void Producer::forget_tables() noexcept {
  m_tables->forget();
  if (m_send_prepared && m_connection) {
    try {
      run_blocking(m_connection.get(), "DEALLOCATE ALL", {}, m_config.options.statement_timeout);
    } catch (...) {
      m_connection.reset();  // its prepared statements go with it
    }
  }
  m_send_prepared = false;
}

void Producer::send_in_transaction(std::span<const SentMessage> messages, SqlRunner& sql) {
  for (const auto& message : messages) wire::check_depth(*message.body, message.key->str());
  const bool logical = m_config.transport == Transport::logical;
  if (logical ? !m_server_checked : !m_tables->ready()) {
    std::lock_guard lock(m_mutex);
    PGconn* connection = this->connection();  // NotSent
    try {
      ensure_ready(connection);
    } catch (const StatementError& error) {
      throw NotSent(
          "cannot send in a transaction: " + std::string(logical ? "checking " : "making the connector's tables on ") +
          m_config.name + " failed (the messages were not sent): " + error.what());
    }
  }
  TransportStream& stream = sql.stream();
  if (stream.origin.empty()) {
    static std::atomic<std::uint64_t> sessions{0};
    stream.origin = m_config.origin + "." + std::to_string(++sessions);
  }
  try {
    (logical ? send_logical
             : send)(messages, stream.origin, m_config.options.channel, stream.sequence,
                     [&](SendStatement statement, const Params& params) { return sql.run(sql_of(statement), params); });
  } catch (...) {
    // Perhaps the connector's tables are gone: the next send makes sure
    // (CREATE TABLE IF NOT EXISTS) rather than failing forever.
    m_tables->forget();
    throw;
  }
  m_produced += messages.size();
}

}  // namespace livestate::mq::detail
