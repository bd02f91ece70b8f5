// ForwardState: allocation of a step's buffers for the largest step, and their measure; the
// self-invalidating Q8_0 rows of Acts; the KV cache's growth.
#include "infer/runtime/forward_state.h"

#include <algorithm>

namespace st {

void Acts::Allocate(int max_T, int64_t n, bool q8) {
  max_T_ = max_T;
  n_ = n;
  T_ = 0;
  f_.assign(static_cast<size_t>(max_T) * n, 0.f);
  q_.assign(q8 ? static_cast<size_t>(max_T) * Q8ActRowBytes(n) : 0, 0);
  ++version_;
}

const uint8_t* Acts::Rows(DType wt, const Kernels& k, ThreadPool& pool) {
  if (!UsesQ8Activations(wt)) return reinterpret_cast<const uint8_t*>(f_.data());
  const size_t rb = Q8ActRowBytes(n_);
  ST_CHECK(q_.size() >= static_cast<size_t>(T_) * rb)
      << "Q8_0 rows of these activations were not allocated (ForwardDims)";
  if (q_version_ != version_) {
    pool.Run(T_,
             [&](int64_t t, int) { k.prepare_q8_row(f_.data() + t * n_, n_, q_.data() + t * rb); });
    q_version_ = version_;
  }
  return q_.data();
}

void KvCache::Init(bool use_f16, int64_t w, int win, int64_t ring) {
  f16 = use_f16;
  width = w;
  window = win;
  slots = 0;
  if (window > 0) Grow(ring);
}

void KvCache::Grow(int64_t n) {
  if (n <= slots) return;
  slots = n;
  const size_t sz = static_cast<size_t>(n * width);
  if (f16) {
    k16_SGD.resize(sz);
    v16_SGD.resize(sz);
  } else {
    k32_SGD.resize(sz);
    v32_SGD.resize(sz);
  }
}

void KvCache::Clear() {
  if (window == 0) {
    slots = 0;
    k16_SGD.clear();
    v16_SGD.clear();
    k32_SGD.clear();
    v32_SGD.clear();
  }
}

void ForwardState::Allocate(const ModelConfig& c, const ForwardDims& d) {
  const size_t T = static_cast<size_t>(d.max_T), H = c.hidden_size;
  const size_t Q = c.q_width(), KV = c.kv_width(), I = c.head_dim / 2;
  const size_t E = c.moe_num_primary_experts, K = c.moe_num_active_primary_experts,
               F = c.moe_ffn_hidden_size, A = T * K;
  max_T_ = d.max_T;
  H_ = H;
  Q_ = Q;
  KV_ = KV;
  I_ = I;
  E_ = E;
  K_ = K;
  x_TH.Allocate(d.max_T, c.hidden_size, false);  // the router reads f32 rows
  h_TH.Allocate(d.max_T, c.hidden_size, d.h_q8);
  att_TND.Allocate(d.max_T, c.q_width(), d.att_q8);
  cos_TI.assign(T * I, 0.f);
  sin_TI.assign(T * I, 0.f);
  q_TND.assign(T * Q, 0.f);
  k_TGD.assign(T * KV, 0.f);
  v_TGD.assign(T * KV, 0.f);
  o_TH.assign(T * H, 0.f);
  y_TH.assign(T * H, 0.f);

  router_TE.assign(T * E, 0.f);
  sel_TK.assign(T * K, 0);
  pos_T.assign(T, 0);
  kv_T.assign(T, nullptr);
  wts_TK.assign(T * K, 0.f);
  order_E.assign(E, 0);
  chosen_X.assign(std::max(A, E), 0);
  chosen_X.clear();

  experts_K.assign(K, ExpertMats());
  choices_K.resize(K);
  for (size_t i = 0; i < K; ++i) choices_K[i] = static_cast<int>(i);
  g_KF.assign(K * F, 0.f);
  const size_t Z = K * F, C = std::max<size_t>(1, (Z + kDownChunk - 1) / kDownChunk);
  live_expert_Z.assign(Z, 0);
  live_expert_Z.clear();
  live_row_Z.assign(Z, 0);
  live_row_Z.clear();
  live_ptr_2Z.assign(2 * Z, nullptr);
  live_a_Z.assign(Z, 0.f);
  y_part_CH.assign(C * H, 0.f);

  experts_E.assign(E, ExpertMats());
  group_begin_E1.assign(E + 1, 0);
  group_token_A.assign(A, 0);
  group_weight_A.assign(A, 0.f);
  assign_of_TK.assign(A, 0);
  out_AH.assign(A * H, 0.f);
  group_live_E.assign(E, 0);
  group_skipped_E.assign(E, 0);

  scratch_Th.resize(d.threads);
  for (Scratch& s : scratch_Th) {
    s.xq_MB.assign(T * d.group_row_bytes, 0);
    s.g_MF.assign(T * F, 0.f);
    s.u_MU.assign(T * F, 0.f);
    s.row_H.assign(H, 0.f);
    s.scores_P.assign(static_cast<size_t>(d.max_context), 0.f);
    s.live_U.assign(F, 0);
    s.live_U.clear();
    s.rows_2F.assign(2 * F, nullptr);
    s.a_F.assign(F, 0.f);
  }
}

void ForwardState::BeginStep(int t) {
  ST_CHECK(t >= 1 && t <= max_T_) << "T=" << t << " max_T=" << max_T_;
  T = t;
  const size_t n = static_cast<size_t>(t);
  pos_T.resize(n);
  kv_T.resize(n);
  x_TH.Resize(t);
  cos_TI.resize(n * I_);
  sin_TI.resize(n * I_);
  q_TND.resize(n * Q_);
  k_TGD.resize(n * KV_);
  v_TGD.resize(n * KV_);
  o_TH.resize(n * H_);
  y_TH.resize(n * H_);
  router_TE.resize(n * E_);
  sel_TK.resize(n * K_);
  wts_TK.resize(n * K_);
}

namespace {
template <typename V>
int64_t Bytes(const V& v) {
  return static_cast<int64_t>(v.capacity() * sizeof(typename V::value_type));
}
}  // namespace

int64_t ForwardState::bytes() const {
  int64_t b = x_TH.bytes() + h_TH.bytes() + att_TND.bytes();
  for (int64_t n :
       {Bytes(cos_TI),       Bytes(sin_TI),         Bytes(q_TND),         Bytes(k_TGD),
        Bytes(v_TGD),        Bytes(o_TH),           Bytes(y_TH),          Bytes(router_TE),
        Bytes(sel_TK),       Bytes(wts_TK),         Bytes(order_E),       Bytes(chosen_X),
        Bytes(experts_K),    Bytes(choices_K),      Bytes(g_KF),          Bytes(live_expert_Z),
        Bytes(live_row_Z),   Bytes(live_ptr_2Z),    Bytes(live_a_Z),      Bytes(y_part_CH),
        Bytes(experts_E),    Bytes(group_begin_E1), Bytes(group_token_A), Bytes(group_weight_A),
        Bytes(assign_of_TK), Bytes(out_AH),         Bytes(group_live_E),  Bytes(group_skipped_E),
        Bytes(scratch_Th),   Bytes(pos_T),          Bytes(kv_T)}) {
    b += n;
  }
  for (const Scratch& s : scratch_Th) {
    b += Bytes(s.xq_MB) + Bytes(s.g_MF) + Bytes(s.u_MU) + Bytes(s.row_H) + Bytes(s.scores_P) +
         Bytes(s.live_U) + Bytes(s.rows_2F) + Bytes(s.a_F);
  }
  return b;
}

}  // namespace st
