#pragma once

// Per-type lifecycle rules of the Buildbot data model: which events a type
// has, which of them create an entry, and which are allowed from the state an
// entry's body shows.

#include <cstdint>
#include <string>
#include <string_view>

#include "livestate/core/json.hpp"

namespace livestate::reconcile::detail {

enum class EventVerdict {
  allowed,    ///< the event may follow the entry's state
  violation,  ///< it may not: the view reloads the entry
  unknown,    ///< the type has no such event: the view reloads the entry
};

class Lifecycle {
 public:
  /// The rules of `type`; application types (kept in `resources`) have
  /// new/updated/deleted, types without rules accept every event.
  static Lifecycle of(std::string_view type);
  /// No rules: every event allowed; "new" and "started" create.
  static Lifecycle none() { return Lifecycle(Kind::free); }

  /// Does `event` create an entry (may it name an id the view lacks)?
  [[nodiscard]] bool creates(std::string_view event) const noexcept;
  /// Does `event` delete the entry?
  [[nodiscard]] bool deletes(std::string_view event) const noexcept;
  /// What of an entry's body its lifecycle looks at (complete, claimed,
  /// started), in a byte: a view keeps it beside the entry's compact body.
  using State = std::uint8_t;
  [[nodiscard]] State state_of(const Json& body) const;
  /// May `event` follow `current` (state_of() the entry's body; 0 for none)?
  [[nodiscard]] EventVerdict check(State current, std::string_view event) const;

 private:
  enum class Kind { buildrequests, builds, steps, buildsets, resources, free };
  explicit Lifecycle(Kind kind) : m_kind(kind) {}
  Kind m_kind;
};

}  // namespace livestate::reconcile::detail
