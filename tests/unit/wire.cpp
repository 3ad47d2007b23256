// The PostgreSQL wire format v1: encoding packs messages into as few payloads
// as fit; decoding keeps every valid message and refuses the rest, each with
// its reason, without ever crashing or throwing.

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "livestate/core/wire.hpp"

namespace {

using livestate::Json;
using livestate::RoutingKey;
namespace wire = livestate::wire;
using wire::ProblemKind;

wire::Outgoing outgoing(const RoutingKey& key, const Json& body, std::uint64_t sequence = 0) {
  return wire::Outgoing{&key, &body, 0, sequence};
}

wire::Outgoing by_reference(const RoutingKey& key, std::int64_t reference, std::uint64_t sequence = 0) {
  return wire::Outgoing{&key, nullptr, reference, sequence};
}

std::vector<std::string> encode_one(std::string_view origin, const wire::Outgoing& message,
                                    std::size_t limit = wire::max_payload_bytes) {
  return wire::encode(origin, std::span(&message, 1), limit);
}

// Decodes one payload that must be valid.
wire::Decoded decode_valid(std::string_view payload) {
  auto decoded = wire::decode(payload);
  for (const auto& problem : decoded.problems) FAIL_CHECK(problem.detail);
  return decoded;
}

// The envelope around the entries when the origin is "o".
const std::string envelope_head = R"({"v":1,"o":"o","m":[)";
const std::string envelope_tail = "]}";

bool is_one_printable_line(const std::string& text) {
  if (text.size() > wire::Problem::max_detail_bytes) return false;
  for (const char c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) return false;
  }
  return true;
}

bool is_payload_level(ProblemKind kind) {
  return kind == ProblemKind::not_json || kind == ProblemKind::not_an_envelope ||
         kind == ProblemKind::unsupported_version || kind == ProblemKind::bad_origin || kind == ProblemKind::too_deep;
}

constexpr ProblemKind all_problem_kinds[] = {
    ProblemKind::not_json,     ProblemKind::not_an_envelope, ProblemKind::unsupported_version,
    ProblemKind::bad_origin,   ProblemKind::bad_message,     ProblemKind::bad_key,
    ProblemKind::bad_sequence, ProblemKind::bad_reference,   ProblemKind::too_deep,
};

// A seed from LIVESTATE_TEST_SEED (to replay a failure) or a fresh one.
unsigned test_seed() {
  if (const char* text = std::getenv("LIVESTATE_TEST_SEED")) {
    return static_cast<unsigned>(std::strtoul(text, nullptr, 10));
  }
  return std::random_device{}();
}

}  // namespace

// ---------------------------------------------------------------------------
// Round trips

TEST_CASE("a message encoded and decoded comes back with its key, body, origin and sequence") {
  const RoutingKey key{"buildrequests", "17", "claimed"};
  const Json body{{"buildrequestid", 17}, {"claimed_at", 1700000000.5}, {"masterid", nullptr}};
  const auto payloads = encode_one("master-1", outgoing(key, body, 42));
  REQUIRE(payloads.size() == 1);
  CHECK(payloads[0] ==
        R"({"v":1,"o":"master-1","m":[{"s":42,"k":["buildrequests","17","claimed"],"b":)" + body.dump() + "}]}");

  const auto decoded = decode_valid(payloads[0]);
  CHECK(decoded.origin == "master-1");
  REQUIRE(decoded.messages.size() == 1);
  CHECK(decoded.messages[0].key == key);
  CHECK(decoded.messages[0].body == body);
  CHECK(decoded.messages[0].sequence == 42u);
  CHECK_FALSE(decoded.messages[0].reference.has_value());
}

TEST_CASE("a body given already serialized is sent byte for byte as encode would have written it") {
  const RoutingKey key{"builds", "7", "finished"};
  const Json body = {{"buildid", 7}, {"state_string", "caf\u00e9 \"done\""}, {"results", nullptr}};
  const std::string text = body.dump(-1, ' ', false, Json::error_handler_t::replace);
  wire::Outgoing plain{&key, &body, 0, 3};
  wire::Outgoing given{&key, &body, 0, 3, &text};
  CHECK(wire::encode("m", std::span(&given, 1)) == wire::encode("m", std::span(&plain, 1)));
  CHECK(wire::encoded_size("m", given) == wire::encoded_size("m", plain));
  const auto decoded = wire::decode(wire::encode("m", std::span(&given, 1)).at(0));
  REQUIRE(decoded.messages.size() == 1);
  CHECK(decoded.messages[0].body == body);
}

