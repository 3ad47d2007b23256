#include "durable_queue.hpp"

#include <atomic>
#include <mutex>
#include <set>
#include <vector>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "livestate/core/detail/json_reader.hpp"
#include "livestate/core/error.hpp"
#include "livestate/core/log.hpp"
#include "pq_connection.hpp"

namespace livestate::mq::detail {

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

// A durable consumer: its queue's messages are rows of livestate_mq_queued,
// written by producers in the transactions that send them, and deleted once
// delivered (acknowledged in batches). Resuming reads what is left, in order,
// before anything live; a live copy of a message already delivered from the
// table is skipped. At least once: a message delivered but not yet
// acknowledged when the consumer stops (or crashes) comes again next time.
// The queue's connection holds an advisory lock on its name: one active
// consumer per name, in every process.
class DurableQueue final : public std::enable_shared_from_this<DurableQueue> {
 public:
  DurableQueue(DurableQueueContext context, std::string name, Filter filter, Callback callback,
               ControlCallback on_control)
      : m_context(std::move(context)),
        m_name(std::move(name)),
        m_filter(std::move(filter)),
        m_callback(std::move(callback)),
        m_on_control(std::move(on_control)),
        m_errors(m_context.dispatcher->counters(), "durable consumer '" + m_name + "'"),
        m_ack_timer(asio::make_strand(m_context.executor)) {}

  // In the caller's thread: claims the queue, subscribes, reads the backlog,
  // and has it delivered on the executor before anything live.
  void start() {
    std::lock_guard lock(m_connection_mutex);
    m_connection = start_connection(m_context.config->url, "livestate-queue", true, m_context.config->options.connect_timeout);
    if (PQstatus(m_connection.get()) != CONNECTION_OK) {
      throw TransportError("cannot start durable consumer '" + m_name + "': cannot connect to " + m_context.config->name +
                           ": " + one_line(PQerrorMessage(m_connection.get())));
    }
    m_context.tables->ensure(m_connection.get());
    if (run("SELECT pg_try_advisory_lock(hashtextextended('livestate.queue.' || $1, 0))", {m_name}) != "t") {
      throw PersistentNameInUse("durable consumer '" + m_name +
                                "' is already active (in this or another process): stop it first");
    }
    std::string filter_literal = "{";
    for (const auto& element : m_filter.elements()) {
      if (filter_literal.size() > 1) filter_literal += ',';
      filter_literal += element ? text_array({*element}).substr(1, text_array({*element}).size() - 2) : "NULL";
    }
    filter_literal += "}";
    const auto same = run(
        "INSERT INTO livestate_mq_queues (name, filter, any_suffix) VALUES ($1, $2::text[], $3) "
        "ON CONFLICT (name) DO UPDATE SET last_active = now() "
        "RETURNING (filter IS NOT DISTINCT FROM $2::text[] AND any_suffix = $3)::text",
        {m_name, filter_literal, m_filter.any_suffix() ? "true" : "false"});
    if (same != "true") {
      PQfinish(m_connection.release());
      throw PersistentNameInUse("durable consumer '" + m_name + "' was created with another filter than " +
                                m_filter.str() + ": use that filter, or another name");
    }
    m_expired = std::stoull(run("SELECT expired FROM livestate_mq_queues WHERE name = $1", {m_name}).value_or("0"));
    if (m_expired > 0) {
      run("UPDATE livestate_mq_queues SET expired = expired - $2 WHERE name = $1", {m_name, std::to_string(m_expired)});
    }
    // Its own queue and strand: it delivers from the table and live in one
    // order, and a slow one holds up nobody else.
    std::weak_ptr<DurableQueue> weak = weak_from_this();
    m_subscription = m_context.dispatcher->subscribe(
        m_filter, "durable consumer '" + m_name + "'",
        [weak](const Delivery& delivery) {
          if (auto self = weak.lock()) self->on_live(delivery);
        },
        [weak](const ControlEvent& event) {
          if (auto self = weak.lock()) self->on_control(event);
        });
    // What is committed from now on is heard live; the table has the rest.
    if (!m_context.status->wait_listening(std::chrono::duration_cast<std::chrono::milliseconds>(m_context.config->options.connect_timeout))) {
      throw TransportError("cannot start durable consumer '" + m_name + "': not listening to " + m_context.config->name +
                           " yet");
    }
    auto backlog = std::make_shared<std::vector<Row>>(read_backlog());
    m_subscription.subscriber()->push(
        Subscriber::Work([self = shared_from_this(), backlog] { self->catch_up(std::move(*backlog)); }));
  }

