#pragma once

// A libpq connection driven by Asio without blocking: statements run one at
// a time, in the order asked, each with a deadline; their results come back
// to handlers on the session's strand. What a durable queue runs after it
// started (acknowledgements, reads of what it missed, reconnecting) goes
// through one, so that a stalled server delays that queue alone, never the
// executor's thread.

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "pq_connection.hpp"

namespace livestate::mq::detail {

/// Thread safety: async_connect and async_run on the strand only (handlers
/// run there too); connected() and close() from any thread.
///
/// Object lifetimes: pending operations keep the session alive; close()
/// makes them complete (with a failure) soon.
class AsyncSession final : public std::enable_shared_from_this<AsyncSession> {
 public:
  struct Outcome {
    bool ok = false;
    std::string error;  ///< one line, when not ok
    Result result;      ///< when ok, of a statement
  };
  using Handler = std::function<void(Outcome)>;
  using Strand = boost::asio::strand<boost::asio::any_io_executor>;

  /// `deadline`: how long a statement may take, from sending it to its
  /// result; past it the connection is closed and the statement fails.
  AsyncSession(Strand strand, std::chrono::milliseconds deadline);

  /// Takes over a connection made elsewhere (made non-blocking here).
  void adopt(Connection connection);
  /// Connects (again) to `url`; a session already connected is closed first.
  void async_connect(const std::string& url, const ConnectionSettings& settings, Handler done);
  /// Runs `sql` after what was asked before; fails at once when not connected.
  void async_run(std::string sql, std::vector<std::optional<std::string>> params, Handler done);

  [[nodiscard]] bool connected() const;
  /// Runs `last` on the connection (blocking, in the caller's thread) when
  /// nothing is under way on it, then closes it. What is pending fails.
  void close(const std::function<void(PGconn*)>& last = {}) noexcept;

 private:
  struct Pending {
    std::string sql;
    std::vector<std::optional<std::string>> params;
    Handler done;
  };

  void start_next();
  void wait(boost::asio::posix::stream_descriptor::wait_type direction, std::uint64_t generation);
  void on_ready(boost::asio::posix::stream_descriptor::wait_type direction, std::uint64_t generation);
  void arm_deadline(std::chrono::milliseconds after, std::string what);
  // The connection broke, or its deadline passed: closed, and what was under
  // way fails with `reason`.
  void lose(const std::string& reason);
  void finish(Outcome outcome);
  void drop();  // with m_mutex held
  void fail_pending(const std::string& reason);

  Strand m_strand;
  const std::chrono::milliseconds m_deadline;

  mutable std::mutex m_mutex;  // the connection: close() may come from another thread
  Connection m_connection;
  std::uint64_t m_generation = 0;  // of m_connection
  bool m_usable = false;           // connected, not connecting
  bool m_busy = false;             // a statement or connecting under way
  bool m_closed = false;

  // The strand's.
  std::deque<Pending> m_pending;
  Handler m_current;              // the statement or connection under way
  std::uint64_t m_operation = 0;  // of m_current, for its deadline
  bool m_connecting = false;
  Result m_last_result;
  std::optional<boost::asio::posix::stream_descriptor> m_socket;
  std::uint64_t m_socket_generation = 0;
  int m_socket_fd = -1;
  boost::asio::steady_timer m_timer;  // the deadline
};

}  // namespace livestate::mq::detail
