#include "livestate/core/detail/json_reader.hpp"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <system_error>
#include <utility>

// Why not Json::parse: its lexer reads one character at a time through an
// input adapter, copies every token into a buffer first, and then converts
// numbers with strtod/strtoull; most of a consumer's time went there. This
// reader copies runs of plain characters whole and converts numbers with
// std::from_chars, straight into the nlohmann::json values.
//
// What it accepts is exactly RFC 8259 JSON as nlohmann reads it: no comments,
// no trailing commas, strings of valid UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF) without raw control characters,
// surrogate pairs in \u escapes matched. Anything else returns nothing and is
// left to Json::parse, which refuses it with its own message (or, for the few
// cases listed in the header, reads it).

namespace livestate::detail {
namespace {

class Reader {
 public:
  Reader(std::string_view text, int max_depth)
      : m_at(text.data()), m_end(text.data() + text.size()), m_max_depth(max_depth) {}

  bool document(Json& out) {
    // A byte-order mark (which nlohmann skips) or anything odd at the start:
    // Json::parse decides.
    skip_whitespace();
    if (!value(out, 0)) return false;
    skip_whitespace();
    return m_at == m_end;
  }

 private:
  static bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

  void skip_whitespace() noexcept {
    while (m_at != m_end && (*m_at == ' ' || *m_at == '\n' || *m_at == '\r' || *m_at == '\t')) ++m_at;
  }

  // Consumes `expected` when it comes next.
  bool take(char expected) noexcept {
    if (m_at == m_end || *m_at != expected) return false;
    ++m_at;
    return true;
  }

  bool value(Json& out, int depth) {
    if (m_at == m_end) return false;
    switch (*m_at) {
      case '{': return object(out, depth + 1);
      case '[': return array(out, depth + 1);
      case '"': {
        std::string text;
        if (!string(text)) return false;
        out = std::move(text);
        return true;
      }
      case 't': return literal("true", Json(true), out);
      case 'f': return literal("false", Json(false), out);
      case 'n': return literal("null", Json(nullptr), out);
      default: return number(out);
    }
  }

  bool literal(std::string_view word, Json value, Json& out) {
    if (static_cast<std::size_t>(m_end - m_at) < word.size() || std::string_view(m_at, word.size()) != word) {
      return false;
    }
    m_at += word.size();
    out = std::move(value);
    return true;
  }

  bool object(Json& out, int depth) {
    if (depth > m_max_depth) return false;
    ++m_at;  // '{'
    out = Json::object();
    auto& members = out.get_ref<Json::object_t&>();
    skip_whitespace();
    if (take('}')) return true;
    for (;;) {
      if (m_at == m_end || *m_at != '"') return false;
      std::string key;
      if (!string(key)) return false;
      skip_whitespace();
      if (!take(':')) return false;
      skip_whitespace();
      Json member;
      if (!value(member, depth)) return false;
      // Keys usually come sorted (nlohmann writes them so): each goes to the
      // end without a search. A repeated key keeps its last value, as in
      // Json::parse.
      if (members.empty() || members.rbegin()->first < key) {
        members.emplace_hint(members.end(), std::move(key), std::move(member));
      } else {
        members.insert_or_assign(std::move(key), std::move(member));
      }
      skip_whitespace();
      if (take('}')) return true;
      if (!take(',')) return false;
      skip_whitespace();
    }
  }

