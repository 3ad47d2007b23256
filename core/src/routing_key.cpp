#include "livestate/core/routing_key.hpp"

#include "ascii.hpp"
#include "livestate/core/error.hpp"

namespace livestate {
namespace {

std::vector<std::string> split_dotted(std::string_view dotted) {
  std::vector<std::string> elements;
  std::size_t start = 0;
  while (true) {
    const auto dot = dotted.find('.', start);
    elements.emplace_back(dotted.substr(start, dot == std::string_view::npos ? dotted.npos : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return elements;
}

}  // namespace

RoutingKey::RoutingKey(std::initializer_list<std::string_view> elements)
    : m_elements(elements.begin(), elements.end()) {
  validate_and_hash();
}

RoutingKey::RoutingKey(std::vector<std::string> elements) : m_elements(std::move(elements)) { validate_and_hash(); }

RoutingKey RoutingKey::parse(std::string_view dotted) {
  if (dotted.empty()) {
    throw InvalidRoutingKey("invalid routing key \"\": a routing key needs at least one element");
  }
  return RoutingKey(split_dotted(dotted));
}

std::uint64_t RoutingKey::hash_element(std::string_view element) noexcept {
  // FNV-1a: elements are short, and this runs once per key, not per produce.
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (char c : element) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

void RoutingKey::validate_and_hash() {
  if (m_elements.empty()) {
    throw InvalidRoutingKey("invalid routing key (): a routing key needs at least one element");
  }
  m_hashes.reserve(m_elements.size());
  for (std::size_t i = 0; i < m_elements.size(); ++i) {
    if (auto offset = detail::first_non_ascii(m_elements[i])) {
      throw InvalidRoutingKey("invalid routing key: " + detail::describe_non_ascii(i, m_elements[i], *offset) +
                              "; routing-key elements must be 7-bit ASCII");
    }
    m_hashes.push_back(hash_element(m_elements[i]));
  }
}

std::string RoutingKey::str() const {
  std::string out;
  for (std::size_t i = 0; i < m_elements.size(); ++i) {
    if (i != 0) out += '.';
    out += m_elements[i];
  }
  return out;
}

std::size_t RoutingKey::hash() const noexcept {
  std::uint64_t hash = m_hashes.size();
  for (auto h : m_hashes) hash = (hash ^ h) * 0x9e3779b97f4a7c15ULL + (hash >> 29);
  return static_cast<std::size_t>(hash);
}

}  // namespace livestate
