// The torch-free runtime against the LibTorch model (the ground truth): a random tiny
// SmallThinkerForCausalLM is saved as an HDF5 checkpoint, exported (f32, q8_0, q4_0,
// q4_0_pure), run through the Engine (token by token and batched prefill) and compared with
// LibTorch position by position, by greedy generation, and quantized against f32.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "gtest/gtest.h"
#include "infer/export/exporter.h"
#include "infer/export/tensor_source.h"
#include "infer/runtime/engine.h"
#include "model/transformer.h"
#include "tests/test_util.h"
#include "train/checkpoint.h"

namespace st {
namespace {

// The engine tests' tiny config, 3 layers deep and untied.
ModelConfig ParityConfig() {
  ModelConfig c = test_util::TinyEngineConfig();
  c.num_hidden_layers = 3;
  c.max_position_embeddings = 96;       // 8-token prompt + 64 greedy tokens
  c.rope_layout = {0, 1, 1};            // NoPE, RoPE, RoPE
  c.sliding_window_layout = {0, 1, 0};  // global, sliding, global
  c.sliding_window_size = 4;
  c.moe_primary_router_apply_softmax = false;
  c.tie_word_embeddings = false;  // runtime_test covers the tied head
  EXPECT_TRUE(ValidateModelConfig(c).ok());
  return c;
}

struct Exported {
  std::string dir;  // holds the files below
  std::string h5;
  std::map<std::string, std::string> files;  // recipe -> model file
  torch::Tensor logits_SV;                   // LibTorch reference over `ids`
  std::vector<int32_t> ids;
  std::vector<int32_t> greedy;  // LibTorch greedy continuation of `prompt`
  std::vector<int32_t> prompt;
};

// Larger-than-training-init weights so activations (and router decisions) are not all tiny.
void Randomize(SmallThinkerForCausalLM& m) {
  torch::NoGradGuard no_grad;
  for (auto& item : m->named_parameters()) {
    torch::Tensor& p = item.value();
    if (item.key().find("norm") != std::string::npos) {
      p.copy_(1.0 + 0.1 * torch::randn_like(p));
    } else {
      p.normal_(0.0, 0.2);
    }
  }
}

std::vector<float> Row(const torch::Tensor& t_SV, int64_t s) {
  torch::Tensor r = t_SV[s].contiguous();
  return std::vector<float>(r.data_ptr<float>(), r.data_ptr<float>() + r.numel());
}

constexpr int kGreedyTokens = 64;

class RuntimeParityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    torch::manual_seed(20240601);
    const ModelConfig cfg = ParityConfig();
    SmallThinkerForCausalLM model(cfg);
    Randomize(model);
    model->eval();
    ex_ = new Exported();
    // Each test runs in a process of its own (ctest), possibly side by side: a directory each.
    ex_->dir = test_util::FreshDir("RuntimeParityTest." + std::to_string(::getpid()));
    const std::string base = ex_->dir + "/model";
    ex_->h5 = base + ".h5";
    CheckpointState s;
    s.model_config_json = cfg.ToJson();
    s.train_config_json = "{}";
    s.tokenizer = "byte";
    ASSERT_TRUE(SaveCheckpoint(ex_->h5, model, nullptr, s).ok());
    for (const std::string recipe : {"f32", "q8_0", "q4_0", "q4_0_pure"}) {
      const std::string out = base + "_" + recipe + ".stmf";
      auto src = OpenTrainCheckpoint(ex_->h5);
      ASSERT_TRUE(src.ok()) << src.status();
      auto r = RecipePreset(recipe);
      ASSERT_TRUE(r.ok()) << r.status();
      ExportOptions opt;
      opt.recipe = *r;
      auto rep = ExportModel(**src, out, opt);
      ASSERT_TRUE(rep.ok()) << rep.status();
      ex_->files[recipe] = out;
    }
    // A sequence longer than several windows, within the context.
    const int S = 24;
    for (int i = 0; i < S; ++i) ex_->ids.push_back((i * 37 + 11) % cfg.vocab_size);
    torch::NoGradGuard no_grad;
    auto as_tensor = [](const std::vector<int32_t>& v) {
      return torch::tensor(std::vector<int64_t>(v.begin(), v.end()), torch::kInt64).unsqueeze(0);
    };
    ex_->logits_SV = model->forward(as_tensor(ex_->ids)).logits_BSV[0].to(torch::kFloat32);
    // LibTorch greedy decoding (full recompute each step) from an 8-token prompt.
    ex_->prompt.assign(ex_->ids.begin(), ex_->ids.begin() + 8);
    std::vector<int32_t> seq = ex_->prompt;
    for (int i = 0; i < kGreedyTokens; ++i) {
      torch::Tensor last = model->forward(as_tensor(seq)).logits_BSV[0][-1];
      const int32_t next = static_cast<int32_t>(last.argmax().item<int64_t>());
      ex_->greedy.push_back(next);
      seq.push_back(next);
    }
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(ex_->dir);
    delete ex_;
  }

