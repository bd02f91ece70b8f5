// The sampler and stop conditions (infer/runtime/sampler.h). Expected sets and distributions
// are computed here independently (full sorts, plain softmax), not with the sampler's code.
#include "infer/runtime/sampler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "infer/tokenizer/tokenizer.h"
#include "tests/test_util.h"

namespace st {
namespace {

constexpr int kQwenVocab = 151936;

std::vector<float> RandomLogits(int V, uint32_t seed, float stddev = 3.f) {
  return test_util::RandomNormals(V, seed, stddev);
}

Sampler Make(SamplerOptions o) {
  auto s = Sampler::Create(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return *std::move(s);
}

SamplerOptions Plain(double temperature) {  // every filter off
  SamplerOptions o;
  o.temperature = temperature;
  o.top_k = 0;
  o.top_p = 1.0;
  o.min_p = 0.0;
  o.repeat_penalty = 1.0;
  return o;
}

std::vector<double> Softmax(const std::vector<float>& l, double temperature) {
  const double mx = *std::max_element(l.begin(), l.end());
  std::vector<double> p(l.size());
  double sum = 0;
  for (size_t i = 0; i < l.size(); ++i) sum += (p[i] = std::exp((l[i] - mx) / temperature));
  for (double& v : p) v /= sum;
  return p;
}

// Logits whose softmax is exactly proportional to `probs`.
std::vector<float> LogitsOf(const std::vector<double>& probs) {
  std::vector<float> l(probs.size());
  for (size_t i = 0; i < probs.size(); ++i) l[i] = static_cast<float>(std::log(probs[i]));
  return l;
}

std::set<int32_t> Ids(const std::vector<Sampler::Candidate>& c) {
  std::set<int32_t> s;
  for (const auto& x : c) s.insert(x.id);
  return s;
}

TEST(Sampler, GreedyIsArgmaxOnTheQwenVocabulary) {
  Sampler s = Make(Plain(0.0));
  EXPECT_TRUE(s.greedy());
  for (uint32_t seed = 0; seed < 5; ++seed) {
    const std::vector<float> l = RandomLogits(kQwenVocab, seed);
    const int32_t want = std::max_element(l.begin(), l.end()) - l.begin();
    EXPECT_EQ(s.Sample(l), want);
  }
  // Ties go to the lowest id; NaN never wins.
  EXPECT_EQ(s.Sample(std::vector<float>{1.f, 3.f, NAN, 3.f, 2.f}), 1);
}

TEST(Sampler, TopK1IsGreedy) {
  SamplerOptions o = Plain(1.5);
  o.top_k = 1;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    o.seed = seed;
    Sampler s = Make(o);
    const std::vector<float> l = RandomLogits(kQwenVocab, seed, 1.f);
    EXPECT_EQ(s.Sample(l), std::max_element(l.begin(), l.end()) - l.begin());
  }
}

TEST(Sampler, SameSeedSameTokens) {
  SamplerOptions o = Plain(1.0);
  o.top_k = 50;
  o.top_p = 0.95;
  o.seed = 42;
  Sampler a = Make(o), b = Make(o);
  o.seed = 43;
  Sampler c = Make(o);
  const std::vector<float> l = RandomLogits(kQwenVocab, 9, 1.f);
  int differ = 0;
  for (int i = 0; i < 200; ++i) {
    const int32_t x = a.Sample(l);
    EXPECT_EQ(x, b.Sample(l)) << "draw " << i;
    differ += x != c.Sample(l);
  }
  EXPECT_GT(differ, 50);
}

// Pearson chi-square of `n` draws against the probabilities `p`; with df = p.size() - 1 = 9 the
// 0.999 quantile is 27.9, so a correct sampler fails a bound of 40 with a fixed seed never.
double ChiSquare(Sampler& s, const std::vector<float>& logits, const std::vector<double>& p,
                 int n) {
  std::vector<int> count(p.size(), 0);
  for (int i = 0; i < n; ++i) {
    const int32_t t = s.Sample(logits);
    EXPECT_GE(t, 0);
    EXPECT_LT(t, static_cast<int32_t>(p.size()));
    ++count[t];
  }
  double chi2 = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double e = p[i] * n;
    chi2 += (count[i] - e) * (count[i] - e) / e;
  }
  return chi2;
}

TEST(Sampler, DrawsFollowTheSoftmax) {
  const std::vector<float> l = {0.f, 1.f, -1.f, 2.f, 0.5f, -0.5f, 1.5f, 0.25f, -2.f, 1.f};
  for (double temperature : {1.0, 0.7, 2.0}) {
    SamplerOptions o = Plain(temperature);
    o.seed = 2024;
    Sampler s = Make(o);
    const double chi2 = ChiSquare(s, l, Softmax(l, temperature), 200000);
    EXPECT_LT(chi2, 40.0) << "temperature " << temperature;
    std::printf("temperature %.1f: chi-square %.2f (df 9)\n", temperature, chi2);
  }
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  // Probabilities 0.4 0.3 0.15 0.1 0.05 in shuffled positions.
  const std::vector<double> probs = {0.1, 0.4, 0.05, 0.3, 0.15};
  SamplerOptions o = Plain(1.0);
  o.top_p = 0.8;  // 0.4 + 0.3 = 0.7 < 0.8 <= 0.85: three tokens
  Sampler s = Make(o);
  EXPECT_EQ(Ids(s.Filter(LogitsOf(probs))), (std::set<int32_t>{1, 3, 4}));
  o.top_p = 0.3;  // the first token alone reaches it
  EXPECT_EQ(Ids(Make(o).Filter(LogitsOf(probs))), (std::set<int32_t>{1}));
  o.top_p = 0.01;  // at least one token stays
  EXPECT_EQ(Ids(Make(o).Filter(LogitsOf(probs))), (std::set<int32_t>{1}));

  // After top-k the probabilities are renormalised: top 3 = 0.4/0.85, 0.3/0.85 (= 0.82 >= 0.8).
  o.top_k = 3;
  o.top_p = 0.8;
  const auto kept = Make(o).Filter(LogitsOf(probs));
  EXPECT_EQ(Ids(kept), (std::set<int32_t>{1, 3}));
  EXPECT_NEAR(kept[0].p, 0.4 / 0.7, 1e-6);

  // Draws land only in the kept set, with the renormalised probabilities.
  o.top_k = 0;
  o.top_p = 0.8;
  Sampler d = Make(o);
  std::vector<int> count(probs.size(), 0);
  const int n = 100000;
  for (int i = 0; i < n; ++i) ++count[d.Sample(LogitsOf(probs))];
  EXPECT_EQ(count[0] + count[2], 0);
  EXPECT_NEAR(count[1] / double(n), 0.4 / 0.85, 0.01);
  EXPECT_NEAR(count[3] / double(n), 0.3 / 0.85, 0.01);
}

TEST(Sampler, TopPOnTheQwenVocabularyMatchesAFullSort) {
  for (double top_p : {0.5, 0.9, 0.99}) {
    const std::vector<float> l = RandomLogits(kQwenVocab, 77, 2.f);
    const std::vector<double> p = Softmax(l, 1.0);
    std::vector<int32_t> order(l.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
    std::set<int32_t> want;
    double cum = 0;
    for (int32_t id : order) {
      want.insert(id);
      cum += p[id];
      if (cum >= top_p) break;
    }
    SamplerOptions o = Plain(1.0);
    o.top_p = top_p;
    const auto got = Make(o).Filter(l);
    EXPECT_EQ(Ids(got), want) << "top_p " << top_p;
    std::printf("top_p %.2f keeps %zu of %d tokens\n", top_p, want.size(), kQwenVocab);

    // With min-p as well: the top-p set, then drop p < min_p * p_max (llama.cpp's order).
    const double min_p = 0.02;
    std::set<int32_t> both;
    for (int32_t id : want) {
      if (p[id] >= min_p * p[order[0]]) both.insert(id);
    }
    o.min_p = min_p;
    EXPECT_EQ(Ids(Make(o).Filter(l)), both) << "top_p " << top_p << " min_p " << min_p;
  }
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheMax) {
  const std::vector<double> probs = {0.05, 0.5, 0.09, 0.2, 0.1, 0.06};
  SamplerOptions o = Plain(1.0);
  o.min_p = 0.19;  // threshold 0.095: keeps 0.5, 0.2, 0.1
  std::set<int32_t> want;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] >= 0.19 * 0.5) want.insert(i);
  }
  ASSERT_EQ(want, (std::set<int32_t>{1, 3, 4}));
  const auto kept = Make(o).Filter(LogitsOf(probs));
  EXPECT_EQ(Ids(kept), want);
  EXPECT_NEAR(kept[0].p, 0.5 / 0.8, 1e-6);
  // Sampling with min_p never draws a dropped token.
  Sampler s = Make(o);
  for (int i = 0; i < 20000; ++i) EXPECT_TRUE(want.count(s.Sample(LogitsOf(probs))));
  o.min_p = 0.999;  // only the max survives
  EXPECT_EQ(Ids(Make(o).Filter(LogitsOf(probs))), (std::set<int32_t>{1}));
}

