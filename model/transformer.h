// The SmallThinker architecture in LibTorch: RMSNorm, NeoX RoPE with per-layer NoPE, GQA
// attention with causal / sliding-window masks, the pre-attention router on the raw residual,
// ReGLU experts run per expert on their routed tokens, tied or untied LM head.
//
// Module and parameter names are the Hugging Face tensor names, one to one:
//   model.layers.3.block_sparse_moe.experts.7.gate.weight  ->  the same key in safetensors.
// Shapes in names: B batch, S sequence, T = B*S tokens, H hidden, E experts, K active experts,
// F expert width, V vocab, N q heads, G kv heads, D head_dim.
// Threads: a module instance is used by one thread at a time (LibTorch rules).
#pragma once

#include <torch/torch.h>

#include <vector>

#include "model/config.h"

namespace st {

// RMSNorm computed in fp32: w * x / sqrt(mean(x^2) + eps), weight initialised to 1.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// NeoX ("rotate half") RoPE tables for positions [pos0, pos0 + S): cos_SD, sin_SD (fp32).
struct RopeTables {
  torch::Tensor cos_SD, sin_SD;
};
RopeTables MakeRopeTables(int64_t seq_len, int64_t head_dim, double theta,
                          const torch::Device& device, int64_t pos0 = 0);
// x_BNSD rotated by position: x * cos + rotate_half(x) * sin.
torch::Tensor ApplyRope(const torch::Tensor& x_BNSD, const RopeTables& rope);

// Boolean [S, S] mask: true where query i may attend key j, i.e. 0 <= i - j and, when
// window > 0, i - j < window.
torch::Tensor AttentionMask(int64_t seq_len, int64_t window, const torch::Device& device);

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& cfg, int layer);
  // h_BSH -> [B, S, H]. `mask_SS` is the boolean mask for this layer's kind.
  torch::Tensor forward(const torch::Tensor& h_BSH, const RopeTables& rope,
                        const torch::Tensor& mask_SS);
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  bool use_rope;
  int64_t window;  // 0 = global attention
  int64_t n_heads, n_kv_heads, head_dim;
};
TORCH_MODULE(Attention);

// One ReGLU expert: down(relu(gate(x)) * up(x)).
class ExpertImpl : public torch::nn::Module {
 public:
  ExpertImpl(int64_t hidden, int64_t ffn);
  torch::nn::Linear gate{nullptr}, up{nullptr}, down{nullptr};
};
TORCH_MODULE(Expert);

// What a layer's router decided, for the losses and the statistics.
struct LayerRouting {
  torch::Tensor router_logits_TE;  // fp32, differentiable (load-balance and z-loss use it)
  torch::Tensor topk_idx_TK;       // int64
  torch::Tensor expert_counts_E;   // int64 token-to-expert assignments (no grad)
  int64_t reglu_zero = 0;          // zero relu(gate) activations inside routed experts
  int64_t reglu_total = 0;         // all relu(gate) activations inside routed experts
};

// Routing weights of the chosen experts from their raw logits: sigmoid renormalised over the
// top-k (default) or softmax over the top-k (moe_primary_router_apply_softmax).
torch::Tensor GateWeights(const torch::Tensor& topk_logits_TK, bool apply_softmax);

class MoEImpl : public torch::nn::Module {
 public:
  explicit MoEImpl(const ModelConfig& cfg);
  // The pre-attention router: logits from the raw residual x (before any norm).
  torch::Tensor Route(const torch::Tensor& x_TH);
  // Runs each expert once on the tokens routed to it; fills routing stats. Grouped (three
  // batched products over the stacked experts) unless `grouped` is false (the per-expert loop,
  // the reference the tests compare it with).
  torch::Tensor forward(const torch::Tensor& h_TH, const torch::Tensor& router_logits_TE,
                        LayerRouting* routing);
  torch::Tensor ForwardGrouped(const torch::Tensor& h_TH, const torch::Tensor& router_logits_TE,
                               LayerRouting* routing);
  torch::Tensor ForwardLoop(const torch::Tensor& h_TH, const torch::Tensor& router_logits_TE,
                            LayerRouting* routing);
  torch::nn::Linear primary_router{nullptr};
  torch::nn::ModuleList experts{nullptr};
  int64_t num_experts, top_k;
  bool apply_softmax;
  bool grouped = true;
};
TORCH_MODULE(MoE);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& cfg, int layer);
  // route (raw x) -> attention -> MoE, both with residuals.
  torch::Tensor forward(const torch::Tensor& x_BSH, const RopeTables& rope,
                        const torch::Tensor& mask_SS, LayerRouting* routing);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  MoE block_sparse_moe{nullptr};
};
TORCH_MODULE(DecoderLayer);

// "model." in the Hugging Face names.
class SmallThinkerModelImpl : public torch::nn::Module {
 public:
  explicit SmallThinkerModelImpl(const ModelConfig& cfg);
  // ids_BS (int64) -> final-normed hidden states [B, S, H]; routing gets one entry a layer.
  torch::Tensor forward(const torch::Tensor& ids_BS, std::vector<LayerRouting>* routing);
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  ModelConfig cfg;
  // Gradient checkpointing: in training with gradients on, each layer keeps only its input and
  // is run again in backward (activation memory of one layer instead of all; one more forward).
  bool checkpoint_layers = false;
};
TORCH_MODULE(SmallThinkerModel);

struct ForwardOutput {
  torch::Tensor logits_BSV;
  std::vector<LayerRouting> routing;  // [L]
};

class SmallThinkerForCausalLMImpl : public torch::nn::Module {
 public:
  explicit SmallThinkerForCausalLMImpl(const ModelConfig& cfg);
  ForwardOutput forward(const torch::Tensor& ids_BS);
  // Every layer's MoE grouped (default) or as the per-expert loop.
  void SetGroupedExperts(bool grouped);
  // Initialises weights: normal(0, 0.02); o_proj and expert down scaled by 1/sqrt(2L)
  // (residual-branch outputs); norms to 1. Uses the global torch generator.
  void InitWeights();
  SmallThinkerModel model{nullptr};
  torch::nn::Linear lm_head{nullptr};  // null when tie_word_embeddings
  ModelConfig cfg;
};
TORCH_MODULE(SmallThinkerForCausalLM);

}  // namespace st
