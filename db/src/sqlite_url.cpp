#include "livestate/db/detail/sqlite_url.hpp"

#include <stdexcept>

namespace livestate::db::detail {
namespace {

int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// SQLite's URI filenames are percent-encoded; a bad escape is kept as written.
std::string percent_decoded(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && hex_digit(text[i + 1]) >= 0 && hex_digit(text[i + 2]) >= 0) {
      out += static_cast<char>(hex_digit(text[i + 1]) * 16 + hex_digit(text[i + 2]));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

// file:PATH?query#fragment, file:///PATH, file://localhost/PATH.
std::string file_of_uri(std::string_view uri) {
  std::string_view rest = uri.substr(5);
  rest = rest.substr(0, std::min(rest.find('?'), rest.find('#')));
  if (rest.starts_with("//")) {
    rest.remove_prefix(2);
    const auto slash = rest.find('/');
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  }
  if (rest == ":memory:" || rest.empty()) return {};
  return percent_decoded(rest);
}

}  // namespace

std::optional<SqliteUrl> parse_sqlite_url(std::string_view url) {
  constexpr std::string_view scheme = "sqlite:";
  if (!url.starts_with(scheme)) return std::nullopt;
  std::string_view rest = url.substr(scheme.size());
  if (rest == ":memory:") return SqliteUrl{true, {}, {}};
  if (rest.starts_with("//")) rest.remove_prefix(2);
  if (rest.empty()) {
    throw std::invalid_argument("SQLite URL '" + std::string(url) +
                                "' names no file: write sqlite:PATH or sqlite::memory:");
  }
  SqliteUrl parsed{false, std::string(rest), std::string(rest)};
  if (rest.starts_with("file:")) parsed.file = file_of_uri(rest);
  return parsed;
}

}  // namespace livestate::db::detail
