// A torch-free probe of this machine's memory read bandwidth: `threads` threads each read a
// disjoint slice of a buffer much larger than the last-level cache (AVX2 loads when the CPU has
// them, 64-bit scalar loads otherwise); the best of a few passes is reported. st-bench uses it
// to say how close decode gets to the bandwidth limit, measured in the same run.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"

namespace st {

struct MemBwOptions {
  int threads = 1;                 // reader threads (the calling thread is one of them)
  size_t bytes = size_t{1} << 30;  // buffer size; keep it far above the L3 size
  int passes = 5;                  // timed passes over the buffer; the fastest counts
};

struct MemBwResult {
  double gb_per_s = 0;  // best pass: bytes / seconds / 1e9
  double best_s = 0;    // seconds of the best pass
  size_t bytes = 0;     // buffer size read per pass
  int threads = 0;
  const char* kernel = "";  // "avx2" or "scalar"
};

// Measures in this process (the buffer counts in its peak RSS). InvalidArgument for threads < 1,
// passes < 1 or a buffer under 1 MiB; ResourceExhausted when the buffer cannot be allocated.
absl::StatusOr<MemBwResult> MeasureReadBandwidth(const MemBwOptions& options);

// The same in a forked child process, so that the buffer counts neither in the caller's peak
// RSS (ru_maxrss, VmHWM) nor in its heap. Call it while the caller runs no other threads (as
// with any fork). Internal if the child cannot be started or dies.
absl::StatusOr<MemBwResult> MeasureReadBandwidthInChild(const MemBwOptions& options);

}  // namespace st
