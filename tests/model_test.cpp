// Tests of the LibTorch model against independent hand computations: names and shapes, masks,
// RoPE / NoPE, router gating, the MoE against a per-token reference, losses and the optimizer.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "model/config.h"
#include "model/transformer.h"
#include "train/losses.h"
#include "train/optim.h"

namespace st {
namespace {

ModelConfig SmallConfig(bool tied = true, bool softmax = false) {
  ModelConfig c;
  c.num_hidden_layers = 4;
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 12;  // q width 48 != H, as in the 21B
  c.vocab_size = 50;
  c.max_position_embeddings = 64;
  c.rope_theta = 10000;
  c.rope_layout = {0, 1, 1, 1};
  c.sliding_window_layout = {0, 1, 1, 1};
  c.sliding_window_size = 4;
  c.moe_num_primary_experts = 6;
  c.moe_num_active_primary_experts = 2;
  c.moe_ffn_hidden_size = 16;
  c.moe_primary_router_apply_softmax = softmax;
  c.tie_word_embeddings = tied;
  absl::Status s = ValidateModelConfig(c);
  EXPECT_TRUE(s.ok()) << s;
  return c;
}

TEST(ModelTest, ParameterNamesAndShapesAreTheHuggingFaceOnes) {
  for (bool tied : {true, false}) {
    ModelConfig c = SmallConfig(tied);
    SmallThinkerForCausalLM m(c);
    std::map<std::string, std::vector<int64_t>> expected;
    const int64_t H = 32, Q = 48, KV = 24, E = 6, F = 16, V = 50;
    expected["model.embed_tokens.weight"] = {V, H};
    for (int l = 0; l < 4; ++l) {
      const std::string p = absl::StrCat("model.layers.", l, ".");
      expected[p + "input_layernorm.weight"] = {H};
      expected[p + "self_attn.q_proj.weight"] = {Q, H};
      expected[p + "self_attn.k_proj.weight"] = {KV, H};
      expected[p + "self_attn.v_proj.weight"] = {KV, H};
      expected[p + "self_attn.o_proj.weight"] = {H, Q};
      expected[p + "post_attention_layernorm.weight"] = {H};
      expected[p + "block_sparse_moe.primary_router.weight"] = {E, H};
      for (int e = 0; e < E; ++e) {
        const std::string x = absl::StrCat(p, "block_sparse_moe.experts.", e, ".");
        expected[x + "gate.weight"] = {F, H};
        expected[x + "up.weight"] = {F, H};
        expected[x + "down.weight"] = {H, F};
      }
    }
    expected["model.norm.weight"] = {H};
    if (!tied) expected["lm_head.weight"] = {V, H};
    std::map<std::string, std::vector<int64_t>> got;
    int64_t numel = 0;
    for (const auto& item : m->named_parameters()) {
      got[item.key()] = item.value().sizes().vec();
      numel += item.value().numel();
    }
    EXPECT_EQ(got, expected);
    EXPECT_EQ(numel, c.NumParams());
  }
}

TEST(ModelTest, ForwardShapesAndRoutingCounts) {
  torch::manual_seed(0);
  ModelConfig c = SmallConfig();
  SmallThinkerForCausalLM m(c);
  torch::Tensor ids = torch::randint(0, 50, {3, 10}, torch::kInt64);
  ForwardOutput out = m->forward(ids);
  EXPECT_EQ(out.logits_BSV.sizes().vec(), (std::vector<int64_t>{3, 10, 50}));
  ASSERT_EQ(out.routing.size(), 4u);
  for (const auto& r : out.routing) {
    EXPECT_EQ(r.router_logits_TE.sizes().vec(), (std::vector<int64_t>{30, 6}));
    EXPECT_EQ(r.expert_counts_E.sum().item<int64_t>(), 30 * 2);
    EXPECT_EQ(r.reglu_total, 30 * 2 * 16);
    EXPECT_GT(r.reglu_zero, 0);
    EXPECT_LT(r.reglu_zero, r.reglu_total);
  }
}

TEST(ModelTest, AttentionMaskKeepsKeyIffWithinWindow) {
  for (int64_t window : {0, 1, 3, 7}) {
    torch::Tensor m = AttentionMask(9, window, torch::kCPU);
    for (int i = 0; i < 9; ++i) {
      for (int j = 0; j < 9; ++j) {
        const bool want = (i - j >= 0) && (window == 0 || i - j < window);
        EXPECT_EQ(m[i][j].item<bool>(), want) << "window " << window << " i " << i << " j " << j;
      }
    }
  }
}

TEST(ModelTest, RmsNormMatchesHandComputation) {
  RMSNorm n(4, 1e-6);
  {
    torch::NoGradGuard g;
    n->weight.copy_(torch::tensor({1.0f, 2.0f, 0.5f, -1.0f}));
  }
  torch::Tensor x = torch::tensor({{1.0f, -2.0f, 3.0f, 0.5f}});
  const double ms = (1 + 4 + 9 + 0.25) / 4.0;
  const double r = 1.0 / std::sqrt(ms + 1e-6);
  torch::Tensor y = n(x);
  const double want[4] = {1 * r * 1, -2 * r * 2, 3 * r * 0.5, 0.5 * r * -1};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[0][i].item<double>(), want[i], 1e-6);
}

TEST(ModelTest, RopeIsNeoxRotateHalfAndRelative) {
  const int64_t D = 4;
  const double theta = 100.0;
  RopeTables rope = MakeRopeTables(6, D, theta, torch::kCPU);
  torch::Tensor x =
      torch::tensor({0.3f, -1.2f, 0.7f, 2.0f}).view({1, 1, 1, D}).expand({1, 1, 6, D});
  torch::Tensor y = ApplyRope(x.contiguous(), rope);
  // Pair (i, i + D/2) rotates by angle pos * theta^(-2i/D).
  const double xv[4] = {0.3, -1.2, 0.7, 2.0};
  for (int pos = 0; pos < 6; ++pos) {
    for (int i = 0; i < D / 2; ++i) {
      const double a = pos * std::pow(theta, -2.0 * i / D);
      const double x1 = xv[i], x2 = xv[i + D / 2];
      EXPECT_NEAR(y[0][0][pos][i].item<double>(), x1 * std::cos(a) - x2 * std::sin(a), 1e-5);
      EXPECT_NEAR(y[0][0][pos][i + D / 2].item<double>(), x2 * std::cos(a) + x1 * std::sin(a),
                  1e-5);
    }
  }
  // q.k after rotation depends only on the distance between positions.
  torch::manual_seed(1);
  torch::Tensor q = torch::randn({1, 1, 1, 8}), k = torch::randn({1, 1, 1, 8});
  auto score = [&](int64_t pq, int64_t pk) {
    RopeTables rq = MakeRopeTables(1, 8, 10000, torch::kCPU, pq);
    RopeTables rk = MakeRopeTables(1, 8, 10000, torch::kCPU, pk);
    return (ApplyRope(q, rq) * ApplyRope(k, rk)).sum().item<double>();
  };
  EXPECT_NEAR(score(5, 2), score(105, 102), 1e-4);
  EXPECT_GT(std::abs(score(5, 2) - score(5, 4)), 1e-3);
}

// Output of one attention module for a sequence of hidden states.
torch::Tensor RunAttention(Attention& a, const ModelConfig& c, const torch::Tensor& h_BSH) {
  const int64_t S = h_BSH.size(1);
  RopeTables rope = MakeRopeTables(S, c.head_dim, c.rope_theta, torch::kCPU);
  return a(h_BSH, rope, AttentionMask(S, a->window, torch::kCPU));
}

TEST(ModelTest, NoPEGlobalLayerIsPositionInvariantRopeLayerIsNot) {
  torch::manual_seed(2);
  ModelConfig c = SmallConfig();
  c.sliding_window_layout = {0, 0, 0, 0};
  ASSERT_TRUE(ValidateModelConfig(c).ok());
  Attention nope(c, 0), rope(c, 1);
  ASSERT_FALSE(nope->use_rope);
  ASSERT_TRUE(rope->use_rope);
  const int64_t S = 7;
  torch::Tensor h = torch::randn({1, S, 32});
  // Permute the earlier tokens; the last query attends the same set of keys.
  torch::Tensor perm = torch::tensor({3, 0, 5, 1, 4, 2, 6}, torch::kInt64);
  torch::Tensor hp = h.index_select(1, perm);
  torch::NoGradGuard g;
  torch::Tensor y = RunAttention(nope, c, h), yp = RunAttention(nope, c, hp);
  EXPECT_TRUE(torch::allclose(y[0][S - 1], yp[0][S - 1], 1e-5, 1e-6));
  torch::Tensor r = RunAttention(rope, c, h), rp = RunAttention(rope, c, hp);
  EXPECT_FALSE(torch::allclose(r[0][S - 1], rp[0][S - 1], 1e-3, 1e-4));
}

TEST(ModelTest, SlidingWindowLayerIgnoresKeysOutsideTheWindow) {
  torch::manual_seed(3);
  ModelConfig c = SmallConfig();  // layer 1: RoPE + window 4
  Attention a(c, 1);
  ASSERT_EQ(a->window, 4);
  const int64_t S = 10;
  torch::Tensor h = torch::randn({1, S, 32});
  torch::Tensor h2 = h.clone();
  h2[0][2] += 1.0;  // perturb key/query position 2
  torch::NoGradGuard g;
  torch::Tensor y = RunAttention(a, c, h), y2 = RunAttention(a, c, h2);
  for (int64_t i = 0; i < S; ++i) {
    const bool same = torch::allclose(y[0][i], y2[0][i], 1e-6, 1e-7);
    const bool in_window = (i - 2 >= 0) && (i - 2 < 4);
    EXPECT_EQ(same, !in_window) << "query " << i;
  }
}

TEST(ModelTest, GateWeightsMatchHandComputation) {
  torch::Tensor top = torch::tensor({{2.0f, -1.0f, 0.5f}});
  auto sig = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  const double s[3] = {sig(2.0), sig(-1.0), sig(0.5)};
  const double ssum = s[0] + s[1] + s[2];
  torch::Tensor w = GateWeights(top, /*apply_softmax=*/false);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(w[0][i].item<double>(), s[i] / ssum, 1e-6);
  const double e[3] = {std::exp(2.0), std::exp(-1.0), std::exp(0.5)};
  const double esum = e[0] + e[1] + e[2];
  torch::Tensor ws = GateWeights(top, /*apply_softmax=*/true);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(ws[0][i].item<double>(), e[i] / esum, 1e-6);
}

// Per-token reference: for each token, pick top-k by sorting its logits by hand, gate, and run
// the chosen experts one by one.
torch::Tensor ReferenceMoE(MoE& moe, const torch::Tensor& h_TH, const torch::Tensor& logits_TE,
                           bool softmax) {
  const int64_t T = h_TH.size(0), E = logits_TE.size(1), K = moe->top_k;
  torch::Tensor y = torch::zeros_like(h_TH);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<std::pair<double, int64_t>> ranked;
    for (int64_t e = 0; e < E; ++e) ranked.push_back({logits_TE[t][e].item<double>(), e});
    std::sort(ranked.begin(), ranked.end(), [](auto& a, auto& b) { return a.first > b.first; });
    std::vector<double> g(K);
    double sum = 0;
    for (int64_t j = 0; j < K; ++j) {
      g[j] = softmax ? std::exp(ranked[j].first) : 1.0 / (1.0 + std::exp(-ranked[j].first));
      sum += g[j];
    }
    for (int64_t j = 0; j < K; ++j) {
      auto* ex = moe->experts[ranked[j].second]->as<ExpertImpl>();
      torch::Tensor x = h_TH[t];
      torch::Tensor a = torch::relu(torch::mv(ex->gate->weight, x)) * torch::mv(ex->up->weight, x);
      y[t] += (g[j] / sum) * torch::mv(ex->down->weight, a);
    }
  }
  return y;
}

