// The MoE stage of a decoder layer (smallthinker.md section 3, after attention):
//   h = RMSNorm_post(x);  y = sum_j w_j * Down_j(relu(Gate_j h) * Up_j h);  x += y
// with the experts the pre-attention router chose. Decode (one token) computes the gate rows
// densely and only the live up / down_t rows (sparse ReGLU); prefill groups the chunk's tokens
// by expert and runs each expert once on its group. In the memory-budget mode the experts come
// from the ExpertCache as their reads complete. Shape names: forward_state.h.
#include <algorithm>
#include <numeric>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "infer/runtime/engine.h"
#include "infer/runtime/engine_impl.h"

namespace st {

absl::Status Engine::Moe(int l) {
  Impl& m = *impl_;
  ForwardState& s = m.fs;
  LayerW& L = m.layers[l];
  const int64_t H = cfg_.hidden_size;
  const int T = s.T, K = cfg_.moe_num_active_primary_experts, F = cfg_.moe_ffn_hidden_size;
  RmsNormRows(s.x_TH, 0, T, L.ffn_norm, static_cast<float>(cfg_.rms_norm_eps), &s.h_TH);
  // Without prefetch the reads start only now, after attention (the baseline).
  if (cache_ && !opt_.prefetch) cache_->Prefetch(l, s.chosen_X);
  if (T == 1) {
    ST_RETURN_IF_ERROR(MoeDecode(l));
  } else {
    ST_RETURN_IF_ERROR(MoeGrouped(l));
  }
  float* x = s.x_TH.Write();
  for (size_t i = 0; i < static_cast<size_t>(T) * H; ++i) x[i] += s.y_TH[i];
  stats_.reglu_total += static_cast<int64_t>(T) * K * F;
  stats_.expert_calls += static_cast<int64_t>(T) * K;
  return absl::OkStatus();
}

// One token: its k experts from memory, or from the cache as they arrive.
absl::Status Engine::MoeDecode(int l) {
  Impl& m = *impl_;
  ForwardState& s = m.fs;
  const LayerW& L = m.layers[l];
  const int K = cfg_.moe_num_active_primary_experts;
  if (cache_) return MoeDecodeStreamed(l);
  for (int i = 0; i < K; ++i) s.experts_K[i] = L.experts[s.sel_TK[i]];
  MoeGates(s.choices_K);
  MoeUpDown();
  return absl::OkStatus();
}

// Decode MoE, step 1: the gate rows of the listed experts (indices into the token's k
// choices), densely, into g_KF.
void Engine::MoeGates(absl::Span<const int> which) {
  Impl& m = *impl_;
  ForwardState& s = m.fs;
  const Kernels& k = *m.kern;
  const int64_t H = cfg_.hidden_size;
  const int F = cfg_.moe_ffn_hidden_size;
  const int n_exp = static_cast<int>(which.size());
  if (n_exp == 0) return;
  const uint8_t* hx = m.Rows(s.h_TH, s.experts_K[which[0]].gate.t);  // one type for all experts
  m.pool->For(static_cast<int64_t>(n_exp) * F, 32, [&](int64_t b, int64_t e, int) {
    while (b < e) {  // [b, e) may span experts: one GEMV per expert segment
      const int i = which[static_cast<int>(b / F)];
      const int64_t r0 = b % F, n = std::min<int64_t>(e - b, F - r0);
      const Mat& W = s.experts_K[i].gate;
      k.gemv(W.t, W.row(r0), W.row_bytes, n, hx, H, &s.g_KF[static_cast<size_t>(i) * F + r0]);
      b += n;
    }
  });
}

// Step 2, once every gate is known: up rows and down_t rows of the live neurons only, fused.
// The live (expert, neuron) list, in routing order, is cut into fixed chunks of kDownChunk;
// each chunk's up dots (a scattered-row GEMV) scale its down_t AXPYs into the chunk's own
// partial sum, and the partials are added in order: the result does not depend on which thread
// ran which chunk, nor on the order the experts arrived in (the budget mode).
void Engine::MoeUpDown() {
  Impl& m = *impl_;
  ForwardState& s = m.fs;
  const Kernels& k = *m.kern;
  const int64_t H = cfg_.hidden_size;
  const int K = cfg_.moe_num_active_primary_experts, F = cfg_.moe_ffn_hidden_size;
  constexpr int64_t kDownChunk = ForwardState::kDownChunk;
  const float* wts = s.wts_TK.data();
  s.live_expert_Z.clear();
  s.live_row_Z.clear();
  for (int i = 0; i < K; ++i) {
    for (int r = 0; r < F; ++r) {
      if (s.g_KF[static_cast<size_t>(i) * F + r] > 0.f) {
        s.live_expert_Z.push_back(i);
        s.live_row_Z.push_back(r);
      }
    }
  }
  const int64_t Z = static_cast<int64_t>(s.live_row_Z.size());
  const int64_t C = (Z + kDownChunk - 1) / kDownChunk;
  s.y_part_CH.assign(static_cast<size_t>(std::max<int64_t>(C, 1)) * H, 0.f);
  const DType ut = s.experts_K[0].up.t, dt = s.experts_K[0].down_t.t;
  const uint8_t* hx = m.Rows(s.h_TH, ut);
  m.pool->Run(C, [&](int64_t c, int) {
    const int64_t b = c * kDownChunk, e = std::min(Z, b + kDownChunk);
    float* yp = s.y_part_CH.data() + static_cast<size_t>(c) * H;
    const uint8_t** up = s.live_ptr_2Z.data() + b;
    const uint8_t** down = s.live_ptr_2Z.data() + Z + b;
    float* a = s.live_a_Z.data() + b;
    for (int64_t j = b; j < e; ++j) {
      const ExpertMats& X = s.experts_K[s.live_expert_Z[j]];
      up[j - b] = X.up.row(s.live_row_Z[j]);
      down[j - b] = X.down_t.row(s.live_row_Z[j]);
    }
    k.gemv_rows(ut, up, e - b, hx, H, a);
    for (int64_t j = b; j < e; ++j) {
      const int i = s.live_expert_Z[j];
      a[j - b] *= s.g_KF[static_cast<size_t>(i) * F + s.live_row_Z[j]] * wts[i];
    }
    k.axpy_rows(dt, down, a, e - b, H, yp);
  });
  float* y = s.y_TH.data();
  std::fill_n(y, H, 0.f);
  for (int64_t c = 0; c < C; ++c) {
    const float* yp = s.y_part_CH.data() + static_cast<size_t>(c) * H;
    for (int64_t i = 0; i < H; ++i) y[i] += yp[i];
  }
  const ExpertMats& x0 = s.experts_K[0];
  stats_.reglu_skipped += static_cast<int64_t>(K) * F - Z;
  stats_.weight_bytes +=
      K * x0.gate.bytes() + Z * static_cast<int64_t>(x0.up.row_bytes + x0.down_t.row_bytes);
}

// Budget mode, one token: the gates of the experts already cached first, then of each other
// one as its read completes (waiting for the first still in flight when none is ready); the
// up/down step once all k are in. Same arithmetic as in memory, so the same logits.
absl::Status Engine::MoeDecodeStreamed(int l) {
  Impl& m = *impl_;
  ForwardState& s = m.fs;
  const LayerW& L = m.layers[l];
  const int K = cfg_.moe_num_active_primary_experts;
  std::vector<int> pending(K), ready, held;
  std::iota(pending.begin(), pending.end(), 0);
  auto release = [&] {
    for (int i : held) cache_->Release(l, s.sel_TK[i]);
  };
  while (!pending.empty()) {
    ready.clear();
    for (int i : pending) {
      if (cache_->Ready(l, s.sel_TK[i])) ready.push_back(i);
    }
    if (ready.empty()) ready.push_back(pending[0]);  // Acquire waits for (or reads) it
    for (int i : ready) {
      const int e = s.sel_TK[i];
      absl::StatusOr<const uint8_t*> p = cache_->Acquire(l, e);
      if (!p.ok()) {
        release();
        return p.status();
      }
      held.push_back(i);
      s.experts_K[i] = L.experts[e].At(*p, L.expert_base[e]);
    }
    MoeGates(ready);
    pending.erase(std::remove_if(pending.begin(), pending.end(),
                                 [&](int i) {
                                   return std::find(ready.begin(), ready.end(), i) != ready.end();
                                 }),
                  pending.end());
  }
  MoeUpDown();
  release();
  return absl::OkStatus();
}

// Prefill MoE (T tokens): assignments grouped by expert; each expert runs once on its group
// (gate rows for every token, up and down_t rows where any token of the group is live; the
// down AXPY skips tokens whose neuron is zero). Experts run in parallel; outputs are summed per
// token in routing order afterwards.
absl::Status Engine::MoeGrouped(int l) {
  Impl& m = *impl_;
  ForwardState& s = m.fs;
  LayerW& L = m.layers[l];
  const int64_t H = cfg_.hidden_size;
  const int T = s.T, E = cfg_.moe_num_primary_experts, K = cfg_.moe_num_active_primary_experts;
  const int A = T * K;
  s.group_begin_E1.assign(E + 1, 0);
  for (int a = 0; a < A; ++a) ++s.group_begin_E1[s.sel_TK[a] + 1];
  for (int e = 0; e < E; ++e) s.group_begin_E1[e + 1] += s.group_begin_E1[e];
  s.group_token_A.resize(A);
  s.group_weight_A.resize(A);
  s.assign_of_TK.resize(A);
  {
    std::vector<int32_t> fill(s.group_begin_E1.begin(), s.group_begin_E1.end() - 1);
    for (int a = 0; a < A; ++a) {  // a = t * K + i, in token order within each expert
      const int idx = fill[s.sel_TK[a]]++;
      s.group_token_A[idx] = a / K;
      s.group_weight_A[idx] = s.wts_TK[a];
      s.assign_of_TK[a] = idx;
    }
  }
  s.out_AH.resize(static_cast<size_t>(A) * H);
  s.group_live_E.assign(E, 0);
  s.group_skipped_E.assign(E, 0);
  const DType gt = L.experts[0].gate.t;
  const uint8_t* hx = m.Rows(s.h_TH, gt);  // quantized once, outside the parallel region
  const size_t xs = ActivationRowBytes(gt, H);
  // Larger groups first, so the dynamic schedule ends balanced.
  std::vector<int> order(E);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    const int na = s.group_begin_E1[a + 1] - s.group_begin_E1[a];
    const int nb = s.group_begin_E1[b + 1] - s.group_begin_E1[b];
    return na > nb || (na == nb && a < b);
  });
  while (!order.empty() && s.group_begin_E1[order.back() + 1] == s.group_begin_E1[order.back()]) {
    order.pop_back();  // experts no token chose
  }
  if (!cache_) {
    for (int e : order) s.experts_E[e] = L.experts[e];
    RunGroups(order, hx, xs);
  } else {
    // Experts already cached or in flight first (their slots must not be taken by a wave
    // before they are used), then waves of experts that fit the cache beside the pinned slots (at
    // most half of the rest, so the next wave's reads can run during this one).
    std::stable_partition(order.begin(), order.end(),
                          [&](int e) { return cache_->Contains(l, e); });
    const int64_t room = std::max<int64_t>(1, (cache_->slots() - cache_->pinned()) / 2);
    for (size_t w0 = 0; w0 < order.size(); w0 += room) {
      const size_t w1 = std::min(order.size(), w0 + static_cast<size_t>(room));
      const std::vector<int> wave(order.begin() + w0, order.begin() + w1);
      if (w1 < order.size()) {  // start the next wave's reads
        const size_t w2 = std::min(order.size(), w1 + static_cast<size_t>(room));
        std::vector<int> next(order.begin() + w1, order.begin() + w2);
        std::sort(next.begin(), next.end());
        cache_->Prefetch(l, next);
      }
      for (size_t j = 0; j < wave.size(); ++j) {
        absl::StatusOr<const uint8_t*> p = cache_->Acquire(l, wave[j]);
        if (!p.ok()) {
          for (size_t q = 0; q < j; ++q) cache_->Release(l, wave[q]);
          return p.status();
        }
        s.experts_E[wave[j]] = L.experts[wave[j]].At(*p, L.expert_base[wave[j]]);
      }
      RunGroups(wave, hx, xs);
      for (int e : wave) cache_->Release(l, e);
    }
  }
  // Sum each token's k expert outputs in routing order.
  m.pool->For(T, 1, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) {
      float* y = s.y_TH.data() + static_cast<size_t>(t) * H;
      std::fill(y, y + H, 0.f);
      for (int i = 0; i < K; ++i) {
        const float* src = s.out_AH.data() + static_cast<size_t>(s.assign_of_TK[t * K + i]) * H;
        for (int64_t c = 0; c < H; ++c) y[c] += src[c];
      }
    }
  });
  for (int e = 0; e < E; ++e) {
    if (s.group_begin_E1[e + 1] == s.group_begin_E1[e]) continue;
    const ExpertMats& X = L.experts[e];
    stats_.reglu_skipped += s.group_skipped_E[e];
    stats_.weight_bytes +=
        X.gate.bytes() +
        s.group_live_E[e] * static_cast<int64_t>(X.up.row_bytes + X.down_t.row_bytes);
  }
  return absl::OkStatus();
}

