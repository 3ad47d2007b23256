// The PostgreSQL backend: one libpqxx connection per session, READ COMMITTED
// transactions, `?` placeholders rewritten to $n and run as prepared
// statements (prepared lazily, once per session, up to a bound), parameters
// sent as untyped text so that the server infers their types from the
// statement.
//
// Failures leave here only as SessionFailure, whose message names the
// database by its display name (password redacted) and quotes the server's
// message and SQLSTATE. A broken connection is never reopened behind the
// caller's back: the session reports !healthy() and the store replaces it, so
// state tied to the session (an advisory lock, the open transaction) can't be
// lost silently.

#include <poll.h>

#include <libpq-fe.h>

#include <pqxx/pqxx>

#include <charconv>
#include <cmath>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "livestate/core/detail/postgres.hpp"
#include "livestate/core/detail/text.hpp"
#include "livestate/core/error.hpp"
#include "livestate/core/log.hpp"
#include "session.hpp"
#include "statement_watchdog.hpp"

namespace livestate::db::detail {
namespace {

constexpr std::string_view component = "db.postgres";

using ::livestate::detail::one_line;

// The start of a statement, for messages: enough to recognize it, never its
// parameters (they are bound, so they are not in the text).
std::string excerpt(std::string_view sql) {
  constexpr std::size_t limit = 60;
  std::string text = one_line(sql);
  if (text.size() > limit) {
    text.resize(limit);
    text += "…";
  }
  return "`" + text + "`";
}

FailureKind kind_of_sqlstate(std::string_view sqlstate) noexcept {
  using ::livestate::detail::SqlStateClass;
  switch (::livestate::detail::classify_sqlstate(sqlstate)) {
    case SqlStateClass::unique_violation: return FailureKind::unique_violation;
    case SqlStateClass::serialization: return FailureKind::serialization;
    case SqlStateClass::read_only: return FailureKind::read_only;
    case SqlStateClass::connection: return FailureKind::connection;
    default: return FailureKind::other;
  }
}

// Parameters as libpq's text format; nullptr is SQL NULL.
class ParameterText {
 public:
  ParameterText(std::span<const Value> params, const std::string& database) {
    m_numbers.reserve(params.size());  // pointers into it must stay valid
    m_pointers.reserve(params.size());
    for (const Value& value : params) {
      switch (value.index()) {
        case 0: m_pointers.push_back(nullptr); break;
        case 1: m_pointers.push_back(number(std::get<std::int64_t>(value))); break;
        case 2: m_pointers.push_back(real(std::get<double>(value))); break;
        case 3: {
          const auto& text = std::get<std::string>(value);
          // Would be cut short at the NUL, silently: PostgreSQL text can't hold one.
          if (text.find('\0') != std::string::npos) {
            throw SessionFailure(FailureKind::other, database + ": cannot bind parameter " +
                                                         std::to_string(m_pointers.size() + 1) +
                                                         ": PostgreSQL text cannot contain a NUL character");
          }
          m_pointers.push_back(text.c_str());
          break;
        }
        default: m_pointers.push_back(std::get<bool>(value) ? "true" : "false"); break;
      }
    }
  }

  [[nodiscard]] const std::vector<const char*>& pointers() const noexcept { return m_pointers; }

 private:
  template <class Number>
  const char* number(Number value) {
    char buffer[32];
    const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
    return m_numbers.emplace_back(buffer, result.ptr).c_str();
  }

  // The shortest text that reads back as the same double (std::to_chars);
  // PostgreSQL's spellings for the values that have no digits.
  const char* real(double value) {
    if (std::isnan(value)) return "NaN";
    if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
    return number(value);
  }

  std::vector<std::string> m_numbers;
  std::vector<const char*> m_pointers;
};

// Routes libpq's notices (a server NOTICE, libpqxx's warnings) to livestate's
// log instead of stderr, and keeps the server's last FATAL message: the reason
// it gave for ending the session, better than libpq's "not connected".
class NoticeLogger final : public pqxx::errorhandler {
 public:
  using pqxx::errorhandler::errorhandler;
  [[nodiscard]] const std::string& last_fatal() const noexcept { return m_last_fatal; }

