// The torch-free runtime (infer/runtime/engine.h) against a naive f32 reference written here:
// a full recompute of the whole prefix at every step, no KV cache, dense experts.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "infer/format/model_file.h"
#include "infer/quant/codec.h"
#include "infer/quant/kernels.h"
#include "infer/runtime/engine.h"
#include "infer/runtime/expert_cache.h"
#include "tests/test_util.h"

namespace st {
namespace {

using Mat = std::vector<float>;

struct Weights {
  ModelConfig cfg;
  std::map<std::string, Mat> t;  // resident tensors by file name
  // experts[l][e] = {gate [F,H], up [F,H], down_t [F,H]}
  std::vector<std::vector<std::array<Mat, 3>>> experts;
};

// Layer 0 NoPE and global, layer 1 RoPE and sliding (test_util::TinyEngineConfig), with a
// window of 5 in 24 positions.
ModelConfig TinyConfig(bool softmax) {
  ModelConfig c = test_util::TinyEngineConfig();
  c.max_position_embeddings = 24;
  c.sliding_window_size = 5;
  c.moe_primary_router_apply_softmax = softmax;
  EXPECT_TRUE(ValidateModelConfig(c).ok());
  return c;
}

Mat Random(std::mt19937& rng, size_t n, float stddev) {
  std::normal_distribution<float> d(0.f, stddev);
  Mat m(n);
  for (float& v : m) v = d(rng);
  return m;
}

// gain scales the stddev of the attention, router and expert matrices (wider models want
// smaller weights to stay out of the chaotic regime: 1 suits H = 64).
Weights MakeWeights(const ModelConfig& c, uint32_t seed, float gain = 1.f) {
  std::mt19937 rng(seed);
  Weights w;
  w.cfg = c;
  const size_t H = c.hidden_size, V = c.vocab_size, Q = c.q_width(), KV = c.kv_width(),
               E = c.moe_num_primary_experts, F = c.moe_ffn_hidden_size;
  w.t["token_embd"] = Random(rng, V * H, 0.5f);
  Mat on = Random(rng, H, 0.1f);
  for (float& v : on) v += 1.f;
  w.t["output_norm"] = on;
  w.experts.resize(c.num_hidden_layers);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    Mat n1 = Random(rng, H, 0.1f), n2 = Random(rng, H, 0.1f);
    for (float& v : n1) v += 1.f;
    for (float& v : n2) v += 1.f;
    w.t[p + "attn_norm"] = n1;
    w.t[p + "ffn_norm"] = n2;
    w.t[p + "attn_q"] = Random(rng, Q * H, 0.25f * gain);
    w.t[p + "attn_k"] = Random(rng, KV * H, 0.25f * gain);
    w.t[p + "attn_v"] = Random(rng, KV * H, 0.2f * gain);
    w.t[p + "attn_output"] = Random(rng, H * Q, 0.1f * gain);
    w.t[p + "ffn_gate_inp"] = Random(rng, E * H, 0.3f * gain);
    for (size_t e = 0; e < E; ++e) {
      w.experts[l].push_back({Random(rng, F * H, 0.15f * gain), Random(rng, F * H, 0.15f * gain),
                              Random(rng, F * H, 0.15f * gain)});
    }
  }
  return w;
}

// Writes the model with every matrix (embedding, attention, experts) in `mats` (quantized from
// the f32 weights row by row; norms and router stay f32).
void WriteModel(const Weights& w, const std::string& path, DType mats = DType::kF32) {
  auto wr = ModelFileWriter::Create(path);
  ASSERT_TRUE(wr.ok()) << wr.status();
  ModelFileWriter& f = **wr;
  const ModelConfig& c = w.cfg;
  f.SetConfig(c);
  f.SetString(kMetaTokenizerName, "byte");
  f.SetBytes(kMetaTokenizerJson, "");
  f.SetString(kMetaChatTemplate, "");
  f.SetI64(kMetaBosTokenId, -1);
  f.SetI64Array(kMetaEosTokenIds, {256});
  f.SetString(kMetaExportSource, "runtime_test");
  f.SetString(kMetaExportRecipe, DTypeName(mats));
  const int64_t H = c.hidden_size, V = c.vocab_size, Q = c.q_width(), KV = c.kv_width(),
                E = c.moe_num_primary_experts, F = c.moe_ffn_hidden_size;
  // Rows of `m` ([rows, cols]) in type t.
  auto encode = [](const Mat& m, int64_t cols, DType t) {
    const int64_t rows = static_cast<int64_t>(m.size()) / cols, rb = DTypeBytes(t, cols);
    std::vector<uint8_t> out(static_cast<size_t>(rows * rb));
    for (int64_t r = 0; r < rows; ++r) QuantizeRow(t, m.data() + r * cols, cols, &out[r * rb]);
    return out;
  };
  auto add = [&](const std::string& name, std::vector<int64_t> dims) {
    const Mat& m = w.t.at(name);
    const DType t =
        dims.size() == 2 && name.find("ffn_gate_inp") == std::string::npos ? mats : DType::kF32;
    const std::vector<uint8_t> bytes = encode(m, dims.back(), t);
    ASSERT_TRUE(f.AddTensor(name, t, dims, bytes.data(), bytes.size()).ok()) << name;
  };
  add("token_embd", {V, H});
  add("output_norm", {H});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm", {H});
    add(p + "attn_q", {Q, H});
    add(p + "attn_k", {KV, H});
    add(p + "attn_v", {KV, H});
    add(p + "attn_output", {H, Q});
    add(p + "ffn_norm", {H});
    add(p + "ffn_gate_inp", {E, H});
  }
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    for (int e = 0; e < E; ++e) {
      const auto& ex = w.experts[l][e];
      const std::array<std::vector<uint8_t>, 3> bytes = {
          encode(ex[0], H, mats), encode(ex[1], H, mats), encode(ex[2], H, mats)};
      auto part = [&](int i) {
        return ModelFileWriter::Part{mats, {F, H}, bytes[i].data(), bytes[i].size()};
      };
      ASSERT_TRUE(f.AddExpert(l, e, part(0), part(1), part(2)).ok());
    }
  }
  absl::Status s = f.Finish();
  ASSERT_TRUE(s.ok()) << s;
}

// ---- Naive reference: whole-sequence recompute, returns the logits of the last position ----
Mat Linear(const Mat& W, const Mat& x, int rows, int cols) {
  Mat y(rows, 0.f);
  for (int r = 0; r < rows; ++r) {
    double s = 0;
    for (int c = 0; c < cols; ++c) s += static_cast<double>(W[r * cols + c]) * x[c];
    y[r] = static_cast<float>(s);
  }
  return y;
}

Mat Norm(const Mat& x, const Mat& w, double eps) {
  double ss = 0;
  for (float v : x) ss += static_cast<double>(v) * v;
  const double inv = 1.0 / std::sqrt(ss / x.size() + eps);
  Mat y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = static_cast<float>(w[i] * x[i] * inv);
  return y;
}

