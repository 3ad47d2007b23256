#pragma once

// What the benchmarks share: threads that run a case together for a time; a
// positive integer read whole, the median of repetitions, a number with fixed
// decimals.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <latch>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace livestate::bench {

/// `text` as a positive int, all of it; nothing otherwise.
inline std::optional<int> positive_int(const std::string& text) {
  try {
    std::size_t used = 0;
    const int value = std::stoi(text, &used);
    if (used == text.size() && value > 0) return value;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

/// The median of the values that are numbers; NAN when none is.
inline double median(std::vector<double> values) {
  std::erase_if(values, [](double v) { return std::isnan(v); });
  if (values.empty()) return NAN;
  std::sort(values.begin(), values.end());
  const std::size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

/// `value` with `decimals` decimals; "n/a" for NAN.
inline std::string fixed(double value, int decimals) {
  if (std::isnan(value)) return "n/a";
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

/// Runs `body(index, stop)` on `count` threads that start together, for
/// `seconds` or until one throws (`stop` turns true; the first exception is
/// rethrown once all have ended). Returns the wall time from the start to the
/// last one's end, in seconds.
template <class Body>
double run_together(int count, double seconds, Body body) {
  std::atomic<bool> stop{false};
  std::latch start(count + 1);
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(count));
  std::vector<std::thread> threads;
  for (int i = 0; i < count; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      try {
        body(i, stop);
      } catch (...) {
        errors[static_cast<std::size_t>(i)] = std::current_exception();
        stop = true;
      }
    });
  }
  start.arrive_and_wait();
  using Clock = std::chrono::steady_clock;
  const auto began = Clock::now();
  const auto deadline = began + std::chrono::duration<double>(seconds);
  while (!stop && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  stop = true;
  for (auto& thread : threads) thread.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - began).count();
  for (const auto& error : errors) {
    if (error) std::rethrow_exception(error);
  }
  return elapsed;
}

}  // namespace livestate::bench
