#include "listener.hpp"

#include <unistd.h>

#include <random>
#include <system_error>
#include <type_traits>

#include <boost/asio/post.hpp>

namespace livestate::mq::detail {

namespace asio = boost::asio;
namespace action = listener_action;

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
    : PqDriver(executor, std::move(url), connection, ListenerMachine(std::move(settings), default_random())),
      m_status(std::move(status)),
      m_dispatcher(std::move(dispatcher)) {}

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
          if (perform_io(step)) return;
          if constexpr (std::is_same_v<Step, action::ReadInput>) {
            read_input();
          } else if constexpr (std::is_same_v<Step, action::SendQuery>) {
            send_query(step);
          } else if constexpr (std::is_same_v<Step, action::Deliver>) {
            m_dispatcher->deliver(step.items);
          } else if constexpr (std::is_same_v<Step, action::PublishCounters>) {
            m_status->publish(step.counters);
          } else if constexpr (std::is_same_v<Step, action::PublishStatus>) {
            m_status->publish(step.listening, step.last_reconnect_reason);
          }
        },
        next);
  }
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

void Listener::send_query(const action::SendQuery& query) {
  std::vector<const char*> values;
  values.reserve(query.params.size());
  for (const auto& param : query.params) values.push_back(param.c_str());
  if (PQsendQueryParams(m_connection.get(), query.sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                        nullptr, nullptr, 0) == 0) {
    return run(m_machine.failed("cannot send a query: " + one_line(PQerrorMessage(m_connection.get())), Clock::now()));
  }
  m_query_in_flight = true;
  m_last_result.reset();
  flush();
}

void Listener::close() noexcept {
  m_query_in_flight = false;
  m_last_result.reset();
  drop_connection();
}

}  // namespace livestate::mq::detail