TEST(ModelTest, MoEMatchesPerTokenReference) {
  for (bool softmax : {false, true}) {
    torch::manual_seed(4);
    ModelConfig c = SmallConfig(true, softmax);
    MoE moe(c);
    torch::Tensor x = torch::randn({13, 32}), h = torch::randn({13, 32});
    torch::NoGradGuard g;
    torch::Tensor logits = moe->Route(x);
    // The router reads its input directly: W_r x, no norm.
    EXPECT_TRUE(
        torch::allclose(logits, torch::matmul(x, moe->primary_router->weight.t()), 1e-5, 1e-6));
    LayerRouting r;
    torch::Tensor y = moe(h, logits, &r);
    torch::Tensor want = ReferenceMoE(moe, h, logits, softmax);
    EXPECT_TRUE(torch::allclose(y, want, 1e-4, 1e-5)) << (y - want).abs().max();
    // Sparsity count against a direct count over the chosen experts.
    int64_t zeros = 0;
    for (int64_t t = 0; t < 13; ++t) {
      for (int64_t j = 0; j < 2; ++j) {
        auto* ex = moe->experts[r.topk_idx_TK[t][j].item<int64_t>()]->as<ExpertImpl>();
        zeros += (torch::relu(torch::mv(ex->gate->weight, h[t])) == 0).sum().item<int64_t>();
      }
    }
    EXPECT_EQ(r.reglu_zero, zeros);
  }
}