TEST_CASE("many messages come back in order with their keys, bodies, references and sequences") {
  // Keys with empty elements and every ASCII character JSON must escape.
  const std::vector<RoutingKey> keys{
      RoutingKey{"builds", "7", "finished"},
      RoutingKey{"logs", "", "append"},
      RoutingKey{"odd", "quote\" backslash\\ newline\n tab\t bell\x07 del\x7f", ""},
      RoutingKey{"x"},
      RoutingKey{"changes", "1", "new"},
  };
  const std::vector<Json> bodies{
      Json{{"buildid", 7}, {"results", 0}},
      Json::object(),
      Json{{"nested", {{"list", {1, "two", 3.5, nullptr, true}}}}},
      Json::array({1, 2, 3}),  // not what livestate produces, but carried as given
      Json{{"big", std::numeric_limits<std::uint64_t>::max()}, {"negative", std::numeric_limits<std::int64_t>::min()}},
  };
  std::vector<wire::Outgoing> messages{
      outgoing(keys[0], bodies[0], 1),
      outgoing(keys[1], bodies[1], 2),
      by_reference(keys[2], std::numeric_limits<std::int64_t>::max(), 3),
      outgoing(keys[3], bodies[3], 0),  // no sequence
      outgoing(keys[4], bodies[4], std::numeric_limits<std::uint64_t>::max()),
      outgoing(keys[2], bodies[2], 6),
      by_reference(keys[3], 1),
  };

  for (const std::string origin : {"master-\"1\"\n", "caf\xc3\xa9", ""}) {
    CAPTURE(origin);
    const auto payloads = wire::encode(origin, messages);
    REQUIRE(payloads.size() == 1);
    const auto decoded = decode_valid(payloads[0]);
    if (origin.empty()) {
      CHECK_FALSE(decoded.origin.has_value());
    } else {
      CHECK(decoded.origin == origin);
    }
    REQUIRE(decoded.messages.size() == messages.size());
    for (std::size_t i = 0; i < messages.size(); ++i) {
      CAPTURE(i);
      const auto& got = decoded.messages[i];
      CHECK(got.key == *messages[i].key);
      if (messages[i].body != nullptr) {
        CHECK(got.body == *messages[i].body);
        CHECK_FALSE(got.reference.has_value());
      } else {
        CHECK(got.body.is_null());
        CHECK(got.reference == messages[i].reference);
      }
      if (messages[i].sequence == 0) {
        CHECK_FALSE(got.sequence.has_value());
      } else {
        CHECK(got.sequence == messages[i].sequence);
      }
    }
  }
}

TEST_CASE("bodies with unicode, quotes, backslashes and SQL-looking text round-trip verbatim") {
  const RoutingKey key{"builds", "1", "update"};
  const Json body{
      {"unicode", "\xe2\x9c\x93 caf\xc3\xa9 \xf0\x9f\x9a\x80 \xe6\x97\xa5\xe6\x9c\xac"},
      {"quotes", R"(she said "hi" and 'bye')"},
      {"backslashes", R"(C:\path\to\file \n is not a newline \\)"},
      {"sql", "'); DROP TABLE livestate_mq_bodies; -- $1 $$ \\x00"},
      {"control", std::string("nul\0 bell\x07 newline\n", 20)},
      {"\"key with quotes\"", "and \\u0041 as text"},
  };
  const auto payloads = encode_one("o", outgoing(key, body, 1));
  REQUIRE(payloads.size() == 1);
  // UTF-8 travels as is, not as \u escapes.
  CHECK(payloads[0].find("\xe2\x9c\x93 caf\xc3\xa9") != std::string::npos);
  const auto decoded = decode_valid(payloads[0]);
  REQUIRE(decoded.messages.size() == 1);
  CHECK(decoded.messages[0].body == body);
  CHECK(decoded.messages[0].body.dump() == body.dump());
}

TEST_CASE("a body string with invalid UTF-8 is sent with U+FFFD in place of the bad bytes, not refused") {
  const RoutingKey key{"logs", "1", "append"};
  const Json body{{"text", "ok \xff\xfe then \xc3"}};
  const auto message = outgoing(key, body, 1);
  const auto payloads = encode_one("o", message);
  REQUIRE(payloads.size() == 1);
  CHECK(payloads[0].size() == wire::encoded_size("o", message));
  const auto decoded = decode_valid(payloads[0]);
  REQUIRE(decoded.messages.size() == 1);
  const auto text = decoded.messages[0].body.at("text").get<std::string>();
  CHECK(text.starts_with("ok "));
  CHECK(text.find("\xef\xbf\xbd") != std::string::npos);  // U+FFFD
  CHECK(text.find('\xff') == std::string::npos);
}

// ---------------------------------------------------------------------------
// Packing

