#include "durable_queue.hpp"

#include <atomic>
#include <deque>
#include <mutex>
#include <set>
#include <vector>

#include <boost/asio/steady_timer.hpp>

#include "livestate/core/error.hpp"
#include "livestate/core/log.hpp"
#include "pq_connection.hpp"
#include "pq_session.hpp"
#include "queue_table.hpp"

namespace livestate::mq::detail {

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

// A durable consumer: its queue's messages are rows of livestate_mq_queued,
// written by producers in the transactions that send them, and deleted once
// delivered (acknowledged in batches). Resuming reads what is left, in order,
// before anything live; so does a consumer told that it may have missed
// messages (its listener reconnected, its queue overflowed). A live copy of a
// message already delivered from the table is skipped. At least once: a
// message delivered but not yet acknowledged when the consumer stops (or
// crashes) comes again next time. The queue's connection holds an advisory
// lock on its name: one active consumer per name, in every process.
//
// Claiming the queue and reading its first backlog happen in the caller's
// thread (start_consuming). After that, everything runs on the consumer's
// strand, and its statements (acknowledgements, reads, reconnecting) go
// through an AsyncSession: a server that stalls delays this consumer alone.
// Callbacks run as Work of the consumer's queue (Subscriber), which is how
// stop() knows when none runs any more.
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
        m_backoff(m_context.config->options.reconnect_initial) {}

  void start() {
    const auto& config = *m_context.config;
    const auto timeout = config.options.statement_timeout;
    m_connection = start_connection(config.url, config.connection("livestate-queue"), true);
    if (PQstatus(m_connection.get()) != CONNECTION_OK) {
      throw TransportError("cannot start durable consumer '" + m_name + "': cannot connect to " + config.name + ": " +
                           one_line(PQerrorMessage(m_connection.get())));
    }
    m_context.tables->ensure(m_connection.get(), timeout);
    if (run_blocking(m_connection.get(), lock_queue_sql, {m_name}, timeout) != "t") {
      throw PersistentNameInUse("durable consumer '" + m_name +
                                "' is already active (in this or another process): stop it first");
    }
    m_expired = register_queue(m_connection.get(), m_name, m_filter, timeout);
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
    if (!m_context.status->wait_listening(
            std::chrono::duration_cast<std::chrono::milliseconds>(config.options.connect_timeout))) {
      throw TransportError("cannot start durable consumer '" + m_name + "': not listening to " + config.name + " yet");
    }
    // Its first page here, so that a queue that can't be read fails
    // start_consuming; the rest from the consumer's strand.
    Result result;
    try {
      result = exec_blocking(m_connection.get(), read_queue_sql, page_params(m_name, 0), timeout);
    } catch (const StatementError& error) {
      throw TransportError("cannot start durable consumer '" + m_name + "': cannot read its queue on " + config.name +
                           ": " + error.what());
    }
    {
      std::lock_guard lock(m_mutex);
      m_session = std::make_shared<AsyncSession>(m_subscription.subscriber()->strand(), timeout);
      m_session->adopt(std::move(m_connection));
    }
    page_read(result.get());
  }

  void stop() noexcept {
    if (m_stopped.exchange(true)) return;
    m_subscription.stop();  // waits for a callback in progress
    std::lock_guard lock(m_mutex);
    if (!m_session) {
      m_connection.reset();  // releases the name's lock
      return;
    }
    // The last acknowledgements, and the name's lock, given back at once
    // when the connection is free (else closing it gives them back).
    m_session->close([&](PGconn* connection) {
      const auto timeout = m_context.config->options.statement_timeout;
      try {
        if (!m_acknowledgements.empty()) {
          run_blocking(connection, Acknowledgements::sql, m_acknowledgements.params(m_name), timeout);
        }
        run_blocking(connection, unlock_queue_sql, {m_name}, timeout);
      } catch (const std::exception& error) {
        log(LogLevel::warning, log_component,
            "durable consumer '" + m_name +
                "': acknowledging failed (those messages "
                "will be delivered again): " +
                error.what());
      }
    });
  }

 private:
  // --- delivering (Work of the consumer's queue) ---------------------------------

