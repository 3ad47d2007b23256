#include "livestate/mq/connector.hpp"

#include <boost/asio/error.hpp>

namespace livestate::mq {

Consumer::~Consumer() = default;

struct Connector::WaitState {
  std::mutex mutex;
  bool done = false;
  std::unique_ptr<Consumer> consumer;
  WaitCompletion complete;
};

Connector::~Connector() { abort_waits(); }

void Connector::finish_wait(const std::shared_ptr<WaitState>& state, boost::system::error_code error,
                            std::optional<Message> message) {
  WaitCompletion complete;
  std::unique_ptr<Consumer> consumer;
  {
    std::lock_guard lock(state->mutex);
    if (state->done) return;
    state->done = true;
    complete = std::move(state->complete);
    consumer = std::move(state->consumer);
  }
  // Unsubscribe before completing, so the handler never races a second message.
  consumer.reset();
  complete(error, std::move(message));
}

void Connector::start_wait(Filter filter, std::function<bool()> check, WaitCompletion complete) {
  auto state = std::make_shared<WaitState>();
  state->complete = std::move(complete);
  {
    std::lock_guard lock(m_waits_mutex);
    std::erase_if(m_waits, [](const auto& weak) { return weak.expired(); });
    m_waits.push_back(state);
  }
  // The consumer's callback owns the state until the wait finishes, which
  // destroys the consumer and so the callback: no cycle outlives the wait.
  auto consumer = start_consuming(
      [state](const RoutingKey& key, const Json& body) {
        finish_wait(state, {}, Message{key, body});
      },
      std::move(filter));
  {
    std::lock_guard lock(state->mutex);
    if (!state->done) state->consumer = std::move(consumer);
  }
  consumer.reset();  // already finished (another thread delivered): drop it
  bool satisfied = false;
  try {
    satisfied = check();
  } catch (...) {
    std::unique_ptr<Consumer> subscribed;
    {
      std::lock_guard lock(state->mutex);
      state->done = true;
      subscribed = std::move(state->consumer);
      state->complete = nullptr;
    }
    throw;
  }
  if (satisfied) finish_wait(state, {}, std::nullopt);
}

void Connector::abort_waits() noexcept {
  std::vector<std::weak_ptr<WaitState>> waits;
  {
    std::lock_guard lock(m_waits_mutex);
    waits.swap(m_waits);
  }
  for (auto& weak : waits) {
    if (auto state = weak.lock()) {
      try {
        finish_wait(state, boost::asio::error::operation_aborted, std::nullopt);
      } catch (...) {
        // A handler that throws while its connector is destroyed has nowhere to go.
      }
    }
  }
}

}  // namespace livestate::mq