  static EngineOptions F32Kv() {
    EngineOptions o;
    o.kv_f16 = false;
    o.threads = 2;
    return o;
  }

  // Per-position logits of the engine over `ids`: one Forward per token, or one PrefillAll.
  static std::vector<std::vector<float>> EngineLogits(const std::string& path,
                                                      const EngineOptions& o, bool batched) {
    std::vector<std::vector<float>> out;
    auto eng = Engine::Load(path, o);
    EXPECT_TRUE(eng.ok()) << eng.status();
    if (!eng.ok()) return out;
    const size_t V = (*eng)->config().vocab_size;
    if (batched) {
      std::vector<float> all;
      EXPECT_TRUE((*eng)->PrefillAll(ex_->ids, &all).ok());
      for (size_t s = 0; s < ex_->ids.size(); ++s) {
        out.emplace_back(all.begin() + s * V, all.begin() + (s + 1) * V);
      }
    } else {
      for (int32_t id : ex_->ids) {
        auto logits = (*eng)->Forward(id);
        EXPECT_TRUE(logits.ok()) << logits.status();
        if (!logits.ok()) return {};
        out.push_back(*logits);
      }
    }
    return out;
  }

  static Exported* ex_;
};
Exported* RuntimeParityTest::ex_ = nullptr;

// The F32 export reproduces LibTorch's logits within 1e-4 of the logit scale at every position,
// token by token and with the batched prefill (tokens grouped by expert, chunks of 5 that cross
// the sliding window).
TEST_F(RuntimeParityTest, F32ExportMatchesLibTorchAtEveryPosition) {
  for (bool batched : {false, true}) {
    EngineOptions o = F32Kv();
    o.prefill_chunk = 5;
    const auto logits = EngineLogits(ex_->files["f32"], o, batched);
    ASSERT_EQ(logits.size(), ex_->ids.size());
    double max_diff = 0, max_ref = 0;
    for (size_t s = 0; s < ex_->ids.size(); ++s) {
      const std::vector<float> ref = Row(ex_->logits_SV, s);
      double row_ref = 0, row_diff = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        row_ref = std::max(row_ref, std::abs(static_cast<double>(ref[i])));
        row_diff = std::max(row_diff, std::abs(static_cast<double>(logits[s][i]) - ref[i]));
      }
      EXPECT_LE(row_diff, 1e-4 * std::max(1.0, row_ref)) << "position " << s;
      max_diff = std::max(max_diff, row_diff);
      max_ref = std::max(max_ref, row_ref);
    }
    std::printf("f32 %s: max |engine - torch| = %.3g (max |logit| %.3g)\n",
                batched ? "batched prefill" : "decode", max_diff, max_ref);
    EXPECT_GT(max_ref, 0.5);  // the comparison is not vacuous
  }
}

// Greedy decoding of 64 tokens gives exactly LibTorch's tokens (f32 export, default fp16 KV
// cache too).
TEST_F(RuntimeParityTest, GreedyGenerationOf64TokensIsIdentical) {
  for (bool kv_f16 : {false, true}) {
    EngineOptions o = F32Kv();
    o.kv_f16 = kv_f16;
    auto eng = Engine::Load(ex_->files["f32"], o);
    ASSERT_TRUE(eng.ok()) << eng.status();
    auto logits = (*eng)->Prefill(ex_->prompt);
    ASSERT_TRUE(logits.ok()) << logits.status();
    std::vector<int32_t> got;
    for (int i = 0; i < kGreedyTokens; ++i) {
      const int32_t next = static_cast<int32_t>(
          std::max_element(logits->begin(), logits->end()) - logits->begin());
      got.push_back(next);
      logits = (*eng)->Forward(next);
      ASSERT_TRUE(logits.ok()) << logits.status();
    }
    EXPECT_EQ(got, ex_->greedy) << "kv_f16=" << kv_f16;
  }
}

