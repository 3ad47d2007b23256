#include "sender.hpp"

#include <algorithm>
#include <limits>

#include "livestate/core/wire.hpp"
#include "pq_connection.hpp"

namespace livestate::mq::detail {

namespace {

// Both batch statements: `batch`, a query giving the messages (position,
// entry_position, sequence, key, body) for the durable queues' copies, then
// the copies, then the notifications ($1 origin, $2 channel, $3 the payloads).
// The copies follow the messages' order, so the rows' ids do.
std::string batch_statement(std::string_view batch) {
  std::string sql = "WITH batch AS ";
  sql += batch;
  sql +=
      ", queued AS ("
      "  INSERT INTO livestate_mq_queued (queue, origin, sequence, key, body)"
      "  SELECT q.name, $1, b.sequence, b.key, b.body FROM batch b JOIN livestate_mq_queues q"
      "  ON (cardinality(q.filter) = cardinality(b.key)"
      "      OR (q.any_suffix AND cardinality(b.key) >= cardinality(q.filter)))"
      "  AND NOT EXISTS (SELECT 1 FROM unnest(q.filter) WITH ORDINALITY AS f(element, i)"
      "                  WHERE f.element IS NOT NULL AND f.element IS DISTINCT FROM b.key[f.i])"
      "  ORDER BY b.position, b.entry_position, q.name)"
      " SELECT count(pg_notify($2, p.payload)) FROM unnest($3::text[]) WITH ORDINALITY AS p(payload, position)";
  return sql;
}

// One statement sends a whole batch: it sends the payloads and, only when
// some durable queue exists, keeps a copy of each message for every queue
// whose filter matches it, reading the messages back from the payloads (a
// body sent by reference from livestate_mq_bodies, written earlier in the same
// transaction). Both happen in the caller's transaction, so both or neither
// commit. The payloads are the only data sent: each body crosses the wire
// once, and without durable queues the server only unpacks the array of
// payloads (the EXISTS is a one-time filter: the messages are not parsed).
//
// `json` (not jsonb) keeps its input text: `entry -> 'b'` is the body exactly
// as the producer serialized it.
constexpr const char* payloads_batch =
    "MATERIALIZED ("
    "  SELECT p.position, e.position AS entry_position, (e.entry ->> 's')::bigint AS sequence,"
    "         ARRAY(SELECT json_array_elements_text(e.entry -> 'k')) AS key,"
    "         COALESCE((e.entry -> 'b')::text,"
    "                  (SELECT b.body FROM livestate_mq_bodies b WHERE b.id = (e.entry ->> 'r')::bigint)) AS body"
    "  FROM unnest($3::text[]) WITH ORDINALITY AS p(payload, position),"
    "       json_array_elements(p.payload::json -> 'm') WITH ORDINALITY AS e(entry, position)"
    "  WHERE EXISTS (SELECT 1 FROM livestate_mq_queues))";

// The batch statement for payloads PostgreSQL's json functions can't read:
// they refuse the escape \u0000 (a NUL character in a string; text has no
// form for it). The messages then also travel as text, one array each of
// sequences, keys (JSON arrays) and bodies ($4, $5, $6), for the durable
// queues' copies.
constexpr const char* text_batch =
    "("
    "  SELECT u.position, 1 AS entry_position, u.sequence,"
    "         ARRAY(SELECT json_array_elements_text(u.key::json)) AS key, u.body"
    "  FROM unnest($4::bigint[], $5::text[], $6::text[]) WITH ORDINALITY AS u(sequence, key, body, position)"
    "  WHERE EXISTS (SELECT 1 FROM livestate_mq_queues))";

// The same for one message (every produce() outside a transaction): no
// arrays to unpack, the key given as text[]; the server runs it in about
// four fifths of the time of the batch statement with one message.
constexpr const char* send_one_sql =
    "WITH queued AS ("
    "  INSERT INTO livestate_mq_queued (queue, origin, sequence, key, body)"
    "  SELECT q.name, $1, $2, $3::text[], $4 FROM livestate_mq_queues q"
    "  WHERE (cardinality(q.filter) = cardinality($3::text[])"
    "         OR (q.any_suffix AND cardinality($3::text[]) >= cardinality(q.filter)))"
    "  AND NOT EXISTS (SELECT 1 FROM unnest(q.filter) WITH ORDINALITY AS f(element, i)"
    "                  WHERE f.element IS NOT NULL AND f.element IS DISTINCT FROM ($3::text[])[f.i])"
    "  ORDER BY q.name)"
    " SELECT pg_notify($5, $6)";

constexpr const char* store_body_sql = "INSERT INTO livestate_mq_bodies (body) VALUES ($1) RETURNING id";

// Transactional: written at its place in the transaction, decoded at commit.
constexpr const char* emit_sql = "SELECT pg_logical_emit_message(true, $1, $2)";

}  // namespace

const std::string& sql_of(SendStatement statement) {
  // Made on first use (not at static initialization: a program may produce
  // from a static initializer of its own).
  static const std::string one = send_one_sql;
  static const std::string batch = batch_statement(payloads_batch);
  static const std::string batch_as_text = batch_statement(text_batch);
  static const std::string store_body = store_body_sql;
  static const std::string emit = emit_sql;
  switch (statement) {
    case SendStatement::emit: return emit;
    case SendStatement::one: return one;
    case SendStatement::batch: return batch;
    case SendStatement::batch_as_text: return batch_as_text;
    case SendStatement::store_body: break;
  }
  return store_body;
}

const char* prepared_name(SendStatement statement) noexcept {
  switch (statement) {
    case SendStatement::one: return "livestate_send_one";
    case SendStatement::batch: return "livestate_send";
    case SendStatement::emit: return "livestate_emit";
    case SendStatement::batch_as_text:
    case SendStatement::store_body: break;
  }
  return nullptr;
}

void send(std::span<const SentMessage> messages, std::string_view origin, std::string_view channel,
          std::uint64_t& sequence, const RunStatement& run) {
  std::vector<wire::Outgoing> outgoing;
  std::vector<std::string> bodies;
  outgoing.reserve(messages.size());
  bodies.reserve(messages.size());   // entries point into it: no reallocation
  std::vector<std::size_t> body_of;  // each message's body, in `bodies`
  body_of.reserve(messages.size());
  const Json* last_body = nullptr;
  std::int64_t last_reference = 0;  // the row of last_body, when it is stored
  for (const auto& message : messages) {
    // Each body is serialized once, for the payload (and a single message's
    // durable queues), and stored once when too large: the messages of one
    // change share theirs.
    if (message.body != last_body) {
      bodies.emplace_back(message.body->dump(-1, ' ', false, Json::error_handler_t::replace));
      last_body = message.body;
      last_reference = 0;
    }
    const std::string& body = bodies.back();
    body_of.push_back(bodies.size() - 1);
    wire::Outgoing entry{message.key, message.body, 0, ++sequence, &body};
    if (last_reference == 0 && wire::encoded_size(origin, entry) > wire::max_payload_bytes) {
      last_reference = std::stoll(run(SendStatement::store_body, Params{body}).value());
    }
    if (last_reference != 0) {
      entry.body = nullptr;
      entry.body_text = nullptr;
      entry.reference = last_reference;
    }
    outgoing.push_back(entry);
  }
  if (messages.size() == 1 && outgoing.front().reference == 0) {
    const auto& key = *messages.front().key;
    auto payload = std::move(wire::encode(origin, outgoing).front());  // reads bodies: before they move
    run(SendStatement::one, Params{std::string(origin), std::to_string(outgoing.front().sequence),
                                   text_array(std::vector<std::string>(key.begin(), key.end())),
                                   std::move(bodies.front()), std::string(channel), std::move(payload)});
    return;
  }
  auto payloads = wire::encode(origin, outgoing);
  const bool readable = std::none_of(payloads.begin(), payloads.end(), [](const std::string& payload) {
    return payload.find("\\u0000") != std::string::npos;
  });
  if (readable) {
    run(SendStatement::batch, Params{std::string(origin), std::string(channel), text_array(payloads)});
    return;
  }
  std::vector<std::string> sequences, keys, texts;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    sequences.push_back(std::to_string(outgoing[i].sequence));
    keys.push_back(Json(std::vector<std::string>(messages[i].key->begin(), messages[i].key->end())).dump());
    texts.push_back(bodies[body_of[i]]);
  }
  run(SendStatement::batch_as_text, Params{std::string(origin), std::string(channel), text_array(payloads),
                                           text_array(sequences), text_array(keys), text_array(texts)});
}

void send_logical(std::span<const SentMessage> messages, std::string_view origin, std::string_view channel,
                  std::uint64_t& sequence, const RunStatement& run) {
  if (messages.empty()) return;
  std::vector<wire::Outgoing> outgoing;
  std::vector<std::string> bodies;
  outgoing.reserve(messages.size());
  bodies.reserve(messages.size());  // entries point into it: no reallocation
  const Json* last_body = nullptr;
  for (const auto& message : messages) {
    if (message.body != last_body) {
      bodies.emplace_back(message.body->dump(-1, ' ', false, Json::error_handler_t::replace));
      last_body = message.body;
    }
    outgoing.push_back(wire::Outgoing{message.key, message.body, 0, ++sequence, &bodies.back()});
  }
  auto payloads = wire::encode(origin, outgoing, std::numeric_limits<std::size_t>::max());
  run(SendStatement::emit, Params{std::string(channel), std::move(payloads.front())});
}

}  // namespace livestate::mq::detail
