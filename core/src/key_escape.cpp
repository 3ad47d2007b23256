// Key elements beyond 7-bit ASCII: the percent-escaping of wire.hpp. The
// Python codec (integrations/buildbot/livestate_buildbot/wire.py) implements
// the same rules; tests/data/wire_vectors.json holds the vectors both check.

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ascii.hpp"
#include "livestate/core/error.hpp"
#include "livestate/core/wire.hpp"

namespace livestate::wire {
namespace {

constexpr char upper_hex[] = "0123456789ABCDEF";

unsigned byte_at(std::string_view text, std::size_t i) { return static_cast<unsigned char>(text[i]); }

// The offset of the first byte that doesn't start a valid UTF-8 sequence
// (RFC 3629: shortest form, no surrogates, at most U+10FFFF), if any. Decodes
// each code point, so that the three refusals are one range check each.
std::optional<std::size_t> invalid_utf8_at(std::string_view text) noexcept {
  std::size_t i = 0;
  while (i < text.size()) {
    const unsigned lead = byte_at(text, i);
    if (lead < 0x80) {
      ++i;
      continue;
    }
    std::size_t length = 0;
    std::uint32_t code = 0;
    std::uint32_t smallest = 0;
    if ((lead & 0xe0U) == 0xc0U) {
      length = 2, code = lead & 0x1fU, smallest = 0x80;
    } else if ((lead & 0xf0U) == 0xe0U) {
      length = 3, code = lead & 0x0fU, smallest = 0x800;
    } else if ((lead & 0xf8U) == 0xf0U) {
      length = 4, code = lead & 0x07U, smallest = 0x10000;
    } else {
      return i;
    }
    if (text.size() - i < length) return i;
    for (std::size_t k = 1; k < length; ++k) {
      const unsigned next = byte_at(text, i + k);
      if ((next & 0xc0U) != 0x80U) return i;
      code = (code << 6U) | (next & 0x3fU);
    }
    if (code < smallest || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return i;
    i += length;
  }
  return std::nullopt;
}

int upper_hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Every byte of 0x80 and above and every '%' as %XX.
std::string canonical_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size() * 3);
  for (std::size_t i = 0; i < text.size(); ++i) {
    const unsigned byte = byte_at(text, i);
    if (byte >= 0x80 || byte == '%') {
      out += '%';
      out += upper_hex[byte >> 4U];
      out += upper_hex[byte & 0xfU];
    } else {
      out += text[i];
    }
  }
  return out;
}

// The text `element` is the canonical escape of, if it is one: at least one
// escape, each an uppercase %XX of a byte that needs escaping, the bytes
// valid UTF-8.
std::optional<std::string> unescape_once(std::string_view element) {
  if (element.find('%') == std::string_view::npos) return std::nullopt;
  std::string out;
  out.reserve(element.size());
  for (std::size_t i = 0; i < element.size(); ++i) {
    const char c = element[i];
    if (byte_at(element, i) >= 0x80) return std::nullopt;
    if (c != '%') {
      out += c;
      continue;
    }
    if (element.size() - i < 3) return std::nullopt;
    const int high = upper_hex_digit(element[i + 1]);
    const int low = upper_hex_digit(element[i + 2]);
    if (high < 0 || low < 0) return std::nullopt;
    const auto value = static_cast<unsigned>(high * 16 + low);
    if (value < 0x80 && value != '%') return std::nullopt;  // escaped needlessly: not canonical
    out += static_cast<char>(value);
    i += 2;
  }
  if (invalid_utf8_at(out)) return std::nullopt;
  return out;
}

// Is `element` what escape_key_element() writes for a text that needs
// escaping (one beyond ASCII, or one that is itself such a form)? Iterative:
// "%252525…" is one level per "25".
bool escapes_something(std::string_view element) {
  std::optional<std::string> text = unescape_once(element);
  while (text) {
    if (detail::first_non_ascii(*text)) return true;
    text = unescape_once(*text);
  }
  return false;
}

}  // namespace

std::string escape_key_element(std::string_view text) {
  if (const auto offset = invalid_utf8_at(text)) {
    char byte[8];
    std::snprintf(byte, sizeof byte, "0x%02x", byte_at(text, *offset));
    throw InvalidRoutingKey("key element " + detail::quote_for_message(text) + " is not valid UTF-8: byte " + byte +
                            " at offset " + std::to_string(*offset));
  }
  if (!detail::first_non_ascii(text) && !escapes_something(text)) return std::string(text);
  return canonical_escape(text);
}

std::string unescape_key_element(std::string_view element) {
  if (!escapes_something(element)) return std::string(element);
  return *unescape_once(element);
}

RoutingKey escape_key(std::span<const std::string> elements) {
  std::vector<std::string> escaped;
  escaped.reserve(elements.size());
  for (const auto& element : elements) escaped.push_back(escape_key_element(element));
  return RoutingKey(std::move(escaped));
}

std::vector<std::string> unescape_key(const RoutingKey& key) {
  std::vector<std::string> elements;
  elements.reserve(key.size());
  for (const auto& element : key) elements.push_back(unescape_key_element(element));
  return elements;
}

}  // namespace livestate::wire
