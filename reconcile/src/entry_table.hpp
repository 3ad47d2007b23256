#pragma once

// A live view's entries by id: each its revision, the byte of its body that
// the lifecycle rules look at, and its body in BodyCodec's compact bytes,
// decoded only when someone asks for it (get(), entries(), a change callback's
// `before`). So an entry costs about its body's size, and applying a message
// costs the same however many entries the view holds (a hash table).
//
// Not thread-safe: part of the view's rules, used under the view's lock.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "body_codec.hpp"
#include "lifecycle.hpp"
#include "livestate/core/json.hpp"

namespace livestate::reconcile::detail {

class EntryTable {
 public:
  struct Entry {
    std::int64_t revision = 0;
    Lifecycle::State state = 0;
    std::uint32_t size = 0;
    std::unique_ptr<char[]> bytes;
    [[nodiscard]] std::string_view encoded() const noexcept { return {bytes.get(), size}; }
  };
  using Map = std::unordered_map<std::string, Entry>;
  using iterator = Map::iterator;
  using const_iterator = Map::const_iterator;

  [[nodiscard]] std::size_t size() const noexcept { return m_entries.size(); }
  [[nodiscard]] bool empty() const noexcept { return m_entries.empty(); }
  [[nodiscard]] std::size_t count(const std::string& id) const { return m_entries.count(id); }
  /// std::out_of_range when there is none.
  [[nodiscard]] const Entry& at(const std::string& id) const { return m_entries.at(id); }
  [[nodiscard]] iterator find(const std::string& id) { return m_entries.find(id); }
  [[nodiscard]] const_iterator find(const std::string& id) const { return m_entries.find(id); }
  [[nodiscard]] iterator begin() noexcept { return m_entries.begin(); }
  [[nodiscard]] iterator end() noexcept { return m_entries.end(); }
  [[nodiscard]] const_iterator begin() const noexcept { return m_entries.begin(); }
  [[nodiscard]] const_iterator end() const noexcept { return m_entries.end(); }

  /// The entry's body, decoded.
  [[nodiscard]] Json body(const Entry& entry) const { return m_codec.decode(entry.encoded()); }

  /// `id` now holds `body` at `revision`. True when it was added (else
  /// changed); `before` (when given) receives the body it held, null for none.
  bool set(const std::string& id, const Json& body, std::int64_t revision, Lifecycle::State state, Json* before);
  /// Removes the entry; `before` (when given) receives its body. Returns the
  /// next entry.
  iterator erase(iterator entry, Json* before);

  /// Does `entry` hold `body` (equal as Json)?
  [[nodiscard]] bool holds(const Entry& entry, const Json& body);

  /// Every entry, ordered by id.
  [[nodiscard]] std::vector<const Map::value_type*> sorted() const;

 private:
  BodyCodec m_codec;
  Map m_entries;
  std::string m_scratch;  // encode()'s buffer, reused
};

}  // namespace livestate::reconcile::detail