  // A page of the table: its rows, then the next page; after the last one,
  // what came live meanwhile.
  void deliver_page(QueuePage& page) {
    if (m_expired > 0) {
      invoke_control(ControlEvent{ControlKind::expired,
                                  std::to_string(m_expired) + " queued message(s) pruned while no consumer was active",
                                  std::nullopt, std::exchange(m_expired, 0)});
    }
    for (auto& row : page.rows) {
      if (m_stopped) return;
      if (m_delivered_from_table.size() > 100000) m_delivered_from_table.clear();
      m_delivered_from_table.emplace(row.origin, row.sequence);
      if (!invoke(row.key, row.body)) return;
      std::lock_guard lock(m_mutex);
      m_acknowledgements.row(row.id);
    }
    acknowledge_soon();
    // Read once this one is delivered: one page in memory at a time.
    if (page.size >= queue_page_rows) return read_page(page.last_id);
    m_reading = false;
    m_backoff = m_context.config->options.reconnect_initial;
    if (std::exchange(m_read_again, false)) {
      read();  // live messages stay held until it is done
    } else {
      deliver_held();
    }
  }

  void deliver_held() {
    if (m_reading) return;  // another read started: its rows come first
    m_catching_up = false;
    for (auto& delivery : std::exchange(m_held, {})) deliver_live(delivery);
    acknowledge_soon();
  }

  void on_live(const Delivery& delivery) {
    if (!m_catching_up) return deliver_live(delivery);
    if (m_discarding) return;
    // Too many held: they are all in the table, and so is what comes until
    // the next read starts, which reads them in order.
    if (m_held.size() >= std::max<std::size_t>(m_context.config->options.max_buffered, 1)) {
      m_held.clear();
      m_discarding = true;
      return read();
    }
    m_held.push_back(delivery);
  }

  void deliver_live(const Delivery& delivery) {
    if (delivery.origin && delivery.sequence != 0) {
      // Already delivered from the table (its row is acknowledged by id).
      if (m_delivered_from_table.erase({*delivery.origin, delivery.sequence}) > 0) return;
    }
    if (!invoke(delivery.key, delivery.body)) return;
    if (delivery.origin && delivery.sequence != 0) {
      std::lock_guard lock(m_mutex);
      m_acknowledgements.message(*delivery.origin, delivery.sequence);
    }
    acknowledge_soon();
  }

  void on_control(const ControlEvent& event) {
    invoke_control(event);
    // Whatever was committed while the listener was away, dropped because
    // this consumer fell behind, or lost on the way (a gap), is in the table.
    if (event.kind != ControlKind::expired) read();
  }

  // Subscriber::stop waits for these: none runs after stop() returns.
  // Whether the callback had the message (also when it threw): only then is
  // it acknowledged; one not delivered because the consumer stopped
  // meanwhile comes again to the next consumer of the name.
  bool invoke(const RoutingKey& key, const Json& body) {
    if (m_stopped) return false;
    m_errors.guard([&] {
      m_callback(key, body);
      ++m_context.dispatcher->counters()->delivered;
    });
    return true;
  }

  void invoke_control(const ControlEvent& event) {
    if (!m_on_control || m_stopped) return;
    m_errors.guard([&] { m_on_control(event); });
  }

  // --- the table (the consumer's strand) --------------------------------------------

  // Reads the table (after acknowledging what was delivered), connecting
  // again first when needed; live messages are held from the start of the
  // read until its rows are delivered.
  void read() {
    if (m_stopped) return;
    if (m_reading) {
      m_read_again = true;
      return;
    }
    m_reading = true;
    if (m_session->connected() && m_locked) return start_read();
    reconnect();
  }

  void reconnect() {
    const auto& config = *m_context.config;
    m_locked = false;
    m_session->async_connect(
        config.url, config.connection("livestate-queue"), [weak = weak_from_this()](AsyncSession::Outcome connected) {
          auto self = weak.lock();
          if (!self || self->m_stopped) return;
          if (!connected.ok) return self->read_failed("cannot reconnect: " + connected.error);
          self->m_session->async_run(lock_queue_sql, {self->m_name}, [weak](AsyncSession::Outcome locked) {
            if (auto queue = weak.lock()) queue->locked(locked);
          });
        });
  }

  void locked(const AsyncSession::Outcome& outcome) {
    if (m_stopped) return;
    if (!outcome.ok) return read_failed("cannot take its lock again: " + outcome.error);
    if (PQgetisnull(outcome.result.get(), 0, 0) != 0 || PQgetvalue(outcome.result.get(), 0, 0) != std::string("t")) {
      // Its previous session still holds it: the server has not seen it end.
      return read_failed("its previous connection still holds its lock");
    }
    m_locked = true;
    start_read();
  }

  void start_read() {
    m_catching_up = true;
    m_discarding = false;
    flush_acknowledgements();
    read_page(0);
  }

