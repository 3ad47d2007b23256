#pragma once

// One consumer's queue: fed in order by the dispatcher, drained on a strand
// of its own, at most `bound` messages long. Past the bound its messages are
// dropped (for it alone) and it gets an overflow event in their place. A
// consumer that blocks or throws delays and costs nobody else (given an
// executor with threads to spare).

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <variant>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/strand.hpp>

#include "delivery.hpp"

namespace livestate::mq::detail {

/// A consumer's callback errors: counted, and logged the first time, then at
/// most one line a minute with the count since (a consumer that throws on
/// every message must not flood the log). Not thread-safe: its consumer's.
class CallbackErrors {
 public:
  CallbackErrors(std::shared_ptr<DispatchCounters> counters, std::string name)
      : m_counters(std::move(counters)), m_name(std::move(name)) {}

  void record(const char* what) noexcept;
  /// Calls `function`, recording what it throws.
  template <class Function>
  void guard(Function&& function) noexcept {
    try {
      function();
    } catch (const std::exception& error) {
      record(error.what());
    } catch (...) {
      record("a non-standard exception");
    }
  }

 private:
  std::shared_ptr<DispatchCounters> m_counters;
  std::string m_name;
  bool m_logged = false;
  std::uint64_t m_unlogged = 0;
  std::chrono::steady_clock::time_point m_last_logged{};
};

class Subscriber final : public std::enable_shared_from_this<Subscriber> {
 public:
  /// Work runs on the consumer's strand in order with its messages, and
  /// Subscriber::stop waits for it as for a callback.
  using Work = std::function<void()>;
  using Entry = std::variant<std::shared_ptr<const Delivery>, ControlEvent, Work>;
  using MessageHandler = std::function<void(const Delivery&)>;

  Subscriber(const boost::asio::any_io_executor& executor, std::size_t bound,
             std::shared_ptr<DispatchCounters> counters, std::string name, MessageHandler on_message,
             ControlCallback on_control);

  /// From the dispatcher (or the consumer's own work), in order. The bound
  /// counts messages; control events and work always get in.
  void push(Entry entry);

  /// Nothing is called after this returns, except the call in progress when
  /// it is made from that call itself.
  void stop() noexcept;

  /// The consumer's strand: what runs there runs in turn with its callbacks.
  [[nodiscard]] const boost::asio::strand<boost::asio::any_io_executor>& strand() const noexcept { return m_strand; }
  /// Does it take control events?
  [[nodiscard]] bool takes_control() const noexcept { return static_cast<bool>(m_on_control); }

 private:
  void drain();
  void invoke(const Entry& entry) noexcept;

  boost::asio::strand<boost::asio::any_io_executor> m_strand;
  const std::size_t m_bound;
  std::shared_ptr<DispatchCounters> m_counters;
  CallbackErrors m_errors;  // the strand's
  MessageHandler m_on_message;
  ControlCallback m_on_control;

  std::mutex m_mutex;
  std::condition_variable m_idle;
  std::deque<Entry> m_queue;
  std::size_t m_messages = 0;  // the messages in m_queue
  std::uint64_t m_dropped = 0;
  bool m_scheduled = false;
  bool m_stopped = false;
  std::thread::id m_invoking{};
};

}  // namespace livestate::mq::detail
