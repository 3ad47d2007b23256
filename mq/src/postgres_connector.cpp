// The PostgreSQL LISTEN/NOTIFY connector.
//
// One listening connection, driven without blocking on the user's executor
// (libpq's non-blocking connect and input functions, its socket waited on
// with Asio); one producing connection, used under a mutex by whichever thread
// produces. Received payloads are decoded (wire.hpp), checked for gaps in each
// origin's sequence, and handed in order to an in-process router (a SimpleMQ)
// that matches filters, on a strand of the executor. Each consumer has a
// queue of its own, bounded, drained on a strand of its own: a consumer that
// blocks or throws delays and costs nobody else (given an executor with
// threads to spare), and one that falls behind loses only its own messages
// and is told so.

#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>
#include <variant>

#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "livestate/core/detail/json_reader.hpp"
#include "livestate/core/log.hpp"
#include "livestate/core/wire.hpp"
#include "livestate/mq/control.hpp"
#include "livestate/mq/postgres.hpp"
#include "livestate/mq/transactional.hpp"
#include "dispatcher.hpp"
#include "postgres_registry.hpp"
#include "connector_config.hpp"
#include "pq_connection.hpp"
#include "producer.hpp"
#include "tables.hpp"

namespace livestate::mq {

namespace {
namespace asio = boost::asio;
using namespace std::chrono_literals;
using namespace detail;
constexpr std::string_view component = log_component;

std::string random_origin() {
  std::random_device device;
  std::uniform_int_distribution<std::uint64_t> digits;
  char text[24];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(digits(device)));
  return text;
}

// The channel as a quoted identifier (LISTEN takes no parameter).
std::string quoted_channel(const std::string& channel) {
  std::string quoted = "\"";
  for (const char c : channel) {
    quoted += c;
    if (c == '"') quoted += '"';
  }
  return quoted + "\"";
}

// A decoded message waiting for its turn (and maybe for its body).
struct Received {
  std::optional<std::string> origin;
  wire::Incoming message;
};

class DurableQueue;
class Core final : public std::enable_shared_from_this<Core> {
 public:
  Core(std::string url, asio::any_io_executor executor, PostgresOptions options)
      : m_config{url, redact(url), std::move(options), random_origin()},
        m_listen_strand(asio::make_strand(executor)),
        m_executor(executor),
        m_retry_timer(m_listen_strand),
        m_probe_timer(m_listen_strand),
        m_wait_deadline(m_listen_strand),
        m_dispatcher(std::make_shared<Dispatcher>(executor, m_config.options.max_buffered, m_counters)) {}

  void start() {
    asio::post(m_listen_strand, [self = shared_from_this()] { self->connect(); });
  }

  // Stops everything; afterwards no consumer is called. Waits for callbacks
  // running in other threads.
  void stop() noexcept {
    m_stopped.store(true);
    m_dispatcher->stop();
    asio::post(m_listen_strand, [self = shared_from_this()] { self->close_listener(); });
    std::lock_guard lock(m_state_mutex);
    m_listening = false;
    m_state_changed.notify_all();
  }

  // --- consumers -------------------------------------------------------------

  std::unique_ptr<Consumer> start_consuming(Callback callback, Filter filter, const ConsumeOptions& options);

  // A consumer's queue, fed with the messages that match `filter` and, when
  // it has a control callback, with control events.
  Subscription subscribe(const Filter& filter, std::string name, Subscriber::MessageHandler on_message,
                         ControlCallback on_control) {
    return m_dispatcher->subscribe(filter, std::move(name), std::move(on_message), std::move(on_control));
  }

  // --- producing -------------------------------------------------------------

  void produce(const RoutingKey& key, const Json& body) { m_producer.produce(key, body); }
  void send_in_transaction(std::span<const SentMessage> messages, SqlRunner& sql) {
    m_producer.send_in_transaction(messages, sql);
  }

