// The PostgreSQL URL helper every part of livestate uses: which URLs are
// PostgreSQL's, redaction in every form libpq accepts, and libpq's own
// messages about a URL with its passwords taken out.

#include <doctest/doctest.h>
#include <libpq-fe.h>

#include <memory>
#include <string>
#include <vector>

#include "livestate/core/detail/postgres.hpp"

namespace detail = livestate::detail;

namespace {

struct Secret {
  std::string url;
  std::vector<std::string> hidden;  // no piece of these may be shown
  std::string kept;                 // a part that is no secret and stays
};

// Every spelling of a password that libpq reads, and the malformed ones the
// hostile-input tryout found in messages.
const std::vector<Secret> secrets = {
    {"postgresql://u:TOPSECRET@127.0.0.1:5432/db", {"TOPSECRET"}, "127.0.0.1:5432/db"},
    {"postgres://u:TOPSECRET@h/db", {"TOPSECRET"}, "postgres://u:"},
    {"postgresql://u:50%off@127.0.0.1:55480/x", {"50%off"}, "127.0.0.1:55480/x"},
    {"postgresql://u:TOPSECRET@[::1:55480/x", {"TOPSECRET"}, "[::1:55480/x"},
    {"postgresql://u:pa%2Fss@h/db", {"pa%2Fss", "pa/ss"}, "@h/db"},
    {"postgresql://u:pw1@ss@host/db", {"pw1@ss", "pw1"}, "host/db"},
    {"postgresql://u:pa/ss@host/db", {"pa/ss"}, "host/db"},
    {"postgresql://u:pa?ss@h/db", {"pa?ss"}, "h/db"},
    {"postgresql://h/db?password=TOPSECRET", {"TOPSECRET"}, "h/db?password="},
    {"postgresql://h/db?pass%77ord=TOPSECRET&sslmode=disable", {"TOPSECRET"}, "sslmode=disable"},
    {"postgresql://h/db?sslpassword=TOPSECRET", {"TOPSECRET"}, "h/db"},
    {"postgresql://host?password=a@bcdef", {"a@bcdef"}, "postgresql://host?password="},
    {"postgresql://u:p@h/db?password=q1q1&password=r2r2", {"q1q1", "r2r2"}, "u:"},
    {"host=h password=TOPSECRET dbname=d", {"TOPSECRET"}, "dbname=d"},
    {"host=h password = TOPSECRET dbname=d", {"TOPSECRET"}, "dbname=d"},
    {"host=h password='WRONG SECRET here' dbname=d", {"WRONG", "SECRET", "here"}, "dbname=d"},
    {"host=h password='it\\'s secret' port=1", {"it", "secret"}, "port=1"},
    {"host=h password=a\\ bcd port=1", {"a\\ bcd", "bcd"}, "port=1"},
    {"host=h PASSWORD=TOPSECRET", {"TOPSECRET"}, "host=h"},
    {"host=h dbname='postgresql://u:TOPSECRET@h/d'", {"TOPSECRET"}, "host=h"},
    {"host=h password 'TOPSECRET'", {"TOPSECRET"}, "host=h"},
    {"host=h password='TOPSECRET", {"TOPSECRET"}, "host=h"},
};

// libpq's own verdict on a connection string: its error message, or "".
std::string libpq_parse_error(const std::string& url) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  if (options != nullptr) PQconninfoFree(options);
  std::string message = error != nullptr ? error : "";
  if (error != nullptr) PQfreemem(error);
  return message;
}

// Everything libpq reads as a password, for the vectors it can parse.
std::vector<std::string> libpq_passwords(const std::string& url) {
  char* error = nullptr;
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> options(PQconninfoParse(url.c_str(), &error),
                                                                       &PQconninfoFree);
  if (error != nullptr) PQfreemem(error);
  std::vector<std::string> passwords;
  if (!options) return passwords;
  for (auto* option = options.get(); option->keyword != nullptr; ++option) {
    if (option->val != nullptr && std::string(option->keyword).find("password") != std::string::npos) {
      passwords.emplace_back(option->val);
    }
  }
  return passwords;
}

}  // namespace