TEST(Sampler, TopKOnTheQwenVocabularyKeepsTheKLargest) {
  const std::vector<float> l = RandomLogits(kQwenVocab, 5);
  std::vector<int32_t> order(l.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
  SamplerOptions o = Plain(1.0);
  o.top_k = 40;
  const auto got = Make(o).Filter(l);
  ASSERT_EQ(got.size(), 40u);
  for (int i = 0; i < 40; ++i) EXPECT_EQ(got[i].id, order[i]);
}

TEST(Sampler, RepetitionPenaltyChangesExactlyThePenalisedLogits) {
  const std::vector<float> l = {2.f, -1.f, 0.5f, -3.f, 4.f, 0.f, 1.f};
  SamplerOptions o = Plain(0.0);
  o.repeat_penalty = 2.0;
  o.repeat_last_n = 4;
  Sampler s = Make(o);
  s.Accept({4, 0, 1, 1, 3, 1, 99});  // window of 4: {1, 3, 1, 99}; 99 is outside the vocab
  EXPECT_EQ(s.history().size(), 4u);
  std::vector<float> got = l;
  s.ApplyRepetitionPenalty(absl::MakeSpan(got));
  const std::vector<float> want = {2.f, -2.f, 0.5f, -6.f, 4.f, 0.f, 1.f};  // -1*2, -3*2, once each
  EXPECT_EQ(got, want);

  // Positive logits are divided: greedy moves off a repeated token.
  Sampler g = Make(o);
  EXPECT_EQ(g.Sample(l), 4);
  g.Accept(4);  // 4 -> 2.0 ties with token 0, which has the lower id
  EXPECT_EQ(g.Sample(l), 0);
  g.Accept(0);  // 0 -> 1.0, 4 -> 2.0
  EXPECT_EQ(g.Sample(l), 4);

  // Penalty 1 and window 0 are no-ops.
  o.repeat_penalty = 1.0;
  Sampler off = Make(o);
  off.Accept({0, 1, 2});
  got = l;
  off.ApplyRepetitionPenalty(absl::MakeSpan(got));
  EXPECT_EQ(got, l);
  o.repeat_penalty = 1.3;
  o.repeat_last_n = 0;
  Sampler none = Make(o);
  none.Accept({0, 1, 2});
  EXPECT_TRUE(none.history().empty());
  o.repeat_last_n = -1;
  Sampler all = Make(o);
  for (int i = 0; i < 1000; ++i) all.Accept(i % 7);
  EXPECT_EQ(all.history().size(), 1000u);
}

TEST(Sampler, BadParametersAreErrors) {
  struct Case {
    SamplerOptions o;
    const char* want;
  };
  std::vector<Case> cases;
  auto add = [&](auto set, const char* want) {
    SamplerOptions o;
    set(o);
    cases.push_back({o, want});
  };
  add([](SamplerOptions& o) { o.temperature = -0.1; }, "temperature must be >= 0");
  add([](SamplerOptions& o) { o.temperature = NAN; }, "temperature must be >= 0");
  add([](SamplerOptions& o) { o.top_k = -1; }, "top_k must be >= 0");
  add([](SamplerOptions& o) { o.top_p = 2; }, "top_p must be in (0, 1] (1 = off), got 2");
  add([](SamplerOptions& o) { o.top_p = 0; }, "top_p must be in (0, 1]");
  add([](SamplerOptions& o) { o.min_p = 1; }, "min_p must be in [0, 1)");
  add([](SamplerOptions& o) { o.min_p = -0.5; }, "min_p must be in [0, 1)");
  add([](SamplerOptions& o) { o.repeat_penalty = 0; }, "repeat_penalty must be > 0");
  add([](SamplerOptions& o) { o.repeat_last_n = -2; }, "repeat_last_n must be >= -1");
  for (const Case& c : cases) {
    auto s = Sampler::Create(c.o);
    ASSERT_FALSE(s.ok()) << c.want;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(c.want), std::string::npos) << s.status().message();
  }
  EXPECT_TRUE(ValidateSamplerOptions(SamplerOptions()).ok());
}