  [[nodiscard]] PostgresStats stats() const {
    std::lock_guard lock(m_state_mutex);
    PostgresStats stats = m_stats;
    stats.delivered = m_counters->delivered;
    stats.callback_errors = m_counters->callback_errors;
    stats.dropped_overflow = m_counters->dropped;
    stats.backlog_peak = m_counters->backlog_peak;
    stats.listening = m_listening;
    return stats;
  }
  [[nodiscard]] ConnectorStats connector_stats() const {
    ConnectorStats stats;
    stats.consumers = m_dispatcher->consumers();
    stats.produced = m_producer.produced();
    stats.delivered = m_counters->delivered;
    stats.callback_errors = m_counters->callback_errors;
    return stats;
  }
  [[nodiscard]] const std::string& origin() const noexcept { return m_config.origin; }

  bool wait_listening(std::chrono::milliseconds timeout) const {
    std::unique_lock lock(m_state_mutex);
    return m_state_changed.wait_for(lock, timeout, [&] { return m_listening || m_stopped.load(); }) &&
           m_listening;
  }

 private:
  // --- the listening connection (all on m_listen_strand) ------------------------

  void connect() {
    if (m_stopped) return;
    m_listener = start_connection(m_config.url, "livestate-listener", false, m_config.options.connect_timeout);
    if (PQstatus(m_listener.get()) == CONNECTION_BAD) {
      return lost("cannot connect: " + one_line(PQerrorMessage(m_listener.get())));
    }
    m_wait_deadline.expires_after(m_config.options.connect_timeout);
    m_wait_deadline.async_wait([self = shared_from_this(), generation = m_generation](boost::system::error_code error) {
      if (!error && generation == self->m_generation && !self->m_connected) self->lost("connecting timed out");
    });
    poll_connect(PGRES_POLLING_WRITING);
  }

  void watch_socket() {
    const int fd = PQsocket(m_listener.get());
    if (m_socket && m_socket_fd == fd) return;
    m_socket.reset();
    const int copy = ::dup(fd);  // Asio owns (and closes) the copy, libpq the original
    if (copy < 0) throw std::system_error(errno, std::generic_category(), "dup");
    m_socket.emplace(m_listen_strand, copy);
    m_socket_fd = fd;
  }

  void poll_connect(PostgresPollingStatusType status) {
    if (m_stopped) return;
    if (status == PGRES_POLLING_FAILED) {
      return lost("cannot connect: " + one_line(PQerrorMessage(m_listener.get())));
    }
    if (status == PGRES_POLLING_OK) return connected();
    watch_socket();
    const auto wait = status == PGRES_POLLING_READING ? asio::posix::stream_descriptor::wait_read
                                                       : asio::posix::stream_descriptor::wait_write;
    m_socket->async_wait(wait, [self = shared_from_this(), generation = m_generation](boost::system::error_code error) {
      if (generation != self->m_generation || self->m_stopped) return;
      if (error) return self->lost("waiting for the connection: " + error.message());
      self->poll_connect(PQconnectPoll(self->m_listener.get()));
    });
  }

  void connected() {
    m_connected = true;
    m_wait_deadline.cancel();
    watch_socket();
    if (PQsetnonblocking(m_listener.get(), 1) != 0) return lost("cannot make the connection non-blocking");
    send_query("LISTEN " + quoted_channel(m_config.options.channel), {}, [self = shared_from_this()](Result result) {
      if (PQresultStatus(result.get()) != PGRES_COMMAND_OK) {
        return self->lost("LISTEN refused: " + one_line(PQresultErrorMessage(result.get())));
      }
      self->listening();
    });
    read();
  }

  void listening() {
    m_backoff = m_config.options.reconnect_initial;
    bool reconnected = false;
    std::string reason;
    {
      std::lock_guard lock(m_state_mutex);
      m_listening = true;
      m_listening_since = std::chrono::steady_clock::now();
      reconnected = m_ever_listened;
      m_ever_listened = true;
      if (reconnected) {
        ++m_stats.reconnects;
        reason = m_stats.last_reconnect_reason;
      }
      m_state_changed.notify_all();
    }
    if (reconnected) {
      // Whatever was produced while we were away is lost to us: the sequences
      // we knew mean nothing any more, and every consumer must know.
      m_next_sequence.clear();
      count_origins();
      log(LogLevel::warning, component, "listening again on " + m_config.name + " after: " + reason);
      enqueue(ControlEvent{ControlKind::reconnected, "reconnected after: " + reason, std::nullopt, 0});
      deliver_ready();
    }
    schedule_probe();
  }

