#include "lifecycle.hpp"

#include "livestate/db/store.hpp"

namespace livestate::reconcile::detail {

namespace {

bool flag(const Json& body, const char* field) {
  const auto found = body.find(field);
  return found != body.end() && found->is_boolean() && found->get<bool>();
}

bool present(const Json& body, const char* field) {
  const auto found = body.find(field);
  return found != body.end() && !found->is_null();
}

constexpr Lifecycle::State complete_bit = 1;
constexpr Lifecycle::State claimed_bit = 2;
constexpr Lifecycle::State started_bit = 4;

}  // namespace

Lifecycle Lifecycle::of(std::string_view type) {
  if (type == "buildrequests") return Lifecycle(Kind::buildrequests);
  if (type == "builds") return Lifecycle(Kind::builds);
  if (type == "steps") return Lifecycle(Kind::steps);
  if (type == "buildsets") return Lifecycle(Kind::buildsets);
  if (!db::Store::is_builtin_type(type)) return Lifecycle(Kind::resources);
  return Lifecycle(Kind::free);  // masters, builders, workers
}

bool Lifecycle::creates(std::string_view event) const noexcept {
  // Masters and builders announce themselves as "started".
  return event == "new" || (m_kind == Kind::free && event == "started");
}

bool Lifecycle::deletes(std::string_view event) const noexcept {
  return m_kind == Kind::resources && event == "deleted";
}

Lifecycle::State Lifecycle::state_of(const Json& body) const {
  if (m_kind == Kind::free || m_kind == Kind::resources || !body.is_object()) return 0;
  return static_cast<State>((flag(body, "complete") ? complete_bit : 0) | (flag(body, "claimed") ? claimed_bit : 0) |
                            (present(body, "started_at") ? started_bit : 0));
}

EventVerdict Lifecycle::check(State current, std::string_view event) const {
  const auto allowed = [](bool yes) { return yes ? EventVerdict::allowed : EventVerdict::violation; };
  const bool complete = (current & complete_bit) != 0;
  switch (m_kind) {
    case Kind::buildrequests: {
      // new -> claimed -> complete (-> cancel), claimed -> unclaimed -> claimed.
      const bool claimed = (current & claimed_bit) != 0;
      if (event == "claimed") return allowed(!complete && !claimed);
      if (event == "unclaimed") return allowed(!complete && claimed);
      if (event == "complete") return allowed(!complete && claimed);
      if (event == "cancel") return allowed(complete);
      if (event == "new") return EventVerdict::violation;
      return EventVerdict::unknown;
    }
    case Kind::builds: {
      // new -> update* -> finished
      if (event == "update" || event == "finished") return allowed(!complete);
      if (event == "new") return EventVerdict::violation;
      return EventVerdict::unknown;
    }
    case Kind::steps: {
      // new -> started -> updated* -> finished
      const bool started = (current & started_bit) != 0;
      if (event == "started") return allowed(!started && !complete);
      if (event == "updated" || event == "finished") return allowed(started && !complete);
      if (event == "new") return EventVerdict::violation;
      return EventVerdict::unknown;
    }
    case Kind::buildsets: {
      // new -> complete
      if (event == "complete") return allowed(!complete);
      if (event == "new") return EventVerdict::violation;
      return EventVerdict::unknown;
    }
    case Kind::resources: {
      if (event == "updated" || event == "deleted") return EventVerdict::allowed;
      // A "new" for an entry the view holds: it was deleted and made again,
      // and the deletion never arrived.
      if (event == "new") return EventVerdict::violation;
      return EventVerdict::unknown;
    }
    case Kind::free: return EventVerdict::allowed;
  }
  return EventVerdict::allowed;
}

}  // namespace livestate::reconcile::detail