  void stop() noexcept {
    if (m_stopped.exchange(true)) return;
    m_subscription.stop();  // waits for a callback in progress
    std::lock_guard lock(m_connection_mutex);
    flush_acknowledgements();
    m_connection.reset();  // releases the name's lock
  }

 private:
  struct Row {
    std::int64_t id;
    std::string origin;
    std::uint64_t sequence;
    RoutingKey key;
    Json body;
  };

  // With m_connection_mutex held.
  std::optional<std::string> run(const std::string& sql, const std::vector<std::optional<std::string>>& params) {
    bool in_doubt = false;
    return run_blocking(m_connection.get(), sql, params, in_doubt);
  }

  std::vector<Row> read_backlog() {
    std::vector<Row> rows;
    std::vector<const char*> values{m_name.c_str()};
    Result result(PQexecParams(m_connection.get(),
                               "SELECT id, origin, sequence, array_to_json(key)::text, body FROM livestate_mq_queued "
                               "WHERE queue = $1 ORDER BY id",
                               1, nullptr, values.data(), nullptr, nullptr, 0));
    if (PQresultStatus(result.get()) != PGRES_TUPLES_OK) {
      throw TransportError("durable consumer '" + m_name + "': cannot read its queue: " +
                           one_line(PQerrorMessage(m_connection.get())));
    }
    for (int i = 0; i < PQntuples(result.get()); ++i) {
      try {
        rows.push_back(Row{std::stoll(PQgetvalue(result.get(), i, 0)), PQgetvalue(result.get(), i, 1),
                           std::stoull(PQgetvalue(result.get(), i, 2)),
                           RoutingKey(livestate::detail::parse_json(PQgetvalue(result.get(), i, 3)).get<std::vector<std::string>>()),
                           livestate::detail::parse_json(PQgetvalue(result.get(), i, 4))});
      } catch (const std::exception& error) {
        log(LogLevel::warning, log_component, "durable consumer '" + m_name + "': dropped an unreadable queued message: " +
                                              error.what());
      }
    }
    return rows;
  }

  // The subscriber's strand from here on.
  void catch_up(std::vector<Row> backlog) {
    if (m_expired > 0) {
      invoke_control(ControlEvent{ControlKind::expired,
                                  std::to_string(m_expired) + " queued message(s) pruned while no consumer was active",
                                  std::nullopt, m_expired});
    }
    deliver_rows(backlog);
    m_catching_up = false;
    for (auto& delivery : std::exchange(m_buffer, {})) deliver_live(delivery);
    acknowledge_soon();
  }

  void deliver_rows(std::vector<Row>& rows) {
    for (auto& row : rows) {
      if (m_stopped) return;
      if (m_delivered_from_table.size() > 100000) m_delivered_from_table.clear();
      m_delivered_from_table.emplace(row.origin, row.sequence);
      invoke(row.key, row.body);
      std::lock_guard lock(m_connection_mutex);
      m_acknowledged_ids.push_back(std::to_string(row.id));
    }
  }

  void on_live(const Delivery& delivery) {
    if (m_catching_up) {
      m_buffer.push_back(delivery);
      return;
    }
    deliver_live(delivery);
  }

  void deliver_live(const Delivery& delivery) {
    if (delivery.origin && delivery.sequence != 0) {
      // Already delivered from the table (its row is acknowledged by id).
      if (m_delivered_from_table.erase({*delivery.origin, delivery.sequence}) > 0) return;
    }
    invoke(delivery.key, delivery.body);
    if (delivery.origin && delivery.sequence != 0) {
      std::lock_guard lock(m_connection_mutex);
      m_acknowledged_origins.push_back(*delivery.origin);
      m_acknowledged_sequences.push_back(std::to_string(delivery.sequence));
    }
    acknowledge_soon();
  }

  void on_control(const ControlEvent& event) {
    invoke_control(event);
    if ((event.kind != ControlKind::reconnected && event.kind != ControlKind::overflow) || m_stopped) return;
    // Whatever was committed while the listener was away, or dropped because
    // this consumer fell behind, is in the table.
    std::vector<Row> missed;
    {
      std::lock_guard lock(m_connection_mutex);
      try {
        flush_acknowledgements();
        if (!m_connection || PQstatus(m_connection.get()) != CONNECTION_OK) reconnect();
        missed = read_backlog();
      } catch (const std::exception& error) {
        log(LogLevel::error, log_component, "durable consumer '" + m_name + "': cannot read its queue after a reconnect: " +
                                            error.what());
      }
    }
    deliver_rows(missed);
    acknowledge_soon();
  }

