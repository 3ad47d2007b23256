#pragma once

// What every part of a PostgreSQL connector knows about it.

#include <string>

#include "livestate/mq/postgres.hpp"
#include "pq_connection.hpp"

namespace livestate::mq::detail {

/// How a connector's messages travel: NOTIFY, or logical messages in the WAL
/// read through logical decoding (the URL's `transport` parameter).
enum class Transport { notify, logical };

struct ConnectorConfig {
  std::string url;   ///< for libpq (without livestate's `transport`): may hold a password
  std::string name;  ///< the URL without its password, for messages and logs
  PostgresOptions options;
  std::string origin;  ///< this connector's origin in the wire format
  Transport transport = Transport::notify;

  /// How its connections named `application` are made.
  [[nodiscard]] ConnectionSettings connection(const char* application) const {
    return ConnectionSettings{application, options.connect_timeout, options.statement_timeout};
  }
};

}  // namespace livestate::mq::detail
