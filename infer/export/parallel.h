// ParallelFor for the exporter and its sources: contiguous ranges of [0, n) on short-lived
// std::threads (an export runs a few thousand of them; starting one costs ~20 us).
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace st {

// How many ranges ParallelFor splits n items into: one per hardware thread, but none with
// fewer than `min_per_range` items (and at least one range).
inline int ParallelRanges(int64_t n, int64_t min_per_range) {
  const int64_t hw = std::max<unsigned>(1, std::thread::hardware_concurrency());
  return static_cast<int>(
      std::max<int64_t>(1, std::min(hw, n / std::max<int64_t>(1, min_per_range))));
}

// Calls fn(range, begin, end) for `ranges` contiguous ranges covering [0, n), range 0 on the
// calling thread, the others on threads of their own; returns when all are done. The split
// depends only on (n, ranges).
template <typename F>
void ParallelFor(int64_t n, int ranges, const F& fn) {
  const int64_t per = ranges > 0 ? (n + ranges - 1) / ranges : n;
  std::vector<std::thread> pool;
  for (int r = 1; r < ranges; ++r) {
    const int64_t b = std::min(n, r * per), e = std::min(n, b + per);
    pool.emplace_back([&fn, r, b, e] { fn(r, b, e); });
  }
  fn(0, int64_t{0}, std::min(n, per));
  for (std::thread& t : pool) t.join();
}

}  // namespace st