  bool operator()(const char message[]) noexcept override {
    const std::string_view text(message);
    if (text.substr(0, 5) == "FATAL") {
      try {
        m_last_fatal = one_line(text);
      } catch (...) {
      }
    }
    // libpqxx's own warning about a commit in doubt repeats what the
    // SessionFailure thrown with it says.
    const bool warning = text.substr(0, 7) == "WARNING" &&
                         text.find("Connection lost while committing") == std::string_view::npos;
    log(warning ? LogLevel::warning : LogLevel::debug, component, one_line(text));
    return false;  // not also to the default handler, which prints
  }

 private:
  std::string m_last_fatal;
};

class PostgresSession final : public Session {
 public:
  PostgresSession(const std::string& conninfo, const std::string& name, bool read_only,
                  std::shared_ptr<StatementWatchdog> watchdog, std::chrono::milliseconds statement_timeout)
      : m_connection(conninfo),
        m_notices(m_connection),
        m_name(name),
        m_watchdog(std::move(watchdog)),
        m_statement_timeout(statement_timeout) {
    // A connection that broke stays broken: libpqxx 6 would otherwise reconnect
    // on the next transaction and drop the session's advisory locks unnoticed.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    m_connection.inhibit_reactivation(true);
#pragma GCC diagnostic pop
    // The store's statements run in microseconds; JIT would spend
    // milliseconds compiling those the planner thinks costly (the messages'
    // send statement, whose arrays it can't size).
    const auto watch = deadline();
    pqxx::nontransaction(m_connection)
        .exec(read_only ? "SET jit = off; SET default_transaction_read_only = on" : "SET jit = off");
  }

  ~PostgresSession() override { rollback(); }

  Backend backend() const noexcept override { return Backend::postgresql; }

  void begin(bool /*write*/) override {
    if (m_transaction) throw std::logic_error(m_name + ": begin() while a transaction is open");
    try {
      check_connection();
      const auto watch = deadline();
      m_transaction.emplace(m_connection);  // sends BEGIN
    } catch (...) {
      m_transaction.reset();
      translate("begin a transaction");
    }
    m_statement_failed = false;
  }

  void commit() override {
    if (!m_transaction) throw std::logic_error(m_name + ": commit() without a transaction");
    if (m_broken) {
      rollback();
      throw SessionFailure(FailureKind::connection, m_name +
                                                        ": cannot commit: the connection was lost before COMMIT, "
                                                        "so the transaction was rolled back");
    }
    if (m_statement_failed) {
      // PostgreSQL answers COMMIT of a failed transaction with a silent
      // ROLLBACK; report it instead of pretending it committed.
      rollback();
      throw SessionFailure(FailureKind::other, m_name +
                                                   ": cannot commit: a statement of the transaction failed, so "
                                                   "PostgreSQL rolled the whole transaction back");
    }
    try {
      check_connection();
    } catch (...) {
      // COMMIT was not sent: the server has rolled the transaction back.
      SessionFailure failure = failure_in_flight("commit");
      rollback();
      throw failure;
    }
    try {
      const auto watch = deadline();
      m_transaction->commit();
    } catch (const pqxx::in_doubt_error&) {
      // COMMIT was sent and no answer came: never retry this blindly.
      m_broken = true;
      m_transaction.reset();
      throw SessionFailure(FailureKind::commit_in_doubt,
                           m_name + ": the connection to the server was lost during COMMIT" + deadline_reason() +
                               ": the transaction may or may not have committed (check before retrying it)");
    } catch (...) {
      SessionFailure failure = failure_in_flight("commit");
      rollback();
      throw failure;
    }
    m_transaction.reset();
  }

  void rollback() noexcept override {
    if (!m_transaction) return;
    try {
      const auto watch = deadline();
      m_transaction->abort();
    } catch (...) {
      m_broken = true;  // no telling what the server has: close it
    }
    m_transaction.reset();
    m_statement_failed = false;
  }

  Rows query(std::string_view sql, std::span<const Value> params) override {
    const pqxx::result result = run(sql, params);
    Rows rows;
    rows.reserve(result.size());
    const auto columns = static_cast<std::size_t>(result.columns());
    for (const auto& row : result) {
      std::vector<Value> values;
      values.reserve(columns);
      for (const auto& field : row) {
        if (field.is_null()) {
          values.emplace_back(std::monostate{});
        } else {
          values.emplace_back(std::string(field.c_str(), field.size()));
        }
      }
      rows.emplace_back(std::move(values));
    }
    return rows;
  }

