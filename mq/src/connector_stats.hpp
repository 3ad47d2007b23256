#pragma once

// What a PostgreSQL connector reports, whichever its transport: its
// consumers' deliveries (the dispatcher's counters) and its receiving
// connection's (the listener's, or the logical stream's).

#include <cstdint>

#include "dispatcher.hpp"
#include "listener.hpp"
#include "livestate/mq/postgres.hpp"

namespace livestate::mq::detail {

[[nodiscard]] inline ConnectorStats connector_stats(const Dispatcher& dispatcher, std::uint64_t produced) {
  const auto& counters = *dispatcher.counters();
  ConnectorStats stats;
  stats.consumers = dispatcher.consumers();
  stats.produced = produced;
  stats.delivered = counters.delivered;
  stats.callback_errors = counters.callback_errors;
  return stats;
}

[[nodiscard]] inline PostgresStats postgres_stats(const ListenerStatus& status, const Dispatcher& dispatcher) {
  const auto& counters = *dispatcher.counters();
  PostgresStats stats;
  status.fill(stats);
  stats.delivered = counters.delivered;
  stats.callback_errors = counters.callback_errors;
  stats.dropped_overflow = counters.dropped;
  stats.backlog_peak = counters.backlog_peak;
  stats.queue_rows_read = counters.queue_rows_read;
  stats.queue_page_peak = counters.queue_page_peak;
  return stats;
}

}  // namespace livestate::mq::detail
