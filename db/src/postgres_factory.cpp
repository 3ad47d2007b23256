// Opening the PostgreSQL backend's sessions: the URL read as libpq reads it,
// livestate's connection defaults under the user's own, connecting, and
// registering the backend with livestate::db when livestate::db_postgres is
// linked. The session itself: postgres_session.cpp.

#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include "livestate/core/detail/postgres.hpp"
#include "livestate/core/detail/text.hpp"
#include "livestate/core/error.hpp"
#include "postgres_session.hpp"

namespace livestate::db::detail {
namespace {

using ::livestate::detail::one_line;

// The user's connection parameters as libpq reads them, with livestate's
// defaults where the user set none: a name in pg_stat_activity, a bound on
// connecting, and TCP keepalives so that a vanished host breaks the
// connection instead of leaving a call waiting on it forever. Written back as
// a conninfo string for PQconnectdb. A URL libpq refuses is
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
    PgConnection connection{PQconnectdb(m_conninfo.c_str())};
    if (!connection) throw std::bad_alloc();
    if (PQstatus(connection.get()) != CONNECTION_OK) {
      // libpq's reasons don't quote passwords once the URL has parsed; scrubbed anyway.
      throw SessionFailure(FailureKind::connection,
                           "cannot connect to " + m_name + ": " +
                               ::livestate::detail::scrub_postgres_secrets(one_line(PQerrorMessage(connection.get())),
                                                                           m_conninfo));
    }
    return make_postgres_session(std::move(connection), m_name, m_read_only, m_watchdog, m_statement_timeout);
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