TEST_CASE("a thousand small messages fill few payloads, each within the limit, in order across payloads") {
  std::vector<RoutingKey> keys;
  std::vector<Json> bodies;
  for (int i = 0; i < 1000; ++i) {
    keys.push_back(RoutingKey{"builds", std::to_string(i), "update"});
    bodies.push_back(Json{{"buildid", i}, {"state_string", "building step " + std::to_string(i)}});
  }
  std::vector<wire::Outgoing> messages;
  std::size_t entry_bytes = 0;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    messages.push_back(outgoing(keys[i], bodies[i], i + 1));
    entry_bytes += wire::encoded_size("o", messages.back()) - envelope_head.size() - envelope_tail.size() + 1;
  }
  const auto payloads = wire::encode("o", messages);
  // Every payload but the last is nearly full.
  const auto per_payload = wire::max_payload_bytes - envelope_head.size() - envelope_tail.size();
  CHECK(payloads.size() <= entry_bytes / (per_payload - 100) + 1);
  CHECK(payloads.size() > 1);

  std::uint64_t expected = 1;
  for (const auto& payload : payloads) {
    CHECK(payload.size() <= wire::max_payload_bytes);
    for (const auto& message : decode_valid(payload).messages) {
      CHECK(message.sequence == expected);
      CHECK(message.key == keys[expected - 1]);
      CHECK(message.body == bodies[expected - 1]);
      ++expected;
    }
  }
  CHECK(expected == 1001);
}

TEST_CASE("messages of varied sizes make exactly as many payloads as a greedy fill needs, each as full") {
  std::mt19937 random(7);
  std::vector<RoutingKey> keys;
  std::vector<Json> bodies;
  for (int i = 0; i < 300; ++i) {
    keys.push_back(RoutingKey{"logs", std::to_string(i), "append"});
    bodies.push_back(Json{{"text", std::string(random() % 900, 'x')}});
  }
  std::vector<wire::Outgoing> messages;
  for (std::size_t i = 0; i < keys.size(); ++i) messages.push_back(outgoing(keys[i], bodies[i], i + 1));

  for (const std::size_t limit : {std::size_t{1000}, std::size_t{2500}, wire::max_payload_bytes, std::size_t{100000}}) {
    CAPTURE(limit);
    // The greedy fill, from encoded_size alone: a payload takes the next
    // message while it fits (one comma between entries).
    std::vector<std::size_t> expected_sizes;
    for (const auto& message : messages) {
      const auto alone = wire::encoded_size("o", message);
      const auto entry = alone - envelope_head.size() - envelope_tail.size();
      if (!expected_sizes.empty() && expected_sizes.back() + 1 + entry <= limit) {
        expected_sizes.back() += 1 + entry;
      } else {
        expected_sizes.push_back(alone);
      }
    }
    const auto payloads = wire::encode("o", messages, limit);
    REQUIRE(payloads.size() == expected_sizes.size());
    std::uint64_t expected = 1;
    for (std::size_t i = 0; i < payloads.size(); ++i) {
      CHECK(payloads[i].size() == expected_sizes[i]);
      CHECK(payloads[i].size() <= limit);
      CHECK(payloads[i].starts_with(envelope_head));
      for (const auto& message : decode_valid(payloads[i]).messages) CHECK(message.sequence == expected++);
    }
    CHECK(expected == messages.size() + 1);
  }
}

TEST_CASE("a message exactly at the limit fits in one payload; one byte more is refused with length_error") {
  const RoutingKey key{"logs", "1", "append"};
  // A body that makes the payload exactly max_payload_bytes long.
  const auto bare = wire::encoded_size("o", outgoing(key, Json{{"text", ""}}, 1));
  const Json at_limit{{"text", std::string(wire::max_payload_bytes - bare, 'x')}};
  const Json over_limit{{"text", std::string(wire::max_payload_bytes - bare + 1, 'x')}};
  REQUIRE(wire::encoded_size("o", outgoing(key, at_limit, 1)) == wire::max_payload_bytes);

  const auto payloads = encode_one("o", outgoing(key, at_limit, 1));
  REQUIRE(payloads.size() == 1);
  CHECK(payloads[0].size() == wire::max_payload_bytes);
  CHECK(decode_valid(payloads[0]).messages.at(0).body == at_limit);

  CHECK(wire::encoded_size("o", outgoing(key, over_limit, 1)) == wire::max_payload_bytes + 1);
  CHECK_THROWS_WITH_AS((void)encode_one("o", outgoing(key, over_limit, 1)),
                       doctest::Contains("logs.1.append takes 8000 bytes"), std::length_error);

  SUBCASE("with a limit of the caller's") {
    const Json body{{"text", std::string(100, 'y')}};
    const auto message = outgoing(key, body, 1);
    const auto size = wire::encoded_size("o", message);
    CHECK(encode_one("o", message, size).at(0).size() == size);
    CHECK_THROWS_WITH_AS((void)encode_one("o", message, size - 1), doctest::Contains("send its body by reference"),
                         std::length_error);
  }
}

