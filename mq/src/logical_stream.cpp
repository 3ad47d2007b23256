#include "logical_stream.hpp"

#include <poll.h>
#include <random>
#include <type_traits>

#include <boost/asio/post.hpp>

#include "logical_slots.hpp"

namespace livestate::mq::detail {

namespace asio = boost::asio;
namespace action = stream_action;

namespace {

CommandResult outcome_of(const PGresult* result) {
  CommandResult outcome;
  const auto status = PQresultStatus(result);
  if (result != nullptr && status == PGRES_COPY_BOTH) {
    outcome.status = CommandResult::Status::copy_both;
  } else if (result != nullptr && (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)) {
    outcome.status = CommandResult::Status::ok;
    for (int row = 0; row < PQntuples(result); ++row) {
      auto& cells = outcome.rows.emplace_back();
      for (int column = 0; column < PQnfields(result); ++column) {
        if (PQgetisnull(result, row, column) != 0) {
          cells.emplace_back();
        } else {
          cells.emplace_back(
              std::string(PQgetvalue(result, row, column), static_cast<std::size_t>(PQgetlength(result, row, column))));
        }
      }
    }
  } else {
    outcome.error = result != nullptr ? one_line(PQresultErrorMessage(result)) : "no result";
    if (const char* state = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr) {
      outcome.sqlstate = state;
    }
  }
  return outcome;
}

// Its connections are WAL senders that also take SQL.
ConnectionSettings as_walsender(ConnectionSettings settings) {
  settings.replication = true;
  return settings;
}

}  // namespace

LogicalStream::LogicalStream(const asio::any_io_executor& executor, std::string url, ConnectionSettings connection,
                             StreamSettings settings, std::shared_ptr<ListenerStatus> status,
                             std::weak_ptr<StreamSink> sink)
    : PqDriver(executor, std::move(url), as_walsender(connection),
               LogicalMachine(std::move(settings),
                              [generator = std::mt19937_64(std::random_device{}())]() mutable { return generator(); })),
      m_status(std::move(status)),
      m_sink(std::move(sink)) {}

void LogicalStream::start() {
  asio::post(m_strand, [self = shared_from_this()] { self->run(self->m_machine.start(Clock::now())); });
}

void LogicalStream::stop() {
  asio::post(m_strand, [self = shared_from_this()] { self->run(self->m_machine.stop(Clock::now())); });
}

void LogicalStream::delivered(replication::Lsn end) {
  asio::post(m_strand, [self = shared_from_this(), end] { self->run(self->m_machine.delivered(end, Clock::now())); });
}

void LogicalStream::resume() {
  asio::post(m_strand, [self = shared_from_this()] { self->run(self->m_machine.resume(Clock::now())); });
}

void LogicalStream::run(StreamActions actions) {
  for (auto& next : actions) {
    std::visit(
        [&](auto& step) {
          using Step = std::decay_t<decltype(step)>;
          if (perform_io(step)) return;
          if constexpr (std::is_same_v<Step, action::ReadInput>) {
            read_input();
          } else if constexpr (std::is_same_v<Step, action::SendCommand>) {
            send_command(step.sql);
          } else if constexpr (std::is_same_v<Step, action::SendCopyData>) {
            send_copy_data(step.bytes);
          } else if constexpr (std::is_same_v<Step, action::Deliver>) {
            const auto sink = m_sink.lock();
            if (sink && !sink->deliver(step.items, step.end)) run(m_machine.pause());
          } else if constexpr (std::is_same_v<Step, action::Refused>) {
            if (const auto sink = m_sink.lock()) sink->refused(step);
          } else if constexpr (std::is_same_v<Step, action::PublishCounters>) {
            m_status->publish(step.counters);
          } else if constexpr (std::is_same_v<Step, action::PublishStatus>) {
            m_status->publish(step.streaming, step.last_reconnect_reason);
            if (const auto sink = m_sink.lock()) sink->streaming(step.streaming);
          }
        },
        next);
  }
}

void LogicalStream::read_input() {
  const auto generation = m_generation;
  PGconn* connection = m_connection.get();
  const auto now = Clock::now();
  if (connection == nullptr) return;
  if (PQconsumeInput(connection) == 0) return run(m_machine.failed(one_line(PQerrorMessage(connection)), now));
  if (!m_copying) read_results(connection, generation, now);
  if (generation != m_generation) return;
  if (m_copying) read_stream(connection, generation, now);
  if (generation != m_generation) return;
  run(m_machine.input_read(PQstatus(connection) == CONNECTION_OK, now));
}

// A setup command's results; START_REPLICATION's is CopyBoth, after which
// there is no other until the stream ends.
void LogicalStream::read_results(PGconn* connection, std::uint64_t generation, Clock::time_point now) {
  while (m_command_in_flight && PQisBusy(connection) == 0) {
    PGresult* raw = PQgetResult(connection);
    if (raw != nullptr && PQresultStatus(raw) == PGRES_COPY_BOTH) {
      m_last_result.reset(raw);
      m_command_in_flight = false;
      m_copying = true;
      run(m_machine.command_result(outcome_of(m_last_result.get()), now));
      return;
    }
    if (raw != nullptr) {
      // The first failure, or else the last result, is the command's.
      if (!m_last_result || outcome_of(m_last_result.get()).status != CommandResult::Status::failed) {
        m_last_result.reset(raw);
      } else {
        PQclear(raw);
      }
      continue;
    }
    m_command_in_flight = false;
    run(m_machine.command_result(outcome_of(m_last_result.get()), now));  // may send the next command
    if (generation != m_generation) return;
  }
}

void LogicalStream::read_stream(PGconn* connection, std::uint64_t generation, Clock::time_point now) {
  while (!m_machine.paused()) {
    char* buffer = nullptr;
    const int size = PQgetCopyData(connection, &buffer, 1);
    if (size > 0) {
      const std::unique_ptr<char, decltype(&PQfreemem)> owned(buffer, &PQfreemem);
      run(m_machine.copy_data(std::string_view(buffer, static_cast<std::size_t>(size)), now));
      if (generation != m_generation) return;
      continue;
    }
    if (size == 0) return;  // no whole message yet
    // The server ended the stream (-1: its result says why) or the connection broke (-2).
    std::string reason = "the server ended the replication stream";
    if (size == -1) {
      const Result result(PQgetResult(connection));
      if (result && PQresultStatus(result.get()) == PGRES_FATAL_ERROR) {
        reason += ": " + one_line(PQresultErrorMessage(result.get()));
      }
    } else {
      reason = one_line(PQerrorMessage(connection));
    }
    return run(m_machine.failed(reason, now));
  }
}

void LogicalStream::send_command(const std::string& sql) {
  if (PQsendQuery(m_connection.get(), sql.c_str()) == 0) {
    return run(
        m_machine.failed("cannot send a command: " + one_line(PQerrorMessage(m_connection.get())), Clock::now()));
  }
  m_command_in_flight = true;
  m_last_result.reset();
  flush();
}

void LogicalStream::send_copy_data(const std::string& bytes) {
  PGconn* connection = m_connection.get();
  if (connection == nullptr) return;
  const int queued = PQputCopyData(connection, bytes.data(), static_cast<int>(bytes.size()));
  if (queued < 0) {
    return run(m_machine.failed("cannot send to the server: " + one_line(PQerrorMessage(connection)), Clock::now()));
  }
  // queued == 0: libpq's buffer is full; the next update says the same or more.
  flush();
}

void LogicalStream::close() noexcept {
  m_command_in_flight = false;
  m_last_result.reset();
  if (m_connection && m_copying) {
    // The last acknowledgement out (a moment at most), and the slot noted as
    // being given back, so that a consumer of the same name started next in
    // this process waits for the server to see it go rather than calling it
    // taken.
    for (int tries = 0; tries < 4 && PQflush(m_connection.get()) > 0; ++tries) {
      pollfd out{PQsocket(m_connection.get()), POLLOUT, 0};
      ::poll(&out, 1, 25);
    }
    note_released_slot(m_machine.slot(), PQbackendPID(m_connection.get()));
  }
  m_copying = false;
  drop_connection();
}

}  // namespace livestate::mq::detail
