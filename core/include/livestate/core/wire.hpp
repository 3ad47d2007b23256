#pragma once

// The PostgreSQL wire format, version 1: how messages travel in NOTIFY
// payloads. Pure functions, no I/O, so that the codec is tested and fuzzed on
// its own.
//
//   {"v":1,"o":"<origin>","m":[{"s":<seq>,"k":["buildrequests","17","claimed"],"b":{…}}, …]}
//
// "o" (the producer instance) and "s" (its per-origin sequence) are optional
// for foreign producers; an entry carries its body as "b", or, when the body is
// too large for a notification, "r": the id of a livestate_mq_bodies row.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "livestate/core/json.hpp"
#include "livestate/core/routing_key.hpp"

namespace livestate::wire {

/// PostgreSQL refuses payloads of 8000 bytes or more.
inline constexpr std::size_t max_payload_bytes = 7999;

/// A message to encode: its body, or (body == nullptr) the reference to the
/// row that holds it.
struct Outgoing {
  const RoutingKey* key = nullptr;
  const Json* body = nullptr;
  std::int64_t reference = 0;
  std::uint64_t sequence = 0;  ///< 0: none
};

/// The size of the payload that would carry this message alone.
[[nodiscard]] std::size_t encoded_size(std::string_view origin, const Outgoing& message);

/// Packs the messages, in order, into as few payloads as fit in `limit`
/// bytes each. Bodies are dumped as compact JSON; invalid UTF-8 in their
/// strings is replaced by U+FFFD rather than refused. Throws std::length_error
/// when one message alone does not fit (send its body by reference).
[[nodiscard]] std::vector<std::string> encode(std::string_view origin, std::span<const Outgoing> messages,
                                              std::size_t limit = max_payload_bytes);

enum class ProblemKind {
  not_json,
  not_an_envelope,      ///< not an object, or no "m" array
  unsupported_version,  ///< "v" is not 1
  bad_origin,           ///< "o" is not a string
  bad_message,          ///< an entry is not an object, or lacks "k", or has neither or both of "b" and "r"
  bad_key,              ///< "k" is not an array of non-empty 7-bit ASCII strings
  bad_sequence,         ///< "s" is not an unsigned 64-bit integer
  bad_reference,        ///< "r" is not a positive 64-bit integer
  too_deep,             ///< nested deeper than max_depth
};
[[nodiscard]] std::string_view to_string(ProblemKind kind) noexcept;

/// Nesting deeper than this is refused (bodies included).
inline constexpr int max_depth = 64;

struct Problem {
  ProblemKind kind;
  std::string detail;  ///< one line, at most about 200 characters
};

struct Incoming {
  RoutingKey key;
  Json body;                              ///< null when sent by reference
  std::optional<std::int64_t> reference;  ///< the row holding the body
  std::optional<std::uint64_t> sequence;
};

struct Decoded {
  std::optional<std::string> origin;
  std::vector<Incoming> messages;  ///< the valid entries, in order
  std::vector<Problem> problems;   ///< one per refused payload or entry
};

/// Decodes one payload. A payload that is not a v1 envelope yields no messages
/// and one problem; an invalid entry is dropped with a problem while the valid
/// ones are kept. Unknown fields are ignored. Throws nothing but std::bad_alloc.
[[nodiscard]] Decoded decode(std::string_view payload);

}  // namespace livestate::wire
