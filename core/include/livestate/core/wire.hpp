#pragma once

// The PostgreSQL wire format, version 1: how messages travel in NOTIFY
// payloads. Pure functions, no I/O, so that the codec is tested and fuzzed on
// its own, and so that the format is written down in one place:
//
//   {"v":1,"o":"<origin>","m":[{"s":<seq>,"k":["buildrequests","17","claimed"],"b":{…}}, …]}
//
// - "v": the format version, exactly the integer 1;
// - "o": the producer instance (any string), optional;
// - "m": the messages, in produce order; each has
//   - "k": the routing key, a non-empty array of 7-bit ASCII strings (an
//     element may be empty, as in RoutingKey);
//   - "s": the message's sequence number within its origin, an unsigned 64-bit
//     integer, optional;
//   - exactly one of "b", the body (any JSON value; livestate produces
//     objects), and "r", the id of the row holding a body too large for a
//     notification (a positive 64-bit integer).
//
// Unknown fields, in the envelope and in entries, are ignored, so that a later
// version can add some without breaking today's consumers. The smallest valid
// payload, as a foreign producer sends it from psql:
//
//   SELECT pg_notify('livestate', '{"v":1,"m":[{"k":["builds","7","finished"],"b":{"buildid":7}}]}');
//
// Thread safety: every function here is pure and reentrant; call them from
// any number of threads at once.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "livestate/core/error.hpp"
#include "livestate/core/json.hpp"
#include "livestate/core/routing_key.hpp"

namespace livestate::wire {

/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
inline constexpr std::size_t max_payload_bytes = 7999;

/// Nesting deeper than this, counted over the whole payload, is refused as
/// ProblemKind::too_deep.
inline constexpr int max_depth = 64;

/// The deepest body a producer may send: an object or array is one level, a
/// container inside it two, and so on (a scalar is none). The envelope's
/// object, its "m" array and the entry's object take the other three levels
/// of max_depth, so that every body a producer accepts, every consumer does.
inline constexpr int max_body_depth = max_depth - 3;

/// Does `body` nest deeper than `limit` levels? Looks no deeper than that, so
/// it is safe on a value nested a million levels (where a recursive walk, as
/// dump() is, would overflow the stack).
[[nodiscard]] bool nested_deeper_than(const Json& body, int limit = max_body_depth) noexcept;

/// Throws InvalidBody, naming `what` (a routing key, a column), when `body`
/// nests deeper than `limit`. Producers call it before anything is sent or
/// committed; the store before it serializes a value it was given.
void check_depth(const Json& body, std::string_view what, int limit = max_body_depth);

// ---------------------------------------------------------------------------
// Key elements beyond 7-bit ASCII
//
// A routing-key element is 7-bit ASCII (RoutingKey refuses anything else), but
// producers have text that isn't: Buildbot's log slugs allow any letter, as in
// ("steps", "12", "logs", "résumé", "new"). Such an element travels
// percent-escaped, as RFC 3986 writes a URL's bytes: "r%C3%A9sum%C3%A9". The
// escaped text is what RoutingKey, filters, the wire and durable queues hold
// and compare; only the edges (a Buildbot master handing a key to its
// consumers, a program showing a key to a person) turn it back.
//
// The escaped form of a text is canonical: every byte of 0x80 and above and
// every '%' as %XX with uppercase hex digits, nothing else escaped, and a
// text that needs no escaping is left as it is. unescape_key_element()
// reads back only canonical forms of texts that need escaping, and leaves
// every other element as it is: "100%", "%41", "%c3%a9" and "a%2Fb" mean
// what they meant before (see docs/WIRE.md for the one kind of element whose
// reading changes). tests/data/wire_vectors.json holds the vectors that
// this code and the Python codec (integrations/buildbot) both check.

/// `text`, UTF-8, as a key element: itself when it is 7-bit ASCII and
/// unescape_key_element() reads it as itself, else its canonical escaped form
/// ("résumé" -> "r%C3%A9sum%C3%A9", "50%25" -> "50%2525"). The result is
/// always 7-bit ASCII and unescape_key_element() gives `text` back.
///
/// Throws InvalidRoutingKey, naming the byte, when `text` is not valid UTF-8
/// (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
[[nodiscard]] std::string escape_key_element(std::string_view text);

/// The text a key element stands for: the UTF-8 it is the canonical escaped
/// form of, or the element itself when it is not such a form. Never throws
/// but std::bad_alloc.
[[nodiscard]] std::string unescape_key_element(std::string_view element);

/// A routing key of UTF-8 elements, each escaped with escape_key_element().
/// Throws InvalidRoutingKey for an empty key or an element that is not valid
/// UTF-8.
[[nodiscard]] RoutingKey escape_key(std::span<const std::string> elements);

/// Each element of `key` as unescape_key_element() reads it.
[[nodiscard]] std::vector<std::string> unescape_key(const RoutingKey& key);

// ---------------------------------------------------------------------------
// Encoding

/// A message to encode.
///
/// Object lifetimes: `key` and `body` are borrowed; they must stay valid until
/// encode() or encoded_size() returns, and nothing is kept after that.
struct Outgoing {
  const RoutingKey* key = nullptr;
  /// The body, or nullptr when it travels by reference.
  const Json* body = nullptr;
  /// With body == nullptr: the positive id of the row that holds the body.
  std::int64_t reference = 0;
  /// The per-origin sequence number; 0 sends none.
  std::uint64_t sequence = 0;
  /// Optional, with `body`: the body already serialized as compact JSON (as
  /// Json::dump(-1, ' ', false, error_handler_t::replace) writes it), used
  /// as is instead of serializing `body` again. Borrowed like `body`.
  const std::string* body_text = nullptr;
};

/// The size in bytes of the payload that would carry this message alone, so
/// that a producer can decide to store its body and send a reference instead
/// (when the size exceeds max_payload_bytes). It serializes the body, as
/// encode() does; an empty origin sends none ("o" is left out).
///
/// Throws InvalidBody and std::invalid_argument as encode() does.
[[nodiscard]] std::size_t encoded_size(std::string_view origin, const Outgoing& message);

/// Packs the messages, in order, into as few payloads as a greedy fill makes,
/// each at most `limit` bytes: a payload takes messages until the next one no
/// longer fits. Reading the payloads in order gives the messages in order.
/// An empty origin sends none; no messages give no payloads.
///
/// Bodies are serialized once each, as compact JSON with UTF-8 as is; a
/// string holding invalid UTF-8 is not refused: each invalid byte sequence
/// becomes U+FFFD (nlohmann's error_handler_t::replace), so a consumer
/// receives that replacement, never an unreadable payload.
///
/// Throws std::length_error when one message alone makes a payload longer
/// than `limit` (its body should have been sent by reference; see
/// encoded_size()), InvalidBody for a body nested deeper than
/// max_body_depth, and std::invalid_argument on misuse: a null key, a body
/// that is a discarded value (a failed Json::parse), or no body and a
/// reference that is not positive. Nothing is encoded then.
[[nodiscard]] std::vector<std::string> encode(std::string_view origin, std::span<const Outgoing> messages,
                                              std::size_t limit = max_payload_bytes);

// ---------------------------------------------------------------------------
// Decoding

/// Why a payload or one of its entries was refused.
enum class ProblemKind {
  not_json,             ///< not JSON text (a number beyond a double's range counts as not JSON, as nlohmann has it)
  not_an_envelope,      ///< not an object, or no "v", or no "m" array
  unsupported_version,  ///< "v" is there but is not the integer 1
  bad_origin,           ///< "o" is not a string (the whole payload is refused: its sequences can't be attributed)
  bad_message,          ///< an entry is not an object, lacks "k", or has neither or both of "b" and "r"
  bad_key,              ///< "k" is not a non-empty array of 7-bit ASCII strings
  bad_sequence,         ///< "s" is not an unsigned 64-bit integer
  bad_reference,        ///< "r" is not a positive 64-bit integer
  too_deep,             ///< nested deeper than max_depth
};

/// "not JSON", "bad routing key", …: short lowercase words for logs and counters.
[[nodiscard]] std::string_view to_string(ProblemKind kind) noexcept;

struct Problem {
  ProblemKind kind;
  /// What was wrong, for a log line: one line of printable ASCII (other
  /// bytes of the payload appear as \xNN), at most max_detail_bytes long.
  /// An entry's problem names the entry's index in "m".
  std::string detail;