TEST_CASE("one message too large in the middle of a batch makes encode refuse the batch") {
  const RoutingKey key{"logs", "1", "append"};
  const Json small{{"text", "small"}};
  const Json huge{{"text", std::string(wire::max_payload_bytes, 'x')}};
  const std::vector<wire::Outgoing> messages{outgoing(key, small, 1), outgoing(key, huge, 2), outgoing(key, small, 3)};
  CHECK_THROWS_AS((void)wire::encode("o", messages), std::length_error);
  // Sent by reference, it fits.
  const std::vector<wire::Outgoing> fixed{outgoing(key, small, 1), by_reference(key, 99, 2), outgoing(key, small, 3)};
  CHECK(wire::encode("o", fixed).size() == 1);
}

TEST_CASE("encoded_size is the size of the payload encode makes for that message alone") {
  const RoutingKey key{"buildrequests", "17", "claimed"};
  const RoutingKey odd_key{"a\"b", "", "c\\d\x01"};
  const std::vector<Json> bodies{Json::object(), Json{{"a", 1}}, Json{{"text", "caf\xc3\xa9 \xff bad utf-8"}},
                                 Json{{"f", 0.1}, {"n", nullptr}, {"list", Json::array()}}};
  for (const std::string origin : {"", "o", "a \"quoted\"\norigin \xc3\xa9"}) {
    for (const auto* k : {&key, &odd_key}) {
      for (const auto& body : bodies) {
        for (const std::uint64_t sequence :
             {std::uint64_t{0}, std::uint64_t{1}, std::numeric_limits<std::uint64_t>::max()}) {
          const auto message = outgoing(*k, body, sequence);
          CAPTURE(origin);
          CAPTURE(body.dump());
          CHECK(encode_one(origin, message).at(0).size() == wire::encoded_size(origin, message));
        }
      }
      const auto reference = by_reference(*k, 123456789, 5);
      CHECK(encode_one(origin, reference).at(0).size() == wire::encoded_size(origin, reference));
    }
  }
}

TEST_CASE("encode refuses misuse: no key, a discarded body, no body and no valid reference") {
  const RoutingKey key{"a"};
  const Json body = Json::object();
  const Json discarded = Json::parse("not json", nullptr, false);
  REQUIRE(discarded.is_discarded());
  CHECK_THROWS_AS((void)encode_one("o", wire::Outgoing{nullptr, &body, 0, 1}), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)encode_one("o", outgoing(key, discarded, 1)), doctest::Contains("discarded"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)encode_one("o", by_reference(key, 0)), doctest::Contains("not a positive row id"),
                       std::invalid_argument);
  CHECK_THROWS_AS((void)encode_one("o", by_reference(key, -5)), std::invalid_argument);
  CHECK_THROWS_AS((void)wire::encoded_size("o", by_reference(key, 0)), std::invalid_argument);
}

TEST_CASE("no messages make no payloads") { CHECK(wire::encode("o", {}).empty()); }

// ---------------------------------------------------------------------------
// Decoding what others send

TEST_CASE("the smallest payload, as psql sends it, decodes without origin or sequence") {
  const auto decoded = decode_valid(R"({"v":1,"m":[{"k":["builds","7","finished"],"b":{"buildid":7}}]})");
  CHECK_FALSE(decoded.origin.has_value());
  REQUIRE(decoded.messages.size() == 1);
  CHECK(decoded.messages[0].key == RoutingKey{"builds", "7", "finished"});
  CHECK(decoded.messages[0].body == Json{{"buildid", 7}});
  CHECK_FALSE(decoded.messages[0].sequence.has_value());
  CHECK_FALSE(decoded.messages[0].reference.has_value());
}

TEST_CASE("a foreign payload of several messages, one by reference, decodes in order without sequences") {
  const auto decoded = decode_valid(R"( { "m" : [ {"k":["a","1","new"],"b":{"x":1}},
                                                {"r":5,"k":["a","1","log"]},
                                                {"b":{},"k":[""]} ], "v" : 1 } )");
  CHECK_FALSE(decoded.origin.has_value());
  REQUIRE(decoded.messages.size() == 3);
  CHECK(decoded.messages[0].key.str() == "a.1.new");
  CHECK(decoded.messages[1].reference == 5);
  CHECK(decoded.messages[1].body.is_null());
  CHECK(decoded.messages[2].key == RoutingKey{""});
  for (const auto& message : decoded.messages) CHECK_FALSE(message.sequence.has_value());
}

TEST_CASE("unknown fields in the envelope and in entries are ignored") {
  const auto decoded = decode_valid(
      R"({"v":1,"future":{"deep":[1,2,{"x":null}]},"o":"p","m":[{"k":["a"],"b":{"n":1},"s":3,"ttl":60,"h":"x"}],"z":[]})");
  CHECK(decoded.origin == "p");
  REQUIRE(decoded.messages.size() == 1);
  CHECK(decoded.messages[0].body == Json{{"n", 1}});
  CHECK(decoded.messages[0].sequence == 3u);
}

