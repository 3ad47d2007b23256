// A server that takes the connection and never answers (a stopped postmaster,
// a half-dead host): opening a store or producing on it fails within its
// connect timeout, with the error a caller branches on, instead of hanging.

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <string>

#include "livestate/livestate.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// A loopback socket that listens and never accepts: the kernel completes the
// handshake, so libpq sends its startup packet and waits for an answer.
class SilentServer {
 public:
  SilentServer() {
    m_socket = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(m_socket >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(m_socket, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(m_socket, 16) == 0);
    socklen_t length = sizeof address;
    REQUIRE(::getsockname(m_socket, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    m_port = ntohs(address.sin_port);
  }
  SilentServer(const SilentServer&) = delete;
  SilentServer& operator=(const SilentServer&) = delete;
  ~SilentServer() { ::close(m_socket); }

  [[nodiscard]] std::string url() const {
    return "postgresql://someone:s3cret@127.0.0.1:" + std::to_string(m_port) + "/nothing";
  }

 private:
  int m_socket = -1;
  int m_port = 0;
};

}  // namespace

TEST_CASE("opening a store on a server that never answers fails with ConnectionFailed within its connect timeout") {
  SilentServer server;
  auto mq = livestate::mq::make_simple_mq();
  livestate::db::StoreOptions options;
  options.connect_timeout = std::chrono::seconds(2);
  const auto started = Clock::now();
  try {
    (void)livestate::db::Store::open(server.url(), *mq, options);
    FAIL("a store opened on a server that never answered");
  } catch (const livestate::db::ConnectionFailed& error) {
    const std::string what = error.what();
    CHECK(what.find("s3cret") == std::string::npos);
    CHECK(what.find("127.0.0.1") != std::string::npos);
  }
  // Bounded, not timed: a few attempts of 2 s each, never the minutes a hang takes.
  CHECK(Clock::now() - started < std::chrono::seconds(30));
}

TEST_CASE("producing on a server that never answers fails with NotSent within the connector's connect timeout") {
  SilentServer server;
  boost::asio::io_context io;
  livestate::mq::PostgresOptions options;
  options.connect_timeout = std::chrono::seconds(2);
  auto connector = livestate::mq::make_postgres_connector(server.url(), io.get_executor(), options);
  const auto started = Clock::now();
  CHECK_THROWS_AS(connector->produce(livestate::RoutingKey{"a"}, livestate::Json::object()), livestate::mq::NotSent);
  CHECK(Clock::now() - started < std::chrono::seconds(30));
}
