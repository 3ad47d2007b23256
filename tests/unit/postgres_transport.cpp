// livestate's `transport` parameter of a PostgreSQL URL: found in every form
// of URL libpq reads, and taken out so that libpq, which refuses parameters
// it doesn't know, reads the rest as before.

#include <doctest/doctest.h>
#include <libpq-fe.h>

#include <optional>
#include <string>

#include "livestate/core/detail/postgres.hpp"

namespace detail = livestate::detail;

namespace {

bool libpq_reads(const std::string& url) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  if (options != nullptr) PQconninfoFree(options);
  if (error != nullptr) PQfreemem(error);
  return options != nullptr;
}

struct Case {
  std::string url;
  std::string without;
  std::optional<std::string> transport;
};

// Each URL gives what it should, and what is left is a URL libpq reads.
template <std::size_t count>
void check_all(const Case (&cases)[count]) {
  for (const auto& each : cases) {
    CAPTURE(each.url);
    const auto taken = detail::take_transport_parameter(each.url);
    CHECK(taken.url == each.without);
    CHECK(taken.transport == each.transport);
    CHECK(libpq_reads(taken.url));
  }
}

}  // namespace

TEST_CASE("the transport parameter is taken out of a URI's query, wherever it stands") {
  const Case cases[] = {
      {"postgresql://h/db?transport=logical", "postgresql://h/db", "logical"},
      {"postgres://u@h:5432/db?transport=notify", "postgres://u@h:5432/db", "notify"},
      {"postgresql://h/db?sslmode=disable&transport=logical", "postgresql://h/db?sslmode=disable", "logical"},
      {"postgresql://h/db?transport=logical&sslmode=disable", "postgresql://h/db?sslmode=disable", "logical"},
      {"postgresql://h/db?connect_timeout=3&transport=logical&application_name=x",
       "postgresql://h/db?connect_timeout=3&application_name=x", "logical"},
      {"postgresql://h/db?%74ransport=log%69cal", "postgresql://h/db", "logical"},
      {"postgresql://h/db?transport=notify&transport=logical", "postgresql://h/db", "logical"},
      {"postgresql://h/db?sslmode=disable", "postgresql://h/db?sslmode=disable", std::nullopt},
      {"postgresql://h/db", "postgresql://h/db", std::nullopt},
  };
  check_all(cases);
}

TEST_CASE("a '?' inside a URI's password is no query, and its password is kept whole") {
  const std::string url = "postgresql://u:pa?transport=x@h/db";
  const auto taken = detail::take_transport_parameter(url);
  CHECK(taken.url == url);
  CHECK_FALSE(taken.transport.has_value());
  const auto with_query = detail::take_transport_parameter("postgresql://u:pa?ss@h/db?transport=logical");
  CHECK(with_query.url == "postgresql://u:pa?ss@h/db");
  CHECK(with_query.transport == "logical");
}

TEST_CASE("the transport parameter is taken out of a conninfo string, in any spelling libpq reads") {
  const Case cases[] = {
      {"host=h transport=logical dbname=d", "host=h dbname=d", "logical"},
      {"transport = 'logical' host=h", "host=h", "logical"},
      {"host=h dbname=d transport=logical", "host=h dbname=d ", "logical"},
      {"host=h transport=notify transport='logical'", "host=h ", "logical"},
      {"host=h password='transport=logical' port=1", "host=h password='transport=logical' port=1", std::nullopt},
  };
  check_all(cases);
}

TEST_CASE("other URLs keep what looks like a transport parameter") {
  for (const std::string url : {"sqlite:state.db?transport=logical", "simple:", "mysql://h/db?transport=logical"}) {
    const auto taken = detail::take_transport_parameter(url);
    CHECK(taken.url == url);
    CHECK_FALSE(taken.transport.has_value());
  }
}