  // The read loop: everything the server sends on the listening connection.
  void read() {
    m_socket->async_wait(asio::posix::stream_descriptor::wait_read,
                         [self = shared_from_this(), generation = m_generation](boost::system::error_code error) {
                           if (generation != self->m_generation || self->m_stopped) return;
                           if (error) return self->lost("waiting for the socket: " + error.message());
                           self->on_readable();
                         });
  }

  void on_readable() {
    m_last_traffic = std::chrono::steady_clock::now();
    if (PQconsumeInput(m_listener.get()) == 0) {
      return lost(one_line(PQerrorMessage(m_listener.get())));
    }
    collect_results();
    if (m_stopped || !m_listener) return;
    take_notifications();
    deliver_ready();
    if (PQstatus(m_listener.get()) != CONNECTION_OK) return lost("the server closed the connection");
    read();
  }

  // Queries on the listening connection run one at a time, in order.
  struct Query {
    std::string sql;
    std::vector<std::string> params;
    std::function<void(Result)> on_result;
  };

  // A query asked for from a result's callback (the next body by reference,
  // fetched when the last one arrives) waits until that result is collected:
  // libpq takes one query at a time.
  void send_query(std::string sql, std::vector<std::string> params, std::function<void(Result)> on_result) {
    m_queries.push_back({std::move(sql), std::move(params), std::move(on_result)});
    if (!m_query_sent) send_front();
  }

  void send_front() {
    const Query& query = m_queries.front();
    std::vector<const char*> values;
    for (const auto& param : query.params) values.push_back(param.c_str());
    const int sent = PQsendQueryParams(m_listener.get(), query.sql.c_str(), static_cast<int>(values.size()),
                                       nullptr, values.data(), nullptr, nullptr, 0);
    if (sent == 0) return lost("cannot send a query: " + one_line(PQerrorMessage(m_listener.get())));
    m_query_sent = true;
    PQflush(m_listener.get());  // small queries: the rest goes with the next read
    m_last_result.reset();
  }

  void collect_results() {
    while (!m_queries.empty() && PQisBusy(m_listener.get()) == 0) {
      PGresult* raw = PQgetResult(m_listener.get());
      if (raw != nullptr) {
        m_last_result.reset(raw);
        continue;
      }
      auto done = std::move(m_queries.front());
      m_queries.pop_front();
      m_query_sent = false;
      done.on_result(std::move(m_last_result));
      if (m_stopped || !m_listener) return;
      if (!m_queries.empty() && !m_query_sent) send_front();
    }
  }

  void schedule_probe() {
    m_probe_timer.expires_after(m_config.options.probe_interval);
    m_probe_timer.async_wait([self = shared_from_this(), generation = m_generation](boost::system::error_code error) {
      if (error || generation != self->m_generation || self->m_stopped) return;
      self->probe();
    });
  }

  // After probe_interval of silence, ask the server something; no answer
  // within probe_timeout means a half-open connection.
  void probe() {
    const auto idle = std::chrono::steady_clock::now() - m_last_traffic;
    if (idle < m_config.options.probe_interval || m_probing) return schedule_probe();
    m_probing = true;
    m_wait_deadline.expires_after(m_config.options.probe_timeout);
    m_wait_deadline.async_wait([self = shared_from_this(), generation = m_generation](boost::system::error_code error) {
      if (!error && generation == self->m_generation && self->m_probing) {
        self->lost("no answer to a liveness probe within " +
                   std::to_string(self->m_config.options.probe_timeout.count()) + " ms");
      }
    });
    send_query("SELECT 1", {}, [self = shared_from_this()](Result) {
      self->m_probing = false;
      self->m_wait_deadline.cancel();
      self->schedule_probe();
    });
  }

