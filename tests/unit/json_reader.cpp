// The library's JSON reader: what Json::parse reads, it reads to the same
// values with the same types; what Json::parse refuses, parse_json refuses
// with Json::parse's own exception.

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "json_identical.hpp"
#include "livestate/core/detail/json_reader.hpp"

namespace {

using livestate::Json;
using livestate::detail::parse_json;
using livestate::detail::read_json;
using livestate::test::identical;

// read_json reads `text`, to exactly what Json::parse reads.
void reads_as_nlohmann(const std::string& text) {
  CAPTURE(text);
  const auto read = read_json(text);
  REQUIRE(read.has_value());
  CHECK(identical(*read, Json::parse(text)));
  CHECK(identical(parse_json(text), Json::parse(text)));
}

// Both refuse `text`, parse_json with Json::parse's exception and message.
void refused_as_nlohmann(const std::string& text) {
  CAPTURE(text);
  CHECK_FALSE(read_json(text).has_value());
  std::string expected;
  try {
    const Json read = Json::parse(text);
    FAIL("Json::parse read it: " << read.dump());
  } catch (const Json::exception& error) {
    expected = error.what();
  }
  CHECK_THROWS_WITH_AS((void)parse_json(text), expected.c_str(), Json::exception);
}

}  // namespace

TEST_CASE("a Buildbot message body reads to the same value as Json::parse gives") {
  reads_as_nlohmann(
      R"({"_rev":3,"buildrequestid":17,"builderid":2,"buildsetid":9,"claimed":true,"claimed_at":1732871234.25,)"
      R"("claimed_by_masterid":1,"complete":false,"complete_at":null,"priority":0,"properties":{},"results":-1,)"
      R"("submitted_at":1732871200.5,"waited_for":false})");
  reads_as_nlohmann(
      R"({"v":1,"o":"master-1.3","m":[{"s":18446744073709551615,"k":["builds","7","finished"],"b":{"buildid":7}}]})");
}

TEST_CASE("numbers keep nlohmann's types: unsigned without a sign, signed when negative, a double past 64 bits") {
  // clang-format off
  for (const char* text : {"0", "-0", "5", "-5", "18446744073709551615", "18446744073709551616", "-9223372036854775808",
                           "-9223372036854775809", "9223372036854775808", "1.5", "-0.0", "1e3", "1E+3", "-1.5e-3",
                           "0.1", "123456789012345678901234567890", "1e308", "1.7976931348623157e308",
                           "2.2250738585072014e-308", "4.9406564584124654e-324", "0.30000000000000004",
                           "[1,-1,1.0,-1.0,1e0]"}) {
    // clang-format on
    reads_as_nlohmann(text);
  }
  CHECK(read_json("5")->is_number_unsigned());
  CHECK(read_json("-5")->is_number_integer());
  CHECK(read_json("-0")->is_number_integer());
  CHECK(read_json("18446744073709551616")->is_number_float());
}

TEST_CASE("strings: escapes, surrogate pairs, NUL, and UTF-8 of every length read as Json::parse reads them") {
  // clang-format off
  for (const char* text :
       {R"("")", R"("plain")", R"("\" \\ \/ \b \f \n \r \t")", R"("\u0041\u00e9\u2603\uD834\uDD1E")", R"("\u0000")",
        R"("\uFFFF\uE000\uD7FF")", "\"caf\xc3\xa9 \xe2\x98\x83 \xf0\x9d\x84\x9e \xf4\x8f\xbf\xbf\"",
        "\"\xed\x9f\xbf \xee\x80\x80 \xef\xbf\xbf\""}) {
    // clang-format on
    reads_as_nlohmann(text);
  }
  CHECK(read_json(R"("a\u0000b")")->get<std::string>() == std::string("a\0b", 3));
}

TEST_CASE("objects: a repeated key keeps its last value, keys in any order, whitespace anywhere") {
  reads_as_nlohmann(R"({"a":1,"a":2})");
  reads_as_nlohmann(R"({"b":1,"a":2,"c":{"z":[],"y":{}},"a":[3]})");
  reads_as_nlohmann(" \t\r\n{ \"a\" : [ 1 , 2 , { } , [ ] ] , \"b\" : null } \n");
  reads_as_nlohmann(R"([true,false,null,"x",[[[]]]])");
  CHECK(read_json(R"({"a":1,"a":2})")->at("a") == 2);
}

