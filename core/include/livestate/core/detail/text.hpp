#pragma once

#include <string>
#include <string_view>

namespace livestate::detail {

/// `text` on one line: every run of whitespace (newlines, tabs, spaces)
/// becomes one space, none at either end. libpq's and the server's messages
/// span lines ("ERROR:  …\nDETAIL:  …\n"); livestate's errors and log lines
/// are one line each.
[[nodiscard]] std::string one_line(std::string_view text);

}  // namespace livestate::detail
