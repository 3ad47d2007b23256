#include "livestate/mq/faulty.hpp"

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "fault_core.hpp"

namespace livestate::mq {
namespace detail {
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

class FaultyConsumer final : public Consumer {
 public:
  FaultyConsumer(std::weak_ptr<FaultCore> core, std::shared_ptr<fault::Lane> lane)
      : m_core(std::move(core)), m_lane(std::move(lane)) {}
  ~FaultyConsumer() override { FaultyConsumer::stop_consuming(); }

  void stop_consuming() override {
    if (auto core = m_core.lock()) core->stop(m_lane);
  }

 private:
  std::weak_ptr<FaultCore> m_core;
  std::shared_ptr<fault::Lane> m_lane;
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