// The grouped experts (three batched products over the stacked weights) against the
// per-expert loop: the same logits, losses, routing statistics and gradient of every parameter,
// with both gatings, including a batch where some expert gets no token.
TEST(ModelTest, GroupedExpertsGiveTheLoopsLossesAndGradients) {
  for (bool softmax : {false, true}) {
    for (int64_t seq : {9, 2}) {  // 2 x 2 tokens x k 2 of 6 experts: some experts idle
      torch::manual_seed(11);
      ModelConfig c = SmallConfig(true, softmax);
      SmallThinkerForCausalLM m(c);
      torch::Tensor ids = torch::randint(0, 50, {2, seq + 1}, torch::kInt64);
      torch::Tensor in = ids.narrow(1, 0, seq), tgt = ids.narrow(1, 1, seq);
      LossOptions opt;  // load balance and z-loss on: their gradients count too
      auto run = [&](bool grouped) {
        m->SetGroupedExperts(grouped);
        for (auto& p : m->parameters()) {
          if (p.grad().defined()) p.grad().zero_();
        }
        ForwardOutput out = m->forward(in);
        LossTerms t = ComputeLosses(out, tgt, c, opt, nullptr);
        t.total.backward();
        std::vector<torch::Tensor> g;
        for (const auto& p : m->parameters()) {  // an idle expert has no gradient in the loop
          g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
        }
        int64_t zeros = 0, total = 0;
        for (const LayerRouting& r : out.routing) zeros += r.reglu_zero, total += r.reglu_total;
        return std::make_tuple(out.logits_BSV.detach(), t.total.item<double>(), g, zeros, total);
      };
      auto [logits_l, loss_l, grads_l, zeros_l, total_l] = run(false);
      auto [logits_g, loss_g, grads_g, zeros_g, total_g] = run(true);
      EXPECT_TRUE(torch::allclose(logits_g, logits_l, 1e-5, 1e-6))
          << (logits_g - logits_l).abs().max();
      EXPECT_NEAR(loss_g, loss_l, 1e-6 * std::abs(loss_l));
      EXPECT_EQ(zeros_g, zeros_l);
      EXPECT_EQ(total_g, total_l);
      ASSERT_EQ(grads_g.size(), grads_l.size());
      int64_t k = 0;
      for (const auto& item : m->named_parameters()) {
        EXPECT_TRUE(torch::allclose(grads_g[k], grads_l[k], 1e-4, 1e-7))
            << item.key() << " max diff " << (grads_g[k] - grads_l[k]).abs().max();
        ++k;
      }
    }
  }
}