  std::int64_t execute(std::string_view sql, std::span<const Value> params) override {
    return static_cast<std::int64_t>(run(sql, params).affected_rows());
  }

  void execute_script(std::string_view sql) override {
    require_transaction("execute_script()");
    try {
      check_connection();
      const auto watch = deadline();
      m_transaction->exec(std::string(sql));
      m_statement_failed = false;
    } catch (...) {
      translate_statement("run the script " + excerpt(sql));
    }
  }

  void lock_advisory(std::int64_t key) override {
    session_level("SELECT pg_advisory_lock($1)", key, "take advisory lock " + std::to_string(key));
  }

  void unlock_advisory(std::int64_t key) noexcept override {
    try {
      session_level("SELECT pg_advisory_unlock($1)", key, "release advisory lock " + std::to_string(key));
    } catch (const std::exception& error) {
      // Still held, as far as we know: closing the session releases it.
      m_broken = true;
      log(LogLevel::warning, component, error.what());
    } catch (...) {
      m_broken = true;
    }
  }

  bool healthy() const noexcept override {
    if (m_broken || m_deadline_passed || !m_connection.is_open()) return false;
    if (m_transaction) return true;
    // Idle, the server sends nothing unasked (these sessions never LISTEN), so
    // a readable socket means it has ended the session (an administrator, a
    // restart, idle_session_timeout) and said why. Asked without blocking, so
    // that a pool can drop a dead session before handing it out.
    pollfd probe{m_connection.sock(), POLLIN, 0};
    return ::poll(&probe, 1, 0) == 0;
  }

 private:
  // The deadline of a blocking call: its socket is shut down when it
  // overruns, so that a server that stopped answering fails it (as a lost
  // connection) instead of holding it for ever.
  StatementWatchdog::Watch deadline() {
    if (!m_watchdog) return {};
    return m_watchdog->watch(m_connection.sock(), m_statement_timeout, m_deadline_passed);
  }
  [[nodiscard]] std::string deadline_reason() const {
    return m_deadline_passed ? " (no answer within the statement timeout of " +
                                   std::to_string(m_statement_timeout.count()) + " ms, so it was closed)"
                             : std::string();
  }

  void require_transaction(const char* what) const {
    if (!m_transaction) {
      throw std::logic_error(m_name + ": " + what + " outside a transaction: call begin() first");
    }
  }

  // The prepared statement for `sql`, prepared on first use; nullptr once
  // the cache is full. The store's IN (?, ?, …) lists make a new text for
  // every length, so the cache is bounded: past it, statements run unnamed.
  const std::string* statement(std::string_view sql) {
    constexpr std::size_t max_prepared_statements = 256;
    std::string key(sql);
    if (const auto found = m_statements.find(key); found != m_statements.end()) return &found->second;
    if (m_statements.size() >= max_prepared_statements) return nullptr;
    std::string name = "livestate_" + std::to_string(m_statements.size() + 1);
    m_connection.prepare(name, number_placeholders(sql));  // sent to the server when first run
    return &m_statements.emplace(std::move(key), std::move(name)).first->second;
  }

  pqxx::result run(std::string_view sql, std::span<const Value> params) {
    require_transaction("a statement");
    const ParameterText text(params, m_name);
    try {
      check_connection();
      const auto values = pqxx::prepare::make_dynamic_params(text.pointers());
      const std::string* name = statement(sql);
      const auto watch = deadline();
      pqxx::result result = name != nullptr ? m_transaction->exec_prepared(*name, values)
                                            : m_transaction->exec_params(number_placeholders(sql), values);
      m_statement_failed = false;  // also after ROLLBACK TO SAVEPOINT
      return result;
    } catch (...) {
      translate_statement("run " + excerpt(sql));
    }
  }