void RopeRef(Mat& v, int heads, int D, int pos, double theta) {
  for (int n = 0; n < heads; ++n) {
    for (int i = 0; i < D / 2; ++i) {
      const double ang = pos * std::pow(theta, -2.0 * i / D);
      const double a = v[n * D + i], b = v[n * D + i + D / 2];
      v[n * D + i] = static_cast<float>(a * std::cos(ang) - b * std::sin(ang));
      v[n * D + i + D / 2] = static_cast<float>(b * std::cos(ang) + a * std::sin(ang));
    }
  }
}

// The logits of positions [first, S) of `ids`, [S - first, V] row-major.
Mat NaiveLogitsFrom(const Weights& w, const std::vector<int32_t>& ids, int first) {
  const ModelConfig& c = w.cfg;
  const int H = c.hidden_size, V = c.vocab_size, Q = c.q_width(), KV = c.kv_width(), D = c.head_dim,
            N = c.num_attention_heads, G = c.num_key_value_heads, E = c.moe_num_primary_experts,
            K = c.moe_num_active_primary_experts, F = c.moe_ffn_hidden_size;
  const int S = ids.size();
  std::vector<Mat> x(S);
  for (int s = 0; s < S; ++s) {
    x[s].assign(w.t.at("token_embd").begin() + ids[s] * H,
                w.t.at("token_embd").begin() + (ids[s] + 1) * H);
  }
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    std::vector<Mat> router(S), q(S), k(S), v(S);
    for (int s = 0; s < S; ++s) {
      router[s] = Linear(w.t.at(p + "ffn_gate_inp"), x[s], E, H);
      Mat h = Norm(x[s], w.t.at(p + "attn_norm"), c.rms_norm_eps);
      q[s] = Linear(w.t.at(p + "attn_q"), h, Q, H);
      k[s] = Linear(w.t.at(p + "attn_k"), h, KV, H);
      v[s] = Linear(w.t.at(p + "attn_v"), h, KV, H);
      if (c.rope_layout[l]) {
        RopeRef(q[s], N, D, s, c.rope_theta);
        RopeRef(k[s], G, D, s, c.rope_theta);
      }
    }
    const int window = c.sliding_window_layout[l] ? c.sliding_window_size : 0;
    for (int i = 0; i < S; ++i) {
      Mat a(Q, 0.f);
      for (int n = 0; n < N; ++n) {
        const int g = n / (N / G);
        std::vector<double> sc(S, -INFINITY);
        double mx = -INFINITY;
        for (int j = 0; j < S; ++j) {
          const int dist = i - j;
          if (dist < 0 || (window > 0 && dist >= window)) continue;
          double d = 0;
          for (int e = 0; e < D; ++e) d += static_cast<double>(q[i][n * D + e]) * k[j][g * D + e];
          sc[j] = d / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (int j = 0; j < S; ++j) sum += (sc[j] = std::exp(sc[j] - mx));
        for (int j = 0; j < S; ++j) {
          for (int e = 0; e < D; ++e)
            a[n * D + e] += static_cast<float>(sc[j] / sum * v[j][g * D + e]);
        }
      }
      Mat o = Linear(w.t.at(p + "attn_output"), a, H, Q);
      for (int e = 0; e < H; ++e) x[i][e] += o[e];
      // MoE (dense expert evaluation) with the routing from before attention.
      Mat h2 = Norm(x[i], w.t.at(p + "ffn_norm"), c.rms_norm_eps);
      std::vector<int> idx(E);
      for (int e = 0; e < E; ++e) idx[e] = e;
      std::stable_sort(idx.begin(), idx.end(),
                       [&](int a1, int b1) { return router[i][a1] > router[i][b1]; });
      std::vector<double> wt(K);
      double sum = 0;
      for (int j = 0; j < K; ++j) {
        const double z = router[i][idx[j]];
        wt[j] = c.moe_primary_router_apply_softmax ? std::exp(z - router[i][idx[0]])
                                                   : 1.0 / (1.0 + std::exp(-z));
        sum += wt[j];
      }
      for (int j = 0; j < K; ++j) {
        const auto& ex = w.experts[l][idx[j]];
        Mat g = Linear(ex[0], h2, F, H), u = Linear(ex[1], h2, F, H);
        for (int f = 0; f < F; ++f) {
          const double act = std::max(0.f, g[f]) * static_cast<double>(u[f]) * wt[j] / sum;
          for (int e = 0; e < H; ++e) x[i][e] += static_cast<float>(act * ex[2][f * H + e]);
        }
      }
    }
  }
  Mat out;
  for (int s = first; s < S; ++s) {
    const Mat hN = Norm(x[s], w.t.at("output_norm"), c.rms_norm_eps);
    const Mat row = Linear(w.t.at("token_embd"), hN, V, H);
    out.insert(out.end(), row.begin(), row.end());
  }
  return out;
}

Mat NaiveLogits(const Weights& w, const std::vector<int32_t>& ids) {
  return NaiveLogitsFrom(w, ids, static_cast<int>(ids.size()) - 1);
}

std::string TmpPath(const std::string& name) { return test_util::TestDir() + "/" + name + ".stmf"; }

class RuntimeTest : public ::testing::TestWithParam<bool> {};

