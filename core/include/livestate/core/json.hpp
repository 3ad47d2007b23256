#pragma once

#include <nlohmann/json.hpp>

namespace livestate {
/// Message bodies are JSON objects; timestamps are seconds since the UNIX epoch.
using Json = nlohmann::json;
}  // namespace livestate