// Gradient checkpointing: each layer run again in backward gives the plain model's losses and
// the gradient of every parameter (router included, through the load-balance and z-losses).
TEST(ModelTest, CheckpointedLayersGiveThePlainGradients) {
  torch::manual_seed(12);
  ModelConfig c = SmallConfig();
  SmallThinkerForCausalLM m(c);
  m->train();
  torch::Tensor ids = torch::randint(0, 50, {2, 10}, torch::kInt64);
  torch::Tensor in = ids.narrow(1, 0, 9), tgt = ids.narrow(1, 1, 9);
  LossOptions opt;
  opt.z_loss_coef = 1e-3;
  auto run = [&](bool checkpoint) {
    m->model->checkpoint_layers = checkpoint;
    for (auto& p : m->parameters()) {
      if (p.grad().defined()) p.grad().zero_();
    }
    LossTerms t = ComputeLosses(m->forward(in), tgt, c, opt, nullptr);
    t.total.backward();
    std::vector<torch::Tensor> g;
    for (const auto& p : m->parameters()) {
      g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
    }
    return std::make_pair(t.total.item<double>(), g);
  };
  auto [loss_plain, g_plain] = run(false);
  auto [loss_ckpt, g_ckpt] = run(true);
  EXPECT_NEAR(loss_ckpt, loss_plain, 1e-6 * std::abs(loss_plain));
  int64_t k = 0, nonzero = 0;
  for (const auto& item : m->named_parameters()) {
    EXPECT_TRUE(torch::allclose(g_ckpt[k], g_plain[k], 1e-4, 1e-7))
        << item.key() << " max diff " << (g_ckpt[k] - g_plain[k]).abs().max();
    nonzero += g_ckpt[k].abs().sum().item<double>() > 0;
    ++k;
  }
  EXPECT_GT(nonzero, k / 2);  // the gradients really flowed through the recomputation
}

