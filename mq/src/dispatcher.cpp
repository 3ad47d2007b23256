#include "dispatcher.hpp"

#include <algorithm>

namespace livestate::mq::detail {

void Subscription::stop() noexcept {
  if (!m_subscriber) return;
  if (m_dispatcher) m_dispatcher->remove(m_subscriber.get());
  m_subscriber->stop();
}

Subscription Dispatcher::subscribe(const Filter& filter, std::string name, Subscriber::MessageHandler on_message,
                                   ControlCallback on_control) {
  auto subscriber = std::make_shared<Subscriber>(m_executor, m_bound, m_counters, std::move(name),
                                                 std::move(on_message), std::move(on_control));
  std::lock_guard lock(m_mutex);
  if (m_stopped) {
    subscriber->stop();
    return Subscription(nullptr, std::move(subscriber));
  }
  auto route = std::make_unique<Route>(Route{subscriber, filter, m_next_order++});
  m_index.insert(filter, route.get());
  if (subscriber->takes_control()) m_control_routes.push_back(route.get());
  m_routes.emplace(subscriber.get(), std::move(route));
  return Subscription(shared_from_this(), std::move(subscriber));
}

void Dispatcher::remove(const Subscriber* subscriber) noexcept {
  std::unique_ptr<Route> route;
  {
    std::lock_guard lock(m_mutex);
    const auto found = m_routes.find(subscriber);
    if (found == m_routes.end()) return;
    route = std::move(found->second);
    m_routes.erase(found);
    m_index.erase(route->filter, route.get());
    std::erase(m_control_routes, route.get());
  }
  // The route (and perhaps the last reference to its subscriber) goes here,
  // outside the lock.
}

void Dispatcher::deliver(std::vector<Item>& items) {
  std::lock_guard lock(m_mutex);
  if (m_stopped) return;
  for (auto& item : items) {
    if (auto* delivery = std::get_if<Delivery>(&item)) {
      m_matched.clear();
      if (m_index.collect(delivery->key, m_matched) > 1) {
        std::sort(m_matched.begin(), m_matched.end(),
                  [](const Route* a, const Route* b) { return a->order < b->order; });
      }
      if (m_matched.empty()) continue;
      // One copy, shared by every queue it goes to.
      const auto shared = std::make_shared<const Delivery>(std::move(*delivery));
      for (Route* route : m_matched) route->subscriber->push(shared);
    } else {
      for (Route* route : m_control_routes) route->subscriber->push(std::get<ControlEvent>(item));
    }
  }
}

void Dispatcher::stop() noexcept {
  std::unordered_map<const Subscriber*, std::unique_ptr<Route>> routes;
  {
    std::lock_guard lock(m_mutex);
    m_stopped = true;
    routes.swap(m_routes);
    m_index = FilterIndex<Route*>();
    m_control_routes.clear();
  }
  for (auto& [subscriber, route] : routes) route->subscriber->stop();
}

std::size_t Dispatcher::consumers() const {
  std::lock_guard lock(m_mutex);
  return m_routes.size();
}

}  // namespace livestate::mq::detail
