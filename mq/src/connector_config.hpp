#pragma once

// What every part of a PostgreSQL connector knows about it.

#include <string>

#include "livestate/mq/postgres.hpp"
#include "pq_connection.hpp"

namespace livestate::mq::detail {

struct ConnectorConfig {
  std::string url;   ///< as given: may hold a password
  std::string name;  ///< the URL without its password, for messages and logs
  PostgresOptions options;
  std::string origin;  ///< this connector's origin in the wire format

  /// How its connections named `application` are made.
  [[nodiscard]] ConnectionSettings connection(const char* application) const {
    return ConnectionSettings{application, options.connect_timeout, options.statement_timeout};
  }
};

}  // namespace livestate::mq::detail
