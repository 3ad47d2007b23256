// The README's example: produce Buildbot-shaped messages, consume them by filter.
#include <livestate/livestate.hpp>

#include <boost/asio/use_future.hpp>
#include <iostream>

int main() {
  using namespace livestate;
  auto mq = mq::make_simple_mq();

  // Every claimed build request, whatever its id.
  auto claims = mq->start_consuming(
      [](const RoutingKey& key, const Json& body) {
        std::cout << key.str() << " by master " << body["claimed_by_masterid"] << "\n";
      },
      Filter::parse("buildrequests.*.claimed"));

  // A durable consumer: what it misses while stopped is delivered when it resumes.
  int seen = 0;
  auto count = [&](const RoutingKey&, const Json&) { ++seen; };
  auto audit = mq->start_consuming(count, Filter::parse("buildrequests.#"), "audit");
  audit->stop_consuming();

  mq->produce(RoutingKey{"buildrequests", "17", "claimed"}, {{"buildrequestid", 17}, {"claimed_by_masterid", 1}});

  audit = mq->start_consuming(count, Filter::parse("buildrequests.#"), "audit");  // gets the claim now
  std::cout << "audit caught up on " << seen << " message(s)\n";

  // Buildbot's waitUntilEvent: subscribe, check, else wait for the next match.
  auto done = mq->async_wait_until_event(
      Filter::parse("buildsets.1.complete"), [] { return false; }, boost::asio::use_future);
  mq->produce(RoutingKey{"buildsets", "1", "complete"}, {{"bsid", 1}, {"results", 0}});
  std::cout << "buildset 1 complete: " << done.get()->body.dump() << "\n";
  return seen == 1 ? 0 : 1;
}
