#include "listener.hpp"

#include <unistd.h>

#include <random>
#include <system_error>
#include <type_traits>

#include <boost/asio/post.hpp>

namespace livestate::mq::detail {

namespace asio = boost::asio;
namespace action = listener_action;
using Descriptor = asio::posix::stream_descriptor;

// --- ListenerStatus ----------------------------------------------------------

void ListenerStatus::publish(const ListenerCounters& counters) {
  std::lock_guard lock(m_mutex);
  m_counters = counters;
}

void ListenerStatus::publish(bool listening, const std::string& last_reconnect_reason) {
  std::lock_guard lock(m_mutex);
  if (m_stopped) return;
  m_listening = listening;
  m_last_reconnect_reason = last_reconnect_reason;
  m_changed.notify_all();
}

void ListenerStatus::stop() {
  std::lock_guard lock(m_mutex);
  m_stopped = true;
  m_listening = false;
  m_changed.notify_all();
}

bool ListenerStatus::wait_listening(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(m_mutex);
  return m_changed.wait_for(lock, timeout, [&] { return m_listening || m_stopped; }) && m_listening;
}

void ListenerStatus::fill(PostgresStats& stats) const {
  std::lock_guard lock(m_mutex);
  stats.notifications = m_counters.notifications;
  stats.received = m_counters.received;
  stats.malformed = m_counters.malformed;
  stats.by_reference = m_counters.by_reference;
  stats.missing_references = m_counters.missing_references;
  stats.gaps = m_counters.gaps;
  stats.origins = m_counters.origins;
  stats.reconnects = m_counters.reconnects;
  stats.last_reconnect_reason = m_last_reconnect_reason;
  stats.listening = m_listening;
}

// --- Listener ------------------------------------------------------------------

namespace {

ListenerMachine::Random default_random() {
  return [generator = std::mt19937_64(std::random_device{}())]() mutable { return generator(); };
}

QueryResult summary(const PGresult* result) {
  QueryResult summary;
  const auto status = PQresultStatus(result);
  summary.ok = result != nullptr && (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK);
  if (!summary.ok) {
    summary.error = result != nullptr ? one_line(PQresultErrorMessage(result)) : "no result";
  } else if (status == PGRES_TUPLES_OK && PQntuples(result) > 0 && PQgetisnull(result, 0, 0) == 0) {
    summary.value.emplace(PQgetvalue(result, 0, 0), static_cast<std::size_t>(PQgetlength(result, 0, 0)));
  }
  return summary;
}

}  // namespace

Listener::Listener(const asio::any_io_executor& executor, std::string url, ConnectionSettings connection,
                   ListenerSettings settings, std::shared_ptr<ListenerStatus> status,
                   std::shared_ptr<Dispatcher> dispatcher)
    : m_strand(asio::make_strand(executor)),
      m_url(std::move(url)),
      m_connection_settings(connection),
      m_status(std::move(status)),
      m_dispatcher(std::move(dispatcher)),
      m_machine(std::move(settings), default_random()),
      m_timers{asio::steady_timer(m_strand), asio::steady_timer(m_strand), asio::steady_timer(m_strand),
               asio::steady_timer(m_strand)} {}

void Listener::start() {
  asio::post(m_strand, [self = shared_from_this()] { self->run(self->m_machine.start(Clock::now())); });
}

void Listener::stop() {
  asio::post(m_strand, [self = shared_from_this()] { self->run(self->m_machine.stop()); });
}

// Does what the machine says, in order; what that leads to is fed back to it
// (and done) at once.
void Listener::run(ListenerActions actions) {
  for (auto& next : actions) {
    std::visit(
        [&](auto& step) {
          using Step = std::decay_t<decltype(step)>;
          if constexpr (std::is_same_v<Step, action::Connect>) {
            connect();
          } else if constexpr (std::is_same_v<Step, action::PollConnect>) {
            poll_connect();
          } else if constexpr (std::is_same_v<Step, action::WaitReadable>) {
            wait(Descriptor::wait_read);
          } else if constexpr (std::is_same_v<Step, action::WaitWritable>) {
            wait(Descriptor::wait_write);
          } else if constexpr (std::is_same_v<Step, action::ReadInput>) {
            read_input();
          } else if constexpr (std::is_same_v<Step, action::Flush>) {
            flush();
          } else if constexpr (std::is_same_v<Step, action::SendQuery>) {
            send_query(step);
          } else if constexpr (std::is_same_v<Step, action::ArmTimer>) {
            arm(step);
          } else if constexpr (std::is_same_v<Step, action::CancelTimer>) {
            timer(step.timer).cancel();
          } else if constexpr (std::is_same_v<Step, action::Close>) {
            close();
          } else if constexpr (std::is_same_v<Step, action::Deliver>) {
            m_dispatcher->deliver(step.items);
          } else if constexpr (std::is_same_v<Step, action::PublishCounters>) {
            m_status->publish(step.counters);
          } else if constexpr (std::is_same_v<Step, action::PublishStatus>) {
            m_status->publish(step.listening, step.last_reconnect_reason);
          } else {
            static_assert(std::is_same_v<Step, action::Log>);
            log(step.level, log_component, step.text);
          }
        },
        next);
  }
}

void Listener::connect() {
  close();
  m_connection = start_connection(m_url, m_connection_settings, false);
  if (PQstatus(m_connection.get()) == CONNECTION_BAD) {
    return run(m_machine.connect_polled(ListenerMachine::Polled::failed, one_line(PQerrorMessage(m_connection.get())),
                                        Clock::now()));
  }
  // As libpq says: start as if PQconnectPoll had returned PGRES_POLLING_WRITING.
  run(m_machine.connect_polled(ListenerMachine::Polled::writing, {}, Clock::now()));
}

void Listener::poll_connect() {
  PGconn* connection = m_connection.get();
  switch (PQconnectPoll(connection)) {
    case PGRES_POLLING_READING:
      return run(m_machine.connect_polled(ListenerMachine::Polled::reading, {}, Clock::now()));
    case PGRES_POLLING_WRITING:
      return run(m_machine.connect_polled(ListenerMachine::Polled::writing, {}, Clock::now()));
    case PGRES_POLLING_OK:
      if (PQsetnonblocking(connection, 1) != 0) {
        return run(m_machine.connect_polled(ListenerMachine::Polled::failed,
                                            "cannot make the connection non-blocking", Clock::now()));
      }
      return run(m_machine.connect_polled(ListenerMachine::Polled::ok, {}, Clock::now()));
    default:
      return run(
          m_machine.connect_polled(ListenerMachine::Polled::failed, one_line(PQerrorMessage(connection)), Clock::now()));
  }
}

// Asio waits on a copy of libpq's socket, which it owns (and closes); libpq
// keeps the original. While connecting, libpq may move to another socket.
bool Listener::watch_socket() {
  const int fd = PQsocket(m_connection.get());
  if (m_socket && m_socket_fd == fd) return true;
  m_socket.reset();
  const int copy = fd < 0 ? -1 : ::dup(fd);
  if (copy < 0) {
    run(m_machine.failed("no socket to wait on: " + std::system_category().message(errno), Clock::now()));
    return false;
  }
  m_socket.emplace(m_strand, copy);
  m_socket_fd = fd;
  return true;
}

void Listener::wait(Descriptor::wait_type direction) {
  if (!watch_socket()) return;
  m_socket->async_wait(direction, [self = shared_from_this(), generation = m_generation,
                                   direction](boost::system::error_code error) {
    if (generation != self->m_generation) return;
    const auto now = Clock::now();
    if (error) return self->run(self->m_machine.failed("waiting for the socket: " + error.message(), now));
    self->run(direction == Descriptor::wait_read ? self->m_machine.socket_readable(now)
                                                 : self->m_machine.socket_writable(now));
  });
}

// Everything the server sent: the results of the query in flight, then the
// notifications.
void Listener::read_input() {
  const auto generation = m_generation;
  PGconn* connection = m_connection.get();
  const auto now = Clock::now();
  if (PQconsumeInput(connection) == 0) return run(m_machine.failed(one_line(PQerrorMessage(connection)), now));
  while (m_query_in_flight && PQisBusy(connection) == 0) {
    if (PGresult* raw = PQgetResult(connection)) {
      m_last_result.reset(raw);
      continue;
    }
    m_query_in_flight = false;
    run(m_machine.query_result(summary(m_last_result.get()), now));  // may send the next query
    if (generation != m_generation) return;
  }
  while (PGnotify* raw = PQnotifies(connection)) {
    const std::unique_ptr<PGnotify, decltype(&PQfreemem)> notification(raw, &PQfreemem);
    run(m_machine.notification(notification->relname, notification->extra, now));
    if (generation != m_generation) return;
  }
  run(m_machine.input_read(PQstatus(connection) == CONNECTION_OK, now));
}

void Listener::flush() {
  const int flushed = PQflush(m_connection.get());
  if (flushed < 0) return run(m_machine.failed(one_line(PQerrorMessage(m_connection.get())), Clock::now()));
  if (flushed > 0) run(m_machine.output_pending(Clock::now()));
}

void Listener::send_query(const action::SendQuery& query) {
  std::vector<const char*> values;
  values.reserve(query.params.size());
  for (const auto& param : query.params) values.push_back(param.c_str());
  if (PQsendQueryParams(m_connection.get(), query.sql.c_str(), static_cast<int>(values.size()), nullptr,
                        values.data(), nullptr, nullptr, 0) == 0) {
    return run(
        m_machine.failed("cannot send a query: " + one_line(PQerrorMessage(m_connection.get())), Clock::now()));
  }
  m_query_in_flight = true;
  m_last_result.reset();
  flush();
}

void Listener::arm(const action::ArmTimer& armed) {
  auto& which = timer(armed.timer);
  which.expires_after(armed.after);
  which.async_wait([self = shared_from_this(), armed](boost::system::error_code error) {
    if (!error) self->run(self->m_machine.timer_fired(armed.timer, armed.token, Clock::now()));
  });
}

void Listener::close() noexcept {
  ++m_generation;
  m_socket.reset();
  m_socket_fd = -1;
  m_query_in_flight = false;
  m_last_result.reset();
  m_connection.reset();
}

}  // namespace livestate::mq::detail
