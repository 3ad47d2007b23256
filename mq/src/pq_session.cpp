#include "pq_session.hpp"

#include <unistd.h>

#include <system_error>

#include <boost/asio/post.hpp>

namespace livestate::mq::detail {

namespace asio = boost::asio;
using Descriptor = asio::posix::stream_descriptor;

AsyncSession::AsyncSession(Strand strand, std::chrono::milliseconds deadline)
    : m_strand(std::move(strand)), m_deadline(deadline), m_timer(m_strand) {}

void AsyncSession::adopt(Connection connection) {
  std::lock_guard lock(m_mutex);
  PQsetnonblocking(connection.get(), 1);
  m_connection = std::move(connection);
  ++m_generation;
  m_usable = true;
}

bool AsyncSession::connected() const {
  std::lock_guard lock(m_mutex);
  return m_usable;
}

void AsyncSession::async_connect(const std::string& url, const ConnectionSettings& settings, Handler done) {
  std::string error;
  std::uint64_t generation = 0;
  {
    std::lock_guard lock(m_mutex);
    if (m_closed || m_busy) {
      error = m_closed ? "closed" : "busy";
    } else {
      drop();
      m_connection = start_connection(url, settings, false);
      generation = m_generation;
      if (PQstatus(m_connection.get()) == CONNECTION_BAD) {
        error = "cannot connect: " + one_line(PQerrorMessage(m_connection.get()));
        drop();
      } else {
        m_busy = true;
      }
    }
  }
  if (!error.empty()) {
    asio::post(m_strand, [done = std::move(done), error] { done(Outcome{false, error, nullptr}); });
    return;
  }
  m_current = std::move(done);
  m_connecting = true;
  arm_deadline(settings.connect_timeout, "connecting timed out");
  // As libpq says: start as if PQconnectPoll had returned PGRES_POLLING_WRITING.
  wait(Descriptor::wait_write, generation);
}

void AsyncSession::async_run(std::string sql, std::vector<std::optional<std::string>> params, Handler done) {
  m_pending.push_back({std::move(sql), std::move(params), std::move(done)});
  start_next();
}

void AsyncSession::close(const std::function<void(PGconn*)>& last) noexcept {
  {
    std::lock_guard lock(m_mutex);
    m_closed = true;
    if (last && m_usable && !m_busy) {
      try {
        last(m_connection.get());
      } catch (...) {
        // Closing anyway; what `last` did not do is the caller's loss.
      }
    }
    drop();
  }
  // The socket and the timer are the strand's.
  asio::post(m_strand, [self = shared_from_this()] {
    self->m_socket.reset();
    boost::system::error_code ignored;
    self->m_timer.cancel(ignored);
    if (self->m_current) self->finish(Outcome{false, "closed", nullptr});
    self->fail_pending("closed");
  });
}

void AsyncSession::start_next() {
  if (m_current || m_pending.empty()) return;
  Pending next = std::move(m_pending.front());
  m_pending.pop_front();
  std::string error;
  std::uint64_t generation = 0;
  int flushed = 0;
  {
    std::lock_guard lock(m_mutex);
    if (!m_usable) {
      error = m_closed ? "closed" : "not connected";
    } else {
      PGconn* connection = m_connection.get();
      std::vector<const char*> values;
      values.reserve(next.params.size());
      for (const auto& param : next.params) values.push_back(param ? param->c_str() : nullptr);
      if (PQsendQueryParams(connection, next.sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                            nullptr, nullptr, 0) == 0) {
        error = one_line(PQerrorMessage(connection));
        drop();
      } else {
        m_busy = true;
        generation = m_generation;
        flushed = PQflush(connection);
        if (flushed < 0) {
          error = one_line(PQerrorMessage(connection));
          drop();
        }
      }
    }
  }
  if (!error.empty()) {
    next.done(Outcome{false, error, nullptr});
    return start_next();  // the rest fails too
  }
  m_current = std::move(next.done);
  m_last_result.reset();
  arm_deadline(m_deadline, "no answer within " + std::to_string(m_deadline.count()) + " ms");
  wait(flushed > 0 ? Descriptor::wait_write : Descriptor::wait_read, generation);
}

// Asio waits on a copy of libpq's socket, which it owns (and closes).
void AsyncSession::wait(Descriptor::wait_type direction, std::uint64_t generation) {
  int fd = -1;
  {
    std::lock_guard lock(m_mutex);
    if (generation != m_generation) return;
    fd = PQsocket(m_connection.get());
  }
  if (!m_socket || m_socket_generation != generation || m_socket_fd != fd) {
    m_socket.reset();
    const int copy = fd < 0 ? -1 : ::dup(fd);
    if (copy < 0) return lose("no socket to wait on: " + std::system_category().message(errno));
    m_socket.emplace(m_strand, copy);
    m_socket_generation = generation;
    m_socket_fd = fd;
  }
  m_socket->async_wait(direction, [self = shared_from_this(), direction, generation](boost::system::error_code error) {
    {
      std::lock_guard lock(self->m_mutex);
      if (generation != self->m_generation) return;  // closed or dropped: its handler was told
    }
    if (error) return self->lose("waiting for the socket: " + error.message());
    self->on_ready(direction, generation);
  });
}

void AsyncSession::on_ready(Descriptor::wait_type direction, std::uint64_t generation) {
  std::unique_lock lock(m_mutex);
  if (generation != m_generation) return;  // closed meanwhile: its handler was told
  PGconn* connection = m_connection.get();
  if (m_connecting) {
    switch (PQconnectPoll(connection)) {
      case PGRES_POLLING_READING: lock.unlock(); return wait(Descriptor::wait_read, generation);
      case PGRES_POLLING_WRITING: lock.unlock(); return wait(Descriptor::wait_write, generation);
      case PGRES_POLLING_OK:
        PQsetnonblocking(connection, 1);
        m_usable = true;
        m_busy = false;
        lock.unlock();
        return finish(Outcome{true, {}, nullptr});
      default: {
        const std::string error = "cannot connect: " + one_line(PQerrorMessage(connection));
        lock.unlock();
        return lose(error);
      }
    }
  }
  if (direction == Descriptor::wait_write) {
    const int flushed = PQflush(connection);
    const std::string error = flushed < 0 ? one_line(PQerrorMessage(connection)) : std::string();
    lock.unlock();
    if (flushed < 0) return lose(error);
    return wait(flushed > 0 ? Descriptor::wait_write : Descriptor::wait_read, generation);
  }
  if (PQconsumeInput(connection) == 0) {
    const std::string error = one_line(PQerrorMessage(connection));
    lock.unlock();
    return lose(error);
  }
  while (PQisBusy(connection) == 0) {
    if (PGresult* raw = PQgetResult(connection)) {
      m_last_result.reset(raw);
      continue;
    }
    m_busy = false;
    Outcome outcome;
    const auto status = PQresultStatus(m_last_result.get());
    outcome.ok = m_last_result && (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK);
    if (!outcome.ok) {
      outcome.error = m_last_result ? one_line(PQresultErrorMessage(m_last_result.get())) : "no result";
    }
    outcome.result = std::move(m_last_result);
    lock.unlock();
    return finish(std::move(outcome));
  }
  lock.unlock();
  wait(Descriptor::wait_read, generation);
}

void AsyncSession::arm_deadline(std::chrono::milliseconds after, std::string what) {
  const auto operation = ++m_operation;
  m_timer.expires_after(after);
  m_timer.async_wait([self = shared_from_this(), operation, what = std::move(what)](boost::system::error_code error) {
    if (error || operation != self->m_operation || !self->m_current) return;
    self->lose(what);
  });
}

void AsyncSession::lose(const std::string& reason) {
  {
    std::lock_guard lock(m_mutex);
    drop();
  }
  m_socket.reset();
  if (m_current) finish(Outcome{false, reason, nullptr});
}

void AsyncSession::finish(Outcome outcome) {
  ++m_operation;  // its deadline no longer applies
  boost::system::error_code ignored;
  m_timer.cancel(ignored);
  m_connecting = false;
  auto done = std::move(m_current);
  m_current = nullptr;
  done(std::move(outcome));
  start_next();
}

void AsyncSession::drop() {
  m_connection.reset();
  ++m_generation;
  m_usable = false;
  m_busy = false;
}

void AsyncSession::fail_pending(const std::string& reason) {
  auto pending = std::move(m_pending);
  m_pending.clear();
  for (auto& each : pending) each.done(Outcome{false, reason, nullptr});
}

}  // namespace livestate::mq::detail
