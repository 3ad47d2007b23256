// The wire format's shared vectors (tests/data/wire_vectors.json): the C++
// codec must escape key elements, encode payloads and decode them exactly as
// the vectors say, and so must the Python codec of the Buildbot plug-in
// (integrations/buildbot/tests/test_wire_vectors.py), which reads the same file.

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "livestate/core/error.hpp"
#include "livestate/core/wire.hpp"

namespace {

using livestate::Json;
using livestate::RoutingKey;
namespace wire = livestate::wire;

const Json& vectors() {
  static const Json all = [] {
    std::ifstream file(LIVESTATE_SOURCE_DIR "/tests/data/wire_vectors.json");
    REQUIRE(file.good());
    std::stringstream text;
    text << file.rdbuf();
    return Json::parse(text.str());
  }();
  return all;
}

std::string from_hex(const std::string& hex) {
  std::string bytes;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    bytes += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  }
  return bytes;
}

// The messages of an "encode" vector, with the keys and bodies they point to.
struct Messages {
  std::vector<RoutingKey> keys;
  std::vector<Json> bodies;
  std::vector<wire::Outgoing> outgoing;

  explicit Messages(const Json& vector) {
    const auto& messages = vector.at("messages");
    keys.reserve(messages.size());  // outgoing points into both
    bodies.reserve(messages.size());
    for (const auto& message : messages) {
      keys.push_back(wire::escape_key(message.at("key").get<std::vector<std::string>>()));
      bodies.push_back(message.value("body", Json()));
      wire::Outgoing entry{&keys.back(), &bodies.back(), 0, message.at("sequence").get<std::uint64_t>()};
      if (message.contains("reference")) {
        entry.body = nullptr;
        entry.reference = message.at("reference").get<std::int64_t>();
      }
      outgoing.push_back(entry);
    }
  }
};

std::vector<std::string> encode(const Json& vector) {
  Messages messages(vector);
  return wire::encode(vector.at("origin").get<std::string>(), messages.outgoing,
                      vector.value("limit", wire::max_payload_bytes));
}

}  // namespace

TEST_CASE("key elements beyond ASCII are escaped and read back as the vectors say") {
  for (const auto& vector : vectors().at("key_elements")) {
    const auto text = vector.at("text").get<std::string>();
    const auto element = vector.at("element").get<std::string>();
    CAPTURE(element);
    CHECK(wire::escape_key_element(text) == element);
    CHECK(wire::unescape_key_element(element) == text);
    CHECK_NOTHROW((void)RoutingKey{element});  // always a valid element
  }
}

TEST_CASE("elements that are no canonical escape mean themselves, both ways") {
  for (const auto& vector : vectors().at("literal_elements")) {
    const auto element = vector.get<std::string>();
    CAPTURE(element);
    CHECK(wire::escape_key_element(element) == element);
    CHECK(wire::unescape_key_element(element) == element);
  }
}

TEST_CASE("text that is not valid UTF-8 can't be escaped into a key element") {
  for (const auto& vector : vectors().at("invalid_utf8_hex")) {
    const auto text = from_hex(vector.get<std::string>());
    CAPTURE(vector);
    CHECK_THROWS_AS((void)wire::escape_key_element("a" + text), livestate::InvalidRoutingKey);
  }
}

TEST_CASE("every text escapes to ASCII and reads back; an element read as another text is its escape") {
  // Characters that make escapes, half-escapes and their look-alikes (the
  // Python tests draw from the same ones: integrations/buildbot/tests/test_keys.py).
  const std::vector<std::string> alphabet{
      "%",           "2", "5", "C", "3", "A", "9", "c", "a", "F", "x", ".", "\xc3\xa9", "\xc2\xa0", "\xf0\x9d\x84\x9e",
      "\xe6\x97\xa5"};
  std::mt19937 generator(7);
  for (int i = 0; i < 20000; ++i) {
    std::string text;
    const auto length = std::uniform_int_distribution<int>(0, 12)(generator);
    for (int k = 0; k < length; ++k) {
      text += alphabet[std::uniform_int_distribution<std::size_t>(0, alphabet.size() - 1)(generator)];
    }
    CAPTURE(text);
    const auto element = wire::escape_key_element(text);
    REQUIRE_NOTHROW((void)RoutingKey{element});
    REQUIRE(wire::unescape_key_element(element) == text);
    const bool ascii = std::all_of(text.begin(), text.end(),
                                   [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    if (ascii) {
      const auto read = wire::unescape_key_element(text);
      REQUIRE(wire::escape_key_element(read) == text);
    }
  }
}

TEST_CASE("whole keys are escaped element by element and read back") {
  const std::vector<std::string> text{"steps", "12", "logs", "r\xc3\xa9sum\xc3\xa9", "new"};
  const RoutingKey key = wire::escape_key(text);
  CHECK(key.str() == "steps.12.logs.r%C3%A9sum%C3%A9.new");
  CHECK(wire::unescape_key(key) == text);
  CHECK_THROWS_AS((void)wire::escape_key(std::vector<std::string>{}), livestate::InvalidRoutingKey);
}

TEST_CASE("payloads are encoded byte for byte as the vectors say") {
  for (const auto& vector : vectors().at("encode")) {
    CAPTURE(vector.at("why").get<std::string>());
    CHECK(encode(vector) == vector.at("payloads").get<std::vector<std::string>>());
  }
}

TEST_CASE("messages the vectors refuse are refused when encoding") {
  for (const auto& vector : vectors().at("encode_refused")) {
    const auto error = vector.at("error").get<std::string>();
    CAPTURE(vector.at("why").get<std::string>());
    if (error == "too deep") {
      CHECK_THROWS_AS((void)encode(vector), livestate::InvalidBody);
    } else {
      REQUIRE(error == "too long");
      CHECK_THROWS_AS((void)encode(vector), std::length_error);
    }
  }
}

TEST_CASE("payloads are decoded into the vectors' messages, refusals and sequences") {
  for (const auto& vector : vectors().at("decode")) {
    CAPTURE(vector.at("why").get<std::string>());
    const std::string payload = vector.contains("payload") ? vector.at("payload").get<std::string>()
                                                           : from_hex(vector.at("payload_hex").get<std::string>());
    const auto decoded = wire::decode(payload);

    const auto& origin = vector.at("origin");
    CHECK(decoded.origin == (origin.is_null() ? std::nullopt : std::optional(origin.get<std::string>())));

    std::vector<std::string> problems;
    for (const auto& problem : decoded.problems) problems.emplace_back(wire::to_string(problem.kind));
    CHECK(problems == vector.at("problems").get<std::vector<std::string>>());
    CHECK(decoded.refused_sequences == vector.at("refused_sequences").get<std::vector<std::uint64_t>>());

    const auto& expected = vector.at("messages");
    REQUIRE(decoded.messages.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
      const auto& message = decoded.messages[i];
      CAPTURE(i);
      CHECK(message.key.elements() == expected[i].at("key").get<std::vector<std::string>>());
      CHECK(message.body == expected[i].at("body"));
      const auto& reference = expected[i].at("reference");
      CHECK(message.reference == (reference.is_null() ? std::nullopt : std::optional(reference.get<std::int64_t>())));
      const auto& sequence = expected[i].at("sequence");
      CHECK(message.sequence == (sequence.is_null() ? std::nullopt : std::optional(sequence.get<std::uint64_t>())));
      if (expected[i].contains("text_key")) {
        CHECK(wire::unescape_key(message.key) == expected[i].at("text_key").get<std::vector<std::string>>());
      }
    }
  }
}
