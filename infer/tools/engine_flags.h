// Command-line flags of the engine shared by st-run, st-perplexity and st-bench, defined once in
// engine_flags.cpp: the model file, the KV cache type, huge pages, the memory budget (expert
// streaming), cache policy, prefetch, I/O backend, pinning and context limit.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "infer/runtime/engine.h"
#include "infer/tools/cli.h"

DECLARE_string(model);
DECLARE_bool(kv_f16);
DECLARE_bool(huge_pages);

namespace st {

// "1G", "512M", "1.5GiB", "800m", "4096" (bytes), "0" -> bytes (K/M/G/T are powers of 1024).
absl::StatusOr<int64_t> ParseByteSize(const std::string& text);

// The --help group of these flags (every flag defined in engine_flags.cpp).
cli::FlagGroup EngineFlagGroup();

// Copies the shared flags into `o` (kv_f16, huge_pages, memory_budget, cache_policy, prefetch,
// io, io_threads, pin_profile, pin_fraction, max_context; not threads, which each tool applies);
// InvalidArgument naming the flag on a bad value.
absl::Status ApplyEngineFlags(EngineOptions* o);

// When `path` (what --model named) is not a model file but something a user may take for one (a
// Hugging Face checkpoint directory, a safetensors file, an st-train checkpoint, a GGUF file,
// another directory), a message saying what it is and what to do; "" otherwise. Reads at most the
// first 16 bytes.
std::string ExplainNotAModelFile(const std::string& path);

// One line on the budget plan and the cache ("" without a budget), and one on the cache's
// counters since its last ResetStats.
std::string BudgetPlanText(const Engine& e);
std::string CacheStatsText(const Engine& e, int64_t tokens);

}  // namespace st
