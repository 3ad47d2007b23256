// The PostgreSQL backend's session: one libpq connection, READ COMMITTED
// transactions, `?` placeholders rewritten to $n and run as prepared
// statements (prepared lazily, once per session, up to a bound), parameters
// sent as untyped text so that the server infers their types from the
// statement. A transaction's BEGIN, a new statement's preparation and the
// statement itself travel in one pipeline: one round trip per statement, and
// a transaction costs its statements plus COMMIT.
//
// Failures leave here only as SessionFailure, whose message names the
// database by its display name (password redacted) and quotes the server's
// message and SQLSTATE. A broken connection is never reopened behind the
// caller's back: the session reports !healthy() and the store replaces it, so
// state tied to the session (an advisory lock, the open transaction) can't be
// lost silently.

#include <poll.h>

#include <libpq-fe.h>

#include <charconv>
#include <cmath>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "livestate/core/detail/postgres.hpp"
#include "livestate/core/detail/text.hpp"
#include "livestate/core/error.hpp"
#include "livestate/core/log.hpp"
#include "postgres_session.hpp"

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

struct ResultClearer {
  void operator()(PGresult* result) const noexcept { PQclear(result); }
};
using Result = std::unique_ptr<PGresult, ResultClearer>;

std::string error_field(const PGresult* result, int field) {
  const char* value = result != nullptr ? PQresultErrorField(result, field) : nullptr;
  return value != nullptr ? std::string(value) : std::string();
}

// Routes the server's notices (a NOTICE, a WARNING) to livestate's log
// instead of stderr, and keeps the server's last FATAL message: the reason it
// gave for ending the session, better than libpq's "server closed the
// connection unexpectedly".
class NoticeLogger {
 public:
  static void receive(void* self, const PGresult* notice) noexcept {
    try {
      static_cast<NoticeLogger*>(self)->log_notice(notice);
    } catch (...) {
    }
  }
  [[nodiscard]] const std::string& last_fatal() const noexcept { return m_last_fatal; }

 private:
  void log_notice(const PGresult* notice) {
    const std::string severity = error_field(notice, PG_DIAG_SEVERITY_NONLOCALIZED);
    std::string text = one_line(PQresultErrorMessage(notice));
    if (severity == "FATAL" || severity == "PANIC") m_last_fatal = text;
    log(severity == "WARNING" ? LogLevel::warning : LogLevel::debug, component, text);
  }
  std::string m_last_fatal;
};

class PostgresSession final : public Session {
 public:
  PostgresSession(PgConnection connection, const std::string& name, bool read_only,
                  std::shared_ptr<StatementWatchdog> watchdog, std::chrono::milliseconds statement_timeout)
      : m_connection(std::move(connection)),
        m_name(name),
        m_watchdog(std::move(watchdog)),
        m_statement_timeout(statement_timeout) {
    PQsetNoticeReceiver(m_connection.get(), &NoticeLogger::receive, &m_notices);
    // The store's statements run in microseconds; JIT would spend
    // milliseconds compiling those the planner thinks costly (the messages'
    // send statement, whose arrays it can't size).
    Result result;
    {
      const auto watch = deadline();
      result.reset(PQexec(m_connection.get(),
                          read_only ? "SET jit = off; SET default_transaction_read_only = on" : "SET jit = off"));
    }
    if (PQresultStatus(result.get()) != PGRES_COMMAND_OK) {
      throw SessionFailure(FailureKind::connection,
                           "cannot connect to " + m_name + ": " + one_line(PQerrorMessage(m_connection.get())),
                           error_field(result.get(), PG_DIAG_SQLSTATE));
    }
  }

  ~PostgresSession() override { rollback(); }

  Backend backend() const noexcept override { return Backend::postgresql; }