  void take_notifications() {
    while (PGnotify* raw = PQnotifies(m_listener.get())) {
      std::unique_ptr<PGnotify, decltype(&PQfreemem)> notification(raw, &PQfreemem);
      if (m_config.options.channel != notification->relname) continue;
      decode(notification->extra);
    }
    release_ready();
  }

  void decode(std::string_view payload) {
    wire::Decoded decoded = wire::decode(payload);
    {
      std::lock_guard lock(m_state_mutex);
      ++m_stats.notifications;
      m_stats.malformed += decoded.problems.size();
      m_stats.received += decoded.messages.size();
    }
    for (const auto& problem : decoded.problems) report_problem(problem);
    for (auto& message : decoded.messages) {
      if (decoded.origin && message.sequence) check_sequence(*decoded.origin, *message.sequence);
      m_pending.push_back(Received{decoded.origin, std::move(message)});
    }
  }

  // Logs one line per kind of problem per minute, not one per payload.
  void report_problem(const wire::Problem& problem) {
    const auto now = std::chrono::steady_clock::now();
    auto& last = m_problem_logged[problem.kind];
    if (last.time_since_epoch().count() != 0 && now - last < 60s) return;
    last = now;
    log(LogLevel::warning, component,
        "dropped a malformed message on channel " + m_config.options.channel + " (" +
            std::string(wire::to_string(problem.kind)) + "): " + problem.detail +
            " (further ones of this kind are counted, logged at most once a minute)");
  }

  void check_sequence(const std::string& origin, std::uint64_t sequence) {
    const auto now = std::chrono::steady_clock::now();
    forget_silent_origins(now);
    auto [next, first] = m_next_sequence.try_emplace(origin, Sequence{sequence, now});
    // An unknown origin past its first message: it may be one forgotten, so
    // what it sent meanwhile may be lost, unless we have not been listening
    // long enough to know.
    const bool maybe_forgotten = first && sequence > 1 && now - m_listening_since > m_config.options.forget_origins_after;
    if (maybe_forgotten || (!first && sequence > next->second.next)) {
      const std::uint64_t missed = maybe_forgotten ? sequence - 1 : sequence - next->second.next;
      {
        std::lock_guard lock(m_state_mutex);
        ++m_stats.gaps;
      }
      m_pending.push_back(ControlEvent{ControlKind::gap,
                                       std::to_string(missed) + " message(s) of origin " + origin +
                                           (maybe_forgotten ? " unknown (not heard for a long time, or lost)"
                                                            : " missing"),
                                       origin, missed});
    }
    next->second.next = std::max(next->second.next, sequence + 1);
    next->second.heard = now;
    if (first) count_origins();
  }

  // At most every tenth of forget_origins_after: the silent origins go.
  void forget_silent_origins(std::chrono::steady_clock::time_point now) {
    const auto horizon =
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(m_config.options.forget_origins_after);
    if (now - m_origins_swept < horizon / 10) return;
    m_origins_swept = now;
    std::erase_if(m_next_sequence, [&](const auto& entry) { return now - entry.second.heard > horizon; });
    count_origins();
  }

  void count_origins() {
    std::lock_guard lock(m_state_mutex);
    m_stats.origins = m_next_sequence.size();
  }

  // Moves decoded messages to the dispatcher, in order; a body sent by
  // reference is fetched first, and holds back everything after it.
  void release_ready() {
    while (!m_pending.empty() && !m_fetching) {
      auto& front = m_pending.front();
      if (auto* received = std::get_if<Received>(&front); received != nullptr && received->message.reference) {
        fetch_body(*received->message.reference);
        return;
      }
      if (auto* received = std::get_if<Received>(&front)) {
        enqueue(Delivery{std::move(received->message.key), std::move(received->message.body),
                         std::move(received->origin), received->message.sequence.value_or(0)});
      } else {
        enqueue(std::move(std::get<ControlEvent>(front)));
      }
      m_pending.pop_front();
    }
  }

