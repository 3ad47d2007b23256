#pragma once

// What the connector suites share: an executor running in a thread of its
// own, as in a program, and an inbox that records messages and control events
// and waits for them.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <pqxx/pqxx>

#include "livestate/core/message.hpp"
#include "livestate/mq/connector.hpp"
#include "livestate/mq/postgres.hpp"
#include "pg_test_server.hpp"

namespace livestate::test {

using namespace std::chrono_literals;

// Options for a connector of a test case: a channel of its own, so that cases
// don't hear each other, and quick reconnects.
inline livestate::mq::PostgresOptions fresh_channel() {
  livestate::mq::PostgresOptions options;
  options.channel = random_name("ch");
  options.reconnect_initial = 50ms;
  options.reconnect_max = 500ms;
  return options;
}

// The call that sends message text `payload` on `channel` as a foreign
// producer would, on the suite's transport (both SQL expressions): a
// notification, or a transactional logical message.
inline std::string raw_send(const std::string& channel, const std::string& payload) {
  return (logical_transport() ? "pg_logical_emit_message(true, " : "pg_notify(") + channel + ", " + payload + ")";
}

// Sends `payload` on `channel`, in a transaction of its own.
inline void send_raw(const std::string& channel, const std::string& payload) {
  pqxx::connection connection(test_server_url());
  pqxx::nontransaction work(connection);
  work.exec_params("SELECT " + raw_send("$1", "$2"), channel, payload);
}

// The condition on pg_stat_activity that finds the listening connection of
// `connector` on `channel`: its LISTEN, or its WAL sender streaming the
// connector's temporary slot.
inline std::string listening_backend(const livestate::mq::PostgresConnector& connector, const std::string& channel) {
  if (logical_transport()) {
    return "backend_type = 'walsender' AND query LIKE '%livestate_live_" + connector.origin() + "%'";
  }
  return "query LIKE 'LISTEN%' AND query LIKE '%" + channel + "%'";
}

// An executor running in a thread of its own, as in a program.
class Executor {
 public:
  Executor() : m_thread([this] { m_io.run(); }) {}
  ~Executor() {
    m_work.reset();
    m_io.stop();
    m_thread.join();
  }
  boost::asio::any_io_executor get() { return m_io.get_executor(); }

 private:
  boost::asio::io_context m_io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> m_work{m_io.get_executor()};
  std::thread m_thread;
};

// Records messages and control events; waits for them.
class Inbox {
 public:
  livestate::mq::Callback callback() {
    return [this](const livestate::RoutingKey& key, const livestate::Json& body) {
      std::lock_guard lock(m_mutex);
      m_messages.push_back({key, body});
      m_changed.notify_all();
    };
  }
  // The whole message, with its commit position where the transport has one.
  livestate::mq::MessageCallback message_callback() {
    return [this](const livestate::Message& message) {
      std::lock_guard lock(m_mutex);
      m_messages.push_back(message);
      m_changed.notify_all();
    };
  }
  livestate::mq::ControlCallback control() {
    return [this](const livestate::mq::ControlEvent& event) {
      std::lock_guard lock(m_mutex);
      m_events.push_back(event);
      m_changed.notify_all();
    };
  }
  bool wait_for(std::size_t messages, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(m_mutex);
    return m_changed.wait_for(lock, timeout, [&] { return m_messages.size() >= messages; });
  }
  bool wait_for_key(const std::string& key, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(m_mutex);
    return m_changed.wait_for(lock, timeout, [&] {
      return std::any_of(m_messages.begin(), m_messages.end(),
                         [&](const auto& message) { return message.key.str() == key; });
    });
  }
  bool wait_for_event(livestate::mq::ControlKind kind, std::chrono::milliseconds timeout = 15s) {
    std::unique_lock lock(m_mutex);
    return m_changed.wait_for(lock, timeout, [&] {
      return std::any_of(m_events.begin(), m_events.end(), [&](const auto& event) { return event.kind == kind; });
    });
  }
  std::vector<livestate::Message> messages() {
    std::lock_guard lock(m_mutex);
    return m_messages;
  }
  std::vector<livestate::mq::ControlEvent> events() {
    std::lock_guard lock(m_mutex);
    return m_events;
  }

 private:
  std::mutex m_mutex;
  std::condition_variable m_changed;
  std::vector<livestate::Message> m_messages;
  std::vector<livestate::mq::ControlEvent> m_events;
};

}  // namespace livestate::test
