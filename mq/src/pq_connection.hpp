#pragma once

// What the PostgreSQL connector's parts share about libpq in general: owning
// handles, one-line messages, URLs without their password, starting a
// connection with the connector's defaults, and running one statement.

#include <libpq-fe.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "livestate/mq/errors.hpp"

namespace livestate::mq::detail {

/// The component the connector logs as.
inline constexpr std::string_view log_component = "mq.postgres";

struct ConnectionCloser {
  void operator()(PGconn* connection) const noexcept { PQfinish(connection); }
};
using Connection = std::unique_ptr<PGconn, ConnectionCloser>;

struct ResultClearer {
  void operator()(PGresult* result) const noexcept { PQclear(result); }
};
using Result = std::unique_ptr<PGresult, ResultClearer>;

/// libpq's messages end in a newline and may span lines; ours are one line
/// (livestate::detail::one_line, for libpq's pointers, which may be null).
[[nodiscard]] std::string one_line(const char* text);

/// How a connection is made: the connector's defaults, under the user's own
/// settings in the URL, which win.
struct ConnectionSettings {
  const char* application;  ///< the fallback application_name
  std::chrono::seconds connect_timeout;
  /// How long sent data may stay unacknowledged before the kernel gives the
  /// connection up (tcp_user_timeout); TCP keepalives are on as well.
  std::chrono::milliseconds tcp_user_timeout;
  /// A `replication=database` connection (a walsender that also takes SQL),
  /// whatever the URL says.
  bool replication = false;
};

/// A connection to `url` (a URL or conninfo). `blocking`: connected when
/// this returns (check PQstatus); otherwise started, to be driven with
/// PQconnectPoll. Server notices go to livestate's log. Throws
/// std::bad_alloc when libpq can't allocate.
[[nodiscard]] Connection start_connection(const std::string& url, const ConnectionSettings& settings, bool blocking);

/// Does a connection that is idle (no query running, no LISTEN) still work?
/// The server sends nothing unasked to such a session, so a readable socket
/// means it ended the session.
[[nodiscard]] bool idle_connection_alive(PGconn* connection);

/// PostgreSQL's text form of a text[] value.
[[nodiscard]] std::string text_array(const std::vector<std::string>& elements);

/// A statement the server refused or could not run, with its SQLSTATE (empty
/// when the server did not answer).
class StatementError : public TransportError {
 public:
  StatementError(const std::string& what, std::string sqlstate, bool broken = false, bool sent = false)
      : TransportError(what), m_sqlstate(std::move(sqlstate)), m_broken(broken), m_sent(sent) {}
  [[nodiscard]] const std::string& sqlstate() const noexcept { return m_sqlstate; }
  /// The connection is of no use any more (it broke, or the deadline passed
  /// with the statement under way): close it.
  [[nodiscard]] bool broken() const noexcept { return m_broken; }
  /// It broke once the statement was sent: the statement may have run.
  [[nodiscard]] bool in_doubt() const noexcept { return m_broken && m_sent; }

 private:
  std::string m_sqlstate;
  bool m_broken;
  bool m_sent;
};

/// SQLSTATE undefined_table: the connector's tables are gone.
inline constexpr std::string_view undefined_table = "42P01";

using Params = std::vector<std::optional<std::string>>;

/// Sends a statement with `send` (a PQsend… call on `connection`) and waits
/// for its result, `timeout` at most in all: libpq in non-blocking mode and
/// poll(), so that a server that stops answering costs a deadline, not a
/// thread. Throws StatementError when the server refuses it, the connection
/// breaks or the deadline passes (broken() then).
Result exec_blocking(PGconn* connection, const std::function<int(PGconn*)>& send, std::chrono::milliseconds timeout);

/// Runs `sql` with text parameters (std::nullopt is NULL), or the statement
/// prepared as `prepared` when that is given, as exec_blocking() does.
Result exec_blocking(PGconn* connection, const std::string& sql, const Params& params,
                     std::chrono::milliseconds timeout, const char* prepared = nullptr);

/// The same, returning the first column of its first row, if any.
std::optional<std::string> run_blocking(PGconn* connection, const std::string& sql, const Params& params,
                                        std::chrono::milliseconds timeout, const char* prepared = nullptr);

}  // namespace livestate::mq::detail