// A group of M <= kSmallGroup tokens (batched decode: B conversations rarely share an expert):
// each token as MoeUpDown runs one, the GEMV over the gate rows, then the up and down_t rows of
// its live neurons only, fused (gemv_rows, axpy_rows). The group's other tokens find the
// expert's rows in cache, so memory still reads them once. Sets the group's live rows (their
// union) and skipped pairs.
void Engine::SmallGroup(int e, int M, size_t xs, int a0, Scratch* s) {
  ForwardState& fs = impl_->fs;
  const Kernels& k = *impl_->kern;
  const int64_t H = cfg_.hidden_size;
  const int F = cfg_.moe_ffn_hidden_size;
  const ExpertMats& X = fs.experts_E[e];
  s->g_MF.resize(static_cast<size_t>(M) * F);
  int64_t skipped = 0;
  for (int j = 0; j < M; ++j) {
    const uint8_t* xj = s->xq_MB.data() + static_cast<size_t>(j) * xs;
    float* g = s->g_MF.data() + static_cast<size_t>(j) * F;
    k.gemv(X.gate.t, X.gate.row(0), X.gate.row_bytes, F, xj, H, g);
    s->live_U.clear();
    for (int r = 0; r < F; ++r) {
      if (g[r] > 0.f) s->live_U.push_back(r);
    }
    const int64_t U = static_cast<int64_t>(s->live_U.size());
    skipped += F - U;
    s->rows_2F.resize(static_cast<size_t>(2 * U));
    s->a_F.resize(static_cast<size_t>(U));
    for (int64_t u = 0; u < U; ++u) {
      s->rows_2F[u] = X.up.row(s->live_U[u]);
      s->rows_2F[U + u] = X.down_t.row(s->live_U[u]);
    }
    k.gemv_rows(X.up.t, s->rows_2F.data(), U, xj, H, s->a_F.data());
    const float w = fs.group_weight_A[a0 + j];
    for (int64_t u = 0; u < U; ++u) s->a_F[u] *= g[s->live_U[u]] * w;
    float* out = fs.out_AH.data() + static_cast<size_t>(a0 + j) * H;
    std::fill(out, out + H, 0.f);
    k.axpy_rows(X.down_t.t, s->rows_2F.data() + U, s->a_F.data(), U, H, out);
  }
  int64_t live_union = 0;
  for (int r = 0; r < F; ++r) {
    bool live = false;
    for (int j = 0; j < M && !live; ++j) live = s->g_MF[static_cast<size_t>(j) * F + r] > 0.f;
    live_union += live;
  }
  fs.group_live_E[e] = live_union;
  fs.group_skipped_E[e] = skipped;
}

