#include "logical_durable.hpp"

#include <atomic>
#include <condition_variable>
#include <limits>
#include <mutex>

#include "livestate/core/error.hpp"
#include "logical_slots.hpp"
#include "logical_stream.hpp"
#include "subscriber.hpp"

namespace livestate::mq::detail {

namespace {

// A durable consumer on a permanent slot. The slot is its queue and its
// lock: the server keeps every committed message since the position
// acknowledged last, and streams a slot to one session at a time. Its
// stream (a replication connection of its own) hands what matches the filter
// to its Subscriber (a queue and a strand of its own); once a transaction's
// messages have been delivered (callbacks returned), a Work item behind them
// tells the stream, which acknowledges in batches (standby status updates).
// A message delivered but not yet acknowledged when the consumer stops or
// crashes comes again: at least once. Nothing is dropped for a slow
// consumer: past max_buffered waiting, the stream stops reading (the server
// keeps the rest) until half of them are delivered.
class SlotConsumer final : public StreamSink, public std::enable_shared_from_this<SlotConsumer> {
 public:
  SlotConsumer(std::shared_ptr<const ConnectorConfig> config, boost::asio::any_io_executor executor,
               std::shared_ptr<DispatchCounters> counters, std::string name, Filter filter, MessageCallback callback,
               ControlCallback on_control)
      : m_config(std::move(config)),
        m_executor(std::move(executor)),
        m_counters(std::move(counters)),
        m_name(std::move(name)),
        m_filter(std::move(filter)),
        m_callback(std::move(callback)),
        m_on_control(std::move(on_control)),
        m_bound(std::max<std::size_t>(m_config->options.max_buffered, 2)) {}

  void start() {
    const auto& config = *m_config;
    const auto what = "cannot start durable consumer '" + m_name + "'";
    SlotRegistration registration;
    {
      const Connection connection = start_connection(config.url, config.connection("livestate-slot"), true);
      if (PQstatus(connection.get()) != CONNECTION_OK) {
        throw TransportError(what + ": cannot connect to " + config.name + ": " +
                             one_line(PQerrorMessage(connection.get())));
      }
      try {
        registration = register_durable_slot(connection.get(), config.name, config.options.channel, m_name, m_filter,
                                             config.options.statement_timeout);
      } catch (const StatementError& error) {
        throw TransportError(what + " on " + config.name + ": " + error.what());
      }
    }
    m_slot = registration.slot;
    std::weak_ptr<SlotConsumer> weak = weak_from_this();
    m_subscriber = std::make_shared<Subscriber>(
        m_executor, std::numeric_limits<std::size_t>::max(), m_counters, "durable consumer '" + m_name + "'",
        [weak](const Delivery& delivery) {
          if (auto self = weak.lock()) self->on_message(delivery);
        },
        m_on_control);
    auto settings = StreamSettings::from(config.name, config.options);
    settings.slot = registration.slot;
    settings.temporary = false;
    settings.slot_known = registration.known;
    const auto wait_at_most = settings.connect_timeout + settings.statement_timeout * 2 + settings.slot_timeout;
    m_stream = std::make_shared<LogicalStream>(m_executor, config.url, config.connection("livestate-slot"), settings,
                                               m_status, weak);
    m_stream->start();
    wait_for_stream(what, wait_at_most);
  }

  void stop() noexcept {
    if (m_stopped.exchange(true)) return;
    if (m_subscriber) m_subscriber->stop();  // waits for a callback in progress
    // Its last acknowledgement goes out, and the slot is given back.
    if (m_stream) m_stream->stop();
  }

  // --- StreamSink (the stream's strand) ---------------------------------------------

  bool deliver(std::vector<Item>& items, replication::Lsn end) override {
    std::vector<Subscriber::Entry> entries;
    entries.reserve(items.size() + 1);
    std::shared_ptr<Delivery> last;  // of the transaction, for this consumer
    std::size_t messages = 0;
    for (auto& item : items) {
      if (auto* delivery = std::get_if<Delivery>(&item)) {
        if (!m_filter.matches(delivery->key)) continue;
        last = std::make_shared<Delivery>(std::move(*delivery));
        entries.emplace_back(std::shared_ptr<const Delivery>(last));
        ++messages;
      } else {
        entries.emplace_back(std::move(std::get<ControlEvent>(item)));
      }
    }
    // The transaction is acknowledged once its last message for this consumer
    // has been delivered: from inside that delivery, so that a consumer
    // stopped right after its callback returned still acknowledges it. With
    // none for it, by a step of its queue.
    if (end != 0 && last) {
      last->acknowledges = end;
    } else if (end != 0) {
      entries.emplace_back(Subscriber::Work([stream = std::weak_ptr<LogicalStream>(m_stream), end] {
        if (auto alive = stream.lock()) alive->delivered(end);
      }));
    }
    bool paused = false;
    {
      std::lock_guard lock(m_mutex);
      m_queued += messages;  // before they can be delivered
      raise_peak(m_counters->backlog_peak, m_queued);
      if (m_queued >= m_bound) m_paused = true;
      paused = m_paused;
    }
    for (auto& entry : entries) m_subscriber->push(std::move(entry));
    return !paused;
  }

