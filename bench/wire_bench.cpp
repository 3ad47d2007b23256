// wire_bench: what decoding a notification costs the consumer, per message:
// a payload of 20 Buildbot claim bodies (the batch shape) read by nlohmann's
// Json::parse, by the library's JSON reader (detail::read_json), and decoded
// by wire::decode (which reads with the latter), in the same run.
//
// Usage: wire_bench [--reps N] [--rounds N] [--quick]
//   --reps N    repetitions, the median reported (5)
//   --rounds N  payloads decoded per repetition and reader (20000)
//   --quick     a few rounds: checks that the three agree (numbers mean nothing)
//
// Exits 1 when the readers disagree on the payload.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

#include "claim_body.hpp"
#include "livestate/core/detail/json_reader.hpp"
#include "livestate/core/wire.hpp"

namespace {

using livestate::Json;
using livestate::RoutingKey;
namespace wire = livestate::wire;
using Clock = std::chrono::steady_clock;

constexpr int messages_per_payload = 20;

std::string claim_payload() {
  std::vector<Json> bodies;
  std::vector<RoutingKey> keys;
  for (int i = 0; i < messages_per_payload; ++i) {
    bodies.push_back(livestate::bench::claim_body());
    bodies.back()["buildrequestid"] = 1000 + i;
    keys.push_back(RoutingKey{"buildrequests", std::to_string(1000 + i), "claimed"});
  }
  std::vector<wire::Outgoing> outgoing;
  for (int i = 0; i < messages_per_payload; ++i) {
    outgoing.push_back(wire::Outgoing{&keys[i], &bodies[i], 0, static_cast<std::uint64_t>(i + 1)});
  }
  const auto payloads = wire::encode("master-1.1", outgoing);
  if (payloads.size() != 1) throw std::runtime_error("the payload did not fit one notification");
  return payloads.front();
}

template <class Read>
double micros_per_message(int rounds, Read read) {
  std::size_t sink = 0;
  const auto start = Clock::now();
  for (int round = 0; round < rounds; ++round) sink += read();
  const auto elapsed = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  if (sink == 0) std::abort();  // keeps the work
  return elapsed / rounds / messages_per_payload;
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
  const std::string payload = claim_payload();
  const Json expected = Json::parse(payload);
  const auto read = livestate::detail::read_json(payload);
  const auto decoded = wire::decode(payload);
  if (!read || *read != expected || decoded.messages.size() != messages_per_payload || !decoded.problems.empty() ||
      decoded.messages.front().body != expected["m"][0]["b"]) {
    std::cerr << "wire_bench: the readers disagree on the payload\n";
    return 1;
  }

  std::vector<double> nlohmann, reader, decode;
  for (int rep = 0; rep < reps; ++rep) {
    nlohmann.push_back(micros_per_message(rounds, [&] { return Json::parse(payload).size(); }));
    reader.push_back(micros_per_message(rounds, [&] { return livestate::detail::read_json(payload)->size(); }));
    decode.push_back(micros_per_message(rounds, [&] { return wire::decode(payload).messages.size(); }));
  }
  std::cout << std::fixed << std::setprecision(2) << "payload of " << messages_per_payload << " claim bodies, "
            << payload.size() << " bytes; medians of " << reps << " x " << rounds << " payloads, µs per message\n"
            << "| reader | µs per message |\n| --- | ---: |\n"
            << "| Json::parse (nlohmann) | " << median(nlohmann) << " |\n"
            << "| detail::read_json | " << median(reader) << " |\n"
            << "| wire::decode (reads with read_json, builds the messages) | " << median(decode) << " |\n";
  return 0;
}