TEST_P(RuntimeTest, ForwardMatchesNaiveRecomputeAcrossWindowWrap) {
  const ModelConfig cfg = TinyConfig(GetParam());
  const Weights w = MakeWeights(cfg, 1234);
  const std::string path = TmpPath(GetParam() ? "rt_softmax" : "rt_sigmoid");
  WriteModel(w, path);
  // f32 KV cache for the 1e-4 comparison with the naive f32 recompute (the fp16 cache is
  // checked against the f32 engine below).
  EngineOptions opt;
  opt.kv_f16 = false;
  opt.threads = 2;
  auto eng = Engine::Load(path, opt);
  ASSERT_TRUE(eng.ok()) << eng.status();
  Engine& e = **eng;

  int hook_calls = 0;
  e.set_prefetch_hook([&](int layer, absl::Span<const int> experts) {
    EXPECT_GE(experts.size(), static_cast<size_t>(cfg.moe_num_active_primary_experts));
    EXPECT_LT(layer, cfg.num_hidden_layers);
    ++hook_calls;
  });

  std::mt19937 rng(7);
  std::vector<int32_t> ids;
  const int steps = 16;  // > 3 windows of 5: the ring buffer wraps
  double max_diff = 0;
  std::vector<std::vector<float>> decoded;
  for (int s = 0; s < steps; ++s) {
    ids.push_back(static_cast<int32_t>(rng() % cfg.vocab_size));
    auto logits = e.Forward(ids.back());
    ASSERT_TRUE(logits.ok()) << logits.status();
    decoded.push_back(*logits);
    const Mat ref = NaiveLogits(w, ids);
    ASSERT_EQ(logits->size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_NEAR((*logits)[i], ref[i], 1e-4) << "step " << s << " logit " << i;
      max_diff = std::max(max_diff, std::abs(static_cast<double>((*logits)[i]) - ref[i]));
    }
  }
  std::printf("max |engine - naive| over %d steps: %.3g\n", steps, max_diff);
  EXPECT_EQ(hook_calls, steps * cfg.num_hidden_layers);
  EXPECT_EQ(e.position(), steps);
  EXPECT_EQ(e.stats().tokens, steps);
  EXPECT_EQ(e.stats().reglu_total, int64_t{steps} * cfg.num_hidden_layers *
                                       cfg.moe_num_active_primary_experts *
                                       cfg.moe_ffn_hidden_size);
  EXPECT_GT(e.stats().reglu_skipped, 0);
  EXPECT_LT(e.stats().reglu_skipped, e.stats().reglu_total);

  // Reset then Prefill of the same tokens gives the same last logits.
  auto last = NaiveLogits(w, ids);
  e.Reset();
  EXPECT_EQ(e.position(), 0);
  auto pre = e.Prefill(ids);
  ASSERT_TRUE(pre.ok()) << pre.status();
  for (size_t i = 0; i < last.size(); ++i) ASSERT_NEAR((*pre)[i], last[i], 1e-4);

  // Batched prefill (tokens grouped by expert, chunks that cross window boundaries) gives every
  // position's logits as the one-token decode did, with SIMD and scalar kernels, 1 or 2 threads.
  for (int chunk : {3, 5, 16}) {
    for (int kernels : {2, 1, 0}) {  // the best table, AVX2, scalar
      const bool simd = kernels > 0;
      EngineOptions o = opt;
      o.prefill_chunk = chunk;
      o.simd = simd;
      o.avx512 = kernels == 2;
      o.threads = simd ? 2 : 1;
      auto eng2 = Engine::Load(path, o);
      ASSERT_TRUE(eng2.ok()) << eng2.status();
      std::vector<float> all;
      ASSERT_TRUE((*eng2)->PrefillAll(ids, &all).ok());
      const size_t V = cfg.vocab_size;
      ASSERT_EQ(all.size(), ids.size() * V);
      for (size_t s = 0; s < ids.size(); ++s) {
        for (size_t i = 0; i < V; ++i) {
          ASSERT_NEAR(all[s * V + i], decoded[s][i], 1e-4)
              << "chunk " << chunk << " kernels " << kernels << " position " << s << " logit " << i;
        }
      }
      EXPECT_EQ((*eng2)->stats().reglu_total, e.stats().reglu_total / 2);
      if (kernels == 1 && Avx2Kernels() != nullptr) {
        EXPECT_EQ((*eng2)->KernelName(), "avx2+fma+f16c");
      }
    }
  }

  // The default fp16 KV cache stays within fp16 rounding (2^-11 relative per cached value) of
  // the f32 cache.
  // With 3 threads the grouped attention splits each KV head's 2 query heads over two tasks
  // (fewer (token, KV head) pairs than threads); with 1 it keeps them in one: same logits.
  EngineOptions o1, o3;
  o1.threads = 1, o3.threads = 3;
  auto eng16 = Engine::Load(path, o1), eng16s = Engine::Load(path, o3);
  ASSERT_TRUE(eng16.ok() && eng16s.ok());
  EXPECT_TRUE((*eng16)->options().kv_f16);
  double max16 = 0, scale = 0;
  for (size_t s = 0; s < ids.size(); ++s) {
    auto l16 = (*eng16)->Forward(ids[s]);
    auto l16s = (*eng16s)->Forward(ids[s]);
    ASSERT_TRUE(l16.ok() && l16s.ok());
    ASSERT_EQ(*l16, *l16s) << "position " << s;
    for (size_t i = 0; i < l16->size(); ++i) {
      max16 = std::max(max16, std::abs(static_cast<double>((*l16)[i]) - decoded[s][i]));
      scale = std::max(scale, std::abs(static_cast<double>(decoded[s][i])));
    }
  }
  std::printf("fp16 KV cache: max |f16 - f32| = %.3g (max |logit| %.3g)\n", max16, scale);
  EXPECT_LT(max16, 2e-3 * scale);
  EXPECT_GT(max16, 0.0);  // the fp16 cache is really in use
  std::remove(path.c_str());
}

INSTANTIATE_TEST_SUITE_P(Router, RuntimeTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? std::string("Softmax") : std::string("Sigmoid");
                         });

// ---- The sliding-window ring wraps where the defaults put it ----
// A sliding-window layer keeps window + prefill_chunk slots, so with the default chunk (256) a
// short test context never wraps the ring. Here it wraps in every way the engine meets it: a
// full prefill chunk that straddles the wrap (it needs window + chunk - 1 slots at once), then
// decode past it, with a small chunk and with the default one, with the f32 cache and the
// default fp16 one; every position's logits against the naive recompute.
TEST(RuntimeRingTest, SlidingWindowRingWrapsInPrefillAndDecode) {
  ModelConfig cfg = TinyConfig(false);
  cfg.num_hidden_layers = 3;
  cfg.rope_layout = {0, 1, 1};
  cfg.sliding_window_layout = {0, 1, 1};  // layer 0 global, layers 1-2 a ring each
  cfg.sliding_window_size = 8;
  cfg.max_position_embeddings = 560;
  ASSERT_TRUE(ValidateModelConfig(cfg).ok());
  const Weights w = MakeWeights(cfg, 4321);
  const std::string path = TmpPath("rt_ring");
  WriteModel(w, path);
  std::mt19937 rng(11);
  std::vector<int32_t> ids(560);
  for (int32_t& t : ids) t = static_cast<int32_t>(rng() % cfg.vocab_size);
  const Mat naive = NaiveLogitsFrom(w, ids, 0);  // [560, V]
  const size_t V = cfg.vocab_size;
  double scale = 0;
  for (float v : naive) scale = std::max(scale, std::abs(static_cast<double>(v)));

  struct Case {
    int chunk, context, prefill;  // tokens prefilled, then decoded up to `context`
  };
  const EngineOptions defaults;
  for (const Case& k : {Case{12, 64, 30}, Case{defaults.prefill_chunk, 560, 520}}) {
    const int ring = cfg.sliding_window_size + k.chunk;
    // The ring wraps inside a full prefill chunk and again while decoding.
    ASSERT_NE(ring % k.chunk, 0);  // the chunk holding position `ring` starts before it
    ASSERT_LE((ring / k.chunk + 1) * k.chunk, k.prefill);
    ASSERT_GT(k.context, k.prefill + cfg.sliding_window_size);
    for (bool f16 : {false, true}) {
      EngineOptions o;
      o.kv_f16 = f16;
      o.prefill_chunk = k.chunk;
      o.max_context = k.context;
      o.threads = 2;
      auto eng = Engine::Load(path, o);
      ASSERT_TRUE(eng.ok()) << eng.status();
      Engine& e = **eng;
      std::vector<float> got;  // [context, V]
      const std::vector<int32_t> prompt(ids.begin(), ids.begin() + k.prefill);
      ASSERT_TRUE(e.PrefillAll(prompt, &got).ok());
      for (int p = k.prefill; p < k.context; ++p) {
        auto l = e.Forward(ids[p]);
        ASSERT_TRUE(l.ok()) << l.status();
        got.insert(got.end(), l->begin(), l->end());
      }
      ASSERT_EQ(got.size(), static_cast<size_t>(k.context) * V);
      double max_diff = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        max_diff = std::max(max_diff, std::abs(static_cast<double>(got[i]) - naive[i]));
      }
      std::printf(
          "chunk %d, ring %d, %d positions, %s KV: max |engine - naive| = %.3g (max "
          "|logit| %.3g)\n",
          k.chunk, ring, k.context, f16 ? "f16" : "f32", max_diff, scale);
      // f32: the engine's float arithmetic against the double reference; f16: the cache's
      // rounding (2^-11 relative per value), as the test above bounds it. A slot off by one
      // position moves logits by their own size.
      // (f32 is the sharp check: a key missing from or added to a window moves logits by far
      // more; f16 adds the cache's rounding, 2^-11 relative per value, over 560 positions.)
      EXPECT_LT(max_diff, f16 ? 1e-2 * scale : 2e-4) << "chunk " << k.chunk;
    }
  }
  std::remove(path.c_str());
}

