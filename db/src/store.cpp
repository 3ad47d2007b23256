#include "livestate/db/store.hpp"

#include <stdexcept>

#include "livestate/core/detail/postgres.hpp"
#include "livestate/core/error.hpp"
#include "livestate/core/wire.hpp"
#include "livestate/db/migrator.hpp"
#include "store_core.hpp"

namespace livestate::db {

namespace {

std::unique_ptr<detail::SessionFactory> make_factory(std::string_view url, const StoreOptions& options) {
  const detail::SessionOptions session_options{options.busy_timeout, options.connect_timeout, options.read_only,
                                               options.statement_timeout};
  if (url.starts_with("sqlite:")) {
    try {
      return detail::make_sqlite_factory(url, session_options);
    } catch (const std::invalid_argument& error) {
      throw UnsupportedUrl(error.what());
    }
  }
  if (livestate::detail::is_postgres_url(url)) {
    const auto maker = detail::postgres_backend();
    if (maker == nullptr) {
      throw UnsupportedUrl("cannot open " + livestate::detail::redact_postgres_url(url) +
                           ": this program was linked without the PostgreSQL backend "
                           "(link livestate::db_postgres or livestate::livestate)");
    }
    return maker(url, session_options);
  }
  throw UnsupportedUrl("no store for '" + livestate::detail::redact_postgres_url(url) +
                       "': write sqlite:PATH, sqlite::memory: or postgresql://…");
}

}  // namespace

// --- Store -----------------------------------------------------------------

std::unique_ptr<Store> Store::open(std::string_view url, mq::Connector& connector, StoreOptions options) {
  const bool migrate_now = options.migrate && !options.read_only;
  std::shared_ptr<detail::StoreCore> core;
  try {
    core = std::make_shared<detail::StoreCore>(make_factory(url, options), connector, std::move(options));
  } catch (const detail::SessionFailure& failure) {
    detail::StoreCore::rethrow(failure);
  }
  // Connect once now, so that a wrong URL fails here rather than on first use.
  { auto lease = core->acquire(); }
  std::unique_ptr<Store> store(new Store(std::move(core)));
  if (migrate_now) migrate(*store);
  return store;
}

Store::Store(std::shared_ptr<detail::StoreCore> core) : m_core(std::move(core)) {}
Store::~Store() = default;

Transaction Store::begin() { return Transaction(m_core); }
Backend Store::backend() const noexcept { return m_core->backend(); }
const std::string& Store::name() const noexcept { return m_core->name(); }
mq::Connector& Store::connector() const noexcept { return m_core->connector(); }

void Store::run(bool write, const std::function<void(detail::Context&)>& work) { m_core->run(write, work); }

namespace {

// Operations on a shared core: what outlives the Store object.
class SharedOperations final : public Operations {
 public:
  explicit SharedOperations(std::shared_ptr<detail::StoreCore> core) : m_core(std::move(core)) {}
  ~SharedOperations() = default;

 private:
  void run(bool write, const std::function<void(detail::Context&)>& work) override { m_core->run(write, work); }
  std::shared_ptr<detail::StoreCore> m_core;
};

}  // namespace

std::shared_ptr<Operations> detail::shared_operations(std::shared_ptr<StoreCore> core) {
  return std::make_shared<SharedOperations>(std::move(core));
}

// --- Transaction -----------------------------------------------------------

Transaction::Transaction(std::shared_ptr<detail::StoreCore> core)
    : m_core(std::move(core)), m_context(m_core->begin(true)) {}

Transaction::Transaction(Transaction&& other) noexcept = default;

Transaction::~Transaction() { rollback(); }

void Transaction::commit() {
  if (!active()) throw std::logic_error("commit() of a transaction that is no longer active");
  m_core->commit(std::move(m_context));
}

void Transaction::rollback() noexcept { m_context.reset(); }

bool Transaction::active() const noexcept { return m_context != nullptr && m_context->open(); }

void Transaction::produce(const RoutingKey& key, Json body) {
  if (!active()) throw std::logic_error("produce() on a transaction that is no longer active");
  wire::check_depth(body, key.str());
  m_context->announce(key, std::move(body));
}

void Transaction::run(bool, const std::function<void(detail::Context&)>& work) {
  if (!active()) throw std::logic_error("a transaction that is no longer active cannot run more changes");
  // Each operation is all or nothing inside the transaction too: a savepoint
  // lets a failed claim leave the transaction as it was, messages included.
  detail::Context& context = *m_context;
  const detail::Outbox::Mark before = context.outbox().mark();
  try {
    context.execute("SAVEPOINT livestate_operation");
  } catch (const detail::SessionFailure& failure) {
    rollback();
    detail::StoreCore::rethrow(failure);
  }
  try {
    work(context);
    context.execute("RELEASE SAVEPOINT livestate_operation");
  } catch (const detail::SessionFailure& failure) {
    undo(before.messages, before.bodies);
    detail::StoreCore::rethrow(failure);
  } catch (...) {
    undo(before.messages, before.bodies);
    throw;
  }
}

void Transaction::undo(std::size_t messages_before, std::size_t bodies_before) noexcept {
  try {
    m_context->execute("ROLLBACK TO SAVEPOINT livestate_operation");
    m_context->execute("RELEASE SAVEPOINT livestate_operation");
    m_context->outbox().drop_after({bodies_before, messages_before});
  } catch (...) {
    rollback();  // the connection is gone or the transaction unusable
  }
}

}  // namespace livestate::db
