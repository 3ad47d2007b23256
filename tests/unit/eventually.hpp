#pragma once

// Waiting in tests for what happens in other threads.

#include <chrono>
#include <thread>

namespace livestate::test {

/// Spins until `done` holds or `limit` passes; false then. `done` is asked
/// again every `interval` (longer for a predicate that queries a server).
template <class Predicate>
bool eventually(Predicate done, std::chrono::milliseconds limit = std::chrono::seconds(10),
                std::chrono::milliseconds interval = std::chrono::milliseconds(1)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(interval);
  }
  return true;
}

}  // namespace livestate::test
