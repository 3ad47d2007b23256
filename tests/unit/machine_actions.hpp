#pragma once

// What the sans-io machines' tests share (the NOTIFY listener's and the
// logical stream's): picking actions of a kind out of what an event
// returned, what their Deliver actions hand over, and the timers they armed.

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "delivery.hpp"

namespace livestate::test {

template <class Action, class Actions>
std::vector<Action> all_of(const Actions& actions) {
  std::vector<Action> found;
  for (const auto& each : actions) {
    if (const auto* wanted = std::get_if<Action>(&each)) found.push_back(*wanted);
  }
  return found;
}

template <class Action, class Actions>
bool has(const Actions& actions) {
  return !all_of<Action>(actions).empty();
}

// What the Deliver actions hand over, as "key" for messages and
// "control:kind" for events.
template <class Deliver, class Actions>
std::vector<std::string> delivered(const Actions& actions) {
  std::vector<std::string> items;
  for (const auto& deliver : all_of<Deliver>(actions)) {
    for (const auto& item : deliver.items) {
      if (const auto* delivery = std::get_if<mq::detail::Delivery>(&item)) {
        items.push_back(delivery->key.str());
      } else {
        items.push_back("control:" + std::string(to_string(std::get<mq::ControlEvent>(item).kind)));
      }
    }
  }
  return items;
}

template <class Deliver, class Actions>
std::vector<mq::ControlEvent> events(const Actions& actions) {
  std::vector<mq::ControlEvent> found;
  for (const auto& deliver : all_of<Deliver>(actions)) {
    for (const auto& item : deliver.items) {
      if (const auto* event = std::get_if<mq::ControlEvent>(&item)) found.push_back(*event);
    }
  }
  return found;
}

/// The timers a machine armed (and when) and cancelled, and the time it
/// lives in.
template <class ArmTimer, class CancelTimer, class Timer, std::size_t count>
class TimerBook {
 public:
  using Clock = std::chrono::steady_clock;

  template <class Actions>
  void note(const Actions& actions) {
    for (const auto& each : actions) {
      if (const auto* armed = std::get_if<ArmTimer>(&each)) {
        m_timers[index(armed->timer)] = Armed{*armed, now};
      } else if (const auto* cancelled = std::get_if<CancelTimer>(&each)) {
        m_timers[index(cancelled->timer)].reset();
      }
    }
  }
  [[nodiscard]] bool armed(Timer timer) const { return m_timers[index(timer)].has_value(); }
  [[nodiscard]] Clock::duration delay(Timer timer) const { return m_timers[index(timer)]->timer.after; }
  [[nodiscard]] std::uint64_t token(Timer timer) const { return m_timers[index(timer)]->timer.token; }
  /// Lets time pass until `timer` fires; its token, to fire it with.
  std::uint64_t expire(Timer timer) {
    auto& armed = m_timers[index(timer)];
    REQUIRE(armed.has_value());
    const auto token = armed->timer.token;
    now = std::max(now, armed->at + armed->timer.after);
    armed.reset();
    return token;
  }

  Clock::time_point now = Clock::time_point{} + std::chrono::hours(1);

 private:
  struct Armed {
    ArmTimer timer;
    Clock::time_point at;
  };
  static std::size_t index(Timer timer) { return static_cast<std::size_t>(timer); }
  std::array<std::optional<Armed>, count> m_timers;
};

}  // namespace livestate::test