TEST(ModelTest, RouterReadsTheRawResidualBeforeAttention) {
  torch::manual_seed(5);
  ModelConfig c = SmallConfig();
  SmallThinkerForCausalLM m(c);
  torch::Tensor ids = torch::randint(0, 50, {2, 6}, torch::kInt64);
  torch::NoGradGuard g;
  ForwardOutput out = m->forward(ids);
  // Layer 0's input is the raw embedding (no scaling, no norm).
  torch::Tensor x = m->model->embed_tokens(ids).reshape({12, 32});
  auto* l0 = m->model->layers[0]->as<DecoderLayerImpl>();
  torch::Tensor want = torch::matmul(x, l0->block_sparse_moe->primary_router->weight.t());
  EXPECT_TRUE(torch::allclose(out.routing[0].router_logits_TE, want, 1e-5, 1e-6));
}

TEST(ModelTest, GradientsReachTheRouterOfEveryLayer) {
  torch::manual_seed(6);
  ModelConfig c = SmallConfig();
  SmallThinkerForCausalLM m(c);
  torch::Tensor ids = torch::randint(0, 50, {2, 8}, torch::kInt64);
  ForwardOutput out = m->forward(ids);
  LossOptions opt;
  opt.lbl_coef = 0.0;  // the language-model loss alone must train the router (through gating)
  LossTerms t = ComputeLosses(out, torch::randint(0, 50, {2, 8}, torch::kInt64), c, opt, nullptr);
  t.total.backward();
  for (int l = 0; l < 4; ++l) {
    auto* layer = m->model->layers[l]->as<DecoderLayerImpl>();
    torch::Tensor g = layer->block_sparse_moe->primary_router->weight.grad();
    ASSERT_TRUE(g.defined()) << "layer " << l;
    EXPECT_GT(g.abs().sum().item<double>(), 0.0) << "layer " << l;
  }
}

