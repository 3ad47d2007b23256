// libFuzzer target: wire::decode on any bytes.
//
// Properties: decode never throws (bad_alloc aside, which libFuzzer's -rss
// limit turns into a report anyway) and never crashes; what it accepts,
// encoded again, decodes to the same messages.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string_view>
#include <vector>

#include "livestate/core/wire.hpp"

namespace wire = livestate::wire;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view payload(reinterpret_cast<const char*>(data), size);
  const wire::Decoded decoded = wire::decode(payload);
  if (!decoded.problems.empty() && decoded.messages.empty()) return 0;

  std::vector<wire::Outgoing> outgoing;
  for (const auto& message : decoded.messages) {
    wire::Outgoing entry;
    entry.key = &message.key;
    if (message.reference) {
      entry.reference = *message.reference;
    } else {
      entry.body = &message.body;
    }
    entry.sequence = message.sequence.value_or(0);
    outgoing.push_back(entry);
  }
  const auto origin = decoded.origin.value_or("");
  const auto payloads = wire::encode(origin, outgoing, std::numeric_limits<std::size_t>::max());
  std::size_t index = 0;
  for (const auto& again : payloads) {
    const auto redecoded = wire::decode(again);
    if (!redecoded.problems.empty()) std::abort();  // we wrote something we refuse
    for (const auto& message : redecoded.messages) {
      const auto& original = decoded.messages.at(index++);
      // A sequence of 0 is not sent ("s" left out).
      const auto sequence = original.sequence && *original.sequence != 0 ? original.sequence : std::nullopt;
      if (message.key != original.key || message.body != original.body || message.reference != original.reference ||
          message.sequence != sequence) {
        std::abort();
      }
    }
  }
  if (index != decoded.messages.size()) std::abort();
  return 0;
}
