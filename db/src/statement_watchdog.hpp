#pragma once

// Deadlines for the PostgreSQL sessions' blocking calls. libpq waits for a
// statement's answer in a blocking poll() with no deadline, and nothing on the
// wire tells a stopped backend (SIGSTOP, a hung host whose kernel still
// acknowledges) from a slow one: TCP keepalives are answered by the kernel.
// So a watchdog thread closes the socket of a call that overruns its deadline
// (shutdown(), which wakes the poll() at once); libpq then reports a broken
// connection, and the session fails as for any lost connection (a COMMIT in
// doubt included). One thread per process, running while a store with a
// deadline is open, stopped with the last one.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

namespace livestate::db::detail {

class StatementWatchdog final {
 public:
  /// The process's watchdog, started if it isn't running.
  static std::shared_ptr<StatementWatchdog> acquire();
  StatementWatchdog(const StatementWatchdog&) = delete;
  StatementWatchdog& operator=(const StatementWatchdog&) = delete;
  ~StatementWatchdog();

  /// One blocking call under a deadline: the socket `fd` is shut down if the
  /// call has not ended (the Watch destroyed) within `timeout`, and then
  /// `expired` is set when the Watch goes (also while an exception unwinds,
  /// before the caller's handler runs).
  class Watch {
   public:
    Watch() = default;
    Watch(Watch&& other) noexcept;
    Watch& operator=(Watch&&) = delete;
    ~Watch();

   private:
    friend class StatementWatchdog;
    Watch(StatementWatchdog* owner, std::uint64_t id) : m_owner(owner), m_id(id) {}
    StatementWatchdog* m_owner = nullptr;
    std::uint64_t m_id = 0;
  };

  [[nodiscard]] Watch watch(int fd, std::chrono::milliseconds timeout, bool& expired);

 private:
  StatementWatchdog();
  void run();
  void end(std::uint64_t id);

  struct Entry {
    int fd;
    std::chrono::steady_clock::time_point deadline;
    bool* expired_flag;
    bool expired = false;
  };
  mutable std::mutex m_mutex;
  std::condition_variable m_changed;
  std::map<std::uint64_t, Entry> m_entries;
  std::uint64_t m_next_id = 0;
  bool m_stopping = false;
  // When run() wakes next on its own (max: not before it is notified).
  std::chrono::steady_clock::time_point m_wakes_at = std::chrono::steady_clock::time_point::max();
  std::thread m_thread;  // last: started once the rest is ready
};

}  // namespace livestate::db::detail
