#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include "livestate/core/error.hpp"
#include "livestate/mq/connector.hpp"
#include "livestate/mq/errors.hpp"

namespace livestate::mq {

struct PostgresOptions {
  /// The NOTIFY channel (quoted as an identifier; any text).
  /// At most 63 bytes, PostgreSQL's limit for identifiers (it would listen on
  /// the name cut short while every notification is refused), not empty,
  /// without a NUL byte: make_postgres_connector refuses another.
  std::string channel = "livestate";
  /// Reconnection of the listening connection: exponential backoff from
  /// `reconnect_initial` to `reconnect_max`, with jitter, never giving up.
  std::chrono::milliseconds reconnect_initial{100};
  std::chrono::milliseconds reconnect_max{5000};
  /// The listening connection is probed after this long without traffic, and
  /// declared broken when the probe gets no answer within `probe_timeout`
  /// (TCP keepalives are on as well). On the logical transport, the server's
  /// wal_sender_timeout / 2 is added to `probe_timeout`: a WAL sender
  /// replaying a large transaction answers only that often (docs/LOGICAL.md).
  std::chrono::milliseconds probe_interval{2000};
  std::chrono::milliseconds probe_timeout{3000};
  /// produce() waits at most this long for a connection; then TransportError.
  std::chrono::seconds connect_timeout{5};
  /// Every statement the connector runs on a connection of its own (produce,
  /// making its tables, pruning, a durable consumer's reads and
  /// acknowledgements) gets this long from sending it to its result. Past
  /// it the connection is closed and the statement fails: produce() throws
  /// MaybeSent once the statement was sent (NotSent before), start_consuming
  /// a TransportError, and a durable consumer tries again later. So a server
  /// that stops answering (a hung disk, a paused machine) holds a producing
  /// thread this long at most, and the threads waiting behind it no longer
  /// than that each. It is also the connections' tcp_user_timeout (TCP
  /// keepalives are on as well), so that a peer gone away is noticed without
  /// waiting for an answer.
  std::chrono::milliseconds statement_timeout{5000};
  /// Messages received but not yet delivered, per consumer (each has a queue
  /// of its own): past this, a consumer that fell behind loses messages, counted, and gets
  /// an overflow event in their place; the others get theirs. A durable
  /// consumer then reads what it lost from its queue's table.
  std::size_t max_buffered = 100000;
  /// How long bodies sent by reference stay in livestate_mq_bodies.
  std::chrono::seconds body_retention{600};
  /// How long a message waits in a durable queue whose consumer does not come
  /// back; older ones are pruned, and the consumer, when it returns, gets an
  /// `expired` control event saying how many.
  std::chrono::seconds queue_retention{7 * 24 * 3600};
  /// An origin (a producing connector: a process, a store) not heard from for
  /// this long is forgotten, so that the sequences the listener keeps are as
  /// many as the producers of the last while, not every producer it ever
  /// heard (processes restart). Since a forgotten origin may come back, a
  /// message from an origin the listener doesn't know, with a sequence above
  /// 1, then counts as a gap, once the listening connection is older than
  /// this (before that, the origin may simply have started first).
  std::chrono::seconds forget_origins_after{600};
};

/// What the PostgreSQL connector has seen since it was made.
struct PostgresStats {
  std::uint64_t notifications = 0;       ///< payloads received on the channel
  std::uint64_t received = 0;            ///< valid messages decoded from them
  std::uint64_t delivered = 0;           ///< callback invocations that returned
  std::uint64_t callback_errors = 0;     ///< callback invocations that threw (logged, rate-limited)
  std::uint64_t malformed = 0;           ///< payloads or entries refused (bad JSON, types, keys…)
  std::uint64_t by_reference = 0;        ///< bodies fetched from livestate_mq_bodies
  std::uint64_t missing_references = 0;  ///< references to rows that were gone
  std::uint64_t dropped_overflow = 0;    ///< messages dropped because consumers fell behind (per consumer)
  std::uint64_t backlog_peak = 0;        ///< the most messages one consumer has had waiting
  std::uint64_t gaps = 0;                ///< sequence gaps seen (messages lost on the way)
  std::uint64_t origins = 0;             ///< origins whose sequence is kept now (forget_origins_after)
  std::uint64_t reconnects = 0;          ///< times the listening connection was made again
  std::string last_reconnect_reason;     ///< why it was lost last
  bool listening = false;                ///< LISTEN is active now
  std::uint64_t queue_rows_read = 0;     ///< messages durable consumers read from their queues' tables
  /// The most rows one read of a queue's table returned: a durable consumer
  /// resuming with a long backlog reads it a page (1,000 rows) at a time.
  std::uint64_t queue_page_peak = 0;
};

/// The PostgreSQL LISTEN/NOTIFY connector; docs/WIRE.md has the wire format,
/// docs/CONNECTORS.md the guarantees.
///
/// Thread safety: every function may be called from any thread. produce()
/// runs in the calling thread, on a connection of its own. Each consumer's
/// callbacks and control events run on the executor, one at a time, in order,
/// on a strand of its own: different consumers' callbacks may run at the same
/// time when the executor has several threads. The socket of the listening
/// connection is waited on there too, so a callback that blocks for long
/// should have the executor's other threads to leave to the rest (a
/// thread_pool, or an io_context run by several threads): then it delays
/// nobody but itself, and when its queue reaches `max_buffered` it loses
/// messages and is told so. A callback that throws is counted and logged;
/// its consumer goes on.
///
/// Object lifetimes: the executor must outlive the connector. Destroying the
/// connector stops every consumer; it waits for a callback running in another
/// thread to return.
class PostgresConnector : public Connector {
 public:
  [[nodiscard]] virtual PostgresStats postgres_stats() const = 0;
  /// This connector's origin in the wire format.
  [[nodiscard]] virtual const std::string& origin() const noexcept = 0;
  /// Blocks until LISTEN is active (true) or `timeout` passed (false). The
  /// executor must be running in another thread.
  [[nodiscard]] virtual bool wait_listening(std::chrono::milliseconds timeout) const = 0;
};

/// Makes a PostgreSQL connector and starts listening (asynchronously: the
/// first messages are received once the executor has run the connection).
/// Needs livestate::mq_postgres linked (livestate::livestate links it).
/// Throws std::invalid_argument, before connecting, when options.channel is
/// not a channel PostgreSQL takes as it is (see PostgresOptions::channel).
///
/// The URL's `transport` parameter (taken out before libpq sees the URL)
/// chooses how messages travel, behind the same interface:
/// - `transport=notify` (the default): LISTEN/NOTIFY, needing no server
///   setting;
/// - `transport=logical` (`postgresql://host/db?transport=logical`, or
///   `transport=logical` in a conninfo string): logical messages in the WAL
///   (pg_logical_emit_message), which take no database-wide lock at commit and
///   have no size limit, read back with logical decoding (pgoutput, PostgreSQL
///   14 or later, wal_level = logical, a role with REPLICATION). Every message
///   carries its commit position (Message::position); durable consumers are
///   replication slots. Its listening connection (a WAL sender and a
///   temporary slot) is made when the first consumer starts, or
///   wait_listening() is called, not for a connector that only produces.
///   The channel is the logical messages' prefix.
/// Another value throws UnsupportedUrl.
std::unique_ptr<PostgresConnector> make_postgres_connector(std::string_view url, boost::asio::any_io_executor executor,
                                                           PostgresOptions options = {});

/// A replication slot of the logical transport, as `livestate slots` shows it.
struct LogicalSlot {
  std::string slot;                    ///< the server's name for it
  std::optional<std::string> name;     ///< the durable consumer's persistent name, when registered
  std::optional<std::string> channel;  ///< and its channel
  std::optional<std::string> filter;   ///< and its filter, dotted
  bool temporary = false;              ///< a connector's live consumers' (gone with its connection)
  std::optional<int> active_pid;       ///< the server process streaming from it now, if any
  std::uint64_t retained_bytes = 0;    ///< WAL kept for it: from its restart position to the end of WAL
  std::string wal_status;              ///< reserved, extended, unreserved or lost (invalidated)
  std::string confirmed;               ///< the position acknowledged last ("16/B374D848")
};

/// The logical transport's slots on the database of `url` (a PostgreSQL URL;
/// `transport` is ignored): durable consumers' and connectors' live ones.
/// Throws TransportError when the server can't be asked.
[[nodiscard]] std::vector<LogicalSlot> list_logical_slots(std::string_view url);

/// Drops the slot of the durable consumer `name` on `channel`, with the WAL it
/// keeps, and forgets the name; true when there was one. The next consumer of
/// that name starts afresh, from then on. Throws PersistentNameInUse when it is
/// active, TransportError when the server can't be asked.
bool drop_logical_slot(std::string_view url, std::string_view name, std::string_view channel = "livestate");

}  // namespace livestate::mq
