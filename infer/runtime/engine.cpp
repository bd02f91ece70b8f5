// Engine: loading (weights as views into the mapped file), the KV caches, and the forward pass
// of a step, one function per stage: Route -> StartExpertReads -> Attention -> Moe (moe.cpp) per
// layer, then Head. The memory-budget plan is in budget_plan.cpp. Shape names: forward_state.h.
#include "infer/runtime/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "infer/quant/codec.h"
#include "infer/quant/kernels.h"
#include "infer/runtime/engine_impl.h"
#include "infer/runtime/thread_pool.h"
#include "model/check.h"
#include "model/random.h"

namespace st {
namespace {

Mat MatOf(const ModelFile& f, const TensorInfo& info) {
  Mat m;
  m.t = info.dtype;
  m.data = f.TensorData(info);
  m.rows = info.dims.size() == 2 ? info.dims[0] : 1;
  m.cols = info.dims.back();
  m.row_bytes = static_cast<size_t>(DTypeBytes(info.dtype, m.cols));
  return m;
}

absl::StatusOr<Mat> FindMat(const ModelFile& f, const std::string& name,
                            const std::vector<int64_t>& dims) {
  const TensorInfo* info = f.Find(name);
  if (info == nullptr) return absl::NotFoundError(absl::StrCat("tensor '", name, "' is missing"));
  if (info->dims != dims) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has an unexpected shape"));
  }
  return MatOf(f, *info);
}

// The registry's tensor `id`, with the shape the config implies.
absl::StatusOr<Mat> FindMat(const ModelFile& f, const TensorId& id, const ModelConfig& c) {
  return FindMat(f, id.FileName(), id.Shape(c));
}

// A small resident vector (norm weights, router) dequantized to f32 once.
absl::Status LoadF32(const ModelFile& f, const TensorId& id, const ModelConfig& c,
                     std::vector<float>* out) {
  ST_ASSIGN_OR_RETURN(Mat m, FindMat(f, id, c));
  out->resize(static_cast<size_t>(m.rows * m.cols));
  DequantizeRow(m.t, m.data, m.rows * m.cols, out->data());
  return absl::OkStatus();
}

// Adds the wall time since the last lap to one of the stats' phase counters.
class PhaseClock {
 public:
  explicit PhaseClock(EngineStats* s) : s_(s), t_(std::chrono::steady_clock::now()) {}
  void Lap(double EngineStats::*field) {
    const auto now = std::chrono::steady_clock::now();
    s_->*field += std::chrono::duration<double>(now - t_).count();
    t_ = now;
  }

 private:
  EngineStats* s_;
  std::chrono::steady_clock::time_point t_;
};

void RmsNorm(const float* x, const float* w, int64_t n, float eps, float* out) {
  float ss = 0.f;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * inv);
}

}  // namespace

void RmsNormRows(const Acts& x, int first_row, int rows, const std::vector<float>& w, float eps,
                 Acts* out) {
  out->Resize(rows);
  for (int t = 0; t < rows; ++t) {
    RmsNorm(x.row(first_row + t), w.data(), x.n(), eps, out->WriteRow(t));
  }
}

void Engine::Impl::MatMul(std::initializer_list<Job> jobs_in, int T) {
  Job jobs[8];
  const uint8_t* X[8];  // each job's activation rows as its weights take them
  size_t xs[8];         // their stride in bytes
  int nj = 0;
  int64_t total = 0;
  for (const Job& j : jobs_in) {
    ST_CHECK(nj < 8) << "MatMul takes at most 8 products";
    jobs[nj] = j;
    if (jobs[nj].r1 == 0) jobs[nj].r1 = j.w->rows;
    total += jobs[nj].r1 - jobs[nj].r0;
    X[nj] = Rows(*j.x, j.w->t);  // quantized before the parallel region
    xs[nj] = ActivationRowBytes(j.w->t, j.x->n());
    ++nj;
  }
  const int64_t chunk = std::max<int64_t>(16, total / (pool->size() * 8));
  // Task list: (job, row begin).
  std::vector<std::pair<int, int64_t>> tasks;
  for (int j = 0; j < nj; ++j) {
    for (int64_t r = jobs[j].r0; r < jobs[j].r1; r += chunk) tasks.emplace_back(j, r);
  }
  pool->Run(static_cast<int64_t>(tasks.size()), [&](int64_t ti, int) {
    const int j = tasks[ti].first;
    const Job& jb = jobs[j];
    const int64_t r0 = tasks[ti].second, r1 = std::min(jb.r1, r0 + chunk);
    const DType wt = jb.w->t;
    if (T == 1) {  // decode: the GEMV kernel (activation tables built once per call)
      kern->gemv(wt, jb.w->row(r0), jb.w->row_bytes, r1 - r0, X[j], jb.w->cols, jb.y + r0);
      return;
    }
    for (int t0 = 0; t0 < T; t0 += kTokenBlock) {
      const int tb = std::min(kTokenBlock, T - t0);
      for (int64_t r = r0; r < r1; ++r) {
        kern->row_dots(wt, jb.w->row(r), X[j] + t0 * xs[j], xs[j], tb, jb.w->cols,
                       jb.y + t0 * jb.ldy + r, jb.ldy);
      }
    }
  });
}

