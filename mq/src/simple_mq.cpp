#include "livestate/mq/simple_mq.hpp"

#include <memory>
#include <utility>

#include "simple_mq_core.hpp"

namespace livestate::mq {
namespace {

using detail::simple::SimpleMQCore;
using detail::simple::Subscription;

class SimpleConsumer final : public Consumer {
 public:
  explicit SimpleConsumer(std::weak_ptr<SimpleMQCore> core) : m_core(std::move(core)) {}
  ~SimpleConsumer() override { SimpleConsumer::stop_consuming(); }

  void attach(std::shared_ptr<Subscription> subscription) noexcept { m_subscription = std::move(subscription); }

  void stop_consuming() override {
    if (!m_subscription) return;
    if (auto core = m_core.lock()) core->stop(m_subscription);
  }

 private:
  std::weak_ptr<SimpleMQCore> m_core;
  std::shared_ptr<Subscription> m_subscription;
};

class SimpleMQ final : public Connector {
 public:
  SimpleMQ() : m_core(std::make_shared<SimpleMQCore>()) {}
  ~SimpleMQ() override {
    abort_waits();
    SimpleMQCore& core = *m_core;
    core.close(std::move(m_core));
  }

  void produce(const RoutingKey& key, const Json& body) override { m_core->produce(key, body); }

  std::unique_ptr<Consumer> start_consuming(Callback callback, Filter filter,
                                            std::optional<std::string> persistent_name) override {
    // The handle first: once the subscription is active, nothing may throw
    // before the handle that stops it is returned.
    auto consumer = std::make_unique<SimpleConsumer>(m_core);
    consumer->attach(m_core->start(std::move(callback), std::move(filter), persistent_name));
    return consumer;
  }

  ConnectorStats stats() const override { return m_core->stats(); }

 private:
  std::shared_ptr<SimpleMQCore> m_core;
};

}  // namespace

std::unique_ptr<Connector> make_simple_mq() { return std::make_unique<SimpleMQ>(); }

}  // namespace livestate::mq
