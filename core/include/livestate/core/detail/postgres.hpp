#pragma once

// What livestate's PostgreSQL parts (the connector, the store's backend, the
// command line) share about PostgreSQL without linking libpq: which URLs are
// PostgreSQL's, how to show one without its passwords, how to keep a password
// out of a message libpq wrote about it, and what a SQLSTATE means for the
// caller. Private to livestate (installed only
// because the modules' headers are).

#include <optional>
#include <string>
#include <string_view>

namespace livestate::detail {

/// How libpq will read a connection string.
enum class PostgresUrlKind {
  not_postgres,  ///< neither form (sqlite:…, simple:, anything else)
  uri,           ///< postgresql://… or postgres://…
  keywords,      ///< a conninfo string: "host=… dbname=… password=…"
};

/// libpq's rule: a URI by its prefix, otherwise a conninfo string when it has
/// an '='; "sqlite:" and "simple:" URLs are never PostgreSQL's.
[[nodiscard]] PostgresUrlKind postgres_url_kind(std::string_view url) noexcept;
[[nodiscard]] inline bool is_postgres_url(std::string_view url) noexcept {
  return postgres_url_kind(url) != PostgresUrlKind::not_postgres;
}

/// The URL as it may be shown: every password (`user:PASSWORD@` in a URI, the
/// `password` and `sslpassword` parameters of a URI's query or a conninfo
/// string, in any spelling libpq accepts: percent-encoded names, spaces around
/// `=`, quoted values, backslash escapes, a URI inside `dbname=`) replaced by
/// `***`. A string that libpq could not parse is redacted from where parsing
/// fails to its end, so that a malformed password is hidden too. Another
/// scheme's URL loses its `user:password@` password alone.
[[nodiscard]] std::string redact_postgres_url(std::string_view url);

/// `message` (typically libpq's, which quotes the token or the whole URI it
/// could not parse) with every password of `url` replaced by `***`: each
/// password as written, unquoted and percent-decoded, and any quoted part of
/// the message that is a piece of the URL overlapping a password.
[[nodiscard]] std::string scrub_postgres_secrets(std::string_view message, std::string_view url);

/// livestate's own parameter of a PostgreSQL URL, `transport` (the PostgreSQL
/// connector's transport: `notify`, the default, or `logical`), which libpq
/// doesn't know and refuses: in a URI's query
/// (`postgresql://h/db?transport=logical&sslmode=require`) or as a conninfo
/// word (`host=h dbname=db transport=logical`).
struct PostgresTransportParameter {
  std::string url;                       ///< the URL without it: what libpq is given
  std::optional<std::string> transport;  ///< its value, decoded or unquoted; the last one when given twice
};

/// Takes `transport` out of `url`, every time it is given; any other URL
/// comes back as it is. Every part of livestate that hands a URL to libpq
/// (the connector, the store, the command line) calls it first, so that
/// one URL serves them all.
[[nodiscard]] PostgresTransportParameter take_transport_parameter(std::string_view url);

/// What a SQLSTATE means to a caller deciding what to do next.
enum class SqlStateClass {
  other,
  connection,        ///< class 08, 57P01-57P03: the connection is gone or refused
  serialization,     ///< 40001, 40P01: retry the whole transaction
  unique_violation,  ///< 23505
  read_only,         ///< 25006: a hot standby, a read-only transaction
  undefined_table,   ///< 42P01
  query_canceled,    ///< 57014: statement_timeout or a cancel request
};
[[nodiscard]] SqlStateClass classify_sqlstate(std::string_view sqlstate) noexcept;

}  // namespace livestate::detail
