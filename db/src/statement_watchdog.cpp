#include "statement_watchdog.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <utility>

namespace livestate::db::detail {

std::shared_ptr<StatementWatchdog> StatementWatchdog::acquire() {
  static std::mutex mutex;
  static std::weak_ptr<StatementWatchdog> running;
  std::lock_guard lock(mutex);
  auto watchdog = running.lock();
  if (!watchdog) {
    watchdog.reset(new StatementWatchdog());
    running = watchdog;
  }
  return watchdog;
}

StatementWatchdog::StatementWatchdog() : m_thread([this] { run(); }) {}

StatementWatchdog::~StatementWatchdog() {
  {
    std::lock_guard lock(m_mutex);
    m_stopping = true;
  }
  m_changed.notify_all();
  m_thread.join();
}

StatementWatchdog::Watch StatementWatchdog::watch(int fd, std::chrono::milliseconds timeout, bool& expired) {
  std::lock_guard lock(m_mutex);
  const auto id = ++m_next_id;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  m_entries.emplace(id, Entry{fd, deadline, &expired});
  // Woken only when it would sleep past this deadline: a store's deadlines
  // all have the same timeout, so most calls wake nobody. Woken on every
  // statement, it made each pay for a thread switch: on 2 busy cores, a
  // visible part of a store operation (bench/store_bench).
  if (deadline < m_wakes_at) m_changed.notify_all();
  return Watch(this, id);
}

void StatementWatchdog::end(std::uint64_t id) {
  std::lock_guard lock(m_mutex);
  const auto found = m_entries.find(id);
  if (found == m_entries.end()) return;
  if (found->second.expired) *found->second.expired_flag = true;
  m_entries.erase(found);
}

void StatementWatchdog::run() {
  std::unique_lock lock(m_mutex);
  while (!m_stopping) {
    auto next = std::chrono::steady_clock::time_point::max();
    const auto now = std::chrono::steady_clock::now();
    for (auto& [id, entry] : m_entries) {
      if (entry.expired) continue;
      if (entry.deadline <= now) {
        // Under the lock: the call is still in progress, so the descriptor is
        // still its connection's.
        ::shutdown(entry.fd, SHUT_RDWR);
        entry.expired = true;
      } else {
        next = std::min(next, entry.deadline);
      }
    }
    m_wakes_at = next;
    if (next == std::chrono::steady_clock::time_point::max()) {
      m_changed.wait(lock);
    } else {
      m_changed.wait_until(lock, next);
    }
  }
}

StatementWatchdog::Watch::Watch(Watch&& other) noexcept
    : m_owner(std::exchange(other.m_owner, nullptr)), m_id(other.m_id) {}

StatementWatchdog::Watch::~Watch() {
  if (m_owner != nullptr) m_owner->end(m_id);
}

}  // namespace livestate::db::detail
