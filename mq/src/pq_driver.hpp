#pragma once

// What the two Asio drivers of a receiving connection share (the NOTIFY
// listener's, listener.hpp, and the logical stream's, logical_stream.hpp):
// a libpq connection made without blocking, its socket and the machine's
// timers waited on on a strand of the user's executor, and what that brings
// fed back to the machine. Each driver adds what its machine reads and sends.
//
// `Self` has run(actions), doing what the machine says, and close(), which
// calls drop_connection(). The machine has connect_polled, socket_readable,
// socket_writable, output_pending, failed and timer_fired.

#include <unistd.h>

#include <array>
#include <cerrno>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "io_actions.hpp"
#include "pq_connection.hpp"

namespace livestate::mq::detail {

template <class Self, class Machine, class Timer, std::size_t timer_count>
class PqDriver : public std::enable_shared_from_this<Self> {
 protected:
  using Descriptor = boost::asio::posix::stream_descriptor;
  using Polled = typename Machine::Polled;

  PqDriver(const boost::asio::any_io_executor& executor, std::string url, ConnectionSettings settings, Machine machine)
      : m_strand(boost::asio::make_strand(executor)),
        m_url(std::move(url)),
        m_connection_settings(settings),
        m_machine(std::move(machine)),
        m_timers(make_timers(m_strand, std::make_index_sequence<timer_count>())) {}

  /// Performs `step` when it is one of the I/O actions both machines ask
  /// for (io_actions.hpp); false for the others (ReadInput among them: what
  /// there is to read is each driver's own).
  template <class Step>
  bool perform_io(Step& step) {
    if constexpr (std::is_same_v<Step, io_action::Connect>) {
      connect();
    } else if constexpr (std::is_same_v<Step, io_action::PollConnect>) {
      poll_connect();
    } else if constexpr (std::is_same_v<Step, io_action::WaitReadable>) {
      wait(Descriptor::wait_read);
    } else if constexpr (std::is_same_v<Step, io_action::WaitWritable>) {
      wait(Descriptor::wait_write);
    } else if constexpr (std::is_same_v<Step, io_action::Flush>) {
      flush();
    } else if constexpr (std::is_same_v<Step, io_action::ArmTimer<Timer>>) {
      arm(step.timer, step.after, step.token);
    } else if constexpr (std::is_same_v<Step, io_action::CancelTimer<Timer>>) {
      m_timers[static_cast<std::size_t>(step.timer)].cancel();
    } else if constexpr (std::is_same_v<Step, io_action::Close>) {
      self().close();
    } else if constexpr (std::is_same_v<Step, io_action::Log>) {
      log(step.level, log_component, step.text);
    } else {
      return false;
    }
    return true;
  }

  void flush() {
    const int flushed = PQflush(m_connection.get());
    if (flushed < 0) return self().run(m_machine.failed(one_line(PQerrorMessage(m_connection.get())), Clock::now()));
    if (flushed > 0) self().run(m_machine.output_pending(Clock::now()));
  }

  // Handlers of the connection closed here return without a word.
  void drop_connection() noexcept {
    ++m_generation;
    m_socket.reset();
    m_socket_fd = -1;
    m_connection.reset();
  }

  boost::asio::strand<boost::asio::any_io_executor> m_strand;
  const std::string m_url;
  const ConnectionSettings m_connection_settings;
  Machine m_machine;

  // The strand's.
  Connection m_connection;
  std::uint64_t m_generation = 0;  // of m_connection: handlers of an older one return

 private:
  Self& self() { return static_cast<Self&>(*this); }

  // Closes what was open, and starts connecting.
  void connect() {
    self().close();
    m_connection = start_connection(m_url, m_connection_settings, false);
    if (PQstatus(m_connection.get()) == CONNECTION_BAD) {
      return self().run(
          m_machine.connect_polled(Polled::failed, one_line(PQerrorMessage(m_connection.get())), Clock::now()));
    }
    // As libpq says: start as if PQconnectPoll had returned PGRES_POLLING_WRITING.
    self().run(m_machine.connect_polled(Polled::writing, {}, Clock::now()));
  }

  void poll_connect() {
    PGconn* connection = m_connection.get();
    const auto now = Clock::now();
    switch (PQconnectPoll(connection)) {
      case PGRES_POLLING_READING: return self().run(m_machine.connect_polled(Polled::reading, {}, now));
      case PGRES_POLLING_WRITING: return self().run(m_machine.connect_polled(Polled::writing, {}, now));
      case PGRES_POLLING_OK:
        if (PQsetnonblocking(connection, 1) != 0) {
          return self().run(m_machine.connect_polled(Polled::failed, "cannot make the connection non-blocking", now));
        }
        return self().run(m_machine.connect_polled(Polled::ok, {}, now));
      default: return self().run(m_machine.connect_polled(Polled::failed, one_line(PQerrorMessage(connection)), now));
    }
  }

  void wait(Descriptor::wait_type direction) {
    if (!watch_socket()) return;
    m_socket->async_wait(direction, [self = this->shared_from_this(), generation = m_generation,
                                     direction](boost::system::error_code error) {
      auto& driver = static_cast<PqDriver&>(*self);
      if (generation != driver.m_generation) return;
      const auto now = Clock::now();
      if (error) return self->run(driver.m_machine.failed("waiting for the socket: " + error.message(), now));
      self->run(direction == Descriptor::wait_read ? driver.m_machine.socket_readable(now)
                                                   : driver.m_machine.socket_writable(now));
    });
  }

  void arm(Timer which, Clock::duration after, std::uint64_t token) {
    auto& timer = m_timers[static_cast<std::size_t>(which)];
    timer.expires_after(after);
    timer.async_wait([self = this->shared_from_this(), which, token](boost::system::error_code error) {
      if (!error) self->run(static_cast<PqDriver&>(*self).m_machine.timer_fired(which, token, Clock::now()));
    });
  }

  template <std::size_t... index>
  static std::array<boost::asio::steady_timer, timer_count> make_timers(
      const boost::asio::strand<boost::asio::any_io_executor>& strand, std::index_sequence<index...>) {
    return {(static_cast<void>(index), boost::asio::steady_timer(strand))...};
  }

  // Asio waits on a copy of libpq's socket, which it owns (and closes);
  // libpq keeps the original. While connecting, libpq may move to another
  // socket.
  bool watch_socket() {
    const int fd = PQsocket(m_connection.get());
    if (m_socket && m_socket_fd == fd) return true;
    m_socket.reset();
    const int copy = fd < 0 ? -1 : ::dup(fd);
    if (copy < 0) {
      self().run(m_machine.failed("no socket to wait on: " + std::system_category().message(errno), Clock::now()));
      return false;
    }
    m_socket.emplace(m_strand, copy);
    m_socket_fd = fd;
    return true;
  }

  std::optional<Descriptor> m_socket;
  int m_socket_fd = -1;
  std::array<boost::asio::steady_timer, timer_count> m_timers;
};

}  // namespace livestate::mq::detail
