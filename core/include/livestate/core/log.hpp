#pragma once

#include <functional>
#include <optional>
#include <string_view>

namespace livestate {

enum class LogLevel { trace, debug, info, warning, error, off };

/// Receives every log record at or above the current level. `component` is the
/// part of livestate that speaks ("mq.simple", "db"), `message` one line.
using LogSink = std::function<void(LogLevel level, std::string_view component, std::string_view message)>;

/// Replaces the sink; an empty sink restores the default, which writes
/// "livestate: LEVEL component: message" lines to stderr.
///
/// Thread safety: every function here may be called from any thread. A sink is
/// called from whatever thread logs, possibly several at once, and must not
/// itself log through livestate. A sink that throws is ignored.
void set_log_sink(LogSink sink);

/// The level starts as the LIVESTATE_LOG environment variable says (trace,
/// debug, info, warning, error or off; warning when unset or unknown).
void set_log_level(LogLevel level) noexcept;
[[nodiscard]] LogLevel log_level() noexcept;
[[nodiscard]] bool log_enabled(LogLevel level) noexcept;

/// "warning" for LogLevel::warning; parse_log_level is its inverse.
[[nodiscard]] std::string_view to_string(LogLevel level) noexcept;
[[nodiscard]] std::optional<LogLevel> parse_log_level(std::string_view name) noexcept;

/// Sends one record to the sink when `level` is enabled.
void log(LogLevel level, std::string_view component, std::string_view message) noexcept;

}  // namespace livestate
