// Training losses and router statistics: cross-entropy, the load-balance loss with token
// fractions pooled over a window of micro-batches (and, later, over data-parallel ranks),
// the router z-loss, expert load, router entropy and ReGLU sparsity.
//
// Load-balance loss, per layer:  LBL = E * sum_i f_i * p_i
//   f_i  fraction of the token-to-expert assignments that went to expert i, counted over the
//        last `window` micro-batches (this one included) and, in distributed runs, summed over
//        the ranks of the data-parallel group before dividing. No gradient flows through f.
//   p_i  mean over this micro-batch's tokens of the router probability of expert i:
//        softmax gating:  p_t = softmax(logits_t) over all E experts;
//        sigmoid gating:  p_t,i = sigmoid(l_t,i) / sum_j sigmoid(l_t,j), i.e. the released
//                         gate (sigmoid renormalised over the chosen experts) extended to all
//                         E experts, so that it is a distribution and the loss is minimised (=1)
//                         by uniform use, as with softmax.
// The reported loss is the mean over layers. window = 1 is the usual per-micro-batch loss;
// larger windows are the paper's "global" loss: experts may specialise within a batch as long
// as their use balances out over the window.
#pragma once

#include <torch/torch.h>

#include <deque>
#include <functional>
#include <vector>

#include "model/transformer.h"

namespace st {

// Router probability over all experts, [T, E] fp32 (definition above).
torch::Tensor RouterProbs(const torch::Tensor& router_logits_TE, bool apply_softmax);

// E * sum_i f_E[i] * mean_t probs_TE[t, i]; f_E is a constant (no grad).
torch::Tensor LoadBalanceLoss(const torch::Tensor& probs_TE, const torch::Tensor& f_E);

// Router z-loss: mean over tokens of logsumexp(logits_t)^2.
torch::Tensor RouterZLoss(const torch::Tensor& router_logits_TE);

// Pools per-layer assignment counts over the last `window` micro-batches. The reducer hook is
// the seam for data-parallel groups: it receives this micro-batch's counts [L, E] (int64) and
// returns them summed over the group (identity in a single process).
class LoadBalancePool {
 public:
  using Reducer = std::function<torch::Tensor(const torch::Tensor& counts_LE)>;
  LoadBalancePool(int layers, int experts, int window, Reducer reducer = nullptr);
  // Adds this micro-batch's counts and returns the pooled fractions f [L, E] (fp32, cpu).
  torch::Tensor Push(const torch::Tensor& counts_LE);
  // Checkpoint state: the counts of the micro-batches in the window, oldest first [n, L, E].
  torch::Tensor History() const;
  void Restore(const torch::Tensor& history_NLE);
  int window() const { return window_; }

 private:
  int layers_, experts_, window_;
  Reducer reducer_;
  std::deque<torch::Tensor> history_;  // each [L, E] int64 cpu
};

struct LossOptions {
  double lbl_coef = 0.01;
  double z_loss_coef = 0.0;
};

struct LossTerms {
  torch::Tensor total;  // ce + lbl_coef * lbl + z_coef * z   (what backward() sees)
  torch::Tensor ce, lbl, z;
  std::vector<torch::Tensor> router_probs_LTE;  // per layer, detached: RouterStats reuses them
};

// Cross-entropy over logits_BSV against targets_BS, plus the router losses of every layer.
// `pool` receives this micro-batch's counts (pass nullptr for evaluation: then lbl uses this
// micro-batch's own fractions and nothing is recorded).
LossTerms ComputeLosses(const ForwardOutput& out, const torch::Tensor& targets_BS,
                        const ModelConfig& cfg, const LossOptions& opt, LoadBalancePool* pool);

// Router statistics accumulated over steps for reporting.
class RouterStats {
 public:
  RouterStats(int layers, int experts);
  // `probs` are the layers' router probabilities (LossTerms::router_probs_LTE).
  void Add(const std::vector<LayerRouting>& routing, const std::vector<torch::Tensor>& probs);
  // Per-layer fractions of assignments [L][E], mean router entropy in nats [L], and fraction
  // of zero ReGLU activations inside routed experts [L]. Zero-filled when empty.
  std::vector<std::vector<double>> ExpertLoad() const;
  std::vector<double> RouterEntropy() const;
  std::vector<double> ReGLUSparsity() const;
  void Reset();

 private:
  int layers_, experts_;
  std::vector<std::vector<int64_t>> counts_;
  std::vector<double> entropy_sum_;
  std::vector<int64_t> entropy_tokens_, zero_, total_;
};

}  // namespace st
