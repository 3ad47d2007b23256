#pragma once

// The logical transport's replication connection, its I/O: a thin Asio
// driver for LogicalMachine (logical_machine.hpp), as Listener is for the
// NOTIFY listener's machine. libpq runs without blocking (non-blocking
// connect, commands, PQgetCopyData in async mode, PQputCopyData and
// PQflush); the socket and the timers are waited on on a strand of the
// user's executor; no thread of its own, no polling loop. What it receives
// goes to a StreamSink, what it counts to a ListenerStatus.

#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>

#include "listener.hpp"
#include "logical_machine.hpp"
#include "pq_connection.hpp"
#include "pq_driver.hpp"

namespace livestate::mq::detail {

/// Where a stream's messages go: the dispatcher of a connector's live
/// consumers, or one durable consumer. Called on the stream's strand.
class StreamSink {
 public:
  StreamSink() = default;
  StreamSink(const StreamSink&) = delete;
  StreamSink& operator=(const StreamSink&) = delete;
  virtual ~StreamSink() = default;

  /// `items`, in order (moved from). Durable: they are a transaction ending
  /// at `end` (0: control events alone); call LogicalStream::delivered(end)
  /// once they have been. False: stop reading; the sink calls
  /// LogicalStream::resume() when it wants more.
  virtual bool deliver(std::vector<Item>& items, replication::Lsn end) = 0;
  /// The server refused to stream (the stream tries again later).
  virtual void refused(const stream_action::Refused& refusal) { (void)refusal; }
  /// The stream started (true) or stopped (false).
  virtual void streaming(bool now) { (void)now; }
};

class LogicalStream final : public PqDriver<LogicalStream, LogicalMachine, StreamTimer, stream_timer_count> {
 public:
  LogicalStream(const boost::asio::any_io_executor& executor, std::string url, ConnectionSettings connection,
                StreamSettings settings, std::shared_ptr<ListenerStatus> status, std::weak_ptr<StreamSink> sink);

  /// Each returns at once, from any thread; the work is done on the strand.
  void start();
  void stop();
  void delivered(replication::Lsn end);
  void resume();

 private:
  template <class, class, class, std::size_t>
  friend class PqDriver;

  void run(StreamActions actions);
  void read_input();
  void read_results(PGconn* connection, std::uint64_t generation, Clock::time_point now);
  void read_stream(PGconn* connection, std::uint64_t generation, Clock::time_point now);
  void send_command(const std::string& sql);
  void send_copy_data(const std::string& bytes);
  void close() noexcept;

  const std::shared_ptr<ListenerStatus> m_status;
  const std::weak_ptr<StreamSink> m_sink;

  // The strand's.
  bool m_command_in_flight = false;
  bool m_copying = false;  // START_REPLICATION answered: CopyBoth mode
  Result m_last_result;
};

}  // namespace livestate::mq::detail
