// The PostgreSQL connector on its logical transport: the facade that puts its
// parts together, as postgres_connector.cpp does for NOTIFY, sharing its
// consumers' queues, its producing connection and its stats.
//
// - Messages are written with pg_logical_emit_message(true, channel, …) by
//   the producer (producer.hpp, send_logical in sender.hpp), in the store's
//   transaction or one of their own: delivered if, and only if, that
//   commits, in commit order, with no lock for the whole database and no
//   size limit.
// - Live consumers share one replication connection streaming a temporary
//   slot (logical_stream.hpp, its logic in logical_machine.hpp), made when
//   the first of them starts; what it receives goes, in order, to the
//   consumers' queues through the filter index (dispatcher.hpp).
// - A durable consumer is a permanent slot with a replication connection of
//   its own (logical_durable.hpp).

#include <mutex>
#include <stdexcept>

#include "connector_stats.hpp"
#include "livestate/mq/transactional.hpp"
#include "logical_connector.hpp"
#include "logical_durable.hpp"
#include "logical_slots.hpp"
#include "logical_stream.hpp"
#include "producer.hpp"

namespace livestate::mq::detail {

namespace {

namespace asio = boost::asio;

// The live stream hands everything to the dispatcher; its consumers' queues
// are bounded (an overflow event past max_buffered), so it never stops reading.
class DispatchSink final : public StreamSink {
 public:
  explicit DispatchSink(std::shared_ptr<Dispatcher> dispatcher) : m_dispatcher(std::move(dispatcher)) {}
  bool deliver(std::vector<Item>& items, replication::Lsn) override {
    m_dispatcher->deliver(items);
    return true;
  }

 private:
  std::shared_ptr<Dispatcher> m_dispatcher;
};

class LogicalConnector final : public PostgresConnector, public TransactionalTransport {
 public:
  LogicalConnector(std::shared_ptr<const ConnectorConfig> config, asio::any_io_executor executor)
      : m_config(std::move(config)),
        m_executor(std::move(executor)),
        m_producer(*m_config, std::make_shared<Tables>()),
        m_dispatcher(std::make_shared<Dispatcher>(m_executor, m_config->options.max_buffered,
                                                  std::make_shared<DispatchCounters>())),
        m_sink(std::make_shared<DispatchSink>(m_dispatcher)) {}

  // Afterwards no consumer is called; waits for callbacks running in other
  // threads.
  ~LogicalConnector() override {
    m_status->stop();
    m_dispatcher->stop();
    {
      std::lock_guard lock(m_stream_mutex);
      if (m_stream) m_stream->stop();
    }
    abort_waits();
  }

  void produce(const RoutingKey& key, const Json& body) override { m_producer.produce(key, body); }

  std::unique_ptr<Consumer> start_consuming(Callback callback, Filter filter,
                                            std::optional<std::string> persistent_name) override {
    return start_consuming_with(std::move(callback), std::move(filter), ConsumeOptions{std::move(persistent_name), {}});
  }
  using Connector::start_consuming;

  [[nodiscard]] ConnectorStats stats() const override { return connector_stats(*m_dispatcher, m_producer.produced()); }
  [[nodiscard]] PostgresStats postgres_stats() const override {
    return detail::postgres_stats(*m_status, *m_dispatcher);
  }
  [[nodiscard]] const std::string& origin() const noexcept override { return m_config->origin; }

  [[nodiscard]] bool wait_listening(std::chrono::milliseconds timeout) const override {
    listen();
    return m_status->wait_listening(timeout);
  }

  void send_in_transaction(std::span<const SentMessage> messages, SqlRunner& sql) override {
    m_producer.send_in_transaction(messages, sql);
  }

 protected:
  std::unique_ptr<Consumer> start_consuming_with(Callback callback, Filter filter, ConsumeOptions options) override {
    if (!callback) throw std::invalid_argument("livestate::mq::PostgresConnector::start_consuming: empty callback");
    return start_consuming_messages(
        [callback = std::move(callback)](const Message& message) { callback(message.key, message.body); },
        std::move(filter), std::move(options));
  }

  std::unique_ptr<Consumer> start_consuming_messages(MessageCallback callback, Filter filter,
                                                     ConsumeOptions options) override {
    if (!callback) throw std::invalid_argument("livestate::mq::PostgresConnector::start_consuming: empty callback");
    if (options.persistent_name) {
      return start_slot_consumer(m_config, m_executor, m_dispatcher->counters(), std::move(*options.persistent_name),
                                 std::move(filter), std::move(callback), std::move(options.on_control));
    }
    auto consumer = std::make_unique<SubscriptionConsumer>(m_dispatcher->subscribe(
        filter, "consumer of " + filter.str(),
        [callback = std::move(callback)](const Delivery& delivery) { callback(delivery); },
        std::move(options.on_control)));
    listen();
    return consumer;
  }

 private:
  // The live stream, made the first time a consumer starts or someone waits
  // for it: a connector that only produces holds no WAL sender and no slot.
  void listen() const {
    std::lock_guard lock(m_stream_mutex);
    if (m_stream) return;
    auto settings = StreamSettings::from(m_config->name, m_config->options);
    settings.slot = live_slot_name(m_config->origin);
    settings.temporary = true;
    m_stream = std::make_shared<LogicalStream>(m_executor, m_config->url, m_config->connection("livestate-listener"),
                                               std::move(settings), m_status, m_sink);
    m_stream->start();
  }

  const std::shared_ptr<const ConnectorConfig> m_config;
  const asio::any_io_executor m_executor;
  Producer m_producer;
  const std::shared_ptr<ListenerStatus> m_status = std::make_shared<ListenerStatus>();
  const std::shared_ptr<Dispatcher> m_dispatcher;
  const std::shared_ptr<DispatchSink> m_sink;
  mutable std::mutex m_stream_mutex;
  mutable std::shared_ptr<LogicalStream> m_stream;
};

}  // namespace

std::unique_ptr<PostgresConnector> make_logical_connector(std::shared_ptr<const ConnectorConfig> config,
                                                          asio::any_io_executor executor) {
  return std::make_unique<LogicalConnector>(std::move(config), std::move(executor));
}

}  // namespace livestate::mq::detail
