// The int8 peak probe (int8_peak.h): calibrate one thread's loop to `seconds`, then time all
// threads running it together.
#include "infer/runtime/int8_peak.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "absl/status/status.h"

namespace st {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

absl::StatusOr<Int8PeakResult> MeasureInt8Peak(const Kernels& k, int threads, int rounds,
                                               double seconds) {
  if (threads < 1 || rounds < 1 || !(seconds > 0)) {
    return absl::InvalidArgumentError(
        "int8 peak probe: threads and rounds must be >= 1 and "
        "seconds > 0");
  }
  int32_t sink = 0;
  // Calibration on this thread: double the rounds until one call takes a tenth of `seconds`.
  int64_t iters = 1024;
  for (;;) {
    const double t0 = Now();
    k.int8_mac_loop(iters, &sink);
    if (Now() - t0 >= seconds / 10 || iters > (int64_t{1} << 40)) break;
    iters *= 2;
  }
  iters *= 10;
  Int8PeakResult best;
  best.threads = threads;
  best.kernel = k.name;
  std::vector<int32_t> sinks(threads);
  for (int r = 0; r < rounds; ++r) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> pool;
    std::vector<int64_t> macs(threads, 0);
    auto body = [&](int i) {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) {
      }
      macs[i] = k.int8_mac_loop(iters, &sinks[i]);
    };
    for (int i = 1; i < threads; ++i) pool.emplace_back(body, i);
    while (ready.load() < threads - 1) std::this_thread::yield();
    const double t0 = Now();
    go.store(true, std::memory_order_release);
    ready.fetch_add(1);
    macs[0] = k.int8_mac_loop(iters, &sinks[0]);
    for (std::thread& t : pool) t.join();
    const double dt = Now() - t0;
    int64_t total = 0;
    for (int64_t m : macs) total += m;
    best.gmac_per_s = std::max(best.gmac_per_s, static_cast<double>(total) / dt / 1e9);
  }
  return best;
}

}  // namespace st
