#include "subscriber.hpp"

#include <algorithm>
#include <utility>

#include <boost/asio/post.hpp>

#include "livestate/core/log.hpp"
#include "pq_connection.hpp"

namespace livestate::mq::detail {

namespace asio = boost::asio;

void CallbackErrors::record(const char* what) noexcept {
  ++m_counters->callback_errors;
  ++m_unlogged;
  const auto now = std::chrono::steady_clock::now();
  if (m_logged && now - m_last_logged < std::chrono::minutes(1)) return;
  try {
    log(LogLevel::error, log_component,
        m_name + " threw" + (m_unlogged > 1 ? " (" + std::to_string(m_unlogged) + " times)" : "") + ": " + what);
  } catch (...) {
    return;  // out of memory for the line: counted, logged next time
  }
  m_logged = true;
  m_last_logged = now;
  m_unlogged = 0;
}

Subscriber::Subscriber(const asio::any_io_executor& executor, std::size_t bound,
                       std::shared_ptr<DispatchCounters> counters, std::string name, MessageHandler on_message,
                       ControlCallback on_control)
    : m_strand(asio::make_strand(executor)),
      m_bound(std::max<std::size_t>(bound, 1)),
      m_counters(counters),
      m_errors(std::move(counters), std::move(name)),
      m_on_message(std::move(on_message)),
      m_on_control(std::move(on_control)) {}

void Subscriber::push(Entry entry) {
  {
    std::lock_guard lock(m_mutex);
    if (m_stopped) return;
    const bool message = std::holds_alternative<std::shared_ptr<const Delivery>>(entry);
    if (message && m_messages >= m_bound) {
      ++m_dropped;
      ++m_counters->dropped;
      return;
    }
    if (m_dropped > 0) m_queue.emplace_back(overflow_event(std::exchange(m_dropped, 0)));
    m_queue.push_back(std::move(entry));
    if (message) {
      ++m_messages;
      raise_peak(m_counters->backlog_peak, m_messages);
    }
    if (m_scheduled) return;
    m_scheduled = true;
  }
  asio::post(m_strand, [self = shared_from_this()] { self->drain(); });
}

void Subscriber::stop() noexcept {
  std::unique_lock lock(m_mutex);
  m_stopped = true;
  m_queue.clear();
  m_messages = 0;
  const auto me = std::this_thread::get_id();
  m_idle.wait(lock, [&] { return m_invoking == std::thread::id{} || m_invoking == me; });
}

void Subscriber::drain() {
  std::unique_lock lock(m_mutex);
  // A batch, then the strand is given back to the executor's other work.
  for (int i = 0; i < 64; ++i) {
    if (m_stopped) break;
    if (m_queue.empty()) {
      if (m_dropped == 0) break;
      m_queue.emplace_back(overflow_event(std::exchange(m_dropped, 0)));
    }
    Entry entry = std::move(m_queue.front());
    m_queue.pop_front();
    if (std::holds_alternative<std::shared_ptr<const Delivery>>(entry)) --m_messages;
    m_invoking = std::this_thread::get_id();
    lock.unlock();
    invoke(entry);
    lock.lock();
    m_invoking = std::thread::id{};
    m_idle.notify_all();
  }
  if (m_stopped || (m_queue.empty() && m_dropped == 0)) {
    m_scheduled = false;
    return;
  }
  lock.unlock();
  asio::post(m_strand, [self = shared_from_this()] { self->drain(); });
}

void Subscriber::invoke(const Entry& entry) noexcept {
  m_errors.guard([&] {
    if (const auto* delivery = std::get_if<std::shared_ptr<const Delivery>>(&entry)) {
      m_on_message(**delivery);
      ++m_counters->delivered;
    } else if (const auto* event = std::get_if<ControlEvent>(&entry)) {
      if (m_on_control) m_on_control(*event);
    } else {
      std::get<Work>(entry)();
    }
  });
}

}  // namespace livestate::mq::detail
