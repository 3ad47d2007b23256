#pragma once

// What travels on a logical replication connection once START_REPLICATION
// has begun, without I/O: the server's CopyData messages (WAL data,
// keepalives), the records of the built-in pgoutput plugin inside WAL data
// (begin, commit, logical messages; the rest is no concern of ours), and the
// standby status update the client sends back. PostgreSQL's protocol pages
// ("Streaming Replication Protocol", "Logical Replication Message Formats")
// are the reference; integers are big-endian.
//
// Thread safety: pure functions.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace livestate::mq::detail::replication {

/// A position in the write-ahead log (XLogRecPtr).
using Lsn = std::uint64_t;

/// PostgreSQL's text form, two hex halves: "16/B374D848".
[[nodiscard]] std::string lsn_text(Lsn lsn);
/// The number of "16/B374D848"; std::nullopt for anything else.
[[nodiscard]] std::optional<Lsn> parse_lsn(std::string_view text) noexcept;

// --- from the server, one CopyData message each -----------------------------------

/// 'w': WAL data, here one record of the output plugin.
struct XLogData {
  Lsn start = 0;
  Lsn wal_end = 0;  ///< the end of WAL on the server as it sent this
  std::string_view record;
};
/// 'k': the server is alive; with reply_requested, answer at once (or be cut
/// off after wal_sender_timeout).
struct Keepalive {
  Lsn wal_end = 0;  ///< for logical decoding: where decoding has reached
  bool reply_requested = false;
};
/// Anything else, or a message too short for its kind.
struct Unreadable {
  std::string why;
};
using ServerMessage = std::variant<XLogData, Keepalive, Unreadable>;

[[nodiscard]] ServerMessage parse_server_message(std::string_view copy_data);

// --- pgoutput's records (protocol version 1) ------------------------------------

/// 'B': a committed transaction begins; its records follow, then Commit.
struct Begin {
  Lsn final_lsn = 0;  ///< where it committed (the commit record's position)
  std::uint32_t xid = 0;
};
/// 'C': the transaction's end.
struct Commit {
  Lsn commit_lsn = 0;
  Lsn end_lsn = 0;  ///< past its commit record: what a client acknowledges
};
/// 'M': a message of pg_logical_emit_message().
struct LogicalMessage {
  bool transactional = false;
  Lsn lsn = 0;
  std::string_view prefix;
  std::string_view content;
};
/// Relations, types, origins, row changes: not livestate's.
struct OtherRecord {
  char kind = 0;
};
using Record = std::variant<Begin, Commit, LogicalMessage, OtherRecord, Unreadable>;

[[nodiscard]] Record parse_record(std::string_view record);

// --- to the server ----------------------------------------------------------------

/// Microseconds since 2000-01-01 UTC, PostgreSQL's clock in the protocol.
[[nodiscard]] std::int64_t postgres_time(std::chrono::system_clock::time_point time) noexcept;

/// 'r', a standby status update: everything before `flushed` is processed
/// (a logical slot's confirmed_flush_lsn moves there); with reply_requested
/// the server answers at once with a keepalive.
[[nodiscard]] std::string status_update(Lsn flushed, std::int64_t now, bool reply_requested);

}  // namespace livestate::mq::detail::replication
