// wire_bench: what decoding a notification costs the consumer, per message,
// for a payload of 20 Buildbot claim bodies (the batch shape) and for a
// payload of one, read in the same run by:
//   - nlohmann's Json::parse;
//   - the library's JSON reader (detail::read_json);
//   - simdjson (when the build found it): its DOM, and its On-Demand front
//     end, each building the same Json values (bench/simdjson_read.hpp), and
//     its DOM parse alone, building nothing, as a lower bound;
//   - wire::decode, which reads with read_json and builds the messages.
// Each reader's time is also given as a ratio to read_json's.
//
// Usage: wire_bench [--reps N] [--rounds N] [--quick]
//   --reps N    repetitions, the median reported (5)
//   --rounds N  payloads of 20 decoded per repetition and reader (20000;
//               20 times as many payloads of one)
//   --quick     a few rounds: checks that the readers agree (numbers mean
//               nothing)
//
// Exits 1 when a reader's value differs from Json::parse's (value or number
// type) on a payload, or, for simdjson, on a set of awkward texts.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "../tests/unit/json_identical.hpp"
#include "claim_body.hpp"
#include "livestate/core/detail/json_reader.hpp"
#include "livestate/core/wire.hpp"
#ifdef LIVESTATE_BENCH_SIMDJSON
#include "simdjson_read.hpp"
#endif

