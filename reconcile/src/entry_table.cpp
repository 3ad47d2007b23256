#include "entry_table.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace livestate::reconcile::detail {

bool EntryTable::set(const std::string& id, const Json& body, std::int64_t revision, Lifecycle::State state,
                     Json* before) {
  m_codec.encode(body, m_scratch);
  if (m_scratch.size() > std::numeric_limits<std::uint32_t>::max()) {
    throw std::length_error("a live view's entry of 4 GiB or more");
  }
  auto [entry, added] = m_entries.try_emplace(id);
  Entry& held = entry->second;
  if (before != nullptr) *before = added ? Json(nullptr) : this->body(held);
  // A buffer of the exact size: a body is rewritten whole, never grown.
  if (added || held.size != m_scratch.size()) {
    held.bytes = std::make_unique_for_overwrite<char[]>(m_scratch.size());
    held.size = static_cast<std::uint32_t>(m_scratch.size());
  }
  std::memcpy(held.bytes.get(), m_scratch.data(), m_scratch.size());
  held.revision = revision;
  held.state = state;
  return added;
}

EntryTable::iterator EntryTable::erase(iterator entry, Json* before) {
  if (before != nullptr) *before = body(entry->second);
  return m_entries.erase(entry);
}

bool EntryTable::holds(const Entry& entry, const Json& body) {
  // The same bytes are the same body; other bytes may still be an equal one
  // (1 and 1.0 are equal Json, not equal bytes).
  m_codec.encode(body, m_scratch);
  if (m_scratch == entry.encoded()) return true;
  return this->body(entry) == body;
}

std::vector<const EntryTable::Map::value_type*> EntryTable::sorted() const {
  std::vector<const Map::value_type*> ordered;
  ordered.reserve(m_entries.size());
  for (const auto& entry : m_entries) ordered.push_back(&entry);
  std::sort(ordered.begin(), ordered.end(), [](const auto* a, const auto* b) { return a->first < b->first; });
  return ordered;
}

}  // namespace livestate::reconcile::detail