// Two half micro-batches with the loss divided by 2 give the gradient of one full batch
// (cross-entropy is a mean over equally sized micro-batches): what gradient accumulation needs.
TEST(ModelTest, HalfBatchGradientsAddUpToTheFullBatchGradient) {
  torch::manual_seed(8);
  ModelConfig c = SmallConfig();
  SmallThinkerForCausalLM m(c);
  torch::Tensor ids = torch::randint(0, 50, {4, 9}, torch::kInt64);
  torch::Tensor in = ids.narrow(1, 0, 8), tgt = ids.narrow(1, 1, 8);
  LossOptions opt;
  opt.lbl_coef = 0.0;
  auto grads = [&]() {
    std::vector<torch::Tensor> g;
    for (const auto& p : m->parameters()) {
      g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
      if (p.grad().defined()) p.grad().zero_();
    }
    return g;
  };
  ComputeLosses(m->forward(in), tgt, c, opt, nullptr).total.backward();
  std::vector<torch::Tensor> full = grads();
  for (int half = 0; half < 2; ++half) {
    torch::Tensor i = in.narrow(0, 2 * half, 2), t = tgt.narrow(0, 2 * half, 2);
    (ComputeLosses(m->forward(i), t, c, opt, nullptr).total / 2).backward();
  }
  std::vector<torch::Tensor> accumulated = grads();
  for (size_t k = 0; k < full.size(); ++k) {
    EXPECT_TRUE(torch::allclose(full[k], accumulated[k], 1e-4, 1e-6)) << "parameter " << k;
  }
}

TEST(LossTest, LoadBalanceLossMatchesHandComputation) {
  torch::Tensor logits = torch::tensor({{1.0f, 0.0f, -1.0f}, {0.5f, 2.0f, 0.0f}});
  torch::Tensor f = torch::tensor({0.5f, 0.25f, 0.25f});
  for (bool softmax : {false, true}) {
    double p[3] = {0, 0, 0};
    for (int t = 0; t < 2; ++t) {
      double s[3], sum = 0;
      for (int e = 0; e < 3; ++e) {
        const double l = logits[t][e].item<double>();
        s[e] = softmax ? std::exp(l) : 1.0 / (1.0 + std::exp(-l));
        sum += s[e];
      }
      for (int e = 0; e < 3; ++e) p[e] += s[e] / sum / 2.0;
    }
    const double want = 3.0 * (0.5 * p[0] + 0.25 * p[1] + 0.25 * p[2]);
    EXPECT_NEAR(LoadBalanceLoss(RouterProbs(logits, softmax), f).item<double>(), want, 1e-6);
  }
  // Uniform routing and uniform probabilities give exactly 1.
  EXPECT_NEAR(
      LoadBalanceLoss(torch::full({4, 8}, 1.0 / 8), torch::full({8}, 1.0 / 8)).item<double>(), 1.0,
      1e-6);
}

TEST(LossTest, RouterZLossMatchesHandComputation) {
  torch::Tensor logits = torch::tensor({{1.0f, 2.0f}, {0.0f, -3.0f}});
  const double a = std::log(std::exp(1.0) + std::exp(2.0));
  const double b = std::log(std::exp(0.0) + std::exp(-3.0));
  EXPECT_NEAR(RouterZLoss(logits).item<double>(), (a * a + b * b) / 2, 1e-5);
}

TEST(LossTest, LoadBalancePoolPoolsOverTheWindowAndCallsTheReducer) {
  int reducer_calls = 0;
  LoadBalancePool pool(1, 2, /*window=*/2, [&](const torch::Tensor& c) {
    ++reducer_calls;
    return c * 2;  // as if a second rank saw the same counts
  });
  pool.Push(torch::tensor({{4, 0}}, torch::kInt64));
  pool.Push(torch::tensor({{1, 3}}, torch::kInt64));
  torch::Tensor f = pool.Push(torch::tensor({{0, 4}}, torch::kInt64));  // window: last two
  EXPECT_EQ(reducer_calls, 3);
  EXPECT_NEAR(f[0][0].item<double>(), 1.0 / 8, 1e-7);
  EXPECT_NEAR(f[0][1].item<double>(), 7.0 / 8, 1e-7);
  LoadBalancePool copy(1, 2, 2);
  copy.Restore(pool.History());
  EXPECT_TRUE(torch::equal(copy.History(), pool.History()));
}

