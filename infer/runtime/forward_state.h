// The engine's data for one step of the forward pass: weight views into the mapping (Mat,
// ExpertMats), activations with their self-invalidating Q8_0 form (Acts), the per-layer KV
// cache (KvCache) and ForwardState, every activation and scratch buffer of a step, allocated
// once at load and measured for the memory budget. Internal to infer/runtime/.
//
// Shapes in names (as model/transformer.h; one letter, one meaning):
//   T  tokens in the step (1 for decode, up to prefill_chunk for a prefill chunk or a batched
//      decode of T sequences)
//   H  hidden size                      V  vocabulary
//   N  q heads    G  kv heads    D  head_dim    I = D / 2 RoPE frequencies
//      (q width N*D, kv width G*D: the names spell the heads out, q_TND, k_TGD)
//   E  experts    K  active experts per token    F  expert FFN width
//   A  = T*K (token, expert) assignments of a step
//   X  distinct experts the step uses (X <= E)
//   M  tokens routed to one expert in a step (its group, M <= T)
//   U  rows of one expert live for any token of its group (U <= F)
//   Z  live (expert, neuron) pairs of one decoded token (Z <= K*F)
//   C  chunks of kDownChunk live pairs (C = ceil(Z / kDownChunk))
//   R  rows of logits the head computes (1, or T for every position)
//   S  KV-cache slots: a ring of window + prefill_chunk on sliding-window layers, one per
//      position held on global layers
//   P  keys one query attends (<= window, or position + 1)
//   B  bytes: one activation row as a kernel takes it (a prepared Q8_0 row or n floats)
//   Th threads of the pool
// Threads: the engine's thread owns all of it; inside a parallel region each thread writes only
// its own rows and its own Scratch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "infer/quant/kernels.h"
#include "infer/quant/types.h"
#include "infer/runtime/thread_pool.h"
#include "model/check.h"
#include "model/config.h"

namespace st {

// A weight matrix inside the mapping: [rows, cols] of `t`, rows contiguous. Not owning.
struct Mat {
  DType t = DType::kF32;
  const uint8_t* data = nullptr;
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0;
  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes; }
  int64_t bytes() const { return rows * static_cast<int64_t>(row_bytes); }
};

// One expert: gate_FH, up_FH, down_t_FH (down stored transposed: one row per neuron).
struct ExpertMats {
  Mat gate, up, down_t;  // each [F, H]
  // The same matrices read from `extent` (a copy of the expert's file extent starting at
  // `file_extent`): the memory-budget mode's cache slots.
  ExpertMats At(const uint8_t* extent, const uint8_t* file_extent) const {
    ExpertMats m = *this;
    m.gate.data = extent + (gate.data - file_extent);
    m.up.data = extent + (up.data - file_extent);
    m.down_t.data = extent + (down_t.data - file_extent);
    return m;
  }
};

// Activations of T tokens: f32 rows [T, n] and their prepared Q8_0 rows (Q8ActRowBytes(n) bytes
// each) for the integer kernels. The Q8 rows invalidate themselves: every write goes through
// Write() / WriteRow(), which bumps a version, and Rows() re-quantizes when the rows it holds
// were made from an older version, so no reader depends on the order of calls.
// Threads: Write, WriteRow, Resize and Rows on the engine's thread; for a parallel writer take
// Write()'s pointer before the region. Rows' pointer stays valid until the next write.
class Acts {
 public:
  // Room for up to max_T rows of n (and their Q8 rows when q8); nothing later allocates.
  void Allocate(int max_T, int64_t n, bool q8);
  // T rows (T <= the allocated rows) with unspecified contents.
  void Resize(int T) {
    ST_CHECK(T >= 0 && T <= max_T_) << "T=" << T << " max_T=" << max_T_;
    T_ = T;
    ++version_;
  }
  int T() const { return T_; }
  int64_t n() const { return n_; }
  float* Write() {
    ++version_;
    return f_.data();
  }
  float* WriteRow(int t) { return Write() + static_cast<size_t>(t) * n_; }
  const float* row(int t) const { return f_.data() + static_cast<size_t>(t) * n_; }
  // The rows as kernels take them for weights of type wt (ActivationRowBytes(wt, n) apart):
  // the prepared Q8_0 rows, quantized now (in parallel on pool) if the floats changed since,
  // or the floats themselves.
  const uint8_t* Rows(DType wt, const Kernels& k, ThreadPool& pool);
  int64_t bytes() const {
    return static_cast<int64_t>(f_.capacity() * sizeof(float) + q_.capacity());
  }

 private:
  int T_ = 0, max_T_ = 0;
  int64_t n_ = 0;
  std::vector<float> f_;    // [T, n]
  std::vector<uint8_t> q_;  // [T, Q8ActRowBytes(n)]
  uint64_t version_ = 1;    // of the floats
  uint64_t q_version_ = 0;  // of the floats q_ was made from
};

// Per-layer KV cache, [S, G, D] for keys and values in fp16 or f32. Sliding-window layers keep
// a ring of window + prefill_chunk slots (a chunk's own keys never overwrite keys its earlier
// queries still need); global layers grow one slot per position.
struct KvCache {
  bool f16 = true;
  int64_t width = 0;  // G * D
  int window = 0;     // 0 = global
  int64_t slots = 0;  // S
  std::vector<uint16_t> k16_SGD, v16_SGD;
  std::vector<float> k32_SGD, v32_SGD;

