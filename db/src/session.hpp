#pragma once

// The one seam between the data model and a database engine: a connection
// that runs parameterized SQL inside explicit transactions. The data model,
// the migrator and the store are written once against it; the SQLite and
// PostgreSQL backends each implement it.
//
// SQL given to a session is written once for both engines: `?` placeholders
// (the PostgreSQL session rewrites them to $1, $2, …), RETURNING, ON CONFLICT,
// and no engine-specific functions. Values are bound, never spliced.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "livestate/core/json.hpp"
#include "livestate/db/migrations.hpp"
#include "livestate/mq/transactional.hpp"

namespace livestate::db::detail {

/// A bound parameter or a column value. Booleans are bound as the engine's
/// boolean (0/1 on SQLite); reads convert from whatever the engine returns.
using Value = std::variant<std::monostate, std::int64_t, double, std::string, bool>;

/// One row of a result. Accessors convert: an engine that returns text
/// (PostgreSQL) and one that returns typed values (SQLite) read alike.
class Row {
 public:
  explicit Row(std::vector<Value> values) : m_values(std::move(values)) {}

  [[nodiscard]] std::size_t size() const noexcept { return m_values.size(); }
  [[nodiscard]] bool is_null(std::size_t column) const;
  [[nodiscard]] std::int64_t as_int(std::size_t column) const;
  [[nodiscard]] double as_double(std::size_t column) const;
  [[nodiscard]] bool as_bool(std::size_t column) const;
  [[nodiscard]] std::string as_text(std::size_t column) const;
  /// The column parsed as JSON text.
  [[nodiscard]] Json as_json(std::size_t column) const;
  /// null for SQL NULL, else a JSON number (integers stay integers) or string.
  [[nodiscard]] Json as_json_scalar(std::size_t column) const;

 private:
  const Value& at(std::size_t column) const;
  std::vector<Value> m_values;
};

using Rows = std::vector<Row>;

/// What kind of failure a backend saw; the store maps these to its errors and
/// decides what may be retried.
enum class FailureKind {
  other,
  busy,              ///< SQLite: locked past the busy timeout
  connection,        ///< the connection broke or could not be made
  unique_violation,  ///< a primary key or unique constraint refused a row
  serialization,     ///< PostgreSQL 40001/40P01: retry the whole transaction
  read_only,         ///< the database refuses writes (file mode, hot standby)
  commit_in_doubt,   ///< COMMIT was sent and no answer came: never retry blindly
};

/// Thrown by sessions. The message already names the database.
class SessionFailure : public std::runtime_error {
 public:
  SessionFailure(FailureKind kind, const std::string& message, std::string sqlstate = {})
      : std::runtime_error(message), m_kind(kind), m_sqlstate(std::move(sqlstate)) {}
  [[nodiscard]] FailureKind kind() const noexcept { return m_kind; }
  /// The server's SQLSTATE, when a server answered with one.
  [[nodiscard]] const std::string& sqlstate() const noexcept { return m_sqlstate; }

 private:
  FailureKind m_kind;
  std::string m_sqlstate;
};

/// One connection. Not thread-safe: the store hands each session to one
/// transaction at a time.
class Session {
 public:
  Session() = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  virtual ~Session();

  [[nodiscard]] virtual Backend backend() const noexcept = 0;

  /// Starts a transaction. `write`: SQLite takes the write lock at once
  /// (BEGIN IMMEDIATE), so two writers queue on the busy timeout instead of
  /// deadlocking on a lock upgrade.
  virtual void begin(bool write) = 0;
  virtual void commit() = 0;
  /// Never throws; a session whose rollback failed reports broken().
  virtual void rollback() noexcept = 0;

  /// Runs one statement with bound parameters and returns its rows.
  virtual Rows query(std::string_view sql, std::span<const Value> params = {}) = 0;
  /// Runs one statement; returns the number of rows it changed.
  virtual std::int64_t execute(std::string_view sql, std::span<const Value> params = {}) = 0;
  /// Runs a script of several statements without parameters (migrations),
  /// inside the current transaction.
  virtual void execute_script(std::string_view sql) = 0;

  /// PostgreSQL: session-level advisory lock, held until released or the
  /// session closes. SQLite: nothing (BEGIN IMMEDIATE serializes writers).
  virtual void lock_advisory(std::int64_t key) = 0;
  virtual void unlock_advisory(std::int64_t key) noexcept = 0;

  /// False once the connection is known to be unusable: the store then drops
  /// it instead of returning it to the pool.
  [[nodiscard]] virtual bool healthy() const noexcept = 0;

  /// The message stream of this connection, for a connector that sends
  /// messages in its transactions (mq::TransactionalTransport).
  [[nodiscard]] mq::TransportStream& stream() noexcept { return m_stream; }

 private:
  mq::TransportStream m_stream;
};

/// Opens sessions to one database.
class SessionFactory {
 public:
  virtual ~SessionFactory();
  [[nodiscard]] virtual Backend backend() const noexcept = 0;
  /// The URL with any password replaced by "***", for messages.
  [[nodiscard]] virtual const std::string& display_name() const noexcept = 0;
  [[nodiscard]] virtual std::unique_ptr<Session> open() = 0;
  /// How many sessions may be open at once (1 for an in-memory SQLite database
  /// that has no other way to be shared); 0 for no limit.
  [[nodiscard]] virtual std::size_t max_sessions() const noexcept { return 0; }
};

struct SessionOptions {
  std::chrono::milliseconds busy_timeout{5000};
  std::chrono::seconds connect_timeout{10};
  bool read_only = false;
  std::chrono::milliseconds statement_timeout{60000};
};

std::unique_ptr<SessionFactory> make_sqlite_factory(std::string_view url, const SessionOptions& options);

/// Set by livestate::db_postgres when it is linked in (postgres_session.cpp).
using PostgresFactoryMaker = std::unique_ptr<SessionFactory> (*)(std::string_view url, const SessionOptions& options);
void register_postgres_backend(PostgresFactoryMaker maker) noexcept;
[[nodiscard]] PostgresFactoryMaker postgres_backend() noexcept;

/// Rewrites `?` placeholders to PostgreSQL's $1, $2, … (outside quotes).
[[nodiscard]] std::string number_placeholders(std::string_view sql);

}  // namespace livestate::db::detail
