#include "livestate/core/log.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

namespace livestate {
namespace {

LogLevel level_from_environment() noexcept {
  const char* value = std::getenv("LIVESTATE_LOG");
  if (value == nullptr || *value == '\0') return LogLevel::warning;
  if (auto level = parse_log_level(value)) return *level;
  std::fprintf(stderr,
               "livestate: warning log: LIVESTATE_LOG=%s is not one of trace, debug, info, "
               "warning, error, off; using warning\n",
               value);
  return LogLevel::warning;
}

std::atomic<LogLevel>& current_level() noexcept {
  static std::atomic<LogLevel> level{level_from_environment()};
  return level;
}

struct SinkHolder {
  std::mutex mutex;
  std::shared_ptr<const LogSink> sink;
};

SinkHolder& sink_holder() {
  static SinkHolder holder;
  return holder;
}

void write_to_stderr(LogLevel level, std::string_view component, std::string_view message) {
  std::string line = "livestate: ";
  line += to_string(level);
  line += ' ';
  line += component;
  line += ": ";
  line += message;
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace

void set_log_sink(LogSink sink) {
  auto replacement = sink ? std::make_shared<const LogSink>(std::move(sink)) : nullptr;
  auto& holder = sink_holder();
  std::lock_guard lock(holder.mutex);
  holder.sink = std::move(replacement);
}

void set_log_level(LogLevel level) noexcept { current_level().store(level, std::memory_order_relaxed); }

LogLevel log_level() noexcept { return current_level().load(std::memory_order_relaxed); }

bool log_enabled(LogLevel level) noexcept { return level != LogLevel::off && level >= log_level(); }

std::string_view to_string(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::trace: return "trace";
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warning: return "warning";
    case LogLevel::error: return "error";
    case LogLevel::off: return "off";
  }
  return "unknown";
}

std::optional<LogLevel> parse_log_level(std::string_view name) noexcept {
  for (auto level :
       {LogLevel::trace, LogLevel::debug, LogLevel::info, LogLevel::warning, LogLevel::error, LogLevel::off}) {
    if (name == to_string(level)) return level;
  }
  return std::nullopt;
}

void log(LogLevel level, std::string_view component, std::string_view message) noexcept {
  if (!log_enabled(level)) return;
  try {
    std::shared_ptr<const LogSink> sink;
    {
      auto& holder = sink_holder();
      std::lock_guard lock(holder.mutex);
      sink = holder.sink;
    }
    if (sink) {
      (*sink)(level, component, message);
    } else {
      write_to_stderr(level, component, message);
    }
  } catch (...) {
    // A logger must never be the reason a message is lost.
  }
}

}  // namespace livestate