void Engine::Impl::AllocateForwardState(const ModelConfig& c, int prefill_chunk, int max_context) {
  ForwardDims d;
  d.max_T = std::min(prefill_chunk, max_context);
  d.max_context = max_context;
  d.threads = pool->size();
  d.h_q8 = UsesQ8Activations(lm_head.t);
  for (const LayerW& L : layers) {
    d.h_q8 = d.h_q8 || UsesQ8Activations(L.q.t) || UsesQ8Activations(L.k.t) ||
             UsesQ8Activations(L.v.t) || UsesQ8Activations(L.experts[0].gate.t);
    d.att_q8 = d.att_q8 || UsesQ8Activations(L.o.t);
    d.group_row_bytes =
        std::max(d.group_row_bytes, ActivationRowBytes(L.experts[0].gate.t, c.hidden_size));
  }
  fs.Allocate(c, d);
}

// ---------------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const std::string& path,
                                                     const EngineOptions& options) {
  ModelFile::Options fo;
  fo.populate = options.populate;
  fo.huge_pages = options.huge_pages;
  if (options.memory_budget < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "memory budget must be >= 0 bytes (0 = no budget), got ", options.memory_budget));
  }
  fo.experts_in_memory = options.memory_budget == 0;
  ST_ASSIGN_OR_RETURN(auto file, ModelFile::Open(path, fo));
  ST_ASSIGN_OR_RETURN(auto e, FromFile(std::move(file), options));
  if (options.memory_budget > 0) ST_RETURN_IF_ERROR(e->SetUpBudget(path));
  return e;
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::FromFile(std::unique_ptr<ModelFile> file,
                                                         const EngineOptions& options) {
  if (options.threads < 0 || options.threads > kMaxEngineThreads) {
    return absl::InvalidArgumentError(absl::StrCat("threads must be in [0, ", kMaxEngineThreads,
                                                   "] (0 = all cores), got ", options.threads));
  }
  if (options.prefill_chunk < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill_chunk must be >= 1, got ", options.prefill_chunk));
  }
  std::unique_ptr<Engine> e(new Engine());
  e->file_ = std::move(file);
  e->opt_ = options;
  e->cfg_ = e->file_->config();
  e->impl_ = std::make_unique<Impl>();
  Impl& m = *e->impl_;
  const ModelConfig& c = e->cfg_;
  const ModelFile& f = *e->file_;
  const int64_t H = c.hidden_size, E = c.moe_num_primary_experts;
  if (c.max_position_embeddings <= 0) {
    return absl::InvalidArgumentError("model config: max_position_embeddings must be > 0");
  }
  if (options.max_context < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_context must be >= 0 (0 = the model's), got ", options.max_context));
  }
  if (options.memory_budget > 0 && e->file_->experts_in_memory()) {
    return absl::InvalidArgumentError(
        "a memory budget needs the file opened by Engine::Load (experts read on demand)");
  }
  // Under a memory budget the KV cache is reserved up front: without an explicit context, 4096
  // tokens (the model's own context would reserve gigabytes for the 21B).
  const int default_context = options.memory_budget > 0
                                  ? std::min(kBudgetDefaultContext, c.max_position_embeddings)
                                  : c.max_position_embeddings;
  e->max_context_ = options.max_context > 0
                        ? std::min<int>(options.max_context, c.max_position_embeddings)
                        : default_context;
  e->routing_.assign(static_cast<size_t>(c.num_hidden_layers) * E, 0);
  int threads = options.threads;
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  m.kern = &SelectKernels(options.simd);
  if (options.simd && !options.avx512 && Avx2Kernels() != nullptr) m.kern = Avx2Kernels();
  ST_ASSIGN_OR_RETURN(m.pool, ThreadPool::Create(threads));

  using TK = TensorKind;
  ST_ASSIGN_OR_RETURN(m.token_embd, FindMat(f, TensorId::Model(TK::kTokenEmbd), c));
  ST_RETURN_IF_ERROR(LoadF32(f, TensorId::Model(TK::kOutputNorm), c, &m.output_norm));
  if (!KindPresent(TK::kOutput, c)) {
    m.lm_head = m.token_embd;
  } else {
    ST_ASSIGN_OR_RETURN(m.lm_head, FindMat(f, TensorId::Model(TK::kOutput), c));
  }
  m.layers.resize(c.num_hidden_layers);
  const int64_t ring_extra = options.prefill_chunk;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    LayerW& L = m.layers[l];
    ST_RETURN_IF_ERROR(LoadF32(f, TensorId::Layer(TK::kAttnNorm, l), c, &L.attn_norm));
    ST_RETURN_IF_ERROR(LoadF32(f, TensorId::Layer(TK::kFfnNorm, l), c, &L.ffn_norm));
    ST_RETURN_IF_ERROR(LoadF32(f, TensorId::Layer(TK::kFfnGateInp, l), c, &L.router_f32));
    L.router = Mat{DType::kF32, reinterpret_cast<const uint8_t*>(L.router_f32.data()), E, H,
                   static_cast<size_t>(H * sizeof(float))};
    ST_ASSIGN_OR_RETURN(L.q, FindMat(f, TensorId::Layer(TK::kAttnQ, l), c));
    ST_ASSIGN_OR_RETURN(L.k, FindMat(f, TensorId::Layer(TK::kAttnK, l), c));
    ST_ASSIGN_OR_RETURN(L.v, FindMat(f, TensorId::Layer(TK::kAttnV, l), c));
    ST_ASSIGN_OR_RETURN(L.o, FindMat(f, TensorId::Layer(TK::kAttnOutput, l), c));
    L.rope = c.layer_uses_rope[l];
    L.window = c.layer_uses_sliding[l] ? c.sliding_window_size : 0;
    L.ring = std::min<int64_t>(static_cast<int64_t>(L.window) + ring_extra, e->max_context_);
    for (int x = 0; x < E; ++x) {
      ST_ASSIGN_OR_RETURN(ExpertExtent ex, f.GetExpertExtent(l, x));
      L.experts.push_back({MatOf(f, *ex.gate), MatOf(f, *ex.up), MatOf(f, *ex.down_t)});
      L.expert_base.push_back(f.data() + ex.offset);
      const ExpertMats& em = L.experts.back();
      const ExpertMats& e0 = m.layers[0].experts[0];
      if (em.gate.t != e0.gate.t || em.up.t != e0.gate.t || em.down_t.t != e0.gate.t) {
        return absl::UnimplementedError(
            absl::StrCat("expert tensors of layer ", l, " expert ", x,
                         " mix element types; the runtime needs "
                         "one type for every expert matrix (re-export with a single --recipe)"));
      }
    }
  }
  const int D = c.head_dim;
  m.inv_freq.resize(D / 2);
  for (int i = 0; i < D / 2; ++i) m.inv_freq[i] = std::pow(c.rope_theta, -2.0 * i / D);
  m.AllocateForwardState(c, options.prefill_chunk, e->max_context_);
  e->main_ = e->NewSequence();
  return e;
}

