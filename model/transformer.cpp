// SmallThinker modules in LibTorch (see transformer.h for the names and shape conventions).
#include "model/transformer.h"

#include <cmath>
#include <tuple>

#include "model/check.h"

namespace st {
namespace {

torch::nn::Linear NoBiasLinear(int64_t in, int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}

torch::Tensor RotateHalf(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_in) : eps(eps_in) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  const torch::Tensor xf = x.to(torch::kFloat32);
  const torch::Tensor normed = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

RopeTables MakeRopeTables(int64_t seq_len, int64_t head_dim, double theta,
                          const torch::Device& device, int64_t pos0) {
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(device);
  // inv_freq_i = theta^(-2i/D), i in [0, D/2); angles in fp64 so long contexts stay exact.
  torch::Tensor inv_freq =
      torch::pow(theta, -torch::arange(0, head_dim, 2, f64) / static_cast<double>(head_dim));
  torch::Tensor pos = torch::arange(pos0, pos0 + seq_len, f64);
  torch::Tensor ang_SD2 = torch::outer(pos, inv_freq);
  torch::Tensor ang_SD = torch::cat({ang_SD2, ang_SD2}, -1);
  return {ang_SD.cos().to(torch::kFloat32), ang_SD.sin().to(torch::kFloat32)};
}

torch::Tensor ApplyRope(const torch::Tensor& x_BNSD, const RopeTables& rope) {
  return x_BNSD * rope.cos_SD + RotateHalf(x_BNSD) * rope.sin_SD;
}

torch::Tensor AttentionMask(int64_t seq_len, int64_t window, const torch::Device& device) {
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(device);
  torch::Tensor i = torch::arange(seq_len, opts).unsqueeze(1);
  torch::Tensor j = torch::arange(seq_len, opts).unsqueeze(0);
  torch::Tensor dist = i - j;
  torch::Tensor keep = dist >= 0;
  if (window > 0) keep = keep & (dist < window);
  return keep;
}

AttentionImpl::AttentionImpl(const ModelConfig& cfg, int layer)
    : use_rope(cfg.layer_uses_rope.at(layer)),
      window(cfg.layer_uses_sliding.at(layer) ? cfg.sliding_window_size : 0),
      n_heads(cfg.num_attention_heads),
      n_kv_heads(cfg.num_key_value_heads),
      head_dim(cfg.head_dim) {
  const int64_t H = cfg.hidden_size;
  q_proj = register_module("q_proj", NoBiasLinear(H, cfg.q_width()));
  k_proj = register_module("k_proj", NoBiasLinear(H, cfg.kv_width()));
  v_proj = register_module("v_proj", NoBiasLinear(H, cfg.kv_width()));
  o_proj = register_module("o_proj", NoBiasLinear(cfg.q_width(), H));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& h_BSH, const RopeTables& rope,
                                     const torch::Tensor& mask_SS) {
  const int64_t B = h_BSH.size(0), S = h_BSH.size(1);
  const int64_t N = n_heads, G = n_kv_heads, D = head_dim;
  torch::Tensor q_BNSD = q_proj(h_BSH).view({B, S, N, D}).transpose(1, 2);
  torch::Tensor k_BGSD = k_proj(h_BSH).view({B, S, G, D}).transpose(1, 2);
  torch::Tensor v_BGSD = v_proj(h_BSH).view({B, S, G, D}).transpose(1, 2);
  if (use_rope) {
    q_BNSD = ApplyRope(q_BNSD, rope);
    k_BGSD = ApplyRope(k_BGSD, rope);
  }
  // GQA: q head n reads kv head n / (N / G).
  const int64_t rep = N / G;
  torch::Tensor k_BNSD = k_BGSD.unsqueeze(2).expand({B, G, rep, S, D}).reshape({B, N, S, D});
  torch::Tensor v_BNSD = v_BGSD.unsqueeze(2).expand({B, G, rep, S, D}).reshape({B, N, S, D});
  // Scale 1/sqrt(D) on every layer, NoPE layers included.
  torch::Tensor scores_BNSS =
      torch::matmul(q_BNSD, k_BNSD.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(D)));
  scores_BNSS =
      scores_BNSS.masked_fill(mask_SS.logical_not(), -std::numeric_limits<float>::infinity());
  torch::Tensor probs =
      torch::softmax(scores_BNSS.to(torch::kFloat32), -1).to(q_BNSD.scalar_type());
  torch::Tensor a_BSQ = torch::matmul(probs, v_BNSD).transpose(1, 2).reshape({B, S, N * D});
  return o_proj(a_BSQ);
}

ExpertImpl::ExpertImpl(int64_t hidden, int64_t ffn) {
  gate = register_module("gate", NoBiasLinear(hidden, ffn));
  up = register_module("up", NoBiasLinear(hidden, ffn));
  down = register_module("down", NoBiasLinear(ffn, hidden));
}

torch::Tensor GateWeights(const torch::Tensor& topk_logits_TK, bool apply_softmax) {
  if (apply_softmax) return torch::softmax(topk_logits_TK, -1);
  torch::Tensor s = torch::sigmoid(topk_logits_TK);
  return s / s.sum(-1, /*keepdim=*/true);
}

namespace {

// The step both MoE paths share: top-k routing, and the T*K (token, expert) assignments sorted
// by expert (A = T*K), with their gate weights and each expert's count.
struct SortedAssignments {
  torch::Tensor topk_idx_TK, token_of_A, w_A, counts_E;
  std::vector<int64_t> counts;  // counts_E on the host
};
SortedAssignments SortByExpert(const torch::Tensor& router_logits_TE, int64_t K, int64_t E,
                               bool apply_softmax, torch::ScalarType dtype) {
  SortedAssignments a;
  const int64_t T = router_logits_TE.size(0);
  torch::Tensor topk_logits_TK;
  std::tie(topk_logits_TK, a.topk_idx_TK) = router_logits_TE.topk(K, -1);
  torch::Tensor w_TK = GateWeights(topk_logits_TK, apply_softmax).to(dtype);
  torch::Tensor expert_of_A = a.topk_idx_TK.reshape({-1});
  torch::Tensor order_A =
      std::get<1>(expert_of_A.sort(c10::optional<bool>(true), /*dim=*/0, /*descending=*/false));
  a.token_of_A =
      torch::arange(T, a.topk_idx_TK.options()).repeat_interleave(K).index_select(0, order_A);
  a.w_A = w_TK.reshape({-1}).index_select(0, order_A);
  a.counts_E = torch::bincount(expert_of_A, {}, E);
  torch::Tensor counts_cpu = a.counts_E.to(torch::kCPU);
  const int64_t* c = counts_cpu.data_ptr<int64_t>();
  a.counts.assign(c, c + E);
  return a;
}

void FillRouting(const torch::Tensor& router_logits_TE, const SortedAssignments& a,
                 const torch::Tensor& zeros, int64_t total, LayerRouting* routing) {
  if (routing == nullptr) return;
  routing->router_logits_TE = router_logits_TE;
  routing->topk_idx_TK = a.topk_idx_TK;
  routing->expert_counts_E = a.counts_E.detach();
  routing->reglu_zero = zeros.item<int64_t>();
  routing->reglu_total = total;
}

}  // namespace

MoEImpl::MoEImpl(const ModelConfig& cfg)
    : num_experts(cfg.moe_num_primary_experts),
      top_k(cfg.moe_num_active_primary_experts),
      apply_softmax(cfg.moe_primary_router_apply_softmax) {
  primary_router = register_module("primary_router", NoBiasLinear(cfg.hidden_size, num_experts));
  experts = register_module("experts", torch::nn::ModuleList());
  for (int64_t e = 0; e < num_experts; ++e) {
    experts->push_back(Expert(cfg.hidden_size, cfg.moe_ffn_hidden_size));
  }
}

torch::Tensor MoEImpl::Route(const torch::Tensor& x_TH) {
  return primary_router(x_TH).to(torch::kFloat32);
}

torch::Tensor MoEImpl::forward(const torch::Tensor& h_TH, const torch::Tensor& router_logits_TE,
                               LayerRouting* routing) {
  return grouped ? ForwardGrouped(h_TH, router_logits_TE, routing)
                 : ForwardLoop(h_TH, router_logits_TE, routing);
}

// The experts with the tokens sorted by expert once per layer: one gather of the (token,
// expert) assignments in expert order, the sorted rows split (views) into each expert's run,
// gate and up as one product per expert against its stacked [2F, H] weights, down as another,
// the outputs concatenated, weighted and added to their tokens in one index_add_. LibTorch 1.13
// has no grouped matrix product for runs of different lengths, and a zero-padded bmm costs E x
// the largest run, which an untrained router makes close to E x T: so one product per expert
// on its run, with the per-expert gathers and scatters of the loop gone (split's backward is
// one concatenation). The parameters stay the experts' own, so every name is the Hugging Face
// one.
torch::Tensor MoEImpl::ForwardGrouped(const torch::Tensor& h_TH,
                                      const torch::Tensor& router_logits_TE,
                                      LayerRouting* routing) {
  const SortedAssignments a =
      SortByExpert(router_logits_TE, top_k, num_experts, apply_softmax, h_TH.scalar_type());
  std::vector<torch::Tensor> x_runs = h_TH.index_select(0, a.token_of_A).split_with_sizes(a.counts);
  std::vector<torch::Tensor> y_runs;
  y_runs.reserve(num_experts);
  torch::Tensor zeros = torch::zeros({}, a.topk_idx_TK.options());
  int64_t total = 0;
  for (int64_t e = 0; e < num_experts; ++e) {
    if (a.counts[e] == 0) continue;
    auto* ex = experts[e]->as<ExpertImpl>();
    const int64_t F = ex->gate->weight.size(0);
    torch::Tensor gu_nF2 = torch::mm(x_runs[e], torch::cat({ex->gate->weight, ex->up->weight}).t());
    torch::Tensor g_nF = torch::relu(gu_nF2.narrow(1, 0, F));
    y_runs.push_back(torch::mm(g_nF * gu_nF2.narrow(1, F, F), ex->down->weight.t()));
    torch::NoGradGuard no_grad;
    zeros = zeros + (g_nF == 0).sum();
    total += a.counts[e] * F;
  }
  torch::Tensor y_AH = torch::cat(y_runs) * a.w_A.unsqueeze(1);
  torch::Tensor y_TH = torch::zeros_like(h_TH).index_add_(0, a.token_of_A, y_AH);
  FillRouting(router_logits_TE, a, zeros, total, routing);
  return y_TH;
}

// The reference: each expert run on its routed tokens in turn (index_select, three products,
// index_add_); the grouped path must give its losses and gradients.
torch::Tensor MoEImpl::ForwardLoop(const torch::Tensor& h_TH, const torch::Tensor& router_logits_TE,
                                   LayerRouting* routing) {
  const SortedAssignments a =
      SortByExpert(router_logits_TE, top_k, num_experts, apply_softmax, h_TH.scalar_type());
  torch::Tensor y_TH = torch::zeros_like(h_TH);
  torch::Tensor zeros = torch::zeros({}, a.topk_idx_TK.options());
  int64_t offset = 0, total = 0;
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t n = a.counts[e];
    if (n == 0) continue;
    torch::Tensor tok_n = a.token_of_A.narrow(0, offset, n);
    torch::Tensor w_n = a.w_A.narrow(0, offset, n);
    offset += n;
    auto* ex = experts[e]->as<ExpertImpl>();
    torch::Tensor x_nH = h_TH.index_select(0, tok_n);
    torch::Tensor g_nF = torch::relu(ex->gate(x_nH));
    torch::Tensor out_nH = ex->down(g_nF * ex->up(x_nH)) * w_n.unsqueeze(1);
    y_TH.index_add_(0, tok_n, out_nH);
    torch::NoGradGuard no_grad;
    zeros = zeros + (g_nF == 0).sum();
    total += n * g_nF.size(1);
  }
  FillRouting(router_logits_TE, a, zeros, total, routing);
  return y_TH;
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& cfg, int layer) {
  input_layernorm = register_module("input_layernorm", RMSNorm(cfg.hidden_size, cfg.rms_norm_eps));
  self_attn = register_module("self_attn", Attention(cfg, layer));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(cfg.hidden_size, cfg.rms_norm_eps));
  block_sparse_moe = register_module("block_sparse_moe", MoE(cfg));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x_BSH, const RopeTables& rope,
                                        const torch::Tensor& mask_SS, LayerRouting* routing) {
  const int64_t B = x_BSH.size(0), S = x_BSH.size(1), H = x_BSH.size(2);
  // 1. Route: the router reads the raw residual, before attention (this is what lets an
  //    engine start fetching the chosen experts while attention runs).
  torch::Tensor router_logits_TE = block_sparse_moe->Route(x_BSH.reshape({B * S, H}));
  // 2. Attention.
  torch::Tensor x = x_BSH + self_attn(input_layernorm(x_BSH), rope, mask_SS);
  // 3. MoE on the post-attention norm, with the routing chosen in step 1.
  torch::Tensor h2_TH = post_attention_layernorm(x).reshape({B * S, H});
  return x + block_sparse_moe(h2_TH, router_logits_TE, routing).view({B, S, H});
}