  // Session-level work outside any transaction (or in the open one: an
  // advisory lock taken there is still session-level and survives its end).
  void session_level(const char* sql, std::int64_t key, const std::string& doing) {
    if (m_transaction) {
      try {
        check_connection();
        const auto watch = deadline();
        m_transaction->exec_params(sql, key);
        m_statement_failed = false;
      } catch (...) {
        translate_statement(doing);
      }
      return;
    }
    try {
      check_connection();
      const auto watch = deadline();
      pqxx::nontransaction work(m_connection);
      work.exec_params(sql, key);
    } catch (...) {
      translate(doing);
    }
  }

  // Before a statement: reads what the server sent unasked, without blocking.
  // Between statements it sends nothing (these sessions never LISTEN) unless
  // it is ending the session, and then this throws broken_connection before a
  // statement is sent into the void. (It also spares libpqxx 6.4 the path
  // where it leaks the result of a statement that met a closed connection.)
  void check_connection() {
    // Twice: the first read may take the server's last words (a FATAL
    // message, which libpq hands to the notice handler), the second its EOF.
    bool closed = false;
    try {
      for (int read = 0; read < 2; ++read) {
        pollfd probe{m_connection.sock(), POLLIN, 0};
        if (::poll(&probe, 1, 0) <= 0) break;
        m_connection.get_notifs();
      }
    } catch (const pqxx::broken_connection&) {
      closed = true;
    }
    if (closed || !m_notices.last_fatal().empty() || !m_connection.is_open()) {
      throw pqxx::broken_connection(m_notices.last_fatal().empty() ? "the server closed it" : m_notices.last_fatal());
    }
  }

  [[noreturn]] void translate_statement(const std::string& doing) {
    m_statement_failed = true;
    translate(doing);
  }

  // Rethrows the exception in flight as a SessionFailure; anything that is not
  // libpqxx's passes through unchanged.
  [[noreturn]] void translate(const std::string& doing) { throw failure_in_flight(doing); }

  // The SessionFailure for the libpqxx exception in flight (any other one is
  // rethrown): what failed, why, and of what kind.
  SessionFailure failure_in_flight(const std::string& doing) {
    FailureKind kind = FailureKind::other;
    std::string reason;
    std::string sqlstate;
    try {
      throw;
    } catch (const pqxx::broken_connection& error) {
      kind = FailureKind::connection;
      reason = one_line(error.what());
    } catch (const pqxx::sql_error& error) {
      sqlstate = error.sqlstate();
      kind = kind_of_sqlstate(sqlstate);
      reason = one_line(error.what());
    } catch (const pqxx::serialization_failure& error) {
      // libpqxx 6 gives its transaction_rollback family no SQLSTATE.
      kind = FailureKind::serialization;
      reason = one_line(error.what());
      sqlstate = "40001";
    } catch (const pqxx::deadlock_detected& error) {
      kind = FailureKind::serialization;
      reason = one_line(error.what());
      sqlstate = "40P01";
    } catch (const pqxx::pqxx_exception& error) {
      reason = one_line(error.base().what());
    }
    if (!m_connection.is_open()) kind = FailureKind::connection;
    if (kind == FailureKind::connection) {
      // The server rolls back a transaction whose connection ends.
      m_broken = true;
      if (!m_notices.last_fatal().empty()) reason = m_notices.last_fatal();
      return SessionFailure(kind,
                            m_name + ": cannot " + doing + ": the connection to the server was lost" +
                                deadline_reason() + (m_transaction ? ", so the transaction was rolled back" : "") +
                                " (" + reason + ")",
                            sqlstate);
    }
    if (!sqlstate.empty()) reason += " (SQLSTATE " + sqlstate + ")";
    return SessionFailure(kind, m_name + ": cannot " + doing + ": " + reason, sqlstate);
  }