Engine::~Engine() = default;

Sequence::Sequence() = default;
Sequence::~Sequence() = default;

int64_t Sequence::kv_bytes() const {
  int64_t b = 0;
  for (const KvCache& kv : kv_L_) {
    b += static_cast<int64_t>(kv.k16_SGD.capacity() + kv.v16_SGD.capacity()) * 2 +
         static_cast<int64_t>(kv.k32_SGD.capacity() + kv.v32_SGD.capacity()) * 4;
  }
  return b;
}

std::unique_ptr<Sequence> Engine::NewSequence() const {
  std::unique_ptr<Sequence> seq(new Sequence());
  seq->owner_ = this;
  seq->kv_L_.resize(impl_->layers.size());
  for (size_t l = 0; l < impl_->layers.size(); ++l) {
    const LayerW& L = impl_->layers[l];
    seq->kv_L_[l].Init(opt_.kv_f16, cfg_.kv_width(), L.window, L.ring);
  }
  return seq;
}

int Engine::position() const { return main_->pos_; }
int Engine::max_batch() const { return std::min(opt_.prefill_chunk, max_context_); }

absl::Status Engine::CheckOwner(const Sequence* seq) const {
  if (seq == nullptr || seq->owner_ != this) {
    return absl::InvalidArgumentError("the sequence was not made by this engine (NewSequence)");
  }
  return absl::OkStatus();
}