TEST_CASE("an empty message list is a valid payload with nothing in it") {
  const auto decoded = decode_valid(R"({"v":1,"o":"x","m":[]})");
  CHECK(decoded.messages.empty());
  CHECK(decoded.origin == "x");
}

TEST_CASE("each kind of problem is reported for a payload that has it") {
  struct Case {
    std::string payload;
    ProblemKind kind;
  };
  const std::vector<Case> cases{
      {"not json", ProblemKind::not_json},
      {"", ProblemKind::not_json},
      {R"({"v":1,"m":[{"k":["a"],"b":{}}]} trailing)", ProblemKind::not_json},
      {R"({"v":1,"m":[{"k":["a"],"b":{"n":1e400}}]})", ProblemKind::not_json},  // beyond a double: nlohmann refuses it
      {"{\"v\":1,\"m\":[{\"k\":[\"a\"],\"b\":\"\xff\"}]}", ProblemKind::not_json},  // invalid UTF-8
      {"[1,2]", ProblemKind::not_an_envelope},
      {"\"a string\"", ProblemKind::not_an_envelope},
      {R"({"m":[]})", ProblemKind::not_an_envelope},
      {R"({"v":1})", ProblemKind::not_an_envelope},
      {R"({"v":1,"m":{"k":["a"],"b":{}}})", ProblemKind::not_an_envelope},
      {R"({"v":2,"m":[]})", ProblemKind::unsupported_version},
      {R"({"v":1.0,"m":[]})", ProblemKind::unsupported_version},
      {R"({"v":"1","m":[]})", ProblemKind::unsupported_version},
      {R"({"v":18446744073709551617,"m":[]})", ProblemKind::unsupported_version},
      {R"({"v":1,"o":5,"m":[{"k":["a"],"b":{}}]})", ProblemKind::bad_origin},
      {R"({"v":1,"o":null,"m":[]})", ProblemKind::bad_origin},
      {R"({"v":1,"m":[5]})", ProblemKind::bad_message},
      {R"({"v":1,"m":[{"b":{}}]})", ProblemKind::bad_message},
      {R"({"v":1,"m":[{"k":["a"]}]})", ProblemKind::bad_message},
      {R"({"v":1,"m":[{"k":["a"],"b":{},"r":1}]})", ProblemKind::bad_message},
      {R"({"v":1,"m":[{"k":"a.b","b":{}}]})", ProblemKind::bad_key},
      {R"({"v":1,"m":[{"k":[],"b":{}}]})", ProblemKind::bad_key},
      {R"({"v":1,"m":[{"k":[1],"b":{}}]})", ProblemKind::bad_key},
      {R"({"v":1,"m":[{"k":["a",null],"b":{}}]})", ProblemKind::bad_key},
      {R"({"v":1,"m":[{"k":["caf\u00e9"],"b":{}}]})", ProblemKind::bad_key},
      {"{\"v\":1,\"m\":[{\"k\":[\"caf\xc3\xa9\"],\"b\":{}}]}", ProblemKind::bad_key},
      {R"({"v":1,"m":[{"k":["a"],"b":{},"s":-1}]})", ProblemKind::bad_sequence},
      {R"({"v":1,"m":[{"k":["a"],"b":{},"s":"1"}]})", ProblemKind::bad_sequence},
      {R"({"v":1,"m":[{"k":["a"],"b":{},"s":1.5}]})", ProblemKind::bad_sequence},
      {R"({"v":1,"m":[{"k":["a"],"b":{},"s":18446744073709551616}]})", ProblemKind::bad_sequence},
      {R"({"v":1,"m":[{"k":["a"],"r":0}]})", ProblemKind::bad_reference},
      {R"({"v":1,"m":[{"k":["a"],"r":-3}]})", ProblemKind::bad_reference},
      {R"({"v":1,"m":[{"k":["a"],"r":"12"}]})", ProblemKind::bad_reference},
      {R"({"v":1,"m":[{"k":["a"],"r":9223372036854775808}]})", ProblemKind::bad_reference},
      {R"({"v":1,"m":[{"k":["a"],"r":1e3}]})", ProblemKind::bad_reference},
      {std::string(5000, '['), ProblemKind::too_deep},
  };
  std::set<ProblemKind> covered;
  for (const auto& [payload, kind] : cases) {
    CAPTURE(payload.substr(0, 80));
    CAPTURE(wire::to_string(kind));
    const auto decoded = wire::decode(payload);
    CHECK(decoded.messages.empty());
    REQUIRE(decoded.problems.size() == 1);
    CHECK(decoded.problems[0].kind == kind);
    CHECK(is_one_printable_line(decoded.problems[0].detail));
    CHECK_FALSE(decoded.problems[0].detail.empty());
    if (!is_payload_level(kind)) CHECK(decoded.problems[0].detail.starts_with("entry 0: "));
    covered.insert(kind);
  }
  for (const auto kind : all_problem_kinds) {
    CAPTURE(wire::to_string(kind));
    CHECK(covered.count(kind) == 1);
  }
}

