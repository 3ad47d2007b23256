#include "simdjson_read.hpp"

#include <cstdint>
#include <string>
#include <utility>

#include <simdjson.h>

namespace livestate::bench {
namespace {

// Adds `member` under `key` as Json::parse would: a repeated key keeps its
// last value. Keys usually come sorted (nlohmann writes them so), which makes
// the hint right.
void add_member(Json::object_t& members, std::string_view key, Json&& member) {
  if (members.empty() || members.rbegin()->first < key) {
    members.emplace_hint(members.end(), std::string(key), std::move(member));
  } else {
    members.insert_or_assign(std::string(key), std::move(member));
  }
}

// nlohmann reads an integer without a sign as unsigned, a negative one as
// signed.
Json integer(std::int64_t value) { return value < 0 ? Json(value) : Json(static_cast<std::uint64_t>(value)); }

// A bare -0 somewhere (outside a string or not: a cheap, conservative look).
bool has_negative_zero(std::string_view text) {
  for (auto at = text.find("-0"); at != std::string_view::npos; at = text.find("-0", at + 2)) {
    if (at + 2 == text.size()) return true;
    const char next = text[at + 2];
    if (next != '.' && next != 'e' && next != 'E' && (next < '0' || next > '9')) return true;
  }
  return false;
}

bool from_dom(simdjson::dom::element element, Json& out) {
  using simdjson::dom::element_type;
  switch (element.type()) {
    case element_type::ARRAY: {
      out = Json::array();
      auto& elements = out.get_ref<Json::array_t&>();
      for (const auto child : simdjson::dom::array(element)) {
        if (!from_dom(child, elements.emplace_back())) return false;
      }
      return true;
    }
    case element_type::OBJECT: {
      out = Json::object();
      auto& members = out.get_ref<Json::object_t&>();
      for (const auto field : simdjson::dom::object(element)) {
        Json member;
        if (!from_dom(field.value, member)) return false;
        add_member(members, field.key, std::move(member));
      }
      return true;
    }
    case element_type::INT64: out = integer(std::int64_t(element)); return true;
    case element_type::UINT64: out = std::uint64_t(element); return true;
    case element_type::DOUBLE: out = double(element); return true;
    case element_type::STRING: out = std::string(std::string_view(element)); return true;
    case element_type::BOOL: out = bool(element); return true;
    case element_type::NULL_VALUE: out = nullptr; return true;
  }
  return false;
}

// One On-Demand value (or the document itself, which has the same getters)
// into `out`, consuming it. Any error: false.
template <class Value>
bool from_ondemand(Value&& value, Json& out) {
  namespace ondemand = simdjson::ondemand;
  ondemand::json_type type;
  if (value.type().get(type)) return false;
  switch (type) {
    case ondemand::json_type::array: {
      ondemand::array array;
      if (value.get_array().get(array)) return false;
      out = Json::array();
      auto& elements = out.get_ref<Json::array_t&>();
      for (auto child : array) {
        ondemand::value element;
        if (child.get(element) || !from_ondemand(element, elements.emplace_back())) return false;
      }
      return true;
    }
    case ondemand::json_type::object: {
      ondemand::object object;
      if (value.get_object().get(object)) return false;
      out = Json::object();
      auto& members = out.get_ref<Json::object_t&>();
      for (auto result : object) {
        ondemand::field field;
        std::string_view key;
        if (std::move(result).get(field) || field.unescaped_key().get(key)) return false;
        // The key's view lives in the parser's string buffer, which the
        // value's strings extend but never overwrite.
        Json member;
        if (!from_ondemand(field.value(), member)) return false;
        add_member(members, key, std::move(member));
      }
      return true;
    }
    case ondemand::json_type::number: {
      ondemand::number_type kind;
      if (value.get_number_type().get(kind)) return false;
      if (kind == ondemand::number_type::floating_point_number) {
        double number;
        if (value.get_double().get(number)) return false;
        out = number;
      } else if (kind == ondemand::number_type::unsigned_integer) {
        std::uint64_t number;
        if (value.get_uint64().get(number)) return false;
        out = number;
      } else {
        std::int64_t number;
        if (value.get_int64().get(number)) return false;
        // -0 is nlohmann's signed zero.
        out = number == 0 && std::string_view(value.raw_json_token()).front() == '-' ? Json(number) : integer(number);
      }
      return true;
    }
    case ondemand::json_type::string: {
      std::string_view text;
      if (value.get_string().get(text)) return false;
      out = std::string(text);
      return true;
    }
    case ondemand::json_type::boolean: {
      bool flag;
      if (value.get_bool().get(flag)) return false;
      out = flag;
      return true;
    }
    case ondemand::json_type::null: {
      bool null;
      if (value.is_null().get(null) || !null) return false;
      out = nullptr;
      return true;
    }
  }
  return false;
}

simdjson::dom::parser& dom_parser() {
  thread_local simdjson::dom::parser parser;
  return parser;
}

}  // namespace

std::optional<Json> simdjson_dom_read(std::string_view text) {
  if (has_negative_zero(text)) return std::nullopt;
  simdjson::dom::element root;
  if (dom_parser().parse(text.data(), text.size()).get(root)) return std::nullopt;
  Json out;
  if (!from_dom(root, out)) return std::nullopt;
  return out;
}

std::optional<Json> simdjson_ondemand_read(std::string_view text) {
  thread_local simdjson::ondemand::parser parser;
  // On-Demand reads past the end: the text goes into a padded copy, as the
  // DOM's parse() does itself.
  const simdjson::padded_string padded(text);
  simdjson::ondemand::document document;
  if (parser.iterate(padded).get(document)) return std::nullopt;
  Json out;
  // Nothing may follow the value: past it, the document has no location.
  const char* trailing = nullptr;
  if (!from_ondemand(document, out) || document.current_location().get(trailing) != simdjson::OUT_OF_BOUNDS) {
    return std::nullopt;
  }
  return out;
}

bool simdjson_dom_parse_only(std::string_view text) {
  simdjson::dom::element root;
  return !dom_parser().parse(text.data(), text.size()).get(root);
}

std::string_view simdjson_dom_kernel() { return simdjson::get_active_implementation()->name(); }

#define LIVESTATE_BENCH_TEXT(x) #x
#define LIVESTATE_BENCH_STRING(x) LIVESTATE_BENCH_TEXT(x)

// Not simdjson::builtin_implementation(): that one answers for the flags
// libsimdjson was compiled with, not this file's.
std::string_view simdjson_ondemand_kernel() { return LIVESTATE_BENCH_STRING(SIMDJSON_BUILTIN_IMPLEMENTATION); }

std::string_view simdjson_version() { return LIVESTATE_BENCH_STRING(SIMDJSON_VERSION); }

}  // namespace livestate::bench
