#include "pq_connection.hpp"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <new>

#include "livestate/core/detail/text.hpp"
#include "livestate/core/log.hpp"

namespace livestate::mq::detail {

std::string one_line(const char* text) { return livestate::detail::one_line(text != nullptr ? text : ""); }

// libpq connection parameters: our defaults first, then the user's URL or
// conninfo (expanded from "dbname"), whose own settings win.
Connection start_connection(const std::string& url, const ConnectionSettings& settings, bool blocking) {
  const std::string timeout = std::to_string(settings.connect_timeout.count());
  const std::string user_timeout = std::to_string(settings.tcp_user_timeout.count());
  const char* keywords[] = {"keepalives",
                            "keepalives_idle",
                            "keepalives_interval",
                            "keepalives_count",
                            "tcp_user_timeout",
                            "connect_timeout",
                            "fallback_application_name",
                            "dbname",
                            "replication",
                            nullptr};
  // After "dbname", so that it wins over the URL's own; nothing when null.
  const char* values[] = {"1",
                          "5",
                          "2",
                          "3",
                          user_timeout.c_str(),
                          timeout.c_str(),
                          settings.application,
                          url.c_str(),
                          settings.replication ? "database" : nullptr,
                          nullptr};
  PGconn* raw = blocking ? PQconnectdbParams(keywords, values, 1) : PQconnectStartParams(keywords, values, 1);
  if (raw == nullptr) throw std::bad_alloc();
  // Server notices ("relation already exists, skipping", "terminating
  // connection…") go to livestate's log, not to stderr.
  PQsetNoticeProcessor(
      raw, [](void*, const char* message) { log(LogLevel::debug, log_component, one_line(message)); }, nullptr);
  return Connection(raw);
}

bool idle_connection_alive(PGconn* connection) {
  if (connection == nullptr || PQstatus(connection) != CONNECTION_OK) return false;
  pollfd probe{PQsocket(connection), POLLIN, 0};
  return ::poll(&probe, 1, 0) == 0;
}

std::string text_array(const std::vector<std::string>& elements) {
  std::size_t size = 2;
  for (const auto& element : elements) size += element.size() + 3;
  std::string literal;
  literal.reserve(size + size / 16);
  literal += '{';
  for (const auto& element : elements) {
    if (literal.size() > 1) literal += ',';
    literal += '"';
    // Runs without a quote or backslash are copied whole. (A plain loop:
    // find_first_of with a set calls memchr once per character.)
    std::size_t start = 0;
    for (std::size_t i = 0; i < element.size(); ++i) {
      if (element[i] != '"' && element[i] != '\\') continue;
      literal.append(element, start, i - start);
      literal += '\\';
      start = i;
    }
    literal.append(element, start, std::string::npos);
    literal += '"';
  }
  literal += '}';
  return literal;
}

namespace {

using Clock = std::chrono::steady_clock;

bool succeeded(const PGresult* result) {
  const auto status = PQresultStatus(result);
  return result != nullptr && (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK);
}

// Waits until the socket is ready for `events` or the deadline passes (false).
bool wait_for(PGconn* connection, short events, Clock::time_point deadline) {
  while (true) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd socket{PQsocket(connection), events, 0};
    const int ready = ::poll(&socket, 1, static_cast<int>(std::min<long long>(left, 60'000)));
    if (ready > 0) return true;
    if (ready < 0 && errno != EINTR) return true;  // let libpq find out what is wrong
  }
}

}  // namespace

Result exec_blocking(PGconn* connection, const std::function<int(PGconn*)>& send, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const auto failed = [&](const std::string& what, bool sent) { return StatementError(what, "", true, sent); };
  const auto timed_out = "no answer within " + std::to_string(timeout.count()) + " ms";
  if (PQstatus(connection) != CONNECTION_OK) throw failed(one_line(PQerrorMessage(connection)), false);
  PQsetnonblocking(connection, 1);
  if (send(connection) == 0) throw failed(one_line(PQerrorMessage(connection)), false);
  // Until all of it is out, the server can't have run it.
  while (true) {
    const int flushed = PQflush(connection);
    if (flushed == 0) break;
    if (flushed < 0) throw failed(one_line(PQerrorMessage(connection)), false);
    if (!wait_for(connection, POLLIN | POLLOUT, deadline)) throw failed(timed_out, false);
    if (PQconsumeInput(connection) == 0) throw failed(one_line(PQerrorMessage(connection)), false);
  }
  Result result;  // the last one, or the first failure
  while (true) {
    while (PQisBusy(connection) != 0) {
      if (!wait_for(connection, POLLIN, deadline)) throw failed(timed_out, true);
      if (PQconsumeInput(connection) == 0) throw failed(one_line(PQerrorMessage(connection)), true);
    }
    Result next(PQgetResult(connection));
    if (!next) break;
    if (!result || succeeded(result.get())) result = std::move(next);
  }
  if (!succeeded(result.get())) {
    const bool broken = PQstatus(connection) != CONNECTION_OK;
    const char* sqlstate = PQresultErrorField(result.get(), PG_DIAG_SQLSTATE);
    const char* message = result ? PQresultErrorMessage(result.get()) : PQerrorMessage(connection);
    throw StatementError(one_line(message), sqlstate != nullptr ? sqlstate : "", broken, true);
  }
  return result;
}

Result exec_blocking(PGconn* connection, const std::string& sql, const Params& params,
                     std::chrono::milliseconds timeout, const char* prepared) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& param : params) values.push_back(param ? param->c_str() : nullptr);
  const int count = static_cast<int>(values.size());
  return exec_blocking(
      connection,
      [&](PGconn* target) {
        return prepared != nullptr
                   ? PQsendQueryPrepared(target, prepared, count, values.data(), nullptr, nullptr, 0)
                   : PQsendQueryParams(target, sql.c_str(), count, nullptr, values.data(), nullptr, nullptr, 0);
      },
      timeout);
}

std::optional<std::string> run_blocking(PGconn* connection, const std::string& sql, const Params& params,
                                        std::chrono::milliseconds timeout, const char* prepared) {
  const Result result = exec_blocking(connection, sql, params, timeout, prepared);
  if (PQresultStatus(result.get()) == PGRES_TUPLES_OK && PQntuples(result.get()) > 0 &&
      PQgetisnull(result.get(), 0, 0) == 0) {
    return std::string(PQgetvalue(result.get(), 0, 0));
  }
  return std::nullopt;
}

}  // namespace livestate::mq::detail
