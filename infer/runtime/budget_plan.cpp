// The memory-budget plan (Engine::SetUpBudget): how a --memory_budget is spent. Weights outside
// the experts, the KV cache of max_context tokens, the forward state's buffers (as allocated)
// and a fixed allowance stay resident; the rest becomes expert cache slots (at least k), some
// of them pinned to the hottest experts of a routing profile.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "infer/runtime/engine.h"
#include "infer/runtime/engine_impl.h"

namespace st {

absl::Status Engine::SetUpBudget(const std::string& path) {
  const ModelConfig& c = cfg_;
  const Impl& m = *impl_;
  const int64_t H = c.hidden_size, KV = c.kv_width(), V = c.vocab_size;
  const int E = c.moe_num_primary_experts, K = c.moe_num_active_primary_experts;
  MemoryPlan& p = plan_;
  p.budget = opt_.memory_budget;
  p.resident = static_cast<int64_t>(file_->memory_bytes()) +
               static_cast<int64_t>(c.num_hidden_layers) * (E + 2) * H * 4 + H * 4;
  const int64_t kv_elem = opt_.kv_f16 ? 2 : 4;
  for (const LayerW& L : m.layers) {
    const int64_t held = L.window > 0 ? std::min<int64_t>(L.ring, max_context_) : max_context_;
    p.kv_cache += held * KV * 2 * kv_elem * std::max(1, opt_.sequences);
  }
  // The forward state is allocated at load for the largest step: measure it. Beside it, the
  // [V] logits a Forward returns and the caller's copy of them.
  p.buffers = m.fs.bytes() + 2 * V * static_cast<int64_t>(sizeof(float));
  // The process beyond the plan's items: code, libraries, heap slack, thread stacks, and page
  // tables (charged to a memory cgroup too: about 0.2% of what is mapped with 4 KiB pages).
  const int64_t allowance_base = int64_t{48} << 20;
  p.overhead = allowance_base + p.budget / 64;
  p.slot_bytes = static_cast<int64_t>(ExpertCache::SlotBytes(*file_));
  const int64_t fixed = p.resident + p.kv_cache + p.buffers + p.overhead;
  // The smallest budget B with B - (fixed part at B) >= k slots; the allowance grows with B.
  const int64_t need = p.resident + p.kv_cache + p.buffers + allowance_base + K * p.slot_bytes;
  p.minimum = static_cast<int64_t>(std::ceil(static_cast<double>(need) * 64.0 / 63.0)) + 64;
  const auto mib = [](int64_t b) {  // exact enough to act on, for tiny and large models
    return b >= (int64_t{100} << 20) ? absl::StrFormat("%.0f MiB", b / 1048576.0)
                                     : absl::StrFormat("%.2f MiB", b / 1048576.0);
  };
  if (p.budget < p.minimum) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "memory budget of ", mib(p.budget), " cannot hold this model: it needs at least ",
        mib(p.minimum), " = weights outside the experts ", mib(p.resident), " + KV cache for ",
        max_context_, " tokens ", mib(p.kv_cache), " + buffers ", mib(p.buffers),
        " + process allowance ", mib(allowance_base + p.minimum / 64),
        " (48 MiB + 1/64 of the budget) + ", K, " expert slots of ", mib(p.slot_bytes),
        "; raise the budget or lower the context (--max_context)"));
  }
  p.slots = std::min<int64_t>((p.budget - fixed) / p.slot_bytes,
                              static_cast<int64_t>(c.num_hidden_layers) * E);
  p.expert_cache = p.slots * p.slot_bytes;
  ExpertCacheOptions co;
  co.slots = p.slots;
  co.policy = opt_.cache_policy;
  co.io = opt_.io;
  co.io_threads = opt_.io_threads;
  ST_ASSIGN_OR_RETURN(cache_, ExpertCache::Create(*file_, path, co));
  if (!opt_.pin_profile.empty()) ST_RETURN_IF_ERROR(PinHotExperts());
  cache_->ResetStats();
  return absl::OkStatus();
}

// Pins the hot experts of opt_.pin_profile: those chosen at least twice as often as the mean,
// hottest first, up to pin_fraction of the slots and leaving 2k free.
absl::Status Engine::PinHotExperts() {
  const ModelConfig& c = cfg_;
  const int E = c.moe_num_primary_experts, K = c.moe_num_active_primary_experts;
  MemoryPlan& p = plan_;
  ST_ASSIGN_OR_RETURN(RoutingProfile prof, ReadRoutingProfile(opt_.pin_profile));
  if (prof.layers != c.num_hidden_layers || prof.experts != E) {
    return absl::InvalidArgumentError(
        absl::StrCat("routing profile '", opt_.pin_profile, "' is for ", prof.layers, " layers x ",
                     prof.experts, " experts, the model has ", c.num_hidden_layers, " x ", E,
                     "; record one with st-run --record_routing on this model"));
  }
  if (!(opt_.pin_fraction >= 0.0 && opt_.pin_fraction < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("pin_fraction must be in [0, 1), got ", opt_.pin_fraction));
  }
  // Keep at least 2k slots free for the experts of the step and the next.
  const int64_t max_pinned = std::min<int64_t>(static_cast<int64_t>(opt_.pin_fraction * p.slots),
                                               std::max<int64_t>(0, p.slots - 2 * K));
  // Only hot experts: chosen at least twice as often as the mean (a flat profile pins
  // nothing, which beats tying slots to experts that are no better than any other).
  std::vector<std::pair<int, int>> hot = prof.Hottest();
  int64_t total = 0;
  for (int64_t n : prof.counts) total += n;
  const double mean = static_cast<double>(total) / static_cast<double>(prof.counts.size());
  hot.erase(std::remove_if(hot.begin(), hot.end(),
                           [&](const std::pair<int, int>& x) {
                             return prof.counts[x.first * E + x.second] < 2.0 * mean ||
                                    prof.counts[x.first * E + x.second] == 0;
                           }),
            hot.end());
  ST_ASSIGN_OR_RETURN(p.pinned, cache_->Pin(hot, max_pinned));
  return absl::OkStatus();
}

}  // namespace st
