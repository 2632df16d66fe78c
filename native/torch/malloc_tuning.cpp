// glibc malloc settings for a training process.
//
// With glibc's defaults, a block above 128 KiB is an mmap of its own (the threshold only grows
// after such a block is freed), freed memory at the top of the heap is handed back to the OS, and
// every thread that allocates may get an arena of its own. A training step allocates and frees the
// same large activations again and again, so each step maps fresh pages and touches them for the
// first time. The settings below keep freed memory in the process instead (its resident size
// stays at its peak), as PyTorch deployments get from jemalloc or tcmalloc. glibc applies them
// fully only when they are set at process start (MALLOC_* variables; the CLI starts training
// commands that way, lib/cli/relaunch.ts); set here, when the addon loads, Node's threads already
// have their arenas. Measured on one native CRPO run (docs/training.md, "Memory allocator"):
// defaults 20-28 s with 1.1-1.3 M minor page faults; set here 18-20 s with 0.5 M; set at start
// 12-17 s with 0.14 M. CRPO_MALLOC=default keeps glibc's defaults.
#include "malloc_tuning.h"

#include <cstdlib>
#include <cstring>
#include <mutex>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace crpo {

namespace {

constexpr int kMmapThreshold = 32 << 20;  // glibc's largest allowed value (64-bit)
constexpr int kTrimThreshold = 1 << 30;

std::string apply() {
#if defined(__GLIBC__)
  const char* choice = std::getenv("CRPO_MALLOC");
  if (choice && std::strcmp(choice, "default") == 0) return "glibc defaults (CRPO_MALLOC=default)";
  const bool ok = mallopt(M_ARENA_MAX, 1) == 1 && mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1 &&
                  mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1;
  if (!ok) return "glibc defaults (mallopt refused the settings)";
  return "glibc tuned: one arena, mmap threshold 32 MiB, trim threshold 1 GiB (CRPO_MALLOC=default to keep the "
         "defaults)";
#else
  return "the C library's defaults (the tuning is glibc-only)";
#endif
}

}  // namespace

std::string tune_malloc_once() {
  static std::once_flag once;
  static std::string state;
  std::call_once(once, []() { state = apply(); });
  return state;
}

}  // namespace crpo