TEST_CASE("URLs are told apart the way libpq and livestate read them") {
  using detail::PostgresUrlKind;
  CHECK(detail::postgres_url_kind("postgresql://h/db") == PostgresUrlKind::uri);
  CHECK(detail::postgres_url_kind("postgres://h/db") == PostgresUrlKind::uri);
  CHECK(detail::postgres_url_kind("host=h dbname=d") == PostgresUrlKind::keywords);
  CHECK(detail::postgres_url_kind("sqlite:file:x.db?mode=ro") == PostgresUrlKind::not_postgres);
  CHECK(detail::postgres_url_kind("sqlite::memory:") == PostgresUrlKind::not_postgres);
  CHECK(detail::postgres_url_kind("simple:") == PostgresUrlKind::not_postgres);
  CHECK(detail::postgres_url_kind("mysql://h/db") == PostgresUrlKind::not_postgres);
  CHECK(detail::postgres_url_kind("") == PostgresUrlKind::not_postgres);
}

TEST_CASE("a redacted URL shows no password, in any form libpq accepts or refuses") {
  for (const auto& secret : secrets) {
    const auto redacted = detail::redact_postgres_url(secret.url);
    INFO(secret.url, " -> ", redacted);
    for (const auto& hidden : secret.hidden) CHECK(redacted.find(hidden) == std::string::npos);
    for (const auto& password : libpq_passwords(secret.url)) CHECK(redacted.find(password) == std::string::npos);
    CHECK(redacted.find(secret.kept) != std::string::npos);
    CHECK(redacted.find("***") != std::string::npos);
  }
}

TEST_CASE("libpq's message about a URL it refuses keeps the reason and loses the password") {
  int refused = 0;
  for (const auto& secret : secrets) {
    const auto message = libpq_parse_error(secret.url);
    if (message.empty()) continue;
    ++refused;
    const auto scrubbed = detail::scrub_postgres_secrets(message, secret.url);
    INFO(secret.url, ": ", message, " -> ", scrubbed);
    for (const auto& hidden : secret.hidden) CHECK(scrubbed.find(hidden) == std::string::npos);
    CHECK(scrubbed.size() > 10);  // the reason is still there
  }
  CHECK(refused >= 4);  // the malformed vectors are refused by libpq, as the tryout found
  const std::string message = R"(invalid percent-encoded token: "50%off")";
  CHECK(detail::scrub_postgres_secrets(message, "postgresql://u:50%off@h/x") ==
        R"(invalid percent-encoded token: "***")");
}

TEST_CASE("a message that quotes no secret is left as it is") {
  const std::string message = R"(connection to server at "127.0.0.1", port 1 failed: Connection refused)";
  CHECK(detail::scrub_postgres_secrets(message, "postgresql://u:TOPSECRET@127.0.0.1:1/db") == message);
  CHECK(detail::scrub_postgres_secrets(message, "postgresql://u@127.0.0.1:1/db") == message);
  CHECK(detail::redact_postgres_url("postgresql://u@h:1/db?sslmode=disable") ==
        "postgresql://u@h:1/db?sslmode=disable");
  CHECK(detail::redact_postgres_url("sqlite:/tmp/password=x.db") == "sqlite:/tmp/password=x.db");
  CHECK(detail::redact_postgres_url("mysql://u:TOPSECRET@h/db") == "mysql://u:***@h/db");
}

TEST_CASE("a message that repeats the password unquoted loses it too") {
  CHECK(detail::scrub_postgres_secrets("could not use TOPSECRET here", "host=h password=TOPSECRET") ==
        "could not use *** here");
  CHECK(detail::scrub_postgres_secrets("x pa/ss y", "postgresql://u:pa%2Fss@h/db") == "x *** y");
}

TEST_CASE("SQLSTATEs are classed by what the caller does next") {
  using detail::SqlStateClass;
  CHECK(detail::classify_sqlstate("08006") == SqlStateClass::connection);
  CHECK(detail::classify_sqlstate("57P01") == SqlStateClass::connection);
  CHECK(detail::classify_sqlstate("40001") == SqlStateClass::serialization);
  CHECK(detail::classify_sqlstate("40P01") == SqlStateClass::serialization);
  CHECK(detail::classify_sqlstate("23505") == SqlStateClass::unique_violation);
  CHECK(detail::classify_sqlstate("25006") == SqlStateClass::read_only);
  CHECK(detail::classify_sqlstate("42P01") == SqlStateClass::undefined_table);
  CHECK(detail::classify_sqlstate("57014") == SqlStateClass::query_canceled);
  CHECK(detail::classify_sqlstate("42601") == SqlStateClass::other);
  CHECK(detail::classify_sqlstate("") == SqlStateClass::other);
}
