// Control events, the options form of start_consuming, and the transactional
// seam: the parts of the richer consumer interface every connector shares.

#include "livestate/mq/control.hpp"
#include "livestate/mq/connector.hpp"
#include "livestate/mq/transactional.hpp"

namespace livestate::mq {

std::string_view to_string(ControlKind kind) noexcept {
  switch (kind) {
    case ControlKind::reconnected: return "reconnected";
    case ControlKind::gap: return "gap";
    case ControlKind::overflow: return "overflow";
    case ControlKind::expired: return "expired";
  }
  return "unknown";
}

std::unique_ptr<Consumer> Connector::start_consuming_with(Callback callback, Filter filter, ConsumeOptions options) {
  return start_consuming(std::move(callback), std::move(filter), std::move(options.persistent_name));
}

std::unique_ptr<Consumer> Connector::start_consuming_messages(MessageCallback callback, Filter filter,
                                                              ConsumeOptions options) {
  Callback plain;
  if (callback) {
    plain = [callback = std::move(callback)](const RoutingKey& key, const Json& body) { callback(Message{key, body}); };
  }
  return start_consuming_with(std::move(plain), std::move(filter), std::move(options));
}

SqlRunner::~SqlRunner() = default;
TransactionalTransport::~TransactionalTransport() = default;

}  // namespace livestate::mq
