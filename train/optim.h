// AdamW with decoupled weight decay (norm weights and biases exempt) and the learning-rate
// schedules: linear warm-up then cosine to min_lr_ratio * peak, or warmup-stable-decay.
// The optimizer is ours (not torch::optim::AdamW) so that its state is plain named tensors
// that checkpoints can store under the parameters' Hugging Face names.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace st {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

// Updates, for each parameter p with gradient g at step t (1-based):
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr * wd * p      (decay group only)
//   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
// This is PyTorch's AdamW update. Threads: one thread at a time.
class AdamW {
 public:
  struct Param {
    std::string name;
    torch::Tensor param;
    bool decay;
    torch::Tensor exp_avg, exp_avg_sq;  // same shape as param
  };
  // Parameters whose name contains "norm" or ends in ".bias" get no weight decay.
  AdamW(const std::vector<std::pair<std::string, torch::Tensor>>& named_params,
        const AdamWOptions& opt);
  void Step(double lr);  // parameters without a gradient are skipped
  // Sets every gradient to a defined zero tensor (allocating it on first use).
  void ZeroGrad();
  int64_t step() const { return step_; }
  void set_step(int64_t s) { step_ = s; }
  std::vector<Param>& params() { return params_; }
  const std::vector<Param>& params() const { return params_; }

 private:
  std::vector<Param> params_;
  AdamWOptions opt_;
  int64_t step_ = 0;
};

struct LrSchedule {
  std::string kind = "cosine";  // "cosine" | "wsd" | "constant"
  double peak = 1e-3;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_lr_ratio = 0.1;        // final LR = min_lr_ratio * peak
  double wsd_decay_fraction = 0.2;  // wsd: the last fraction of steps decays linearly
  // LR for optimizer step `step` (0-based): linear warm-up from peak/warmup to peak over
  // warmup_steps, then the kind's decay, reaching min at step total_steps - 1.
  double At(int64_t step) const;
};

}  // namespace st
