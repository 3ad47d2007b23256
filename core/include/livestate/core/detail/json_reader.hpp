#pragma once

// A faster reader of JSON text for the library's hot paths (every
// notification a PostgreSQL consumer receives, every JSON column a reload
// reads). It builds the same nlohmann::json values as Json::parse, and leaves
// every refusal to Json::parse itself, so that errors keep nlohmann's types
// and messages.
//
// Thread safety: pure functions; call them from any number of threads.

#include <optional>
#include <string_view>

#include "livestate/core/json.hpp"

namespace livestate::detail {

/// `text` read as Json::parse(text) would read it: the same values, with the
/// same types of numbers (an integer without a sign is unsigned, a negative
/// one signed, one beyond 64 bits a double), the last of duplicate keys.
/// std::nullopt when the text is not JSON, and also, to leave them to
/// Json::parse, when it starts with a byte-order mark, nests deeper than
/// `max_depth`, or holds a number a double only approximates by overflowing or
/// underflowing. Never throws but std::bad_alloc.
[[nodiscard]] std::optional<Json> read_json(std::string_view text, int max_depth = 512);

/// Json::parse(text), faster: read_json() when it reads the text, else
/// Json::parse(text) with its result or its exception (parse_error, or
/// out_of_range for a number beyond a double's range). Unlike Json::parse,
/// it refuses a NUL byte (parse_error), which Json::parse takes for the end
/// of the text, ignoring what follows it.
[[nodiscard]] Json parse_json(std::string_view text);

}  // namespace livestate::detail
