#pragma once

// The listening connection's I/O: a thin Asio driver for ListenerMachine
// (listener_machine.hpp). It runs libpq without blocking (non-blocking
// connect and input), waits on its socket and its timers on a strand of the
// user's executor (pq_driver.hpp), feeds what happened to the machine and
// does what the machine says; what it received goes to the dispatcher, what
// it counted to the ListenerStatus.

#include <array>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "dispatcher.hpp"
#include "listener_machine.hpp"
#include "pq_connection.hpp"
#include "pq_driver.hpp"

namespace livestate::mq::detail {

/// What the listener reports, for postgres_stats() and wait_listening().
/// Thread safety: every function may be called from any thread.
class ListenerStatus {
 public:
  void publish(const ListenerCounters& counters);
  void publish(bool listening, const std::string& last_reconnect_reason);
  /// wait_listening() returns false from now on.
  void stop();
  [[nodiscard]] bool wait_listening(std::chrono::milliseconds timeout) const;
  /// Fills the listener's share of `stats`.
  void fill(PostgresStats& stats) const;

 private:
  mutable std::mutex m_mutex;
  mutable std::condition_variable m_changed;
  ListenerCounters m_counters;
  std::string m_last_reconnect_reason;
  bool m_listening = false;
  bool m_stopped = false;
};

class Listener final : public PqDriver<Listener, ListenerMachine, ListenerTimer, listener_timer_count> {
 public:
  Listener(const boost::asio::any_io_executor& executor, std::string url, ConnectionSettings connection,
           ListenerSettings settings, std::shared_ptr<ListenerStatus> status, std::shared_ptr<Dispatcher> dispatcher);

  /// Both return at once; the work is done on the strand.
  void start();
  void stop();

 private:
  template <class, class, class, std::size_t>
  friend class PqDriver;

  void run(ListenerActions actions);
  void read_input();
  void send_query(const listener_action::SendQuery& query);
  void close() noexcept;

  const std::shared_ptr<ListenerStatus> m_status;
  const std::shared_ptr<Dispatcher> m_dispatcher;

  // The strand's.
  bool m_query_in_flight = false;
  Result m_last_result;
};

}  // namespace livestate::mq::detail