// ---- The SIMD tables' four-block paths, end to end ----
// The Q4_0 kernels take four blocks (128 values) a step and the nb % 4 rest separately; the
// models above (H = 64, two blocks) never reach the four-block code. Here H = 288 (nine blocks:
// two groups of four and a tail), N*D = 256 (two groups), every matrix Q4_0 or Q8_0, and the
// engine with each SIMD table against the scalar table (the reference codec's arithmetic) on
// every prefilled and decoded position. The kernels promise each dot within 1e-5 of the sum of
// |w x| of the scalar one; end to end that stays far below the bound used here, while a wrong
// group layout moves logits by their own size. Routing must not change at all.
TEST(RuntimeSimdTest, WideQuantizedModelMatchesScalarKernelsEndToEnd) {
  if (Avx2Kernels() == nullptr) GTEST_SKIP() << "no SIMD kernel table on this CPU";
  ModelConfig cfg = TinyConfig(false);
  cfg.hidden_size = 288;
  cfg.num_attention_heads = 4;
  cfg.num_key_value_heads = 2;
  cfg.head_dim = 64;
  cfg.moe_num_primary_experts = 8;
  cfg.moe_num_active_primary_experts = 2;
  cfg.moe_ffn_hidden_size = 64;
  cfg.sliding_window_size = 16;
  cfg.max_position_embeddings = 64;
  ASSERT_TRUE(ValidateModelConfig(cfg).ok());
  // Gain 0.3 for the wider model: at the H = 64 gain its random layers are chaotic enough that
  // a single Q8_0 rounding flip (below) moves a logit by 1% of the logit scale.
  const Weights w = MakeWeights(cfg, 2024, 0.3f);
  std::mt19937 rng(3);
  std::vector<int32_t> ids(40);
  for (int32_t& t : ids) t = static_cast<int32_t>(rng() % cfg.vocab_size);
  const std::vector<int32_t> prompt(ids.begin(), ids.begin() + 32);
  for (DType t : {DType::kQ4_0, DType::kQ8_0}) {
    const std::string path = TmpPath(std::string("rt_wide_") + DTypeName(t));
    WriteModel(w, path, t);
    // Prefill in chunks of 16 (the grouped MoE, row_dots), then decode (GEMV, sparse up/down).
    auto run = [&](int kernels, std::vector<float>* logits, RoutingProfile* routing) {
      EngineOptions o;
      o.simd = kernels > 0;
      o.avx512 = kernels == 2;
      o.threads = 2;
      o.prefill_chunk = 16;
      o.kv_f16 = false;
      auto eng = Engine::Load(path, o);
      ASSERT_TRUE(eng.ok()) << eng.status();
      ASSERT_TRUE((*eng)->PrefillAll(prompt, logits).ok());
      for (size_t p = prompt.size(); p < ids.size(); ++p) {
        auto l = (*eng)->Forward(ids[p]);
        ASSERT_TRUE(l.ok()) << l.status();
        logits->insert(logits->end(), l->begin(), l->end());
      }
      *routing = (*eng)->routing();
      if (kernels == 0) {
        EXPECT_EQ((*eng)->KernelName(), "scalar");
      }
    };
    std::vector<float> ref;
    RoutingProfile ref_routing;
    run(0, &ref, &ref_routing);
    double scale = 0;
    for (float v : ref) scale = std::max(scale, std::abs(static_cast<double>(v)));
    for (int kernels : {2, 1}) {  // the best table, AVX2
      std::vector<float> got;
      RoutingProfile routing;
      run(kernels, &got, &routing);
      ASSERT_EQ(got.size(), ref.size());
      // Per position: within the summation-order bound, except where an activation landed
      // within rounding of a Q8_0 boundary and was quantized one step apart (a discontinuity of
      // the activation codec, not of a kernel): at most 1/8 of the positions, within 1%.
      const size_t V = cfg.vocab_size;
      double max_diff = 0;
      int off = 0;
      for (size_t p = 0; p < ids.size(); ++p) {
        double d = 0;
        for (size_t i = 0; i < V; ++i) {
          d = std::max(d, std::abs(static_cast<double>(got[p * V + i]) - ref[p * V + i]));
        }
        max_diff = std::max(max_diff, d);
        if (d > 1e-5 * scale) ++off;
      }
      std::printf(
          "%s, kernels %d: max |simd - scalar| = %.3g (max |logit| %.3g), %d of %zu "
          "positions beyond 1e-5 of it\n",
          DTypeName(t), kernels, max_diff, scale, off, ids.size());
      EXPECT_LE(off, static_cast<int>(ids.size() / 8)) << DTypeName(t) << " kernels " << kernels;
      EXPECT_LT(max_diff, 1e-2 * scale) << DTypeName(t) << " kernels " << kernels;
      EXPECT_EQ(routing.counts, ref_routing.counts) << DTypeName(t) << " kernels " << kernels;
    }
    std::remove(path.c_str());
  }
}

