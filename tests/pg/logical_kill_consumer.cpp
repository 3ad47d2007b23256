// A durable consumer of the logical transport as a process of its own, for
// tests/pg/logical_kill.cpp, which kills it with SIGKILL at random moments:
// each message it is given is appended to a file, one line "KEY BODY", with
// one write(2) before its callback returns, so that everything it
// acknowledged is in the file whenever it dies.
//
// usage: logical_kill_consumer URL CHANNEL NAME FILE

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "livestate/livestate.hpp"

int main(int argc, char** argv) {
  using namespace livestate;
  if (argc != 5) {
    std::fprintf(stderr, "usage: logical_kill_consumer URL CHANNEL NAME FILE\n");
    return 2;
  }
  const int out = ::open(argv[4], O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (out < 0) return 1;
  boost::asio::io_context io;
  auto work = boost::asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  mq::PostgresOptions options;
  options.channel = argv[2];
  options.reconnect_initial = std::chrono::milliseconds(20);
  auto connector = mq::make_postgres_connector(argv[1], io.get_executor(), options);
  const auto write_line = [out](const RoutingKey& key, const Json& body) {
    const std::string line = key.str() + " " + body.dump() + "\n";
    if (::write(out, line.data(), line.size()) != static_cast<ssize_t>(line.size())) std::_Exit(1);
  };
  std::unique_ptr<mq::Consumer> consumer;
  // The session of the one killed before may hold the slot until the server
  // sees it gone.
  for (int attempt = 0; !consumer; ++attempt) {
    try {
      consumer = connector->start_consuming(write_line, Filter::parse("#"), std::string(argv[3]));
    } catch (const PersistentNameInUse&) {
      if (attempt > 500) return 1;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));  // until killed
}
