#pragma once

// The PostgreSQL server the suites run against: LIVESTATE_TEST_PG, which
// tests/pg/with-test-postgres.sh sets (tools/run test does it for you).

#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>

#include <pqxx/pqxx>

namespace livestate::test {

inline std::string test_server_url() {
  const char* url = std::getenv("LIVESTATE_TEST_PG");
  if (url == nullptr || *url == '\0') {
    throw std::runtime_error(
        "LIVESTATE_TEST_PG is not set: run PostgreSQL tests through tests/pg/with-test-postgres.sh "
        "(e.g. tests/pg/with-test-postgres.sh ctest --test-dir build -L pg) or tools/run test");
  }
  return url;
}

/// Whether the connector suites run on the logical transport:
/// LIVESTATE_TEST_TRANSPORT=logical (CTest registers each of them twice,
/// pg_NAME on NOTIFY and pg_logical_NAME on logical decoding).
inline bool logical_transport() {
  const char* transport = std::getenv("LIVESTATE_TEST_TRANSPORT");
  return transport != nullptr && std::string(transport) == "logical";
}

/// A name for a throwaway schema or database: `prefix` and 16 hex digits.
inline std::string random_name(const char* prefix) {
  std::random_device random;
  std::uniform_int_distribution<unsigned long long> digits;
  char name[40];
  std::snprintf(name, sizeof name, "%s_%016llx", prefix, digits(random));
  return name;
}

/// Runs one statement on the test server, outside any transaction.
inline void run_on_server(const std::string& sql) {
  pqxx::connection connection(test_server_url());
  pqxx::nontransaction work(connection);
  work.exec(sql);
}

/// `url` with libpq connection parameters added: as URL query parameters
/// (values already percent-encoded by the caller) or, for a conninfo string,
/// as `key=value` words (values already quoted where needed).
inline std::string with_connection_parameters(std::string url, const std::string& url_query,
                                              const std::string& conninfo_words) {
  if (url.find("://") == std::string::npos) return url + " " + conninfo_words;
  return url + (url.find('?') == std::string::npos ? "?" : "&") + url_query;
}

/// `url` as a connector of the suite's transport is given it: with
/// transport=logical on the logical one (the store takes it too).
inline std::string connector_url(const std::string& url) {
  return logical_transport() ? with_connection_parameters(url, "transport=logical", "transport=logical") : url;
}

/// A PostgreSQL schema of its own on the test server, for one test case:
/// created empty, dropped (with everything in it) by the destructor.
///
/// url() is the test server's URL with the schema as the search_path and as
/// the application_name, so that a store opened on it creates its tables
/// there and its connections can be found (terminate_connections()).
/// The destructor ends those connections first, so that a store left open
/// (or a transaction holding locks) can't keep the schema from being dropped.
class FreshSchema {
 public:
  FreshSchema() : m_name(random_name("t")) {
    run_on_server("CREATE SCHEMA " + m_name);
    m_url = url_on(test_server_url());
  }
  FreshSchema(const FreshSchema&) = delete;
  FreshSchema& operator=(const FreshSchema&) = delete;
  ~FreshSchema() {
    try {
      terminate_connections();
      run_on_server("DROP SCHEMA IF EXISTS " + m_name + " CASCADE");
    } catch (...) {
      // A schema left behind dies with the throwaway server.
    }
  }

  [[nodiscard]] const std::string& url() const noexcept { return m_url; }
  /// The same on another server (a replica of the test server, say).
  [[nodiscard]] std::string url_on(const std::string& server_url) const {
    return with_connection_parameters(server_url, "options=-csearch_path%3D" + m_name + "&application_name=" + m_name,
                                      "options='-csearch_path=" + m_name + "' application_name=" + m_name);
  }
  /// The schema's name ("t_" and 16 hex digits), also the connections' application_name.
  [[nodiscard]] const std::string& name() const noexcept { return m_name; }

  /// Ends every server connection opened with url(), as a server restart or
  /// an administrator would, and waits (up to 5 s each) until they are gone;
  /// returns how many there were. (pg_terminate_backend's wait needs
  /// PostgreSQL 14 or later.)
  int terminate_connections() const {
    pqxx::connection connection(test_server_url());
    pqxx::nontransaction work(connection);
    const auto result = work.exec_params(
        "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
        "WHERE application_name = $1 AND pid <> pg_backend_pid()",
        m_name);
    return result[0][0].as<int>();
  }

 private:
  std::string m_name;
  std::string m_url;
};

/// A fresh schema for one test case; see FreshSchema.
inline FreshSchema fresh_schema_url() { return FreshSchema(); }

}  // namespace livestate::test
