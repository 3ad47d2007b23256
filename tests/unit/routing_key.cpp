#include <doctest/doctest.h>

#include <unordered_set>

#include "livestate/core/error.hpp"
#include "livestate/core/routing_key.hpp"

using livestate::InvalidRoutingKey;
using livestate::RoutingKey;

TEST_CASE("a routing key keeps its elements in order and prints them dotted") {
  RoutingKey key{"buildrequests", "17", "claimed"};
  CHECK(key.size() == 3);
  CHECK(key[0] == "buildrequests");
  CHECK(key[2] == "claimed");
  CHECK(key.str() == "buildrequests.17.claimed");
  CHECK(std::vector<std::string>(key.begin(), key.end()) == std::vector<std::string>{"buildrequests", "17", "claimed"});
}

TEST_CASE("a dotted routing key parses into the same key as the tuple form") {
  CHECK(RoutingKey::parse("buildrequests.17.claimed") == RoutingKey{"buildrequests", "17", "claimed"});
  CHECK(RoutingKey::parse("a..b") == RoutingKey{"a", "", "b"});
  CHECK(RoutingKey(std::vector<std::string>{"x", "y"}) == RoutingKey{"x", "y"});
}

TEST_CASE("routing keys that differ in any element are different and hash apart") {
  RoutingKey a{"builds", "7", "finished"};
  RoutingKey b{"builds", "8", "finished"};
  CHECK_FALSE(a == b);
  CHECK_FALSE(RoutingKey{"ab", "c"} == RoutingKey{"a", "bc"});
  std::unordered_set<RoutingKey> keys{a, b, RoutingKey{"builds", "7", "finished"}};
  CHECK(keys.size() == 2);
}

TEST_CASE("a non-ASCII routing-key element is refused with a message naming the element") {
  CHECK_THROWS_WITH_AS(RoutingKey({"builders", "caf\xc3\xa9", "started"}),
                       "invalid routing key: element 1 (\"caf\\xc3\\xa9\") is not 7-bit ASCII: "
                       "byte 0xc3 at offset 3; routing-key elements must be 7-bit ASCII",
                       InvalidRoutingKey);
  CHECK_THROWS_AS(RoutingKey::parse("steps.\xff.new"), InvalidRoutingKey);
  CHECK_THROWS_AS(RoutingKey(std::vector<std::string>{"ok", "\x80"}), InvalidRoutingKey);
}

TEST_CASE("InvalidRoutingKey is a livestate::Error") {
  CHECK_THROWS_AS(RoutingKey::parse("\xc3\xa9"), livestate::Error);
}

TEST_CASE("an empty routing key is refused") {
  CHECK_THROWS_WITH_AS(RoutingKey::parse(""), "invalid routing key \"\": a routing key needs at least one element",
                       InvalidRoutingKey);
  CHECK_THROWS_AS(RoutingKey(std::vector<std::string>{}), InvalidRoutingKey);
}

TEST_CASE("every 7-bit character, control characters included, is a valid element byte") {
  std::string all;
  for (int c = 0; c < 0x80; ++c) all += static_cast<char>(c);
  CHECK_NOTHROW(RoutingKey(std::vector<std::string>{all}));
}
