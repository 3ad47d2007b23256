#include "session.hpp"

#include <atomic>
#include <charconv>
#include <stdexcept>

#include "livestate/core/detail/json_reader.hpp"

namespace livestate::db::detail {

Session::~Session() = default;
SessionFactory::~SessionFactory() = default;

namespace {

std::string describe(const Value& value) {
  switch (value.index()) {
    case 0: return "NULL";
    case 1: return std::to_string(std::get<std::int64_t>(value));
    case 2: return std::to_string(std::get<double>(value));
    case 3: return "'" + std::get<std::string>(value) + "'";
    default: return std::get<bool>(value) ? "true" : "false";
  }
}

template <class Number>
Number parse_number(const std::string& text, const char* what) {
  Number number{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (error != std::errc{} || end != text.data() + text.size()) {
    throw std::runtime_error(std::string("column value '") + text + "' is not " + what);
  }
  return number;
}

}  // namespace

const Value& Row::at(std::size_t column) const {
  if (column >= m_values.size()) {
    throw std::out_of_range("row has " + std::to_string(m_values.size()) + " columns, not " +
                            std::to_string(column + 1));
  }
  return m_values[column];
}

bool Row::is_null(std::size_t column) const { return std::holds_alternative<std::monostate>(at(column)); }

std::int64_t Row::as_int(std::size_t column) const {
  const Value& value = at(column);
  if (const auto* number = std::get_if<std::int64_t>(&value)) return *number;
  if (const auto* real = std::get_if<double>(&value)) return static_cast<std::int64_t>(*real);
  if (const auto* flag = std::get_if<bool>(&value)) return *flag ? 1 : 0;
  if (const auto* text = std::get_if<std::string>(&value)) {
    return parse_number<std::int64_t>(*text, "an integer");
  }
  throw std::runtime_error("column " + std::to_string(column) + " is NULL, not an integer");
}

double Row::as_double(std::size_t column) const {
  const Value& value = at(column);
  if (const auto* real = std::get_if<double>(&value)) return *real;
  if (const auto* number = std::get_if<std::int64_t>(&value)) return static_cast<double>(*number);
  if (const auto* text = std::get_if<std::string>(&value)) return parse_number<double>(*text, "a number");
  throw std::runtime_error("column " + std::to_string(column) + " is " + describe(value) + ", not a number");
}

bool Row::as_bool(std::size_t column) const {
  const Value& value = at(column);
  if (const auto* flag = std::get_if<bool>(&value)) return *flag;
  if (const auto* number = std::get_if<std::int64_t>(&value)) return *number != 0;
  if (const auto* text = std::get_if<std::string>(&value)) {
    if (*text == "t" || *text == "true" || *text == "1") return true;
    if (*text == "f" || *text == "false" || *text == "0") return false;
  }
  throw std::runtime_error("column " + std::to_string(column) + " is " + describe(value) + ", not a boolean");
}

std::string Row::as_text(std::size_t column) const {
  const Value& value = at(column);
  if (const auto* text = std::get_if<std::string>(&value)) return *text;
  if (std::holds_alternative<std::monostate>(value)) {
    throw std::runtime_error("column " + std::to_string(column) + " is NULL, not text");
  }
  return describe(value);
}

Json Row::as_json(std::size_t column) const {
  if (is_null(column)) return nullptr;
  return livestate::detail::parse_json(as_text(column));
}

Json Row::as_json_scalar(std::size_t column) const {
  const Value& value = at(column);
  switch (value.index()) {
    case 0: return nullptr;
    case 1: return std::get<std::int64_t>(value);
    case 2: return std::get<double>(value);
    case 3: {
      const auto& text = std::get<std::string>(value);
      std::int64_t number{};
      const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
      if (error == std::errc{} && end == text.data() + text.size()) return number;
      return text;
    }
    default: return std::get<bool>(value);
  }
}

namespace {
std::atomic<PostgresFactoryMaker> g_postgres_backend{nullptr};
}

void register_postgres_backend(PostgresFactoryMaker maker) noexcept { g_postgres_backend.store(maker); }

PostgresFactoryMaker postgres_backend() noexcept { return g_postgres_backend.load(); }

std::string number_placeholders(std::string_view sql) {
  std::string result;
  result.reserve(sql.size() + 16);
  int next = 1;
  char quote = 0;
  for (const char c : sql) {
    if (quote != 0) {
      if (c == quote) quote = 0;
      result += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      result += c;
    } else if (c == '?') {
      result += '$';
      result += std::to_string(next++);
    } else {
      result += c;
    }
  }
  return result;
}

}  // namespace livestate::db::detail