namespace {

using livestate::Json;
using livestate::RoutingKey;
namespace wire = livestate::wire;
using Clock = std::chrono::steady_clock;

struct Payload {
  int messages;
  std::string text;
};

Payload claim_payload(int messages) {
  std::vector<Json> bodies;
  std::vector<RoutingKey> keys;
  for (int i = 0; i < messages; ++i) {
    bodies.push_back(livestate::bench::claim_body());
    bodies.back()["buildrequestid"] = 1000 + i;
    keys.push_back(RoutingKey{"buildrequests", std::to_string(1000 + i), "claimed"});
  }
  std::vector<wire::Outgoing> outgoing;
  for (int i = 0; i < messages; ++i) {
    outgoing.push_back(wire::Outgoing{&keys[i], &bodies[i], 0, static_cast<std::uint64_t>(i + 1)});
  }
  const auto payloads = wire::encode("master-1.1", outgoing);
  if (payloads.size() != 1) throw std::runtime_error("the payload did not fit one notification");
  return Payload{messages, payloads.front()};
}

// A reader: the text's value, or nothing when it leaves the text to
// Json::parse.
using Read = std::function<std::optional<Json>(std::string_view)>;

struct Reader {
  std::string name;
  // Times one payload; returns something that depends on the work.
  std::function<std::size_t(std::string_view)> run;
  Read read;                 // empty: nothing to compare (a lower bound, or wire::decode)
  std::string simdjson_way;  // simdjson building the Json: "DOM" or "On-Demand"
};

std::vector<Reader> readers() {
  std::vector<Reader> all;
  const auto add = [&](std::string name, Read read, std::string simdjson_way = {}) {
    all.push_back(Reader{std::move(name), [read](std::string_view text) { return read(text)->size(); }, read,
                         std::move(simdjson_way)});
  };
  add("Json::parse (nlohmann)", [](std::string_view text) { return std::optional<Json>(Json::parse(text)); });
  add("detail::read_json (the library's reader)",
      [](std::string_view text) { return livestate::detail::read_json(text); });
#ifdef LIVESTATE_BENCH_SIMDJSON
  namespace bench = livestate::bench;
  add("simdjson DOM (" + std::string(bench::simdjson_dom_kernel()) + " kernel), building the Json",
      bench::simdjson_dom_read, "DOM");
  add("simdjson On-Demand (" + std::string(bench::simdjson_ondemand_kernel()) + " kernel), building the Json",
      bench::simdjson_ondemand_read, "On-Demand");
  all.push_back(Reader{"simdjson DOM parse alone, building nothing (lower bound)",
                       [](std::string_view text) -> std::size_t { return bench::simdjson_dom_parse_only(text); },
                       {},
                       {}});
#endif
  all.push_back(Reader{"wire::decode (reads with read_json, builds the messages)",
                       [](std::string_view text) { return wire::decode(text).messages.size(); },
                       {},
                       {}});
  return all;
}

// Every reader that builds values reads `text` to exactly Json::parse's value,
// or (`may_decline`) leaves it to Json::parse.
bool agree(const std::vector<Reader>& all, const std::string& text, bool may_decline) {
  const Json expected = Json::parse(text);
  bool ok = true;
  for (const auto& reader : all) {
    if (!reader.read) continue;
    const auto value = reader.read(text);
    if (value ? livestate::test::identical(*value, expected) : may_decline) continue;
    std::cerr << "wire_bench: " << reader.name << " disagrees with Json::parse on " << text.substr(0, 200) << "\n";
    ok = false;
  }
  return ok;
}

// Texts where a careless conversion would change a number's type or a value.
const std::vector<std::string> awkward_texts = {"0",
                                                "-0",
                                                "[-0]",
                                                "{\"a\":-0}",
                                                "-0.0",
                                                "5",
                                                "-5",
                                                "18446744073709551615",
                                                "18446744073709551616",
                                                "-9223372036854775808",
                                                "9223372036854775808",
                                                "1.5",
                                                "1e3",
                                                "1E+3",
                                                "-1.5e-3",
                                                "2.2250738585072014e-308",
                                                "4.9406564584124654e-324",
                                                "1e-400",
                                                "[1,-1,1.0,-1.0,1e0]",
                                                "\"\\u0041\\u00e9\\uD834\\uDD1E \\\" \\\\ \\/\"",
                                                "\"a\\u0000b\"",
                                                "{\"b\":1,\"a\":2,\"a\":3}",
                                                " { } ",
                                                "[[],{},null,true,false]",
                                                "\"master-0\""};

double micros_per_message(const Reader& reader, const Payload& payload, int rounds) {
  std::size_t sink = 0;
  const auto start = Clock::now();
  for (int round = 0; round < rounds; ++round) sink += reader.run(payload.text);
  const auto elapsed = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  if (sink == 0) std::abort();  // keeps the work
  return elapsed / rounds / payload.messages;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 5;
  int rounds = 20000;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      reps = 1;
      rounds = 50;
    } else if ((arg == "--reps" || arg == "--rounds") && i + 1 < argc) {
      (arg == "--reps" ? reps : rounds) = std::max(1, std::atoi(argv[++i]));
    } else {
      std::cerr << "usage: wire_bench [--reps N] [--rounds N] [--quick]\n";
      return 2;
    }
  }
  const std::vector<Payload> payloads = {claim_payload(20), claim_payload(1)};
  const auto all = readers();
  bool ok = true;
  for (const auto& payload : payloads) {
    ok = agree(all, payload.text, false) && ok;
    const auto decoded = wire::decode(payload.text);
    if (decoded.messages.size() != static_cast<std::size_t>(payload.messages) || !decoded.problems.empty()) {
      std::cerr << "wire_bench: wire::decode did not decode the payload of " << payload.messages << "\n";
      ok = false;
    }
  }
  for (const auto& text : awkward_texts) ok = agree(all, text, true) && ok;
  if (!ok) return 1;

  // samples[payload][reader], interleaved so that noise lands on all alike.
  std::vector<std::vector<std::vector<double>>> samples(payloads.size(), std::vector<std::vector<double>>(all.size()));
  for (int rep = 0; rep < reps; ++rep) {
    for (std::size_t p = 0; p < payloads.size(); ++p) {
      const int payload_rounds = rounds * 20 / payloads[p].messages;
      for (std::size_t r = 0; r < all.size(); ++r) {
        samples[p][r].push_back(micros_per_message(all[r], payloads[p], payload_rounds));
      }
    }
  }

  constexpr std::size_t read_json_row = 1;
  std::printf("| reader |");
  for (const auto& payload : payloads) std::printf(" payload of %d, µs per message |", payload.messages);
  for (const auto& payload : payloads) std::printf(" ÷ read_json, payload of %d |", payload.messages);
  std::printf("\n| --- |");
  for (std::size_t i = 0; i < 2 * payloads.size(); ++i) std::printf(" ---: |");
  std::printf("\n");
  for (std::size_t r = 0; r < all.size(); ++r) {
    std::printf("| %s |", all[r].name.c_str());
    for (std::size_t p = 0; p < payloads.size(); ++p) std::printf(" %.3f |", median(samples[p][r]));
    for (std::size_t p = 0; p < payloads.size(); ++p) {
      std::printf(" %.2fx |", median(samples[p][r]) / median(samples[p][read_json_row]));
    }
    std::printf("\n");
  }
  // The verdict: read_json against simdjson's fastest way to the same values.
  for (std::size_t p = 0; p < payloads.size(); ++p) {
    std::size_t fastest = all.size();
    for (std::size_t r = 0; r < all.size(); ++r) {
      if (!all[r].simdjson_way.empty() &&
          (fastest == all.size() || median(samples[p][r]) < median(samples[p][fastest]))) {
        fastest = r;
      }
    }
    if (fastest == all.size()) break;
    std::printf("%s %.2f on a payload of %d (%s)%s",
                p == 0 ? "\nread_json's time ÷ that of simdjson's fastest way to the same values:" : ",",
                median(samples[p][read_json_row]) / median(samples[p][fastest]), payloads[p].messages,
                all[fastest].simdjson_way.c_str(), p + 1 == payloads.size() ? ".\n" : "");
  }
  std::printf(
      "\nPayloads of claim bodies as wire::encode writes them: %d messages, %zu bytes; 1 message, %zu bytes. "
      "Medians of %d repetitions of %d payloads of %d (%d of 1), the readers interleaved.",
      payloads[0].messages, payloads[0].text.size(), payloads[1].text.size(), reps, rounds, payloads[0].messages,
      rounds * 20);
#ifdef LIVESTATE_BENCH_SIMDJSON
  std::printf(" simdjson %s.", std::string(livestate::bench::simdjson_version()).c_str());
#else
  std::printf(" simdjson was not found at build time: its rows are missing.");
#endif
  std::printf("\n");
  return 0;
}