TEST_CASE("a mixed payload keeps its valid entries in order and reports each bad one with its index") {
  const auto decoded = wire::decode(R"({"v":1,"o":"x","m":[
      {"s":1,"k":["a"],"b":{"n":1}},
      {"s":2,"k":[],"b":{}},
      {"s":3,"k":["b"],"b":{"n":2},"unknown":true},
      "junk",
      {"s":-5,"k":["c"],"b":{}},
      {"s":6,"k":["d"],"r":77},
      {"s":7,"k":["e"],"r":0},
      {"s":8,"k":["f"],"b":{"n":3}}
    ],"extra":1})");
  CHECK(decoded.origin == "x");
  REQUIRE(decoded.messages.size() == 4);
  CHECK(decoded.messages[0].key.str() == "a");
  CHECK(decoded.messages[1].key.str() == "b");
  CHECK(decoded.messages[2].key.str() == "d");
  CHECK(decoded.messages[2].reference == 77);
  CHECK(decoded.messages[3].key.str() == "f");
  CHECK(decoded.messages[3].sequence == 8u);

  REQUIRE(decoded.problems.size() == 4);
  CHECK(decoded.problems[0].kind == ProblemKind::bad_key);
  CHECK(decoded.problems[0].detail.starts_with("entry 1: "));
  CHECK(decoded.problems[1].kind == ProblemKind::bad_message);
  CHECK(decoded.problems[1].detail == "entry 3: a string, not an object");
  CHECK(decoded.problems[2].kind == ProblemKind::bad_sequence);
  CHECK(decoded.problems[2].detail == R"(entry 4: "s" is -5, not an unsigned 64-bit integer)");
  CHECK(decoded.problems[3].kind == ProblemKind::bad_reference);
  CHECK(decoded.problems[3].detail.starts_with("entry 6: "));
}

TEST_CASE("the largest sequence and reference are accepted; huge numbers in a body do not stop decoding") {
  const auto decoded = decode_valid(R"({"v":1,"m":[
      {"s":18446744073709551615,"k":["a"],"r":9223372036854775807},
      {"s":0,"k":["b"],"b":{"n":18446744073709551616,"m":-9223372036854775809,"f":1e300}}]})");
  REQUIRE(decoded.messages.size() == 2);
  CHECK(decoded.messages[0].sequence == std::numeric_limits<std::uint64_t>::max());
  CHECK(decoded.messages[0].reference == std::numeric_limits<std::int64_t>::max());
  CHECK(decoded.messages[1].sequence == 0u);
  CHECK(decoded.messages[1].body.at("n").is_number_float());
}

TEST_CASE("nesting up to max_depth is accepted, one level more is refused as too_deep") {
  // The envelope, an entry and "b" take 4 levels above the body's own.
  const auto body_of_depth = [](int depth) {
    return std::string(static_cast<std::size_t>(depth), '[') + std::string(static_cast<std::size_t>(depth), ']');
  };
  const auto payload = [&](int body_depth) {
    return R"({"v":1,"m":[{"k":["a"],"b":{"x":)" + body_of_depth(body_depth) + "}}]}";
  };
  const auto deepest = wire::max_depth - 4;
  CHECK(decode_valid(payload(deepest)).messages.size() == 1);
  const auto refused = wire::decode(payload(deepest + 1));
  CHECK(refused.messages.empty());
  REQUIRE(refused.problems.size() == 1);
  CHECK(refused.problems[0].kind == ProblemKind::too_deep);

  SUBCASE("brackets inside strings, escaped quotes included, do not count") {
    const std::string text = R"(\"\\)" + std::string(1000, '[') + std::string(1000, '{');
    const auto decoded = decode_valid(R"({"v":1,"m":[{"k":["a"],"b":{"t":")" + text + R"("}}]})");
    REQUIRE(decoded.messages.size() == 1);
    CHECK(decoded.messages[0].body.at("t").get<std::string>().size() == 2 + 2000);
  }
  SUBCASE("a deep object is refused as a deep array is") {
    std::string deep;
    for (int i = 0; i < 5000; ++i) deep += R"({"a":)";
    CHECK(wire::decode(deep).problems.at(0).kind == ProblemKind::too_deep);
  }
}

