// The PostgreSQL LISTEN/NOTIFY connector: the facade that puts its parts
// together; and make_postgres_connector, which reads the URL's transport and
// makes this one or the logical one (logical_connector.hpp).
//
// - The listening connection (listener.hpp), driven without blocking on a
//   strand of the user's executor; its logic (connecting, LISTEN,
//   reconnecting, probing, sequences and gaps, bodies sent by reference) is a
//   state machine without I/O (listener_machine.hpp).
// - What it receives goes, in order, to the consumers' queues through the
//   filter index (dispatcher.hpp); each consumer has a queue of its own,
//   bounded, drained on a strand of its own (subscriber.hpp): a consumer that
//   blocks or throws delays and costs nobody else (given an executor with
//   threads to spare), and one that falls behind loses only its own messages
//   and is told so.
// - Durable consumers keep their messages in tables (durable_queue.hpp).
// - produce() runs in the caller's thread on a producing connection of the
//   connector's own (producer.hpp), through the send statements (sender.hpp);
//   the tables are made by tables.hpp, and pruned every so many messages,
//   sent either way, by pruner.hpp.

#include <cstdio>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>

#include "connector_config.hpp"
#include "connector_stats.hpp"
#include "dispatcher.hpp"
#include "durable_queue.hpp"
#include "listener.hpp"
#include "livestate/core/detail/postgres.hpp"
#include "livestate/core/error.hpp"
#include "livestate/mq/postgres.hpp"
#include "livestate/mq/transactional.hpp"
#include "logical_connector.hpp"
#include "postgres_registry.hpp"
#include "pq_connection.hpp"
#include "producer.hpp"
#include "pruner.hpp"
#include "tables.hpp"

namespace livestate::mq {

namespace {

namespace asio = boost::asio;
using namespace detail;

// A mistake in the program's options, found before anything runs (the
// logic_error side, as an empty callback is): LISTEN would cut a long name
// short and listen there while pg_notify refuses it, so the connector would
// say it listens while every produce fails.
void check_channel(const std::string& channel) {
  constexpr std::size_t max_identifier_bytes = 63;  // NAMEDATALEN - 1
  const auto refuse = [&](const std::string& why) {
    throw std::invalid_argument("livestate::mq::make_postgres_connector: the channel \"" + channel.substr(0, 80) +
                                "\" " + why);
  };
  if (channel.empty()) refuse("is empty");
  if (channel.find('\0') != std::string::npos) refuse("holds a NUL byte, which PostgreSQL identifiers can't");
  if (channel.size() > max_identifier_bytes) {
    refuse("is " + std::to_string(channel.size()) +
           " bytes long: PostgreSQL cuts identifiers to 63 bytes, so it would listen on another channel than the "
           "one notified; use a name of 63 bytes or fewer");
  }
}

std::string random_origin() {
  std::random_device device;
  std::uniform_int_distribution<std::uint64_t> digits;
  char text[24];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(digits(device)));
  return text;
}

class PostgresConnectorImpl final : public PostgresConnector, public TransactionalTransport {
 public:
  PostgresConnectorImpl(std::shared_ptr<const ConnectorConfig> config, asio::any_io_executor executor)
      : m_config(std::move(config)),
        m_executor(std::move(executor)),
        m_producer(*m_config, m_tables),
        m_dispatcher(std::make_shared<Dispatcher>(m_executor, m_config->options.max_buffered,
                                                  std::make_shared<DispatchCounters>())),
        m_listener(std::make_shared<Listener>(m_executor, m_config->url, m_config->connection("livestate-listener"),
                                              ListenerSettings::from(m_config->name, m_config->options), m_status,
                                              m_dispatcher)) {
    m_listener->start();
  }

  // Afterwards no consumer is called; waits for callbacks running in other
  // threads.
  ~PostgresConnectorImpl() override {
    m_status->stop();
    m_dispatcher->stop();
    m_listener->stop();
    m_pruner->stop();
    abort_waits();
  }