TEST(RuntimeErrors, ContextOverflowAndBadTokens) {
  const ModelConfig cfg = TinyConfig(false);
  const Weights w = MakeWeights(cfg, 99);
  const std::string path = TmpPath("rt_errors");
  WriteModel(w, path);
  auto eng = Engine::Load(path);
  ASSERT_TRUE(eng.ok()) << eng.status();
  Engine& e = **eng;
  EXPECT_EQ(e.Forward(-1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(e.Forward(cfg.vocab_size).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(e.Prefill({}).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> too_long(cfg.max_position_embeddings + 1, 1);
  EXPECT_EQ(e.Prefill(too_long).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(e.position(), 0);  // nothing appended on error
  std::vector<int32_t> full(cfg.max_position_embeddings, 2);
  ASSERT_TRUE(e.Prefill(full).ok());
  auto over = e.Forward(3);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(over.status().message().find("beyond the context"), std::string::npos);
  EXPECT_EQ(e.position(), cfg.max_position_embeddings);
  e.Reset();
  EXPECT_TRUE(e.Forward(3).ok());
  std::remove(path.c_str());
}

// A thread count beyond kMaxEngineThreads (or negative) is refused at load with the bound, never
// an abort from std::thread; the largest allowed count loads.
TEST(RuntimeErrors, ThreadCountIsBounded) {
  const ModelConfig cfg = TinyConfig(false);
  const std::string path = TmpPath("rt_threads");
  WriteModel(MakeWeights(cfg, 5), path);
  for (int threads : {-1, kMaxEngineThreads + 1, 1000000}) {
    EngineOptions o;
    o.threads = threads;
    auto eng = Engine::Load(path, o);
    ASSERT_FALSE(eng.ok()) << threads;
    EXPECT_EQ(eng.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(eng.status().message().find("threads must be in [0, 1024]"), std::string::npos)
        << eng.status();
  }
  EngineOptions o;
  o.threads = 3;
  auto eng = Engine::Load(path, o);
  ASSERT_TRUE(eng.ok()) << eng.status();
  EXPECT_EQ((*eng)->threads(), 3);
  std::remove(path.c_str());
}

TEST(RuntimeErrors, LoadMissingFile) {
  auto eng = Engine::Load("/nonexistent/model.stmf");
  EXPECT_FALSE(eng.ok());
}

// ---------------------------------------------------------------- memory-budget mode

// The plan of a generous budget tells the minimum; a budget of exactly that holds k slots, so
// nearly every step evicts.
int64_t MinimumBudget(const std::string& path, EngineOptions o) {
  o.memory_budget = int64_t{1} << 30;
  auto e = Engine::Load(path, o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? (*e)->memory_plan().minimum : 0;
}

TEST(BudgetTest, SameLogitsAsInMemoryWithEvictionsEveryStep) {
  const ModelConfig cfg = TinyConfig(false);
  const Weights w = MakeWeights(cfg, 4321);
  const std::string path = TmpPath("rt_budget");
  WriteModel(w, path);
  EngineOptions base;
  base.threads = 2;
  auto mem = Engine::Load(path, base);
  ASSERT_TRUE(mem.ok()) << mem.status();
  std::mt19937 rng(11);
  std::vector<int32_t> ids;
  for (int i = 0; i < 20; ++i) ids.push_back(static_cast<int32_t>(rng() % cfg.vocab_size));
  std::vector<std::vector<float>> want;
  for (int32_t id : ids) {
    auto l = (*mem)->Forward(id);
    ASSERT_TRUE(l.ok());
    want.push_back(*l);
  }
  std::vector<float> want_all;
  (*mem)->Reset();
  ASSERT_TRUE((*mem)->PrefillAll(ids, &want_all).ok());

  const int64_t minimum = MinimumBudget(path, base);
  ASSERT_GT(minimum, 0);
  for (CachePolicy policy : {CachePolicy::kLru, CachePolicy::kLfu, CachePolicy::kLrfu}) {
    for (bool prefetch : {true, false}) {
      SCOPED_TRACE(std::string(CachePolicyName(policy)) + (prefetch ? " prefetch" : " on demand"));
      EngineOptions o = base;
      o.memory_budget = minimum;
      o.cache_policy = policy;
      o.prefetch = prefetch;
      auto eng = Engine::Load(path, o);
      ASSERT_TRUE(eng.ok()) << eng.status();
      Engine& e = **eng;
      ASSERT_NE(e.expert_cache(), nullptr);
      EXPECT_EQ(e.memory_plan().slots, cfg.moe_num_active_primary_experts);
      for (size_t s = 0; s < ids.size(); ++s) {
        auto l = e.Forward(ids[s]);
        ASSERT_TRUE(l.ok()) << l.status();
        for (size_t i = 0; i < l->size(); ++i) {
          ASSERT_EQ((*l)[i], want[s][i]) << "step " << s << " logit " << i;  // bit for bit
        }
      }
      const ExpertCacheStats& st = e.expert_cache()->stats();
      // 2 layers x 2 experts a step through 2 slots: every step reads and evicts.
      EXPECT_GE(st.evictions, static_cast<int64_t>(ids.size()));
      EXPECT_GE(st.reads, static_cast<int64_t>(ids.size()));
      EXPECT_EQ(st.requests, static_cast<int64_t>(ids.size()) * cfg.num_hidden_layers *
                                 cfg.moe_num_active_primary_experts);
      EXPECT_LT(st.hits, st.requests);
      EXPECT_EQ(st.bytes_read,
                st.reads * static_cast<int64_t>(e.file().GetExpertExtent(0, 0)->size));
      // Batched prefill in waves of one expert: the same logits at every position.
      e.Reset();
      std::vector<float> all;
      ASSERT_TRUE(e.PrefillAll(ids, &all).ok());
      ASSERT_EQ(all.size(), want_all.size());
      for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], want_all[i]) << i;
    }
  }
  std::remove(path.c_str());
}

TEST(BudgetTest, TooSmallBudgetStatesTheMinimum) {
  const ModelConfig cfg = TinyConfig(false);
  const std::string path = TmpPath("rt_budget_small");
  WriteModel(MakeWeights(cfg, 5), path);
  EngineOptions o;
  const int64_t minimum = MinimumBudget(path, o);
  o.memory_budget = minimum - 1;
  auto e = Engine::Load(path, o);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kResourceExhausted);
  char want[64];
  std::snprintf(want, sizeof(want), "needs at least %.2f MiB", minimum / 1048576.0);
  EXPECT_NE(e.status().message().find(want), std::string::npos) << e.status();
  o.memory_budget = minimum;
  EXPECT_TRUE(Engine::Load(path, o).ok());
  std::remove(path.c_str());
}

TEST(BudgetTest, ShortReadIsAnErrorNeverGarbage) {
  const ModelConfig cfg = TinyConfig(false);
  const std::string path = TmpPath("rt_budget_trunc");
  WriteModel(MakeWeights(cfg, 6), path);
  for (IoBackend io : {IoBackend::kAuto, IoBackend::kPread}) {
    EngineOptions o;
    o.memory_budget = MinimumBudget(path, o);
    o.io = io;
    auto eng = Engine::Load(path, o);
    ASSERT_TRUE(eng.ok()) << eng.status();
    // The file loses everything from layer 1's first expert on after it was opened (a file
    // replaced or truncated under a running engine): those reads come back short.
    const uint64_t cut = (*eng)->file().GetExpertExtent(1, 0)->offset;
    ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(cut)), 0);
    absl::Status first_error;
    for (int i = 0; i < 4 && first_error.ok(); ++i) first_error = (*eng)->Forward(1).status();
    EXPECT_EQ(first_error.code(), absl::StatusCode::kDataLoss) << first_error;
    EXPECT_NE(first_error.message().find("short read"), std::string::npos) << first_error;
    EXPECT_NE(first_error.message().find("layer 1"), std::string::npos) << first_error;
    WriteModel(MakeWeights(cfg, 6), path);  // whole again for the next backend
  }
  std::remove(path.c_str());
}

TEST(ExpertCacheTest, PoliciesEvictTheRightEntryAndNeverOneInUseOrPinned) {
  const ModelConfig cfg = TinyConfig(false);  // 2 layers x 4 experts
  const std::string path = TmpPath("rt_cache");
  WriteModel(MakeWeights(cfg, 7), path);
  auto file = ModelFile::Open(path);
  ASSERT_TRUE(file.ok());
  const ModelFile& f = **file;
  auto use = [](ExpertCache& c, int l, int e) {
    auto p = c.Acquire(l, e);
    ASSERT_TRUE(p.ok()) << p.status();
    c.Release(l, e);
  };
  ExpertCacheOptions o;
  o.slots = 3;
  {  // LRU: the least recently used goes.
    o.policy = CachePolicy::kLru;
    auto c = ExpertCache::Create(f, path, o);
    ASSERT_TRUE(c.ok()) << c.status();
    ExpertCache& cache = **c;
    use(cache, 0, 0);
    use(cache, 0, 1);
    use(cache, 0, 2);
    use(cache, 0, 0);  // 0 is now the most recent; 1 the least
    use(cache, 0, 3);
    EXPECT_FALSE(cache.Contains(0, 1));
    EXPECT_TRUE(cache.Contains(0, 0) && cache.Contains(0, 2) && cache.Contains(0, 3));
    EXPECT_EQ(cache.stats().evictions, 1);
    EXPECT_EQ(cache.stats().hits, 1);
    // The bytes are the file's extent.
    auto p = cache.Acquire(0, 3);
    ASSERT_TRUE(p.ok());
    const ExpertExtent x = *f.GetExpertExtent(0, 3);
    EXPECT_EQ(std::memcmp(*p, f.data() + x.offset, x.size), 0);
    // In use: never evicted, and with every slot in use a new expert is refused.
    auto p0 = cache.Acquire(0, 0);
    auto p2 = cache.Acquire(0, 2);
    ASSERT_TRUE(p0.ok() && p2.ok());
    auto none = cache.Acquire(1, 0);
    EXPECT_EQ(none.status().code(), absl::StatusCode::kResourceExhausted);
    cache.Release(0, 3);
    cache.Release(0, 0);
    cache.Release(0, 2);
  }
  {  // LFU: the least often used goes, even when it is the most recent.
    o.policy = CachePolicy::kLfu;
    auto c = ExpertCache::Create(f, path, o);
    ASSERT_TRUE(c.ok());
    ExpertCache& cache = **c;
    for (int i = 0; i < 3; ++i) use(cache, 1, 0);
    use(cache, 1, 2);
    use(cache, 1, 2);
    use(cache, 1, 1);  // once, and the most recent
    use(cache, 1, 3);
    EXPECT_FALSE(cache.Contains(1, 1));
    EXPECT_TRUE(cache.Contains(1, 0) && cache.Contains(1, 2));
  }
  {  // LRFU: four uses long ago weigh less than two recent ones; LFU keeps the old favourite.
    for (CachePolicy policy : {CachePolicy::kLrfu, CachePolicy::kLfu}) {
      o.policy = policy;
      auto c = ExpertCache::Create(f, path, o);
      ASSERT_TRUE(c.ok());
      ExpertCache& cache = **c;
      for (int i = 0; i < 4; ++i) use(cache, 0, 0);
      for (int i = 0; i < 2; ++i) {
        use(cache, 1, 0);
        use(cache, 1, 1);
      }
      use(cache, 0, 1);
      if (policy == CachePolicy::kLrfu) {
        EXPECT_FALSE(cache.Contains(0, 0));
        EXPECT_TRUE(cache.Contains(1, 0) && cache.Contains(1, 1));
      } else {
        EXPECT_TRUE(cache.Contains(0, 0));
        EXPECT_FALSE(cache.Contains(1, 0));
      }
    }
    o.policy = CachePolicy::kLfu;
  }
  {  // LRFU across passes: the oldest pass goes first, its least used expert before the others.
    o.policy = CachePolicy::kLrfu;
    auto c = ExpertCache::Create(f, path, o);
    ASSERT_TRUE(c.ok());
    ExpertCache& cache = **c;
    cache.NewPass();
    for (int i = 0; i < 3; ++i) use(cache, 0, 0);
    use(cache, 0, 1);
    cache.NewPass();
    use(cache, 0, 2);
    use(cache, 0, 3);  // evicts (0, 1): oldest pass, fewer uses than (0, 0)
    EXPECT_FALSE(cache.Contains(0, 1));
    EXPECT_TRUE(cache.Contains(0, 0));
    use(cache, 1, 0);  // evicts (0, 0): the last of the oldest pass, however often it was used
    EXPECT_FALSE(cache.Contains(0, 0));
    EXPECT_TRUE(cache.Contains(0, 2) && cache.Contains(0, 3) && cache.Contains(1, 0));
    o.policy = CachePolicy::kLfu;
  }
  {  // Pinned: survives any amount of traffic.
    auto c = ExpertCache::Create(f, path, o);
    ASSERT_TRUE(c.ok());
    ExpertCache& cache = **c;
    const std::vector<std::pair<int, int>> hot = {{1, 3}, {0, 2}};
    auto n = cache.Pin(hot, 1);
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(*n, 1);
    for (int r = 0; r < 5; ++r) {
      for (int l = 0; l < 2; ++l) {
        for (int e = 0; e < 4; ++e) use(cache, l, e);
      }
    }
    EXPECT_TRUE(cache.Contains(1, 3));
    EXPECT_EQ(cache.pinned(), 1);
    // Prefetch reads count as used once acquired.
    cache.ResetStats();
    const std::vector<int> ex = {0, 1};
    cache.Prefetch(0, ex);
    use(cache, 0, 0);
    use(cache, 0, 1);
    EXPECT_EQ(cache.stats().requests, 2);
    EXPECT_EQ(cache.stats().prefetch_used, cache.stats().prefetch_reads);
  }
  std::remove(path.c_str());
}

TEST(ExpertCacheTest, RoutingProfileRoundTripAndBadFiles) {
  RoutingProfile p;
  p.layers = 2;
  p.experts = 3;
  p.tokens = 5;
  p.counts = {1, 0, 9, 4, 4, 2};
  const std::string path = TmpPath("profile") + ".json";
  ASSERT_TRUE(WriteRoutingProfile(path, p).ok());
  auto q = ReadRoutingProfile(path);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->counts, p.counts);
  EXPECT_EQ(q->tokens, 5);
  const auto hot = q->Hottest();
  EXPECT_EQ(hot[0], (std::pair<int, int>{0, 2}));
  EXPECT_EQ(hot[1], (std::pair<int, int>{1, 0}));
  EXPECT_EQ(hot[2], (std::pair<int, int>{1, 1}));
  for (const char* bad :
       {"[]", "{\"layers\":2,\"experts\":3,\"counts\":[[1,2,3]]}",
        "{\"layers\":1,\"experts\":2,\"counts\":[[1,-2]]}",
        "{\"layers\":1,\"experts\":1,\"counts\":[[1]],\"extra\":1}", "nonsense"}) {
    FILE* fp = std::fopen(path.c_str(), "w");
    std::fputs(bad, fp);
    std::fclose(fp);
    auto r = ReadRoutingProfile(path);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ReadRoutingProfile(path + ".absent").status().code(), absl::StatusCode::kNotFound);
  std::remove(path.c_str());
}

// Regressions of the routing-profile parser (fuzz_routing_profile): a mistyped "tokens" threw
// nlohmann's type_error out of the parser (a crash), and sizes beyond int were narrowed
// (2^32 + 1 layers read as 1) instead of refused.
TEST(ExpertCacheTest, RoutingProfileRejectsMistypedAndHugeNumbers) {
  for (const char* bad : {
           R"({"layers":1,"experts":1,"tokens":"many","counts":[[1]]})",
           R"({"layers":1,"experts":1,"tokens":-1,"counts":[[1]]})",
           R"({"layers":1,"experts":1,"tokens":1.5,"counts":[[1]]})",
           R"({"layers":4294967297,"experts":1,"counts":[[1]]})",
           R"({"layers":0,"experts":1,"counts":[]})",
           R"({"layers":1,"experts":0,"counts":[[]]})",
           R"({"layers":1,"experts":18446744073709551615,"counts":[[1]]})",
           R"({"layers":1,"experts":1,"counts":[[18446744073709551615]]})",
           R"({"layers":1,"experts":1,"counts":[[1.0]]})",
       }) {
    auto r = ParseRoutingProfile(bad, "p.json");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("routing profile 'p.json'"), std::string::npos)
        << r.status();
  }
  auto ok = ParseRoutingProfile(R"({"layers":1,"experts":2,"counts":[[0,9223372036854775807]]})",
                                "p.json");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->tokens, 0);
  EXPECT_EQ(ok->counts[1], INT64_MAX);
}

