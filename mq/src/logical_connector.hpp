#pragma once

// The PostgreSQL connector on its logical transport (`transport=logical`):
// made by make_postgres_connector once it has read the URL.

#include <memory>

#include <boost/asio/any_io_executor.hpp>

#include "connector_config.hpp"
#include "livestate/mq/postgres.hpp"

namespace livestate::mq::detail {

[[nodiscard]] std::unique_ptr<PostgresConnector> make_logical_connector(std::shared_ptr<const ConnectorConfig> config,
                                                                        boost::asio::any_io_executor executor);

}  // namespace livestate::mq::detail
