#include <doctest/doctest.h>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "livestate/core/log.hpp"

using namespace livestate;

namespace {
struct Record {
  LogLevel level;
  std::string component;
  std::string message;
};
}  // namespace

TEST_CASE("the level starts as the LIVESTATE_LOG environment variable says") {
  // ctest runs this suite with LIVESTATE_LOG=error.
  REQUIRE(std::getenv("LIVESTATE_LOG") != nullptr);
  CHECK(log_level() == parse_log_level(std::getenv("LIVESTATE_LOG")));
}

TEST_CASE("a log sink receives records at or above the level, and only those") {
  std::vector<Record> records;
  set_log_sink([&](LogLevel level, std::string_view component, std::string_view message) {
    records.push_back({level, std::string(component), std::string(message)});
  });
  set_log_level(LogLevel::warning);
  log(LogLevel::info, "test", "not shown");
  log(LogLevel::error, "test", "shown");
  log(LogLevel::warning, "test", "shown too");
  REQUIRE(records.size() == 2);
  CHECK(records[0].level == LogLevel::error);
  CHECK(records[0].component == "test");
  CHECK(records[0].message == "shown");
  set_log_level(LogLevel::off);
  log(LogLevel::error, "test", "silenced");
  CHECK(records.size() == 2);
  set_log_sink(nullptr);
  set_log_level(LogLevel::warning);
}

TEST_CASE("a sink that throws does not take the logging thread down") {
  set_log_sink([](LogLevel, std::string_view, std::string_view) { throw std::runtime_error("sink broke"); });
  CHECK_NOTHROW(log(LogLevel::error, "test", "into a broken sink"));
  set_log_sink(nullptr);
}

TEST_CASE("log levels have names that LIVESTATE_LOG accepts") {
  for (auto level :
       {LogLevel::trace, LogLevel::debug, LogLevel::info, LogLevel::warning, LogLevel::error, LogLevel::off}) {
    CHECK(parse_log_level(to_string(level)) == level);
  }
  CHECK_FALSE(parse_log_level("loud").has_value());
}
