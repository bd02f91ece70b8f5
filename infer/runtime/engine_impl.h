// Engine::Impl: what the engine's files (engine.cpp, moe.cpp, budget_plan.cpp) share: the
// kernel table, the thread pool, the weights as views into the mapping, the forward state, and
// the batched matrix product. Internal to infer/runtime/. Shape names: forward_state.h.
#pragma once

#include <initializer_list>
#include <memory>
#include <vector>

#include "infer/quant/kernels.h"
#include "infer/runtime/engine.h"
#include "infer/runtime/forward_state.h"
#include "infer/runtime/thread_pool.h"

namespace st {

// One decoder layer's weights (smallthinker.md section 3) and the shape of its KV cache (each
// Sequence holds its own).
struct LayerW {
  std::vector<float> attn_norm, ffn_norm;  // [H]
  std::vector<float> router_f32;           // [E, H]
  Mat router;                              // view of router_f32
  Mat q, k, v, o;                          // [N*D, H], [G*D, H], [G*D, H], [H, N*D]
  bool rope = false;
  int window = 0;    // 0 = global attention
  int64_t ring = 0;  // KV slots of a sliding-window layer: window + prefill_chunk (<= context)
  std::vector<ExpertMats> experts;          // [E] (budget mode: not readable, see ExpertMats::At)
  std::vector<const uint8_t*> expert_base;  // [E] where each extent starts in the file image
};

// out = RMSNorm(x rows [first_row, first_row + rows)) with weight w: out->Resize(rows).
void RmsNormRows(const Acts& x, int first_row, int rows, const std::vector<float>& w, float eps,
                 Acts* out);

struct Engine::Impl {
  static constexpr int kTokenBlock = 16;  // tokens whose activations stay in L1 while rows stream

  const Kernels* kern = nullptr;
  std::unique_ptr<ThreadPool> pool;
  Mat token_embd, lm_head;         // [V, H]
  std::vector<float> output_norm;  // [H]
  std::vector<LayerW> layers;
  std::vector<double> inv_freq;  // [I] RoPE inverse frequencies
  ForwardState fs;

  // Rows of `a` as kernels take them for weights of type wt (quantized now if stale).
  const uint8_t* Rows(Acts& a, DType wt) { return a.Rows(wt, *kern, *pool); }

  // One product of MatMul: y[t * ldy + r] = W[r] . x_t for rows [r0, r1) (r1 = 0: all rows).
  struct Job {
    const Mat* w;
    Acts* x;
    float* y;
    int64_t ldy;
    int64_t r0, r1;
  };
  // Y = W X for up to 8 matrices in one parallel region over T tokens: rows split into tasks,
  // tokens in blocks of kTokenBlock so a block's activations stay in L1 while the rows stream
  // past; T == 1 takes the GEMV kernel.
  void MatMul(std::initializer_list<Job> jobs, int T);

  // Sizes the forward state for this engine's shapes and options (at load).
  void AllocateForwardState(const ModelConfig& c, int prefill_chunk, int max_context);
};

}  // namespace st