  // Sends nothing: BEGIN goes to the server with the transaction's first
  // statement, in one round trip (libpq's pipeline mode). Only checks that
  // the server has not ended the session while it was idle.
  void begin(bool /*write*/) override {
    if (m_state != State::none) throw std::logic_error(m_name + ": begin() while a transaction is open");
    check_connection("begin a transaction");
    m_state = State::begin_pending;
    m_statement_failed = false;
  }

  void commit() override {
    if (m_state == State::none) throw std::logic_error(m_name + ": commit() without a transaction");
    if (m_state == State::begin_pending && !m_broken) {
      m_state = State::none;  // no statement ran, so the server has nothing to commit
      return;
    }
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
      check_connection("commit");
    } catch (...) {
      rollback();  // COMMIT was not sent: the server has rolled the transaction back
      throw;
    }
    PGconn* connection = m_connection.get();
    Result result;
    bool sent = false;
    {
      const auto watch = deadline();
      sent = PQsendQuery(connection, "COMMIT") == 1;
      if (sent) result = last_result();
    }
    if (sent && PQresultStatus(result.get()) == PGRES_COMMAND_OK) {
      m_state = State::none;
      if (std::string_view(PQcmdStatus(result.get())) == "COMMIT") return;
      throw SessionFailure(FailureKind::other, m_name + ": cannot commit: PostgreSQL rolled the transaction back");
    }
    if (sent && PQstatus(connection) != CONNECTION_OK) {
      // COMMIT was sent and no answer came: never retry this blindly.
      m_broken = true;
      m_state = State::none;
      throw SessionFailure(FailureKind::commit_in_doubt,
                           m_name + ": the connection to the server was lost during COMMIT" + deadline_reason() +
                               ": the transaction may or may not have committed (check before retrying it)");
    }
    // Refused (a deferred constraint, a serialization failure): the
    // transaction is over and nothing of it committed. Never sent on a
    // connection that still works (libpq out of memory): the server's
    // transaction would stay open under the next one, so the session goes.
    if (!sent) m_broken = true;
    SessionFailure failure = failure_of("commit", result.get());
    m_state = State::none;
    throw failure;
  }

  void rollback() noexcept override {
    const State state = std::exchange(m_state, State::none);
    m_statement_failed = false;
    if (state != State::open || m_broken) return;
    try {
      Result result;
      {
        const auto watch = deadline();
        result.reset(PQexec(m_connection.get(), "ROLLBACK"));
      }
      if (PQresultStatus(result.get()) != PGRES_COMMAND_OK) m_broken = true;
    } catch (...) {
      m_broken = true;  // no telling what the server has: close it
    }
  }

  Rows query(std::string_view sql, std::span<const Value> params) override {
    const Result result = run(sql, params);
    Rows rows;
    const int count = PQntuples(result.get());
    const int columns = PQnfields(result.get());
    rows.reserve(static_cast<std::size_t>(count));
    for (int row = 0; row < count; ++row) {
      std::vector<Value> values;
      values.reserve(static_cast<std::size_t>(columns));
      for (int column = 0; column < columns; ++column) {
        if (PQgetisnull(result.get(), row, column) != 0) {
          values.emplace_back(std::monostate{});
        } else {
          values.emplace_back(std::string(PQgetvalue(result.get(), row, column),
                                          static_cast<std::size_t>(PQgetlength(result.get(), row, column))));
        }
      }
      rows.emplace_back(std::move(values));
    }
    return rows;
  }

  std::int64_t execute(std::string_view sql, std::span<const Value> params) override {
    const Result result = run(sql, params);
    const std::string_view affected = PQcmdTuples(result.get());
    std::int64_t count = 0;
    std::from_chars(affected.data(), affected.data() + affected.size(), count);
    return count;
  }

  void execute_script(std::string_view sql) override {
    require_transaction("execute_script()");
    const std::string doing = "run the script " + excerpt(sql);
    send_begin(doing);
    Result result;
    {
      const auto watch = deadline();
      result.reset(PQexec(m_connection.get(), std::string(sql).c_str()));
    }
    finish_statement(result, doing);
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
    if (m_broken || m_deadline_passed || PQstatus(m_connection.get()) != CONNECTION_OK) return false;
    if (m_state != State::none) return true;
    // Idle, the server sends nothing unasked (these sessions never LISTEN), so
    // a readable socket means it has ended the session (an administrator, a
    // restart, idle_session_timeout) and said why. Asked without blocking, so
    // that a pool can drop a dead session before handing it out.
    pollfd probe{PQsocket(m_connection.get()), POLLIN, 0};
    return ::poll(&probe, 1, 0) == 0;
  }

 private:
  enum class State {
    none,           // no transaction
    begin_pending,  // begin() called; BEGIN goes with the first statement
    open,           // BEGIN sent and answered
  };

  // The deadline of a blocking call: its socket is shut down when it
  // overruns, so that a server that stopped answering fails it (as a lost
  // connection) instead of holding it for ever.
  StatementWatchdog::Watch deadline() {
    if (!m_watchdog) return {};
    return m_watchdog->watch(PQsocket(m_connection.get()), m_statement_timeout, m_deadline_passed);
  }
  [[nodiscard]] std::string deadline_reason() const {
    return m_deadline_passed ? " (no answer within the statement timeout of " +
                                   std::to_string(m_statement_timeout.count()) + " ms, so it was closed)"
                             : std::string();
  }

  void require_transaction(const char* what) const {
    if (m_state == State::none) {
      throw std::logic_error(m_name + ": " + what + " outside a transaction: call begin() first");
    }
  }

  // The last result of the command sent, once the connection is idle again
  // (libpq answers a multi-statement script with one result per statement).
  Result last_result() {
    Result last;
    while (Result next{PQgetResult(m_connection.get())}) {
      // The first failure is the one to report; what follows it was skipped.
      if (!last || PQresultStatus(last.get()) != PGRES_FATAL_ERROR) last = std::move(next);
    }
    return last;
  }

  // BEGIN on its own, for the calls that can't share its round trip.
  void send_begin(const std::string& doing) {
    if (m_state != State::begin_pending) return;
    Result result;
    {
      const auto watch = deadline();
      result.reset(PQexec(m_connection.get(), "BEGIN"));
    }
    if (PQresultStatus(result.get()) != PGRES_COMMAND_OK) throw failure_of(doing, result.get());
    m_state = State::open;
  }

  // After a statement of the transaction: its failure aborts the transaction
  // (until ROLLBACK TO SAVEPOINT) and throws; a success clears that.
  void finish_statement(const Result& result, const std::string& doing) {
    const auto status = PQresultStatus(result.get());
    if (result && (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)) {
      m_statement_failed = false;  // also after ROLLBACK TO SAVEPOINT
      return;
    }
    m_statement_failed = true;
    if (is_copy(result.get())) m_broken = true;
    throw failure_of(doing, result.get());
  }

  // The prepared statement for `sql`: its name (empty once the cache is
  // full) and whether it still has to be prepared. The store's IN (?, ?, …)
  // lists make a new text for every length, so the cache is bounded: past
  // it, statements run unnamed.
  struct Prepared {
    std::string name;
    bool prepare = false;
  };
  Prepared statement(std::string_view sql) const {
    constexpr std::size_t max_prepared_statements = 256;
    if (const auto found = m_statements.find(std::string(sql)); found != m_statements.end()) {
      return {found->second, false};
    }
    if (m_statements.size() >= max_prepared_statements) return {};
    return {"livestate_" + std::to_string(m_statements.size() + 1), true};
  }

  // One statement of the transaction, sent in one pipeline with the BEGIN
  // still to be sent and its own preparation when it is new: one round trip.
  Result run(std::string_view sql, std::span<const Value> params) {
    require_transaction("a statement");
    const std::string doing = "run " + excerpt(sql);
    if (m_broken) throw failure_of(doing, nullptr);
    const ParameterText text(params, m_name);
    const auto& values = text.pointers();
    if (values.size() > PQ_QUERY_PARAM_MAX_LIMIT) {
      throw SessionFailure(FailureKind::other, m_name + ": cannot " + doing + ": it has " +
                                                   std::to_string(values.size()) +
                                                   " parameters, and PostgreSQL takes at most " +
                                                   std::to_string(PQ_QUERY_PARAM_MAX_LIMIT));
    }
    const int count = static_cast<int>(values.size());
    const auto [name, prepare] = statement(sql);
    std::string numbered;
    if (name.empty() || prepare) numbered = number_placeholders(sql);

    PGconn* connection = m_connection.get();
    const bool with_begin = m_state == State::begin_pending;
    Result begun, prepared, result;
    {
      const auto watch = deadline();
      bool sent = PQenterPipelineMode(connection) == 1;
      if (sent && with_begin) sent = PQsendQueryParams(connection, "BEGIN", 0, nullptr, nullptr, nullptr, nullptr, 0);
      if (sent && prepare) sent = PQsendPrepare(connection, name.c_str(), numbered.c_str(), 0, nullptr);
      if (sent) {
        sent = !name.empty()
                   ? PQsendQueryPrepared(connection, name.c_str(), count, values.data(), nullptr, nullptr, 0)
                   : PQsendQueryParams(connection, numbered.c_str(), count, nullptr, values.data(), nullptr, nullptr, 0);
      }
      if (sent) sent = PQpipelineSync(connection) == 1;
      if (sent) {
        if (with_begin) begun = command_result();
        if (prepare) prepared = command_result();
        result = command_result();
        // The pipeline's end: its Sync answered, then out of pipeline mode.
        const Result sync{PQgetResult(connection)};
        if (PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC || PQexitPipelineMode(connection) != 1) {
          m_broken = true;
        }
      } else {
        m_broken = true;  // the commands could not all be sent: nothing to read back
      }
    }
    if (with_begin && PQresultStatus(begun.get()) == PGRES_COMMAND_OK) m_state = State::open;
    if (m_broken) {
      // The first command that failed says why (a FATAL answered to BEGIN,
      // say); the ones after it were only skipped.
      const PGresult* failed = nullptr;
      for (const Result* answer : {&begun, &prepared, &result}) {
        if (!failed && PQresultStatus(answer->get()) == PGRES_FATAL_ERROR) failed = answer->get();
      }
      throw failure_of(doing, failed);
    }
    if (with_begin && m_state != State::open) throw failure_of(doing, begun.get());
    if (prepare) {
      if (PQresultStatus(prepared.get()) != PGRES_COMMAND_OK) {
        m_statement_failed = true;
        throw failure_of(doing, prepared.get());
      }
      m_statements.emplace(std::string(sql), name);
    }
    finish_statement(result, doing);
    return result;
  }

  // The result of the next command of the pipeline, read up to its end.
  Result command_result() {
    Result first{PQgetResult(m_connection.get())};
    if (!first) return first;
    // A COPY would answer for ever; the store sends none, and a connection
    // left in one is of no more use.
    if (is_copy(first.get())) {
      m_broken = true;
      return first;
    }
    while (Result more{PQgetResult(m_connection.get())}) {
    }
    return first;
  }

  static bool is_copy(const PGresult* result) noexcept {
    const auto status = PQresultStatus(result);
    return status == PGRES_COPY_IN || status == PGRES_COPY_OUT || status == PGRES_COPY_BOTH;
  }

  // Session-level work outside any transaction (or in the open one: an
  // advisory lock taken there is still session-level and survives its end).
  // Before BEGIN is sent, it runs before the transaction: the same thing.
  void session_level(const char* sql, std::int64_t key, const std::string& doing) {
    if (m_state == State::none || m_state == State::begin_pending) check_connection(doing);
    if (m_broken) throw failure_of(doing, nullptr);
    const std::string text = std::to_string(key);
    const char* values[] = {text.c_str()};
    Result result;
    {
      const auto watch = deadline();
      result.reset(PQexecParams(m_connection.get(), sql, 1, nullptr, values, nullptr, nullptr, 0));
    }
    if (m_state == State::open) {
      finish_statement(result, doing);
    } else if (PQresultStatus(result.get()) != PGRES_TUPLES_OK) {
      throw failure_of(doing, result.get());
    }
  }

  // Before a transaction or its COMMIT: reads what the server sent unasked,
  // without blocking. At those points it sends nothing (these sessions never
  // LISTEN) unless it is ending the session, and then this throws a
  // connection failure before a command is sent into the void.
  void check_connection(const std::string& doing) {
    PGconn* connection = m_connection.get();
    if (m_broken || PQstatus(connection) != CONNECTION_OK) throw failure_of(doing, nullptr);
    // Twice: the first read may take the server's last words (a FATAL
    // message, which libpq hands to the notice receiver), the second its EOF.
    for (int read = 0; read < 2; ++read) {
      pollfd probe{PQsocket(connection), POLLIN, 0};
      if (::poll(&probe, 1, 0) <= 0) break;
      if (PQconsumeInput(connection) != 1) break;
      while (PGnotify* notify = PQnotifies(connection)) PQfreemem(notify);  // parses what came
    }
    if (!m_notices.last_fatal().empty() || PQstatus(connection) != CONNECTION_OK) {
      m_broken = true;
      throw failure_of(doing, nullptr);
    }
  }

  // The failure `result` reports (none: the connection's own error), named:
  // what failed, why, and of what kind.
  SessionFailure failure_of(const std::string& doing, const PGresult* result) {
    PGconn* connection = m_connection.get();
    const std::string sqlstate = error_field(result, PG_DIAG_SQLSTATE);
    const char* message = result != nullptr ? PQresultErrorMessage(result) : "";
    std::string reason = one_line(*message != '\0' ? message : PQerrorMessage(connection));
    if (reason.empty()) reason = "the server closed it";
    FailureKind kind = sqlstate.empty() ? FailureKind::other : kind_of_sqlstate(sqlstate);
    if (m_broken || PQstatus(connection) != CONNECTION_OK) kind = FailureKind::connection;
    if (kind == FailureKind::connection) {
      // The server rolls back a transaction whose connection ends.
      m_broken = true;
      if (!m_notices.last_fatal().empty()) reason = m_notices.last_fatal();
      return SessionFailure(kind,
                            m_name + ": cannot " + doing + ": the connection to the server was lost" +
                                deadline_reason() + (m_state != State::none ? ", so the transaction was rolled back" : "") +
                                " (" + reason + ")",
                            sqlstate);
    }
    if (!sqlstate.empty()) reason += " (SQLSTATE " + sqlstate + ")";
    return SessionFailure(kind, m_name + ": cannot " + doing + ": " + reason, sqlstate);
  }

  // Declared first: destroyed last, after the connection that reports to it.
  NoticeLogger m_notices;
  PgConnection m_connection;
  std::string m_name;
  State m_state = State::none;
  std::unordered_map<std::string, std::string> m_statements;  // SQL -> prepared statement's name
  std::shared_ptr<StatementWatchdog> m_watchdog;              // none: no deadline
  std::chrono::milliseconds m_statement_timeout;
  bool m_deadline_passed = false;   // a call overran it: the connection is closed
  bool m_statement_failed = false;  // the open transaction is aborted until ROLLBACK TO
  bool m_broken = false;
};

}  // namespace

std::unique_ptr<Session> make_postgres_session(PgConnection connection, const std::string& name, bool read_only,
                                               std::shared_ptr<StatementWatchdog> watchdog,
                                               std::chrono::milliseconds statement_timeout) {
  return std::make_unique<PostgresSession>(std::move(connection), name, read_only, std::move(watchdog),
                                           statement_timeout);
}

}  // namespace livestate::db::detail
