#include "pruner.hpp"

#include <boost/asio/post.hpp>

#include "livestate/core/log.hpp"
#include "pq_session.hpp"
#include "tables.hpp"

namespace livestate::mq::detail {

Pruner::Pruner(const boost::asio::any_io_executor& executor, std::shared_ptr<const ConnectorConfig> config)
    : m_strand(boost::asio::make_strand(executor)), m_config(std::move(config)) {}

void Pruner::sent(std::size_t count) {
  const auto before = m_sent.fetch_add(count);
  if (before / every == (before + count) / every || m_stopped) return;
  if (m_running.exchange(true)) return;  // the round under way will do
  boost::asio::post(m_strand, [self = shared_from_this()] { self->prune(); });
}

void Pruner::stop() noexcept {
  m_stopped = true;
  boost::asio::post(m_strand, [self = shared_from_this()] {
    if (self->m_session) self->m_session->close();
  });
}

void Pruner::prune() {
  if (m_stopped) return finished(false, "stopped");
  const auto run = [self = shared_from_this()] {
    self->m_session->async_run(prune_sql,
                               {std::to_string(self->m_config->options.body_retention.count()),
                                std::to_string(self->m_config->options.queue_retention.count())},
                               [self](AsyncSession::Outcome outcome) { self->finished(outcome.ok, outcome.error); });
  };
  if (m_session && m_session->connected()) return run();
  m_session = std::make_shared<AsyncSession>(m_strand, m_config->options.statement_timeout);
  m_session->async_connect(m_config->url, m_config->connection("livestate-pruner"),
                           [self = shared_from_this(), run](AsyncSession::Outcome connected) {
                             if (!connected.ok) return self->finished(false, connected.error);
                             run();
                           });
}

void Pruner::finished(bool ok, const std::string& error) {
  ++m_rounds;
  // No tables yet (42P01) is nothing to prune; anything else is worth a line.
  if (!ok && !m_stopped && error.find("does not exist") == std::string::npos) {
    log(LogLevel::warning, "mq.postgres",
        "pruning old bodies and queued messages on " + m_config->name + " failed (tried again later): " + error);
  }
  m_running = false;
}

}  // namespace livestate::mq::detail
