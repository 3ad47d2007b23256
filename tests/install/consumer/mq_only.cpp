// Links livestate::mq alone (not the umbrella target): the module's exported
// target must bring livestate::core and its other dependencies with it.
#include <livestate/mq/connect.hpp>
#include <livestate/mq/simple_mq.hpp>

#include <boost/asio/io_context.hpp>

#include <iostream>
#include <vector>

int main() {
  boost::asio::io_context io;
  auto mq = livestate::mq::connect("simple:", io.get_executor());
  std::vector<std::string> received;
  auto consumer = mq->start_consuming(
      [&](const livestate::RoutingKey& key, const livestate::Json&) { received.push_back(key.str()); },
      livestate::Filter::parse("builds.*.finished"));
  mq->produce(livestate::RoutingKey{"builds", "7", "finished"}, {{"buildid", 7}});
  mq->produce(livestate::RoutingKey{"builds", "7", "started"}, {{"buildid", 7}});
  if (received != std::vector<std::string>{"builds.7.finished"}) {
    std::cerr << "mq_only: expected exactly builds.7.finished, got " << received.size() << " message(s)\n";
    return 1;
  }
  std::cout << "mq_only: ok\n";
  return 0;
}
