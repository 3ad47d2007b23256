// libFuzzer target: dotted routing keys and filters.
//
// The input is "FILTER\nKEY" (or one line used as both). Properties: parsing
// throws nothing but InvalidRoutingKey / InvalidFilter; what parses prints
// back (str()) to text that parses to the same value; Filter::matches agrees
// with a plain reading of Buildbot's tuple semantics.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "livestate/core/error.hpp"
#include "livestate/core/filter.hpp"
#include "livestate/core/routing_key.hpp"

using livestate::Filter;
using livestate::RoutingKey;

namespace {

std::optional<RoutingKey> key_of(std::string_view text) {
  try {
    auto key = RoutingKey::parse(text);
    if (RoutingKey::parse(key.str()) != key) std::abort();
    return key;
  } catch (const livestate::InvalidRoutingKey&) {
    return std::nullopt;
  }
}

std::optional<Filter> filter_of(std::string_view text) {
  try {
    auto filter = Filter::parse(text);
    if (!(Filter::parse(filter.str()) == filter)) std::abort();
    return filter;
  } catch (const livestate::InvalidFilter&) {
    return std::nullopt;
  }
}

bool reference_match(const Filter& filter, const RoutingKey& key) {
  if (filter.any_suffix() ? key.size() < filter.size() : key.size() != filter.size()) return false;
  for (std::size_t i = 0; i < filter.size(); ++i) {
    if (filter[i] && *filter[i] != key[i]) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto newline = input.find('\n');
  const auto filter_text = input.substr(0, newline);
  const auto key_text = newline == std::string_view::npos ? input : input.substr(newline + 1);
  const auto filter = filter_of(filter_text);
  const auto key = key_of(key_text);
  if (filter && key && filter->matches(*key) != reference_match(*filter, *key)) std::abort();
  return 0;
}
