#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace livestate::detail {

/// The offset of the first byte of `text` that is not 7-bit ASCII, if any.
[[nodiscard]] std::optional<std::size_t> first_non_ascii(std::string_view text) noexcept;

/// `text` quoted for an error message, with bytes outside printable ASCII as \xNN.
[[nodiscard]] std::string quote_for_message(std::string_view text);

/// "element 2 (\"caf\\xc3\\xa9\") is not 7-bit ASCII: byte 0xc3 at offset 3"
[[nodiscard]] std::string describe_non_ascii(std::size_t index, std::string_view element, std::size_t offset);

}  // namespace livestate::detail
