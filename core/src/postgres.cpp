#include "livestate/core/detail/postgres.hpp"

#include <algorithm>
#include <optional>
#include <vector>

namespace livestate::detail {
namespace {

// A byte range of a URL: [begin, end).
struct Span {
  std::size_t begin = 0;
  std::size_t end = 0;
};

bool is_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

bool equal_ignoring_case(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

// Parameters that hold a secret. libpq's names are lower case; any case is
// redacted, since a wrongly cased one is still the user's password.
bool is_secret_name(std::string_view name) noexcept {
  return equal_ignoring_case(name, "password") || equal_ignoring_case(name, "sslpassword");
}

std::size_t uri_prefix_length(std::string_view url) noexcept {
  for (const std::string_view prefix : {std::string_view("postgresql://"), std::string_view("postgres://")}) {
    if (url.starts_with(prefix)) return prefix.size();
  }
  return 0;
}

int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// std::nullopt where libpq refuses the text ("invalid percent-encoded token").
std::optional<std::string> percent_decoded(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;
    const int high = hex_digit(text[i + 1]);
    const int low = hex_digit(text[i + 2]);
    if (high < 0 || low < 0 || (high == 0 && low == 0)) return std::nullopt;
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

// What a conninfo string's value means: quotes removed, backslash escapes
// resolved, as libpq reads it.
std::string unescaped_value(std::string_view raw) {
  if (!raw.empty() && raw.front() == '\'') {
    raw.remove_prefix(1);
    if (!raw.empty() && raw.back() == '\'') raw.remove_suffix(1);
  }
  std::string out;
  out.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\\' && i + 1 < raw.size()) ++i;
    out += raw[i];
  }
  return out;
}

std::vector<Span> secret_spans(std::string_view url);

// A URI's query ("name=value&…", starting at `from`): each parameter that
// has an '=', its name and value as written.
struct QueryParameter {
  Span whole;  // the parameter, without the '&' around it
  Span name;
  Span value;
};

std::vector<QueryParameter> query_parameters(std::string_view url, std::size_t from) {
  std::vector<QueryParameter> parameters;
  while (from < url.size()) {
    std::size_t end = url.find('&', from);
    if (end == std::string_view::npos) end = url.size();
    const std::string_view parameter = url.substr(from, end - from);
    if (const auto equals = parameter.find('='); equals != std::string_view::npos) {
      parameters.push_back({{from, end}, {from, from + equals}, {from + equals + 1, end}});
    }
    from = end + 1;
  }
  return parameters;
}

std::string_view text_of(std::string_view url, Span span) { return url.substr(span.begin, span.end - span.begin); }

// The values of secret parameters. A name that can't be decoded hides its
// value too.
void query_secrets(std::string_view url, std::size_t from, std::vector<Span>& spans) {
  for (const auto& parameter : query_parameters(url, from)) {
    const auto name = percent_decoded(text_of(url, parameter.name));
    if (!name || is_secret_name(*name)) spans.push_back(parameter.value);
  }
}

// Where libpq ends a URI's credentials: the first '@' before any '/'
// (npos without credentials).
std::size_t credentials_end(std::string_view url, std::size_t start) {
  const auto slash = std::min(url.find('/', start), url.size());
  return url.substr(0, slash).find('@', start);
}

// postgresql://[user[:password]@][hosts][/dbname][?query]. libpq ends the
// credentials at the first '@' before any '/'; a password with a raw '/' or
// '@' is read otherwise, and a '?' in a password or user name too. What
// either reading could take for a password is redacted.
void uri_secrets(std::string_view url, std::size_t start, std::vector<Span>& spans) {
  const auto add_credentials = [&](std::size_t at) {
    const auto colon = url.find(':', start);
    if (colon != std::string_view::npos && colon < at && colon + 1 < at) spans.push_back({colon + 1, at});
  };
  const auto first_at = credentials_end(url, start);
  if (first_at != std::string_view::npos) add_credentials(first_at);
  const auto question = std::min(url.find('?', start), url.size());
  const auto last_at = url.substr(0, question).rfind('@');
  if (last_at != std::string_view::npos && last_at >= start) add_credentials(last_at);
  // The query as libpq finds it (after the credentials), and after the first '?'.
  const auto after_credentials = first_at != std::string_view::npos ? first_at + 1 : start;
  for (const auto from : {url.find('?', after_credentials), url.find('?', start)}) {
    if (from != std::string_view::npos) query_secrets(url, from + 1, spans);
  }
}

// One "name = value" of a conninfo string, as libpq's grammar reads it
// ("key = value key='quoted \' value'"). `malformed`: parsing stopped here
// (no '=', an unterminated quote); the token then runs to the end.
struct KeywordToken {
  Span name;
  Span value;
  bool malformed = false;
};

std::vector<KeywordToken> keyword_tokens(std::string_view url) {
  std::vector<KeywordToken> tokens;
  std::size_t at = 0;
  while (at < url.size()) {
    if (is_space(url[at])) {
      ++at;
      continue;
    }
    const std::size_t name_begin = at;
    while (at < url.size() && url[at] != '=' && !is_space(url[at])) ++at;
    const Span name{name_begin, at};
    while (at < url.size() && is_space(url[at])) ++at;
    if (at >= url.size() || url[at] != '=') {
      tokens.push_back({name, {name_begin, url.size()}, true});
      return tokens;
    }
    ++at;
    while (at < url.size() && is_space(url[at])) ++at;
    const std::size_t value_begin = at;
    if (at < url.size() && url[at] == '\'') {
      ++at;
      while (at < url.size() && url[at] != '\'') at += url[at] == '\\' ? 2 : 1;
      if (at >= url.size()) {
        tokens.push_back({name, {name_begin, url.size()}, true});  // unterminated quote
        return tokens;
      }
      ++at;
    } else {
      while (at < url.size() && !is_space(url[at])) at += url[at] == '\\' ? 2 : 1;
      at = std::min(at, url.size());
    }
    tokens.push_back({name, {value_begin, at}, false});
  }
  return tokens;
}

// Where parsing stops making sense, everything to the end is hidden.
void keyword_secrets(std::string_view url, std::vector<Span>& spans) {
  for (const auto& token : keyword_tokens(url)) {
    const std::string_view name = text_of(url, token.name);
    const Span& value = token.value;
    if (token.malformed) {
      spans.push_back(value);
    } else if (is_secret_name(name)) {
      if (value.end > value.begin) spans.push_back(value);
    } else if (name == "dbname") {
      // libpq reads a URL or conninfo given as dbname as a whole connection string.
      const std::string nested = unescaped_value(text_of(url, value));
      if (is_postgres_url(nested) && !secret_spans(nested).empty()) spans.push_back(value);
    }
  }
}

std::vector<Span> secret_spans(std::string_view url) {
  std::vector<Span> spans;
  switch (postgres_url_kind(url)) {
    case PostgresUrlKind::uri: uri_secrets(url, uri_prefix_length(url), spans); break;
    case PostgresUrlKind::keywords: keyword_secrets(url, spans); break;
    case PostgresUrlKind::not_postgres:
      // Another scheme's URL is shown in errors too ("no store for …"): its
      // user:password@ goes the same way.
      if (const auto scheme = url.find("://"); scheme != std::string_view::npos) uri_secrets(url, scheme + 3, spans);
      break;
  }
  // Sorted and merged, so that replacing them from the end keeps offsets.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  std::vector<Span> merged;
  for (const auto& span : spans) {
    if (!merged.empty() && span.begin <= merged.back().end) {
      merged.back().end = std::max(merged.back().end, span.end);
    } else {
      merged.push_back(span);
    }
  }
  return merged;
}

void replace_all(std::string& text, std::string_view what, std::string_view with) {
  if (what.empty()) return;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + with.size())) {
    text.replace(at, what.size(), with);
  }
}

// Does `piece` occur in `url` over one of its secret spans?
bool covers_secret(std::string_view url, std::string_view piece, const std::vector<Span>& spans) {
  if (piece.empty()) return false;
  for (auto at = url.find(piece); at != std::string_view::npos; at = url.find(piece, at + 1)) {
    for (const auto& span : spans) {
      if (at < span.end && span.begin < at + piece.size()) return true;
    }
  }
  return false;
}

}  // namespace