  void produce(const RoutingKey& key, const Json& body) override {
    m_producer.produce(key, body);
    m_pruner->sent(1);
  }

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
    return m_status->wait_listening(timeout);
  }

  void send_in_transaction(std::span<const SentMessage> messages, SqlRunner& sql) override {
    m_producer.send_in_transaction(messages, sql);
    m_pruner->sent(messages.size());
  }

 protected:
  std::unique_ptr<Consumer> start_consuming_with(Callback callback, Filter filter, ConsumeOptions options) override {
    if (options.persistent_name) {
      return start_durable_consumer({m_config, m_tables, m_dispatcher, m_status, m_executor},
                                    std::move(*options.persistent_name), std::move(filter), std::move(callback),
                                    std::move(options.on_control));
    }
    if (!callback) throw std::invalid_argument("livestate::mq::PostgresConnector::start_consuming: empty callback");
    return std::make_unique<SubscriptionConsumer>(m_dispatcher->subscribe(
        filter, "consumer of " + filter.str(),
        [callback = std::move(callback)](const Delivery& delivery) { callback(delivery.key, delivery.body); },
        std::move(options.on_control)));
  }

 private:
  const std::shared_ptr<const ConnectorConfig> m_config;
  const asio::any_io_executor m_executor;
  const std::shared_ptr<Tables> m_tables = std::make_shared<Tables>();
  Producer m_producer;
  const std::shared_ptr<ListenerStatus> m_status = std::make_shared<ListenerStatus>();
  const std::shared_ptr<Dispatcher> m_dispatcher;
  const std::shared_ptr<Listener> m_listener;
  const std::shared_ptr<Pruner> m_pruner = std::make_shared<Pruner>(m_executor, m_config);
};

std::unique_ptr<Connector> connect_postgres(std::string_view url, asio::any_io_executor executor) {
  return make_postgres_connector(url, std::move(executor));
}

int register_connector() noexcept {
  detail::register_postgres_connector(&connect_postgres);
  return 1;
}

}  // namespace

std::unique_ptr<PostgresConnector> make_postgres_connector(std::string_view url, asio::any_io_executor executor,
                                                           PostgresOptions options) {
  check_channel(options.channel);
  const std::string name = livestate::detail::redact_postgres_url(url);
  // livestate's own parameter, which libpq would refuse.
  auto [for_libpq, transport_name] = livestate::detail::take_transport_parameter(url);
  Transport transport = Transport::notify;
  if (transport_name && *transport_name == "logical") {
    transport = Transport::logical;
  } else if (transport_name && *transport_name != "notify") {
    throw UnsupportedUrl("cannot listen or produce on " + name + ": unknown transport '" +
                         transport_name->substr(0, 40) + "': use transport=notify (the default) or transport=logical");
  }
  // A URL libpq can't read is refused now, in words without its passwords
  // (libpq's own quote the token they refuse), rather than by every
  // connection attempt, later, in the log.
  char* error = nullptr;
  if (PQconninfoOption* parsed = PQconninfoParse(for_libpq.c_str(), &error)) {
    PQconninfoFree(parsed);
  } else {
    const std::string reason = error != nullptr ? one_line(error) : "out of memory";
    if (error != nullptr) PQfreemem(error);
    throw UnsupportedUrl("cannot listen or produce on " + name +
                         ": libpq cannot read it: " + livestate::detail::scrub_postgres_secrets(reason, url));
  }
  auto config = std::make_shared<const ConnectorConfig>(
      ConnectorConfig{std::move(for_libpq), name, std::move(options), random_origin(), transport});
  if (transport == Transport::logical) return make_logical_connector(std::move(config), std::move(executor));
  return std::make_unique<PostgresConnectorImpl>(std::move(config), std::move(executor));
}

}  // namespace livestate::mq

// Linking livestate::mq_postgres makes mq::connect("postgresql://…") work: the
// target's --undefined=livestate_mq_postgres_backend keeps this object in the
// program, and its initializer registers the connector with livestate::mq.
extern "C" {
int livestate_mq_postgres_backend = livestate::mq::register_connector();
}
