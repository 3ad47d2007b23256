#pragma once

// SHA-256 (FIPS 180-4), for the checksums of migrations read at run time:
// the same lowercase hex that CMake's file(SHA256) gives compiled-in ones.

#include <string>
#include <string_view>

namespace livestate::db::detail {

[[nodiscard]] std::string sha256_hex(std::string_view data);

}  // namespace livestate::db::detail
