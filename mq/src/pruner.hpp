#pragma once

// Pruning the connector's tables: bodies sent by reference past their
// retention, and messages kept for durable queues whose consumer never came
// back. Every so many messages sent — by produce() or in a store's
// transactions alike, so that a program that only sends through its store
// prunes too — on a connection of the pruner's own, without blocking the
// sender or the executor's thread.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/strand.hpp>

#include "connector_config.hpp"

namespace livestate::mq::detail {

class AsyncSession;

/// Thread safety: sent() and stop() from any thread.
class Pruner final : public std::enable_shared_from_this<Pruner> {
 public:
  /// Every `every` messages sent, one pruning round.
  static constexpr std::uint64_t every = 1000;

  Pruner(const boost::asio::any_io_executor& executor, std::shared_ptr<const ConnectorConfig> config);

  /// `count` messages were sent: a round starts when they cross a multiple of
  /// `every` and none is under way.
  void sent(std::size_t count);
  /// No round starts afterwards; one under way is abandoned.
  void stop() noexcept;

  /// Rounds finished, failed or not (for tests).
  [[nodiscard]] std::uint64_t rounds() const noexcept { return m_rounds; }

 private:
  void prune();  // on the strand
  void finished(bool ok, const std::string& error);

  boost::asio::strand<boost::asio::any_io_executor> m_strand;
  std::shared_ptr<const ConnectorConfig> m_config;
  std::shared_ptr<AsyncSession> m_session;  // the strand's
  std::atomic<std::uint64_t> m_sent{0};
  std::atomic<bool> m_running{false};
  std::atomic<bool> m_stopped{false};
  std::atomic<std::uint64_t> m_rounds{0};
};

}  // namespace livestate::mq::detail