  // With m_connection_mutex held.
  void reconnect() {
    m_connection = start_connection(m_context.config->url, "livestate-queue", true, m_context.config->options.connect_timeout);
    if (PQstatus(m_connection.get()) != CONNECTION_OK ||
        run("SELECT pg_try_advisory_lock(hashtextextended('livestate.queue.' || $1, 0))", {m_name}) != "t") {
      throw TransportError("cannot reconnect durable consumer '" + m_name + "' to " + m_context.config->name);
    }
  }

  // Subscriber::stop waits for these: none runs after stop() returns.
  void invoke(const RoutingKey& key, const Json& body) {
    if (m_stopped) return;
    try {
      m_callback(key, body);
      ++m_context.dispatcher->counters()->delivered;
    } catch (const std::exception& error) {
      m_errors.record(error.what());
    } catch (...) {
      m_errors.record("a non-standard exception");
    }
  }

  void invoke_control(const ControlEvent& event) {
    if (!m_on_control || m_stopped) return;
    try {
      m_on_control(event);
    } catch (const std::exception& error) {
      m_errors.record(error.what());
    } catch (...) {
      m_errors.record("a non-standard exception");
    }
  }

  void acknowledge_soon() {
    std::unique_lock lock(m_connection_mutex);
    const auto pending = m_acknowledged_ids.size() + m_acknowledged_sequences.size();
    if (pending >= 256) {
      flush_acknowledgements();
      return;
    }
    if (pending == 0 || m_ack_timer_armed) return;
    m_ack_timer_armed = true;
    lock.unlock();
    m_ack_timer.expires_after(200ms);
    m_ack_timer.async_wait([weak = weak_from_this()](boost::system::error_code) {
      if (auto self = weak.lock()) {
        std::lock_guard guard(self->m_connection_mutex);
        self->m_ack_timer_armed = false;
        self->flush_acknowledgements();
      }
    });
  }

  // With m_connection_mutex held. A failure leaves the rows: they come again.
  void flush_acknowledgements() noexcept {
    if ((m_acknowledged_ids.empty() && m_acknowledged_sequences.empty()) || !m_connection) return;
    try {
      run("DELETE FROM livestate_mq_queued WHERE queue = $1 AND (id = ANY($2::bigint[]) OR (origin, sequence) IN "
          "(SELECT * FROM unnest($3::text[], $4::bigint[])))",
          {m_name, text_array(m_acknowledged_ids), text_array(m_acknowledged_origins),
           text_array(m_acknowledged_sequences)});
    } catch (const std::exception& error) {
      log(LogLevel::warning, log_component, "durable consumer '" + m_name + "': acknowledging failed (those messages "
                                        "will be delivered again): " + error.what());
    }
    m_acknowledged_ids.clear();
    m_acknowledged_origins.clear();
    m_acknowledged_sequences.clear();
  }

  DurableQueueContext m_context;
  std::string m_name;
  Filter m_filter;
  Callback m_callback;
  ControlCallback m_on_control;
  Subscription m_subscription;
  std::uint64_t m_expired = 0;

  // The subscriber's strand.
  bool m_catching_up = true;
  std::vector<Delivery> m_buffer;
  std::set<std::pair<std::string, std::uint64_t>> m_delivered_from_table;
  CallbackErrors m_errors;

  std::atomic<bool> m_stopped{false};

  std::mutex m_connection_mutex;  // the connection and the acknowledgements
  Connection m_connection;
  std::vector<std::string> m_acknowledged_ids;
  std::vector<std::string> m_acknowledged_origins;
  std::vector<std::string> m_acknowledged_sequences;
  bool m_ack_timer_armed = false;
  asio::steady_timer m_ack_timer;
};

class DurableConsumer final : public Consumer {
 public:
  explicit DurableConsumer(std::shared_ptr<DurableQueue> queue) : m_queue(std::move(queue)) {}
  ~DurableConsumer() override { stop_consuming(); }
  void stop_consuming() override { m_queue->stop(); }

 private:
  std::shared_ptr<DurableQueue> m_queue;
};

}  // namespace

std::unique_ptr<Consumer> start_durable_consumer(DurableQueueContext context, std::string name, Filter filter,
                                                 Callback callback, ControlCallback on_control) {
  auto queue = std::make_shared<DurableQueue>(std::move(context), std::move(name), std::move(filter),
                                              std::move(callback), std::move(on_control));
  try {
    queue->start();
  } catch (...) {
    queue->stop();
    throw;
  }
  return std::make_unique<DurableConsumer>(std::move(queue));
}

}  // namespace livestate::mq::detail
