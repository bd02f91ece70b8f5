// PerplexityStats (infer/tools/tool_util.h), the scoring behind st-perplexity, against values
// worked out by hand.
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "infer/tools/tool_util.h"

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

}  // namespace
}  // namespace st
