// The compact form a live view keeps its bodies in (reconcile/src/body_codec.hpp):
// what comes out is exactly what went in, whatever the body holds, and it
// takes less room than the body's JSON text.

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>

#include "body_codec.hpp"
#include "json_identical.hpp"

namespace {

using livestate::Json;
using livestate::reconcile::detail::BodyCodec;

// A random value of any kind, nested up to `depth` levels.
Json random_value(std::mt19937_64& random, int depth) {
  const auto pick = [&](std::uint64_t n) { return random() % n; };
  switch (pick(depth > 0 ? 12 : 9)) {
    case 0: return nullptr;
    case 1: return pick(2) == 0;
    case 2: return static_cast<std::int64_t>(random());        // any signed value, negative ones too
    case 3: return static_cast<std::int64_t>(pick(300)) - 20;  // around the small ones' bounds
    case 4: return random();                                   // any unsigned value
    case 5: return std::uint64_t{pick(300)};
    case 6: {
      const double special[] = {0.0,
                                -0.0,
                                1.5,
                                -1e308,
                                5e-324,
                                std::numeric_limits<double>::infinity(),
                                1795838740.123456,
                                static_cast<double>(random()) / 7.0};
      return special[pick(std::size(special))];
    }
    case 7: {
      std::string text(pick(40), ' ');
      for (auto& c : text) c = static_cast<char>(pick(256));  // NULs and bytes of UTF-8 alike
      return text;
    }
    case 8: {
      Json::binary_t::container_type bytes(pick(20));
      for (auto& byte : bytes) byte = static_cast<std::uint8_t>(pick(256));
      return pick(2) == 0 ? Json::binary(bytes) : Json::binary(bytes, pick(256));
    }
    case 9:
    case 10: {
      Json object = Json::object();
      for (auto fields = pick(8); fields > 0; --fields) {
        object["k" + std::to_string(pick(30))] = random_value(random, depth - 1);
      }
      return object;
    }
    default: {
      Json array = Json::array();
      for (auto elements = pick(6); elements > 0; --elements) array.push_back(random_value(random, depth - 1));
      return array;
    }
  }
}

}  // namespace

TEST_CASE("a body decoded from its compact bytes is identical to the one encoded, number kinds and signs included") {
  BodyCodec codec;
  std::mt19937_64 random(20261206);
  std::string bytes;
  for (int i = 0; i < 5000; ++i) {
    const Json body = random_value(random, 4);
    codec.encode(body, bytes);
    const Json decoded = codec.decode(bytes);
    CAPTURE(body.dump(-1, ' ', false, Json::error_handler_t::replace));
    REQUIRE(livestate::test::identical(decoded, body));
  }
  // The extremes of each kind of number.
  for (const Json& body :
       {Json(std::numeric_limits<std::int64_t>::min()), Json(std::numeric_limits<std::int64_t>::max()),
        Json(std::numeric_limits<std::uint64_t>::max()), Json(std::int64_t{-1}), Json(std::int64_t{111}),
        Json(std::int64_t{112}), Json(std::uint64_t{127}), Json(std::uint64_t{128}), Json(-0.0), Json::object(),
        Json::array(), Json("")}) {
    codec.encode(body, bytes);
    CHECK(livestate::test::identical(codec.decode(bytes), body));
  }
}

TEST_CASE("keys past the dictionary's bound, or too long for it, are written in the body and still read back") {
  BodyCodec codec;
  std::string bytes;
  Json many = Json::object();
  for (std::size_t i = 0; i < BodyCodec::max_keys + 500; ++i) many["key-" + std::to_string(i)] = i;
  many[std::string(BodyCodec::max_key_length + 1, 'x')] = "long";
  codec.encode(many, bytes);
  CHECK(codec.keys() == BodyCodec::max_keys);
  CHECK(livestate::test::identical(codec.decode(bytes), many));
  // Bodies encoded before and after the dictionary filled decode alike.
  const Json early = {{"key-1", 1}, {"key-4500", 2}};
  codec.encode(early, bytes);
  CHECK(livestate::test::identical(codec.decode(bytes), early));
  CHECK(codec.keys() == BodyCodec::max_keys);
}

TEST_CASE("a Buildbot body's compact bytes take less room than its JSON text") {
  const Json request = {{"_rev", 4},
                        {"buildrequestid", 123456},
                        {"builderid", 3},
                        {"buildsetid", 100234},
                        {"claimed", true},
                        {"claimed_at", 1795838740.25},
                        {"claimed_by_masterid", 2},
                        {"complete", false},
                        {"complete_at", nullptr},
                        {"priority", 0},
                        {"properties", nullptr},
                        {"results", -1},
                        {"submitted_at", 1795838739.5},
                        {"waited_for", false}};
  BodyCodec codec;
  std::string bytes;
  codec.encode(request, bytes);
  codec.encode(request, bytes);  // the keys known now
  CHECK(bytes.size() * 2 < request.dump().size());
  CHECK(codec.decode(bytes) == request);
}
