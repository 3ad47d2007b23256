#include "body_codec.hpp"

#include <cstring>
#include <stdexcept>

namespace livestate::reconcile::detail {

namespace {

// Each value starts with a tag byte. Small whole numbers are the tag itself
// (a body's ids, results, priorities and flags are mostly small), of either
// kind: nlohmann parses "7" as unsigned, and the store builds 7 as signed.
enum Tag : std::uint8_t {
  null_tag = 0,
  false_tag,
  true_tag,
  integer_tag,          // zigzag varint
  unsigned_tag,         // varint
  float_tag,            // 8 bytes as held
  string_tag,           // varint length, bytes
  array_tag,            // varint count, values
  object_tag,           // varint count, (key, value)…; a key is a varint: id << 1, or length << 1 | 1 and its bytes
  binary_tag,           // varint length, bytes, then 0, or 1 and the subtype as a varint
  small_integer = 16,   // 16 + n: integer n, 0 <= n < 112
  small_unsigned = 128  // 128 + n: unsigned n, 0 <= n < 128
};
constexpr std::uint64_t small_integers = small_unsigned - small_integer;
constexpr std::uint64_t small_unsigneds = 256 - small_unsigned;

void put_tag(std::string& out, std::uint64_t tag) { out.push_back(static_cast<char>(static_cast<std::uint8_t>(tag))); }

void put_varint(std::string& out, std::uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>(static_cast<std::uint8_t>(value | 0x80)));
    value >>= 7;
  }
  out.push_back(static_cast<char>(static_cast<std::uint8_t>(value)));
}

std::uint64_t get_varint(const char*& at) {
  std::uint64_t value = 0;
  for (unsigned shift = 0;; shift += 7) {
    const auto byte = static_cast<std::uint8_t>(*at++);
    value |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return value;
  }
}

void put_bytes(std::string& out, const void* bytes, std::size_t size) {
  put_varint(out, size);
  out.append(static_cast<const char*>(bytes), size);
}

std::string_view get_bytes(const char*& at) {
  const auto size = static_cast<std::size_t>(get_varint(at));
  const std::string_view bytes(at, size);
  at += size;
  return bytes;
}

}  // namespace

void BodyCodec::encode(const Json& body, std::string& out) {
  out.clear();
  write(body, out);
}

Json BodyCodec::decode(std::string_view bytes) const {
  const char* at = bytes.data();
  return read(at);
}

void BodyCodec::write(const Json& value, std::string& out) {
  switch (value.type()) {
    case Json::value_t::null:
    case Json::value_t::discarded: put_tag(out, null_tag); return;
    case Json::value_t::boolean: put_tag(out, value.get<bool>() ? true_tag : false_tag); return;
    case Json::value_t::number_integer: {
      const auto number = value.get<std::int64_t>();
      if (number >= 0 && static_cast<std::uint64_t>(number) < small_integers) {
        put_tag(out, small_integer + static_cast<std::uint64_t>(number));
        return;
      }
      put_tag(out, integer_tag);
      put_varint(out, (static_cast<std::uint64_t>(number) << 1) ^ static_cast<std::uint64_t>(number >> 63));
      return;
    }
    case Json::value_t::number_unsigned: {
      const auto number = value.get<std::uint64_t>();
      if (number < small_unsigneds) {
        put_tag(out, small_unsigned + number);
        return;
      }
      put_tag(out, unsigned_tag);
      put_varint(out, number);
      return;
    }
    case Json::value_t::number_float: {
      const double number = value.get<double>();
      put_tag(out, float_tag);
      char bytes[sizeof number];
      std::memcpy(bytes, &number, sizeof number);
      out.append(bytes, sizeof bytes);
      return;
    }
    case Json::value_t::string: {
      const auto& text = value.get_ref<const std::string&>();
      put_tag(out, string_tag);
      put_bytes(out, text.data(), text.size());
      return;
    }
    case Json::value_t::array:
      put_tag(out, array_tag);
      put_varint(out, value.size());
      for (const auto& element : value) write(element, out);
      return;
    case Json::value_t::object:
      put_tag(out, object_tag);
      put_varint(out, value.size());
      for (const auto& [key, element] : value.get_ref<const Json::object_t&>()) {
        write_key(key, out);
        write(element, out);
      }
      return;
    case Json::value_t::binary: {
      const auto& binary = value.get_binary();
      put_tag(out, binary_tag);
      put_bytes(out, binary.data(), binary.size());
      out.push_back(binary.has_subtype() ? 1 : 0);
      if (binary.has_subtype()) put_varint(out, binary.subtype());
      return;
    }
  }
  throw std::logic_error("BodyCodec: a Json value of an unknown kind");
}

void BodyCodec::write_key(const std::string& key, std::string& out) {
  const auto known = m_ids.find(key);
  if (known != m_ids.end()) {
    put_varint(out, std::uint64_t{known->second} << 1);
    return;
  }
  if (m_keys.size() < max_keys && key.size() <= max_key_length) {
    const auto id = static_cast<std::uint32_t>(m_keys.size());
    m_keys.push_back(key);
    m_ids.emplace(key, id);
    put_varint(out, std::uint64_t{id} << 1);
    return;
  }
  put_varint(out, (std::uint64_t{key.size()} << 1) | 1);
  out.append(key);
}

std::string_view BodyCodec::read_key(const char*& at) const {
  const auto word = get_varint(at);
  if ((word & 1) == 0) return m_keys[static_cast<std::size_t>(word >> 1)];
  const std::string_view key(at, static_cast<std::size_t>(word >> 1));
  at += key.size();
  return key;
}

Json BodyCodec::read(const char*& at) const {
  const auto tag = static_cast<std::uint8_t>(*at++);
  if (tag >= small_unsigned) return Json(std::uint64_t{tag} - small_unsigned);
  if (tag >= small_integer) return Json(std::int64_t{tag} - small_integer);
  switch (tag) {
    case null_tag: return Json(nullptr);
    case false_tag: return Json(false);
    case true_tag: return Json(true);
    case integer_tag: {
      const auto zigzag = get_varint(at);
      return Json(static_cast<std::int64_t>(zigzag >> 1) ^ -static_cast<std::int64_t>(zigzag & 1));
    }
    case unsigned_tag: return Json(get_varint(at));
    case float_tag: {
      double number = 0;
      std::memcpy(&number, at, sizeof number);
      at += sizeof number;
      return Json(number);
    }
    case string_tag: return Json(std::string(get_bytes(at)));
    case array_tag: {
      const auto count = static_cast<std::size_t>(get_varint(at));
      Json::array_t array;
      array.reserve(count);
      for (std::size_t i = 0; i < count; ++i) array.push_back(read(at));
      return Json(std::move(array));
    }
    case object_tag: {
      Json object(Json::value_t::object);
      auto& fields = object.get_ref<Json::object_t&>();
      for (auto count = get_varint(at); count > 0; --count) {
        std::string key(read_key(at));
        // Written in the map's order: each goes at the end.
        fields.emplace_hint(fields.end(), std::move(key), read(at));
      }
      return object;
    }
    case binary_tag: {
      const auto bytes = get_bytes(at);
      Json::binary_t::container_type data(bytes.begin(), bytes.end());
      if (*at++ == 0) return Json::binary(std::move(data));
      return Json::binary(std::move(data), static_cast<Json::binary_t::subtype_type>(get_varint(at)));
    }
    default: break;
  }
  throw std::logic_error("BodyCodec: bytes this codec did not write");
}

}  // namespace livestate::reconcile::detail
