#include "store_core.hpp"

#include <chrono>
#include <string>

#include "livestate/core/log.hpp"
#include "livestate/mq/connector.hpp"

namespace livestate::db::detail {

namespace {
constexpr std::size_t max_idle_sessions = 8;
constexpr int max_attempts = 3;
}  // namespace

SessionLease::~SessionLease() {
  if (m_core && m_session) m_core->release(std::move(m_session));
}

Context::~Context() { rollback(); }

void Context::commit() {
  m_open = false;
  m_lease->commit();
}

void Context::rollback() noexcept {
  if (!m_open) return;
  m_open = false;
  m_lease->rollback();
  m_outbox.clear();
}

std::string Context::change_position(std::string_view table) const {
  if (backend() == Backend::postgresql) return "pg_current_xact_id()";
  return "(SELECT IFNULL(MAX(position), 0) + 1 FROM " + std::string(table) + ")";
}

double Context::now() const { return m_core.now(); }

StoreCore::StoreCore(std::unique_ptr<SessionFactory> factory, mq::Connector& connector, StoreOptions options)
    : m_factory(std::move(factory)), m_connector(connector), m_options(std::move(options)) {}

double StoreCore::now() const {
  if (m_options.clock) return m_options.clock();
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

SessionLease StoreCore::acquire() {
  std::unique_lock lock(m_mutex);
  const std::size_t limit = m_factory->max_sessions();
  m_released.wait(lock, [&] { return !m_idle.empty() || limit == 0 || m_open < limit; });
  while (!m_idle.empty()) {
    auto session = std::move(m_idle.back());
    m_idle.pop_back();
    if (session->healthy()) return SessionLease(shared_from_this(), std::move(session));
    --m_open;  // ended by the server while idle (a restart, an administrator)
  }
  ++m_open;
  lock.unlock();
  try {
    return SessionLease(shared_from_this(), m_factory->open());
  } catch (const SessionFailure& failure) {
    lock.lock();
    --m_open;
    m_released.notify_one();
    lock.unlock();
    rethrow(failure);
  } catch (...) {
    lock.lock();
    --m_open;
    m_released.notify_one();
    throw;
  }
}

void StoreCore::release(std::unique_ptr<Session> session) noexcept {
  std::unique_ptr<Session> closing;
  {
    std::lock_guard lock(m_mutex);
    if (session->healthy() && m_idle.size() < max_idle_sessions) {
      // push_back can't throw here: the vector never holds more than
      // max_idle_sessions and reserved that many on first use.
      if (m_idle.capacity() < max_idle_sessions) {
        try {
          m_idle.reserve(max_idle_sessions);
        } catch (...) {
          closing = std::move(session);
        }
      }
      if (session) m_idle.push_back(std::move(session));
    } else {
      closing = std::move(session);
    }
    if (closing) --m_open;
  }
  m_released.notify_one();
  // `closing` disconnects here, outside the lock.
}

std::unique_ptr<Context> StoreCore::begin(bool write) {
  auto context = std::make_unique<Context>(acquire(), *this);
  try {
    context->session().begin(write);
  } catch (const SessionFailure& failure) {
    context->m_open = false;
    rethrow(failure);
  }
  return context;
}

namespace {

// The store's transaction as a connector sees it, to send messages in it.
class ContextRunner final : public mq::SqlRunner {
 public:
  explicit ContextRunner(Context& context) : m_context(context) {}
  std::optional<std::string> run(std::string_view sql, std::span<const std::optional<std::string>> params) override {
    std::vector<Value> values;
    values.reserve(params.size());
    for (const auto& param : params) values.push_back(param ? Value(*param) : Value(std::monostate{}));
    const auto rows = m_context.query(sql, values);
    if (rows.empty() || rows.front().size() == 0 || rows.front().is_null(0)) return std::nullopt;
    return rows.front().as_text(0);
  }
  mq::TransportStream& stream() noexcept override { return m_context.session().stream(); }

 private:
  Context& m_context;
};

}  // namespace

void StoreCore::commit(std::unique_ptr<Context> context) {
  // Paired with a connector whose transport is this PostgreSQL database, the
  // messages travel in the transaction itself: NOTIFY is delivered at COMMIT,
  // and not at all on ROLLBACK.
  auto* transport = dynamic_cast<mq::TransactionalTransport*>(&m_connector);
  const bool in_transaction = transport != nullptr && backend() == Backend::postgresql && !context->outbox().empty();
  auto& stream = context->session().stream();
  const std::uint64_t sequence_before = stream.sequence;
  try {
    if (in_transaction) {
      ContextRunner runner(*context);
      transport->send_in_transaction(context->outbox().to_sent(), runner);
      context->outbox().clear();
    }
    context->commit();
  } catch (const SessionFailure& failure) {
    // Not sent, so no consumer must see a gap in this session's sequence;
    // unless the COMMIT is in doubt, when they may have been.
    if (failure.kind() != FailureKind::connection && failure.kind() != FailureKind::commit_in_doubt) {
      stream.sequence = sequence_before;
    }
    context->rollback();
    rethrow(failure);
  } catch (...) {
    stream.sequence = sequence_before;
    context->rollback();
    throw;
  }
  const Outbox outbox = std::move(context->outbox());
  context.reset();  // the session goes back to the pool before consumers run
  produce_all(outbox);
}

void StoreCore::run(bool write, const std::function<void(Context&)>& work) {
  for (int attempt = 1;; ++attempt) {
    std::unique_ptr<Context> context;
    try {
      context = begin(write);
      work(*context);
    } catch (const SessionFailure& failure) {
      // The statement failed, so the transaction did not commit: a retry can't
      // apply anything twice.
      context.reset();
      const bool transient = failure.kind() == FailureKind::serialization || failure.kind() == FailureKind::connection;
      if (transient && attempt < max_attempts) {
        log(LogLevel::info, "db", std::string("retrying a transaction: ") + failure.what());
        continue;
      }
      rethrow(failure);
    } catch (const ConnectionFailed& failure) {
      // begin() could not get a connection; a new one may work.
      if (attempt < max_attempts) continue;
      throw;
    }
    commit(std::move(context));
    return;
  }
}

void StoreCore::produce_all(const Outbox& outbox) noexcept {
  for (const auto& message : outbox.messages) {
    try {
      m_connector.produce(message.key, outbox.bodies[message.body]);
    } catch (const std::exception& error) {
      log(LogLevel::error, "db",
          "committed change not announced: produce(" + message.key.str() + ") failed: " + error.what());
    } catch (...) {
      log(LogLevel::error, "db", "committed change not announced: produce(" + message.key.str() + ") failed");
    }
  }
}

bool StoreCore::has_change_positions(Context& context) {
  if (m_change_positions.load(std::memory_order_relaxed)) return true;
  const auto found = context.query(backend() == Backend::postgresql
                                       ? "SELECT COUNT(*) FROM (SELECT to_regclass('livestate_changes') AS t) AS c "
                                         "WHERE t IS NOT NULL"
                                       : "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = "
                                         "'livestate_changes'");
  const bool present = found.front().as_int(0) > 0;
  if (present) m_change_positions.store(true, std::memory_order_relaxed);
  return present;
}

void StoreCore::rethrow(const SessionFailure& failure) {
  switch (failure.kind()) {
    case FailureKind::busy: throw DatabaseBusy(failure.what(), failure.sqlstate());
    case FailureKind::connection: throw ConnectionFailed(failure.what(), failure.sqlstate());
    case FailureKind::commit_in_doubt: throw CommitInDoubt(failure.what(), failure.sqlstate());
    case FailureKind::read_only: throw ReadOnlyDatabase(failure.what(), failure.sqlstate());
    default: throw DatabaseError(failure.what(), failure.sqlstate());
  }
}

}  // namespace livestate::db::detail
