#pragma once

// What the PostgreSQL connector's parts share about libpq in general: owning
// handles, one-line messages, URLs without their password, starting a
// connection with the connector's defaults, and running one statement.

#include <libpq-fe.h>

#include <chrono>
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

/// libpq's messages end in a newline and may span lines; ours are one line.
[[nodiscard]] std::string one_line(const char* text);

/// "postgresql://user:secret@host/db" -> "postgresql://user:***@host/db", and
/// "password=secret" in a conninfo string -> "password=***".
[[nodiscard]] std::string redact(std::string_view url);

/// A connection to `url` (a URL or conninfo) with the connector's defaults
/// (TCP keepalives, `connect_timeout`, `application` as the fallback
/// application_name), the user's own settings winning. `blocking`: connected
/// when this returns (check PQstatus); otherwise started, to be driven with
/// PQconnectPoll. Server notices go to livestate's log. Throws
/// std::bad_alloc when libpq can't allocate.
[[nodiscard]] Connection start_connection(const std::string& url, const char* application, bool blocking,
                                          std::chrono::seconds connect_timeout);

/// Does a connection that is idle (no query running, no LISTEN) still work?
/// The server sends nothing unasked to such a session, so a readable socket
/// means it ended the session.
[[nodiscard]] bool idle_connection_alive(PGconn* connection);

/// PostgreSQL's text form of a text[] value.
[[nodiscard]] std::string text_array(const std::vector<std::string>& elements);

/// A statement the server refused or could not run, with its SQLSTATE (empty
/// when the connection failed before the server answered).
class StatementError : public TransportError {
 public:
  StatementError(const std::string& what, std::string sqlstate)
      : TransportError(what), m_sqlstate(std::move(sqlstate)) {}
  [[nodiscard]] const std::string& sqlstate() const noexcept { return m_sqlstate; }

 private:
  std::string m_sqlstate;
};

/// SQLSTATE undefined_table: the connector's tables are gone.
inline constexpr std::string_view undefined_table = "42P01";

/// Runs `sql` with text parameters (std::nullopt is NULL), or the statement
/// prepared as `prepared` when that is given, and returns the first column of
/// its first row, if any. Throws StatementError; `in_doubt` is then set when
/// the connection broke (the statement may have run).
std::optional<std::string> run_blocking(PGconn* connection, const std::string& sql,
                                        const std::vector<std::optional<std::string>>& params, bool& in_doubt,
                                        const char* prepared = nullptr);

}  // namespace livestate::mq::detail
