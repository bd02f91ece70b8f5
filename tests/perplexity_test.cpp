// PerplexityStats and ScorePerplexityChunk (infer/tools/tool_util.h), the scoring behind
// st-perplexity: statistics against values worked out by hand, and the chunk's logit-to-target
// alignment against token-by-token decoding.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "infer/export/exporter.h"
#include "infer/export/random_source.h"
#include "infer/tools/tool_util.h"
#include "tests/test_util.h"

namespace st {
namespace {

TEST(PerplexityStats, UniformLogitsGiveTheVocabularySize) {
  PerplexityStats s;
  const std::vector<float> logits(10, 0.25f);
  for (int t = 0; t < 7; ++t) EXPECT_NEAR(s.Add(logits.data(), 10, t), std::log(10.0), 1e-12);
  EXPECT_EQ(s.count(), 7);
  EXPECT_NEAR(s.ppl(), 10.0, 1e-9);
  EXPECT_NEAR(s.ppl_stderr(), 0.0, 1e-6);
}

TEST(PerplexityStats, KnownProbabilitiesAndStandardError) {
  // p = (1/2, 1/4, 1/4): NLLs log 2 and log 4, mean 1.5 log 2, PPL 2^1.5; the variance of the
  // NLLs (population form, as llama-perplexity) is 0.25 (log 2)^2, so the error is
  // sqrt(0.25 (log 2)^2 / (2 - 1)) * PPL.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.25f), std::log(0.25f)};
  PerplexityStats s;
  EXPECT_NEAR(s.Add(logits.data(), 3, 0), std::log(2.0), 1e-6);
  EXPECT_EQ(s.ppl_stderr(), 0.0);  // one token: no error estimate
  EXPECT_NEAR(s.Add(logits.data(), 3, 1), std::log(4.0), 1e-6);
  EXPECT_NEAR(s.ppl(), std::pow(2.0, 1.5), 1e-5);
  EXPECT_NEAR(s.ppl_stderr(), 0.5 * std::log(2.0) * std::pow(2.0, 1.5), 1e-5);
}

TEST(PerplexityStats, LargeLogitsDoNotOverflow) {
  const std::vector<float> logits = {1000.f, 0.f, -1000.f};
  PerplexityStats s;
  EXPECT_NEAR(s.Add(logits.data(), 3, 0), 0.0, 1e-12);
  EXPECT_NEAR(s.Add(logits.data(), 3, 1), 1000.0, 1e-9);
  EXPECT_TRUE(std::isfinite(s.ppl()) || s.ppl() == INFINITY);
}

// Row j of the chunk's logits must score chunk[j + 1]: the oracle feeds the chunk one token at a
// time through Engine::Forward (the decode path, not the batched prefill ScorePerplexityChunk
// uses), so logits after token j are what predicts token j + 1. The test checks its own power
// too: scoring chunk[j] or chunk[j + 2] instead must miss by far more than the tolerance.
TEST(ScorePerplexityChunk, RowJScoresTheTokenAfterJ) {
  const ModelConfig c = test_util::TinyEngineConfig();
  auto src = MakeRandomSource(c, 11);
  ASSERT_TRUE(src.ok()) << src.status();
  auto recipe = RecipePreset("f32");
  ASSERT_TRUE(recipe.ok());
  ExportOptions options;
  options.recipe = *recipe;
  const std::string path = test_util::TestDir() + "/ppl_align.stmf";
  ASSERT_TRUE(ExportModel(**src, path, options).ok());
  EngineOptions eo;
  eo.threads = 1;
  auto eng = Engine::Load(path, eo);
  ASSERT_TRUE(eng.ok()) << eng.status();

  const std::vector<int32_t> chunk = {72,  101, 108, 108, 111, 44,  32, 119, 111, 114,
                                      108, 100, 33,  32,  73,  110, 32, 116, 104, 101};
  const int n = static_cast<int>(chunk.size()), first = n / 2;
  PerplexityStats stats;
  auto nll = ScorePerplexityChunk(**eng, chunk, first, &stats);
  ASSERT_TRUE(nll.ok()) << nll.status();
  EXPECT_EQ(stats.count(), n - 1 - first);

  // The oracle: logits after each token, one decode step at a time.
  (*eng)->Reset();
  std::vector<std::vector<float>> after(n);
  for (int j = 0; j < n; ++j) {
    auto logits = (*eng)->Forward(chunk[j]);
    ASSERT_TRUE(logits.ok()) << logits.status();
    after[j] = *logits;
  }
  // Summed NLL of chunk[j + shift] under the logits after token j, for j in [first, last).
  auto score = [&](int shift, int last) {
    PerplexityStats s;
    double sum = 0;
    for (int j = first; j < last; ++j)
      sum += s.Add(after[j].data(), c.vocab_size, chunk[j + shift]);
    return sum;
  };
  constexpr double kTol = 1e-3;
  EXPECT_NEAR(*nll, score(1, n - 1), kTol);
  // Power: over the positions where every shift has a target, the other alignments differ.
  const double right = score(1, n - 2);
  EXPECT_GT(std::abs(score(0, n - 2) - right), 30 * kTol) << "the oracle cannot tell shifts apart";
  EXPECT_GT(std::abs(score(2, n - 2) - right), 30 * kTol) << "the oracle cannot tell shifts apart";
  EXPECT_FALSE(ScorePerplexityChunk(**eng, chunk, n - 1, &stats).ok());  // nothing to score
  std::remove(path.c_str());
}

}  // namespace
}  // namespace st
