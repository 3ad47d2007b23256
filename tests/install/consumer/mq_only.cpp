// Links livestate::mq alone.
#include <livestate/mq/simple_mq.hpp>

int main() {
  auto mq = livestate::mq::make_simple_mq();
  int calls = 0;
  auto consumer = mq->start_consuming([&](const livestate::RoutingKey&, const livestate::Json&) { ++calls; },
                                      livestate::Filter::parse("builds.#"));
  mq->produce(livestate::RoutingKey{"builds", "1", "new"}, {{"buildid", 1}});
  return calls == 1 ? 0 : 1;
}
