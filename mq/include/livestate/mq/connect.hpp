#pragma once

#include <memory>
#include <string_view>

#include <boost/asio/any_io_executor.hpp>

#include "livestate/mq/connector.hpp"

namespace livestate::mq {

/// The connector for a URL: "simple:" is the in-process SimpleMQ (which needs
/// no executor: it delivers in the producing thread). PostgreSQL URLs and
/// conninfo strings make the PostgreSQL connector (postgres.hpp) with default
/// options, running on `executor`; it needs livestate::mq_postgres linked
/// (livestate::livestate is), else they throw UnsupportedUrl saying so, as
/// does any other URL.
std::unique_ptr<Connector> connect(std::string_view url, boost::asio::any_io_executor executor);

}  // namespace livestate::mq