struct Agreement {
  double top1 = 0;     // fraction of positions whose argmax matches F32's
  double mean_kl = 0;  // mean KL(p_f32 || p_quant) in nats
  double max_kl = 0;
};

Agreement CompareDistributions(const std::vector<std::vector<float>>& ref,
                               const std::vector<std::vector<float>>& got) {
  Agreement a;
  for (size_t s = 0; s < ref.size(); ++s) {
    const auto& r = ref[s];
    const auto& g = got[s];
    const double mr = *std::max_element(r.begin(), r.end());
    const double mg = *std::max_element(g.begin(), g.end());
    double zr = 0, zg = 0;
    for (size_t i = 0; i < r.size(); ++i) {
      zr += std::exp(r[i] - mr);
      zg += std::exp(g[i] - mg);
    }
    double kl = 0;
    for (size_t i = 0; i < r.size(); ++i) {
      const double lr = r[i] - mr - std::log(zr), lg = g[i] - mg - std::log(zg);
      kl += std::exp(lr) * (lr - lg);
    }
    a.mean_kl += kl / ref.size();
    a.max_kl = std::max(a.max_kl, kl);
    a.top1 += (std::max_element(r.begin(), r.end()) - r.begin() ==
               std::max_element(g.begin(), g.end()) - g.begin()) /
              static_cast<double>(ref.size());
  }
  return a;
}

// Quantized exports against the F32 export (same engine, default fp16 KV cache), on this random
// model whose weights (std 0.2) make logits span ~10 nats, a harsh case. Named bounds:
//   q8_0       top-1 agreement >= 0.95, mean KL(f32 || q8_0) <= 0.01 nats
//   q4_0       (experts Q4_0, rest Q8_0)  top-1 >= 0.5, mean KL <= 0.25
//   q4_0_pure  (every matrix Q4_0)        top-1 >= 0.2, mean KL <= 1.0
// and, since KL grows with the square of the quantization step (Q4_0's is 127/8 ~ 16x Q8_0's),
// KL(q4_0_pure) / KL(q8_0) must stay below 16^2 = 256 (a wrong Q4_0 path would exceed it).
// Measured (this seed): q8_0 1.000 / 0.0026, q4_0 0.667 / 0.10, q4_0_pure 0.25 / 0.46 nats.
TEST_F(RuntimeParityTest, QuantizedExportsStayWithinNamedBounds) {
  const auto ref = EngineLogits(ex_->files["f32"], EngineOptions(), false);
  struct Bound {
    std::string recipe;
    double min_top1, max_mean_kl;
  };
  std::map<std::string, double> kl;
  for (const Bound& b : {Bound{"q8_0", 0.95, 0.01}, Bound{"q4_0", 0.5, 0.25},
                         Bound{"q4_0_pure", 0.2, 1.0}}) {
    for (bool batched : {false, true}) {
      const auto got = EngineLogits(ex_->files[b.recipe], EngineOptions(), batched);
      ASSERT_EQ(got.size(), ref.size());
      const Agreement a = CompareDistributions(ref, got);
      std::printf("%-9s %s: top-1 agreement %.3f, KL(f32 || quant) mean %.4g max %.4g nats\n",
                  b.recipe.c_str(), batched ? "prefill" : "decode ", a.top1, a.mean_kl, a.max_kl);
      EXPECT_GE(a.top1, b.min_top1) << b.recipe;
      EXPECT_LE(a.mean_kl, b.max_mean_kl) << b.recipe;
      EXPECT_GT(a.mean_kl, 0.0) << b.recipe;  // really quantized
      kl[b.recipe] = a.mean_kl;
    }
  }
  EXPECT_LT(kl["q4_0_pure"] / kl["q8_0"], 256.0);
  EXPECT_GT(kl["q4_0_pure"], kl["q4_0"]);
}

}  // namespace
}  // namespace st
