#pragma once

// simdjson (Debian's libsimdjson-dev) turned into the nlohmann::json values
// Json::parse builds, the same values and number types, so that wire_bench
// can weigh it against the library's own reader on equal terms.
//
// Each returns std::nullopt where it cannot promise Json::parse's value: text
// simdjson refuses (not JSON, or valid JSON it doesn't take: an integer past
// 64 bits, a number overflowing a double, a document nested deeper than its
// limit), and, for the DOM, text holding a bare "-0" (which the DOM reads as
// the integer 0, where nlohmann reads a signed integer, and "0" an unsigned
// one). A user would fall back to Json::parse there, as read_json's callers
// do.
//
// Thread safety: each thread reuses parsers of its own (thread_local), as a
// consumer would.

#include <optional>
#include <string_view>

#include "livestate/core/json.hpp"

namespace livestate::bench {

/// simdjson's DOM (runtime-dispatched to the best kernel for this CPU), then
/// a walk of its tape building the Json.
[[nodiscard]] std::optional<Json> simdjson_dom_read(std::string_view text);

/// simdjson's On-Demand front end building the Json as it goes. Its kernel is
/// chosen when this file is compiled (simdjson_ondemand_kernel()): Debian's
/// baseline x86-64 flags give the portable "fallback" one.
[[nodiscard]] std::optional<Json> simdjson_ondemand_read(std::string_view text);

/// The lower bound: the DOM parse alone, building nothing. True when
/// simdjson took the text.
[[nodiscard]] bool simdjson_dom_parse_only(std::string_view text);

/// The kernel the DOM parse runs ("haswell", "icelake", ...) and the one the
/// On-Demand front end was compiled for.
[[nodiscard]] std::string_view simdjson_dom_kernel();
[[nodiscard]] std::string_view simdjson_ondemand_kernel();

/// simdjson's version, as its header gives it ("3.0.1").
[[nodiscard]] std::string_view simdjson_version();

}  // namespace livestate::bench
