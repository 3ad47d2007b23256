#include "fault_core.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "livestate/core/log.hpp"

namespace livestate::mq::detail {
namespace {

constexpr std::string_view log_component = "mq.faulty";
constexpr std::string_view partition_reason = "partition injected by FaultyConnector";
constexpr std::string_view drop_reason = "drop injected by FaultyConnector";

// The decorators whose callbacks run on this thread, innermost first.
struct CallbackFrame {
  const FaultCore* core;
  CallbackFrame* outer;
};
thread_local CallbackFrame* t_frames = nullptr;

// splitmix64's finalizer: spreads a seed and a consumer's index over the state.
std::uint64_t mix(std::uint64_t value) noexcept {
  value += 0x9e3779b97f4a7c15ULL;
  value = (value ^ (value >> 30)) * 0xbf58476d1ce4e5b9ULL;
  value = (value ^ (value >> 27)) * 0x94d049bb133111ebULL;
  return value ^ (value >> 31);
}

}  // namespace

bool FaultCore::inside_callback() const noexcept {
  for (auto* frame = t_frames; frame; frame = frame->outer) {
    if (frame->core == this) return true;
  }
  return false;
}

void FaultCore::start_fault_thread() {
  // The thread keeps the core alive: a callback on it may destroy the decorator.
  m_thread = std::thread([self = shared_from_this()] { self->run_fault_thread(); });
}

std::shared_ptr<fault::Lane> FaultCore::add_lane(Callback callback, ControlCallback on_control) {
  auto lane = std::make_shared<Lane>(std::move(callback), std::move(on_control));
  {
    std::lock_guard lock(m_mutex);
    if (m_closed)
      throw std::logic_error("livestate::mq::FaultyConnector::start_consuming: the decorator is being destroyed");
    lane->random.seed(mix(m_options.seed ^ mix(m_next_index++)));
    lane->next_partition = Clock::now() + m_options.partition_every;
    m_lanes.push_back(lane);
  }
  if (m_options.partition_every.count() > 0) m_wake.notify_all();
  return lane;
}

void FaultCore::attach(const std::shared_ptr<Lane>& lane, std::unique_ptr<Consumer> inner) {
  {
    std::lock_guard lock(m_mutex);
    if (!lane->stopped) {
      lane->inner = std::move(inner);
      return;
    }
  }
  inner.reset();  // stopped (or the decorator closed) during start_consuming
}

void FaultCore::on_message(Lane& lane, const RoutingKey& key, const Json& body) {
  std::unique_lock lock(m_mutex);
  if (lane.stopped) return;
  const auto now = Clock::now();
  advance_partition(lane, now, false);
  release_due(lane, now, false);  // what is late comes before this one
  receive(lane, key, body, now);
  drain(lock, lane);
}

void FaultCore::on_inner_control(Lane& lane, const ControlEvent& event) {
  std::unique_lock lock(m_mutex);
  if (lane.stopped) return;
  lane.outbox.emplace_back(event);
  drain(lock, lane);
}

void FaultCore::advance_partition(Lane& lane, Clock::time_point now, bool end_now) {
  if (m_options.partition_every.count() == 0) return;
  end_now = end_now || !m_enabled;  // faults were just disabled: set_enabled's pass may not have come yet
  for (;;) {
    if (!lane.in_partition) {
      if (!m_enabled || now < lane.next_partition) return;
      lane.in_partition = true;
      lane.next_partition += m_options.partition_length;
      lane.partition_missed = 0;
      ++m_stats.partitions;
    }
    if (now < lane.next_partition && !end_now) return;
    lane.in_partition = false;
    lane.next_partition = std::min(now, lane.next_partition) + m_options.partition_every;
    if (lane.on_control) {
      lane.outbox.emplace_back(
          ControlEvent{ControlKind::reconnected, std::string(partition_reason), std::nullopt, lane.partition_missed});
      ++m_stats.control_events;
    }
    if (end_now) return;
  }
}

void FaultCore::release_due(Lane& lane, Clock::time_point now, bool everything) {
  // In held order: what is released together keeps the order it was held in.
  auto due = [&](const Held& held) {
    if (everything) return true;
    if (held.deadline) return *held.deadline <= now;
    return held.release_at_arrival <= lane.arrivals;
  };
  for (auto it = lane.held.begin(); it != lane.held.end();) {
    if (due(*it)) {
      lane.outbox.emplace_back(std::move(it->message));
      it = lane.held.erase(it);
      --m_stats.held;
    } else {
      ++it;
    }
  }
}

void FaultCore::receive(Lane& lane, const RoutingKey& key, const Json& body, Clock::time_point now) {
  ++lane.arrivals;
  if (lane.in_partition) {
    ++lane.partition_missed;
    ++m_stats.lost_to_partitions;
  } else if (!m_enabled) {
    lane.outbox.emplace_back(Message{key, body});
  } else {
    // Every draw is made for every message, so that turning one fault on or
    // off does not change which messages the others hit.
    const double drop = lane.draw();
    const double duplicate = lane.draw();
    const double reorder = lane.draw();
    const double delay = lane.draw();
    const std::uint64_t extent = lane.random();
    const int copies = duplicate < m_options.duplicate ? 2 : 1;
    if (drop < m_options.drop) {
      ++m_stats.dropped;
      if (m_options.report_drops && lane.on_control) ++lane.unreported_drops;
      release_due(lane, now, false);
      return;  // told with the next message that gets through
    } else if (reorder < m_options.reorder) {
      const std::uint64_t later = 1 + extent % m_options.reorder_window;
      for (int copy = 0; copy < copies; ++copy) lane.held.push_back({Message{key, body}, lane.arrivals + later, {}});
      ++m_stats.reordered;
      m_stats.held += static_cast<std::uint64_t>(copies);
      if (copies == 2) ++m_stats.duplicated;
    } else if (delay < m_options.delay) {
      const auto max = static_cast<std::uint64_t>(m_options.max_delay.count());
      const auto deadline = now + std::chrono::milliseconds(1 + extent % max);
      for (int copy = 0; copy < copies; ++copy) lane.held.push_back({Message{key, body}, 0, deadline});
      ++m_stats.delayed;
      m_stats.held += static_cast<std::uint64_t>(copies);
      if (copies == 2) ++m_stats.duplicated;
      if (!m_thread_wake || deadline < *m_thread_wake) m_wake.notify_all();
    } else {
      for (int copy = 0; copy < copies; ++copy) lane.outbox.emplace_back(Message{key, body});
      if (copies == 2) ++m_stats.duplicated;
    }
  }
  // Held messages whose later messages have now all arrived follow this one.
  release_due(lane, now, false);
  report_drops(lane);
}

// The drops since the last report, as one gap event after what is queued.
void FaultCore::report_drops(Lane& lane) {
  if (lane.unreported_drops == 0) return;
  lane.outbox.emplace_back(
      ControlEvent{ControlKind::gap, std::string(drop_reason), std::nullopt, lane.unreported_drops});
  lane.unreported_drops = 0;
  ++m_stats.control_events;
}

void FaultCore::drain(std::unique_lock<std::mutex>& lock, Lane& lane) noexcept {
  if (lane.draining) return;  // its drainer delivers what was added, in order
  lane.draining = true;
  CallbackFrame frame{this, t_frames};
  t_frames = &frame;
  while (!lane.stopped && !lane.outbox.empty()) {
    Delivery delivery = std::move(lane.outbox.front());
    lane.outbox.pop_front();
    lane.in_callback = true;
    lock.unlock();
    const bool returned = invoke(lane, delivery);
    lock.lock();
    lane.in_callback = false;
    if (returned) {
      ++m_stats.delivered;
    } else {
      ++m_stats.callback_errors;
    }
    if (m_waiters > 0) m_callback_done.notify_all();
  }
  t_frames = frame.outer;
  lane.draining = false;
  if (m_waiters > 0) m_callback_done.notify_all();
}

bool FaultCore::invoke(Lane& lane, const Delivery& delivery) noexcept {
  const auto* message = std::get_if<Message>(&delivery);
  auto report = [&](const char* what) noexcept {
    if (!log_enabled(LogLevel::error)) return;
    try {
      std::string line = "a consumer's callback threw on ";
      line += message ? message->key.str() : "a control event";
      line += what ? std::string(": ") + what : std::string(" (a non-standard exception)");
      log(LogLevel::error, log_component, line);
    } catch (...) {
      log(LogLevel::error, log_component, "a consumer threw (no memory to say more)");
    }
  };
  try {
    if (message) {
      lane.callback(message->key, message->body);
    } else {
      lane.on_control(std::get<ControlEvent>(delivery));
    }
    return true;
  } catch (const std::exception& error) {
    report(error.what());
  } catch (...) {
    report(nullptr);
  }
  return false;
}

std::unique_ptr<Consumer> FaultCore::withdraw(Lane& lane) noexcept {
  lane.stopped = true;
  m_stats.held -= lane.held.size();
  lane.held.clear();
  lane.outbox.clear();
  std::erase_if(m_lanes, [&](const std::shared_ptr<Lane>& each) { return each.get() == &lane; });
  return std::move(lane.inner);
}

void FaultCore::wait_for_callback(std::unique_lock<std::mutex>& lock, const Lane& lane) {
  // From inside one of this decorator's callbacks, never: that callback may be
  // this lane's own, or one that the running callback waits for.
  if (inside_callback()) return;
  ++m_waiters;
  m_callback_done.wait(lock, [&] { return !lane.in_callback; });
  --m_waiters;
}

void FaultCore::stop(const std::shared_ptr<Lane>& lane) {
  std::unique_ptr<Consumer> inner;
  {
    std::lock_guard lock(m_mutex);
    if (lane->stopped) return;
    inner = withdraw(*lane);
  }
  // Waits for the inner connector's delivery in progress in another thread.
  inner.reset();
  std::unique_lock lock(m_mutex);
  wait_for_callback(lock, *lane);
}

void FaultCore::close() noexcept {
  std::vector<std::shared_ptr<Lane>> lanes;
  std::vector<std::unique_ptr<Consumer>> inners;
  {
    std::lock_guard lock(m_mutex);
    m_closed = true;
    lanes = m_lanes;
    for (auto& lane : lanes) inners.push_back(withdraw(*lane));
  }
  m_wake.notify_all();
  if (m_thread.joinable()) {
    // Destroyed by a callback: the fault thread may be that callback's, or
    // be waiting for it (its own callback producing through a SimpleMQ whose
    // dispatcher this thread is). It ends by itself and keeps the core until
    // then.
    if (inside_callback() || m_thread.get_id() == std::this_thread::get_id()) {
      m_thread.detach();
    } else {
      m_thread.join();
    }
  }
  inners.clear();
  {
    std::unique_lock lock(m_mutex);
    for (const auto& lane : lanes) wait_for_callback(lock, *lane);
  }
}

void FaultCore::set_enabled(bool enabled) {
  {
    std::lock_guard lock(m_mutex);
    if (m_enabled == enabled) return;
    m_enabled = enabled;
    if (enabled) {
      const auto now = Clock::now();
      for (auto& lane : m_lanes) lane->next_partition = now + m_options.partition_every;
    }
  }
  if (enabled) {
    m_wake.notify_all();
  } else {
    pass(Pass::end_partitions);
  }
}

void FaultCore::pass(Pass kind) {
  const auto self = shared_from_this();      // a callback may destroy the decorator
  std::vector<std::shared_ptr<Lane>> lanes;  // released after the mutex: a lane's last owner destroys its callbacks
  std::unique_lock lock(m_mutex);
  lanes = m_lanes;
  pass_locked(lock, lanes, kind);
  lock.unlock();
}

void FaultCore::pass_locked(std::unique_lock<std::mutex>& lock, const std::vector<std::shared_ptr<Lane>>& lanes,
                            Pass kind) {
  const auto now = Clock::now();
  for (const auto& lane : lanes) {
    if (lane->stopped) continue;
    advance_partition(*lane, now, kind == Pass::end_partitions);
    release_due(*lane, now, kind == Pass::flush);
    if (kind == Pass::flush) report_drops(*lane);
    drain(lock, *lane);
    // Another thread was delivering to this lane: what this pass released is
    // its to deliver, and the caller of flush() expects it delivered on return.
    if (kind != Pass::timer && lane->draining && !inside_callback()) {
      ++m_waiters;
      m_callback_done.wait(lock, [&] { return !lane->draining || lane->stopped; });
      --m_waiters;
    }
  }
}

std::optional<fault::Clock::time_point> FaultCore::next_wake() const {
  std::optional<Clock::time_point> wake;
  auto consider = [&](Clock::time_point at) {
    if (!wake || at < *wake) wake = at;
  };
  for (const auto& lane : m_lanes) {
    if (m_options.partition_every.count() > 0 && (m_enabled || lane->in_partition)) consider(lane->next_partition);
    for (const Held& held : lane->held) {
      if (held.deadline) consider(*held.deadline);
    }
  }
  return wake;
}

void FaultCore::run_fault_thread() {
  std::vector<std::shared_ptr<Lane>> lanes;
  std::unique_lock lock(m_mutex);
  while (!m_closed) {
    m_thread_wake = next_wake();
    if (m_thread_wake) {
      m_wake.wait_until(lock, *m_thread_wake);
    } else {
      m_wake.wait(lock);
    }
    if (m_closed) break;
    lanes = m_lanes;
    pass_locked(lock, lanes, Pass::timer);
    lock.unlock();
    lanes.clear();
    lock.lock();
  }
  m_thread_wake.reset();
}

FaultStats FaultCore::faults() const {
  std::lock_guard lock(m_mutex);
  return m_stats;
}

}  // namespace livestate::mq::detail
