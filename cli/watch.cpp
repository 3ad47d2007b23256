// `livestate watch [FILTER]`: the messages on the database's connector, one
// JSON line each as they arrive, and the control events that say some may
// have been missed.

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "commands.hpp"
#include "livestate/core/error.hpp"
#include "livestate/core/filter.hpp"
#include "livestate/core/json.hpp"
#include "livestate/mq/control.hpp"
#include "livestate/mq/postgres.hpp"

namespace livestate::cli {
namespace {

constexpr const char* watch_help =
    "usage: livestate watch [FILTER] [--db URL] [--count N] [--timeout SECONDS] [--stats]\n"
    "\n"
    "Prints each message that matches FILTER as it arrives, as one JSON line\n"
    "{\"key\":[...],\"body\":{...}}. FILTER is dotted: '*' matches any one\n"
    "element, a trailing '#' any rest (default '#', every message), e.g.\n"
    "'buildrequests.*.claimed'. Also prints each control event, which says that\n"
    "messages may have been missed, as one line\n"
    "{\"control\":KIND,\"reason\":\"...\",\"missed\":N,\"origin\":...}: KIND is\n"
    "reconnected (the connection was lost and made again: what was sent\n"
    "meanwhile is lost), gap (a producer's sequence skipped; origin names it) or\n"
    "overflow (watch fell behind and messages were dropped).\n"
    "\n"
    "Once it listens it says 'listening on channel ...' on stderr, so a script\n"
    "can wait for that line before producing: nothing sent earlier is seen. It\n"
    "stops, with exit status 0, after --count messages, after --timeout seconds,\n"
    "or on SIGINT or SIGTERM. It fails (exit 1) when it cannot listen within\n"
    "10 s (or before --timeout); a connection lost after that is made again, as\n"
    "often as needed, and shows as a reconnected event.\n"
    "\n"
    "The embedded default (sqlite:...) has no transport between processes:\n"
    "nothing another process produces can reach this one. watch says so on\n"
    "stderr and exits 0 at once.\n"
    "\n"
    "  --db URL           postgresql://..., postgres://... or a libpq conninfo\n"
    "                     string ('host=... dbname=...'); or sqlite:PATH\n"
    "                     (default: sqlite:livestate.db)\n"
    "  --count N          stop after N messages (control events don't count)\n"
    "  --timeout SECONDS  stop after that long (e.g. 2.5)\n"
    "  --stats            when it stops, print the connector's counters as a last\n"
    "                     line {\"stats\":{...}}: notifications, received,\n"
    "                     delivered, callback_errors, malformed, by_reference,\n"
    "                     missing_references, dropped_overflow, backlog_peak,\n"
    "                     gaps, reconnects, last_reconnect_reason, listening\n";

// How long watch gives the connector to listen for the first time: a few of
// its connection attempts (each bounded by PostgresOptions::connect_timeout).
constexpr std::chrono::seconds listen_deadline{10};
// How often it looks whether the connector listens yet.
constexpr std::chrono::milliseconds listening_poll{10};

struct WatchOptions {
  std::string url = default_database;
  Filter filter = Filter::parse("#");
  std::optional<std::uint64_t> count;
  std::optional<std::chrono::milliseconds> timeout;
  bool stats = false;
};

std::uint64_t parse_count(const std::string& text) {
  std::uint64_t count = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), count);
  if (text.empty() || error != std::errc{} || end != text.data() + text.size() || count == 0) {
    throw UsageError{"--count needs a positive number of messages, not '" + text + "'"};
  }
  return count;
}

std::chrono::milliseconds parse_timeout(const std::string& text) {
  double seconds = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), seconds);
  if (text.empty() || error != std::errc{} || end != text.data() + text.size() || !std::isfinite(seconds) ||
      seconds <= 0) {
    throw UsageError{"--timeout needs a positive number of seconds, not '" + text + "'"};
  }
  // Longer than any watch will run, and far from overflowing a timer.
  constexpr double longest = 1e9;
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(std::min(seconds, longest) * 1000)));
}

// Printed lines keep the order --help documents.
using OrderedJson = nlohmann::ordered_json;

OrderedJson stats_json(const mq::PostgresStats& stats) {
  return {{"notifications", stats.notifications},
          {"received", stats.received},
          {"delivered", stats.delivered},
          {"callback_errors", stats.callback_errors},
          {"malformed", stats.malformed},
          {"by_reference", stats.by_reference},
          {"missing_references", stats.missing_references},
          {"dropped_overflow", stats.dropped_overflow},
          {"backlog_peak", stats.backlog_peak},
          {"gaps", stats.gaps},
          {"reconnects", stats.reconnects},
          {"last_reconnect_reason", stats.last_reconnect_reason},
          {"listening", stats.listening}};
}

// One watch, everything on one io_context run by the caller's thread: the
// connector's callbacks, the timers and the signals, so output needs no lock.
// It stops by releasing the connector, timers and signals; run() then returns
// once the connector's own handlers have finished.
class Watch final {
 public:
  Watch(boost::asio::io_context& io, WatchOptions options, std::ostream& out)
      : m_io(io),
        m_options(std::move(options)),
        m_out(out),
        m_signals(io, SIGINT, SIGTERM),
        m_poll(io),
        m_deadline(io),
        m_timeout(io) {}