  void fetch_body(std::int64_t reference) {
    m_fetching = true;
    send_query("SELECT body FROM livestate_mq_bodies WHERE id = $1", {std::to_string(reference)},
               [self = shared_from_this(), reference](Result result) {
                 self->m_fetching = false;
                 auto& message = std::get<Received>(self->m_pending.front()).message;
                 message.reference.reset();
                 bool found = false;
                 if (PQresultStatus(result.get()) == PGRES_TUPLES_OK && PQntuples(result.get()) == 1) {
                   try {
                     message.body = livestate::detail::parse_json(PQgetvalue(result.get(), 0, 0));
                     found = true;
                   } catch (const Json::exception&) {
                   }
                 }
                 {
                   std::lock_guard lock(self->m_state_mutex);
                   ++(found ? self->m_stats.by_reference : self->m_stats.missing_references);
                 }
                 if (!found) {
                   log(LogLevel::warning, component,
                       "dropped " + message.key.str() + ": its body (livestate_mq_bodies row " +
                           std::to_string(reference) + ") is gone or unreadable");
                   self->m_pending.pop_front();
                 }
                 self->release_ready();
                 self->deliver_ready();
               });
  }

  void lost(const std::string& reason) {
    if (m_stopped) return;
    const bool was_listening = [&] {
      std::lock_guard lock(m_state_mutex);
      const bool listening = m_listening;
      m_listening = false;
      // The cause that broke a working connection is what consumers are told
      // about when it comes back; the failed retries after it don't replace it.
      if (listening || m_stats.last_reconnect_reason.empty()) m_stats.last_reconnect_reason = reason;
      return listening;
    }();
    log(was_listening ? LogLevel::warning : LogLevel::info, component,
        "listening connection to " + m_config.name + " lost: " + reason + "; reconnecting in " +
            std::to_string(m_backoff.count()) + " ms");
    close_listener();
    // Backoff with jitter: between half and all of the current step.
    std::uniform_int_distribution<long long> jitter(m_backoff.count() / 2, m_backoff.count());
    m_retry_timer.expires_after(std::chrono::milliseconds(jitter(m_random)));
    m_backoff = std::min(m_backoff * 2, m_config.options.reconnect_max);
    m_retry_timer.async_wait([self = shared_from_this()](boost::system::error_code error) {
      if (!error) self->connect();
    });
  }

  void close_listener() noexcept {
    ++m_generation;  // handlers of the old connection find out and return
    m_connected = false;
    m_probing = false;
    m_fetching = false;
    m_queries.clear();
    m_query_sent = false;
    m_last_result.reset();
    m_pending.clear();  // undelivered leftovers of a lost connection: the reset event covers them
    boost::system::error_code ignored;
    m_wait_deadline.cancel(ignored);
    m_probe_timer.cancel(ignored);
    if (m_stopped) m_retry_timer.cancel(ignored);
    m_socket.reset();
    m_socket_fd = -1;
    m_listener.reset();
  }

  // Delivered at the end of the current read, in order.
  void enqueue(Item item) { m_ready.push_back(std::move(item)); }
  void deliver_ready() {
    if (m_ready.empty()) return;
    m_dispatcher->deliver(m_ready);
    m_ready.clear();
  }

  // --- producing ---------------------------------------------------------------

  friend class DurableQueue;

  ConnectorConfig m_config;
  std::atomic<bool> m_stopped{false};
  std::shared_ptr<Tables> m_tables = std::make_shared<Tables>();
  Producer m_producer{m_config, m_tables};

