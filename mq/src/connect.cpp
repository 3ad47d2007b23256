#include "livestate/mq/connect.hpp"

#include <string>

#include "livestate/core/error.hpp"
#include "livestate/mq/simple_mq.hpp"

namespace livestate::mq {
namespace {

bool is_postgresql(std::string_view url) {
  return url.starts_with("postgresql://") || url.starts_with("postgres://") ||
         url.find('=') != std::string_view::npos;  // a libpq conninfo: "host=… dbname=…"
}

}  // namespace

std::unique_ptr<Connector> connect(std::string_view url, boost::asio::any_io_executor /*executor*/) {
  if (url == "simple:" || url == "simple://") return make_simple_mq();
  if (is_postgresql(url)) {
    throw UnsupportedUrl("livestate::mq::connect(\"" + std::string(url) +
                         "\"): this version of livestate has no PostgreSQL connector yet; "
                         "use \"simple:\" for the in-process connector");
  }
  throw UnsupportedUrl("livestate::mq::connect(\"" + std::string(url) +
                       "\"): unknown connector URL; expected \"simple:\" or a PostgreSQL URL "
                       "(\"postgresql://user@host:port/db\")");
}

}  // namespace livestate::mq