int Engine::Truncate(Sequence* seq, int n) {
  ST_CHECK(seq != nullptr && seq->owner_ == this) << "a sequence of another engine";
  ST_CHECK(n >= 0 && n <= seq->pos_) << "n=" << n << " position=" << seq->pos_;
  // A sliding-window ring holds the positions [pos - slots, pos); position n attends
  // [n - window + 1, n], so those must not have been overwritten.
  for (const LayerW& L : impl_->layers) {
    if (L.window == 0 || n == 0) continue;
    const int64_t oldest_held = std::max<int64_t>(0, seq->pos_ - L.ring);
    const int64_t oldest_needed = std::max<int64_t>(0, int64_t{n} - L.window + 1);
    if (oldest_needed < oldest_held) {
      n = 0;
      break;
    }
  }
  seq->pos_ = n;
  if (n == 0) {
    for (KvCache& kv : seq->kv_L_) kv.Clear();
  }
  return n;
}

RoutingProfile Engine::routing() const {
  RoutingProfile p;
  p.layers = cfg_.num_hidden_layers;
  p.experts = cfg_.moe_num_primary_experts;
  p.counts = routing_;
  const int64_t per_token = static_cast<int64_t>(p.layers) * cfg_.moe_num_active_primary_experts;
  int64_t total = 0;
  for (int64_t c : routing_) total += c;
  p.tokens = per_token > 0 ? total / per_token : 0;
  return p;
}
void Engine::ResetRouting() { std::fill(routing_.begin(), routing_.end(), 0); }

int Engine::threads() const { return impl_->pool->size(); }
std::string Engine::KernelName() const { return impl_->kern->name; }

int64_t Engine::DenseDecodeWeightBytes() const {
  const int K = cfg_.moe_num_active_primary_experts;
  int64_t b = impl_->token_embd.row_bytes + impl_->lm_head.bytes();
  for (const LayerW& L : impl_->layers) {
    b += L.router.bytes() + L.q.bytes() + L.k.bytes() + L.v.bytes() + L.o.bytes();
    const ExpertMats& x = L.experts[0];
    b += K * (x.gate.bytes() + x.up.bytes() + x.down_t.bytes());
  }
  return b;
}

void Engine::Reset() { Truncate(main_.get(), 0); }

