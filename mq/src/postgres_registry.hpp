#pragma once

// How mq::connect() reaches the PostgreSQL connector without linking libpq:
// livestate::mq_postgres registers it from a static initializer.

#include <memory>
#include <string_view>

#include <boost/asio/any_io_executor.hpp>

namespace livestate::mq {
class Connector;
}

namespace livestate::mq::detail {

using PostgresConnectorMaker = std::unique_ptr<Connector> (*)(std::string_view url,
                                                              boost::asio::any_io_executor executor);
void register_postgres_connector(PostgresConnectorMaker maker) noexcept;
[[nodiscard]] PostgresConnectorMaker postgres_connector() noexcept;

}  // namespace livestate::mq::detail
