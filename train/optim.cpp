// AdamW and learning-rate schedules (see optim.h).
#include "train/optim.h"

#include <algorithm>
#include <cmath>

#include "model/check.h"

namespace st {

AdamW::AdamW(const std::vector<std::pair<std::string, torch::Tensor>>& named_params,
             const AdamWOptions& opt)
    : opt_(opt) {
  for (const auto& [name, p] : named_params) {
    const bool is_norm = name.find("norm") != std::string::npos;
    const bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    params_.push_back({name, p, !(is_norm || is_bias), torch::zeros_like(p), torch::zeros_like(p)});
  }
}

void AdamW::ZeroGrad() {
  // Every parameter gets a defined zero gradient, also before the first step, so that an
  // expert that received no tokens is updated (momentum, decay) the same way whether or not
  // the process was restarted: resumed runs stay bit-identical to uninterrupted ones.
  for (auto& p : params_) {
    if (p.param.grad().defined()) {
      p.param.mutable_grad().zero_();
    } else {
      p.param.mutable_grad() = torch::zeros_like(p.param);
    }
  }
}

void AdamW::Step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  const double bc1 = 1.0 - std::pow(opt_.beta1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(opt_.beta2, static_cast<double>(step_));
  for (auto& p : params_) {
    const torch::Tensor& g = p.param.grad();
    if (!g.defined()) continue;
    p.exp_avg.mul_(opt_.beta1).add_(g, 1.0 - opt_.beta1);
    p.exp_avg_sq.mul_(opt_.beta2).addcmul_(g, g, 1.0 - opt_.beta2);
    if (p.decay && opt_.weight_decay != 0) p.param.mul_(1.0 - lr * opt_.weight_decay);
    torch::Tensor denom = (p.exp_avg_sq.sqrt() / std::sqrt(bc2)).add_(opt_.eps);
    p.param.addcdiv_(p.exp_avg, denom, -lr / bc1);
  }
}

double LrSchedule::At(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps) {
    return peak * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  }
  const double min_lr = peak * min_lr_ratio;
  const int64_t last = std::max<int64_t>(total_steps - 1, warmup_steps);
  if (kind == "constant") return peak;
  if (kind == "wsd") {
    const int64_t decay_steps =
        std::max<int64_t>(1, static_cast<int64_t>(std::llround(wsd_decay_fraction * total_steps)));
    const int64_t decay_start = std::max<int64_t>(warmup_steps, last - decay_steps);
    if (step <= decay_start) return peak;
    const double frac =
        std::min(1.0, static_cast<double>(step - decay_start) /
                          static_cast<double>(std::max<int64_t>(1, last - decay_start)));
    return peak + (min_lr - peak) * frac;
  }
  ST_CHECK(kind == "cosine") << "unknown schedule " << kind;
  if (last <= warmup_steps) return peak;
  const double frac = std::min(
      1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(last - warmup_steps));
  return min_lr + 0.5 * (peak - min_lr) * (1.0 + std::cos(M_PI * frac));
}

}  // namespace st
