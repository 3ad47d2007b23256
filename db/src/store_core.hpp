#pragma once

// The parts of a store shared by Store, its Transactions and the migrator:
// the connection pool, the paired connector, and the per-transaction context
// that collects messages until commit.

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "livestate/core/message.hpp"
#include "livestate/db/store.hpp"
#include "session.hpp"

namespace livestate::db::detail {

class StoreCore;

/// A session borrowed from the pool; returned (or dropped, when broken) on
/// destruction.
class SessionLease {
 public:
  SessionLease(std::shared_ptr<StoreCore> core, std::unique_ptr<Session> session) noexcept
      : m_core(std::move(core)), m_session(std::move(session)) {}
  SessionLease(SessionLease&&) noexcept = default;
  SessionLease& operator=(SessionLease&&) = delete;
  ~SessionLease();
  Session& operator*() const noexcept { return *m_session; }
  Session* operator->() const noexcept { return m_session.get(); }

 private:
  std::shared_ptr<StoreCore> m_core;
  std::unique_ptr<Session> m_session;
};

/// The messages a transaction will produce after COMMIT, in order. Each names
/// its body by index: the messages of one change share one body.
struct Outbox {
  struct Queued {
    RoutingKey key;
    std::size_t body;
  };
  std::vector<Json> bodies;
  std::vector<Queued> messages;

  /// How much is queued, to drop what came after (undo of a failed operation).
  struct Mark {
    std::size_t bodies = 0;
    std::size_t messages = 0;
  };
  [[nodiscard]] Mark mark() const noexcept { return {bodies.size(), messages.size()}; }
  void drop_after(Mark mark) noexcept {
    messages.erase(messages.begin() + static_cast<std::ptrdiff_t>(mark.messages), messages.end());
    bodies.erase(bodies.begin() + static_cast<std::ptrdiff_t>(mark.bodies), bodies.end());
  }
  void clear() noexcept {
    messages.clear();
    bodies.clear();
  }
  [[nodiscard]] bool empty() const noexcept { return messages.empty(); }
  /// The messages, borrowing their keys and bodies (for a transport that
  /// sends them inside the transaction).
  [[nodiscard]] std::vector<mq::SentMessage> to_sent() const {
    std::vector<mq::SentMessage> result;
    result.reserve(messages.size());
    for (const auto& message : messages) result.push_back({&message.key, &bodies[message.body]});
    return result;
  }
};

/// One open transaction: its session and the messages it will produce.
class Context {
 public:
  Context(SessionLease lease, StoreCore& core) : m_lease(std::move(lease)), m_core(core) {}
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  /// Rolls back when the transaction is still open.
  ~Context();

  /// Ends the transaction: COMMIT, or ROLLBACK.
  void commit();
  void rollback() noexcept;
  [[nodiscard]] bool open() const noexcept { return m_open; }

  [[nodiscard]] Session& session() const noexcept { return *m_lease; }
  [[nodiscard]] Backend backend() const noexcept { return m_lease->backend(); }
  [[nodiscard]] double now() const;

  Rows query(std::string_view sql, std::initializer_list<Value> params = {}) {
    return m_lease->query(sql, std::span<const Value>(params.begin(), params.size()));
  }
  Rows query(std::string_view sql, std::span<const Value> params) { return m_lease->query(sql, params); }
  std::int64_t execute(std::string_view sql, std::initializer_list<Value> params = {}) {
    return m_lease->execute(sql, std::span<const Value>(params.begin(), params.size()));
  }
  std::int64_t execute(std::string_view sql, std::span<const Value> params) { return m_lease->execute(sql, params); }

  /// Keeps a body for the messages announce_kept() queues: one change
  /// announced on several routing keys stores its body once.
  std::size_t keep(Json body) {
    m_outbox.bodies.push_back(std::move(body));
    return m_outbox.bodies.size() - 1;
  }
  [[nodiscard]] const Json& kept(std::size_t body) const noexcept { return m_outbox.bodies[body]; }
  /// Queues a message, with a body keep() returned, for after commit.
  void announce_kept(RoutingKey key, std::size_t body) { m_outbox.messages.push_back({std::move(key), body}); }
  /// Queues a message for after commit.
  void announce(RoutingKey key, Json body) { announce_kept(std::move(key), keep(std::move(body))); }
  [[nodiscard]] Outbox& outbox() noexcept { return m_outbox; }
  [[nodiscard]] StoreCore& core() const noexcept { return m_core; }

  /// The SQL expression of the change position (0007) that a row of `table`
  /// inserted or updated by this transaction takes, so that a reader finds
  /// the rows changed since a watermark (Operations::changes_since). On
  /// PostgreSQL the transaction's id, which a reader's snapshot tells
  /// committed or not; on SQLite, where one transaction writes at a time, one
  /// more than the table's highest position (found in its index of
  /// positions, written nowhere else).
  [[nodiscard]] std::string change_position(std::string_view table) const;

 private:
  friend class StoreCore;
  SessionLease m_lease;
  StoreCore& m_core;
  Outbox m_outbox;
  bool m_open = true;
};

class StoreCore : public std::enable_shared_from_this<StoreCore> {
 public:
  StoreCore(std::unique_ptr<SessionFactory> factory, mq::Connector& connector, StoreOptions options);

  [[nodiscard]] Backend backend() const noexcept { return m_factory->backend(); }
  [[nodiscard]] const std::string& name() const noexcept { return m_factory->display_name(); }
  [[nodiscard]] mq::Connector& connector() const noexcept { return m_connector; }
  [[nodiscard]] double now() const;

  /// Borrows a session (opening one when none is idle; waiting when the
  /// factory's limit is reached). Throws DatabaseError when it can't connect.
  [[nodiscard]] SessionLease acquire();

  /// Begins a transaction on a borrowed session.
  [[nodiscard]] std::unique_ptr<Context> begin(bool write);
  /// Commits: the messages are produced after COMMIT, in order. On failure
  /// the transaction is rolled back and the error translated.
  void commit(std::unique_ptr<Context> context);

  /// Runs `work` in a transaction of its own, retrying the whole transaction on
  /// failures that leave nothing behind (serialization failures, deadlocks, a
  /// connection that broke before COMMIT was sent).
  void run(bool write, const std::function<void(Context&)>& work);

  /// Produces messages on the paired connector; a connector failure is logged
  /// (the change is committed already).
  void produce_all(const Outbox& outbox) noexcept;

  /// Translates a backend failure into the public error hierarchy.
  [[noreturn]] static void rethrow(const SessionFailure& failure);

  /// Does the database keep change positions (migration 0007)? Asked of the
  /// catalog until it says yes (a schema is never migrated down).
  [[nodiscard]] bool has_change_positions(Context& context);

 private:
  friend class SessionLease;
  void release(std::unique_ptr<Session> session) noexcept;

  std::unique_ptr<SessionFactory> m_factory;
  mq::Connector& m_connector;
  StoreOptions m_options;

  std::mutex m_mutex;
  std::condition_variable m_released;
  std::vector<std::unique_ptr<Session>> m_idle;
  std::size_t m_open = 0;
  std::atomic<bool> m_change_positions{false};
};

}  // namespace livestate::db::detail
