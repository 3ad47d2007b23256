#pragma once

// How a live view keeps its entries' bodies: as compact bytes, not as Json
// values. A Json object is a tree of map nodes, several allocations per field
// (about six times the body's JSON text for Buildbot's bodies); its bytes
// here take less than the text: each object key is a small number into a
// dictionary the view's bodies share (they use a few dozen keys between
// them), numbers are stored as they are held (no decimal formatting) and
// strings as they are. Decoding gives back exactly the Json that was encoded,
// number kinds included (integer, unsigned, floating point).
//
// Not thread-safe: a view uses it under the lock that guards its entries.

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "livestate/core/json.hpp"

namespace livestate::reconcile::detail {

class BodyCodec {
 public:
  /// `body` as bytes, written over `out` (its buffer is reused).
  void encode(const Json& body, std::string& out);
  /// The Json that `bytes` (encode()'s, by this codec) were made from.
  [[nodiscard]] Json decode(std::string_view bytes) const;

  /// Keys the dictionary holds (at most max_keys: past it, or for a key
  /// longer than max_key_length, the key is written out in each body, so
  /// that bodies with ever new keys can't grow the dictionary without end).
  [[nodiscard]] std::size_t keys() const noexcept { return m_keys.size(); }
  static constexpr std::size_t max_keys = 4096;
  static constexpr std::size_t max_key_length = 64;

 private:
  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view key) const noexcept { return std::hash<std::string_view>{}(key); }
  };

  void write(const Json& value, std::string& out);
  void write_key(const std::string& key, std::string& out);
  Json read(const char*& at) const;
  std::string_view read_key(const char*& at) const;

  std::unordered_map<std::string, std::uint32_t, KeyHash, std::equal_to<>> m_ids;
  std::vector<std::string> m_keys;
};

}  // namespace livestate::reconcile::detail