namespace {

// {"a":{"a":…{}…}}: an object nested `depth` levels.
Json object_of_depth(int depth) {
  Json body = Json::object();
  for (int level = 1; level < depth; ++level) body = Json{{"a", std::move(body)}};
  return body;
}

}  // namespace

TEST_CASE("every body a producer accepts, a consumer accepts: one level deeper is refused before encoding") {
  const RoutingKey key{"deep", "1", "new"};
  const Json deepest = object_of_depth(wire::max_body_depth);
  CHECK_FALSE(wire::nested_deeper_than(deepest));
  const auto payloads = wire::encode("o", std::vector{outgoing(key, deepest, 1)});
  REQUIRE(payloads.size() == 1);
  const auto decoded = decode_valid(payloads[0]);
  REQUIRE(decoded.messages.size() == 1);
  CHECK(decoded.messages[0].body == deepest);

  const Json deeper = object_of_depth(wire::max_body_depth + 1);
  CHECK(wire::nested_deeper_than(deeper));
  CHECK_THROWS_AS((void)wire::encode("o", std::vector{outgoing(key, deeper, 1)}), livestate::InvalidBody);
  CHECK_THROWS_AS((void)wire::encoded_size("o", outgoing(key, deeper, 1)), livestate::InvalidBody);
  CHECK_THROWS_AS(wire::check_depth(deeper, "deep.1.new"), livestate::InvalidBody);
  CHECK_NOTHROW(wire::check_depth(deepest, "deep.1.new"));
  CHECK_FALSE(wire::nested_deeper_than(Json(7)));
  CHECK(wire::nested_deeper_than(Json::array(), 0));
}

TEST_CASE("a body nested a million levels is refused without walking it, and without crashing") {
  Json body = Json::array();
  for (int level = 1; level < 1000000; ++level) body = Json::array({std::move(body)});
  CHECK(wire::nested_deeper_than(body));
  const RoutingKey key{"deep"};
  CHECK_THROWS_AS((void)wire::encode("o", std::vector{outgoing(key, body, 1)}), livestate::InvalidBody);
}

TEST_CASE("a payload refused as too deep still names its origin and every sequence it carried") {
  const std::string deep = std::string(100, '[') + std::string(100, ']');
  const std::string payload = R"({"v":1,"o":"producer-1","m":[{"s":4,"k":["a"],"b":{}},{"s":5,"k":["b"],"b":)" + deep +
                              R"(},{"s":6,"k":["c"],"b":{"s":99,"x":[{"s":98}]}}]})";
  const auto decoded = wire::decode(payload);
  CHECK(decoded.messages.empty());
  REQUIRE(decoded.problems.size() == 1);
  CHECK(decoded.problems[0].kind == ProblemKind::too_deep);
  CHECK(decoded.origin == "producer-1");
  CHECK(decoded.refused_sequences == std::vector<std::uint64_t>{4, 5, 6});
}

TEST_CASE("a refused entry's sequence is reported, so its loss is known at once") {
  const auto decoded = wire::decode(
      R"({"v":1,"o":"p","m":[{"s":1,"k":["a"],"b":{}},{"s":2,"k":[7],"b":{}},{"s":3,"k":["c"]},{"s":"x","k":["d"],"b":{}}]})");
  CHECK(decoded.messages.size() == 1);
  CHECK(decoded.problems.size() == 3);
  CHECK(decoded.refused_sequences == std::vector<std::uint64_t>{2, 3});
}

TEST_CASE("a payload of 7,999 bytes of garbage is refused with one problem") {
  const auto seed = test_seed();
  INFO("seed: ", seed, " (replay with LIVESTATE_TEST_SEED)");
  std::mt19937 random(seed);
  for (int round = 0; round < 50; ++round) {
    std::string garbage(wire::max_payload_bytes, '\0');
    for (auto& c : garbage) c = static_cast<char>(round % 2 == 0 ? random() % 256 : 0x20 + random() % 0x5f);
    const auto decoded = wire::decode(garbage);
    CHECK(decoded.messages.empty());
    REQUIRE(decoded.problems.size() == 1);
    INFO("round ", round, ": ", wire::to_string(decoded.problems[0].kind), ": ", decoded.problems[0].detail,
         "; the payload starts ", garbage.substr(0, 40));
    CHECK((decoded.problems[0].kind == ProblemKind::not_json || decoded.problems[0].kind == ProblemKind::too_deep));
    CHECK(is_one_printable_line(decoded.problems[0].detail));
  }
}

