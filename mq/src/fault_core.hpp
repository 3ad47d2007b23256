#pragma once

// The fault-injecting decorator's engine (FaultyConnector, livestate/mq/faulty.hpp).
//
// How it works.
//
// Each consumer started through the decorator has a Lane: its callbacks, its
// random sequence, what it holds back (reordered and delayed messages) and an
// outbox of what is ready to be delivered. One mutex, the core's, guards every
// lane. A delivery point (a message from the inner connector, the fault
// thread, flush(), set_enabled(false)) decides under the mutex what becomes
// ready, appends it to the outbox, and then drains the outbox: unless another
// thread (or this one, further up the stack) is already draining that lane, it
// delivers the outbox in order, releasing the mutex around each callback. So a
// lane's callbacks never run concurrently nor re-entrantly, and no callback
// runs with the mutex held.
//
// Stopping a lane marks it stopped and empties it under the mutex (a drainer
// checks the mark before each callback), stops the inner consumer (which waits
// for the inner connector's delivery in progress), then waits for a callback
// running in another thread, unless called from inside one of the decorator's
// callbacks (Consumer's contract).

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <variant>
#include <vector>

#include "livestate/mq/faulty.hpp"

namespace livestate::mq::detail {

// The engine's own types, in a namespace of their own: other parts of the
// connectors have types of these names in detail.
namespace fault {

using Clock = std::chrono::steady_clock;

struct Held {
  Message message;
  std::uint64_t release_at_arrival = 0;       // reordered: released after this arrival
  std::optional<Clock::time_point> deadline;  // delayed: released at this time
};

using Delivery = std::variant<Message, ControlEvent>;

struct Lane {
  Callback callback;
  ControlCallback on_control;
  // Drawn from with the core's mutex held. The draws are done here, not with
  // std:: distributions, whose results differ between standard libraries: a
  // seed replays the same everywhere.
  std::mt19937_64 random;
  std::unique_ptr<Consumer> inner;  // null once stopped
  std::deque<Held> held;
  std::deque<Delivery> outbox;
  std::uint64_t arrivals = 0;
  bool stopped = false;
  bool draining = false;
  bool in_callback = false;
  bool in_partition = false;
  Clock::time_point next_partition;  // start of the next partition, or end of this one
  std::uint64_t partition_missed = 0;
  std::uint64_t unreported_drops = 0;  // report_drops: drops not yet told as a gap

  Lane(Callback cb, ControlCallback control) : callback(std::move(cb)), on_control(std::move(control)) {}

  // Uniform in [0, 1).
  double draw() { return static_cast<double>(random() >> 11) * 0x1.0p-53; }
};

}  // namespace fault

class FaultCore final : public std::enable_shared_from_this<FaultCore> {
 public:
  using Clock = fault::Clock;
  using Delivery = fault::Delivery;
  using Held = fault::Held;
  using Lane = fault::Lane;

  explicit FaultCore(const FaultOptions& options) : m_options(options) {}

  bool needs_fault_thread() const noexcept { return m_options.delay > 0 || m_options.partition_every.count() > 0; }
  void start_fault_thread();

  std::shared_ptr<Lane> add_lane(Callback callback, ControlCallback on_control);
  // Gives the lane its inner consumer; destroys it instead when the lane was
  // stopped meanwhile.
  void attach(const std::shared_ptr<Lane>& lane, std::unique_ptr<Consumer> inner);
  void on_message(Lane& lane, const RoutingKey& key, const Json& body);
  void on_inner_control(Lane& lane, const ControlEvent& event);
  void report_drops(Lane& lane);
  void stop(const std::shared_ptr<Lane>& lane);
  void close() noexcept;
  void flush() { pass(Pass::flush); }
  void set_enabled(bool enabled);
  FaultStats faults() const;

 private:
  enum class Pass { timer, flush, end_partitions };

  // Whether this thread runs one of this decorator's callbacks.
  bool inside_callback() const noexcept;

  // With the mutex held, these move what is due into the outbox.
  void advance_partition(Lane& lane, Clock::time_point now, bool end_now);
  void release_due(Lane& lane, Clock::time_point now, bool everything);
  void receive(Lane& lane, const RoutingKey& key, const Json& body, Clock::time_point now);
  void drain(std::unique_lock<std::mutex>& lock, Lane& lane) noexcept;
  bool invoke(Lane& lane, const Delivery& delivery) noexcept;
  // Takes a lane out: with the mutex held. Returns its inner consumer, to be
  // destroyed without it.
  std::unique_ptr<Consumer> withdraw(Lane& lane) noexcept;
  void wait_for_callback(std::unique_lock<std::mutex>& lock, const Lane& lane);
  void pass(Pass kind);
  void pass_locked(std::unique_lock<std::mutex>& lock, const std::vector<std::shared_ptr<Lane>>& lanes, Pass kind);
  void run_fault_thread();
  std::optional<Clock::time_point> next_wake() const;

  const FaultOptions m_options;
  mutable std::mutex m_mutex;
  std::condition_variable m_wake;           // the fault thread has something earlier to do, or must end
  std::condition_variable m_callback_done;  // a lane's callback returned, or its drain ended
  std::vector<std::shared_ptr<Lane>> m_lanes;
  std::thread m_thread;
  std::optional<Clock::time_point> m_thread_wake;  // when the fault thread wakes next
  std::uint64_t m_next_index = 0;
  std::size_t m_waiters = 0;  // threads waiting on m_callback_done
  bool m_enabled = true;
  bool m_closed = false;
  FaultStats m_stats;
};

}  // namespace livestate::mq::detail