TEST(Sampler, SpeedOnTheQwenVocabulary) {
  const std::vector<float> l = RandomLogits(kQwenVocab, 3, 2.f);
  for (int top_k : {40, 0}) {
    SamplerOptions o;
    o.temperature = 0.8;
    o.top_k = top_k;
    o.top_p = 0.95;
    o.min_p = 0.05;
    o.repeat_penalty = 1.1;
    Sampler s = Make(o);
    s.Accept({1, 2, 3, 4, 5});
    const int n = 100;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) s.Sample(l);
    const double us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
        n;
    std::printf("top_k %d, top_p 0.95, min_p 0.05: %.0f us per token over %d logits\n", top_k, us,
                kQwenVocab);
  }
}

// ---- Stop conditions ----

std::string Feed(StopCondition& sc, const std::vector<std::string>& pieces) {
  std::string out;
  for (const std::string& p : pieces) out += sc.Push(p);
  return out;
}

TEST(StopCondition, StopStringSplitAcrossPiecesIsNeverEmitted) {
  StopCondition sc({}, {"</s>", "\n\nUser:"});
  std::string out;
  out += sc.Push("Hello <");
  EXPECT_EQ(out, "Hello ");  // "<" could start "</s>": held back
  out += sc.Push("/");
  EXPECT_EQ(out, "Hello ");
  out += sc.Push("s> and more");
  EXPECT_TRUE(sc.stopped());
  EXPECT_EQ(sc.matched(), "</s>");
  EXPECT_EQ(out, "Hello ");
  EXPECT_EQ(sc.Push("x"), "");
  EXPECT_EQ(sc.Flush(), "");

  StopCondition b({}, {"\n\nUser:"});
  EXPECT_EQ(Feed(b, {"Fine.\n", "\nUs", "er", ": hi"}), "Fine.");
  EXPECT_TRUE(b.stopped());
}

