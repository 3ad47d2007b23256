#include "livestate/mq/faulty.hpp"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "livestate/core/log.hpp"

namespace livestate::mq {
namespace detail {
namespace {

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

constexpr std::string_view log_component = "mq.faulty";
constexpr std::string_view partition_reason = "partition injected by FaultyConnector";
constexpr std::string_view drop_reason = "drop injected by FaultyConnector";

using Clock = std::chrono::steady_clock;

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

}  // namespace

class FaultCore final : public std::enable_shared_from_this<FaultCore> {
 public:
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

  bool inside_callback() const noexcept {
    for (auto* frame = t_frames; frame; frame = frame->outer) {
      if (frame->core == this) return true;
    }
    return false;
  }

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

namespace {

std::string describe(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

void check_probability(const char* field, double value) {
  if (!(value >= 0 && value <= 1)) {
    throw std::invalid_argument(std::string("livestate::mq::FaultyConnector: ") + field +
                                " must be a probability in [0, 1], not " + describe(value));
  }
}

void check_options(const FaultOptions& options) {
  check_probability("reorder", options.reorder);
  check_probability("drop", options.drop);
  check_probability("duplicate", options.duplicate);
  check_probability("delay", options.delay);
  if (options.reorder > 0 && options.reorder_window == 0) {
    throw std::invalid_argument("livestate::mq::FaultyConnector: reorder_window must be at least 1 when reorder is " +
                                describe(options.reorder));
  }
  if (options.max_delay.count() < 0) {
    throw std::invalid_argument("livestate::mq::FaultyConnector: max_delay must not be negative, not " +
                                std::to_string(options.max_delay.count()) + " ms");
  }
  if (options.delay > 0 && options.max_delay.count() == 0) {
    throw std::invalid_argument("livestate::mq::FaultyConnector: max_delay must be more than 0 ms when delay is " +
                                describe(options.delay) + ", not " + std::to_string(options.max_delay.count()) + " ms");
  }
  if (options.partition_every.count() < 0) {
    throw std::invalid_argument("livestate::mq::FaultyConnector: partition_every must not be negative, not " +
                                std::to_string(options.partition_every.count()) + " ms");
  }
  if (options.partition_length.count() < 0 ||
      (options.partition_every.count() > 0 && options.partition_length.count() == 0)) {
    throw std::invalid_argument(
        "livestate::mq::FaultyConnector: partition_length must be more than 0 ms when partition_every is set, not " +
        std::to_string(options.partition_length.count()) + " ms");
  }
}

}  // namespace

void FaultCore::start_fault_thread() {
  // The thread keeps the core alive: a callback on it may destroy the decorator.
  m_thread = std::thread([self = shared_from_this()] { self->run_fault_thread(); });
}

std::shared_ptr<Lane> FaultCore::add_lane(Callback callback, ControlCallback on_control) {
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

std::optional<Clock::time_point> FaultCore::next_wake() const {
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

namespace {

class FaultyConsumer final : public Consumer {
 public:
  FaultyConsumer(std::weak_ptr<FaultCore> core, std::shared_ptr<Lane> lane)
      : m_core(std::move(core)), m_lane(std::move(lane)) {}
  ~FaultyConsumer() override { FaultyConsumer::stop_consuming(); }

  void stop_consuming() override {
    if (auto core = m_core.lock()) core->stop(m_lane);
  }

 private:
  std::weak_ptr<FaultCore> m_core;
  std::shared_ptr<Lane> m_lane;
};

}  // namespace
}  // namespace detail

FaultyConnector::FaultyConnector(Connector& inner, FaultOptions options) : m_inner(inner) {
  detail::check_options(options);
  m_core = std::make_shared<detail::FaultCore>(options);
  if (m_core->needs_fault_thread()) m_core->start_fault_thread();
}

FaultyConnector::~FaultyConnector() {
  abort_waits();
  m_core->close();
}

void FaultyConnector::produce(const RoutingKey& key, const Json& body) { m_inner.produce(key, body); }

std::unique_ptr<Consumer> FaultyConnector::start_consuming(Callback callback, Filter filter,
                                                           std::optional<std::string> persistent_name) {
  return start_consuming_with(std::move(callback), std::move(filter), ConsumeOptions{std::move(persistent_name), {}});
}

std::unique_ptr<Consumer> FaultyConnector::start_consuming_with(Callback callback, Filter filter,
                                                                ConsumeOptions options) {
  if (!callback) throw std::invalid_argument("livestate::mq::FaultyConnector::start_consuming: empty callback");
  const bool wants_control = static_cast<bool>(options.on_control);
  auto lane = m_core->add_lane(std::move(callback), std::move(options.on_control));
  // The handle first: once the inner consumer is active, nothing may throw
  // before the handle that stops it is returned.
  std::unique_ptr<Consumer> handle;
  try {
    handle = std::make_unique<detail::FaultyConsumer>(m_core, lane);
  } catch (...) {
    m_core->stop(lane);
    throw;
  }
  ConsumeOptions inner_options;
  inner_options.persistent_name = std::move(options.persistent_name);
  // The inner callbacks own the lane, and so its user's callbacks, until the
  // inner consumer is stopped and lets them go.
  // Each call pins the core: a callback may destroy the decorator.
  std::weak_ptr<detail::FaultCore> weak_core = m_core;
  if (wants_control) {
    inner_options.on_control = [weak_core, lane](const ControlEvent& event) {
      if (auto core = weak_core.lock()) core->on_inner_control(*lane, event);
    };
  }
  // On failure the handle stops the lane.
  auto inner = m_inner.start_consuming(
      [weak_core, lane](const RoutingKey& key, const Json& body) {
        if (auto core = weak_core.lock()) core->on_message(*lane, key, body);
      },
      std::move(filter), std::move(inner_options));
  m_core->attach(lane, std::move(inner));
  return handle;
}

ConnectorStats FaultyConnector::stats() const { return m_inner.stats(); }

FaultStats FaultyConnector::faults() const { return m_core->faults(); }

void FaultyConnector::flush() { m_core->flush(); }

void FaultyConnector::set_enabled(bool enabled) { m_core->set_enabled(enabled); }

}  // namespace livestate::mq
