// Hostile input on the channel (issue: reliability, item 4): 100,000 random
// and malformed payloads mixed with valid traffic. The valid messages all
// arrive, in order and verbatim (SQL-looking text included); the bad ones are
// counted; the connector keeps listening without a reconnect.

#include <doctest/doctest.h>

#include <chrono>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "connector_fixtures.hpp"
#include "livestate/livestate.hpp"
#include "pg_test_server.hpp"

namespace {

using namespace std::chrono_literals;
using livestate::Filter;
using livestate::Json;
using livestate::RoutingKey;
namespace mq = livestate::mq;

constexpr const char* sql_text = "'); DROP TABLE livestate_mq_queued; -- \" \\ $1 ?";

// A payload PostgreSQL accepts (valid UTF-8, no NUL) but that is no valid
// envelope, of one of several kinds, unique by `n`.
std::string hostile(std::mt19937_64& random, int n) {
  const auto tag = std::to_string(n);
  switch (random() % 12) {
    case 0: {  // printable noise, some of it multibyte
      std::string noise;
      const auto length = 1 + random() % 300;
      for (std::size_t i = 0; i < length; ++i) {
        if (random() % 10 == 0) {
          noise += "\xc3\xa9";
        } else {
          noise += static_cast<char>(' ' + random() % 95);
        }
      }
      return noise + tag;
    }
    case 1: return R"({"v":1,"m":[{"k":["a",")" + tag;                              // truncated
    case 2: return std::string(100 + random() % 3000, '[') + tag;                   // deep nesting
    case 3: return R"({"v":1,"m":[{"k":["n"],"b":{"n":1e999,"t":)" + tag + "}}]}";  // beyond a double
    case 4: return R"({"v":"1","m":[{"k":["a"],"b":{"t":)" + tag + "}}]}";          // v is a string
    case 5: return R"({"v":1,"m":{"k":["a"],"b":)" + tag + "}}";                    // m is not an array
    case 6: return R"({"v":1,"m":[{"k":"builds.1.new","b":)" + tag + "}]}";         // k is text
    case 7: return R"({"v":1,"m":[{"k":["caf\u00e9"],"b":)" + tag + "}]}";          // non-ASCII key
    case 8: return R"({"v":1,"m":[{"k":["a"],"b":{},"r":)" + tag + "}]}";           // both b and r
    case 9: return R"({"v":1,"o":5,"m":[{"k":["a"],"b":)" + tag + "}]}";            // origin not a string
    case 10: return R"({"v":1,"m":[{"k":["a"],"s":-)" + tag + R"(,"b":{}}]})";      // negative sequence
    default: {  // 7,999 bytes of a string that never ends
      std::string payload = R"({"v":1,"m":[{"k":["big"],"b":")" + tag;
      payload.append(7999 - payload.size(), 'x');
      return payload;
    }
  }
}

// A valid foreign payload carrying message `i`, SQL-looking text in its key
// and body; every 50th is padded to exactly 7,999 bytes.
std::string valid(int i) {
  Json body{{"i", i}, {"sql", sql_text}};
  const std::string head = R"({"v":1,"m":[{"k":["valid",")" + std::to_string(i) + R"(","'; DELETE FROM x; --"],"b":)";
  std::string payload = head + body.dump() + "}]}";
  if (i % 50 == 0) {
    body["pad"] = "";
    const auto bare = head + body.dump() + "}]}";
    body["pad"] = std::string(7999 - bare.size(), 'p');
    payload = head + body.dump() + "}]}";
  }
  return payload;
}

// PostgreSQL's text form of a text[] value.
std::string text_array(const std::vector<std::string>& elements) {
  std::string literal = "{";
  for (const auto& element : elements) {
    if (literal.size() > 1) literal += ',';
    literal += '"';
    for (const char c : element) {
      if (c == '"' || c == '\\') literal += '\\';
      literal += c;
    }
    literal += '"';
  }
  return literal + "}";
}

}  // namespace

TEST_CASE(
    "100,000 hostile payloads mixed with valid ones: every valid message arrives verbatim, the others are counted") {
  livestate::test::Executor executor;
  mq::PostgresOptions options;
  options.channel = livestate::test::random_name("ch");
  options.max_buffered = 1'000'000;
  auto connector = mq::make_postgres_connector(livestate::test::connector_url(livestate::test::test_server_url()),
                                               executor.get(), options);
  REQUIRE(connector->wait_listening(10s));
  livestate::test::Inbox inbox;
  auto consumer = connector->start_consuming(inbox.callback(), Filter::parse("valid.#"));

  std::mt19937_64 random(20261128);
  constexpr int total = 100'000;
  std::vector<std::string> batch;
  std::set<std::string> distinct;  // PostgreSQL merges identical notifications of one transaction
  std::size_t sent = 0;
  int valid_sent = 0;
  pqxx::connection sender(livestate::test::test_server_url());
  const auto send_batch = [&] {
    pqxx::work work(sender);
    // One statement per batch, the payloads as one text[] literal.
    work.exec_params("SELECT count(" + livestate::test::raw_send("$1", "p") + ") FROM unnest($2::text[]) AS p",
                     options.channel, text_array(batch));
    work.commit();
    sent += livestate::test::logical_transport() ? batch.size() : distinct.size();
    batch.clear();
    distinct.clear();
  };
  for (int n = 0; n < total; ++n) {
    const std::string payload = n % 10 == 0 ? valid(valid_sent++) : hostile(random, n);
    batch.push_back(payload);
    distinct.insert(payload);
    if (batch.size() == 1000) send_batch();
  }
  if (!batch.empty()) send_batch();

  // A large body through the connector itself: it travels by reference, from
  // the livestate_mq_bodies table (inline, on logical decoding), and comes
  // back verbatim.
  const Json large{{"sql", sql_text}, {"blob", std::string(20'000, 'z')}};
  connector->produce(RoutingKey{"valid", "large", "'; DROP TABLE livestate_mq_bodies; --"}, large);

  REQUIRE(inbox.wait_for(static_cast<std::size_t>(valid_sent) + 1, 120s));
  const auto got = inbox.messages();
  REQUIRE(got.size() == static_cast<std::size_t>(valid_sent) + 1);
  bool in_order = true, verbatim = true;
  for (int i = 0; i < valid_sent; ++i) {
    const auto& message = got[static_cast<std::size_t>(i)];
    in_order = in_order && message.key == RoutingKey{"valid", std::to_string(i), "'; DELETE FROM x; --"};
    verbatim = verbatim && message.body.at("i") == i && message.body.at("sql") == sql_text;
  }
  CHECK(in_order);
  CHECK(verbatim);
  CHECK(got.back().body == large);
  CHECK(got.back().key[2] == "'; DROP TABLE livestate_mq_bodies; --");

  const auto stats = connector->postgres_stats();
  CHECK(stats.notifications == sent + 1);
  CHECK(stats.malformed >= sent - static_cast<std::size_t>(valid_sent) - 1);
  CHECK(stats.received == static_cast<std::size_t>(valid_sent) + 1);
  CHECK(stats.reconnects == 0);
  CHECK(stats.listening);
  MESSAGE(sent, " distinct payloads sent, ", valid_sent, " valid; malformed counted: ", stats.malformed);
}
