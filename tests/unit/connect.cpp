#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>

#include "livestate/core/error.hpp"
#include "livestate/mq/connect.hpp"
#include "livestate/mq/postgres.hpp"

using namespace livestate;

TEST_CASE("connect(\"simple:\") makes an in-process connector") {
  boost::asio::io_context io;
  auto mq = mq::connect("simple:", io.get_executor());
  int calls = 0;
  auto consumer = mq->start_consuming([&](const RoutingKey&, const Json&) { ++calls; }, Filter::parse("x"));
  mq->produce(RoutingKey{"x"}, Json::object());
  CHECK(calls == 1);
}

TEST_CASE("connect refuses a URL it does not know, saying what it expects") {
  boost::asio::io_context io;
  CHECK_THROWS_WITH_AS(mq::connect("amqp://localhost", io.get_executor()),
                       "livestate::mq::connect(\"amqp://localhost\"): unknown connector URL; expected "
                       "\"simple:\" or a PostgreSQL URL (\"postgresql://user@host:port/db\")",
                       UnsupportedUrl);
}

TEST_CASE("connect makes the PostgreSQL connector for a PostgreSQL URL or conninfo string") {
  boost::asio::io_context io;  // never run: nothing connects
  auto by_url = mq::connect("postgresql://postgres@127.0.0.1:5432/db", io.get_executor());
  CHECK(dynamic_cast<mq::PostgresConnector*>(by_url.get()) != nullptr);
  auto by_conninfo = mq::connect("host=127.0.0.1 dbname=db", io.get_executor());
  CHECK(dynamic_cast<mq::PostgresConnector*>(by_conninfo.get()) != nullptr);
}