absl::Status Engine::CheckTokens(const Sequence& seq, absl::Span<const int32_t> tokens) const {
  const int pos = seq.pos_;
  if (tokens.empty()) return absl::InvalidArgumentError("prefill needs at least one token");
  if (static_cast<int64_t>(pos) + static_cast<int64_t>(tokens.size()) > max_context_) {
    if (tokens.size() == 1) {
      return absl::OutOfRangeError(
          absl::StrCat("position ", pos, " is beyond the context of ", max_context_, " tokens"));
    }
    return absl::OutOfRangeError(
        absl::StrCat("prompt of ", tokens.size(), " tokens does not fit: ", pos,
                     " already in the context of ", max_context_, " tokens"));
  }
  for (int32_t t : tokens) {
    if (t < 0 || t >= cfg_.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", t, " is outside the vocabulary [0, ", cfg_.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> Engine::Forward(int32_t token) {
  return Prefill(main_.get(), absl::MakeConstSpan(&token, 1));
}

absl::StatusOr<std::vector<float>> Engine::Prefill(absl::Span<const int32_t> tokens) {
  return Prefill(main_.get(), tokens);
}

absl::StatusOr<std::vector<float>> Engine::Prefill(Sequence* seq,
                                                   absl::Span<const int32_t> tokens) {
  ST_RETURN_IF_ERROR(CheckOwner(seq));
  ST_RETURN_IF_ERROR(CheckTokens(*seq, tokens));
  std::vector<float> out(cfg_.vocab_size);
  ST_RETURN_IF_ERROR(Run(seq, tokens, out.data(), false));
  return out;
}

absl::Status Engine::PrefillAll(absl::Span<const int32_t> tokens, std::vector<float>* logits_TV) {
  ST_RETURN_IF_ERROR(CheckTokens(*main_, tokens));
  logits_TV->resize(tokens.size() * static_cast<size_t>(cfg_.vocab_size));
  return Run(main_.get(), tokens, logits_TV->data(), true);
}

absl::Status Engine::DecodeBatch(absl::Span<Sequence* const> seqs, absl::Span<const int32_t> tokens,
                                 std::vector<float>* logits_BV) {
  if (seqs.empty() || seqs.size() != tokens.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("a batched decode takes one token per sequence (", seqs.size(), " sequences, ",
                     tokens.size(), " tokens; at least one)"));
  }
  if (seqs.size() > static_cast<size_t>(max_batch())) {
    return absl::InvalidArgumentError(absl::StrCat("a batched decode takes at most ", max_batch(),
                                                   " sequences, got ", seqs.size()));
  }
  for (size_t b = 0; b < seqs.size(); ++b) {
    ST_RETURN_IF_ERROR(CheckOwner(seqs[b]));
    for (size_t a = 0; a < b; ++a) {
      if (seqs[a] == seqs[b]) {
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", b, " of the batch is also sequence ", a));
      }
    }
    ST_RETURN_IF_ERROR(CheckTokens(*seqs[b], tokens.subspan(b, 1)));
  }
  logits_BV->resize(tokens.size() * static_cast<size_t>(cfg_.vocab_size));
  return Step(seqs, tokens, logits_BV->data(), true);
}

// ---- The steps of the stages ----------------------------------------------------------------
namespace {

// cos_TI / sin_TI of pos_T[t] * inv_freq[i] for the T positions (angles in double, as the
// reference model).
void RopeAngles(const std::vector<double>& inv_freq, const std::vector<int64_t>& pos_T, int T,
                float* cos_TI, float* sin_TI) {
  const size_t I = inv_freq.size();
  for (int t = 0; t < T; ++t) {
    for (size_t i = 0; i < I; ++i) {
      const double ang = static_cast<double>(pos_T[t]) * inv_freq[i];
      cos_TI[t * I + i] = static_cast<float>(std::cos(ang));
      sin_TI[t * I + i] = static_cast<float>(std::sin(ang));
    }
  }
}

// Benchmarks: k distinct experts of E drawn uniformly per (position, layer, seed), a partial
// Fisher-Yates shuffle of order_E driven by SplitMix64 steps.
void UniformExperts(int64_t pos, int layer, uint64_t seed, int E, int K, int* order_E) {
  SplitMix64 rng((static_cast<uint64_t>(pos) << 20) ^ static_cast<uint64_t>(layer) ^
                 (seed * SplitMix64::kGolden));
  for (int i = 0; i < K; ++i) {
    const uint64_t h = rng.Next();
    std::swap(order_E[i], order_E[i + static_cast<int>(h % static_cast<uint64_t>(E - i))]);
  }
}

// order_E[0, K) = the K experts with the largest raw logits, best first (ties: lower index).
void TopK(const float* logits_E, int E, int K, int* order_E) {
  std::partial_sort(order_E, order_E + K, order_E + E, [&](int a, int b) {
    return logits_E[a] > logits_E[b] || (logits_E[a] == logits_E[b] && a < b);
  });
}

// The chosen experts order_E[0, K) and their weights from the raw logits: sigmoid renormalised
// over the top-k (the released default) or softmax over the top-k.
void GateWeights(const float* logits_E, const int* order_E, int K, bool softmax, int32_t* sel_K,
                 float* wts_K) {
  float sum = 0.f;
  for (int i = 0; i < K; ++i) {
    const float z = logits_E[order_E[i]];
    sel_K[i] = order_E[i];
    wts_K[i] = softmax ? std::exp(z - logits_E[order_E[0]]) : 1.f / (1.f + std::exp(-z));
    sum += wts_K[i];
  }
  for (int i = 0; i < K; ++i) wts_K[i] /= sum;
}

// q_TND, k_TGD, v_TGD = Wq h, Wk h, Wv h in one parallel region.
void ProjectQkv(Engine::Impl& m, const LayerW& L) {
  ForwardState& s = m.fs;
  m.MatMul({{&L.q, &s.h_TH, s.q_TND.data(), L.q.rows, 0, 0},
            {&L.k, &s.h_TH, s.k_TGD.data(), L.k.rows, 0, 0},
            {&L.v, &s.h_TH, s.v_TGD.data(), L.v.rows, 0, 0}},
           s.T);
}

// NeoX "rotate half" over the full head for `heads` heads of D: (v[i], v[i + D/2]) rotated by
// the angle of frequency i.
void RotateHalf(float* v, int heads, int D, const float* cos_I, const float* sin_I) {
  for (int n = 0; n < heads; ++n) {
    float* hv = v + static_cast<size_t>(n) * D;
    for (int i = 0; i < D / 2; ++i) {
      const float a = hv[i], b = hv[i + D / 2];
      hv[i] = a * cos_I[i] - b * sin_I[i];
      hv[i + D / 2] = b * cos_I[i] + a * sin_I[i];
    }
  }
}

// RoPE on q_TND and k_TGD at the step's positions.
void ApplyRope(ForwardState* s, int N, int G, int D) {
  const size_t I = static_cast<size_t>(D / 2);
  for (int t = 0; t < s->T; ++t) {
    const float* cos_I = s->cos_TI.data() + t * I;
    const float* sin_I = s->sin_TI.data() + t * I;
    RotateHalf(s->q_TND.data() + static_cast<size_t>(t) * N * D, N, D, cos_I, sin_I);
    RotateHalf(s->k_TGD.data() + static_cast<size_t>(t) * G * D, G, D, cos_I, sin_I);
  }
}

// The step's keys and values into layer l's cache of each token's sequence: slot = position on
// global layers (grown to fit), position mod S on sliding-window layers (the ring wraps).
void WriteKvCache(const Kernels& k, const ForwardState& s, int l) {
  for (int t = 0; t < s.T; ++t) {
    KvCache* kv = &(*s.kv_T[t])[l];
    const int64_t KV = kv->width;
    if (kv->window == 0) kv->Grow(s.pos_T[t] + 1);
    const size_t off = static_cast<size_t>(kv->Slot(s.pos_T[t]) * KV);
    const float* kt = s.k_TGD.data() + static_cast<size_t>(t) * KV;
    const float* vt = s.v_TGD.data() + static_cast<size_t>(t) * KV;
    if (kv->f16) {
      k.f32_to_f16(kt, kv->k16_SGD.data() + off, KV);
      k.f32_to_f16(vt, kv->v16_SGD.data() + off, KV);
    } else {
      std::copy_n(kt, KV, kv->k32_SGD.data() + off);
      std::copy_n(vt, KV, kv->v32_SGD.data() + off);
    }
  }
}

// The f32 KV cache (--kv_f16=false), one query head at a time: scores_P[j - first] =
// (q_D . key j of kv head g) * scale for the positions [first, p].
void AttentionScoresF32(const Kernels& k, const KvCache& kv, const float* q_D, int g, int D,
                        int64_t first, int64_t p, float scale, float* scores_P) {
  for (int64_t j = first; j <= p; ++j) {
    const size_t o = static_cast<size_t>(kv.Slot(j) * kv.width + g * D);
    scores_P[j - first] = k.dot_f32(q_D, kv.k32_SGD.data() + o, D) * scale;
  }
}

// out_D = sum over [first, p] of weights_P[j - first] * value j of kv head g (f32 cache).
void WeightedValuesF32(const Kernels& k, const KvCache& kv, const float* weights_P, int g, int D,
                       int64_t first, int64_t p, float* out_D) {
  std::fill(out_D, out_D + D, 0.f);
  for (int64_t j = first; j <= p; ++j) {
    const size_t o = static_cast<size_t>(kv.Slot(j) * kv.width + g * D);
    k.axpy_f32(weights_P[j - first], kv.v32_SGD.data() + o, out_D, D);
  }
}

// The keys [first, p] of a cache as at most two runs of consecutive slots (a sliding-window
// ring wraps once): run r covers keys [key0[r], key0[r] + len[r]) from slot slot0[r].
struct KeyRuns {
  int n = 0;
  int64_t slot0[2], key0[2], len[2];
};
KeyRuns RunsOf(const KvCache& kv, int64_t first, int64_t p) {
  KeyRuns r;
  const int64_t s0 = kv.Slot(first), total = p - first + 1;
  const int64_t head = kv.window > 0 ? std::min(total, kv.slots - s0) : total;
  r.slot0[0] = s0, r.key0[0] = 0, r.len[0] = head, r.n = 1;
  if (head < total) r.slot0[1] = 0, r.key0[1] = head, r.len[1] = total - head, r.n = 2;
  return r;
}

// att_TND = softmax(q k^T / sqrt(D) + mask) v over the cached keys of each token's sequence
// (layer l). q head n reads kv head n / rep. With an f16 cache one task takes the q heads of one
// (token, kv head) pair (split in `parts` when there are fewer pairs than threads), so each key
// and value is converted once for all of them (attn_scores_f16 / attn_values_f16). The mask:
// position p sees keys [first, p], first = p - window + 1 on sliding-window layers (the ring
// still holds them), 0 on global ones.
void Attend(Engine::Impl& m, int l, const ModelConfig& c) {
  ForwardState& s = m.fs;
  const Kernels& k = *m.kern;
  const int D = c.head_dim, N = c.num_attention_heads, G = c.num_key_value_heads, rep = N / G;
  const int64_t Q = c.q_width();
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t max_keys = s.max_keys;
  s.att_TND.Resize(s.T);
  float* att = s.att_TND.Write();
  const int64_t pairs = static_cast<int64_t>(s.T) * G;
  const int parts =
      static_cast<int>(std::min<int64_t>(rep, (m.pool->size() + pairs - 1) / pairs));  // >= 1
  const int per = (rep + parts - 1) / parts;
  m.pool->Run(pairs * parts, [&](int64_t task, int thread) {
    const int64_t pair = task / parts;
    const int t = static_cast<int>(pair / G), g = static_cast<int>(pair % G);
    const int h0 = g * rep + static_cast<int>(task % parts) * per;
    const int R = std::min(per, g * rep + rep - h0);
    if (R <= 0) return;
    const KvCache& kv = (*s.kv_T[t])[l];
    const int64_t p = s.pos_T[t];
    const int64_t first = kv.window > 0 ? std::max<int64_t>(0, p - kv.window + 1) : 0;
    const int64_t P = p - first + 1;
    std::vector<float>& sc = s.scratch_Th[thread].scores_P;
    if (sc.size() < static_cast<size_t>(R * max_keys)) sc.resize(static_cast<size_t>(R * max_keys));
    const float* q_RD = s.q_TND.data() + static_cast<size_t>(t) * Q + static_cast<size_t>(h0) * D;
    float* out_RD = att + static_cast<size_t>(t) * Q + static_cast<size_t>(h0) * D;
    if (!kv.f16) {
      for (int h = 0; h < R; ++h) {
        AttentionScoresF32(k, kv, q_RD + h * D, g, D, first, p, scale, sc.data());
        k.softmax_f32(sc.data(), P);
        WeightedValuesF32(k, kv, sc.data(), g, D, first, p, out_RD + h * D);
      }
      return;
    }
    const KeyRuns runs = RunsOf(kv, first, p);
    for (int r = 0; r < runs.n; ++r) {
      k.attn_scores_f16(q_RD, R, D, kv.k16_SGD.data() + runs.slot0[r] * kv.width + g * D, kv.width,
                        runs.len[r], scale, sc.data() + runs.key0[r], max_keys);
    }
    for (int h = 0; h < R; ++h) k.softmax_f32(sc.data() + static_cast<size_t>(h) * max_keys, P);
    std::fill(out_RD, out_RD + static_cast<size_t>(R) * D, 0.f);
    for (int r = 0; r < runs.n; ++r) {
      k.attn_values_f16(sc.data() + runs.key0[r], R, max_keys,
                        kv.v16_SGD.data() + runs.slot0[r] * kv.width + g * D, kv.width, runs.len[r],
                        D, out_RD);
    }
  });
}

// x += Wo att.
void ProjectOutput(Engine::Impl& m, const LayerW& L) {
  ForwardState& s = m.fs;
  m.MatMul({{&L.o, &s.att_TND, s.o_TH.data(), L.o.rows, 0, 0}}, s.T);
  float* x = s.x_TH.Write();
  for (size_t i = 0; i < static_cast<size_t>(s.T) * L.o.rows; ++i) x[i] += s.o_TH[i];
}

}  // namespace

// ---- The forward pass (smallthinker.md section 3) -----------------------------------------

absl::Status Engine::Run(Sequence* seq, absl::Span<const int32_t> tokens, float* logits,
                         bool all_logits) {
  std::vector<Sequence*> seq_T(std::min<size_t>(opt_.prefill_chunk, tokens.size()), seq);
  for (size_t c0 = 0; c0 < tokens.size(); c0 += opt_.prefill_chunk) {
    const size_t T = std::min<size_t>(opt_.prefill_chunk, tokens.size() - c0);
    ST_RETURN_IF_ERROR(Step(absl::MakeConstSpan(seq_T).first(T), tokens.subspan(c0, T),
                            all_logits ? logits + c0 * cfg_.vocab_size : logits, all_logits));
  }
  return absl::OkStatus();
}

absl::Status Engine::Step(absl::Span<Sequence* const> seq_T, absl::Span<const int32_t> tokens,
                          float* logits, bool all_rows) {
  const ForwardState& s = impl_->fs;
  if (cache_) cache_->NewPass();
  Embed(seq_T, tokens);
  for (int l = 0; l < cfg_.num_hidden_layers; ++l) {
    PhaseClock clock(&stats_);
    Route(l);
    StartExpertReads(l);
    clock.Lap(&EngineStats::seconds_route);
    Attention(l);
    clock.Lap(&EngineStats::seconds_attention);
    ST_RETURN_IF_ERROR(Moe(l));
    clock.Lap(&EngineStats::seconds_moe);
  }
  PhaseClock clock(&stats_);
  Head(logits, all_rows);
  clock.Lap(&EngineStats::seconds_head);
  for (Sequence* q : seq_T) ++q->pos_;
  stats_.tokens += s.T;
  stats_.forwards += 1;
  return absl::OkStatus();
}

// The step's embedding rows (no scaling) into x_TH; each token's position (the next free one of
// its sequence, counting the step's earlier tokens of the same sequence), its sequence's KV
// caches, and the RoPE angles of the positions.
void Engine::Embed(absl::Span<Sequence* const> seq_T, absl::Span<const int32_t> tokens) {
  Impl& m = *impl_;
  ForwardState& s = m.fs;
  const int64_t H = cfg_.hidden_size;
  s.BeginStep(static_cast<int>(tokens.size()));
  s.max_keys = 0;
  for (int t = 0; t < s.T; ++t) {
    int64_t p = seq_T[t]->pos_;
    if (t > 0 && seq_T[t - 1] == seq_T[t]) {
      p = s.pos_T[t - 1] + 1;  // a chunk of one sequence
    } else {
      for (int u = 0; u < t; ++u) p += seq_T[u] == seq_T[t] ? 1 : 0;
    }
    s.pos_T[t] = p;
    s.kv_T[t] = &seq_T[t]->kv_L_;
    s.max_keys = std::max(s.max_keys, p + 1);
    m.kern->dequant_row(m.token_embd.t, m.token_embd.row(tokens[t]), H, s.x_TH.WriteRow(t));
  }
  stats_.weight_bytes += s.T * static_cast<int64_t>(m.token_embd.row_bytes);
  RopeAngles(m.inv_freq, s.pos_T, s.T, s.cos_TI.data(), s.sin_TI.data());
}

// The pre-attention router: logits from the raw residual x (before any norm); per token the
// top-k on the raw logits (or, for benchmarks, k experts drawn uniformly) and their weights.
void Engine::Route(int l) {
  Impl& m = *impl_;
  ForwardState& s = m.fs;
  const LayerW& L = m.layers[l];
  const int E = cfg_.moe_num_primary_experts, K = cfg_.moe_num_active_primary_experts;
  m.MatMul({{&L.router, &s.x_TH, s.router_TE.data(), E, 0, 0}}, s.T);
  int* order = s.order_E.data();
  for (int t = 0; t < s.T; ++t) {
    const float* lg = s.router_TE.data() + static_cast<size_t>(t) * E;
    std::iota(order, order + E, 0);
    if (opt_.uniform_routing) {
      UniformExperts(s.pos_T[t], l, opt_.routing_seed, E, K, order);
    } else {
      TopK(lg, E, K, order);
    }
    GateWeights(lg, order, K, cfg_.moe_primary_router_apply_softmax,
                s.sel_TK.data() + static_cast<size_t>(t) * K,
                s.wts_TK.data() + static_cast<size_t>(t) * K);
  }
  for (int32_t e : s.sel_TK) ++routing_[static_cast<size_t>(l) * E + e];
  stats_.weight_bytes += L.router.bytes();
}

// The experts are known before attention starts: the prefetch hook hears of them and, in the
// budget mode, the cache starts reading those it lacks while attention computes (unless
// prefetch is off: then Moe starts the reads, after attention).
void Engine::StartExpertReads(int l) {
  ForwardState& s = impl_->fs;
  if (cache_) cache_->EndStep();  // the previous layer's reservations
  if (!prefetch_ && !cache_) return;
  s.chosen_X.assign(s.sel_TK.begin(), s.sel_TK.end());
  std::sort(s.chosen_X.begin(), s.chosen_X.end());
  s.chosen_X.erase(std::unique(s.chosen_X.begin(), s.chosen_X.end()), s.chosen_X.end());
  if (prefetch_) prefetch_(l, absl::MakeConstSpan(s.chosen_X));
  if (cache_ && opt_.prefetch) cache_->Prefetch(l, s.chosen_X);
}

// h = RMSNorm_in(x); q, k, v = Wq h, Wk h, Wv h; RoPE on q, k (RoPE layers); k, v into the
// cache; a = softmax(q k^T / sqrt(D) + mask) v; x += Wo a.
void Engine::Attention(int l) {
  Impl& m = *impl_;
  ForwardState& s = m.fs;
  LayerW& L = m.layers[l];
  const ModelConfig& c = cfg_;
  RmsNormRows(s.x_TH, 0, s.T, L.attn_norm, static_cast<float>(c.rms_norm_eps), &s.h_TH);
  ProjectQkv(m, L);
  if (L.rope) ApplyRope(&s, c.num_attention_heads, c.num_key_value_heads, c.head_dim);
  WriteKvCache(*m.kern, s, l);
  Attend(m, l, c);
  ProjectOutput(m, L);
  stats_.weight_bytes += L.q.bytes() + L.k.bytes() + L.v.bytes() + L.o.bytes();
}

// Final RMSNorm and the LM head: every position's logits when all_rows, else the last one's.
void Engine::Head(float* logits, bool all_rows) {
  Impl& m = *impl_;
  ForwardState& s = m.fs;
  const int first = all_rows ? 0 : s.T - 1, R = s.T - first;
  RmsNormRows(s.x_TH, first, R, m.output_norm, static_cast<float>(cfg_.rms_norm_eps), &s.h_TH);
  m.MatMul({{&m.lm_head, &s.h_TH, logits, cfg_.vocab_size, 0, 0}}, R);
  stats_.weight_bytes += m.lm_head.bytes();
}

}  // namespace st
