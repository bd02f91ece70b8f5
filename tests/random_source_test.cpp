// Random-weight source tests (st-export --random-init): the tensors a config implies, values
// that depend only on (seed, tensor name), and their statistics.
#include "infer/export/random_source.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "infer/export/tensor_source.h"
#include "model/config.h"
#include "tests/test_util.h"

namespace st {
namespace {

ModelConfig TinyConfig() { return test_util::ShippedConfig("tiny"); }

std::unique_ptr<TensorSource> Source(const ModelConfig& cfg, uint64_t seed) {
  absl::StatusOr<std::unique_ptr<TensorSource>> src = MakeRandomSource(cfg, seed);
  EXPECT_TRUE(src.ok()) << src.status();
  return std::move(*src);
}

std::vector<float> Read(const TensorSource& src, const std::string& name) {
  absl::StatusOr<std::vector<float>> x = src.ReadF32(name);
  EXPECT_TRUE(x.ok()) << x.status();
  return x.ok() ? *x : std::vector<float>();
}

bool IsNorm(const SourceTensor& t) { return t.shape.size() == 1; }

TEST(RandomSourceTest, ListsTheConfigsTensors) {
  const ModelConfig cfg = TinyConfig();
  auto src = Source(cfg, 1);
  std::vector<SourceTensor> want = ExpectedTensors(cfg);
  std::sort(want.begin(), want.end(),
            [](const SourceTensor& a, const SourceTensor& b) { return a.name < b.name; });
  ASSERT_EQ(src->tensors().size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(src->tensors()[i].name, want[i].name);
    EXPECT_EQ(src->tensors()[i].shape, want[i].shape) << want[i].name;
    EXPECT_EQ(src->tensors()[i].dtype, "F32");
  }
  EXPECT_TRUE(CheckTensorsMatchConfig(*src).ok());
  EXPECT_EQ(src->config().ToJson(), cfg.ToJson());
  EXPECT_EQ(src->tokenizer_name(), "byte");
  EXPECT_EQ(src->tokenizer_json(), "");
  for (const SourceTensor& t : src->tensors()) {
    EXPECT_EQ(static_cast<int64_t>(Read(*src, t.name).size()), t.num_elements()) << t.name;
  }
  absl::StatusOr<std::vector<float>> missing = src->ReadF32("model.layers.9.mlp.weight");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(RandomSourceTest, SameSeedSameValuesOtherSeedOrNameOtherValues) {
  const ModelConfig cfg = TinyConfig();
  auto a = Source(cfg, 1), b = Source(cfg, 1), c = Source(cfg, 2);
  for (const char* name : {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                           "model.layers.3.block_sparse_moe.experts.7.down.weight"}) {
    const std::vector<float> x = Read(*a, name);
    EXPECT_EQ(x, Read(*b, name)) << name;
    EXPECT_EQ(x, Read(*a, name)) << name << " (read twice)";
    const std::vector<float> y = Read(*c, name);
    ASSERT_EQ(x.size(), y.size());
    int64_t equal = 0;
    for (size_t i = 0; i < x.size(); ++i) equal += x[i] == y[i];
    EXPECT_LT(equal, static_cast<int64_t>(x.size() / 100)) << name;  // chance ties only
  }
  // Tensors of the same shape get different values.
  EXPECT_NE(Read(*a, "model.layers.0.self_attn.q_proj.weight"),
            Read(*a, "model.layers.1.self_attn.q_proj.weight"));
  EXPECT_NE(Read(*a, "model.layers.0.block_sparse_moe.experts.0.gate.weight"),
            Read(*a, "model.layers.0.block_sparse_moe.experts.0.up.weight"));
}

TEST(RandomSourceTest, ValuesDoNotDependOnReadOrder) {
  const ModelConfig cfg = TinyConfig();
  auto forward = Source(cfg, 5), backward = Source(cfg, 5);
  std::vector<std::vector<float>> f, b;
  for (const SourceTensor& t : forward->tensors()) f.push_back(Read(*forward, t.name));
  const std::vector<SourceTensor>& all = backward->tensors();
  for (auto it = all.rbegin(); it != all.rend(); ++it) b.push_back(Read(*backward, it->name));
  std::reverse(b.begin(), b.end());
  ASSERT_EQ(f.size(), b.size());
  for (size_t i = 0; i < f.size(); ++i) EXPECT_EQ(f[i], b[i]) << all[i].name;
}

// Mean 0 and standard deviation kRandomInitStd within five standard errors of the sample size
// (the variance of a sample variance is sigma^4 (kurtosis - 1) / n; the Irwin-Hall sum of four
// uniforms has kurtosis 2.7), bounded tails, and norms exactly 1.
void ExpectStatistics(const std::vector<float>& x, const std::string& what) {
  const double n = static_cast<double>(x.size());
  double sum = 0, sq = 0, max_abs = 0, beyond_2sd = 0;
  for (float v : x) {
    sum += v;
    sq += static_cast<double>(v) * v;
    max_abs = std::max(max_abs, std::abs(static_cast<double>(v)));
    beyond_2sd += std::abs(v) > 2 * kRandomInitStd;
  }
  const double sigma = kRandomInitStd, mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
  EXPECT_LT(std::abs(mean), 5 * sigma / std::sqrt(n)) << what;
  EXPECT_LT(std::abs(sd - sigma), 5 * sigma * std::sqrt(1.7 / (4 * n))) << what;
  EXPECT_LE(max_abs, 2 * std::sqrt(3.0) * sigma * (1 + 1e-6)) << what;  // 4 uniforms: +-2 sqrt 3
  if (n > 100000) {
    // A bell, not a uniform (0) or a heavy tail: 4.55% of a normal lies beyond 2 sd.
    EXPECT_GT(beyond_2sd / n, 0.03) << what;
    EXPECT_LT(beyond_2sd / n, 0.06) << what;
  }
}

TEST(RandomSourceTest, MatricesAreSmallCenteredNoiseAndNormsAreOne) {
  ModelConfig cfg = TinyConfig();
  cfg.tie_word_embeddings = false;  // the LM head too
  auto src = Source(cfg, 3);
  std::vector<float> all;
  int norms = 0;
  for (const SourceTensor& t : src->tensors()) {
    const std::vector<float> x = Read(*src, t.name);
    if (IsNorm(t)) {
      EXPECT_TRUE(std::all_of(x.begin(), x.end(), [](float v) { return v == 1.0f; })) << t.name;
      ++norms;
      continue;
    }
    ExpectStatistics(x, t.name);
    all.insert(all.end(), x.begin(), x.end());
  }
  EXPECT_EQ(norms, 2 * cfg.num_hidden_layers + 1);
  EXPECT_GT(all.size(), 2000000u);
  ExpectStatistics(all, "every matrix");
}

TEST(RandomSourceTest, TokenizerMustFitTheVocabulary) {
  ModelConfig cfg = TinyConfig();
  cfg.vocab_size = 200;  // the byte tokenizer has 257 ids
  absl::StatusOr<std::unique_ptr<TensorSource>> src = MakeRandomSource(cfg, 1);
  ASSERT_FALSE(src.ok());
  EXPECT_NE(src.status().message().find("257"), std::string::npos) << src.status();
  // A larger vocabulary than the tokenizer's is fine (Qwen's 151,936 with the byte tokenizer).
  cfg.vocab_size = 151936;
  EXPECT_TRUE(MakeRandomSource(cfg, 1).ok());
  EXPECT_FALSE(MakeRandomSource(TinyConfig(), 1, "bpe", "{not json").ok());
  ModelConfig bad = TinyConfig();
  bad.hidden_size = 0;
  EXPECT_FALSE(MakeRandomSource(bad, 1).ok());
}

}  // namespace
}  // namespace st