  void start() {
    m_connector = mq::make_postgres_connector(m_options.url, m_io.get_executor(), m_postgres_options);
    m_consumer = m_connector->start_consuming(
        [this](const RoutingKey& key, const Json& body) { on_message(key, body); }, m_options.filter,
        mq::ConsumeOptions{std::nullopt, [this](const mq::ControlEvent& event) { on_control(event); }});
    m_signals.async_wait([this](boost::system::error_code error, int) {
      if (!error) stop(Cause::signal);
    });
    m_deadline.expires_after(listen_deadline);
    m_deadline.async_wait([this](boost::system::error_code error) {
      if (!error && !m_listened) stop(Cause::time);
    });
    if (m_options.timeout) {
      m_timeout.expires_after(*m_options.timeout);
      m_timeout.async_wait([this](boost::system::error_code error) {
        if (!error) stop(Cause::time);
      });
    }
    poll_listening();
  }

  /// After run() returned: Error when it never listened.
  void check() const {
    if (m_failure) throw Error(*m_failure);
  }

 private:
  void poll_listening() {
    if (m_stopping) return;
    if (m_connector->postgres_stats().listening) return announce_listening();
    m_poll.expires_after(listening_poll);
    m_poll.async_wait([this](boost::system::error_code error) {
      if (!error) poll_listening();
    });
  }

  // Said once, before anything is printed: a message can only have come
  // through LISTEN, so one arriving before the poll saw it listen says so too.
  void announce_listening() {
    if (m_listened) return;
    m_listened = true;
    m_deadline.cancel();
    std::cerr << "livestate watch: listening on channel " << m_postgres_options.channel << " for "
              << m_options.filter.str() << "\n";
  }

  // Nothing more is printed once --count messages were, even before stop() runs.
  [[nodiscard]] bool done() const { return m_stopping || (m_options.count && m_printed >= *m_options.count); }

  void on_message(const RoutingKey& key, const Json& body) {
    if (done()) return;
    announce_listening();
    print("{\"key\":" + Json(key.elements()).dump() + ",\"body\":" + body.dump() + "}");
    // Stopping releases the connector, which must not happen inside its own
    // callback: after it returns.
    ++m_printed;
    if (m_options.count && m_printed == *m_options.count) boost::asio::post(m_io, [this] { stop(Cause::count); });
  }

  void on_control(const mq::ControlEvent& event) {
    if (done()) return;
    announce_listening();
    print(OrderedJson{{"control", mq::to_string(event.kind)},
                      {"reason", event.reason},
                      {"missed", event.missed},
                      {"origin", event.origin ? OrderedJson(*event.origin) : OrderedJson(nullptr)}}
              .dump());
  }

  void print(const std::string& line) { m_out << line << "\n" << std::flush; }

  // A watch cut short by time before it ever listened did not happen: that
  // fails. Interrupted, it just ends.
  enum class Cause { count, time, signal };

  void stop(Cause cause) {
    if (m_stopping) return;
    m_stopping = true;
    const mq::PostgresStats stats = m_connector->postgres_stats();
    if (cause == Cause::time && !m_listened) {
      const auto why = stats.last_reconnect_reason.empty() ? std::string("still connecting")
                                                           : stats.last_reconnect_reason;
      m_failure = "could not listen on channel " + m_postgres_options.channel + ": " + why;
    }
    if (m_options.stats) print(OrderedJson{{"stats", stats_json(stats)}}.dump());
    m_consumer.reset();
    m_connector.reset();
    m_signals.cancel();
    m_poll.cancel();
    m_deadline.cancel();
    m_timeout.cancel();
  }

  boost::asio::io_context& m_io;
  WatchOptions m_options;
  mq::PostgresOptions m_postgres_options;
  std::ostream& m_out;
  boost::asio::signal_set m_signals;
  boost::asio::steady_timer m_poll;
  boost::asio::steady_timer m_deadline;
  boost::asio::steady_timer m_timeout;
  std::unique_ptr<mq::PostgresConnector> m_connector;
  std::unique_ptr<mq::Consumer> m_consumer;
  std::uint64_t m_printed = 0;
  bool m_listened = false;
  bool m_stopping = false;
  std::optional<std::string> m_failure;
};

}  // namespace

int run_watch(const std::vector<std::string>& args, std::ostream& out) {
  WatchOptions options;
  std::optional<std::string> filter;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      out << watch_help;
      return 0;
    }
    if (arg == "--stats") {
      options.stats = true;
    } else if (auto db = take_option(args, i, "--db", "watch")) {
      options.url = *db;
    } else if (auto count = take_option(args, i, "--count", "watch")) {
      options.count = parse_count(*count);
    } else if (auto timeout = take_option(args, i, "--timeout", "watch")) {
      options.timeout = parse_timeout(*timeout);
    } else if (arg.size() > 1 && arg[0] == '-') {
      throw UsageError{"unknown option '" + arg + "'; run 'livestate watch --help'"};
    } else if (filter) {
      throw UsageError{"one FILTER at a time, not '" + *filter + "' and '" + arg + "'"};
    } else {
      filter = arg;
    }
  }
  if (filter) {
    try {
      options.filter = Filter::parse(*filter);
    } catch (const InvalidFilter& error) {
      throw UsageError{std::string("FILTER: ") + error.what()};
    }
  }

  if (transport_of(options.url, "watch") == Transport::in_process) {
    std::cerr << "livestate watch: " << options.url
              << " has no transport between processes: its connector is in-process, so nothing another "
                 "process produces can reach this one (use --db postgresql://...)\n";
    return 0;
  }
  boost::asio::io_context io;
  Watch watch(io, std::move(options), out);
  watch.start();
  io.run();
  watch.check();
  return 0;
}

}  // namespace livestate::cli
