// The torch-free runtime against the LibTorch model (the ground truth): a random tiny
// SmallThinkerForCausalLM is saved as an HDF5 checkpoint, exported to a model file
// (f32 and q8_0), run token by token through the Engine, and compared position by position
// with one LibTorch forward over the whole sequence.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "gtest/gtest.h"
#include "infer/export/exporter.h"
#include "infer/export/tensor_source.h"
#include "infer/runtime/engine.h"
#include "model/transformer.h"
#include "train/checkpoint.h"

namespace st {
namespace {

ModelConfig ParityConfig() {
  ModelConfig c;
  c.num_hidden_layers = 3;
  c.hidden_size = 64;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 257;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 32;
  c.rope_layout = {0, 1, 1};            // NoPE, RoPE, RoPE
  c.sliding_window_layout = {0, 1, 0};  // global, sliding, global
  c.sliding_window_size = 4;
  c.moe_num_primary_experts = 4;
  c.moe_num_active_primary_experts = 2;
  c.moe_ffn_hidden_size = 32;
  c.moe_primary_router_apply_softmax = false;
  c.tie_word_embeddings = false;  // runtime_test covers the tied head
  c.bos_token_id = -1;
  c.eos_token_id = {256};
  EXPECT_TRUE(ValidateModelConfig(c).ok());
  return c;
}

struct Exported {
  std::string h5, f32, q8;
  torch::Tensor logits_SV;  // LibTorch reference
  std::vector<int32_t> ids;
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

class RuntimeParityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    torch::manual_seed(20240601);
    const ModelConfig cfg = ParityConfig();
    SmallThinkerForCausalLM model(cfg);
    Randomize(model);
    model->eval();
    ex_ = new Exported();
    const std::string base =
        ::testing::TempDir() + "/runtime_parity_" + std::to_string(::getpid());
    ex_->h5 = base + ".h5";
    ex_->f32 = base + "_f32.stmf";
    ex_->q8 = base + "_q8_0.stmf";
    CheckpointState s;
    s.model_config_json = cfg.ToJson();
    s.train_config_json = "{}";
    s.tokenizer = "byte";
    ASSERT_TRUE(SaveCheckpoint(ex_->h5, model, nullptr, s).ok());
    for (const auto& [recipe, out] : {std::make_pair(std::string("f32"), ex_->f32),
                                      std::make_pair(std::string("q8_0"), ex_->q8)}) {
      auto src = OpenTrainCheckpoint(ex_->h5);
      ASSERT_TRUE(src.ok()) << src.status();
      auto r = RecipePreset(recipe);
      ASSERT_TRUE(r.ok()) << r.status();
      ExportOptions opt;
      opt.recipe = *r;
      auto rep = ExportModel(**src, out, opt);
      ASSERT_TRUE(rep.ok()) << rep.status();
    }
    // A sequence longer than several windows, within the context.
    const int S = 24;
    for (int i = 0; i < S; ++i) ex_->ids.push_back((i * 37 + 11) % cfg.vocab_size);
    torch::NoGradGuard no_grad;
    torch::Tensor ids = torch::tensor(std::vector<int64_t>(ex_->ids.begin(), ex_->ids.end()),
                                      torch::kInt64)
                            .unsqueeze(0);
    ex_->logits_SV = model->forward(ids).logits_BSV[0].to(torch::kFloat32).contiguous();
  }
  static void TearDownTestSuite() {
    std::remove(ex_->h5.c_str());
    std::remove(ex_->f32.c_str());
    std::remove(ex_->q8.c_str());
    delete ex_;
  }

  // Runs the engine over the sequence; returns max |engine - torch| and max |torch|.
  static std::pair<double, double> Compare(const std::string& path, double tol_rel) {
    auto eng = Engine::Load(path);
    EXPECT_TRUE(eng.ok()) << eng.status();
    if (!eng.ok()) return {INFINITY, 0};
    double max_diff = 0, max_ref = 0;
    for (size_t s = 0; s < ex_->ids.size(); ++s) {
      auto logits = (*eng)->Forward(ex_->ids[s]);
      EXPECT_TRUE(logits.ok()) << logits.status();
      if (!logits.ok()) return {INFINITY, 0};
      const std::vector<float> ref = Row(ex_->logits_SV, s);
      double row_ref = 0, row_diff = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        row_ref = std::max(row_ref, std::abs(static_cast<double>(ref[i])));
        row_diff = std::max(row_diff, std::abs(static_cast<double>((*logits)[i]) - ref[i]));
      }
      if (tol_rel > 0) {
        EXPECT_LE(row_diff, tol_rel * std::max(1.0, row_ref)) << "position " << s;
      }
      max_diff = std::max(max_diff, row_diff);
      max_ref = std::max(max_ref, row_ref);
    }
    const EngineStats& st = (*eng)->stats();
    std::printf("%s: max |engine - torch| = %.3g (max |logit| %.3g), ReGLU skipped %lld / %lld\n",
                path.c_str(), max_diff, max_ref, static_cast<long long>(st.reglu_skipped),
                static_cast<long long>(st.reglu_total));
    return {max_diff, max_ref};
  }

  static Exported* ex_;
};
Exported* RuntimeParityTest::ex_ = nullptr;

TEST_F(RuntimeParityTest, F32ExportMatchesLibTorchAtEveryPosition) {
  auto [diff, ref] = Compare(ex_->f32, 1e-4);
  EXPECT_GT(ref, 0.5);  // the comparison is not vacuous
}

// Q8_0: each weight is off by at most ~amax/254 of its block (0.4% relative), so through
// three layers the logits move by a few percent of their scale at most, unless a router
// top-k flips on a near tie; we only check a loose bound (15% of the logit scale) that a
// wrong dequantization or layout would break by far, and report the number.
TEST_F(RuntimeParityTest, Q8ExportStaysClose) {
  auto [diff, ref] = Compare(ex_->q8, 0);
  std::printf("q8_0: max |engine - torch| / max |logit| = %.3g\n", diff / ref);
  EXPECT_LT(diff, 0.15 * ref);
}

}  // namespace
}  // namespace st
