#pragma once

// What the connector hands a live view, and the bounded queue it waits in
// until the view's strand applies it: at most max_queued messages. Past that,
// what waits is discarded and the view resyncs instead: the snapshot, read
// after those messages arrived, holds everything they announced, and a view
// that falls behind holds bounded memory.
//
// No locks: the view guards it with a mutex of its own, for the connector's
// threads put into it and the strand takes out.

#include <algorithm>
#include <cstdint>
#include <deque>
#include <utility>
#include <variant>
#include <vector>

#include "livestate/core/json.hpp"
#include "livestate/core/routing_key.hpp"
#include "livestate/mq/control.hpp"

namespace livestate::reconcile::detail {

struct Incoming {
  RoutingKey key;
  Json body;
};

/// A schema.N.migrated message.
struct SchemaMigrated {};

/// What the connector hands a view, in the order it does.
using Inbound = std::variant<Incoming, mq::ControlEvent, SchemaMigrated>;

class ViewInbox {
 public:
  explicit ViewInbox(std::size_t max_queued) : m_max_queued(max_queued) {}

  /// Queues `inbound`: a message past max_queued discards what waits instead
  /// (control events too: the resync covers them). True when the strand must
  /// be asked to drain (no drain is asked for or running).
  bool push(Inbound inbound) {
    if (std::holds_alternative<Incoming>(inbound)) {
      if (m_messages >= m_max_queued) {
        ++m_overflows;
        m_discarded += m_messages + 1;
        m_queue.clear();
        m_messages = 0;
        m_overflowed = true;
      } else {
        m_queue.push_back(std::move(inbound));
        m_peak = std::max(m_peak, ++m_messages);
      }
    } else {
      m_queue.push_back(std::move(inbound));
    }
    return !std::exchange(m_draining, true);
  }

  /// Moves up to `most` of what waits, in order, into `batch`. True when an
  /// overflow discarded messages since the last take: the resync it asks for
  /// comes before this batch (which arrived after it).
  bool take(std::vector<Inbound>& batch, std::size_t most) {
    const auto count = std::min(m_queue.size(), most);
    batch.reserve(batch.size() + count);
    for (std::size_t i = 0; i < count; ++i) {
      if (std::holds_alternative<Incoming>(m_queue.front())) --m_messages;
      batch.push_back(std::move(m_queue.front()));
      m_queue.pop_front();
    }
    return std::exchange(m_overflowed, false);
  }

  /// After a batch: true when more waits (the strand drains again); else the
  /// drain ends, and the next push asks for one.
  bool more() {
    if (!m_queue.empty() || m_overflowed) return true;
    m_draining = false;
    return false;
  }

  [[nodiscard]] std::uint64_t queued() const noexcept { return m_messages; }
  /// Is a drain asked for or running (something arrived and is not yet applied)?
  [[nodiscard]] bool draining() const noexcept { return m_draining; }
  [[nodiscard]] std::uint64_t peak() const noexcept { return m_peak; }
  [[nodiscard]] std::uint64_t overflows() const noexcept { return m_overflows; }
  [[nodiscard]] std::uint64_t discarded() const noexcept { return m_discarded; }

 private:
  std::size_t m_max_queued;
  std::deque<Inbound> m_queue;
  std::uint64_t m_messages = 0;  // the messages among m_queue
  std::uint64_t m_peak = 0;
  std::uint64_t m_overflows = 0;
  std::uint64_t m_discarded = 0;
  bool m_overflowed = false;  // since the strand last took
  bool m_draining = false;    // a drain is asked for or running
};

}  // namespace livestate::reconcile::detail
