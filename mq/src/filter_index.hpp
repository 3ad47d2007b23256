#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "livestate/core/filter.hpp"
#include "livestate/core/routing_key.hpp"

namespace livestate::mq::detail {

/// An index of filters, for routing: finding the values whose filter matches a
/// key costs about the key's length times the number of wildcard branches on
/// its path, not the number of filters. It is a trie over filter elements: at
/// each depth a key follows its own element's child and the wildcard child;
/// values whose filter ends at a node match keys of exactly that length, values
/// whose filter ends there with "#" match keys of that length or longer.
///
/// Element lookups use the hashes RoutingKey computed at construction, in an
/// open-addressing table with a power-of-two size (no division per lookup).
///
/// Not thread-safe, not even collect(): the owner locks.
template <class Value>
class FilterIndex final {
 public:
  void insert(const Filter& filter, Value value) {
    Node* node = &m_root;
    for (const auto& element : filter.elements()) {
      if (!element) {
        if (!node->wildcard) node->wildcard = std::make_unique<Node>();
        node = node->wildcard.get();
      } else {
        node = &node->children.child_for(*element, RoutingKey::hash_element(*element));
      }
    }
    (filter.any_suffix() ? node->suffix_values : node->exact_values).push_back(value);
    ++m_size;
  }

  /// Removes one value inserted with this filter; false when it was not there.
  bool erase(const Filter& filter, Value value) {
    if (!erase_at(m_root, filter, 0, value)) return false;
    --m_size;
    return true;
  }

  /// Appends every value whose filter matches `key` to `out`; returns how many
  /// distinct filter endings contributed, so a caller that wants a stable order
  /// across them knows when it must sort.
  std::size_t collect(const RoutingKey& key, std::vector<Value>& out) const {
    // Walk down the key's own elements; remember each wildcard branch passed
    // on the way and walk those afterwards. No recursion: this is the hot path.
    std::size_t sources = 0;
    m_branches.clear();
    const Node* node = &m_root;
    std::size_t depth = 0;
    while (true) {
      while (true) {
        sources += append(node->suffix_values, out);
        if (depth == key.size()) {
          sources += append(node->exact_values, out);
          break;
        }
        if (node->wildcard) m_branches.push_back({node->wildcard.get(), depth + 1});
        node = node->children.find(key[depth], key.element_hash(depth));
        if (!node) break;
        ++depth;
      }
      if (m_branches.empty()) return sources;
      node = m_branches.back().node;
      depth = m_branches.back().depth;
      m_branches.pop_back();
    }
  }

  [[nodiscard]] std::size_t size() const noexcept { return m_size; }

 private:
  struct Node;

  // Open addressing with linear probing and backward-shift deletion.
  class Children {
   public:
    Node* find(std::string_view element, std::uint64_t hash) const noexcept {
      if (m_count == 0) return nullptr;
      const std::size_t mask = m_slots.size() - 1;
      for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
        const Slot& slot = m_slots[i];
        if (!slot.node) return nullptr;
        if (slot.hash == hash && same(slot.element, element)) return slot.node.get();
      }
    }

    Node& child_for(const std::string& element, std::uint64_t hash) {
      if (Node* existing = find(element, hash)) return *existing;
      if ((m_count + 1) * 4 > m_slots.size() * 3) grow();
      Slot& slot = place(hash);
      slot.hash = hash;
      slot.element = element;
      slot.node = std::make_unique<Node>();
      ++m_count;
      return *slot.node;
    }

    void erase(std::string_view element, std::uint64_t hash) noexcept {
      const std::size_t mask = m_slots.size() - 1;
      std::size_t i = hash & mask;
      while (true) {
        if (!m_slots[i].node) return;
        if (m_slots[i].hash == hash && same(m_slots[i].element, element)) break;
        i = (i + 1) & mask;
      }
      m_slots[i] = Slot{};
      --m_count;
      // Shift later members of the probe run back so lookups never stop early.
      for (std::size_t j = (i + 1) & mask; m_slots[j].node; j = (j + 1) & mask) {
        const std::size_t home = m_slots[j].hash & mask;
        const bool movable = (j > i) ? (home <= i || home > j) : (home <= i && home > j);
        if (movable) {
          m_slots[i] = std::move(m_slots[j]);
          m_slots[j] = Slot{};
          i = j;
        }
      }
    }

