// The expert cache of the memory-budget mode: a fixed number of slots, each holding one
// (layer, expert) extent of the model file (gate, up, down_t), filled by reads that bypass the
// page cache (O_DIRECT through io_uring, or pread from I/O threads), with a replacement policy
// (LRU or LFU with ageing) and pinned slots that are never evicted.
//
// Threads: every public method is called from one thread (the engine's); reads complete on the
// cache's own I/O thread(s). Slot memory is owned by the cache; a pointer from Acquire stays
// valid until the matching Release. Entries in use or in flight are never evicted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "infer/format/model_file.h"

namespace st {

// kLru: least recently used. kLfu: least frequently used, counts halved every 4 x slots uses.
// kLrfu: recency at the granularity of forward passes (tokens), frequency within: the victim
// is an expert last used in the oldest pass, and among those the one with the lowest use
// count, each use adding 1 to a count that halves every `slots` uses. Plain LRU ranks the
// experts of a pass by layer, so with a cache smaller than the working set it evicts the
// layers the next token reaches first; ranking by pass and then by count does not.
enum class CachePolicy { kLru, kLfu, kLrfu };
// "lru" / "lfu" / "lrfu"; InvalidArgument otherwise.
absl::StatusOr<CachePolicy> ParseCachePolicy(const std::string& name);
const char* CachePolicyName(CachePolicy p);

enum class IoBackend { kAuto, kUring, kPread };
absl::StatusOr<IoBackend> ParseIoBackend(const std::string& name);  // "auto", "uring", "pread"

struct ExpertCacheOptions {
  int64_t slots = 0;  // >= 1
  CachePolicy policy = CachePolicy::kLrfu;
  IoBackend io = IoBackend::kAuto;
  int io_threads = 2;          // pread backend: reader threads
  bool direct = true;          // O_DIRECT (falls back to buffered reads + dropping the cache)
  int64_t io_chunk = 1 << 20;  // bytes per read request (an extent is split into chunks)
};

struct ExpertCacheStats {
  int64_t requests = 0;  // expert uses (Acquire calls)
  int64_t hits = 0;      // ... that needed no new read (cached, or already in flight)
  int64_t reads = 0;     // extents read
  int64_t bytes_read = 0;
  int64_t prefetch_reads = 0;  // extents read on a Prefetch (ahead of their use)
  int64_t prefetch_used = 0;   // ... that were used (acquired) before being evicted
  int64_t evictions = 0;
  double stall_seconds = 0;  // time Acquire waited for reads
  double hit_rate() const { return requests > 0 ? static_cast<double>(hits) / requests : 0.0; }
  double prefetch_accuracy() const {
    return prefetch_reads > 0 ? static_cast<double>(prefetch_used) / prefetch_reads : 0.0;
  }
};

class ExpertCache {
 public:
  // `file` must outlive the cache; `path` is reopened for O_DIRECT reads.
  static absl::StatusOr<std::unique_ptr<ExpertCache>> Create(const ModelFile& file,
                                                             const std::string& path,
                                                             const ExpertCacheOptions& options);
  ~ExpertCache();
  ExpertCache(const ExpertCache&) = delete;
  ExpertCache& operator=(const ExpertCache&) = delete;

  // Bytes of one slot: the largest extent, rounded up to 4096. What a budget needs per slot.
  static size_t SlotBytes(const ModelFile& file);
  size_t slot_bytes() const;
  int64_t slots() const;
  std::string io_name() const;  // "io_uring, O_DIRECT", "pread x2, O_DIRECT", ...

  // Starts reads of the experts of `layer` that are neither cached nor in flight, as far as
  // free or evictable slots allow (no error: a read that cannot start now starts at Acquire).
  // Every listed expert is reserved until EndStep: no later Prefetch or Acquire evicts it.
  void Prefetch(int layer, absl::Span<const int> experts);
  // Ends a step (a layer's MoE): drops the reservations of Prefetch.
  void EndStep();
  // A new forward pass (a decoded token, or a prefill chunk) begins: recency for kLrfu.
  void NewPass();
  // True when (layer, expert) is cached and its read has completed.
  bool Ready(int layer, int expert) const;
  // True when (layer, expert) is cached or its read is in flight.
  bool Contains(int layer, int expert) const;
  // Blocks until (layer, expert) is cached (reading it now if needed) and marks it in use.
  // Returns its extent bytes; DataLoss on a failed or short read, ResourceExhausted when
  // every slot is in use, pinned or in flight.
  absl::StatusOr<const uint8_t*> Acquire(int layer, int expert);
  void Release(int layer, int expert);
  // Reads the given (layer, expert) pairs now and keeps them for good (never evicted), in
  // order, stopping when `max_pinned` slots are pinned; returns how many were pinned.
  absl::StatusOr<int64_t> Pin(absl::Span<const std::pair<int, int>> experts, int64_t max_pinned);
  int64_t pinned() const;

  const ExpertCacheStats& stats() const { return stats_; }
  void ResetStats() { stats_ = ExpertCacheStats(); }

  struct Impl;  // slots, index, I/O (expert_cache.cpp)

 private:
  ExpertCache() = default;
  ExpertCacheStats stats_;
  std::unique_ptr<Impl> impl_;
};

// A routing profile: how often each (layer, expert) was chosen over some text, written by
// `st-run --record_routing` and read to pin the hottest experts. JSON:
//   {"layers": L, "experts": E, "tokens": N, "counts": [[c_00, c_01, ...], ...]}
struct RoutingProfile {
  int layers = 0, experts = 0;
  int64_t tokens = 0;
  std::vector<int64_t> counts;  // [layers * experts]
  // The experts in decreasing count order (ties by layer, then expert).
  std::vector<std::pair<int, int>> Hottest() const;
};
absl::Status WriteRoutingProfile(const std::string& path, const RoutingProfile& p);
absl::StatusOr<RoutingProfile> ReadRoutingProfile(const std::string& path);
// The JSON text of a profile, checked (sizes in [1, 4096], counts and tokens integers >= 0);
// `path` names it in errors. ReadRoutingProfile reads the file and calls this.
absl::StatusOr<RoutingProfile> ParseRoutingProfile(absl::string_view text, const std::string& path);

}  // namespace st