  void refused(const stream_action::Refused& refusal) override {
    std::lock_guard lock(m_mutex);
    if (m_start != Start::waiting) return;
    m_start = Start::refused;
    m_refusal = refusal;
    m_changed.notify_all();
  }

  void streaming(bool now) override {
    std::lock_guard lock(m_mutex);
    if (!now || m_start != Start::waiting) return;
    m_start = Start::streaming;
    m_changed.notify_all();
  }

 private:
  enum class Start { waiting, streaming, refused, done };

  void wait_for_stream(const std::string& what, std::chrono::milliseconds at_most) {
    const auto deadline = std::chrono::steady_clock::now() + at_most;
    std::unique_lock lock(m_mutex);
    while (true) {
      if (!m_changed.wait_until(lock, deadline, [&] { return m_start != Start::waiting; })) {
        m_start = Start::done;
        PostgresStats stats;
        m_status->fill(stats);
        throw TransportError(what + ": not streaming from " + m_config->name + " after " +
                             std::to_string(at_most.count()) + " ms: " + stats.last_reconnect_reason);
      }
      if (m_start == Start::streaming) {
        m_start = Start::done;
        return;
      }
      const auto refusal = m_refusal;
      // This process's own previous consumer of the name, whose session the
      // server has not seen end yet: the stream tries again in a moment.
      if (refusal.why == Refusal::in_use && refusal.active_pid &&
          released_by_this_process(m_slot, *refusal.active_pid)) {
        m_start = Start::waiting;
        continue;
      }
      m_start = Start::done;
      if (refusal.why == Refusal::in_use) {
        throw PersistentNameInUse("durable consumer '" + m_name + "' is already active (in this or another " +
                                  "process: its replication slot " + m_slot + " is streaming): stop it first");
      }
      throw UnsupportedServer(what + ": " + refusal.text);
    }
  }

  // The consumer's strand. A callback that throws has had its message too;
  // one not called (stopped meanwhile) has not: its transaction is not
  // acknowledged, and comes again to the next consumer of the name.
  void on_message(const Delivery& delivery) {
    if (m_stopped) return;
    struct Done {
      SlotConsumer& consumer;
      std::uint64_t acknowledges;
      ~Done() { consumer.delivered_one(acknowledges); }
    } done{*this, delivery.acknowledges};
    m_callback(delivery);
  }

  void delivered_one(std::uint64_t acknowledges) noexcept {
    if (acknowledges != 0 && m_stream) m_stream->delivered(acknowledges);
    bool resume = false;
    {
      std::lock_guard lock(m_mutex);
      --m_queued;
      if (m_paused && m_queued <= m_bound / 2) {
        m_paused = false;
        resume = true;
      }
    }
    if (resume && m_stream) m_stream->resume();
  }

  const std::shared_ptr<const ConnectorConfig> m_config;
  const boost::asio::any_io_executor m_executor;
  const std::shared_ptr<DispatchCounters> m_counters;
  const std::string m_name;
  const Filter m_filter;
  const MessageCallback m_callback;
  const ControlCallback m_on_control;
  const std::size_t m_bound;
  const std::shared_ptr<ListenerStatus> m_status = std::make_shared<ListenerStatus>();
  std::string m_slot;
  std::shared_ptr<Subscriber> m_subscriber;
  std::shared_ptr<LogicalStream> m_stream;
  std::atomic<bool> m_stopped{false};

  std::mutex m_mutex;
  std::condition_variable m_changed;
  Start m_start = Start::waiting;
  stream_action::Refused m_refusal{};
  std::size_t m_queued = 0;  // messages handed to the subscriber, not yet delivered
  bool m_paused = false;
};

class SlotConsumerHandle final : public Consumer {
 public:
  explicit SlotConsumerHandle(std::shared_ptr<SlotConsumer> consumer) : m_consumer(std::move(consumer)) {}
  ~SlotConsumerHandle() override { stop_consuming(); }
  void stop_consuming() override { m_consumer->stop(); }

 private:
  std::shared_ptr<SlotConsumer> m_consumer;
};

}  // namespace

std::unique_ptr<Consumer> start_slot_consumer(std::shared_ptr<const ConnectorConfig> config,
                                              boost::asio::any_io_executor executor,
                                              std::shared_ptr<DispatchCounters> counters, std::string name,
                                              Filter filter, MessageCallback callback, ControlCallback on_control) {
  if (!callback) throw std::invalid_argument("livestate::mq::PostgresConnector::start_consuming: empty callback");
  auto consumer = std::make_shared<SlotConsumer>(std::move(config), std::move(executor), std::move(counters),
                                                 std::move(name), std::move(filter), std::move(callback),
                                                 std::move(on_control));
  try {
    consumer->start();
  } catch (...) {
    consumer->stop();
    throw;
  }
  return std::make_unique<SlotConsumerHandle>(std::move(consumer));
}

}  // namespace livestate::mq::detail