// ---- Many conversations in one engine (Sequence, DecodeBatch, Truncate) ----

// Three layers (global NoPE, two sliding RoPE rings of window 8 + chunk 4), 96 positions.
ModelConfig BatchConfig() {
  ModelConfig cfg = TinyConfig(false);
  cfg.num_hidden_layers = 3;
  cfg.rope_layout = {0, 1, 1};
  cfg.sliding_window_layout = {0, 1, 1};
  cfg.sliding_window_size = 8;
  cfg.max_position_embeddings = 96;
  EXPECT_TRUE(ValidateModelConfig(cfg).ok());
  return cfg;
}

int32_t Argmax(const float* v, int n) {
  return static_cast<int32_t>(std::max_element(v, v + n) - v);
}

// Four conversations of different prompt lengths, greedy, decoded together by DecodeBatch with
// conversations joining late and leaving early (as a server's continuous batching does), give
// token for token what each gives decoded alone through Forward, with logits equal within
// float rounding; Q8_0 weights and the fp16 cache (the server's defaults), chunk 4 so the rings
// wrap during both prefill and decode.
TEST(BatchDecodeTest, BatchedEqualsOneAtATimeTokenForToken) {
  const ModelConfig cfg = BatchConfig();
  const Weights w = MakeWeights(cfg, 2024);
  const std::string path = TmpPath("rt_batch");
  WriteModel(w, path, DType::kQ8_0);
  EngineOptions o;
  o.threads = 2;
  o.prefill_chunk = 4;
  const int V = cfg.vocab_size;
  struct Conv {
    std::vector<int32_t> prompt;
    int join, steps;  // the batch step it joins at, and how many tokens it decodes
  };
  std::mt19937 rng(5);
  std::vector<Conv> convs = {{{}, 0, 40}, {{}, 0, 24}, {{}, 3, 30}, {{}, 9, 20}};
  const int lengths[] = {3, 7, 13, 22};
  for (size_t c = 0; c < convs.size(); ++c) {
    for (int i = 0; i < lengths[c]; ++i) {
      convs[c].prompt.push_back(static_cast<int32_t>(rng() % cfg.vocab_size));
    }
  }
  // Alone: prefill, then Forward on each greedy token.
  auto solo = Engine::Load(path, o);
  ASSERT_TRUE(solo.ok()) << solo.status();
  std::vector<std::vector<int32_t>> want_tokens(convs.size());
  std::vector<std::vector<std::vector<float>>> want_logits(convs.size());
  for (size_t c = 0; c < convs.size(); ++c) {
    (*solo)->Reset();
    auto l = (*solo)->Prefill(convs[c].prompt);
    ASSERT_TRUE(l.ok()) << l.status();
    for (int s = 0; s < convs[c].steps; ++s) {
      const int32_t next = Argmax(l->data(), V);
      want_tokens[c].push_back(next);
      l = (*solo)->Forward(next);
      ASSERT_TRUE(l.ok()) << l.status();
      want_logits[c].push_back(*l);
    }
  }
  // Together: with every expert in memory, and under the smallest memory budget (experts
  // streamed through a cache of k slots, KV reserved for 4 conversations).
  EngineOptions budget = o;
  budget.sequences = 4;
  budget.memory_budget = MinimumBudget(path, budget);
  for (const EngineOptions& eo : {o, budget}) {
    SCOPED_TRACE(eo.memory_budget > 0 ? "memory budget" : "in memory");
    auto eng = Engine::Load(path, eo);
    ASSERT_TRUE(eng.ok()) << eng.status();
    Engine& e = **eng;
    ASSERT_EQ(e.expert_cache() != nullptr, eo.memory_budget > 0);
    std::vector<std::unique_ptr<Sequence>> seqs(convs.size());
    std::vector<std::vector<float>> last(convs.size());
    std::vector<std::vector<int32_t>> got_tokens(convs.size());
    double scale = 0, max_diff = 0;
    int max_batch_seen = 0;
    for (int step = 0; step < 64; ++step) {
      std::vector<Sequence*> batch;
      std::vector<int32_t> tokens;
      std::vector<size_t> which;
      for (size_t c = 0; c < convs.size(); ++c) {
        if (step == convs[c].join) {
          seqs[c] = e.NewSequence();
          auto l = e.Prefill(seqs[c].get(), convs[c].prompt);
          ASSERT_TRUE(l.ok()) << l.status();
          last[c] = *l;
        }
        if (seqs[c] == nullptr || static_cast<int>(got_tokens[c].size()) == convs[c].steps) {
          continue;
        }
        const int32_t next = Argmax(last[c].data(), V);
        got_tokens[c].push_back(next);
        batch.push_back(seqs[c].get());
        tokens.push_back(next);
        which.push_back(c);
      }
      if (batch.empty()) break;
      max_batch_seen = std::max(max_batch_seen, static_cast<int>(batch.size()));
      std::vector<float> logits_BV;
      ASSERT_TRUE(e.DecodeBatch(batch, tokens, &logits_BV).ok());
      ASSERT_EQ(logits_BV.size(), batch.size() * static_cast<size_t>(V));
      for (size_t b = 0; b < batch.size(); ++b) {
        const size_t c = which[b];
        last[c].assign(logits_BV.begin() + b * V, logits_BV.begin() + (b + 1) * V);
        const std::vector<float>& want = want_logits[c][got_tokens[c].size() - 1];
        for (int i = 0; i < V; ++i) {
          scale = std::max(scale, std::abs(static_cast<double>(want[i])));
          max_diff = std::max(max_diff, std::abs(static_cast<double>(last[c][i]) - want[i]));
        }
      }
    }
    EXPECT_EQ(max_batch_seen, 4);
    for (size_t c = 0; c < convs.size(); ++c) {
      EXPECT_EQ(got_tokens[c], want_tokens[c]) << "conversation " << c;
      EXPECT_EQ(seqs[c]->position(), static_cast<int>(convs[c].prompt.size()) + convs[c].steps);
    }
    std::printf("batched vs alone (%s): max |logit diff| = %.3g (max |logit| %.3g)\n",
                eo.memory_budget > 0 ? "memory budget" : "in memory", max_diff, scale);
    // The batch takes the grouped MoE and the multi-token kernels: rounding only. A token that
    // read another conversation's keys, or its own at the wrong position, moves logits by
    // their own size.
    EXPECT_LT(max_diff, 1e-3 * scale);
    if (e.expert_cache() != nullptr) EXPECT_GT(e.expert_cache()->stats().evictions, 0);
  }
  std::remove(path.c_str());
}