TEST(StopCondition, HeldBackTextIsReleasedWhenItIsNotAStop) {
  StopCondition sc({}, {"STOP"});
  EXPECT_EQ(sc.Push("a ST"), "a ");
  EXPECT_EQ(sc.Push("OR"), "STOR");
  EXPECT_EQ(sc.Push("e S"), "e ");
  EXPECT_EQ(sc.Flush(), "S");  // the end of generation releases what was held
  EXPECT_FALSE(sc.stopped());
  sc.Reset();
  EXPECT_EQ(Feed(sc, {"xSTSTO", "P"}), "xST");
  EXPECT_TRUE(sc.stopped());
  // The earliest match in the text wins, whatever the order of the stop strings.
  StopCondition two({}, {"bc", "abcd"});
  EXPECT_EQ(Feed(two, {"xab", "cd"}), "x");
  EXPECT_EQ(two.matched(), "abcd");
  StopCondition three({}, {"cd", "abc"});
  EXPECT_EQ(Feed(three, {"xa", "bcd"}), "x");
  EXPECT_EQ(three.matched(), "abc");
}

TEST(StopCondition, StopStringsThroughTheTokenizerStream) {
  ByteTokenizer tok;
  StopCondition sc({}, {"é!"});  // two-byte character: its bytes arrive as separate tokens
  StreamDecoder dec(&tok);
  std::string out;
  for (int32_t id : tok.Encode("café and caf\xc3\xa9! never")) {
    out += sc.Push(dec.Push(id));
    if (sc.stopped()) break;
  }
  EXPECT_TRUE(sc.stopped());
  EXPECT_EQ(out, "café and caf");
}

TEST(StopCondition, EndOfTextIds) {
  ByteTokenizer tok;  // knows <|endoftext|> (256), not <|im_end|>
  const std::vector<int64_t> file_ids = {7, 256, -1};
  const std::vector<int32_t> ids = StopCondition::EndOfTextIds(file_ids, tok);
  EXPECT_EQ(ids, (std::vector<int32_t>{7, 256}));
  StopCondition sc(ids, {});
  EXPECT_TRUE(sc.IsEndOfText(256));
  EXPECT_TRUE(sc.IsEndOfText(7));
  EXPECT_FALSE(sc.IsEndOfText(8));
  EXPECT_EQ(sc.Push("anything"), "anything");  // no stop strings: nothing held back
}

TEST(StopCondition, ParseStopFlag) {
  EXPECT_EQ(ParseStopStrings("a,bc,,\\n\\nUser:,x\\,y,back\\\\"),
            (std::vector<std::string>{"a", "bc", "\n\nUser:", "x,y", "back\\"}));
  EXPECT_TRUE(ParseStopStrings("").empty());
}

}  // namespace
}  // namespace st
