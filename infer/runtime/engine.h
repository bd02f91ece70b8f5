// The torch-free CPU runtime, first slice: one token at a time (decode), f32 compute,
// single-threaded. Resident weights are dequantized to f32 once at Load; expert rows are
// dequantized on use, straight from the mapped file, and only the rows ReGLU needs.
//
// Per layer (smallthinker.md section 3):
//   route (raw residual) -> prefetch hook(chosen experts) -> attention (KV cache) -> MoE.
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
#include "model/config.h"

namespace st {

struct EngineStats {
  int64_t tokens = 0;         // tokens run through Forward
  int64_t reglu_total = 0;    // expert neurons evaluated (gate rows)
  int64_t reglu_skipped = 0;  // of those, relu(gate) == 0: up and down_t rows skipped
  double sparsity() const {
    return reglu_total > 0 ? static_cast<double>(reglu_skipped) / reglu_total : 0.0;
  }
};

class Engine {
 public:
  // Called once per layer per token, after routing and before attention, with the experts
  // the layer will use. A no-op by default; the place where expert reads will be started.
  using PrefetchHook = std::function<void(int layer, absl::Span<const int> experts)>;

  static absl::StatusOr<std::unique_ptr<Engine>> Load(const std::string& path);
  // Takes ownership of an opened file.
  static absl::StatusOr<std::unique_ptr<Engine>> FromFile(std::unique_ptr<ModelFile> file);

  // Appends `token` at position position() and returns the logits [V] for the next token.
  // InvalidArgument for a token outside [0, V); OutOfRange when the context is full
  // (position() == max_position_embeddings). On error the state is unchanged.
  absl::StatusOr<std::vector<float>> Forward(int32_t token);
  // Forward over every token (checked up front against the context); returns the logits after
  // the last one. Empty `tokens` is InvalidArgument.
  absl::StatusOr<std::vector<float>> Prefill(absl::Span<const int32_t> tokens);
  // Forgets the context (position back to 0). Stats are kept; see ResetStats.
  void Reset();

  int position() const { return pos_; }
  int max_context() const { return cfg_.max_position_embeddings; }
  const ModelConfig& config() const { return cfg_; }
  const ModelFile& file() const { return *file_; }
  const EngineStats& stats() const { return stats_; }
  void ResetStats() { stats_ = EngineStats(); }
  void set_prefetch_hook(PrefetchHook hook) { prefetch_ = std::move(hook); }

 private:
  struct Layer {
    std::vector<float> attn_norm, ffn_norm;  // [H]
    std::vector<float> wq, wk, wv, wo, router;  // row-major as in the file
    bool rope = false;
    int window = 0;     // 0 = global
    int capacity = 0;   // KV slots: window for sliding layers, grows for global ones
    std::vector<float> k_cache, v_cache;  // [slots, kv_width]
    std::vector<ExpertExtent> experts;    // [E]
  };

  Engine() = default;
  absl::Status Init();
  void Attention(Layer& L, const float* h, float* out);
  void Expert(const ExpertExtent& ex, const float* h, float w, float* y);
  void Rope(float* x, int n_heads) const;

  std::unique_ptr<ModelFile> file_;
  ModelConfig cfg_;
  std::vector<float> token_embd_, output_norm_, output_;  // output_ empty when tied
  std::vector<Layer> layers_;
  std::vector<float> rope_cos_, rope_sin_;  // [D/2] for the current position
  int pos_ = 0;
  EngineStats stats_;
  PrefetchHook prefetch_;
  // Scratch.
  std::vector<float> x_, h_, q_, k_, v_, att_, o_, scores_, logits_, row_, gate_, act_, y_;
};

}  // namespace st
