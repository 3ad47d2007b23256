#include "livestate/core/filter.hpp"

#include "ascii.hpp"
#include "livestate/core/error.hpp"

namespace livestate {

Filter::Filter(std::initializer_list<Element> elements) : m_elements(elements) { validate(); }

Filter::Filter(std::vector<Element> elements, bool any_suffix)
    : m_elements(std::move(elements)), m_any_suffix(any_suffix) {
  validate();
}

Filter Filter::parse(std::string_view dotted) {
  if (dotted.empty()) {
    throw InvalidFilter("invalid filter \"\": a filter needs at least one element; \"#\" matches every key");
  }
  std::vector<Element> elements;
  bool any_suffix = false;
  std::size_t start = 0;
  while (true) {
    const auto dot = dotted.find('.', start);
    const auto last = dot == std::string_view::npos;
    const auto element = dotted.substr(start, last ? dotted.npos : dot - start);
    if (element == "#") {
      if (!last) {
        throw InvalidFilter("invalid filter " + detail::quote_for_message(dotted) +
                            ": \"#\" (any suffix) may only be the last element");
      }
      any_suffix = true;
    } else if (element == "*") {
      elements.emplace_back(std::nullopt);
    } else {
      elements.emplace_back(std::string(element));
    }
    if (last) break;
    start = dot + 1;
  }
  return Filter(std::move(elements), any_suffix);
}

void Filter::validate() const {
  if (m_elements.empty() && !m_any_suffix) {
    throw InvalidFilter(
        "invalid filter (): a filter needs at least one element; Filter::parse(\"#\") matches every key");
  }
  for (std::size_t i = 0; i < m_elements.size(); ++i) {
    if (!m_elements[i]) continue;
    if (auto offset = detail::first_non_ascii(*m_elements[i])) {
      throw InvalidFilter("invalid filter: " + detail::describe_non_ascii(i, *m_elements[i], *offset) +
                          "; filter elements must be 7-bit ASCII, as routing keys are");
    }
  }
}

bool Filter::matches(const RoutingKey& key) const noexcept {
  if (m_any_suffix ? key.size() < m_elements.size() : key.size() != m_elements.size()) return false;
  for (std::size_t i = 0; i < m_elements.size(); ++i) {
    if (m_elements[i] && *m_elements[i] != key[i]) return false;
  }
  return true;
}

std::string Filter::str() const {
  std::string out;
  for (std::size_t i = 0; i < m_elements.size(); ++i) {
    if (i != 0) out += '.';
    out += m_elements[i] ? *m_elements[i] : "*";
  }
  if (m_any_suffix) out += m_elements.empty() ? "#" : ".#";
  return out;
}

}  // namespace livestate
