#include "livestate/mq/connector.hpp"

#include "livestate/mq/errors.hpp"

#include <utility>

#include <boost/asio/error.hpp>

namespace livestate::mq {

Consumer::~Consumer() = default;
TransportError::~TransportError() = default;
NotSent::~NotSent() = default;
MaybeSent::~MaybeSent() = default;
UnsupportedServer::~UnsupportedServer() = default;

struct Connector::WaitState {
  std::mutex mutex;
  bool done = false;
  bool checking = true;          // check() has not returned false yet
  std::optional<Message> early;  // the first message that came while check() ran
  std::unique_ptr<Consumer> consumer;
  WaitCompletion complete;

  using Claim = std::pair<WaitCompletion, std::unique_ptr<Consumer>>;

  // With `mutex` held: marks the wait done and takes what completing it needs
  // (nothing when it already was done).
  Claim claim() {
    if (done) return {};
    done = true;
    return {std::move(complete), std::move(consumer)};
  }

  // Without `mutex`: unsubscribes before completing, so the handler never
  // races a second message.
  static void complete_claimed(Claim claimed, boost::system::error_code error, std::optional<Message> message) {
    claimed.second.reset();
    if (claimed.first) claimed.first(error, std::move(message));
  }
};

Connector::~Connector() { abort_waits(); }

void Connector::finish_wait(const std::shared_ptr<WaitState>& state, boost::system::error_code error,
                            std::optional<Message> message) {
  WaitState::Claim claimed;
  {
    std::lock_guard lock(state->mutex);
    claimed = state->claim();
  }
  WaitState::complete_claimed(std::move(claimed), error, std::move(message));
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
  // The Message form, so that the message carries its position where the
  // transport knows it.
  auto consumer = start_consuming(MessageCallback([state](const Message& message) {
                                    {
                                      std::lock_guard lock(state->mutex);
                                      if (state->done) return;
                                      if (state->checking) {
                                        // Held until check() has said no: a check that throws or says yes
                                        // must not have completed the handler already.
                                        if (!state->early) state->early.emplace(message);
                                        return;
                                      }
                                    }
                                    finish_wait(state, {}, message);
                                  }),
                                  std::move(filter));
  {
    std::lock_guard lock(state->mutex);
    if (!state->done) state->consumer = std::move(consumer);
  }
  consumer.reset();  // already finished (the connector is going away): drop it
  bool satisfied = false;
  try {
    satisfied = check();
  } catch (...) {
    WaitState::Claim dropped;  // released after the lock, never called
    {
      std::lock_guard lock(state->mutex);
      dropped = state->claim();
      state->early.reset();
    }
    throw;
  }
  if (satisfied) {
    finish_wait(state, {}, std::nullopt);
    return;
  }
  WaitState::Claim claimed;
  std::optional<Message> early;
  {
    std::lock_guard lock(state->mutex);
    state->checking = false;
    if (state->early) {
      // Claimed under the same lock, so that no later message completes it first.
      early = std::move(state->early);
      claimed = state->claim();
    }
  }
  if (early) WaitState::complete_claimed(std::move(claimed), {}, std::move(early));
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
