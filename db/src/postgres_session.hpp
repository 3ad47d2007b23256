#pragma once

// The PostgreSQL backend's session (postgres_session.cpp), as the factory
// that opens it (postgres_factory.cpp) makes it.

#include <libpq-fe.h>

#include <chrono>
#include <memory>
#include <string>

#include "session.hpp"
#include "statement_watchdog.hpp"

namespace livestate::db::detail {

struct PgConnectionCloser {
  void operator()(PGconn* connection) const noexcept { PQfinish(connection); }
};
using PgConnection = std::unique_ptr<PGconn, PgConnectionCloser>;

/// A session on `connection`, connected, named `name` (passwords redacted)
/// in its messages, its calls under `statement_timeout` when `watchdog` is
/// given. Sets the session up first (JIT off; read-only transactions when
/// `read_only`); SessionFailure (connection) when that fails.
[[nodiscard]] std::unique_ptr<Session> make_postgres_session(PgConnection connection, const std::string& name,
                                                             bool read_only,
                                                             std::shared_ptr<StatementWatchdog> watchdog,
                                                             std::chrono::milliseconds statement_timeout);

}  // namespace livestate::db::detail