// The next turn of a conversation keeps the prefix it shares with the last one: prefill A + B,
// truncate to A, prefill C gives the logits of A + C from scratch (the naive reference). On a
// ring that has moved past what position n attends, Truncate starts over (returns 0).
TEST(BatchDecodeTest, TruncateKeepsASharedPrefixOrStartsOver) {
  const ModelConfig cfg = BatchConfig();
  const Weights w = MakeWeights(cfg, 77);
  const std::string path = TmpPath("rt_truncate");
  WriteModel(w, path);
  EngineOptions o;
  o.threads = 2;
  o.prefill_chunk = 4;  // ring = window 8 + 4 = 12 slots
  o.kv_f16 = false;
  auto eng = Engine::Load(path, o);
  ASSERT_TRUE(eng.ok()) << eng.status();
  Engine& e = **eng;
  std::mt19937 rng(9);
  auto random_ids = [&](int n) {
    std::vector<int32_t> v(n);
    for (int32_t& t : v) t = static_cast<int32_t>(rng() % cfg.vocab_size);
    return v;
  };
  const std::vector<int32_t> a = random_ids(30), b = random_ids(3), c = random_ids(5);
  std::vector<int32_t> ab = a, ac = a;
  ab.insert(ab.end(), b.begin(), b.end());
  ac.insert(ac.end(), c.begin(), c.end());
  const Mat naive = NaiveLogitsFrom(w, ac, static_cast<int>(ac.size()) - 1);  // [1, V]
  auto seq = e.NewSequence();
  ASSERT_TRUE(e.Prefill(seq.get(), ab).ok());
  ASSERT_EQ(e.Truncate(seq.get(), static_cast<int>(a.size())), static_cast<int>(a.size()));
  auto l = e.Prefill(seq.get(), c);
  ASSERT_TRUE(l.ok()) << l.status();
  double scale = 0, diff = 0;
  for (int i = 0; i < cfg.vocab_size; ++i) {
    scale = std::max(scale, std::abs(static_cast<double>(naive[i])));
    diff = std::max(diff, std::abs(static_cast<double>((*l)[i]) - naive[i]));
  }
  EXPECT_LT(diff, 2e-4) << "max |logit| " << scale;
  EXPECT_EQ(seq->position(), static_cast<int>(ac.size()));
  // 40 positions: the rings hold 28..39. Position 36 attends 29..36: kept. Position 20 attends
  // 13..20, overwritten: start over.
  auto seq2 = e.NewSequence();
  ASSERT_TRUE(e.Prefill(seq2.get(), random_ids(40)).ok());
  EXPECT_EQ(e.Truncate(seq2.get(), 36), 36);
  EXPECT_EQ(e.Truncate(seq2.get(), 20), 0);
  EXPECT_EQ(seq2->position(), 0);
  EXPECT_EQ(seq2->kv_bytes() > 0, true);  // the rings stay allocated; global layers cleared
  std::remove(path.c_str());
}

