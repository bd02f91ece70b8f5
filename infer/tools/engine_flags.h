// Command-line flags of the engine shared by st-run, st-perplexity and st-bench: the memory
// budget (expert streaming), cache policy, prefetch, I/O backend, pinning and context limit,
// plus flag-name normalisation (--memory-budget is --memory_budget).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "infer/runtime/engine.h"

namespace st {

// "1G", "512M", "1.5GiB", "800m", "4096" (bytes), "0" -> bytes (K/M/G/T are powers of 1024).
absl::StatusOr<int64_t> ParseByteSize(const std::string& text);

// Copies the shared flags into `o` (memory_budget, cache_policy, prefetch, io, io_threads,
// pin_profile, pin_fraction, max_context); InvalidArgument naming the flag on a bad value.
absl::Status ApplyEngineFlags(EngineOptions* o);

// Rewrites "--some-flag[=v]" to "--some_flag[=v]" in argv (before "--"), so both spellings
// work with gflags.
void NormalizeFlagNames(int argc, char** argv);

// One line on the budget plan and the cache ("" without a budget), and one on the cache's
// counters since its last ResetStats.
std::string BudgetPlanText(const Engine& e);
std::string CacheStatsText(const Engine& e, int64_t tokens);

}  // namespace st
