#include "infer/runtime/engine.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "infer/quant/codec.h"

namespace st {
namespace {

// Dequantizes a whole resident tensor to f32, checking its shape.
absl::Status LoadResident(const ModelFile& f, const std::string& name,
                          const std::vector<int64_t>& dims, std::vector<float>* out) {
  const TensorInfo* info = f.Find(name);
  if (info == nullptr) return absl::NotFoundError(absl::StrCat("tensor '", name, "' is missing"));
  if (info->dims != dims) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has an unexpected shape"));
  }
  const int64_t n = info->num_elements();
  out->resize(n);
  DequantizeRow(info->dtype, f.TensorData(*info), n, out->data());
  return absl::OkStatus();
}

float Dot(const float* a, const float* b, int n) {
  float s = 0.f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y[r] = sum_c W[r, c] x[c], W [rows, cols].
void MatVec(const std::vector<float>& W, const float* x, int rows, int cols, float* y) {
  for (int r = 0; r < rows; ++r) y[r] = Dot(W.data() + static_cast<size_t>(r) * cols, x, cols);
}

void RmsNorm(const float* x, const std::vector<float>& w, int n, double eps, float* out) {
  float ss = 0.f;
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / n + static_cast<float>(eps));
  for (int i = 0; i < n; ++i) out[i] = w[i] * (x[i] * inv);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const std::string& path) {
  auto file = ModelFile::Open(path);
  if (!file.ok()) return file.status();
  return FromFile(std::move(*file));
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::FromFile(std::unique_ptr<ModelFile> file) {
  std::unique_ptr<Engine> e(new Engine());
  e->file_ = std::move(file);
  absl::Status s = e->Init();
  if (!s.ok()) return s;
  return e;
}

absl::Status Engine::Init() {
  cfg_ = file_->config();
  const ModelFile& f = *file_;
  const int64_t H = cfg_.hidden_size, V = cfg_.vocab_size, Q = cfg_.q_width(),
                KV = cfg_.kv_width(), E = cfg_.moe_num_primary_experts;
  if (cfg_.max_position_embeddings <= 0) {
    return absl::InvalidArgumentError("model config: max_position_embeddings must be > 0");
  }
  absl::Status s;
  if (!(s = LoadResident(f, "token_embd", {V, H}, &token_embd_)).ok()) return s;
  if (!(s = LoadResident(f, "output_norm", {H}, &output_norm_)).ok()) return s;
  if (!cfg_.tie_word_embeddings) {
    if (!(s = LoadResident(f, "output", {V, H}, &output_)).ok()) return s;
  }
  layers_.resize(cfg_.num_hidden_layers);
  for (int l = 0; l < cfg_.num_hidden_layers; ++l) {
    Layer& L = layers_[l];
    const std::string p = absl::StrCat("blk.", l, ".");
    if (!(s = LoadResident(f, p + "attn_norm", {H}, &L.attn_norm)).ok()) return s;
    if (!(s = LoadResident(f, p + "ffn_norm", {H}, &L.ffn_norm)).ok()) return s;
    if (!(s = LoadResident(f, p + "attn_q", {Q, H}, &L.wq)).ok()) return s;
    if (!(s = LoadResident(f, p + "attn_k", {KV, H}, &L.wk)).ok()) return s;
    if (!(s = LoadResident(f, p + "attn_v", {KV, H}, &L.wv)).ok()) return s;
    if (!(s = LoadResident(f, p + "attn_output", {H, Q}, &L.wo)).ok()) return s;
    if (!(s = LoadResident(f, p + "ffn_gate_inp", {E, H}, &L.router)).ok()) return s;
    L.rope = cfg_.layer_uses_rope[l];
    L.window = cfg_.layer_uses_sliding[l] ? cfg_.sliding_window_size : 0;
    L.capacity = L.window > 0 ? std::min(L.window, cfg_.max_position_embeddings) : 0;
    if (L.window > 0) {
      L.k_cache.assign(static_cast<size_t>(L.capacity) * KV, 0.f);
      L.v_cache.assign(static_cast<size_t>(L.capacity) * KV, 0.f);
    }
    for (int e = 0; e < E; ++e) {
      auto ex = f.GetExpertExtent(l, e);
      if (!ex.ok()) return ex.status();
      L.experts.push_back(*ex);
    }
  }
  const int F = cfg_.moe_ffn_hidden_size;
  x_.resize(H); h_.resize(H); q_.resize(Q); k_.resize(KV); v_.resize(KV); att_.resize(Q);
  o_.resize(H); y_.resize(H); row_.resize(H); gate_.resize(F); act_.resize(F);
  logits_.resize(E);
  rope_cos_.resize(cfg_.head_dim / 2);
  rope_sin_.resize(cfg_.head_dim / 2);
  return absl::OkStatus();
}

void Engine::Reset() {
  pos_ = 0;
  for (Layer& L : layers_) {
    if (L.window == 0) {
      L.k_cache.clear();
      L.v_cache.clear();
    }
  }
}

void Engine::Rope(float* x, int n_heads) const {
  const int D = cfg_.head_dim, half = D / 2;
  for (int n = 0; n < n_heads; ++n) {
    float* v = x + static_cast<size_t>(n) * D;
    for (int i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * rope_cos_[i] - b * rope_sin_[i];
      v[i + half] = b * rope_cos_[i] + a * rope_sin_[i];
    }
  }
}

// h: normed input [H]; out: Wo a [H]. Appends this position's k, v to the cache.
void Engine::Attention(Layer& L, const float* h, float* out) {
  const int H = cfg_.hidden_size, Q = cfg_.q_width(), KV = cfg_.kv_width(), D = cfg_.head_dim;
  const int N = cfg_.num_attention_heads, G = cfg_.num_key_value_heads, rep = N / G;
  MatVec(L.wq, h, Q, H, q_.data());
  MatVec(L.wk, h, KV, H, k_.data());
  MatVec(L.wv, h, KV, H, v_.data());
  if (L.rope) {
    Rope(q_.data(), N);
    Rope(k_.data(), G);
  }
  // Store k, v: ring slot pos % window on sliding layers, appended on global ones.
  if (L.window > 0) {
    const size_t slot = static_cast<size_t>(pos_ % L.capacity);
    std::copy(k_.begin(), k_.end(), L.k_cache.begin() + slot * KV);
    std::copy(v_.begin(), v_.end(), L.v_cache.begin() + slot * KV);
  } else {
    L.k_cache.insert(L.k_cache.end(), k_.begin(), k_.end());
    L.v_cache.insert(L.v_cache.end(), v_.begin(), v_.end());
  }
  // Keys j in [first, pos_]; sliding layers keep j iff pos_ - j < window.
  const int first = L.window > 0 ? std::max(0, pos_ - L.window + 1) : 0;
  const int T = pos_ - first + 1;
  scores_.resize(T);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  for (int n = 0; n < N; ++n) {
    const int g = n / rep;
    const float* qn = q_.data() + static_cast<size_t>(n) * D;
    float mx = -INFINITY;
    for (int t = 0; t < T; ++t) {
      const int j = first + t;
      const size_t slot = L.window > 0 ? static_cast<size_t>(j % L.capacity) : j;
      scores_[t] = Dot(qn, L.k_cache.data() + slot * KV + static_cast<size_t>(g) * D, D) * scale;
      mx = std::max(mx, scores_[t]);
    }
    float sum = 0.f;
    for (int t = 0; t < T; ++t) sum += (scores_[t] = std::exp(scores_[t] - mx));
    float* an = att_.data() + static_cast<size_t>(n) * D;
    std::fill(an, an + D, 0.f);
    for (int t = 0; t < T; ++t) {
      const int j = first + t;
      const size_t slot = L.window > 0 ? static_cast<size_t>(j % L.capacity) : j;
      const float p = scores_[t] / sum;
      const float* vj = L.v_cache.data() + slot * KV + static_cast<size_t>(g) * D;
      for (int d = 0; d < D; ++d) an[d] += p * vj[d];
    }
  }
  MatVec(L.wo, att_.data(), H, Q, out);
}

// y += w * down(relu(gate h) * up h), sparse: up and down_t rows only where relu(gate) > 0.
void Engine::Expert(const ExpertExtent& ex, const float* h, float w, float* y) {
  const int H = cfg_.hidden_size, F = cfg_.moe_ffn_hidden_size;
  const uint8_t* gate = file_->TensorData(*ex.gate);
  const uint8_t* up = file_->TensorData(*ex.up);
  const uint8_t* down = file_->TensorData(*ex.down_t);
  const size_t gb = DTypeBytes(ex.gate->dtype, H), ub = DTypeBytes(ex.up->dtype, H),
               db = DTypeBytes(ex.down_t->dtype, H);
  for (int j = 0; j < F; ++j) {
    DequantizeRow(ex.gate->dtype, gate + j * gb, H, row_.data());
    gate_[j] = std::max(0.f, Dot(row_.data(), h, H));
  }
  int64_t skipped = 0;
  for (int j = 0; j < F; ++j) {
    if (!(gate_[j] > 0.f)) {
      ++skipped;
      continue;
    }
    DequantizeRow(ex.up->dtype, up + j * ub, H, row_.data());
    const float a = gate_[j] * Dot(row_.data(), h, H) * w;
    DequantizeRow(ex.down_t->dtype, down + j * db, H, row_.data());
    for (int i = 0; i < H; ++i) y[i] += a * row_[i];
  }
  stats_.reglu_total += F;
  stats_.reglu_skipped += skipped;
}

absl::StatusOr<std::vector<float>> Engine::Forward(int32_t token) {
  const int H = cfg_.hidden_size, V = cfg_.vocab_size, E = cfg_.moe_num_primary_experts,
            K = cfg_.moe_num_active_primary_experts;
  if (token < 0 || token >= V) {
    return absl::InvalidArgumentError(
        absl::StrCat("token id ", token, " is outside the vocabulary [0, ", V, ")"));
  }
  if (pos_ >= cfg_.max_position_embeddings) {
    return absl::OutOfRangeError(absl::StrCat("position ", pos_, " is beyond the context of ",
                                              cfg_.max_position_embeddings, " tokens"));
  }
  // RoPE tables for this position (angles in double, as the reference model does).
  const int D = cfg_.head_dim;
  for (int i = 0; i < D / 2; ++i) {
    const double inv_freq = std::pow(cfg_.rope_theta, -2.0 * i / D);
    const double ang = static_cast<double>(pos_) * inv_freq;
    rope_cos_[i] = static_cast<float>(std::cos(ang));
    rope_sin_[i] = static_cast<float>(std::sin(ang));
  }
  std::copy_n(token_embd_.data() + static_cast<size_t>(token) * H, H, x_.data());
  std::vector<int> order(E), chosen(K);
  std::vector<float> wts(K);
  for (int l = 0; l < cfg_.num_hidden_layers; ++l) {
    Layer& L = layers_[l];
    // 1. Route on the raw residual.
    MatVec(L.router, x_.data(), E, H, logits_.data());
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + K, order.end(), [&](int a, int b) {
      return logits_[a] > logits_[b] || (logits_[a] == logits_[b] && a < b);
    });
    std::copy_n(order.begin(), K, chosen.begin());
    float sum = 0.f;
    if (cfg_.moe_primary_router_apply_softmax) {
      const float mx = logits_[chosen[0]];
      for (int i = 0; i < K; ++i) sum += (wts[i] = std::exp(logits_[chosen[i]] - mx));
    } else {
      for (int i = 0; i < K; ++i) sum += (wts[i] = 1.f / (1.f + std::exp(-logits_[chosen[i]])));
    }
    for (int i = 0; i < K; ++i) wts[i] /= sum;
    // 2. Prefetch hook: the experts are known before attention.
    if (prefetch_) prefetch_(l, absl::MakeConstSpan(chosen));
    // 3. Attention.
    RmsNorm(x_.data(), L.attn_norm, H, cfg_.rms_norm_eps, h_.data());
    Attention(L, h_.data(), o_.data());
    for (int i = 0; i < H; ++i) x_[i] += o_[i];
    // 4. MoE with the routing from step 1.
    RmsNorm(x_.data(), L.ffn_norm, H, cfg_.rms_norm_eps, h_.data());
    std::fill(y_.begin(), y_.end(), 0.f);
    for (int i = 0; i < K; ++i) Expert(L.experts[chosen[i]], h_.data(), wts[i], y_.data());
    for (int i = 0; i < H; ++i) x_[i] += y_[i];
  }
  RmsNorm(x_.data(), output_norm_, H, cfg_.rms_norm_eps, h_.data());
  std::vector<float> out(V);
  MatVec(output_.empty() ? token_embd_ : output_, h_.data(), V, H, out.data());
  ++pos_;
  ++stats_.tokens;
  return out;
}

absl::StatusOr<std::vector<float>> Engine::Prefill(absl::Span<const int32_t> tokens) {
  if (tokens.empty()) return absl::InvalidArgumentError("prefill needs at least one token");
  if (static_cast<int64_t>(pos_) + static_cast<int64_t>(tokens.size()) >
      cfg_.max_position_embeddings) {
    return absl::OutOfRangeError(absl::StrCat(
        "prompt of ", tokens.size(), " tokens does not fit: ", pos_, " already in the context of ",
        cfg_.max_position_embeddings, " tokens"));
  }
  for (int32_t t : tokens) {
    if (t < 0 || t >= cfg_.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", t, " is outside the vocabulary [0, ", cfg_.vocab_size, ")"));
    }
  }
  absl::StatusOr<std::vector<float>> logits;
  for (int32_t t : tokens) {
    logits = Forward(t);
    if (!logits.ok()) return logits.status();
  }
  return logits;
}

}  // namespace st