TEST(BatchDecodeTest, BadBatchesAreRefusedAndChangeNothing) {
  const ModelConfig cfg = BatchConfig();
  const Weights w = MakeWeights(cfg, 3);
  const std::string path = TmpPath("rt_batch_errors");
  WriteModel(w, path);
  EngineOptions o;
  o.threads = 1;
  o.prefill_chunk = 4;
  auto eng = Engine::Load(path, o);
  auto other = Engine::Load(path, o);
  ASSERT_TRUE(eng.ok() && other.ok());
  Engine& e = **eng;
  auto s1 = e.NewSequence(), s2 = e.NewSequence(), foreign = (*other)->NewSequence();
  ASSERT_TRUE(e.Prefill(s1.get(), std::vector<int32_t>{1, 2, 3}).ok());
  std::vector<float> logits;
  using SC = absl::StatusCode;
  std::vector<Sequence*> dup = {s1.get(), s1.get()};
  EXPECT_EQ(e.DecodeBatch(dup, std::vector<int32_t>{1, 2}, &logits).code(), SC::kInvalidArgument);
  std::vector<Sequence*> mixed = {s1.get(), foreign.get()};
  EXPECT_EQ(e.DecodeBatch(mixed, std::vector<int32_t>{1, 2}, &logits).code(), SC::kInvalidArgument);
  std::vector<Sequence*> pair = {s1.get(), s2.get()};
  EXPECT_EQ(e.DecodeBatch(pair, std::vector<int32_t>{1}, &logits).code(), SC::kInvalidArgument);
  EXPECT_EQ(e.DecodeBatch(pair, std::vector<int32_t>{1, cfg.vocab_size}, &logits).code(),
            SC::kInvalidArgument);
  std::vector<std::unique_ptr<Sequence>> many;
  std::vector<Sequence*> five;
  for (int i = 0; i < e.max_batch() + 1; ++i) {
    many.push_back(e.NewSequence());
    five.push_back(many.back().get());
  }
  EXPECT_EQ(e.DecodeBatch(five, std::vector<int32_t>(five.size(), 1), &logits).code(),
            SC::kInvalidArgument);
  EXPECT_EQ(e.Prefill(foreign.get(), std::vector<int32_t>{1}).status().code(),
            SC::kInvalidArgument);
  // s2 at the end of the context: the whole batch is refused, s1 untouched.
  ASSERT_TRUE(e.Prefill(s2.get(), std::vector<int32_t>(e.max_context(), 4)).ok());
  EXPECT_EQ(e.DecodeBatch(pair, std::vector<int32_t>{1, 2}, &logits).code(), SC::kOutOfRange);
  EXPECT_EQ(s1->position(), 3);
  EXPECT_EQ(s2->position(), e.max_context());
  std::remove(path.c_str());
}

}  // namespace
}  // namespace st