TEST_CASE("problem details are one printable line of bounded length, even for hostile payloads") {
  std::string long_non_ascii_key;
  for (int i = 0; i < 3000; ++i) long_non_ascii_key += "\xc3\xa9";
  const std::vector<std::string> payloads{
      R"({"v":1,"m":[{"k":[")" + long_non_ascii_key + R"("],"b":{}}]})",
      "{\"v\":1,\"m\":[{\"k\":[\"a\"],\"b\":{}}]\n\r\t\x01\x7f garbage" + std::string(500, '\x1b'),
      R"({"v":)" + std::string(3000, '9') + R"(,"m":[]})",
      std::string(300, '\n') + "x",
  };
  for (const auto& payload : payloads) {
    const auto decoded = wire::decode(payload);
    REQUIRE(decoded.problems.size() == 1);
    CAPTURE(decoded.problems[0].detail);
    CHECK(is_one_printable_line(decoded.problems[0].detail));
  }
  // The non-ASCII element is named with its offending byte.
  CHECK(wire::decode(payloads[0]).problems[0].detail.find("byte 0xc3 at offset 0") != std::string::npos);
}

TEST_CASE("every problem kind has its own name") {
  std::set<std::string_view> names;
  for (const auto kind : all_problem_kinds) {
    CHECK_FALSE(wire::to_string(kind).empty());
    names.insert(wire::to_string(kind));
  }
  CHECK(names.size() == std::size(all_problem_kinds));
}

// ---------------------------------------------------------------------------
// Robustness

TEST_CASE("20,000 random mutations of valid payloads never crash, never throw, and keep the promises") {
  const RoutingKey key{"buildrequests", "1", "claimed"};
  const RoutingKey other{"logs", "2", "append"};
  const Json body{{"a", {1, 2, {{"b", nullptr}}}}, {"s", "text \xc3\xa9 \\\" q"}, {"n", -1.5e10}};
  const Json empty = Json::object();
  const std::vector<wire::Outgoing> messages{outgoing(key, body, 9), by_reference(other, 12, 10),
                                             outgoing(other, empty, 11)};
  const std::vector<std::string> valid{
      wire::encode("origin", messages).at(0),
      R"({"v":1,"m":[{"k":["builds","7","finished"],"b":{"buildid":7}}]})",
      encode_one("", by_reference(key, 5)).at(0),
  };
  const std::vector<std::string> tokens{"[",        "]",     "{",       "}",       "\"",       ",",
                                        ":",        "\\",    "0",       "-",       "1e400",    "18446744073709551616",
                                        "null",     "true",  "\\u0000", "\\ud800", "\xc3\xa9", "\xff",
                                        "[[[[[[[[", "\"k\"", "\"b\"",   "\"r\"",   "\"s\"",    "\"v\"",
                                        "\"m\"",    "\"o\""};

  const auto seed = test_seed();
  INFO("seed: ", seed, " (replay with LIVESTATE_TEST_SEED)");
  std::mt19937 random(seed);
  const auto below = [&](std::size_t bound) { return bound == 0 ? std::size_t{0} : std::size_t{random()} % bound; };

  std::size_t decoded_messages = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string payload = valid[below(valid.size())];
    const auto edits = 1 + below(6);
    for (std::size_t e = 0; e < edits; ++e) {
      const auto at = below(payload.size() + 1);
      switch (below(6)) {
        case 0:  // flip a bit
          if (at < payload.size()) payload[at] = static_cast<char>(payload[at] ^ (1 << below(8)));
          break;
        case 1:  // any byte
          if (at < payload.size()) payload[at] = static_cast<char>(below(256));
          break;
        case 2:  // truncate
          payload.resize(at);
          break;
        case 3:  // erase a few bytes
          if (at < payload.size()) payload.erase(at, 1 + below(8));
          break;
        case 4:  // insert a token
          payload.insert(at, tokens[below(tokens.size())]);
          break;
        default:  // duplicate a slice
          if (at < payload.size()) payload.insert(below(payload.size() + 1), payload.substr(at, 1 + below(32)));
          break;
      }
    }
    try {
      const auto decoded = wire::decode(payload);
      decoded_messages += decoded.messages.size();
      bool keeps_promises = true;
      for (const auto& problem : decoded.problems) {
        keeps_promises = keeps_promises && is_one_printable_line(problem.detail);
        if (is_payload_level(problem.kind)) {
          keeps_promises = keeps_promises && decoded.problems.size() == 1 && decoded.messages.empty();
        }
      }
      for (const auto& message : decoded.messages) {
        keeps_promises = keeps_promises && (!message.reference || (message.body.is_null() && *message.reference > 0));
      }
      if (!keeps_promises) {
        FAIL_CHECK("mutation ", i,
                   " broke a promise: ", Json(payload).dump(-1, ' ', true, Json::error_handler_t::replace));
      }
    } catch (const std::exception& error) {
      FAIL_CHECK("mutation ", i, " threw ", error.what(), ": ",
                 Json(payload).dump(-1, ' ', true, Json::error_handler_t::replace));
    }
  }
  // Many mutations leave something decodable: the test exercises the entry
  // checks, not only the parser's refusal.
  CHECK(decoded_messages > 1000);
}