  int64_t Slot(int64_t pos) const { return window > 0 ? pos % slots : pos; }
  void Init(bool use_f16, int64_t w, int win, int64_t ring);
  void Grow(int64_t n);
  void Clear();
};

// Per-thread scratch (only its thread touches it inside a parallel job).
struct Scratch {
  std::vector<uint8_t> xq_MB;   // an expert group's gathered activation rows
  std::vector<float> g_MF;      // the group's gate outputs
  std::vector<float> u_MU;      // its up outputs on the live rows
  std::vector<float> row_H;     // one dequantized down_t row
  std::vector<float> scores_P;  // one query's attention scores, then weights
  std::vector<int32_t> live_U;  // the group's live rows
  // A small group's token: its live up rows, then their down_t rows, and the up dots.
  std::vector<const uint8_t*> rows_2F;
  std::vector<float> a_F;
  // A large group's down projection: activations by live row (U x M), and 32 columns of the
  // live rows' down_t dequantized.
  std::vector<float> a_UM, w_U32;
};

// Sizes ForwardState::Allocate needs.
struct ForwardDims {
  int max_T = 0;        // min(prefill_chunk, max_context)
  int max_context = 0;  // longest attention span (scores_P)
  int threads = 0;
  bool h_q8 = false;           // some matrix reading h_TH takes Q8_0 activations
  bool att_q8 = false;         // Wo does
  size_t group_row_bytes = 0;  // B of the expert matrices' activation rows
};

// Every activation and scratch buffer of one step. Allocate sizes each for the largest step;
// Run only resizes within that room, so bytes() is what the forward pass holds.
struct ForwardState {
  static constexpr int64_t kDownChunk = 128;  // live pairs per decode down-projection task

  int T = 0;  // tokens in this step
  // Token t's position and its sequence's KV caches (one per layer): one sequence's chunk
  // (positions p, p + 1, ...) or one token of each of several sequences (a batched decode).
  std::vector<int64_t> pos_T;
  std::vector<std::vector<KvCache>*> kv_T;
  int64_t max_keys = 0;  // 1 + the largest position of the step (keys one query may attend)

  // ---- The residual stream and what attention makes of it.
  Acts x_TH;     // residual stream entering / leaving each layer
  Acts h_TH;     // RMSNorm(x): attention's input, then the MoE's; [R, H] for the head
  Acts att_TND;  // softmax(q k^T / sqrt(D)) v per head, before Wo
  std::vector<float> cos_TI, sin_TI;       // RoPE angles of the step's positions
  std::vector<float> q_TND, k_TGD, v_TGD;  // projections (q, k rotated in place)
  std::vector<float> o_TH;                 // Wo att
  std::vector<float> y_TH;                 // MoE output

  // ---- Routing (the pre-attention router on the raw x).
  std::vector<float> router_TE;  // router logits
  std::vector<int32_t> sel_TK;   // chosen experts, best first
  std::vector<float> wts_TK;     // their gate weights
  std::vector<int> order_E;      // one token's expert ranking
  std::vector<int> chosen_X;     // the step's distinct experts, sorted (room for A)

  // ---- MoE, decode (T == 1): experts_K[i] is the token's i-th choice.
  std::vector<ExpertMats> experts_K;
  std::vector<int> choices_K;               // 0, 1, ..., K - 1
  std::vector<float> g_KF;                  // gate outputs of the K experts
  std::vector<int32_t> live_expert_Z;       // live pairs: index into the K choices ...
  std::vector<int32_t> live_row_Z;          // ... and neuron
  std::vector<const uint8_t*> live_ptr_2Z;  // up rows, then down_t rows, of the live pairs
  std::vector<float> live_a_Z;              // up dot, then the AXPY coefficient
  std::vector<float> y_part_CH;             // partial down projections per chunk

  // ---- MoE, prefill (T > 1): assignments grouped by expert; experts_E[e] is expert e.
  std::vector<ExpertMats> experts_E;
  std::vector<int32_t> group_begin_E1;   // [E + 1] first assignment of each expert's group
  std::vector<int32_t> group_token_A;    // token of each grouped assignment
  std::vector<float> group_weight_A;     // its gate weight
  std::vector<int32_t> assign_of_TK;     // (token, choice) -> grouped assignment
  std::vector<float> out_AH;             // expert output of each grouped assignment
  std::vector<int64_t> group_live_E;     // U of each expert (stats)
  std::vector<int64_t> group_skipped_E;  // (token, neuron) pairs skipped (stats)

  std::vector<Scratch> scratch_Th;

  void Allocate(const ModelConfig& c, const ForwardDims& d);
  // Starts a step of T tokens (1 <= T <= max_T): sizes the [T, ...] buffers (within their room)
  // and x_TH; the caller fills pos_T, kv_T and max_keys.
  void BeginStep(int T);
  // Bytes of every buffer above (capacity, as allocated).
  int64_t bytes() const;

 private:
  int max_T_ = 0;
  size_t H_ = 0, Q_ = 0, KV_ = 0, I_ = 0, E_ = 0, K_ = 0;  // from the config
};

}  // namespace st