    [[nodiscard]] bool empty() const noexcept { return m_count == 0; }

   private:
    // The hashes already matched, so this only confirms. Elements are short:
    // compare them a word at a time with plain loads (the last word may
    // overlap the one before), which beats both a byte loop and a memcmp call.
    static bool same(std::string_view a, std::string_view b) noexcept {
      const std::size_t n = a.size();
      if (n != b.size()) return false;
      const char* x = a.data();
      const char* y = b.data();
      if (n >= 8) {
        for (std::size_t i = 0; i + 8 < n; i += 8) {
          if (load<std::uint64_t>(x + i) != load<std::uint64_t>(y + i)) return false;
        }
        return load<std::uint64_t>(x + n - 8) == load<std::uint64_t>(y + n - 8);
      }
      if (n >= 4) {
        return load<std::uint32_t>(x) == load<std::uint32_t>(y) &&
               load<std::uint32_t>(x + n - 4) == load<std::uint32_t>(y + n - 4);
      }
      for (std::size_t i = 0; i < n; ++i) {
        if (x[i] != y[i]) return false;
      }
      return true;
    }

    template <class Word>
    static Word load(const char* at) noexcept {
      Word word;
      std::memcpy(&word, at, sizeof word);
      return word;
    }

    struct Slot {
      std::uint64_t hash = 0;
      std::string element;
      std::unique_ptr<Node> node;
    };

    Slot& place(std::uint64_t hash) {
      const std::size_t mask = m_slots.size() - 1;
      std::size_t i = hash & mask;
      while (m_slots[i].node) i = (i + 1) & mask;
      return m_slots[i];
    }

    void grow() {
      std::vector<Slot> old = std::exchange(m_slots, std::vector<Slot>(m_slots.empty() ? 4 : m_slots.size() * 2));
      for (auto& slot : old) {
        if (slot.node) place(slot.hash) = std::move(slot);
      }
    }

    std::vector<Slot> m_slots;
    std::size_t m_count = 0;
  };

  struct Node {
    Children children;
    std::unique_ptr<Node> wildcard;
    std::vector<Value> exact_values;
    std::vector<Value> suffix_values;

    [[nodiscard]] bool empty() const noexcept {
      return children.empty() && !wildcard && exact_values.empty() && suffix_values.empty();
    }
  };

  static std::size_t append(const std::vector<Value>& values, std::vector<Value>& out) {
    if (values.empty()) return 0;
    if (values.size() == 1) {
      out.push_back(values.front());
    } else {
      out.insert(out.end(), values.begin(), values.end());
    }
    return 1;
  }

  static bool remove_value(std::vector<Value>& values, Value value) {
    auto it = std::find(values.begin(), values.end(), value);
    if (it == values.end()) return false;
    values.erase(it);  // keeps insertion order, which is delivery order
    return true;
  }

  static bool erase_at(Node& node, const Filter& filter, std::size_t depth, Value value) {
    if (depth == filter.size()) {
      return remove_value(filter.any_suffix() ? node.suffix_values : node.exact_values, value);
    }
    const auto& element = filter[depth];
    if (!element) {
      if (!node.wildcard || !erase_at(*node.wildcard, filter, depth + 1, value)) return false;
      if (node.wildcard->empty()) node.wildcard.reset();
      return true;
    }
    const auto hash = RoutingKey::hash_element(*element);
    Node* child = node.children.find(*element, hash);
    if (!child || !erase_at(*child, filter, depth + 1, value)) return false;
    if (child->empty()) node.children.erase(*element, hash);
    return true;
  }

  struct Branch {
    const Node* node;
    std::size_t depth;
  };

  Node m_root;
  std::size_t m_size = 0;
  mutable std::vector<Branch> m_branches;  // collect()'s scratch, kept to avoid allocating
};

}  // namespace livestate::mq::detail
