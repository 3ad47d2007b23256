#pragma once

// The PostgreSQL server the suites run against: LIVESTATE_TEST_PG, which
// tests/pg/with-test-postgres.sh sets (tools/run test does it for you).

#include <cstdlib>
#include <stdexcept>
#include <string>

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

}  // namespace livestate::test