namespace {

// Gradient checkpointing of one decoder layer: the forward pass keeps only the layer's input
// (no activations inside the layer); backward runs the layer again with gradients on and
// back-propagates through that copy, accumulating into the layer's parameters and returning
// the input's gradient. Outputs: the layer's output and its router logits (the router losses
// need them). The recomputation makes the same routing (the inputs are the same), so the
// gradients are those of the plain layer.
struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                torch::Tensor x_BSH, torch::Tensor cos_SD,
                                                torch::Tensor sin_SD, torch::Tensor mask_SS,
                                                int64_t layer_ptr, int64_t routing_ptr) {
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(layer_ptr);
    auto* routing = reinterpret_cast<LayerRouting*>(routing_ptr);
    ctx->save_for_backward({x_BSH, cos_SD, sin_SD, mask_SS});
    ctx->saved_data["layer"] = layer_ptr;
    LayerRouting r;
    torch::Tensor y;
    {
      torch::NoGradGuard no_grad;
      y = layer->forward(x_BSH, RopeTables{cos_SD, sin_SD}, mask_SS, &r);
    }
    if (routing != nullptr) *routing = r;
    return {y, r.router_logits_TE};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(ctx->saved_data["layer"].toInt());
    torch::Tensor x = saved[0].detach().requires_grad_(true);
    LayerRouting r;
    torch::Tensor y;
    {
      torch::AutoGradMode grad_on(true);
      y = layer->forward(x, RopeTables{saved[1], saved[2]}, saved[3], &r);
    }
    std::vector<torch::Tensor> outs{y},
        out_grads{grads[0].defined() ? grads[0] : torch::zeros_like(y)};
    if (grads[1].defined()) {
      outs.push_back(r.router_logits_TE);
      out_grads.push_back(grads[1]);
    }
    torch::autograd::backward(outs, out_grads);
    return {x.grad(),        torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

SmallThinkerModelImpl::SmallThinkerModelImpl(const ModelConfig& cfg_in) : cfg(cfg_in) {
  ST_CHECK(static_cast<int>(cfg.layer_uses_rope.size()) == cfg.num_hidden_layers)
      << "ModelConfig not validated";
  embed_tokens =
      register_module("embed_tokens", torch::nn::Embedding(cfg.vocab_size, cfg.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int l = 0; l < cfg.num_hidden_layers; ++l) layers->push_back(DecoderLayer(cfg, l));
  norm = register_module("norm", RMSNorm(cfg.hidden_size, cfg.rms_norm_eps));
}

torch::Tensor SmallThinkerModelImpl::forward(const torch::Tensor& ids_BS,
                                             std::vector<LayerRouting>* routing) {
  const int64_t S = ids_BS.size(1);
  const torch::Device dev = ids_BS.device();
  const RopeTables rope = MakeRopeTables(S, cfg.head_dim, cfg.rope_theta, dev);
  const torch::Tensor global_mask = AttentionMask(S, 0, dev);
  const torch::Tensor window_mask = AttentionMask(S, cfg.sliding_window_size, dev);
  if (routing != nullptr) routing->assign(cfg.num_hidden_layers, LayerRouting{});
  torch::Tensor x_BSH = embed_tokens(ids_BS);
  const bool recompute = checkpoint_layers && is_training() && torch::GradMode::is_enabled();
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    const torch::Tensor& mask = cfg.layer_uses_sliding[l] ? window_mask : global_mask;
    auto* layer = layers[l]->as<DecoderLayerImpl>();
    LayerRouting* r = routing != nullptr ? &(*routing)[l] : nullptr;
    if (!recompute) {
      x_BSH = layer->forward(x_BSH, rope, mask, r);
      continue;
    }
    torch::autograd::variable_list out =
        CheckpointedLayer::apply(x_BSH, rope.cos_SD, rope.sin_SD, mask,
                                 reinterpret_cast<int64_t>(layer), reinterpret_cast<int64_t>(r));
    x_BSH = out[0];
    if (r != nullptr) r->router_logits_TE = out[1];  // connected to the graph
  }
  return norm(x_BSH);
}

SmallThinkerForCausalLMImpl::SmallThinkerForCausalLMImpl(const ModelConfig& cfg_in) : cfg(cfg_in) {
  model = register_module("model", SmallThinkerModel(cfg));
  if (!cfg.tie_word_embeddings) {
    lm_head = register_module("lm_head", NoBiasLinear(cfg.hidden_size, cfg.vocab_size));
  }
  InitWeights();
}

ForwardOutput SmallThinkerForCausalLMImpl::forward(const torch::Tensor& ids_BS) {
  ForwardOutput out;
  torch::Tensor h_BSH = model(ids_BS, &out.routing);
  out.logits_BSV = lm_head ? lm_head(h_BSH) : torch::matmul(h_BSH, model->embed_tokens->weight.t());
  return out;
}

void SmallThinkerForCausalLMImpl::SetGroupedExperts(bool grouped) {
  for (const auto& layer : *model->layers) {
    layer->as<DecoderLayerImpl>()->block_sparse_moe->grouped = grouped;
  }
}

void SmallThinkerForCausalLMImpl::InitWeights() {
  torch::NoGradGuard no_grad;
  const double std = 0.02;
  const double residual_std = std / std::sqrt(2.0 * cfg.num_hidden_layers);
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor& p = item.value();
    if (name.find("norm") != std::string::npos) {
      p.fill_(1.0);
    } else if (name.find("o_proj") != std::string::npos ||
               name.find(".down.") != std::string::npos) {
      p.normal_(0.0, residual_std);
    } else {
      p.normal_(0.0, std);
    }
  }
}

}  // namespace st
