// ModelConfig: the torch-free description of a SmallThinker model, read from JSON with the
// Hugging Face key names (a released config.json loads unchanged), validated on load.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace st {

// All sizes are element counts. Per-layer arrays are derived once by Validate() and always
// have num_hidden_layers entries afterwards.
struct ModelConfig {
  // --- Hugging Face keys (same names, same meaning) ---
  int num_hidden_layers = 0;    // L
  int hidden_size = 0;          // H
  int num_attention_heads = 0;  // nh
  int num_key_value_heads = 0;  // nkv (GQA groups); nh % nkv == 0
  int head_dim = 0;             // D; q width nh*D may differ from H
  int vocab_size = 0;           // V
  double rms_norm_eps = 1e-6;
  double rope_theta = 1.5e6;
  int max_position_embeddings = 0;                // longest context the model supports
  std::vector<int> rope_layout;                   // [L] 1 = RoPE, 0 = NoPE
  std::vector<int> sliding_window_layout;         // [L] 1 = sliding window, 0 = full attention
  int sliding_window_size = 0;                    // window W: key j kept for query i iff 0<=i-j<W
  int moe_num_primary_experts = 0;                // E
  int moe_num_active_primary_experts = 0;         // k
  int moe_ffn_hidden_size = 0;                    // F, per expert
  bool moe_primary_router_apply_softmax = false;  // false: sigmoid, renormalised over top-k
  bool tie_word_embeddings = true;
  int bos_token_id = -1;          // -1 = none
  std::vector<int> eos_token_id;  // may be empty
  std::string model_type = "smallthinker";

  // --- derived by Validate() ---
  std::vector<bool> layer_uses_rope;     // [L]
  std::vector<bool> layer_uses_sliding;  // [L]

  int q_width() const { return num_attention_heads * head_dim; }
  int kv_width() const { return num_key_value_heads * head_dim; }
  // Parameter counts (weights only, no biases exist). `active` counts k of E experts.
  int64_t NumParams() const;
  int64_t NumActiveParams() const;
  int64_t NumEmbeddingParams() const;  // embedding (+ untied LM head)

  // Serialises to JSON with Hugging Face key names (round-trips through ParseModelConfig).
  std::string ToJson() const;
};

// How keys outside the ones this program reads are treated.
enum class ConfigKeys {
  // Our own configs (configs/model/*.json, model files): an unknown key is an error (a typo
  // must not pass silently). Hugging Face bookkeeping keys are accepted and ignored.
  kStrict,
  // A Hugging Face config.json as published: like transformers' PretrainedConfig, any key the
  // SmallThinker model code does not read is accepted and ignored (tokenizer_class,
  // max_length, temperature, use_cache, ...). Keys that the model code reads and this program
  // does not implement are refused in both modes, naming the key and its value.
  kHuggingFace,
};

// Parses and validates. Errors name the offending key and say what to do.
// Keys that change the computation and are not implemented (rope_scaling, use_qk_norm=true,
// dense layers, shared/secondary experts, a non-ReLU hidden_act, ...) are rejected in every
// mode. `ignored` (optional) receives the keys that were accepted and ignored, sorted by name.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text,
                                             ConfigKeys keys = ConfigKeys::kStrict,
                                             std::vector<std::string>* ignored = nullptr);
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path,
                                            ConfigKeys keys = ConfigKeys::kStrict,
                                            std::vector<std::string>* ignored = nullptr);

// Checks invariants and fills the derived arrays. Called by Parse/Load; call it again after
// editing a config by hand.
absl::Status ValidateModelConfig(ModelConfig& cfg);

}  // namespace st