  void read_page(std::int64_t after_id) {
    m_session->async_run(read_queue_sql, page_params(m_name, after_id),
                         [weak = weak_from_this()](AsyncSession::Outcome outcome) {
                           auto self = weak.lock();
                           if (!self || self->m_stopped) return;
                           if (!outcome.ok) return self->read_failed("cannot read its queue: " + outcome.error);
                           self->page_read(outcome.result.get());
                         });
  }

  // A page read: delivered in turn with the consumer's messages.
  void page_read(const PGresult* result) {
    auto page = std::make_shared<QueuePage>(page_of(result, m_name));
    auto& counters = *m_context.dispatcher->counters();
    counters.queue_rows_read += page->size;
    raise_peak(counters.queue_page_peak, page->size);
    m_subscription.subscriber()->push(
        Subscriber::Work([self = shared_from_this(), page] { self->deliver_page(*page); }));
  }

  // What was missed stays in the table: read it later; deliver what is held.
  void read_failed(const std::string& reason) {
    log(LogLevel::warning, log_component,
        "durable consumer '" + m_name + "' on " + m_context.config->name + ": " + reason +
            "; reading its queue again in " + std::to_string(m_backoff.count()) + " ms");
    m_reading = false;
    m_read_again = false;
    m_subscription.subscriber()->push(Subscriber::Work([self = shared_from_this()] { self->deliver_held(); }));
    if (m_retry_timer) return;
    m_retry_timer.emplace(m_subscription.subscriber()->strand());
    m_retry_timer->expires_after(m_backoff);
    m_backoff = std::min(m_backoff * 2, m_context.config->options.reconnect_max);
    m_retry_timer->async_wait([weak = weak_from_this()](boost::system::error_code error) {
      auto self = weak.lock();
      if (!self || error) return;
      self->m_retry_timer.reset();
      self->read();
    });
  }

  void acknowledge_soon() {
    std::size_t pending = 0;
    {
      std::lock_guard lock(m_mutex);
      pending = m_acknowledgements.size();
    }
    if (pending >= 256) return flush_acknowledgements();
    if (pending == 0 || m_ack_timer) return;
    m_ack_timer.emplace(m_subscription.subscriber()->strand());
    m_ack_timer->expires_after(200ms);
    m_ack_timer->async_wait([weak = weak_from_this()](boost::system::error_code) {
      if (auto self = weak.lock()) {
        self->m_ack_timer.reset();
        self->flush_acknowledgements();
      }
    });
  }

  // A failure puts them back, for the next time.
  void flush_acknowledgements() {
    if (m_stopped) return;
    if (!m_session->connected()) return read();  // connects again, then acknowledges
    auto sent = std::make_shared<Acknowledgements>();
    {
      std::lock_guard lock(m_mutex);
      if (m_acknowledgements.empty()) return;
      *sent = std::exchange(m_acknowledgements, {});
    }
    m_session->async_run(Acknowledgements::sql, sent->params(m_name),
                         [weak = weak_from_this(), sent](AsyncSession::Outcome outcome) {
                           auto self = weak.lock();
                           if (!self || outcome.ok || self->m_stopped) return;
                           log(LogLevel::warning, log_component,
                               "durable consumer '" + self->m_name +
                                   "': acknowledging failed (tried again later; "
                                   "until then they stay in its queue): " +
                                   outcome.error);
                           std::lock_guard lock(self->m_mutex);
                           self->m_acknowledgements.merge(std::move(*sent));
                         });
  }

  const DurableQueueContext m_context;
  const std::string m_name;
  const Filter m_filter;
  const Callback m_callback;
  const ControlCallback m_on_control;
  Subscription m_subscription;
  std::atomic<bool> m_stopped{false};

  // The consumer's strand (start() before it shares them).
  std::uint64_t m_expired = 0;
  bool m_catching_up = true;  // live messages are held
  bool m_discarding = false;  // and dropped: too many
  bool m_reading = true;      // the table is being read (start() reads it first)
  bool m_read_again = false;  // once more, when that is done
  bool m_locked = true;       // the session holds the name's lock
  std::deque<Delivery> m_held;
  std::set<std::pair<std::string, std::uint64_t>> m_delivered_from_table;
  CallbackErrors m_errors;
  std::chrono::milliseconds m_backoff;
  std::optional<asio::steady_timer> m_retry_timer;
  std::optional<asio::steady_timer> m_ack_timer;

  std::mutex m_mutex;       // what stop() takes from another thread:
  Connection m_connection;  // until the session has it
  std::shared_ptr<AsyncSession> m_session;
  Acknowledgements m_acknowledgements;
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
