// A torch-free probe of this machine's int8 multiply-add peak, the compute counterpart of the
// bandwidth probe (membw.h): `threads` threads each run the kernel table's in-register dot
// idiom (Kernels::int8_mac_loop) at once; the best of a few timed rounds is reported. st-bench
// uses it to say what fraction of the peak prefill reaches, measured in the same run.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "infer/quant/kernels.h"

namespace st {

struct Int8PeakResult {
  double gmac_per_s = 0;  // best round: multiply-adds / seconds / 1e9, all threads together
  int threads = 0;
  const char* kernel = "";  // the table whose idiom ran (Kernels::name)
};

// Runs in the calling thread plus threads - 1 others for about `seconds` per round, `rounds`
// rounds. InvalidArgument for threads < 1, rounds < 1 or seconds <= 0.
absl::StatusOr<Int8PeakResult> MeasureInt8Peak(const Kernels& k, int threads, int rounds = 3,
                                               double seconds = 0.1);

}  // namespace st