  static constexpr std::size_t max_detail_bytes = 200;
};

/// A decoded message.
struct Incoming {
  RoutingKey key;
  /// The body; null when it was sent by reference.
  Json body;
  /// The id of the row holding the body, when sent by reference.
  std::optional<std::int64_t> reference;
  std::optional<std::uint64_t> sequence;
};

struct Decoded {
  /// The producer instance, when the payload names one (also when the payload
  /// is refused as too deep: it is read without building the values).
  std::optional<std::string> origin;
  /// The valid entries, in payload order.
  std::vector<Incoming> messages;
  /// The sequence numbers of refused entries, where they could be read (all
  /// the entries' when the payload is refused as too deep), so that a
  /// consumer can tell the origin's loss at once instead of at its next
  /// message.
  std::vector<std::uint64_t> refused_sequences;
  /// One per refused entry, or a single one when the whole payload is refused
  /// (not JSON, too deep, not an envelope, unsupported version, bad origin).
  std::vector<Problem> problems;
};

/// Decodes one payload. A payload that is refused as a whole yields no
/// messages and one problem; an invalid entry is dropped with a problem while
/// the valid entries around it are kept, in order.
///
/// Made for untrusted input: it never crashes and throws nothing but
/// std::bad_alloc, whatever the bytes; its time and memory are bounded by the
/// payload's size (n log n at worst, for objects with many fields), and
/// nesting is checked against max_depth before parsing.
[[nodiscard]] Decoded decode(std::string_view payload);

}  // namespace livestate::wire