  // Declared first: destroyed last, after the transaction and the handler.
  pqxx::connection m_connection;
  NoticeLogger m_notices;
  std::string m_name;
  std::optional<pqxx::work> m_transaction;
  std::unordered_map<std::string, std::string> m_statements;  // SQL -> statement name
  std::shared_ptr<StatementWatchdog> m_watchdog;              // none: no deadline
  std::chrono::milliseconds m_statement_timeout;
  bool m_deadline_passed = false;   // a call overran it: the connection is closed
  bool m_statement_failed = false;  // the open transaction is aborted until ROLLBACK TO
  bool m_broken = false;
};

// The user's connection parameters as libpq reads them, with livestate's
// defaults where the user set none: a name in pg_stat_activity, a bound on
// connecting, and TCP keepalives so that a vanished host breaks the
// connection instead of leaving a call waiting on it forever. Written back as
// a conninfo string, since libpqxx 6 takes one. A URL libpq refuses is
// UnsupportedUrl, with libpq's reason and without the URL's passwords.
std::string conninfo_with_defaults(std::string_view url, const std::string& name, const SessionOptions& options) {
  char* error = nullptr;
  // The connector's `transport` parameter is not libpq's: the same URL opens
  // the store and its connector.
  const std::string for_libpq = ::livestate::detail::take_transport_parameter(url).url;
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> parsed(PQconninfoParse(for_libpq.c_str(), &error),
                                                                      &PQconninfoFree);
  if (!parsed) {
    const std::string reason = error != nullptr ? one_line(error) : "out of memory";
    if (error != nullptr) PQfreemem(error);
    throw UnsupportedUrl("cannot open " + name +
                         ": libpq cannot read it: " + ::livestate::detail::scrub_postgres_secrets(reason, url));
  }
  const std::pair<const char*, std::string> defaults[] = {
      {"fallback_application_name", "livestate"},
      {"connect_timeout", std::to_string(std::max<std::int64_t>(options.connect_timeout.count(), 1))},
      {"keepalives", "1"},
      {"keepalives_idle", "5"},
      {"keepalives_interval", "2"},
      {"keepalives_count", "3"},
  };
  const auto quoted = [](std::string_view value) {
    std::string text = "'";
    for (const char c : value) {
      if (c == '\\' || c == '\'') text += '\\';
      text += c;
    }
    return text + "'";
  };
  std::string conninfo;
  for (const auto& [keyword, value] : defaults) conninfo += std::string(keyword) + "=" + quoted(value) + " ";
  for (auto* option = parsed.get(); option->keyword != nullptr; ++option) {
    if (option->val != nullptr) conninfo += std::string(option->keyword) + "=" + quoted(option->val) + " ";
  }
  return conninfo;
}

class PostgresFactory final : public SessionFactory {
 public:
  PostgresFactory(std::string_view url, const SessionOptions& options)
      : m_name(::livestate::detail::redact_postgres_url(url)),
        m_conninfo(conninfo_with_defaults(url, m_name, options)),
        m_read_only(options.read_only),
        m_statement_timeout(options.statement_timeout),
        m_watchdog(options.statement_timeout.count() > 0 ? StatementWatchdog::acquire() : nullptr) {}

  Backend backend() const noexcept override { return Backend::postgresql; }
  const std::string& display_name() const noexcept override { return m_name; }

  std::unique_ptr<Session> open() override {
    try {
      return std::make_unique<PostgresSession>(m_conninfo, m_name, m_read_only, m_watchdog, m_statement_timeout);
    } catch (const pqxx::pqxx_exception& error) {
      // libpq's reasons don't quote passwords once the URL has parsed; scrubbed anyway.
      throw SessionFailure(FailureKind::connection,
                           "cannot connect to " + m_name + ": " +
                               ::livestate::detail::scrub_postgres_secrets(one_line(error.base().what()), m_conninfo));
    }
  }

 private:
  std::string m_name;
  std::string m_conninfo;
  bool m_read_only;
  std::chrono::milliseconds m_statement_timeout;
  std::shared_ptr<StatementWatchdog> m_watchdog;  // none without a statement timeout
};

std::unique_ptr<SessionFactory> make_postgres_factory(std::string_view url, const SessionOptions& options) {
  return std::make_unique<PostgresFactory>(url, options);
}

int register_backend() noexcept {
  register_postgres_backend(&make_postgres_factory);
  return 1;
}

}  // namespace
}  // namespace livestate::db::detail

// Linking livestate::db_postgres makes `postgresql://` URLs work: the target's
// --undefined=livestate_db_postgres_backend keeps this object in the program,
// and its initializer registers the backend with livestate::db.
extern "C" {
int livestate_db_postgres_backend = livestate::db::detail::register_backend();
}
