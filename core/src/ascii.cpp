#include "ascii.hpp"

#include <cstdio>

namespace livestate::detail {

std::optional<std::size_t> first_non_ascii(std::string_view text) noexcept {
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (static_cast<unsigned char>(text[i]) >= 0x80) return i;
  }
  return std::nullopt;
}

std::string quote_for_message(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte >= 0x7f || c == '"' || c == '\\') {
      char buffer[8];
      std::snprintf(buffer, sizeof buffer, "\\x%02x", static_cast<unsigned>(byte));
      out += buffer;
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

std::string describe_non_ascii(std::size_t index, std::string_view element, std::size_t offset) {
  char byte[8];
  std::snprintf(byte, sizeof byte, "0x%02x", static_cast<unsigned>(static_cast<unsigned char>(element[offset])));
  return "element " + std::to_string(index) + " (" + quote_for_message(element) + ") is not 7-bit ASCII: byte " + byte +
         " at offset " + std::to_string(offset);
}

}  // namespace livestate::detail