PostgresUrlKind postgres_url_kind(std::string_view url) noexcept {
  if (uri_prefix_length(url) > 0) return PostgresUrlKind::uri;
  if (url.starts_with("sqlite:") || url.starts_with("simple:")) return PostgresUrlKind::not_postgres;
  return url.find('=') != std::string_view::npos ? PostgresUrlKind::keywords : PostgresUrlKind::not_postgres;
}

std::string redact_postgres_url(std::string_view url) {
  std::string result(url);
  const auto spans = secret_spans(url);
  for (auto span = spans.rbegin(); span != spans.rend(); ++span) {
    result.replace(span->begin, span->end - span->begin, "***");
  }
  return result;
}

std::string scrub_postgres_secrets(std::string_view message, std::string_view url) {
  const auto spans = secret_spans(url);
  if (spans.empty()) return std::string(message);
  // Quoted parts first: libpq quotes the token (or the whole URI) it refused.
  std::string result;
  result.reserve(message.size());
  for (std::size_t at = 0; at < message.size();) {
    const auto close = message[at] == '"' ? message.find('"', at + 1) : std::string_view::npos;
    if (close == std::string_view::npos) {
      result += message[at++];
      continue;
    }
    const auto inner = message.substr(at + 1, close - at - 1);
    result += '"';
    result += covers_secret(url, inner, spans) ? std::string_view("***") : inner;
    result += '"';
    at = close + 1;
  }
  // Then the passwords themselves, as written and as libpq reads them.
  std::vector<std::string> secrets;
  for (const auto& span : spans) {
    const auto raw = url.substr(span.begin, span.end - span.begin);
    secrets.emplace_back(raw);
    secrets.push_back(unescaped_value(raw));
    if (auto decoded = percent_decoded(raw)) secrets.push_back(std::move(*decoded));
  }
  std::sort(secrets.begin(), secrets.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
  for (const auto& secret : secrets) replace_all(result, secret, "***");
  return result;
}

PostgresTransportParameter take_transport_parameter(std::string_view url) {
  PostgresTransportParameter result{std::string(url), std::nullopt};
  std::vector<Span> cut;  // what goes, in order
  switch (postgres_url_kind(url)) {
    case PostgresUrlKind::uri: {
      const auto start = uri_prefix_length(url);
      const auto at = credentials_end(url, start);
      const auto question = url.find('?', at != std::string_view::npos ? at + 1 : start);
      if (question == std::string_view::npos) break;
      for (const auto& parameter : query_parameters(url, question + 1)) {
        if (percent_decoded(text_of(url, parameter.name)) != "transport") continue;
        result.transport =
            percent_decoded(text_of(url, parameter.value)).value_or(std::string(text_of(url, parameter.value)));
        // With the '&' before it, or the '?' when it is the first one (the
        // '&' after it goes instead, or the '?' alone when it was the only one).
        Span gone = parameter.whole;
        if (gone.begin > question + 1) {
          --gone.begin;
        } else if (gone.end < url.size()) {
          ++gone.end;
        } else {
          gone.begin = question;
        }
        cut.push_back(gone);
      }
      break;
    }
    case PostgresUrlKind::keywords:
      for (const auto& token : keyword_tokens(url)) {
        if (token.malformed || text_of(url, token.name) != "transport") continue;
        result.transport = unescaped_value(text_of(url, token.value));
        Span gone{token.name.begin, token.value.end};
        while (gone.end < url.size() && is_space(url[gone.end])) ++gone.end;
        cut.push_back(gone);
      }
      break;
    case PostgresUrlKind::not_postgres: break;
  }
  for (auto span = cut.rbegin(); span != cut.rend(); ++span) {
    result.url.erase(span->begin, span->end - span->begin);
  }
  if (!cut.empty() && result.url.ends_with('?')) result.url.pop_back();  // nothing left of the query
  return result;
}

SqlStateClass classify_sqlstate(std::string_view sqlstate) noexcept {
  if (sqlstate == "23505") return SqlStateClass::unique_violation;
  if (sqlstate == "40001" || sqlstate == "40P01") return SqlStateClass::serialization;
  if (sqlstate == "25006") return SqlStateClass::read_only;
  if (sqlstate == "42P01") return SqlStateClass::undefined_table;
  if (sqlstate == "57014") return SqlStateClass::query_canceled;
  // Class 08 (connection exception) and the server going away under us
  // (admin_shutdown, crash_shutdown, cannot_connect_now).
  if (sqlstate.starts_with("08") || sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03") {
    return SqlStateClass::connection;
  }
  return SqlStateClass::other;
}

}  // namespace livestate::detail