  bool array(Json& out, int depth) {
    if (depth > m_max_depth) return false;
    ++m_at;  // '['
    out = Json::array();
    auto& elements = out.get_ref<Json::array_t&>();
    skip_whitespace();
    if (take(']')) return true;
    for (;;) {
      Json& element = elements.emplace_back();
      if (!value(element, depth)) return false;
      skip_whitespace();
      if (take(']')) return true;
      if (!take(',')) return false;
      skip_whitespace();
    }
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  bool number(Json& out) {
    const char* const start = m_at;
    const bool negative = *m_at == '-';
    if (negative) ++m_at;
    if (m_at == m_end) return false;
    if (*m_at == '0') {
      ++m_at;
    } else if (*m_at >= '1' && *m_at <= '9') {
      while (m_at != m_end && is_digit(*m_at)) ++m_at;
    } else {
      return false;
    }
    bool integer = true;
    if (m_at != m_end && *m_at == '.') {
      ++m_at;
      if (m_at == m_end || !is_digit(*m_at)) return false;
      while (m_at != m_end && is_digit(*m_at)) ++m_at;
      integer = false;
    }
    if (m_at != m_end && (*m_at == 'e' || *m_at == 'E')) {
      ++m_at;
      if (m_at != m_end && (*m_at == '+' || *m_at == '-')) ++m_at;
      if (m_at == m_end || !is_digit(*m_at)) return false;
      while (m_at != m_end && is_digit(*m_at)) ++m_at;
      integer = false;
    }
    // As nlohmann: an integer is signed when negative, unsigned otherwise, and
    // a double when 64 bits can't hold it.
    if (integer) {
      if (negative) {
        std::int64_t value = 0;
        if (const auto [end, error] = std::from_chars(start, m_at, value); error == std::errc{} && end == m_at) {
          out = value;
          return true;
        }
      } else {
        std::uint64_t value = 0;
        if (const auto [end, error] = std::from_chars(start, m_at, value); error == std::errc{} && end == m_at) {
          out = value;
          return true;
        }
      }
    }
    // Out of range (overflow to infinity, or underflow, which strtod would
    // round to a denormal or zero): Json::parse decides.
    double value = 0;
    const auto [end, error] = std::from_chars(start, m_at, value);
    if (error != std::errc{} || end != m_at || !std::isfinite(value)) return false;
    out = value;
    return true;
  }

  static int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // Four hex digits after "\u".
  bool code_unit(std::uint32_t& unit) {
    if (m_end - m_at < 4) return false;
    unit = 0;
    for (int i = 0; i < 4; ++i) {
      const int digit = hex_value(m_at[i]);
      if (digit < 0) return false;
      unit = unit * 16 + static_cast<std::uint32_t>(digit);
    }
    m_at += 4;
    return true;
  }

  static void append_utf8(std::string& out, std::uint32_t point) {
    if (point < 0x80) {
      out += static_cast<char>(point);
    } else if (point < 0x800) {
      out += static_cast<char>(0xc0 | (point >> 6));
      out += static_cast<char>(0x80 | (point & 0x3f));
    } else if (point < 0x10000) {
      out += static_cast<char>(0xe0 | (point >> 12));
      out += static_cast<char>(0x80 | ((point >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (point & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (point >> 18));
      out += static_cast<char>(0x80 | ((point >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((point >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (point & 0x3f));
    }
  }

  // After the backslash.
  bool escape(std::string& out) {
    if (m_at == m_end) return false;
    const char c = *m_at++;
    switch (c) {
      case '"': out += '"'; return true;
      case '\\': out += '\\'; return true;
      case '/': out += '/'; return true;
      case 'b': out += '\b'; return true;
      case 'f': out += '\f'; return true;
      case 'n': out += '\n'; return true;
      case 'r': out += '\r'; return true;
      case 't': out += '\t'; return true;
      case 'u': break;
      default: return false;
    }
    std::uint32_t unit = 0;
    if (!code_unit(unit)) return false;
    if (unit >= 0xdc00 && unit <= 0xdfff) return false;  // a low surrogate first
    if (unit >= 0xd800 && unit <= 0xdbff) {
      // A high surrogate: its low one must follow at once.
      if (m_end - m_at < 2 || m_at[0] != '\\' || m_at[1] != 'u') return false;
      m_at += 2;
      std::uint32_t low = 0;
      if (!code_unit(low) || low < 0xdc00 || low > 0xdfff) return false;
      unit = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
    }
    append_utf8(out, unit);
    return true;
  }

  static bool continuation(unsigned char byte) noexcept { return (byte & 0xc0) == 0x80; }

  // One UTF-8 sequence starting at a byte >= 0x80, checked by RFC 3629's
  // table and copied as is.
  bool utf8(std::string& out) {
    const auto lead = static_cast<unsigned char>(*m_at);
    unsigned char low = 0x80, high = 0xbf;  // the second byte's range
    std::ptrdiff_t length = 0;
    if (lead >= 0xc2 && lead <= 0xdf) {
      length = 2;
    } else if (lead >= 0xe0 && lead <= 0xef) {
      length = 3;
      if (lead == 0xe0) low = 0xa0;
      if (lead == 0xed) high = 0x9f;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      length = 4;
      if (lead == 0xf0) low = 0x90;
      if (lead == 0xf4) high = 0x8f;
    } else {
      return false;
    }
    if (m_end - m_at < length) return false;
    const auto second = static_cast<unsigned char>(m_at[1]);
    if (second < low || second > high) return false;
    for (std::ptrdiff_t i = 2; i < length; ++i) {
      if (!continuation(static_cast<unsigned char>(m_at[i]))) return false;
    }
    out.append(m_at, static_cast<std::size_t>(length));
    m_at += length;
    return true;
  }

  // At the opening quote; appends the string's characters to `out`.
  bool string(std::string& out) {
    ++m_at;
    for (;;) {
      const char* const run = m_at;
      while (m_at != m_end) {
        const auto c = static_cast<unsigned char>(*m_at);
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
        ++m_at;
      }
      out.append(run, m_at);
      if (m_at == m_end) return false;
      const auto c = static_cast<unsigned char>(*m_at);
      if (c == '"') {
        ++m_at;
        return true;
      }
      if (c < 0x20) return false;  // a raw control character
      if (c == '\\') {
        ++m_at;
        if (!escape(out)) return false;
      } else if (!utf8(out)) {
        return false;
      }
    }
  }

  const char* m_at;
  const char* const m_end;
  const int m_max_depth;
};

}  // namespace

std::optional<Json> read_json(std::string_view text, int max_depth) {
  Json value;
  if (!Reader(text, max_depth).document(value)) return std::nullopt;
  return value;
}

Json parse_json(std::string_view text) {
  if (auto value = read_json(text)) return std::move(*value);
  // nlohmann's lexer takes a NUL byte for the end of the input (for C
  // strings), and would read "1\0anything" as 1: whatever follows the NUL
  // would go unread without a word.
  if (const auto nul = text.find('\0'); nul != std::string_view::npos) {
    throw Json::parse_error::create(101, nul + 1, "syntax error while parsing value - a NUL byte, which JSON text "
                                                  "can't hold outside a \\u0000 escape",
                                    nullptr);
  }
  return Json::parse(text);
}

}  // namespace livestate::detail
