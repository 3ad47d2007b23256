// The PostgreSQL wire format v1: encoding packs messages into as few payloads
// as fit; decoding keeps every valid message and refuses the rest, each with
// its reason, without ever crashing or throwing.

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "livestate/core/wire.hpp"

namespace {

using livestate::Json;
using livestate::RoutingKey;
namespace wire = livestate::wire;

wire::Outgoing outgoing(const RoutingKey& key, const Json& body, std::uint64_t sequence) {
  return wire::Outgoing{&key, &body, 0, sequence};
}

bool has_problem(const wire::Decoded& decoded, wire::ProblemKind kind) {
  for (const auto& problem : decoded.problems) {
    if (problem.kind == kind) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("a message encoded and decoded comes back with its key, body, origin and sequence") {
  const RoutingKey key{"buildrequests", "17", "claimed"};
  const Json body{{"buildrequestid", 17}, {"text", "quote \" backslash \\ unicode \xe2\x9c\x93 '); DROP TABLE x; --"}};
  const auto message = outgoing(key, body, 42);
  const auto payloads = wire::encode("origin-1", std::span(&message, 1));
  REQUIRE(payloads.size() == 1);
  CHECK(payloads[0].size() == wire::encoded_size("origin-1", message));
  const auto decoded = wire::decode(payloads[0]);
  CHECK(decoded.problems.empty());
  CHECK(decoded.origin == "origin-1");
  REQUIRE(decoded.messages.size() == 1);
  CHECK(decoded.messages[0].key == key);
  CHECK(decoded.messages[0].body == body);
  CHECK(decoded.messages[0].sequence == 42u);
  CHECK_FALSE(decoded.messages[0].reference.has_value());
}

TEST_CASE("many messages share as few payloads as fit, each under the limit, in order") {
  std::vector<RoutingKey> keys;
  std::vector<Json> bodies;
  for (int i = 0; i < 1000; ++i) {
    keys.push_back(RoutingKey{"builds", std::to_string(i), "update"});
    bodies.push_back(Json{{"buildid", i}, {"state_string", "building step " + std::to_string(i)}});
  }
  std::vector<wire::Outgoing> messages;
  std::size_t total = 0;
  for (int i = 0; i < 1000; ++i) {
    messages.push_back(outgoing(keys[static_cast<std::size_t>(i)], bodies[static_cast<std::size_t>(i)], static_cast<std::uint64_t>(i + 1)));
    total += wire::encoded_size("o", messages.back());
  }
  const auto payloads = wire::encode("o", messages);
  CHECK(payloads.size() < 30);
  CHECK(payloads.size() >= total / wire::max_payload_bytes / 4);
  std::uint64_t expected = 1;
  for (const auto& payload : payloads) {
    CHECK(payload.size() <= wire::max_payload_bytes);
    for (const auto& message : wire::decode(payload).messages) CHECK(*message.sequence == expected++);
  }
  CHECK(expected == 1001);
}

TEST_CASE("a message that alone exceeds the limit is refused with length_error; one at the limit fits") {
  const RoutingKey key{"logs", "1", "append"};
  Json body{{"text", std::string(100, 'x')}};
  const auto message = outgoing(key, body, 1);
  const auto size = wire::encoded_size("o", message);
  CHECK(wire::encode("o", std::span(&message, 1), size).size() == 1);
  CHECK_THROWS_AS((void)wire::encode("o", std::span(&message, 1), size - 1), std::length_error);
}

TEST_CASE("a body sent by reference travels as r") {
  const RoutingKey key{"logs", "1", "append"};
  wire::Outgoing message{&key, nullptr, 1234, 7};
  const auto payloads = wire::encode("o", std::span(&message, 1));
  const auto decoded = wire::decode(payloads.at(0));
  REQUIRE(decoded.messages.size() == 1);
  CHECK(decoded.messages[0].reference == 1234);
  CHECK(decoded.messages[0].body.is_null());
}

TEST_CASE("the smallest foreign payload, as psql would send it, decodes without origin or sequence") {
  const auto decoded = wire::decode(R"({"v":1,"m":[{"k":["builds","7","finished"],"b":{"buildid":7}}]})");
  CHECK(decoded.problems.empty());
  CHECK_FALSE(decoded.origin.has_value());
  REQUIRE(decoded.messages.size() == 1);
  CHECK(decoded.messages[0].key.str() == "builds.7.finished");
  CHECK_FALSE(decoded.messages[0].sequence.has_value());
}

TEST_CASE("each kind of bad payload is refused with its reason") {
  using wire::ProblemKind;
  const std::vector<std::pair<std::string, ProblemKind>> cases{
      {"not json", ProblemKind::not_json},
      {"[1,2]", ProblemKind::not_an_envelope},
      {R"({"v":1})", ProblemKind::not_an_envelope},
      {R"({"v":2,"m":[]})", ProblemKind::unsupported_version},
      {R"({"m":[]})", ProblemKind::unsupported_version},
      {R"({"v":1,"o":5,"m":[]})", ProblemKind::bad_origin},
      {R"({"v":1,"m":[5]})", ProblemKind::bad_message},
      {R"({"v":1,"m":[{"b":{}}]})", ProblemKind::bad_message},
      {R"({"v":1,"m":[{"k":["a"]}]})", ProblemKind::bad_message},
      {R"({"v":1,"m":[{"k":["a"],"b":{},"r":1}]})", ProblemKind::bad_message},
      {R"({"v":1,"m":[{"k":"a.b","b":{}}]})", ProblemKind::bad_key},
      {R"({"v":1,"m":[{"k":["caf\u00e9"],"b":{}}]})", ProblemKind::bad_key},
      {R"({"v":1,"m":[{"k":[1],"b":{}}]})", ProblemKind::bad_key},
      {R"({"v":1,"m":[{"k":["a"],"b":{},"s":-1}]})", ProblemKind::bad_sequence},
      {R"({"v":1,"m":[{"k":["a"],"b":{},"s":"1"}]})", ProblemKind::bad_sequence},
      {R"({"v":1,"m":[{"k":["a"],"r":0}]})", ProblemKind::bad_reference},
      {R"({"v":1,"m":[{"k":["a"],"r":18446744073709551615}]})", ProblemKind::bad_reference},
      {std::string(5000, '['), ProblemKind::too_deep},
  };
  for (const auto& [payload, kind] : cases) {
    CAPTURE(payload.substr(0, 80));
    const auto decoded = wire::decode(payload);
    CHECK(decoded.messages.empty());
    CHECK(has_problem(decoded, kind));
    for (const auto& problem : decoded.problems) CHECK(problem.detail.size() <= 200);
  }
}

TEST_CASE("a bad entry is dropped while the valid entries of the same payload are kept, in order") {
  const auto decoded = wire::decode(
      R"({"v":1,"o":"x","m":[{"k":["a"],"b":{"n":1}},{"k":[],"b":{}},{"k":["b"],"b":{"n":2},"unknown":true}],"extra":1})");
  REQUIRE(decoded.messages.size() == 2);
  CHECK(decoded.messages[0].key.str() == "a");
  CHECK(decoded.messages[1].key.str() == "b");
  CHECK(decoded.problems.size() == 1);
}

TEST_CASE("random mutations of valid payloads never crash or throw") {
  const RoutingKey key{"buildrequests", "1", "claimed"};
  const Json body{{"a", {1, 2, {{"b", nullptr}}}}, {"s", "text"}};
  const auto message = outgoing(key, body, 9);
  const std::string valid = wire::encode("origin", std::span(&message, 1)).at(0);
  const auto seed = std::random_device{}();
  CAPTURE(seed);
  std::mt19937 random(seed);
  for (int i = 0; i < 20000; ++i) {
    std::string payload = valid;
    const int edits = 1 + static_cast<int>(random() % 4);
    for (int e = 0; e < edits && !payload.empty(); ++e) {
      const auto at = random() % payload.size();
      switch (random() % 3) {
        case 0: payload[at] = static_cast<char>(random() % 256); break;
        case 1: payload.erase(at, 1 + random() % 8); break;
        default: payload.insert(at, 1, "[]{}\",:0\\"[random() % 10]); break;
      }
    }
    CHECK_NOTHROW((void)wire::decode(payload));
  }
}
