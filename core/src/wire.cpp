#include "livestate/core/wire.hpp"

#include <limits>
#include <stdexcept>

#include "livestate/core/error.hpp"

namespace livestate::wire {
namespace {

// "{"v":1,"o":"…","m":[" … "]}"
std::string header(std::string_view origin) {
  std::string text = R"({"v":1,)";
  if (!origin.empty()) text += R"("o":)" + Json(std::string(origin)).dump() + ",";
  return text + R"("m":[)";
}
constexpr std::string_view trailer = "]}";

std::string entry(const Outgoing& message) {
  std::string text = "{";
  if (message.sequence != 0) text += R"("s":)" + std::to_string(message.sequence) + ",";
  text += R"("k":)" + Json(std::vector<std::string>(message.key->begin(), message.key->end())).dump();
  if (message.body != nullptr) {
    text += R"(,"b":)" + message.body->dump(-1, ' ', false, Json::error_handler_t::replace);
  } else {
    text += R"(,"r":)" + std::to_string(message.reference);
  }
  return text + "}";
}

std::string shorten(std::string text) {
  for (auto& c : text) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  if (text.size() > 200) text = text.substr(0, 197) + "...";
  return text;
}

}  // namespace

std::size_t encoded_size(std::string_view origin, const Outgoing& message) {
  return header(origin).size() + entry(message).size() + trailer.size();
}

std::vector<std::string> encode(std::string_view origin, std::span<const Outgoing> messages, std::size_t limit) {
  std::vector<std::string> payloads;
  const std::string head = header(origin);
  std::string current;
  for (const auto& message : messages) {
    const std::string text = entry(message);
    if (head.size() + text.size() + trailer.size() > limit) {
      throw std::length_error("message " + message.key->str() + " takes " +
                              std::to_string(head.size() + text.size() + trailer.size()) +
                              " bytes, more than a payload's " + std::to_string(limit) +
                              ": send its body by reference");
    }
    if (!current.empty() && current.size() + 1 + text.size() + trailer.size() > limit) {
      payloads.push_back(current + std::string(trailer));
      current.clear();
    }
    if (current.empty()) {
      current = head;
    } else {
      current += ',';
    }
    current += text;
  }
  if (!current.empty()) payloads.push_back(current + std::string(trailer));
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
  return "unknown";
}

namespace {

// Is the text nested deeper than max_depth? Counts brackets outside strings.
bool too_deep(std::string_view text) {
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
      if (++depth > max_depth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

void decode_entry(const Json& item, std::size_t index, Decoded& decoded) {
  auto problem = [&](ProblemKind kind, const std::string& what) {
    decoded.problems.push_back({kind, shorten("entry " + std::to_string(index) + ": " + what)});
  };
  if (!item.is_object()) return problem(ProblemKind::bad_message, "not an object");
  const auto key = item.find("k");
  if (key == item.end()) return problem(ProblemKind::bad_message, "no \"k\"");
  if (!key->is_array() || key->empty()) return problem(ProblemKind::bad_key, "\"k\" is not a non-empty array");
  std::vector<std::string> elements;
  for (const auto& element : *key) {
    if (!element.is_string()) return problem(ProblemKind::bad_key, "\"k\" has an element that is not a string");
    elements.push_back(element.get<std::string>());
  }
  std::optional<RoutingKey> routing_key;
  try {
    routing_key.emplace(std::move(elements));
  } catch (const Error& error) {
    return problem(ProblemKind::bad_key, error.what());
  }
  const auto body = item.find("b");
  const auto reference = item.find("r");
  if ((body == item.end()) == (reference == item.end())) {
    return problem(ProblemKind::bad_message, "needs exactly one of \"b\" and \"r\"");
  }
  Incoming incoming{std::move(*routing_key), nullptr, std::nullopt, std::nullopt};
  if (reference != item.end()) {
    if (!reference->is_number_integer() || reference->get<std::int64_t>() <= 0 ||
        (reference->is_number_unsigned() &&
         reference->get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))) {
      return problem(ProblemKind::bad_reference, "\"r\" is not a positive integer");
    }
    incoming.reference = reference->get<std::int64_t>();
  } else {
    incoming.body = *body;
  }
  if (const auto sequence = item.find("s"); sequence != item.end()) {
    if (!sequence->is_number_unsigned()) {
      return problem(ProblemKind::bad_sequence, "\"s\" is not an unsigned integer");
    }
    incoming.sequence = sequence->get<std::uint64_t>();
  }
  decoded.messages.push_back(std::move(incoming));
}

}  // namespace

Decoded decode(std::string_view payload) {
  Decoded decoded;
  auto problem = [&](ProblemKind kind, const std::string& what) { decoded.problems.push_back({kind, shorten(what)}); };
  if (too_deep(payload)) {
    problem(ProblemKind::too_deep, "nested deeper than " + std::to_string(max_depth) + " levels");
    return decoded;
  }
  Json envelope = Json::parse(payload, nullptr, false);
  if (envelope.is_discarded()) {
    problem(ProblemKind::not_json, "not JSON: " + std::string(payload.substr(0, 60)));
    return decoded;
  }
  if (!envelope.is_object()) {
    problem(ProblemKind::not_an_envelope, "not a JSON object");
    return decoded;
  }
  const auto version = envelope.find("v");
  if (version == envelope.end() || !version->is_number_integer() || version->get<std::int64_t>() != 1) {
    problem(ProblemKind::unsupported_version,
            version == envelope.end() ? "no \"v\"" : "\"v\" is " + version->dump() + ", not 1");
    return decoded;
  }
  const auto messages = envelope.find("m");
  if (messages == envelope.end() || !messages->is_array()) {
    problem(ProblemKind::not_an_envelope, "no \"m\" array");
    return decoded;
  }
  if (const auto origin = envelope.find("o"); origin != envelope.end()) {
    if (!origin->is_string()) {
      problem(ProblemKind::bad_origin, "\"o\" is not a string");
      return decoded;
    }
    decoded.origin = origin->get<std::string>();
  }
  for (std::size_t i = 0; i < messages->size(); ++i) decode_entry((*messages)[i], i, decoded);
  return decoded;
}

}  // namespace livestate::wire