TEST(LossTest, RouterStatsEntropyAndLoad) {
  RouterStats stats(1, 2);
  LayerRouting r;
  r.router_logits_TE = torch::tensor({{0.0f, 0.0f}});  // uniform -> entropy ln 2
  r.expert_counts_E = torch::tensor({3, 1}, torch::kInt64);
  r.reglu_zero = 6;
  r.reglu_total = 8;
  stats.Add({r}, {RouterProbs(r.router_logits_TE, /*apply_softmax=*/true)});
  EXPECT_NEAR(stats.RouterEntropy()[0], std::log(2.0), 1e-6);
  EXPECT_NEAR(stats.ExpertLoad()[0][0], 0.75, 1e-9);
  EXPECT_NEAR(stats.ReGLUSparsity()[0], 0.75, 1e-9);
}

TEST(OptimTest, AdamWMatchesTorchAdamWWithDecayGroups) {
  torch::manual_seed(7);
  torch::Tensor w = torch::randn({5, 3}).requires_grad_(true);
  torch::Tensor n = torch::randn({3}).requires_grad_(true);
  torch::Tensor w2 = w.detach().clone().requires_grad_(true);
  torch::Tensor n2 = n.detach().clone().requires_grad_(true);
  AdamWOptions o;
  AdamW ours({{"layer.weight", w}, {"input_layernorm.weight", n}}, o);
  EXPECT_TRUE(ours.params()[0].decay);
  EXPECT_FALSE(ours.params()[1].decay);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(
      std::vector<torch::Tensor>{w2},
      std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(0.01).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1)));
  groups.emplace_back(
      std::vector<torch::Tensor>{n2},
      std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(0.01).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0)));
  torch::optim::AdamW theirs(groups);
  torch::Tensor x = torch::randn({4, 5});
  for (int step = 0; step < 5; ++step) {
    ours.ZeroGrad();
    theirs.zero_grad();
    (torch::matmul(x, w) * n).pow(2).sum().backward();
    (torch::matmul(x, w2) * n2).pow(2).sum().backward();
    ours.Step(0.01);
    theirs.step();
  }
  EXPECT_TRUE(torch::allclose(w, w2, 1e-5, 1e-6)) << (w - w2).abs().max();
  EXPECT_TRUE(torch::allclose(n, n2, 1e-5, 1e-6)) << (n - n2).abs().max();
}

TEST(OptimTest, ScheduleWarmupCosineAndWsd) {
  LrSchedule s;
  s.peak = 1.0;
  s.warmup_steps = 10;
  s.total_steps = 110;
  s.min_lr_ratio = 0.1;
  EXPECT_NEAR(s.At(0), 0.1, 1e-12);
  EXPECT_NEAR(s.At(9), 1.0, 1e-12);
  EXPECT_NEAR(s.At(10), 1.0, 1e-12);
  EXPECT_NEAR(s.At(109), 0.1, 1e-12);
  // Halfway through the decay: min + (peak - min) / 2.
  const double mid = 10 + 99 / 2.0;
  EXPECT_NEAR(s.At(static_cast<int64_t>(mid)), 0.1 + 0.45 * (1 + std::cos(M_PI * (59 - 10) / 99.0)),
              1e-12);
  s.kind = "wsd";
  s.wsd_decay_fraction = 0.2;  // last 22 steps decay
  EXPECT_NEAR(s.At(50), 1.0, 1e-12);
  EXPECT_NEAR(s.At(87), 1.0, 1e-12);
  EXPECT_NEAR(s.At(109), 0.1, 1e-12);
  EXPECT_LT(s.At(100), 1.0);
  EXPECT_GT(s.At(100), 0.1);
}

}  // namespace
}  // namespace st
