#pragma once

// The connector's tables (bodies sent by reference, durable queues and the
// messages kept for them), created on first use by whichever process comes
// first, and pruned of what is kept past its retention.

#include <libpq-fe.h>

#include <atomic>
#include <chrono>

namespace livestate::mq::detail {

/// Thread safety: every function may be called from any thread, each with a
/// connection of its own.
class Tables {
 public:
  /// Creates them (IF NOT EXISTS) on `connection`, unless this connector saw
  /// them already. Throws StatementError.
  void ensure(PGconn* connection, std::chrono::milliseconds timeout);
  /// They may be gone (dropped, a database restored from an older dump): the
  /// next ensure() makes them again.
  void forget() noexcept { m_ready = false; }
  [[nodiscard]] bool ready() const noexcept { return m_ready; }

 private:
  std::atomic<bool> m_ready{false};
};

/// Old bodies go ($1: their retention in seconds), and so do the messages of
/// queues whose consumer never came back ($2); a queue remembers how many it
/// lost, to tell its consumer. One statement.
extern const char* const prune_sql;

}  // namespace livestate::mq::detail