  // Listener state: m_listen_strand only.
  asio::strand<asio::any_io_executor> m_listen_strand;
  asio::any_io_executor m_executor;
  Connection m_listener;
  std::optional<asio::posix::stream_descriptor> m_socket;
  int m_socket_fd = -1;
  std::uint64_t m_generation = 0;
  bool m_connected = false;
  bool m_probing = false;
  bool m_fetching = false;
  asio::steady_timer m_retry_timer;
  asio::steady_timer m_probe_timer;
  asio::steady_timer m_wait_deadline;
  std::chrono::milliseconds m_backoff{m_config.options.reconnect_initial};
  std::mt19937_64 m_random{std::random_device{}()};
  std::chrono::steady_clock::time_point m_last_traffic{};
  std::deque<Query> m_queries;
  bool m_query_sent = false;  // the front of m_queries is with the server
  Result m_last_result;
  std::deque<std::variant<Received, ControlEvent>> m_pending;
  struct Sequence {
    std::uint64_t next;  // the sequence expected next
    std::chrono::steady_clock::time_point heard;
  };
  std::map<std::string, Sequence> m_next_sequence;  // by origin
  std::chrono::steady_clock::time_point m_origins_swept{};
  std::chrono::steady_clock::time_point m_listening_since{};
  std::map<wire::ProblemKind, std::chrono::steady_clock::time_point> m_problem_logged;

  // Shared with other threads.
  mutable std::mutex m_state_mutex;
  mutable std::condition_variable m_state_changed;
  PostgresStats m_stats;
  bool m_listening = false;
  bool m_ever_listened = false;

  std::vector<Item> m_ready;  // m_listen_strand
  std::shared_ptr<DispatchCounters> m_counters = std::make_shared<DispatchCounters>();
  std::shared_ptr<Dispatcher> m_dispatcher;

};

// A consumer of the connector: its subscriptions and its queue, stopped
// together.
class PostgresConsumer final : public Consumer {
 public:
  explicit PostgresConsumer(Subscription subscription) : m_subscription(std::move(subscription)) {}
  ~PostgresConsumer() override { stop_consuming(); }
  void stop_consuming() override { m_subscription.stop(); }

 private:
  Subscription m_subscription;
};

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
  DurableQueue(std::shared_ptr<Core> core, std::string name, Filter filter, Callback callback,
               ControlCallback on_control)
      : m_core(std::move(core)),
        m_name(std::move(name)),
        m_filter(std::move(filter)),
        m_callback(std::move(callback)),
        m_on_control(std::move(on_control)),
        m_errors(m_core->m_counters, "durable consumer '" + m_name + "'"),
        m_ack_timer(asio::make_strand(m_core->m_executor)) {}

