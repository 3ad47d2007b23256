#pragma once

// Sending messages: each becomes an entry of a NOTIFY payload, and a body too
// large for a notification is stored in livestate_mq_bodies and sent by
// reference. The statements that do it (and keep each durable queue's copy)
// are here too; who runs them (the producing connection, a store's
// transaction) is the caller's business.

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "livestate/mq/transactional.hpp"

namespace livestate::mq::detail {

enum class SendStatement {
  one,            ///< one message: $1 origin, $2 sequence, $3 key (text[]), $4 body, $5 channel, $6 payload
  batch,          ///< $1 origin, $2 channel, $3 the payloads (text[])
  batch_as_text,  ///< the same, the messages also as text: $4 sequences, $5 keys, $6 bodies
  store_body,     ///< $1 a body; returns its row's id
  emit,           ///< the logical transport: $1 the prefix (channel), $2 the payload
};

[[nodiscard]] const std::string& sql_of(SendStatement statement);

/// The name a producing connection prepares `statement` under, or nullptr
/// for the statements not prepared (run rarely).
[[nodiscard]] const char* prepared_name(SendStatement statement) noexcept;

/// Runs one statement with its text parameters and returns the first column
/// of its first row, if any; throws on failure.
using RunStatement = std::function<std::optional<std::string>(SendStatement statement,
                                                              const std::vector<std::optional<std::string>>& params)>;

/// Sends `messages`, in order, as `origin`, numbering them after `sequence`
/// (which it advances) on `channel`, through `run`: one statement for the
/// messages, after one for each large body (once per body: the messages of
/// one change share theirs). A failure leaves `sequence` advanced; the caller
/// decides what that means.
void send(std::span<const SentMessage> messages, std::string_view origin, std::string_view channel,
          std::uint64_t& sequence, const RunStatement& run);

/// The same on the logical transport: the messages, in order, in one payload
/// (no size limit applies, so every body travels inline), written to the WAL
/// with pg_logical_emit_message(true, channel, payload) in the caller's
/// transaction: delivered if, and only if, it commits, in commit order. One
/// statement; a body shared by messages is serialized once.
void send_logical(std::span<const SentMessage> messages, std::string_view origin, std::string_view channel,
                  std::uint64_t& sequence, const RunStatement& run);

}  // namespace livestate::mq::detail