TEST_CASE("what Json::parse refuses, parse_json refuses with the same exception and message") {
  // clang-format off
  for (const char* text :
       {"", " ", "{", "}", "[", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "{\"a\":}", "[1 2]", "01", "-", "-01",
        "1.", ".5", "1e", "1e+", "+1", "0x10", "NaN", "Infinity", "tru", "nul", "falsey", "\"unterminated",
        "\"raw\ttab\"", "\"raw\nnewline\"", R"("\x")", R"("\u12")", R"("\u12G4")", R"("\uDC00")", R"("\uD800")",
        R"("\uD800x")", R"("\uD800\u0041")", R"("\uD800\uD800")", "\"\x80\"", "\"\xc0\xaf\"", "\"\xc1\xbf\"",
        "\"\xe0\x80\xaf\"", "\"\xed\xa0\x80\"", "\"\xf0\x80\x80\xaf\"", "\"\xf4\x90\x80\x80\"", "\"\xf5\x80\x80\x80\"",
        "\"\xff\"", "\"\xc3\"", "\"\xe2\x98\"", "{} {}", "[] x", "1 2", "/* comment */ 1", "[1] // comment",
        "1e400", "-1e400", "\xef\xbb"}) {
    // clang-format on
    refused_as_nlohmann(text);
  }
}

TEST_CASE("a NUL byte is refused where Json::parse would stop reading at it and ignore the rest") {
  for (const std::string& text :
       {std::string("1\0", 2), std::string("1\0garbage", 9), std::string("{\"v\":1,\"m\":[]}\0{}", 17),
        std::string("\"a\0b\"", 5), std::string("\0", 1)}) {
    CAPTURE(text);
    CHECK_THROWS_AS((void)parse_json(text), Json::parse_error);
  }
  try {
    (void)parse_json(std::string("[1]\0x", 5));
    FAIL("[1] followed by a NUL byte was read");
  } catch (const Json::parse_error& error) {
    CHECK(error.byte == 4);
    CHECK_MESSAGE(std::string(error.what()).find("NUL") != std::string::npos, error.what());
  }
  // Escaped, it is a character like any other.
  CHECK(parse_json(R"("a\u0000b")") == Json(std::string("a\0b", 3)));
}

TEST_CASE("a byte-order mark, an underflowing number and deep nesting are left to Json::parse, which reads them") {
  for (const std::string& text :
       {std::string("\xef\xbb\xbf{\"a\":1}"), std::string("1e-400"), std::string("-1e-400")}) {
    CAPTURE(text);
    CHECK_FALSE(read_json(text).has_value());
    CHECK(identical(parse_json(text), Json::parse(text)));
  }
  const std::string deep = std::string(20, '[') + std::string(20, ']');
  CHECK_FALSE(read_json(deep, 10).has_value());
  CHECK(read_json(deep, 20).has_value());
  CHECK(identical(parse_json(deep), Json::parse(deep)));
}

TEST_CASE("twenty thousand mutated documents: whatever read_json reads, Json::parse reads to the identical value") {
  const std::vector<std::string> seeds = {
      R"({"a":[1,-2,3.5e-7,"x\u00e9\n",true,null],"b":{"c":18446744073709551615,"d":-9223372036854775808}})",
      "[\"caf\xc3\xa9\",\"\xf0\x9d\x84\x9e\",\"\\uD834\\uDD1E\",0,-0,1E2,{\"\":{}}]",
      R"({"v":1,"o":"m","m":[{"s":1,"k":["a","b"],"b":{"x":[[],{}]}}]})",
  };
  const std::string alphabet = "{}[],:\"\\/ 0123456789-+.eEtrufalsn\t\n\x80\xc3\xa9\xed\xf0\x9f\xbfu";
  std::mt19937 random(20261129);
  int read = 0, refused_by_both = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string text = seeds[random() % seeds.size()];
    const int edits = 1 + static_cast<int>(random() % 4);
    for (int edit = 0; edit < edits && !text.empty(); ++edit) {
      const std::size_t at = random() % text.size();
      switch (random() % 3) {
        case 0: text[at] = alphabet[random() % alphabet.size()]; break;
        case 1: text.insert(at, 1, alphabet[random() % alphabet.size()]); break;
        default: text.erase(at, 1); break;
      }
    }
    CAPTURE(text);
    const auto ours = read_json(text);
    Json theirs;
    bool theirs_read = true;
    try {
      theirs = Json::parse(text);
    } catch (const Json::exception&) {
      theirs_read = false;
    }
    if (ours) {
      REQUIRE(theirs_read);
      REQUIRE(identical(*ours, theirs));
      ++read;
    } else if (!theirs_read) {
      ++refused_by_both;
    } else {
      // Left to Json::parse on purpose: an exponent that underflows.
      REQUIRE(text.find_first_of("eE") != std::string::npos);
    }
  }
  // The mutations make both kinds, plenty of each.
  CHECK(read > 1000);
  CHECK(refused_by_both > 1000);
}
