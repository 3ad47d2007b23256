#include "livestate/mq/connect.hpp"

#include <string>

#include "livestate/core/detail/postgres.hpp"
#include "livestate/core/error.hpp"
#include "livestate/mq/simple_mq.hpp"
#include "postgres_registry.hpp"

#include <atomic>

namespace livestate::mq {
namespace {

std::atomic<detail::PostgresConnectorMaker> g_postgres_connector{nullptr};

}  // namespace

void detail::register_postgres_connector(PostgresConnectorMaker maker) noexcept { g_postgres_connector.store(maker); }

detail::PostgresConnectorMaker detail::postgres_connector() noexcept { return g_postgres_connector.load(); }

std::unique_ptr<Connector> connect(std::string_view url, boost::asio::any_io_executor executor) {
  if (url == "simple:" || url == "simple://") return make_simple_mq();
  if (livestate::detail::is_postgres_url(url)) {
    if (const auto maker = detail::postgres_connector()) return maker(url, std::move(executor));
    throw UnsupportedUrl("livestate::mq::connect(\"" + livestate::detail::redact_postgres_url(url) +
                         "\"): this program was linked without the PostgreSQL connector "
                         "(link livestate::mq_postgres or livestate::livestate)");
  }
  throw UnsupportedUrl("livestate::mq::connect(\"" + livestate::detail::redact_postgres_url(url) +
                       "\"): unknown connector URL; expected \"simple:\" or a PostgreSQL URL "
                       "(\"postgresql://user@host:port/db\")");
}

}  // namespace livestate::mq
