#include <doctest/doctest.h>

#include "livestate/core/error.hpp"
#include "livestate/core/filter.hpp"

using livestate::Filter;
using livestate::InvalidFilter;
using livestate::RoutingKey;

// The cases of Buildbot's own test_util_tuplematch, and ours for "#".

TEST_CASE("a filter matches a key of the same length with equal elements") {
  CHECK(Filter{"a", "b", "c"}.matches(RoutingKey{"a", "b", "c"}));
  CHECK_FALSE(Filter{"a", "b", "c"}.matches(RoutingKey{"a", "b", "d"}));
  CHECK_FALSE(Filter{"a", "b", "c"}.matches(RoutingKey{"x", "b", "c"}));
}

TEST_CASE("a filter of another length never matches: prefixes and suffixes don't match") {
  CHECK_FALSE(Filter{"a", "b"}.matches(RoutingKey{"a", "b", "c"}));
  CHECK_FALSE(Filter{"a", "b", "c", "d"}.matches(RoutingKey{"a", "b", "c"}));
  CHECK_FALSE(Filter{"b", "c"}.matches(RoutingKey{"a", "b", "c"}));
  CHECK_FALSE(Filter{std::nullopt, std::nullopt}.matches(RoutingKey{"a", "b", "c"}));
}

TEST_CASE("an empty slot matches any one element, the empty string included") {
  const Filter filter{"a", std::nullopt, "c"};
  CHECK(filter.matches(RoutingKey{"a", "b", "c"}));
  CHECK(filter.matches(RoutingKey{"a", "", "c"}));
  CHECK(filter.matches(RoutingKey{"a", "anything at all", "c"}));
  CHECK_FALSE(filter.matches(RoutingKey{"a", "b", "x"}));
  CHECK(Filter{std::nullopt, std::nullopt, std::nullopt}.matches(RoutingKey{"", "", ""}));
}

TEST_CASE("dotted filters use * for one element and a trailing # for any suffix") {
  CHECK(Filter::parse("buildrequests.*.claimed") == Filter{"buildrequests", std::nullopt, "claimed"});
  const auto builds = Filter::parse("builds.#");
  CHECK(builds.any_suffix());
  CHECK(builds.matches(RoutingKey{"builds"}));
  CHECK(builds.matches(RoutingKey{"builds", "7"}));
  CHECK(builds.matches(RoutingKey{"builds", "7", "steps", "2", "finished"}));
  CHECK_FALSE(builds.matches(RoutingKey{"buildsets", "7", "new"}));
  CHECK_FALSE(builds.matches(RoutingKey{"steps", "builds"}));
  CHECK(Filter::parse("#").matches(RoutingKey{"anything", "at", "all"}));
  CHECK(Filter::parse("*.7.#").matches(RoutingKey{"builds", "7", "finished"}));
  CHECK_FALSE(Filter::parse("*.7.#").matches(RoutingKey{"builds"}));
}

TEST_CASE("in the tuple form, * and # are literal elements") {
  CHECK(Filter{"a", "*"}.matches(RoutingKey{"a", "*"}));
  CHECK_FALSE(Filter{"a", "*"}.matches(RoutingKey{"a", "b"}));
  CHECK_FALSE(Filter{"a", "#"}.matches(RoutingKey{"a", "b", "c"}));
}

TEST_CASE("a filter prints in the dotted form it parses from") {
  for (const char* text : {"buildrequests.*.claimed", "builds.#", "#", "*", "a..b"}) {
    CHECK(Filter::parse(text).str() == text);
  }
}

TEST_CASE("a # anywhere but last is refused") {
  CHECK_THROWS_WITH_AS(Filter::parse("builds.#.finished"),
                       "invalid filter \"builds.#.finished\": \"#\" (any suffix) may only be the last element",
                       InvalidFilter);
}

TEST_CASE("an empty filter and non-ASCII filter elements are refused") {
  CHECK_THROWS_AS(Filter::parse(""), InvalidFilter);
  CHECK_THROWS_AS(Filter(std::vector<Filter::Element>{}), InvalidFilter);
  CHECK_THROWS_WITH_AS(Filter({"builders", "\xc3\xa9t\xc3\xa9"}),
                       "invalid filter: element 1 (\"\\xc3\\xa9t\\xc3\\xa9\") is not 7-bit ASCII: "
                       "byte 0xc3 at offset 0; filter elements must be 7-bit ASCII, as routing keys are",
                       InvalidFilter);
  CHECK_THROWS_AS(Filter::parse("\xc3\xa9"), livestate::Error);
}
