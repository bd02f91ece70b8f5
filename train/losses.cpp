// Losses and router statistics (definitions in losses.h).
#include "train/losses.h"

#include "model/check.h"

namespace st {

torch::Tensor RouterProbs(const torch::Tensor& router_logits_TE, bool apply_softmax) {
  const torch::Tensor l = router_logits_TE.to(torch::kFloat32);
  if (apply_softmax) return torch::softmax(l, -1);
  const torch::Tensor s = torch::sigmoid(l);
  return s / s.sum(-1, /*keepdim=*/true);
}

torch::Tensor LoadBalanceLoss(const torch::Tensor& probs_TE, const torch::Tensor& f_E) {
  const int64_t E = probs_TE.size(1);
  const torch::Tensor p_E = probs_TE.mean(0);
  return static_cast<double>(E) * (f_E.detach().to(p_E.device(), torch::kFloat32) * p_E).sum();
}

torch::Tensor RouterZLoss(const torch::Tensor& router_logits_TE) {
  return torch::logsumexp(router_logits_TE.to(torch::kFloat32), -1).pow(2).mean();
}

LoadBalancePool::LoadBalancePool(int layers, int experts, int window, Reducer reducer)
    : layers_(layers), experts_(experts), window_(window), reducer_(std::move(reducer)) {
  ST_CHECK(window >= 1) << "window=" << window;
}

torch::Tensor LoadBalancePool::Push(const torch::Tensor& counts_LE) {
  torch::Tensor c = counts_LE.detach().to(torch::kCPU, torch::kInt64).contiguous();
  ST_CHECK(c.size(0) == layers_ && c.size(1) == experts_) << c.sizes();
  if (reducer_) c = reducer_(c).to(torch::kCPU, torch::kInt64);
  history_.push_back(c);
  while (static_cast<int>(history_.size()) > window_) history_.pop_front();
  torch::Tensor sum = torch::zeros({layers_, experts_}, torch::kInt64);
  for (const auto& h : history_) sum += h;
  torch::Tensor f = sum.to(torch::kFloat32);
  return f / f.sum(1, /*keepdim=*/true).clamp_min(1.0);
}

torch::Tensor LoadBalancePool::History() const {
  if (history_.empty()) return torch::zeros({0, layers_, experts_}, torch::kInt64);
  return torch::stack(std::vector<torch::Tensor>(history_.begin(), history_.end()));
}

void LoadBalancePool::Restore(const torch::Tensor& history_NLE) {
  history_.clear();
  for (int64_t i = 0; i < history_NLE.size(0); ++i) {
    history_.push_back(history_NLE[i].to(torch::kInt64).clone());
  }
  while (static_cast<int>(history_.size()) > window_) history_.pop_front();
}

LossTerms ComputeLosses(const ForwardOutput& out, const torch::Tensor& targets_BS,
                        const ModelConfig& cfg, const LossOptions& opt, LoadBalancePool* pool) {
  LossTerms t;
  const int64_t V = out.logits_BSV.size(-1);
  t.ce = torch::nn::functional::cross_entropy(out.logits_BSV.reshape({-1, V}).to(torch::kFloat32),
                                              targets_BS.reshape({-1}));
  const int L = cfg.num_hidden_layers;
  std::vector<torch::Tensor> counts;
  for (const auto& r : out.routing) counts.push_back(r.expert_counts_E);
  torch::Tensor counts_LE = torch::stack(counts).to(torch::kCPU);
  torch::Tensor f_LE;
  if (pool != nullptr) {
    f_LE = pool->Push(counts_LE);
  } else {
    f_LE = counts_LE.to(torch::kFloat32);
    f_LE = f_LE / f_LE.sum(1, true).clamp_min(1.0);
  }
  torch::Tensor lbl = torch::zeros({}, out.logits_BSV.options().dtype(torch::kFloat32));
  torch::Tensor z = torch::zeros_like(lbl);
  for (int l = 0; l < L; ++l) {
    const torch::Tensor& logits = out.routing[l].router_logits_TE;
    torch::Tensor probs = RouterProbs(logits, cfg.moe_primary_router_apply_softmax);
    lbl = lbl + LoadBalanceLoss(probs, f_LE[l]);
    t.router_probs_LTE.push_back(probs.detach());
    if (opt.z_loss_coef > 0) z = z + RouterZLoss(logits);
  }
  t.lbl = lbl / L;
  t.z = z / L;
  t.total = t.ce;
  if (opt.lbl_coef > 0) t.total = t.total + opt.lbl_coef * t.lbl;
  if (opt.z_loss_coef > 0) t.total = t.total + opt.z_loss_coef * t.z;
  return t;
}

RouterStats::RouterStats(int layers, int experts) : layers_(layers), experts_(experts) { Reset(); }

void RouterStats::Reset() {
  counts_.assign(layers_, std::vector<int64_t>(experts_, 0));
  entropy_sum_.assign(layers_, 0.0);
  entropy_tokens_.assign(layers_, 0);
  zero_.assign(layers_, 0);
  total_.assign(layers_, 0);
}

void RouterStats::Add(const std::vector<LayerRouting>& routing,
                      const std::vector<torch::Tensor>& probs) {
  torch::NoGradGuard no_grad;
  ST_CHECK(static_cast<int>(routing.size()) == layers_ && probs.size() == routing.size());
  for (int l = 0; l < layers_; ++l) {
    const LayerRouting& r = routing[l];
    torch::Tensor c = r.expert_counts_E.to(torch::kCPU, torch::kInt64).contiguous();
    for (int e = 0; e < experts_; ++e) counts_[l][e] += c.data_ptr<int64_t>()[e];
    const torch::Tensor& p = probs[l];
    entropy_sum_[l] += (-(p * p.clamp_min(1e-12).log()).sum(-1)).sum().item<double>();
    entropy_tokens_[l] += p.size(0);
    zero_[l] += r.reglu_zero;
    total_[l] += r.reglu_total;
  }
}

std::vector<std::vector<double>> RouterStats::ExpertLoad() const {
  std::vector<std::vector<double>> load(layers_, std::vector<double>(experts_, 0.0));
  for (int l = 0; l < layers_; ++l) {
    int64_t sum = 0;
    for (int64_t c : counts_[l]) sum += c;
    for (int e = 0; e < experts_; ++e) {
      load[l][e] = sum > 0 ? static_cast<double>(counts_[l][e]) / sum : 0.0;
    }
  }
  return load;
}

std::vector<double> RouterStats::RouterEntropy() const {
  std::vector<double> h(layers_, 0.0);
  for (int l = 0; l < layers_; ++l) {
    if (entropy_tokens_[l] > 0) h[l] = entropy_sum_[l] / entropy_tokens_[l];
  }
  return h;
}

std::vector<double> RouterStats::ReGLUSparsity() const {
  std::vector<double> s(layers_, 0.0);
  for (int l = 0; l < layers_; ++l) {
    if (total_[l] > 0) s[l] = static_cast<double>(zero_[l]) / total_[l];
  }
  return s;
}

}  // namespace st
