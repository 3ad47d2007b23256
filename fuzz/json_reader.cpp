// libFuzzer target: detail::read_json against Json::parse on any bytes.
//
// Properties: read_json never throws (bad_alloc aside) and never crashes;
// whatever it reads, Json::parse reads to the identical value (the same types
// of numbers all the way down); and parse_json agrees with Json::parse, in its
// value or in its exception's message, except that it refuses any text with a
// NUL byte (which Json::parse takes for the end of the text).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "../tests/unit/json_identical.hpp"
#include "livestate/core/detail/json_reader.hpp"

using livestate::Json;
using livestate::test::identical;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto ours = livestate::detail::read_json(text, 64);
  Json theirs;
  std::string their_error;
  try {
    theirs = Json::parse(text);
  } catch (const Json::exception& error) {
    their_error = error.what();
  }
  if (ours && (!their_error.empty() || !identical(*ours, theirs))) std::abort();

  std::string our_error;
  Json again;
  try {
    again = livestate::detail::parse_json(text);
  } catch (const Json::exception& error) {
    our_error = error.what();
  }
  if (text.find('\0') != std::string_view::npos) {
    if (our_error.empty()) std::abort();
    return 0;
  }
  if (our_error != their_error) std::abort();
  if (their_error.empty() && !identical(again, theirs)) std::abort();
  return 0;
}
