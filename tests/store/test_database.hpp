#pragma once

// A fresh, empty database for one test case: a SQLite file in a new temporary
// directory, or (built with LIVESTATE_TEST_POSTGRES) a new schema on the
// harness's PostgreSQL server. Either is removed when the test case ends.

#include <filesystem>
#include <random>
#include <string>

#ifdef LIVESTATE_TEST_POSTGRES
#include "pg_test_server.hpp"
#endif

namespace livestate::test {

inline std::string random_suffix() {
  static std::mt19937_64 generator{std::random_device{}()};
  return std::to_string(generator());
}

#ifdef LIVESTATE_TEST_POSTGRES
class TestDatabase {
 public:
  TestDatabase() : m_schema(fresh_schema_url()) {}
  [[nodiscard]] std::string url() const { return m_schema.url(); }

 private:
  FreshSchema m_schema;
};
#else
class TestDatabase {
 public:
  TestDatabase() : m_directory(std::filesystem::temp_directory_path() / ("livestate-test-" + random_suffix())) {
    std::filesystem::create_directories(m_directory);
  }
  ~TestDatabase() {
    std::error_code ignored;
    std::filesystem::remove_all(m_directory, ignored);
  }
  TestDatabase(const TestDatabase&) = delete;
  TestDatabase& operator=(const TestDatabase&) = delete;

  [[nodiscard]] std::string url() const { return "sqlite:" + path().string(); }
  [[nodiscard]] std::filesystem::path path() const { return m_directory / "state.db"; }
  [[nodiscard]] const std::filesystem::path& directory() const { return m_directory; }

 private:
  std::filesystem::path m_directory;
};
#endif

}  // namespace livestate::test
