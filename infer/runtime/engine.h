// The torch-free CPU runtime: maps a model file and runs SmallThinker on it, exploiting both
// levels of sparsity (top-k experts, zero ReGLU neurons inside them).
//
// Per layer (smallthinker.md section 3), in this order:
//   route (raw residual) -> prefetch hook(chosen experts) -> RMSNorm -> attention (KV cache)
//   -> RMSNorm -> MoE (sparse ReGLU experts) -> residual.
// Matrices stay in the file's types (Q4_0 / Q8_0 / F16 / BF16 / F32) and are read from the
// mapping; activations are quantized to Q8_0 for the integer dot products. Prefill groups the
// prompt's tokens by expert and runs each expert once on its group.
//
// Conversations: the engine holds one context of its own (Forward, Prefill, Reset, position()),
// and any number more as Sequence objects (a server's slots), each with its own KV cache.
// DecodeBatch appends one token to each of several sequences in one step: every weight row is
// read once for all of them, and tokens routed to the same expert share its read.
//
// Threads: an Engine owns a persistent pool of `threads` workers (the calling thread is one of
// them). An Engine is not thread-safe: one caller at a time (its Sequences included).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "infer/format/model_file.h"
#include "infer/runtime/expert_cache.h"
#include "model/config.h"

namespace st {

constexpr int kBudgetDefaultContext = 4096;

// The most worker threads an engine starts (EngineOptions::threads above it is refused).
inline constexpr int kMaxEngineThreads = 1024;

struct EngineOptions {
  int threads = 0;  // worker threads, calling thread included; 0 = all cores; <= kMaxEngineThreads
  bool kv_f16 = true;       // KV cache in fp16 (false: f32)
  bool simd = true;         // false forces the portable scalar kernels (tests, comparisons)
  bool avx512 = true;       // false stops at the AVX2 table even where AVX-512 VNNI exists
  int prefill_chunk = 256;  // tokens per batched prefill step
  bool populate = true;     // prefault the whole mapping at Load (no page faults later)
  // Load: read the file into huge-page-backed memory instead of mapping it (ModelFile::Options;
  // faster decode where transparent huge pages are enabled for madvise or always).
  bool huge_pages = true;
  // Longest context the engine accepts (0 = the model's max_position_embeddings, or
  // kBudgetDefaultContext under a memory budget); the KV cache a budget reserves is sized by it.
  int max_context = 0;
  // Benchmarks only: instead of the router's top-k, k distinct experts drawn uniformly per
  // (position, layer, routing_seed) (the router still weights them). Random-weight models
  // route deep layers to a handful of experts; this gives the worst case for a cache.
  bool uniform_routing = false;
  uint64_t routing_seed = 0;

  // ---- Memory-budget mode (expert streaming) ----
  // Total bytes the process may use, page cache included (0 = whole model in memory). Weights
  // outside the experts, the KV cache and the buffers stay resident; experts live in an
  // ExpertCache that fills the rest and is read with O_DIRECT.
  int64_t memory_budget = 0;
  CachePolicy cache_policy = CachePolicy::kLrfu;
  // Start an expert's read as soon as the pre-attention router has chosen it (true), or only
  // when the MoE needs it, after attention (false: the baseline it is measured against).
  bool prefetch = true;
  IoBackend io = IoBackend::kAuto;
  int io_threads = 2;
  // Pin the hottest experts of this routing profile (st-run --record_routing) at load, up to
  // pin_fraction of the cache's slots.
  std::string pin_profile;
  double pin_fraction = 0.5;
  // Conversations held at once (the engine's own plus Sequences, e.g. st-server --parallel):
  // the memory plan reserves a KV cache of max_context tokens for each.
  int sequences = 1;
};

struct KvCache;     // forward_state.h
struct ExpertMats;  // forward_state.h
struct Scratch;     // forward_state.h

// One conversation's context inside an Engine: the KV cache of every layer and how many
// positions it holds. Made by Engine::NewSequence, used only with that engine (which must
// outlive it); like the engine, one caller at a time.
class Sequence {
 public:
  ~Sequence();
  Sequence(const Sequence&) = delete;
  Sequence& operator=(const Sequence&) = delete;
  int position() const { return pos_; }
  int64_t kv_bytes() const;  // bytes its KV caches hold now