// The expert groups of MoeGrouped for the listed experts (matrices in experts_E), in parallel;
// hx: the chunk's activation rows (xs bytes apart) as the expert matrices take them.
void Engine::RunGroups(absl::Span<const int> experts, const uint8_t* hx, size_t xs) {
  Impl& m = *impl_;
  ForwardState& fs = m.fs;
  const Kernels& k = *m.kern;
  const int64_t H = cfg_.hidden_size;
  const int F = cfg_.moe_ffn_hidden_size;
  constexpr int kTokenBlock = Impl::kTokenBlock;
  m.pool->Run(static_cast<int64_t>(experts.size()), [&](int64_t task, int thread) {
    const int e = experts[task];
    const int a0 = fs.group_begin_E1[e], M = fs.group_begin_E1[e + 1] - a0;
    if (M == 0) return;
    const ExpertMats& X = fs.experts_E[e];
    Scratch& s = fs.scratch_Th[thread];
    // Gather the group's activations.
    s.xq_MB.resize(static_cast<size_t>(M) * xs);
    for (int j = 0; j < M; ++j) {
      std::copy_n(hx + static_cast<size_t>(fs.group_token_A[a0 + j]) * xs, xs,
                  s.xq_MB.data() + static_cast<size_t>(j) * xs);
    }
    if (M <= kSmallGroup) {  // batched decode: each token as the decode path runs it
      SmallGroup(e, M, xs, a0, &s);
      return;
    }
    // Gate: g[j, r] for every row.
    s.g_MF.resize(static_cast<size_t>(M) * F);
    for (int j0 = 0; j0 < M; j0 += kTokenBlock) {
      const int tb = std::min(kTokenBlock, M - j0);
      for (int r = 0; r < F; ++r) {
        k.row_dots(X.gate.t, X.gate.row(r), s.xq_MB.data() + j0 * xs, xs, tb, H,
                   s.g_MF.data() + static_cast<size_t>(j0) * F + r, F);
      }
    }
    // Rows with any live token.
    s.live_U.clear();
    int64_t skipped = 0;
    for (int r = 0; r < F; ++r) {
      int live = 0;
      for (int j = 0; j < M; ++j) live += s.g_MF[static_cast<size_t>(j) * F + r] > 0.f;
      skipped += M - live;
      if (live > 0) s.live_U.push_back(r);
    }
    const int U = static_cast<int>(s.live_U.size());
    // Up for the live rows: u[j, ui].
    s.u_MU.resize(static_cast<size_t>(M) * std::max(U, 1));
    for (int j0 = 0; j0 < M; j0 += kTokenBlock) {
      const int tb = std::min(kTokenBlock, M - j0);
      for (int ui = 0; ui < U; ++ui) {
        k.row_dots(X.up.t, X.up.row(s.live_U[ui]), s.xq_MB.data() + j0 * xs, xs, tb, H,
                   s.u_MU.data() + static_cast<size_t>(j0) * U + ui, U);
      }
    }
    // Down: out[j] = sum over live rows of act[j, r] * down_t[r], zero activations skipped.
    float* out = fs.out_AH.data() + static_cast<size_t>(a0) * H;
    std::fill(out, out + static_cast<size_t>(M) * H, 0.f);
    if (M <= kFusedDownGroup) {
      // Few tokens: each its own fused AXPY over its live rows (the rows stay in cache
      // between the tokens).
      for (int j = 0; j < M; ++j) {
        int64_t n = 0;
        for (int ui = 0; ui < U; ++ui) {
          const int r = s.live_U[ui];
          const float g = s.g_MF[static_cast<size_t>(j) * F + r];
          if (!(g > 0.f)) continue;
          s.rows_2F[n] = X.down_t.row(r);
          s.a_F[n++] = g * s.u_MU[static_cast<size_t>(j) * U + ui] * fs.group_weight_A[a0 + j];
        }
        k.axpy_rows(X.down_t.t, s.rows_2F.data(), s.a_F.data(), n, H,
                    out + static_cast<size_t>(j) * H);
      }
    } else {
      // Many tokens: out_MH += a_UM^T w_UH as a small f32 product per 32 columns: the live
      // rows' slice of down_t dequantized once (w_U32), then multiplied into every token at once
      // (a dead token's activation is 0 and adds nothing).
      s.a_UM.assign(static_cast<size_t>(U) * M, 0.f);
      for (int ui = 0; ui < U; ++ui) {
        const int r = s.live_U[ui];
        for (int j = 0; j < M; ++j) {
          const float g = s.g_MF[static_cast<size_t>(j) * F + r];
          if (!(g > 0.f)) continue;
          s.a_UM[static_cast<size_t>(ui) * M + j] =
              g * s.u_MU[static_cast<size_t>(j) * U + ui] * fs.group_weight_A[a0 + j];
        }
      }
      s.w_U32.resize(static_cast<size_t>(U) * 32);
      const DType dt = X.down_t.t;
      for (int64_t c0 = 0; c0 < H; c0 += 32) {
        const int nc = static_cast<int>(std::min<int64_t>(32, H - c0));
        const int64_t off = DTypeBytes(dt, c0);
        for (int ui = 0; ui < U; ++ui) {
          k.dequant_row(dt, X.down_t.row(s.live_U[ui]) + off, nc, s.w_U32.data() + ui * 32);
        }
        k.gemm_f32_acc(s.a_UM.data(), M, M, s.w_U32.data(), 32, U, nc, out + c0, H);
      }
    }
    fs.group_live_E[e] = U;
    fs.group_skipped_E[e] = skipped;
  });
}

}  // namespace st
