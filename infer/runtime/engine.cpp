// Engine: weights view over the mapped file, KV caches, and the forward pass
// (route -> prefetch -> attention -> MoE) for one token (decode) or a chunk of tokens (prefill).
#include "infer/runtime/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "infer/quant/codec.h"
#include "infer/quant/kernels.h"
#include "infer/runtime/thread_pool.h"
#include "model/check.h"

namespace st {
namespace {

constexpr int kTokenBlock = 16;  // tokens whose activations stay in L1 while rows stream past

// A weight matrix inside the mapping: [rows, cols] of `t`, rows contiguous.
struct Mat {
  DType t = DType::kF32;
  const uint8_t* data = nullptr;
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0;
  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes; }
  int64_t bytes() const { return rows * static_cast<int64_t>(row_bytes); }
};

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

// A small resident vector (norm weights, router) dequantized to f32 once.
absl::Status LoadF32(const ModelFile& f, const std::string& name, const std::vector<int64_t>& dims,
                     std::vector<float>* out) {
  ST_ASSIGN_OR_RETURN(Mat m, FindMat(f, name, dims));
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

// Activations of T tokens: f32 rows [T, n], and their Q8_0 form made on first use.
struct Acts {
  int T = 0;
  int64_t n = 0;
  std::vector<float> f;
  std::vector<uint8_t> q;  // prepared Q8_0 activation rows, Q8ActRowBytes(n) each
  bool q_ready = false;
  void Resize(int t, int64_t cols) {
    T = t;
    n = cols;
    if (f.size() < static_cast<size_t>(t * cols)) f.resize(static_cast<size_t>(t * cols));
    q_ready = false;
  }
  float* row(int t) { return f.data() + static_cast<size_t>(t) * n; }
};

// Per-layer KV cache. Sliding-window layers keep a ring of window + prefill_chunk slots (so a
// chunk's own keys never overwrite keys its earlier queries still need); global layers grow.
struct KvCache {
  bool f16 = true;
  int64_t width = 0;  // kv heads * head_dim
  int window = 0;     // 0 = global
  int64_t slots = 0;  // ring size (sliding) or positions held (global)
  std::vector<uint16_t> k16, v16;
  std::vector<float> k32, v32;

  int64_t Slot(int64_t pos) const { return window > 0 ? pos % slots : pos; }
  void Init(bool use_f16, int64_t w, int win, int64_t ring) {
    f16 = use_f16;
    width = w;
    window = win;
    slots = 0;
    if (window > 0) Grow(ring);
  }
  void Grow(int64_t n) {
    if (n <= slots) return;
    slots = n;
    const size_t sz = static_cast<size_t>(n * width);
    if (f16) {
      k16.resize(sz);
      v16.resize(sz);
    } else {
      k32.resize(sz);
      v32.resize(sz);
    }
  }
  void Clear() {
    if (window == 0) {
      slots = 0;
      k16.clear();
      v16.clear();
      k32.clear();
      v32.clear();
    }
  }
};

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

struct LayerW {
  std::vector<float> attn_norm, ffn_norm;  // [H]
  std::vector<float> router_f32;           // [E, H]
  Mat router;                              // view of router_f32
  Mat q, k, v, o;
  bool rope = false;
  int window = 0;
  KvCache kv;
  std::vector<ExpertMats> experts;          // [E] (budget mode: not readable, see ExpertMats::At)
  std::vector<const uint8_t*> expert_base;  // [E] where each extent starts in the file image
};

// Per-thread scratch (only its thread touches it inside a parallel job).
struct Scratch {
  std::vector<uint8_t> xq;  // gathered activations of an expert group
  std::vector<float> g, u, row, scores;
  std::vector<int32_t> active;
};

struct Engine::Impl {
  const Kernels* kern = nullptr;
  std::unique_ptr<ThreadPool> pool;
  Mat token_embd, lm_head;
  std::vector<float> output_norm;
  std::vector<LayerW> layers;
  std::vector<double> inv_freq;  // [D/2]
  std::vector<Scratch> scratch;  // [threads]

  // Chunk state, [T, ...] row-major.
  Acts x, h, att;
  std::vector<float> q_TQ, k_TK, v_TK, o_TH, y_TH, router_TE, cos_TD, sin_TD, logits_TV;
  std::vector<int32_t> sel_TK;  // chosen experts, [T, K]
  std::vector<float> wts_TK;    // their weights, [T, K]
  // Grouped MoE: assignments sorted by expert.
  std::vector<int32_t> group_begin;    // [E + 1]
  std::vector<int32_t> group_token;    // [T * K] token of each assignment
  std::vector<float> group_weight;     // [T * K]
  std::vector<int32_t> assign_of_TK;   // [T, K] -> assignment index
  std::vector<float> out_AH;           // [T * K, H] expert outputs per assignment
  std::vector<int64_t> group_active;   // [E] rows with any active token (stats)
  std::vector<int64_t> group_skipped;  // [E] (token, neuron) pairs skipped
  // The experts the MoE reads this step: cur_k[i] for the token's i-th choice (decode),
  // cur_e[e] for expert e (grouped prefill). In memory they are the layer's own matrices; in
  // the budget mode they point into cache slots.
  std::vector<ExpertMats> cur_k, cur_e;
  std::vector<int> all_k;  // 0, 1, ..., k - 1
  // Decode MoE.
  std::vector<float> g_KF;                   // gate outputs of the k experts
  std::vector<int32_t> act_expert, act_row;  // active (slot, neuron) pairs
  std::vector<float> y_part;                 // [threads, H] partial down projections
  std::vector<const uint8_t*> act_ptr;       // [2, n_active]: up rows, then down_t rows
  std::vector<float> act_a;                  // [n_active] up dot -> AXPY coefficient

  // Quantizes acts to Q8_0 when a consumer needs it.
  void PrepQ8(Acts& a) {
    if (a.q_ready) return;
    const size_t rb = Q8ActRowBytes(a.n);
    if (a.q.size() < a.T * rb) a.q.resize(a.T * rb);
    pool->Run(a.T, [&](int64_t t, int) {
      kern->prepare_q8_row(a.f.data() + t * a.n, a.n, a.q.data() + t * rb);
    });
    a.q_ready = true;
  }
  const uint8_t* ActData(Acts& a, DType wt) {
    if (UsesQ8Activations(wt)) {
      PrepQ8(a);
      return a.q.data();
    }
    return reinterpret_cast<const uint8_t*>(a.f.data());
  }

  struct Job {
    const Mat* w;
    Acts* x;
    float* y;  // y[t * ldy + r]
    int64_t ldy;
    int64_t r0, r1;
  };
  // Y = W X for several matrices in one parallel region: rows split into tasks, tokens in
  // blocks of kTokenBlock so a block's activations stay in L1 while the rows stream past.
  void MatMul(std::initializer_list<Job> jobs_in, int T) {
    Job jobs[8];
    int nj = 0;
    int64_t total = 0;
    for (const Job& j : jobs_in) {
      jobs[nj] = j;
      if (jobs[nj].r1 == 0) jobs[nj].r1 = j.w->rows;
      total += jobs[nj].r1 - jobs[nj].r0;
      ActData(*j.x, j.w->t);  // quantize before the parallel region
      ++nj;
    }
    const int64_t chunk = std::max<int64_t>(16, total / (pool->size() * 8));
    // Task list: (job, row begin).
    std::vector<std::pair<int, int64_t>> tasks;
    for (int j = 0; j < nj; ++j) {
      for (int64_t r = jobs[j].r0; r < jobs[j].r1; r += chunk) tasks.emplace_back(j, r);
    }
    pool->Run(static_cast<int64_t>(tasks.size()), [&](int64_t ti, int) {
      const Job& jb = jobs[tasks[ti].first];
      const int64_t r0 = tasks[ti].second, r1 = std::min(jb.r1, r0 + chunk);
      const DType wt = jb.w->t;
      const uint8_t* X = ActData(*jb.x, wt);
      const size_t xs = ActivationRowBytes(wt, jb.x->n);
      if (T == 1) {  // decode: the GEMV kernel (activation tables built once per call)
        kern->gemv(wt, jb.w->row(r0), jb.w->row_bytes, r1 - r0, X, jb.w->cols, jb.y + r0);
        return;
      }
      for (int t0 = 0; t0 < T; t0 += kTokenBlock) {
        const int tb = std::min(kTokenBlock, T - t0);
        for (int64_t r = r0; r < r1; ++r) {
          kern->row_dots(wt, jb.w->row(r), X + t0 * xs, xs, tb, jb.w->cols, jb.y + t0 * jb.ldy + r,
                         jb.ldy);
        }
      }
    });
  }
};

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
  if (options.threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads must be >= 0 (0 = all cores), got ", options.threads));
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
  const int64_t H = c.hidden_size, V = c.vocab_size, Q = c.q_width(), KV = c.kv_width(),
                E = c.moe_num_primary_experts;
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
  m.pool = std::make_unique<ThreadPool>(threads);
  m.scratch.resize(threads);
  m.all_k.resize(c.moe_num_active_primary_experts);
  std::iota(m.all_k.begin(), m.all_k.end(), 0);

  ST_ASSIGN_OR_RETURN(m.token_embd, FindMat(f, "token_embd", {V, H}));
  ST_RETURN_IF_ERROR(LoadF32(f, "output_norm", {H}, &m.output_norm));
  if (c.tie_word_embeddings) {
    m.lm_head = m.token_embd;
  } else {
    ST_ASSIGN_OR_RETURN(m.lm_head, FindMat(f, "output", {V, H}));
  }
  m.layers.resize(c.num_hidden_layers);
  const int64_t ring_extra = options.prefill_chunk;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    LayerW& L = m.layers[l];
    const std::string p = absl::StrCat("blk.", l, ".");
    ST_RETURN_IF_ERROR(LoadF32(f, p + "attn_norm", {H}, &L.attn_norm));
    ST_RETURN_IF_ERROR(LoadF32(f, p + "ffn_norm", {H}, &L.ffn_norm));
    ST_RETURN_IF_ERROR(LoadF32(f, p + "ffn_gate_inp", {E, H}, &L.router_f32));
    L.router = Mat{DType::kF32, reinterpret_cast<const uint8_t*>(L.router_f32.data()), E, H,
                   static_cast<size_t>(H * sizeof(float))};
    ST_ASSIGN_OR_RETURN(L.q, FindMat(f, p + "attn_q", {Q, H}));
    ST_ASSIGN_OR_RETURN(L.k, FindMat(f, p + "attn_k", {KV, H}));
    ST_ASSIGN_OR_RETURN(L.v, FindMat(f, p + "attn_v", {KV, H}));
    ST_ASSIGN_OR_RETURN(L.o, FindMat(f, p + "attn_output", {H, Q}));
    L.rope = c.layer_uses_rope[l];
    L.window = c.layer_uses_sliding[l] ? c.sliding_window_size : 0;
    const int64_t ring =
        std::min<int64_t>(static_cast<int64_t>(L.window) + ring_extra, e->max_context_);
    L.kv.Init(options.kv_f16, KV, L.window, ring);
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
  return e;
}

Engine::~Engine() = default;

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

// The budget: resident weights, the KV cache of max_context tokens, buffers and a fixed
// allowance stay; the rest becomes expert cache slots (at least k of them).
absl::Status Engine::SetUpBudget(const std::string& path) {
  const ModelConfig& c = cfg_;
  const Impl& m = *impl_;
  const int64_t H = c.hidden_size, Q = c.q_width(), KV = c.kv_width(), V = c.vocab_size;
  const int E = c.moe_num_primary_experts, K = c.moe_num_active_primary_experts;
  MemoryPlan& p = plan_;
  p.budget = opt_.memory_budget;
  p.resident = static_cast<int64_t>(file_->memory_bytes()) +
               static_cast<int64_t>(c.num_hidden_layers) * (E + 2) * H * 4 + H * 4;
  const int64_t kv_elem = opt_.kv_f16 ? 2 : 4;
  for (const LayerW& L : m.layers) {
    const int64_t held = L.window > 0 ? std::min<int64_t>(L.kv.slots, max_context_) : max_context_;
    p.kv_cache += held * KV * 2 * kv_elem;
  }
  const int64_t chunk = std::min<int64_t>(opt_.prefill_chunk, max_context_);
  const int64_t act_row = static_cast<int64_t>(Q8ActRowBytes(std::max(H, Q)));
  p.buffers = chunk * (6 * H + 3 * Q + 2 * KV + 2 * E + K * H + 1) * 4 + chunk * 3 * act_row +
              2 * V * 4 +
              static_cast<int64_t>(m.pool->size()) *
                  (4 * c.moe_ffn_hidden_size * 4 + max_context_ * 4 + 2 * H * 4);
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
  if (!opt_.pin_profile.empty()) {
    ST_ASSIGN_OR_RETURN(RoutingProfile prof, ReadRoutingProfile(opt_.pin_profile));
    if (prof.layers != c.num_hidden_layers || prof.experts != E) {
      return absl::InvalidArgumentError(
          absl::StrCat("routing profile '", opt_.pin_profile, "' is for ", prof.layers,
                       " layers x ", prof.experts, " experts, the model has ", c.num_hidden_layers,
                       " x ", E, "; record one with st-run --record_routing on this model"));
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
  }
  cache_->ResetStats();
  return absl::OkStatus();
}

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

void Engine::Reset() {
  pos_ = 0;
  for (LayerW& L : impl_->layers) L.kv.Clear();
}

absl::Status Engine::CheckTokens(absl::Span<const int32_t> tokens) const {
  if (tokens.empty()) return absl::InvalidArgumentError("prefill needs at least one token");
  if (static_cast<int64_t>(pos_) + static_cast<int64_t>(tokens.size()) > max_context_) {
    if (tokens.size() == 1) {
      return absl::OutOfRangeError(
          absl::StrCat("position ", pos_, " is beyond the context of ", max_context_, " tokens"));
    }
    return absl::OutOfRangeError(
        absl::StrCat("prompt of ", tokens.size(), " tokens does not fit: ", pos_,
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
  ST_RETURN_IF_ERROR(CheckTokens(absl::MakeConstSpan(&token, 1)));
  std::vector<float> out(cfg_.vocab_size);
  ST_RETURN_IF_ERROR(Run(absl::MakeConstSpan(&token, 1), out.data(), false));
  return out;
}

absl::StatusOr<std::vector<float>> Engine::Prefill(absl::Span<const int32_t> tokens) {
  ST_RETURN_IF_ERROR(CheckTokens(tokens));
  std::vector<float> out(cfg_.vocab_size);
  ST_RETURN_IF_ERROR(Run(tokens, out.data(), false));
  return out;
}

absl::Status Engine::PrefillAll(absl::Span<const int32_t> tokens, std::vector<float>* logits_TV) {
  ST_RETURN_IF_ERROR(CheckTokens(tokens));
  logits_TV->resize(tokens.size() * static_cast<size_t>(cfg_.vocab_size));
  return Run(tokens, logits_TV->data(), true);
}

// The forward pass over `tokens` (already checked) in chunks of prefill_chunk tokens.
// Writes the last token's logits to `logits` [V], or every token's ([T, V]) when all_logits.
absl::Status Engine::Run(absl::Span<const int32_t> tokens, float* logits, bool all_logits) {
  Impl& m = *impl_;
  const Kernels& k = *m.kern;
  ThreadPool& pool = *m.pool;
  const ModelConfig& c = cfg_;
  const int64_t H = c.hidden_size, V = c.vocab_size, Q = c.q_width(), KV = c.kv_width();
  const int D = c.head_dim, N = c.num_attention_heads, G = c.num_key_value_heads, rep = N / G;
  const int E = c.moe_num_primary_experts, K = c.moe_num_active_primary_experts,
            F = c.moe_ffn_hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));

  for (size_t c0 = 0; c0 < tokens.size(); c0 += opt_.prefill_chunk) {
    const int T = static_cast<int>(std::min<size_t>(opt_.prefill_chunk, tokens.size() - c0));
    const int64_t p0 = pos_;
    if (cache_) cache_->NewPass();
    // Embedding rows and the RoPE angles of each position (in double, as the reference model).
    m.x.Resize(T, H);
    for (int t = 0; t < T; ++t) {
      k.dequant_row(m.token_embd.t, m.token_embd.row(tokens[c0 + t]), H, m.x.row(t));
    }
    stats_.weight_bytes += T * static_cast<int64_t>(m.token_embd.row_bytes);
    m.cos_TD.resize(static_cast<size_t>(T) * D / 2);
    m.sin_TD.resize(static_cast<size_t>(T) * D / 2);
    for (int t = 0; t < T; ++t) {
      for (int i = 0; i < D / 2; ++i) {
        const double ang = static_cast<double>(p0 + t) * m.inv_freq[i];
        m.cos_TD[t * D / 2 + i] = static_cast<float>(std::cos(ang));
        m.sin_TD[t * D / 2 + i] = static_cast<float>(std::sin(ang));
      }
    }
    m.router_TE.resize(static_cast<size_t>(T) * E);
    m.sel_TK.resize(static_cast<size_t>(T) * K);
    m.wts_TK.resize(static_cast<size_t>(T) * K);
    m.q_TQ.resize(static_cast<size_t>(T) * Q);
    m.k_TK.resize(static_cast<size_t>(T) * KV);
    m.v_TK.resize(static_cast<size_t>(T) * KV);
    m.o_TH.resize(static_cast<size_t>(T) * H);
    m.y_TH.resize(static_cast<size_t>(T) * H);

    for (int l = 0; l < c.num_hidden_layers; ++l) {
      LayerW& L = m.layers[l];
      // ---- 1. Route on the raw residual (before any norm), top-k on the raw logits.
      PhaseClock clock(&stats_);
      m.x.q_ready = false;
      m.MatMul({{&L.router, &m.x, m.router_TE.data(), E, 0, 0}}, T);
      std::vector<int> order(E);
      std::vector<int> chosen;
      for (int t = 0; t < T; ++t) {
        const float* lg = m.router_TE.data() + static_cast<size_t>(t) * E;
        std::iota(order.begin(), order.end(), 0);
        if (opt_.uniform_routing) {  // benchmarks: k distinct experts drawn per (position, layer)
          uint64_t z = (static_cast<uint64_t>(p0 + t) << 20) ^ static_cast<uint64_t>(l) ^
                       (opt_.routing_seed * 0x9e3779b97f4a7c15ull);
          for (int i = 0; i < K; ++i) {
            z += 0x9e3779b97f4a7c15ull;
            uint64_t h = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
            h ^= h >> 31;
            std::swap(order[i], order[i + static_cast<int>(h % static_cast<uint64_t>(E - i))]);
          }
        } else {
          std::partial_sort(order.begin(), order.begin() + K, order.end(), [&](int a, int b) {
            return lg[a] > lg[b] || (lg[a] == lg[b] && a < b);
          });
        }
        int32_t* sel = m.sel_TK.data() + static_cast<size_t>(t) * K;
        float* w = m.wts_TK.data() + static_cast<size_t>(t) * K;
        float sum = 0.f;
        for (int i = 0; i < K; ++i) {
          sel[i] = order[i];
          w[i] = c.moe_primary_router_apply_softmax ? std::exp(lg[order[i]] - lg[order[0]])
                                                    : 1.f / (1.f + std::exp(-lg[order[i]]));
          sum += w[i];
        }
        for (int i = 0; i < K; ++i) w[i] /= sum;
      }
      for (int a = 0; a < T * K; ++a) ++routing_[static_cast<size_t>(l) * E + m.sel_TK[a]];
      // ---- 2. Prefetch: the experts are known before attention starts.
      if (cache_) cache_->EndStep();  // the previous layer's reservations
      if (prefetch_ || cache_) {
        chosen.assign(m.sel_TK.begin(), m.sel_TK.end());
        std::sort(chosen.begin(), chosen.end());
        chosen.erase(std::unique(chosen.begin(), chosen.end()), chosen.end());
        if (prefetch_) prefetch_(l, absl::MakeConstSpan(chosen));
        if (cache_ && opt_.prefetch) cache_->Prefetch(l, chosen);
      }
      clock.Lap(&EngineStats::seconds_route);
      // ---- 3. Attention.
      m.h.Resize(T, H);
      for (int t = 0; t < T; ++t) RmsNorm(m.x.row(t), L.attn_norm.data(), H, eps, m.h.row(t));
      m.MatMul({{&L.q, &m.h, m.q_TQ.data(), Q, 0, 0},
                {&L.k, &m.h, m.k_TK.data(), KV, 0, 0},
                {&L.v, &m.h, m.v_TK.data(), KV, 0, 0}},
               T);
      KvCache& kv = L.kv;
      if (kv.window == 0) kv.Grow(p0 + T);
      for (int t = 0; t < T; ++t) {
        float* qt = m.q_TQ.data() + static_cast<size_t>(t) * Q;
        float* kt = m.k_TK.data() + static_cast<size_t>(t) * KV;
        if (L.rope) {
          const float* cs = m.cos_TD.data() + static_cast<size_t>(t) * D / 2;
          const float* sn = m.sin_TD.data() + static_cast<size_t>(t) * D / 2;
          auto rot = [&](float* v, int heads) {  // NeoX "rotate half" over the full head
            for (int n = 0; n < heads; ++n) {
              float* hv = v + static_cast<size_t>(n) * D;
              for (int i = 0; i < D / 2; ++i) {
                const float a = hv[i], b = hv[i + D / 2];
                hv[i] = a * cs[i] - b * sn[i];
                hv[i + D / 2] = b * cs[i] + a * sn[i];
              }
            }
          };
          rot(qt, N);
          rot(kt, G);
        }
        const size_t off = static_cast<size_t>(kv.Slot(p0 + t) * KV);
        const float* vt = m.v_TK.data() + static_cast<size_t>(t) * KV;
        if (kv.f16) {
          k.f32_to_f16(kt, kv.k16.data() + off, KV);
          k.f32_to_f16(vt, kv.v16.data() + off, KV);
        } else {
          std::copy_n(kt, KV, kv.k32.data() + off);
          std::copy_n(vt, KV, kv.v32.data() + off);
        }
      }
      m.att.Resize(T, Q);
      const int64_t max_keys = p0 + T;
      pool.Run(static_cast<int64_t>(T) * N, [&](int64_t task, int thread) {
        const int t = static_cast<int>(task / N), n = static_cast<int>(task % N), g = n / rep;
        const int64_t p = p0 + t;
        const int64_t first = kv.window > 0 ? std::max<int64_t>(0, p - kv.window + 1) : 0;
        std::vector<float>& sc = m.scratch[thread].scores;
        if (sc.size() < static_cast<size_t>(max_keys)) sc.resize(static_cast<size_t>(max_keys));
        const float* qn = m.q_TQ.data() + static_cast<size_t>(t) * Q + static_cast<size_t>(n) * D;
        float mx = -INFINITY;
        for (int64_t j = first; j <= p; ++j) {
          const size_t o = static_cast<size_t>(kv.Slot(j) * KV + g * D);
          const float s = (kv.f16 ? k.dot_f32_f16(qn, kv.k16.data() + o, D)
                                  : k.dot_f32(qn, kv.k32.data() + o, D)) *
                          scale;
          sc[j - first] = s;
          mx = std::max(mx, s);
        }
        float sum = 0.f;
        for (int64_t j = first; j <= p; ++j) sum += (sc[j - first] = std::exp(sc[j - first] - mx));
        const float inv = 1.0f / sum;
        float* an = m.att.row(t) + static_cast<size_t>(n) * D;
        std::fill(an, an + D, 0.f);
        for (int64_t j = first; j <= p; ++j) {
          const size_t o = static_cast<size_t>(kv.Slot(j) * KV + g * D);
          if (kv.f16) {
            k.axpy_f16(sc[j - first] * inv, kv.v16.data() + o, an, D);
          } else {
            k.axpy_f32(sc[j - first] * inv, kv.v32.data() + o, an, D);
          }
        }
      });
      m.MatMul({{&L.o, &m.att, m.o_TH.data(), H, 0, 0}}, T);
      for (size_t i = 0; i < static_cast<size_t>(T) * H; ++i) m.x.f[i] += m.o_TH[i];
      stats_.weight_bytes +=
          L.router.bytes() + L.q.bytes() + L.k.bytes() + L.v.bytes() + L.o.bytes();
      clock.Lap(&EngineStats::seconds_attention);
      // ---- 4. MoE with the routing from step 1.
      for (int t = 0; t < T; ++t) RmsNorm(m.x.row(t), L.ffn_norm.data(), H, eps, m.h.row(t));
      m.h.q_ready = false;
      // Without prefetch the reads start only now, after attention (the baseline).
      if (cache_ && !opt_.prefetch) cache_->Prefetch(l, chosen);
      if (T == 1) {
        m.cur_k.resize(K);
        m.g_KF.resize(static_cast<size_t>(K) * F);
        if (cache_) {
          ST_RETURN_IF_ERROR(MoeDecodeStreamed(l));
        } else {
          for (int i = 0; i < K; ++i) m.cur_k[i] = L.experts[m.sel_TK[i]];
          MoeGates(m.all_k);
          MoeUpDown();
        }
      } else {
        ST_RETURN_IF_ERROR(MoeGrouped(l, T));
      }
      for (size_t i = 0; i < static_cast<size_t>(T) * H; ++i) m.x.f[i] += m.y_TH[i];
      stats_.reglu_total += static_cast<int64_t>(T) * K * F;
      stats_.expert_calls += static_cast<int64_t>(T) * K;
      clock.Lap(&EngineStats::seconds_moe);
    }
    // ---- Final norm and LM head: every row when all_logits, else the last one only.
    PhaseClock clock(&stats_);
    const int first_row = all_logits ? 0 : T - 1;
    const int rows = T - first_row;
    m.h.Resize(rows, H);
    for (int t = 0; t < rows; ++t) {
      RmsNorm(m.x.row(first_row + t), m.output_norm.data(), H, eps, m.h.row(t));
    }
    float* out = all_logits ? logits + c0 * V : logits;
    m.MatMul({{&m.lm_head, &m.h, out, V, 0, 0}}, rows);
    stats_.weight_bytes += m.lm_head.bytes();
    clock.Lap(&EngineStats::seconds_head);
    pos_ += T;
    stats_.tokens += T;
    stats_.forwards += 1;
  }
  return absl::OkStatus();
}

// Decode MoE (one token), step 1: the gate rows of the listed experts (indices into the
// token's k choices), densely, into g_KF.
void Engine::MoeGates(absl::Span<const int> which) {
  Impl& m = *impl_;
  const Kernels& k = *m.kern;
  const int64_t H = cfg_.hidden_size;
  const int F = cfg_.moe_ffn_hidden_size;
  const int n_exp = static_cast<int>(which.size());
  if (n_exp == 0) return;
  m.ActData(m.h, m.cur_k[which[0]].gate.t);  // quantized before the parallel region
  m.pool->For(static_cast<int64_t>(n_exp) * F, 32, [&](int64_t b, int64_t e, int) {
    while (b < e) {  // [b, e) may span experts: one GEMV per expert segment
      const int i = which[static_cast<int>(b / F)];
      const int64_t r0 = b % F, n = std::min<int64_t>(e - b, F - r0);
      const Mat& W = m.cur_k[i].gate;
      k.gemv(W.t, W.row(r0), W.row_bytes, n, m.ActData(m.h, W.t), H,
             &m.g_KF[static_cast<size_t>(i) * F + r0]);
      b += n;
    }
  });
}

// Step 2, once every gate is known: up rows and down_t rows of the active neurons only, fused.
// The active (expert, neuron) list, in routing order, is cut into fixed chunks of
// kDownChunk; each chunk's up dots (a scattered-row GEMV) scale its down_t AXPYs into the
// chunk's own partial sum, and the partials are added in order: the result does not depend on
// which thread ran which chunk, nor on the order the experts arrived in (the budget mode).
void Engine::MoeUpDown() {
  Impl& m = *impl_;
  const Kernels& k = *m.kern;
  const int64_t H = cfg_.hidden_size;
  const int K = cfg_.moe_num_active_primary_experts, F = cfg_.moe_ffn_hidden_size;
  const float* wts = m.wts_TK.data();
  m.act_expert.clear();
  m.act_row.clear();
  for (int i = 0; i < K; ++i) {
    for (int r = 0; r < F; ++r) {
      if (m.g_KF[static_cast<size_t>(i) * F + r] > 0.f) {
        m.act_expert.push_back(i);
        m.act_row.push_back(r);
      }
    }
  }
  const int64_t n_act = static_cast<int64_t>(m.act_row.size());
  constexpr int64_t kDownChunk = 128;
  const int64_t chunks = (n_act + kDownChunk - 1) / kDownChunk;
  m.y_part.assign(static_cast<size_t>(std::max<int64_t>(chunks, 1)) * H, 0.f);
  if (m.act_ptr.size() < static_cast<size_t>(2 * n_act)) m.act_ptr.resize(2 * n_act);
  if (m.act_a.size() < static_cast<size_t>(n_act)) m.act_a.resize(n_act);
  const DType ut = m.cur_k[0].up.t, dt = m.cur_k[0].down_t.t;
  m.ActData(m.h, ut);
  m.pool->Run(chunks, [&](int64_t c, int) {
    const int64_t b = c * kDownChunk, e = std::min(n_act, b + kDownChunk);
    float* yp = m.y_part.data() + static_cast<size_t>(c) * H;
    const uint8_t** up = m.act_ptr.data() + b;
    const uint8_t** down = m.act_ptr.data() + n_act + b;
    float* a = m.act_a.data() + b;
    for (int64_t j = b; j < e; ++j) {
      const ExpertMats& X = m.cur_k[m.act_expert[j]];
      up[j - b] = X.up.row(m.act_row[j]);
      down[j - b] = X.down_t.row(m.act_row[j]);
    }
    k.gemv_rows(ut, up, e - b, m.ActData(m.h, ut), H, a);
    for (int64_t j = b; j < e; ++j) {
      const int i = m.act_expert[j];
      a[j - b] *= m.g_KF[static_cast<size_t>(i) * F + m.act_row[j]] * wts[i];
    }
    k.axpy_rows(dt, down, a, e - b, H, yp);
  });
  float* y = m.y_TH.data();
  std::fill_n(y, H, 0.f);
  for (int64_t c = 0; c < chunks; ++c) {
    const float* yp = m.y_part.data() + static_cast<size_t>(c) * H;
    for (int64_t i = 0; i < H; ++i) y[i] += yp[i];
  }
  const ExpertMats& x0 = m.cur_k[0];
  stats_.reglu_skipped += static_cast<int64_t>(K) * F - n_act;
  stats_.weight_bytes +=
      K * x0.gate.bytes() + n_act * static_cast<int64_t>(x0.up.row_bytes + x0.down_t.row_bytes);
}

// Budget mode, one token: the gates of the experts already cached first, then of each other
// one as its read completes (waiting for the first still in flight when none is ready); the
// up/down step once all k are in. Same arithmetic as in memory, so the same logits.
absl::Status Engine::MoeDecodeStreamed(int l) {
  Impl& m = *impl_;
  const LayerW& L = m.layers[l];
  const int K = cfg_.moe_num_active_primary_experts;
  std::vector<int> pending(K), ready, held;
  std::iota(pending.begin(), pending.end(), 0);
  auto release = [&] {
    for (int i : held) cache_->Release(l, m.sel_TK[i]);
  };
  while (!pending.empty()) {
    ready.clear();
    for (int i : pending) {
      if (cache_->Ready(l, m.sel_TK[i])) ready.push_back(i);
    }
    if (ready.empty()) ready.push_back(pending[0]);  // Acquire waits for (or reads) it
    for (int i : ready) {
      const int e = m.sel_TK[i];
      absl::StatusOr<const uint8_t*> p = cache_->Acquire(l, e);
      if (!p.ok()) {
        release();
        return p.status();
      }
      held.push_back(i);
      m.cur_k[i] = L.experts[e].At(*p, L.expert_base[e]);
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
// (gate rows for every token, up and down_t rows where any token of the group is active; the
// down AXPY skips tokens whose neuron is zero). Experts run in parallel; outputs are summed per
// token in routing order afterwards.
absl::Status Engine::MoeGrouped(int l, int T) {
  Impl& m = *impl_;
  LayerW& L = m.layers[l];
  const int64_t H = cfg_.hidden_size;
  const int E = cfg_.moe_num_primary_experts, K = cfg_.moe_num_active_primary_experts;
  const int A = T * K;
  m.group_begin.assign(E + 1, 0);
  for (int a = 0; a < A; ++a) ++m.group_begin[m.sel_TK[a] + 1];
  for (int e = 0; e < E; ++e) m.group_begin[e + 1] += m.group_begin[e];
  m.group_token.resize(A);
  m.group_weight.resize(A);
  m.assign_of_TK.resize(A);
  {
    std::vector<int32_t> fill(m.group_begin.begin(), m.group_begin.end() - 1);
    for (int a = 0; a < A; ++a) {  // a = t * K + i, in token order within each expert
      const int idx = fill[m.sel_TK[a]]++;
      m.group_token[idx] = a / K;
      m.group_weight[idx] = m.wts_TK[a];
      m.assign_of_TK[a] = idx;
    }
  }
  m.out_AH.resize(static_cast<size_t>(A) * H);
  m.group_active.assign(E, 0);
  m.group_skipped.assign(E, 0);
  const DType gt = L.experts[0].gate.t;
  const uint8_t* hx = m.ActData(m.h, gt);  // quantized once, outside the parallel region
  const size_t xs = ActivationRowBytes(gt, H);
  // Larger groups first, so the dynamic schedule ends balanced.
  std::vector<int> order(E);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    const int na = m.group_begin[a + 1] - m.group_begin[a];
    const int nb = m.group_begin[b + 1] - m.group_begin[b];
    return na > nb || (na == nb && a < b);
  });
  while (!order.empty() && m.group_begin[order.back() + 1] == m.group_begin[order.back()]) {
    order.pop_back();  // experts no token chose
  }
  m.cur_e.resize(E);
  if (!cache_) {
    for (int e : order) m.cur_e[e] = L.experts[e];
    RunGroups(l, order, hx, xs);
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
        m.cur_e[wave[j]] = L.experts[wave[j]].At(*p, L.expert_base[wave[j]]);
      }
      RunGroups(l, wave, hx, xs);
      for (int e : wave) cache_->Release(l, e);
    }
  }
  // Sum each token's k expert outputs in routing order.
  m.pool->For(T, 1, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) {
      float* y = m.y_TH.data() + static_cast<size_t>(t) * H;
      std::fill(y, y + H, 0.f);
      for (int i = 0; i < K; ++i) {
        const float* src = m.out_AH.data() + static_cast<size_t>(m.assign_of_TK[t * K + i]) * H;
        for (int64_t c = 0; c < H; ++c) y[c] += src[c];
      }
    }
  });
  for (int e = 0; e < E; ++e) {
    if (m.group_begin[e + 1] == m.group_begin[e]) continue;
    const ExpertMats& X = L.experts[e];
    stats_.reglu_skipped += m.group_skipped[e];
    stats_.weight_bytes +=
        X.gate.bytes() +
        m.group_active[e] * static_cast<int64_t>(X.up.row_bytes + X.down_t.row_bytes);
  }
  return absl::OkStatus();
}

// The expert groups of MoeGrouped for the listed experts (matrices in m.cur_e), in parallel.
void Engine::RunGroups(int l, absl::Span<const int> experts, const uint8_t* hx, size_t xs) {
  Impl& m = *impl_;
  const Kernels& k = *m.kern;
  const int64_t H = cfg_.hidden_size;
  const int F = cfg_.moe_ffn_hidden_size;
  (void)l;
  m.pool->Run(static_cast<int64_t>(experts.size()), [&](int64_t task, int thread) {
    const int e = experts[task];
    const int a0 = m.group_begin[e], n = m.group_begin[e + 1] - a0;
    if (n == 0) return;
    const ExpertMats& X = m.cur_e[e];
    Scratch& s = m.scratch[thread];
    // Gather the group's activations.
    s.xq.resize(static_cast<size_t>(n) * xs);
    for (int j = 0; j < n; ++j) {
      std::copy_n(hx + static_cast<size_t>(m.group_token[a0 + j]) * xs, xs,
                  s.xq.data() + static_cast<size_t>(j) * xs);
    }
    // Gate: g[j, r] for every row.
    s.g.resize(static_cast<size_t>(n) * F);
    for (int j0 = 0; j0 < n; j0 += kTokenBlock) {
      const int tb = std::min(kTokenBlock, n - j0);
      for (int r = 0; r < F; ++r) {
        k.row_dots(X.gate.t, X.gate.row(r), s.xq.data() + j0 * xs, xs, tb, H,
                   s.g.data() + static_cast<size_t>(j0) * F + r, F);
      }
    }
    // Rows with any active token.
    s.active.clear();
    int64_t skipped = 0;
    for (int r = 0; r < F; ++r) {
      int live = 0;
      for (int j = 0; j < n; ++j) live += s.g[static_cast<size_t>(j) * F + r] > 0.f;
      skipped += n - live;
      if (live > 0) s.active.push_back(r);
    }
    const int na = static_cast<int>(s.active.size());
    // Up for the active rows: u[j, ai].
    s.u.resize(static_cast<size_t>(n) * std::max(na, 1));
    for (int j0 = 0; j0 < n; j0 += kTokenBlock) {
      const int tb = std::min(kTokenBlock, n - j0);
      for (int ai = 0; ai < na; ++ai) {
        k.row_dots(X.up.t, X.up.row(s.active[ai]), s.xq.data() + j0 * xs, xs, tb, H,
                   s.u.data() + static_cast<size_t>(j0) * na + ai, na);
      }
    }
    // Down: out[j] = sum over active rows of act[j, r] * down_t[r], zero activations skipped.
    float* out = m.out_AH.data() + static_cast<size_t>(a0) * H;
    std::fill(out, out + static_cast<size_t>(n) * H, 0.f);
    s.row.resize(static_cast<size_t>(H));
    for (int ai = 0; ai < na; ++ai) {
      const int r = s.active[ai];
      k.dequant_row(X.down_t.t, X.down_t.row(r), H, s.row.data());
      for (int j = 0; j < n; ++j) {
        const float g = s.g[static_cast<size_t>(j) * F + r];
        if (!(g > 0.f)) continue;
        const float a = g * s.u[static_cast<size_t>(j) * na + ai] * m.group_weight[a0 + j];
        k.axpy_f32(a, s.row.data(), out + static_cast<size_t>(j) * H, H);
      }
    }
    m.group_active[e] = na;
    m.group_skipped[e] = skipped;
  });
}

}  // namespace st
