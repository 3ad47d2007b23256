#include "pq_connection.hpp"

#include <poll.h>

#include <new>

#include "livestate/core/log.hpp"

namespace livestate::mq::detail {

std::string one_line(const char* text) {
  std::string line;
  bool space = false;
  for (const char* c = text; c != nullptr && *c != '\0'; ++c) {
    if (*c == '\n' || *c == '\r' || *c == '\t' || *c == ' ') {
      space = !line.empty();
      continue;
    }
    if (space) line += ' ';
    space = false;
    line += *c;
  }
  return line;
}

std::string redact(std::string_view url) {
  std::string result(url);
  if (const auto scheme = result.find("://"); scheme != std::string::npos) {
    const auto at = result.find('@', scheme + 3);
    const auto colon = result.find(':', scheme + 3);
    const auto slash = result.find('/', scheme + 3);
    if (at != std::string::npos && colon < at && (slash == std::string::npos || at < slash)) {
      result.replace(colon + 1, at - colon - 1, "***");
    }
  }
  for (auto position = result.find("password="); position != std::string::npos;
       position = result.find("password=", position + 1)) {
    auto end = position + 9;
    while (end < result.size() && result[end] != ' ' && result[end] != '&') ++end;
    result.replace(position + 9, end - position - 9, "***");
  }
  return result;
}

// libpq connection parameters: our defaults first, then the user's URL or
// conninfo (expanded from "dbname"), whose own settings win.
Connection start_connection(const std::string& url, const char* application, bool blocking,
                            std::chrono::seconds connect_timeout) {
  const std::string timeout = std::to_string(connect_timeout.count());
  const char* keywords[] = {"keepalives",       "keepalives_idle", "keepalives_interval",
                            "keepalives_count", "connect_timeout", "fallback_application_name",
                            "dbname",           nullptr};
  const char* values[] = {"1", "5", "2", "3", timeout.c_str(), application, url.c_str(), nullptr};
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

std::optional<std::string> run_blocking(PGconn* connection, const std::string& sql,
                                        const std::vector<std::optional<std::string>>& params, bool& in_doubt,
                                        const char* prepared) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& param : params) values.push_back(param ? param->c_str() : nullptr);
  Result result(prepared != nullptr
                    ? PQexecPrepared(connection, prepared, static_cast<int>(values.size()), values.data(), nullptr,
                                     nullptr, 0)
                    : PQexecParams(connection, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                                   nullptr, nullptr, 0));
  const auto status = PQresultStatus(result.get());
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    in_doubt = PQstatus(connection) != CONNECTION_OK;
    const char* sqlstate = PQresultErrorField(result.get(), PG_DIAG_SQLSTATE);
    throw StatementError(one_line(PQerrorMessage(connection)), sqlstate != nullptr ? sqlstate : "");
  }
  if (status == PGRES_TUPLES_OK && PQntuples(result.get()) > 0 && !PQgetisnull(result.get(), 0, 0)) {
    return std::string(PQgetvalue(result.get(), 0, 0));
  }
  return std::nullopt;
}

}  // namespace livestate::mq::detail