  // In the caller's thread: claims the queue, subscribes, reads the backlog,
  // and has it delivered on the executor before anything live.
  void start() {
    std::lock_guard lock(m_connection_mutex);
    m_connection = start_connection(m_core->m_config.url, "livestate-queue", true, m_core->m_config.options.connect_timeout);
    if (PQstatus(m_connection.get()) != CONNECTION_OK) {
      throw TransportError("cannot start durable consumer '" + m_name + "': cannot connect to " + m_core->m_config.name +
                           ": " + one_line(PQerrorMessage(m_connection.get())));
    }
    m_core->m_tables->ensure(m_connection.get());
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
    m_subscription = m_core->subscribe(
        m_filter, "durable consumer '" + m_name + "'",
        [weak](const Delivery& delivery) {
          if (auto self = weak.lock()) self->on_live(delivery);
        },
        [weak](const ControlEvent& event) {
          if (auto self = weak.lock()) self->on_control(event);
        });
    // What is committed from now on is heard live; the table has the rest.
    if (!m_core->wait_listening(std::chrono::duration_cast<std::chrono::milliseconds>(m_core->m_config.options.connect_timeout))) {
      throw TransportError("cannot start durable consumer '" + m_name + "': not listening to " + m_core->m_config.name +
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
        log(LogLevel::warning, component, "durable consumer '" + m_name + "': dropped an unreadable queued message: " +
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
        log(LogLevel::error, component, "durable consumer '" + m_name + "': cannot read its queue after a reconnect: " +
                                            error.what());
      }
    }
    deliver_rows(missed);
    acknowledge_soon();
  }

  // With m_connection_mutex held.
  void reconnect() {
    m_connection = start_connection(m_core->m_config.url, "livestate-queue", true, m_core->m_config.options.connect_timeout);
    if (PQstatus(m_connection.get()) != CONNECTION_OK ||
        run("SELECT pg_try_advisory_lock(hashtextextended('livestate.queue.' || $1, 0))", {m_name}) != "t") {
      throw TransportError("cannot reconnect durable consumer '" + m_name + "' to " + m_core->m_config.name);
    }
  }

  // Subscriber::stop waits for these: none runs after stop() returns.
  void invoke(const RoutingKey& key, const Json& body) {
    if (m_stopped) return;
    try {
      m_callback(key, body);
      ++m_core->m_counters->delivered;
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
      log(LogLevel::warning, component, "durable consumer '" + m_name + "': acknowledging failed (those messages "
                                        "will be delivered again): " + error.what());
    }
    m_acknowledged_ids.clear();
    m_acknowledged_origins.clear();
    m_acknowledged_sequences.clear();
  }

  std::shared_ptr<Core> m_core;
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

std::unique_ptr<Consumer> Core::start_consuming(Callback callback, Filter filter, const ConsumeOptions& options) {
  if (options.persistent_name) {
    auto queue = std::make_shared<DurableQueue>(shared_from_this(), *options.persistent_name, std::move(filter),
                                                std::move(callback), options.on_control);
    try {
      queue->start();
    } catch (...) {
      queue->stop();
      throw;
    }
    return std::make_unique<DurableConsumer>(std::move(queue));
  }
  if (!callback) throw std::invalid_argument("livestate::mq::PostgresConnector::start_consuming: empty callback");
  const std::string name = "consumer of " + filter.str();
  return std::make_unique<PostgresConsumer>(subscribe(
      filter, name, [callback = std::move(callback)](const Delivery& delivery) { callback(delivery.key, delivery.body); },
      options.on_control));
}

// ---------------------------------------------------------------------------

class PostgresConnectorImpl final : public PostgresConnector, public TransactionalTransport {
 public:
  PostgresConnectorImpl(std::string_view url, asio::any_io_executor executor, PostgresOptions options)
      : m_core(std::make_shared<Core>(std::string(url), std::move(executor), std::move(options))) {
    m_core->start();
  }
  ~PostgresConnectorImpl() override {
    m_core->stop();
    abort_waits();
  }

  void produce(const RoutingKey& key, const Json& body) override { m_core->produce(key, body); }

  std::unique_ptr<Consumer> start_consuming(Callback callback, Filter filter,
                                            std::optional<std::string> persistent_name) override {
    return m_core->start_consuming(std::move(callback), std::move(filter), ConsumeOptions{std::move(persistent_name), {}});
  }


  using Connector::start_consuming;

  ConnectorStats stats() const override { return m_core->connector_stats(); }
  PostgresStats postgres_stats() const override { return m_core->stats(); }
  const std::string& origin() const noexcept override { return m_core->origin(); }
  bool wait_listening(std::chrono::milliseconds timeout) const override { return m_core->wait_listening(timeout); }

  void send_in_transaction(std::span<const SentMessage> messages, SqlRunner& sql) override {
    m_core->send_in_transaction(messages, sql);
  }

 protected:
  std::unique_ptr<Consumer> start_consuming_with(Callback callback, Filter filter, ConsumeOptions options) override {
    return m_core->start_consuming(std::move(callback), std::move(filter), options);
  }

 private:
  std::shared_ptr<Core> m_core;
};

std::unique_ptr<Connector> connect_postgres(std::string_view url, asio::any_io_executor executor) {
  return make_postgres_connector(url, std::move(executor));
}

int register_connector() noexcept {
  detail::register_postgres_connector(&connect_postgres);
  return 1;
}

}  // namespace

std::unique_ptr<PostgresConnector> make_postgres_connector(std::string_view url, asio::any_io_executor executor,
                                                           PostgresOptions options) {
  return std::make_unique<PostgresConnectorImpl>(url, std::move(executor), std::move(options));
}

}  // namespace livestate::mq

// Linking livestate::mq_postgres makes mq::connect("postgresql://…") work: the
// target's --undefined=livestate_mq_postgres_backend keeps this object in the
// program, and its initializer registers the connector with livestate::mq.
extern "C" {
int livestate_mq_postgres_backend = livestate::mq::register_connector();
}