 private:
  friend class Engine;
  Sequence();
  const void* owner_ = nullptr;  // the engine that made it
  std::vector<KvCache> kv_L_;    // per layer
  int pos_ = 0;
};

// How a memory budget was spent (all bytes). Filled only in the memory-budget mode.
struct MemoryPlan {
  int64_t budget = 0;
  int64_t resident = 0;  // weights outside the experts, metadata, directory (+ f32 copies)
  int64_t kv_cache = 0;  // for max_context tokens
  int64_t buffers = 0;   // the forward state as allocated (activations, per-thread scratch)
                         // and the returned logits
  int64_t overhead = 0;  // code, libraries, heap slack, stacks (a fixed allowance)
  int64_t expert_cache = 0;
  int64_t slots = 0, slot_bytes = 0, pinned = 0;
  int64_t minimum = 0;  // the smallest budget that works: everything above with k slots
};

struct EngineStats {
  int64_t tokens = 0;         // tokens run (decode and prefill)
  int64_t forwards = 0;       // Forward / prefill calls (a prefill chunk counts once)
  int64_t reglu_total = 0;    // expert neurons evaluated (gate rows x tokens)
  int64_t reglu_skipped = 0;  // of those, relu(gate) == 0: up and down_t rows skipped
  int64_t weight_bytes = 0;   // weight bytes read by the kernels (resident + expert rows)
  int64_t expert_calls = 0;   // (token, expert) pairs computed
  // Wall time by phase (seconds): routing + prefetch hook, attention (norm, QKV, cache,
  // scores, output projection), MoE (norm, experts, residual), final norm + LM head.
  double seconds_route = 0, seconds_attention = 0, seconds_moe = 0, seconds_head = 0;
  double sparsity() const {
    return reglu_total > 0 ? static_cast<double>(reglu_skipped) / reglu_total : 0.0;
  }
};

class Engine {
 public:
  // Called once per layer per step, after routing and before attention, with the distinct
  // experts the layer will use in this step (sorted). A no-op by default; the place where
  // expert reads are started.
  using PrefetchHook = std::function<void(int layer, absl::Span<const int> experts)>;

  static absl::StatusOr<std::unique_ptr<Engine>> Load(const std::string& path,
                                                      const EngineOptions& options);
  static absl::StatusOr<std::unique_ptr<Engine>> Load(const std::string& path) {
    return Load(path, EngineOptions());
  }
  // Takes ownership of an opened file.
  static absl::StatusOr<std::unique_ptr<Engine>> FromFile(std::unique_ptr<ModelFile> file,
                                                          const EngineOptions& options);
  static absl::StatusOr<std::unique_ptr<Engine>> FromFile(std::unique_ptr<ModelFile> file) {
    return FromFile(std::move(file), EngineOptions());
  }
  ~Engine();

  // Appends `token` at position position() and returns the logits [V] for the next token.
  // InvalidArgument for a token outside [0, V); OutOfRange when the context is full
  // (position() == max_position_embeddings). On error the state is unchanged.
  absl::StatusOr<std::vector<float>> Forward(int32_t token);
  // Runs every token (checked up front against the vocabulary and the context) with the
  // batched prefill; returns the logits after the last one. Empty `tokens` is InvalidArgument.
  absl::StatusOr<std::vector<float>> Prefill(absl::Span<const int32_t> tokens);
  // As Prefill, but writes the logits of every position: logits_TV is resized to [T, V]
  // (row t predicts the token after tokens[t]). For perplexity and logit dumps.
  absl::Status PrefillAll(absl::Span<const int32_t> tokens, std::vector<float>* logits_TV);
  // Forgets the context (position back to 0). Stats are kept; see ResetStats.
  void Reset();
  int position() const;

  // ---- Many conversations at once (st-server). Every call checks that `seq` came from this
  // engine (InvalidArgument otherwise) and, as above, leaves a sequence unchanged on error.
  // An empty conversation with its own KV cache.
  std::unique_ptr<Sequence> NewSequence() const;
  // Prefill into `seq`: appends `tokens` (checked against the vocabulary and the context) and
  // returns the logits after the last one.
  absl::StatusOr<std::vector<float>> Prefill(Sequence* seq, absl::Span<const int32_t> tokens);
  // One decode step for B distinct sequences: tokens[b] is appended to seqs[b] and row b of
  // logits_BV (resized to [B, V]) predicts what follows it. 1 <= B <= max_batch(). The logits
  // equal B separate Forward steps' within float rounding (the batch takes the grouped MoE).
  absl::Status DecodeBatch(absl::Span<Sequence* const> seqs, absl::Span<const int32_t> tokens,
                           std::vector<float>* logits_BV);
  // Keeps the first n positions of `seq` (0 <= n <= position()) to continue from there, e.g.
  // a conversation's next turn sharing a prefix with the last. Returns the positions kept: n,
  // or 0 when a sliding-window layer's ring no longer holds the keys position n would attend.
  int Truncate(Sequence* seq, int n);
  // The most tokens one step takes (DecodeBatch's B, a prefill chunk).
  int max_batch() const;
  int max_context() const { return max_context_; }
  int threads() const;
  const ModelConfig& config() const { return cfg_; }
  const ModelFile& file() const { return *file_; }
  const EngineOptions& options() const { return opt_; }
  const EngineStats& stats() const { return stats_; }
  void ResetStats() { stats_ = EngineStats(); }
  void set_prefetch_hook(PrefetchHook hook) { prefetch_ = std::move(hook); }
  // Bytes of weights one decode step reads without sparsity: resident matrices used per token
  // (attention, router, LM head, one embedding row) plus k experts per layer.
  int64_t DenseDecodeWeightBytes() const;
  // A one-line description of the kernels in use ("avx2+fma+f16c" or "scalar").
  std::string KernelName() const;
  // The memory-budget mode's expert cache (nullptr without a budget) and its plan.
  const ExpertCache* expert_cache() const { return cache_.get(); }
  ExpertCache* mutable_expert_cache() { return cache_.get(); }
  const MemoryPlan& memory_plan() const { return plan_; }
  // How often each (layer, expert) was chosen since load (or ResetRouting): [layers * experts].
  RoutingProfile routing() const;
  void ResetRouting();

