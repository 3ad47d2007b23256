#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace livestate {

/// A message's address: a non-empty tuple of 7-bit ASCII strings, the resource
/// type first and the event last, e.g. ("buildrequests", "17", "claimed").
/// Elements may be empty strings.
///
/// Construction validates every element and throws InvalidRoutingKey naming the
/// element that is not 7-bit ASCII; a constructed key is always valid, so
/// connectors never check it again. Each element's hash is computed once, here,
/// which is what makes routing by an index of filters cheap.
///
/// Thread safety: a RoutingKey is an immutable value; const access from several
/// threads is safe.
class RoutingKey final {
 public:
  using const_iterator = std::vector<std::string>::const_iterator;

  RoutingKey(std::initializer_list<std::string_view> elements);
  explicit RoutingKey(std::vector<std::string> elements);

  /// "buildrequests.17.claimed" -> ("buildrequests", "17", "claimed"). An
  /// element cannot contain '.' in this form; "a..b" has an empty middle element.
  [[nodiscard]] static RoutingKey parse(std::string_view dotted);

  [[nodiscard]] std::size_t size() const noexcept { return m_elements.size(); }
  [[nodiscard]] const std::string& operator[](std::size_t i) const { return m_elements[i]; }
  [[nodiscard]] const std::vector<std::string>& elements() const noexcept { return m_elements; }
  [[nodiscard]] const_iterator begin() const noexcept { return m_elements.begin(); }
  [[nodiscard]] const_iterator end() const noexcept { return m_elements.end(); }

  /// The dotted form, "buildrequests.17.claimed".
  [[nodiscard]] std::string str() const;

  /// The hash of element i, as element_hash() computes it.
  [[nodiscard]] std::uint64_t element_hash(std::size_t i) const noexcept { return m_hashes[i]; }
  /// A hash of the whole key, for std::hash.
  [[nodiscard]] std::size_t hash() const noexcept;

  /// The hash RoutingKey and the routing index use for one element.
  [[nodiscard]] static std::uint64_t hash_element(std::string_view element) noexcept;

  friend bool operator==(const RoutingKey& a, const RoutingKey& b) noexcept {
    return a.m_hashes == b.m_hashes && a.m_elements == b.m_elements;
  }

 private:
  void validate_and_hash();

  std::vector<std::string> m_elements;
  std::vector<std::uint64_t> m_hashes;
};

}  // namespace livestate

template <>
struct std::hash<livestate::RoutingKey> {
  std::size_t operator()(const livestate::RoutingKey& key) const noexcept { return key.hash(); }
};
