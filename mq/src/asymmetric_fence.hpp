#pragma once

#include <atomic>

#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__SANITIZE_THREAD__)
#define LIVESTATE_MQ_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LIVESTATE_MQ_TSAN 1
#endif
#endif

namespace livestate::mq::detail {

// Asymmetric fences, as folly's asymmetricLightBarrier/asymmetricHeavyBarrier
// and P1202's proposed std::asymmetric_thread_fence_light/heavy: a light fence
// on a hot path and a heavy fence on a rare path order memory as two seq_cst
// fences would, while the hot path pays almost nothing.
//
// On Linux the heavy fence is membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED),
// which makes every running thread of the process execute a full barrier, so
// the light fence only needs to stop the compiler. Where that is unavailable
// (another OS, a kernel or seccomp filter that refuses it, ThreadSanitizer,
// which does not model it), both are seq_cst fences.

// Whether the heavy fence is membarrier: set once, by register_membarrier(),
// which an object that will use these fences calls when it is made, so that
// every thread that fences through that object sees the final value. A light
// fence that still read false is a full fence, which is never wrong.
inline std::atomic<bool> g_membarrier_registered{false};

inline void register_membarrier() noexcept {
  [[maybe_unused]] static const bool registered = [] {
#if defined(__linux__) && defined(__NR_membarrier) && !defined(LIVESTATE_MQ_TSAN)
    const long supported = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    const bool ok = supported >= 0 && (supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0 &&
                    syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
    g_membarrier_registered.store(ok, std::memory_order_relaxed);
    return ok;
#else
    return false;
#endif
  }();
}

inline void asymmetric_fence_light() noexcept {
  if (g_membarrier_registered.load(std::memory_order_relaxed)) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
  } else {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

inline void asymmetric_fence_heavy() noexcept {
#if defined(__linux__) && defined(__NR_membarrier) && !defined(LIVESTATE_MQ_TSAN)
  // Registered, it cannot fail; the fence below is only for when it is not.
  if (g_membarrier_registered.load(std::memory_order_relaxed) &&
      syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) {
    return;
  }
#endif
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

}  // namespace livestate::mq::detail