  struct Impl;  // engine_impl.h (weights, forward state, kernels, pool)

 private:
  Engine() = default;
  absl::Status CheckTokens(const Sequence& seq, absl::Span<const int32_t> tokens) const;
  absl::Status CheckOwner(const Sequence* seq) const;

  // ---- The forward pass (engine.cpp), one function per stage of smallthinker.md section 3.
  // Each works on the step held in impl_->fs (forward_state.h: T tokens, token t of sequence
  // seq_T[t] at that sequence's next free position).
  // Run: `tokens` (already checked) of one sequence in steps of prefill_chunk. Writes the last
  // token's logits [V], or every token's [T, V] when all_logits.
  absl::Status Run(Sequence* seq, absl::Span<const int32_t> tokens, float* logits, bool all_logits);
  // One step: Embed, then per layer Route -> StartExpertReads -> Attention -> Moe, then Head
  // (logits of every token when all_rows, else of the last); advances the sequences.
  absl::Status Step(absl::Span<Sequence* const> seq_T, absl::Span<const int32_t> tokens,
                    float* logits, bool all_rows);
  // x_TH = embedding rows; positions, KV caches and RoPE angles of the step's tokens.
  void Embed(absl::Span<Sequence* const> seq_T, absl::Span<const int32_t> tokens);
  void Route(int layer);             // router on the raw x: top-k experts and their weights
  void StartExpertReads(int layer);  // the prefetch hook and the cache's reads, before attention
  void Attention(int layer);         // x += Wo softmax(q k^T / sqrt(D) + mask) v
  absl::Status Moe(int layer);       // x += sum_j w_j Down_j(relu(Gate_j h) * Up_j h)
  void Head(float* logits, bool all_rows);  // final RMSNorm and LM head

  // ---- The MoE paths (moe.cpp).
  // One token: its k experts in memory, or streamed from the cache (MoeDecodeStreamed).
  absl::Status MoeDecode(int layer);
  // The gates of the routed experts listed in `which` (indices into the token's k choices),
  // then the sparse up/down of all k once every gate is known.
  void MoeGates(absl::Span<const int> which);
  void MoeUpDown();
  absl::Status MoeDecodeStreamed(int layer);  // the budget mode: experts as they arrive
  // A chunk: tokens grouped by expert; every expert in memory, or in waves that fit the cache.
  absl::Status MoeGrouped(int layer);
  void RunGroups(absl::Span<const int> experts, const uint8_t* hx, size_t xs);
  // A group of at most kSmallGroup tokens, each run as the decode path runs one.
  static constexpr int kSmallGroup = 2;
  // Groups up to this size project down with one fused AXPY per token (else: each live row
  // dequantized once for the whole group).
  static constexpr int kFusedDownGroup = 8;
  void SmallGroup(int e, int M, size_t xs, int a0, Scratch* s);  // e: experts_E index

  // ---- The memory-budget plan (budget_plan.cpp).
  absl::Status SetUpBudget(const std::string& path);
  absl::Status PinHotExperts();

  std::unique_ptr<ModelFile> file_;
  std::unique_ptr<ExpertCache> cache_;  // memory-budget mode only
  MemoryPlan plan_;
  int max_context_ = 0;
  std::vector<int64_t> routing_;  // [layers * experts] choices counted
  EngineOptions opt_;
  ModelConfig cfg_;
  std::unique_ptr<Sequence> main_;  // the context of Forward / Prefill / Reset
  EngineStats stats_;
  PrefetchHook prefetch_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace st
