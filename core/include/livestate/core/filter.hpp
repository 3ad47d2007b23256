#pragma once

#include <cstddef>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "livestate/core/routing_key.hpp"

namespace livestate {

/// Buildbot's tuple filter. A key matches when it has the filter's length and
/// every element equals the filter's, where an empty slot (std::nullopt) matches
/// any one element, the empty string included. A filter may also accept any
/// suffix (an extension to Buildbot): ("builds", #) matches ("builds"),
/// ("builds", "7") and ("builds", "7", "steps", "2", "finished").
///
/// In dotted text, "*" is an empty slot and a trailing "#" accepts any suffix:
/// Filter::parse("buildrequests.*.claimed"), Filter::parse("builds.#"),
/// Filter::parse("#") (every key). In the tuple form the strings are literal:
/// Filter{"a", "*"} matches only ("a", "*").
///
/// Thread safety: an immutable value; const access from several threads is safe.
class Filter final {
 public:
  using Element = std::optional<std::string>;

  Filter(std::initializer_list<Element> elements);
  /// With any_suffix, keys longer than the filter match too (dotted "….#").
  explicit Filter(std::vector<Element> elements, bool any_suffix = false);

  [[nodiscard]] static Filter parse(std::string_view dotted);

  [[nodiscard]] bool matches(const RoutingKey& key) const noexcept;

  [[nodiscard]] std::size_t size() const noexcept { return m_elements.size(); }
  [[nodiscard]] const Element& operator[](std::size_t i) const { return m_elements[i]; }
  [[nodiscard]] const std::vector<Element>& elements() const noexcept { return m_elements; }
  [[nodiscard]] bool any_suffix() const noexcept { return m_any_suffix; }

  /// The dotted form: "buildrequests.*.claimed", "builds.#".
  [[nodiscard]] std::string str() const;

  friend bool operator==(const Filter&, const Filter&) = default;

 private:
  void validate() const;

  std::vector<Element> m_elements;
  bool m_any_suffix = false;
};

}  // namespace livestate
