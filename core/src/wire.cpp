#include "livestate/core/wire.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <utility>

#include "ascii.hpp"
#include "livestate/core/detail/json_reader.hpp"
#include "livestate/core/error.hpp"

namespace livestate::wire {
namespace {

// ---------------------------------------------------------------------------
// Encoding: a payload is built by appending to one string, each body
// serialized once, straight after its key.

constexpr std::string_view envelope_tail = "]}";

std::string dump(const Json& value) { return value.dump(-1, ' ', false, Json::error_handler_t::replace); }

// {"v":1,"o":"…","m":[
std::string envelope_head(std::string_view origin) {
  std::string head = R"({"v":1,)";
  if (!origin.empty()) {
    head += R"("o":)";
    head += dump(Json(origin));
    head += ',';
  }
  head += R"("m":[)";
  return head;
}

template <class Integer>
void append_integer(std::string& out, Integer value) {
  char digits[24];
  const auto end = std::to_chars(std::begin(digits), std::end(digits), value).ptr;
  out.append(digits, end);
}

// A routing-key element as a JSON string. RoutingKey guarantees 7-bit ASCII,
// so only quotes, backslashes and control characters need escaping (as
// nlohmann would escape them).
void append_ascii_string(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (const char c : text) {
    switch (c) {
      case '"': out += R"(\")"; break;
      case '\\': out += R"(\\)"; break;
      case '\b': out += R"(\b)"; break;
      case '\f': out += R"(\f)"; break;
      case '\n': out += R"(\n)"; break;
      case '\r': out += R"(\r)"; break;
      case '\t': out += R"(\t)"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += R"(\u00)";
          out += hex[static_cast<unsigned char>(c) >> 4];
          out += hex[static_cast<unsigned char>(c) & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

void check(const Outgoing& message) {
  if (message.key == nullptr) throw std::invalid_argument("wire::encode: a message has no routing key (key is null)");
  if (message.body != nullptr) {
    if (message.body->is_discarded()) {
      throw std::invalid_argument("wire::encode: the body of " + message.key->str() +
                                  " is a discarded value (the result of a failed Json::parse?)");
    }
    check_depth(*message.body, message.key->str());
  } else if (message.reference <= 0) {
    throw std::invalid_argument("wire::encode: " + message.key->str() + " has no body and its reference " +
                                std::to_string(message.reference) + " is not a positive row id");
  }
}

// {"s":…,"k":[…],"b":…} or {"s":…,"k":[…],"r":…}
void append_entry(std::string& out, const Outgoing& message) {
  out += '{';
  if (message.sequence != 0) {
    out += R"("s":)";
    append_integer(out, message.sequence);
    out += ',';
  }
  out += R"("k":[)";
  bool first = true;
  for (const auto& element : *message.key) {
    if (!first) out += ',';
    first = false;
    append_ascii_string(out, element);
  }
  out += ']';
  if (message.body != nullptr) {
    out += R"(,"b":)";
    if (message.body_text != nullptr) {
      out += *message.body_text;
    } else {
      out += dump(*message.body);
    }
  } else {
    out += R"(,"r":)";
    append_integer(out, message.reference);
  }
  out += '}';
}

}  // namespace

bool nested_deeper_than(const Json& body, int limit) noexcept {
  if (!body.is_structured()) return false;
  if (limit <= 0) return true;
  // Recursion bounded by `limit`, never by the value.
  for (const auto& member : body) {
    if (member.is_structured() && nested_deeper_than(member, limit - 1)) return true;
  }
  return false;
}

void check_depth(const Json& body, std::string_view what, int limit) {
  if (!nested_deeper_than(body, limit)) return;
  throw InvalidBody(std::string(what) + ": the body nests deeper than " + std::to_string(limit) +
                    " levels, more than any consumer between processes accepts; nothing was sent");
}

std::size_t encoded_size(std::string_view origin, const Outgoing& message) {
  check(message);
  std::string payload = envelope_head(origin);
  append_entry(payload, message);
  return payload.size() + envelope_tail.size();
}

std::vector<std::string> encode(std::string_view origin, std::span<const Outgoing> messages, std::size_t limit) {
  std::vector<std::string> payloads;
  if (messages.empty()) return payloads;
  const std::string head = envelope_head(origin);
  // One allocation per payload (a caller's huge limit is not reserved for).
  const std::size_t capacity = std::min(limit, std::size_t{1} << 16);
  std::string current;
  for (const auto& message : messages) {
    check(message);
    const bool opens_payload = current.empty();
    const std::size_t end_of_previous = current.size();
    if (opens_payload) {
      current.reserve(capacity);
      current += head;
    } else {
      current += ',';
    }
    const std::size_t entry_start = current.size();
    append_entry(current, message);
    if (current.size() + envelope_tail.size() <= limit) continue;

    // It doesn't fit: it opens the next payload, if it fits in one at all.
    const std::size_t entry_size = current.size() - entry_start;
    const std::size_t alone = head.size() + entry_size + envelope_tail.size();
    if (opens_payload || alone > limit) {
      throw std::length_error("wire::encode: message " + message.key->str() + " takes " + std::to_string(alone) +
                              " bytes in a payload of its own, more than the limit of " + std::to_string(limit) +
                              ": send its body by reference");
    }
    std::string next;
    next.reserve(capacity);
    next += head;
    next.append(current, entry_start, entry_size);
    current.resize(end_of_previous);
    current += envelope_tail;
    payloads.push_back(std::move(current));
    current = std::move(next);
  }
  current += envelope_tail;
  payloads.push_back(std::move(current));
  return payloads;
}

std::string_view to_string(ProblemKind kind) noexcept {
  switch (kind) {
    case ProblemKind::not_json: return "not JSON";
    case ProblemKind::not_an_envelope: return "not an envelope";
    case ProblemKind::unsupported_version: return "unsupported version";
    case ProblemKind::bad_origin: return "bad origin";
    case ProblemKind::bad_message: return "bad message";
    case ProblemKind::bad_key: return "bad routing key";
    case ProblemKind::bad_sequence: return "bad sequence";
    case ProblemKind::bad_reference: return "bad reference";
    case ProblemKind::too_deep: return "too deeply nested";
  }
  return "unknown problem";
}

namespace {

// ---------------------------------------------------------------------------
// Decoding: untrusted input. Every refusal is a Problem; nothing but
// std::bad_alloc leaves decode().

// One line of printable ASCII, other bytes as \xNN, cut with "..." to fit
// Problem::max_detail_bytes.
std::string printable_excerpt(std::string_view text) {
  constexpr std::size_t max = Problem::max_detail_bytes;
  constexpr std::string_view ellipsis = "...";
  std::string out;
  out.reserve(std::min(text.size(), max));
  std::size_t fits_with_ellipsis = 0;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f) {
      out += c;
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", static_cast<unsigned>(byte));
      out += escaped;
    }
    if (out.size() > max) {
      out.resize(fits_with_ellipsis);
      out += ellipsis;
      break;
    }
    if (out.size() <= max - ellipsis.size()) fits_with_ellipsis = out.size();
  }
  return out;
}

// "0xc3"
std::string hex_byte(char c) {
  char text[8];
  std::snprintf(text, sizeof text, "0x%02x", static_cast<unsigned>(static_cast<unsigned char>(c)));
  return text;
}

// The beginning of an untrusted string, quoted, for a problem's detail.
std::string excerpt(std::string_view text) {
  constexpr std::size_t length = 32;
  return detail::quote_for_message(text.substr(0, length)) + (text.size() > length ? "..." : "");
}

// "-1", "1.5", "a string", "an object": what a field holds, in a few words
// (never the whole value, which may be long).
std::string describe(const Json& value) {
  switch (value.type()) {
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float:
    case Json::value_t::boolean:
    case Json::value_t::null: return dump(value);
    case Json::value_t::object: return "an object";
    case Json::value_t::array: return "an array";
    default: return std::string("a ") + value.type_name();
  }
}

// Counts brackets outside strings, so that deep nesting is refused before the
// parser builds anything, and no consumer that walks a body recursively (as
// dump() does) meets one deeper than max_depth.
bool text_nested_deeper_than(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

// nlohmann's message without its "[json.exception.parse_error.101] " prefix.
std::string_view parse_error_text(std::string_view what) {
  if (what.starts_with("[json.exception.")) {
    if (const auto end = what.find("] "); end != std::string_view::npos) return what.substr(end + 2);
  }
  return what;
}

std::optional<std::uint64_t> as_sequence(const Json& value) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>();
  if (value.is_number_integer() && value.get<std::int64_t>() == 0) return 0;  // "-0"
  return std::nullopt;
}

std::optional<std::int64_t> as_reference(const Json& value) {
  if (value.is_number_unsigned()) {
    const auto id = value.get<std::uint64_t>();
    if (id > 0 && id <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return static_cast<std::int64_t>(id);
    }
  } else if (value.is_number_integer() && value.get<std::int64_t>() > 0) {
    return value.get<std::int64_t>();
  }
  return std::nullopt;
}

class EntryDecoder {
 public:
  EntryDecoder(Decoded& decoded, std::size_t index) : m_decoded(decoded), m_index(index) {}

  // Appends the message, or a problem, to m_decoded. Takes the body out of
  // `entry` rather than copying it.
  void decode(Json& entry) {
    if (!entry.is_object()) return refuse(ProblemKind::bad_message, describe(entry) + ", not an object");
    // Read first, so that a refused entry's sequence is still known.
    if (const auto sequence = entry.find("s"); sequence != entry.end()) m_sequence = as_sequence(*sequence);
    const auto key = entry.find("k");
    if (key == entry.end()) return refuse(ProblemKind::bad_message, R"(no "k" (routing key))");
    auto routing_key = decode_key(*key);
    if (!routing_key) return;

    const auto body = entry.find("b");
    const auto reference = entry.find("r");
    const bool has_body = body != entry.end();
    const bool has_reference = reference != entry.end();
    if (!has_body && !has_reference) {
      return refuse(ProblemKind::bad_message, R"(neither "b" (body) nor "r" (reference))");
    }
    if (has_body && has_reference) {
      return refuse(ProblemKind::bad_message, R"(both "b" (body) and "r" (reference); one is needed)");
    }
    Incoming incoming{std::move(*routing_key), nullptr, std::nullopt, std::nullopt};
    if (has_reference) {
      incoming.reference = as_reference(*reference);
      if (!incoming.reference) {
        return refuse(ProblemKind::bad_reference,
                      R"("r" is )" + describe(*reference) + ", not a positive 64-bit integer");
      }
    }
    if (const auto sequence = entry.find("s"); sequence != entry.end()) {
      incoming.sequence = m_sequence;
      if (!incoming.sequence) {
        return refuse(ProblemKind::bad_sequence,
                      R"("s" is )" + describe(*sequence) + ", not an unsigned 64-bit integer");
      }
    }
    if (has_body) incoming.body = std::move(*body);
    m_decoded.messages.push_back(std::move(incoming));
  }

 private:
  std::optional<RoutingKey> decode_key(Json& key) {
    if (!key.is_array() || key.empty()) {
      refuse(ProblemKind::bad_key, R"("k" is )" + describe(key) + ", not a non-empty array of strings");
      return std::nullopt;
    }
    std::vector<std::string> elements;
    elements.reserve(key.size());
    for (auto& element : key) {
      if (!element.is_string()) {
        refuse(ProblemKind::bad_key,
               R"("k" element )" + std::to_string(elements.size()) + " is " + describe(element) + ", not a string");
        return std::nullopt;
      }
      auto& text = element.get_ref<std::string&>();
      // Checked here rather than by RoutingKey's exception: a payload of many
      // bad keys should not cost one throw each.
      if (const auto offset = detail::first_non_ascii(text)) {
        refuse(ProblemKind::bad_key, R"("k" element )" + std::to_string(elements.size()) +
                                         " is not 7-bit ASCII: byte " + hex_byte(text[*offset]) + " at offset " +
                                         std::to_string(*offset) + " of " + excerpt(text));
        return std::nullopt;
      }
      elements.push_back(std::move(text));
    }
    try {
      return RoutingKey(std::move(elements));
    } catch (const InvalidRoutingKey& error) {  // a rule RoutingKey may add later
      refuse(ProblemKind::bad_key, R"("k": )" + std::string(error.what()));
      return std::nullopt;
    }
  }

  void refuse(ProblemKind kind, const std::string& what) {
    m_decoded.problems.push_back({kind, printable_excerpt("entry " + std::to_string(m_index) + ": " + what)});
    if (m_sequence && *m_sequence != 0) m_decoded.refused_sequences.push_back(*m_sequence);
  }

  Decoded& m_decoded;
  std::size_t m_index;
  std::optional<std::uint64_t> m_sequence;
};

// Reads "o" and the entries' "s" of a payload too deep to build, with
// nlohmann's SAX parser (which keeps its nesting on the heap, not the stack)
// and without building any value: what a consumer needs to tell the origin
// at once which of its messages it lost.
class StreamPosition final : public nlohmann::json_sax<Json> {
 public:
  explicit StreamPosition(Decoded& decoded) : m_decoded(decoded) {}

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t value) override {
    if (value > 0) sequence(static_cast<std::uint64_t>(value));
    return true;
  }
  bool number_unsigned(number_unsigned_t value) override {
    sequence(value);
    return true;
  }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t& value) override {
    if (m_depth == 1 && m_envelope_key == "o") m_decoded.origin = value;
    return true;
  }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return open(); }
  bool start_array(std::size_t) override {
    if (m_depth == 1 && m_envelope_key == "m") m_messages_depth = 2;
    return open();
  }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool key(string_t& value) override {
    if (m_depth == 1) m_envelope_key = value;
    if (m_depth == 3 && m_messages_depth == 2) m_entry_key = value;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

 private:
  bool open() {
    ++m_depth;
    if (m_depth == 3) m_entry_key.clear();
    return true;
  }
  bool close() {
    if (m_depth == m_messages_depth) m_messages_depth = 0;
    --m_depth;
    return true;
  }
  void sequence(std::uint64_t value) {
    if (m_depth == 3 && m_messages_depth == 2 && m_entry_key == "s") m_decoded.refused_sequences.push_back(value);
  }

  Decoded& m_decoded;
  int m_depth = 0;
  int m_messages_depth = 0;  // 2 while inside the envelope's "m"
  std::string m_envelope_key;
  std::string m_entry_key;
};

void read_stream_position(std::string_view payload, Decoded& decoded) {
  StreamPosition reader(decoded);
  try {
    (void)Json::sax_parse(payload, &reader);
  } catch (const std::exception&) {
    // What was read before the failure stands: a gap told is harmless.
  }
}

// A payload refused as a whole: no messages, one problem.
Decoded refuse(ProblemKind kind, std::string_view what) {
  Decoded decoded;
  decoded.problems.push_back({kind, printable_excerpt(what)});
  return decoded;
}

}  // namespace

Decoded decode(std::string_view payload) {
  if (text_nested_deeper_than(payload, max_depth)) {
    Decoded decoded = refuse(ProblemKind::too_deep, "nested deeper than " + std::to_string(max_depth) + " levels");
    read_stream_position(payload, decoded);
    return decoded;
  }
  Json envelope;
  try {
    envelope = detail::parse_json(payload);
  } catch (const Json::exception& error) {  // parse_error, or out_of_range for a number beyond a double
    return refuse(ProblemKind::not_json, "not JSON: " + std::string(parse_error_text(error.what())));
  }
  if (!envelope.is_object()) {
    return refuse(ProblemKind::not_an_envelope, "the payload is " + describe(envelope) + ", not a JSON object");
  }
  const auto version = envelope.find("v");
  if (version == envelope.end()) return refuse(ProblemKind::not_an_envelope, R"(no "v" (format version))");
  if (!version->is_number_integer() || version->get<std::int64_t>() != 1) {
    return refuse(ProblemKind::unsupported_version, R"("v" is )" + describe(*version) + "; this reads version 1");
  }
  const auto messages = envelope.find("m");
  if (messages == envelope.end()) return refuse(ProblemKind::not_an_envelope, R"(no "m" (messages))");
  if (!messages->is_array()) {
    return refuse(ProblemKind::not_an_envelope, R"("m" is )" + describe(*messages) + ", not an array");
  }
  const auto origin = envelope.find("o");
  if (origin != envelope.end() && !origin->is_string()) {
    return refuse(ProblemKind::bad_origin, R"("o" is )" + describe(*origin) + ", not a string");
  }
  Decoded decoded;
  if (origin != envelope.end()) decoded.origin = std::move(origin->get_ref<std::string&>());
  decoded.messages.reserve(messages->size());
  std::size_t index = 0;
  for (auto& entry : *messages) EntryDecoder(decoded, index++).decode(entry);
  return decoded;
}

}  // namespace livestate::wire
