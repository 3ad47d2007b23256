#include <doctest/doctest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "livestate/mq/simple_mq.hpp"

using namespace livestate;

// SimpleMQ routes through an index of filters; these cases check it against
// the definition, Filter::matches, for random filters and keys.

namespace {

std::string element(std::mt19937& random) {
  static const char* pool[] = {"builds", "steps", "7", "8", "", "new", "finished", "x"};
  return pool[random() % 8];
}

Filter random_filter(std::mt19937& random) {
  const auto length = random() % 4;
  std::vector<Filter::Element> elements;
  for (std::size_t i = 0; i < length; ++i) {
    if (random() % 3 == 0) {
      elements.emplace_back(std::nullopt);
    } else {
      elements.emplace_back(element(random));
    }
  }
  const bool any_suffix = length == 0 || random() % 4 == 0;
  return Filter(std::move(elements), any_suffix);
}

RoutingKey random_key(std::mt19937& random) {
  std::vector<std::string> elements(1 + random() % 4);
  for (auto& e : elements) e = element(random);
  return RoutingKey(std::move(elements));
}

}  // namespace

TEST_CASE("every consumer gets exactly the messages its filter matches, as consumers come and go") {
  for (unsigned seed = 1; seed <= 20; ++seed) {
    CAPTURE(seed);
    std::mt19937 random(seed);
    auto mq = mq::make_simple_mq();
    struct Entry {
      Filter filter;
      std::unique_ptr<mq::Consumer> consumer;
      int received = 0;
      int expected = 0;
    };
    std::vector<std::unique_ptr<Entry>> entries;
    bool all_equal = true;
    for (int step = 0; step < 3000; ++step) {
      const auto action = random() % 10;
      if (action < 3) {
        auto entry = std::make_unique<Entry>(Entry{random_filter(random), nullptr});
        Entry* raw = entry.get();
        entry->consumer = mq->start_consuming([raw](const RoutingKey&, const Json&) { ++raw->received; },
                                              entry->filter);
        entries.push_back(std::move(entry));
      } else if (action < 5 && !entries.empty()) {
        auto& entry = entries[random() % entries.size()];
        entry->consumer.reset();
      } else {
        const auto key = random_key(random);
        for (auto& entry : entries) {
          if (entry->consumer && entry->filter.matches(key)) ++entry->expected;
        }
        mq->produce(key, Json::object());
      }
    }
    for (auto& entry : entries) all_equal = all_equal && entry->received == entry->expected;
    CHECK(all_equal);
  }
}
