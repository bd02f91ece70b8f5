// ModelConfig JSON loading (Hugging Face key names), validation and parameter counts.
#include "model/config.h"

#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/check.h"
#include "nlohmann/json.hpp"

namespace st {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("model config: '", key, "' ", what));
}

// Keys a Hugging Face config.json may carry that do not change the computation.
const std::set<std::string>& IgnoredKeys() {
  static const std::set<std::string> keys = {
      "architectures", "auto_map", "torch_dtype", "transformers_version", "model_name",
      "initializer_range", "use_cache", "pad_token_id", "norm_topk_prob", "profile_sparsity",
      "dense_ffn_hidden_size", "output_router_logits", "router_aux_loss_coef",
      "attention_dropout", "hidden_act", "_name_or_path"};
  return keys;
}

absl::Status GetInt(const json& j, const std::string& key, int& out, bool required) {
  if (!j.contains(key) || j[key].is_null()) {
    return required ? Bad(key, "is required") : absl::OkStatus();
  }
  const json& v = j[key];
  if (!v.is_number_integer()) return Bad(key, absl::StrCat("must be an integer, got ", v.dump()));
  const int64_t x = v.get<int64_t>();
  if (x < INT32_MIN || x > INT32_MAX) return Bad(key, absl::StrCat("is out of range: ", x));
  out = static_cast<int>(x);
  return absl::OkStatus();
}

absl::Status GetDouble(const json& j, const std::string& key, double& out) {
  if (!j.contains(key)) return absl::OkStatus();
  const json& v = j[key];
  if (!v.is_number()) return Bad(key, absl::StrCat("must be a number, got ", v.dump()));
  out = v.get<double>();
  return absl::OkStatus();
}

absl::Status GetBool(const json& j, const std::string& key, bool& out) {
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  const json& v = j[key];
  if (!v.is_boolean()) return Bad(key, absl::StrCat("must be true or false, got ", v.dump()));
  out = v.get<bool>();
  return absl::OkStatus();
}

absl::Status GetIntList(const json& j, const std::string& key, std::vector<int>& out) {
  if (!j.contains(key)) return absl::OkStatus();
  const json& v = j[key];
  if (!v.is_array()) return Bad(key, absl::StrCat("must be a list of integers, got ", v.dump()));
  out.clear();
  for (const json& e : v) {
    if (!e.is_number_integer()) {
      return Bad(key, absl::StrCat("must hold integers only, got ", e.dump()));
    }
    out.push_back(e.get<int>());
  }
  return absl::OkStatus();
}

// A key the Hugging Face SmallthinkerConfig has but whose only supported value is `want`.
absl::Status Fixed(const json& j, const std::string& key, const json& want,
                   const std::string& why) {
  if (!j.contains(key)) return absl::OkStatus();
  if (j[key] != want) {
    return Bad(key, absl::StrCat("= ", j[key].dump(), " is not supported (", why,
                                 "); remove it or set it to ", want.dump()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view text) {
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("model config is not valid JSON (at byte ", e.byte, "): ", e.what()));
  }
  if (!j.is_object()) return absl::InvalidArgumentError("model config must be a JSON object");

  static const std::vector<std::string> kSemantic = {
      "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
      "head_dim", "vocab_size", "rms_norm_eps", "rope_theta", "max_position_embeddings",
      "rope_layout", "sliding_window_layout", "sliding_window_size", "moe_num_primary_experts",
      "moe_num_active_primary_experts", "moe_ffn_hidden_size",
      "moe_primary_router_apply_softmax", "tie_word_embeddings", "bos_token_id", "eos_token_id",
      "model_type"};
  static const std::vector<std::string> kFixedOrAlias = {
      "use_qk_norm", "moe_layer_layout", "moe_shared_primary_experts",
      "moe_enable_secondary_experts", "moe_num_secondary_experts", "moe_secondary_expert_size",
      "moe_enable_early_router", "rope_scaling", "num_experts_per_tok", "moe_intermediate_size"};
  for (const auto& [key, value] : j.items()) {
    if (key.rfind("_comment", 0) == 0 || IgnoredKeys().count(key)) continue;
    if (std::find(kSemantic.begin(), kSemantic.end(), key) != kSemantic.end()) continue;
    if (std::find(kFixedOrAlias.begin(), kFixedOrAlias.end(), key) != kFixedOrAlias.end()) {
      continue;
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown key '", key, "' in model config (a typo?); known keys: ",
        absl::StrJoin(kSemantic, ", "), ", ", absl::StrJoin(kFixedOrAlias, ", ")));
  }

  ModelConfig c;
  c.head_dim = 0;
  c.max_position_embeddings = 4096;
  ST_RETURN_IF_ERROR(GetInt(j, "num_hidden_layers", c.num_hidden_layers, true));
  ST_RETURN_IF_ERROR(GetInt(j, "hidden_size", c.hidden_size, true));
  ST_RETURN_IF_ERROR(GetInt(j, "num_attention_heads", c.num_attention_heads, true));
  ST_RETURN_IF_ERROR(GetInt(j, "num_key_value_heads", c.num_key_value_heads, true));
  ST_RETURN_IF_ERROR(GetInt(j, "vocab_size", c.vocab_size, true));
  ST_RETURN_IF_ERROR(GetInt(j, "moe_num_primary_experts", c.moe_num_primary_experts, true));
  ST_RETURN_IF_ERROR(
      GetInt(j, "moe_num_active_primary_experts", c.moe_num_active_primary_experts, true));
  ST_RETURN_IF_ERROR(GetInt(j, "moe_ffn_hidden_size", c.moe_ffn_hidden_size, true));
  ST_RETURN_IF_ERROR(GetInt(j, "head_dim", c.head_dim, false));
  if (c.head_dim == 0 && c.num_attention_heads > 0) c.head_dim = c.hidden_size / c.num_attention_heads;
  ST_RETURN_IF_ERROR(GetDouble(j, "rms_norm_eps", c.rms_norm_eps));
  ST_RETURN_IF_ERROR(GetDouble(j, "rope_theta", c.rope_theta));
  ST_RETURN_IF_ERROR(GetInt(j, "max_position_embeddings", c.max_position_embeddings, false));
  ST_RETURN_IF_ERROR(GetIntList(j, "rope_layout", c.rope_layout));
  ST_RETURN_IF_ERROR(GetIntList(j, "sliding_window_layout", c.sliding_window_layout));
  if (!j.contains("rope_layout") && c.num_hidden_layers > 0) c.rope_layout.assign(c.num_hidden_layers, 1);
  if (!j.contains("sliding_window_layout") && c.num_hidden_layers > 0) {
    c.sliding_window_layout.assign(c.num_hidden_layers, 0);
  }
  ST_RETURN_IF_ERROR(GetInt(j, "sliding_window_size", c.sliding_window_size, false));
  ST_RETURN_IF_ERROR(
      GetBool(j, "moe_primary_router_apply_softmax", c.moe_primary_router_apply_softmax));
  ST_RETURN_IF_ERROR(GetBool(j, "tie_word_embeddings", c.tie_word_embeddings));
  ST_RETURN_IF_ERROR(GetInt(j, "bos_token_id", c.bos_token_id, false));
  if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    if (j["eos_token_id"].is_array()) {
      ST_RETURN_IF_ERROR(GetIntList(j, "eos_token_id", c.eos_token_id));
    } else {
      int eos = -1;
      ST_RETURN_IF_ERROR(GetInt(j, "eos_token_id", eos, false));
      c.eos_token_id = {eos};
    }
  }
  if (j.contains("model_type")) {
    if (!j["model_type"].is_string() || j["model_type"] != "smallthinker") {
      return Bad("model_type", absl::StrCat("must be \"smallthinker\", got ", j["model_type"].dump()));
    }
  }

  // Features of the Hugging Face class that the released models do not use.
  ST_RETURN_IF_ERROR(Fixed(j, "use_qk_norm", false, "SmallThinker has no QK-norm"));
  ST_RETURN_IF_ERROR(Fixed(j, "moe_shared_primary_experts", 0, "no shared experts"));
  ST_RETURN_IF_ERROR(Fixed(j, "moe_enable_secondary_experts", false, "no secondary experts"));
  ST_RETURN_IF_ERROR(Fixed(j, "moe_num_secondary_experts", 0, "no secondary experts"));
  ST_RETURN_IF_ERROR(Fixed(j, "moe_secondary_expert_size", 0, "no secondary experts"));
  ST_RETURN_IF_ERROR(Fixed(j, "moe_enable_early_router", true,
                           "the router reads the residual before attention"));
  ST_RETURN_IF_ERROR(Fixed(j, "rope_scaling", nullptr, "RoPE scaling is not implemented"));
  if (j.contains("moe_layer_layout")) {
    std::vector<int> moe_layout;
    ST_RETURN_IF_ERROR(GetIntList(j, "moe_layer_layout", moe_layout));
    for (int v : moe_layout) {
      if (v != 1) return Bad("moe_layer_layout", "must be all 1: every SmallThinker layer is MoE");
    }
    if (static_cast<int>(moe_layout.size()) != c.num_hidden_layers) {
      return Bad("moe_layer_layout", absl::StrCat("has ", moe_layout.size(), " entries, expected num_hidden_layers = ", c.num_hidden_layers));
    }
  }
  if (j.contains("num_experts_per_tok")) {
    int k = 0;
    ST_RETURN_IF_ERROR(GetInt(j, "num_experts_per_tok", k, false));
    if (k != c.moe_num_active_primary_experts) {
      return Bad("num_experts_per_tok", absl::StrCat("= ", k, " disagrees with moe_num_active_primary_experts = ", c.moe_num_active_primary_experts));
    }
  }
  if (j.contains("moe_intermediate_size")) {
    int f = 0;
    ST_RETURN_IF_ERROR(GetInt(j, "moe_intermediate_size", f, false));
    if (f != c.moe_ffn_hidden_size) {
      return Bad("moe_intermediate_size", absl::StrCat("= ", f, " disagrees with moe_ffn_hidden_size = ", c.moe_ffn_hidden_size));
    }
  }
  ST_RETURN_IF_ERROR(ValidateModelConfig(c));
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open model config '", path,
                                            "'; see configs/model/ for the shipped ones"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  absl::StatusOr<ModelConfig> c = ParseModelConfig(ss.str());
  if (!c.ok()) return absl::Status(c.status().code(), absl::StrCat(path, ": ", c.status().message()));
  return c;
}

absl::Status ValidateModelConfig(ModelConfig& c) {
  auto positive = [](const char* key, int v) -> absl::Status {
    if (v <= 0) return Bad(key, absl::StrCat("must be > 0, got ", v));
    return absl::OkStatus();
  };
  ST_RETURN_IF_ERROR(positive("num_hidden_layers", c.num_hidden_layers));
  ST_RETURN_IF_ERROR(positive("hidden_size", c.hidden_size));
  ST_RETURN_IF_ERROR(positive("num_attention_heads", c.num_attention_heads));
  ST_RETURN_IF_ERROR(positive("num_key_value_heads", c.num_key_value_heads));
  ST_RETURN_IF_ERROR(positive("head_dim", c.head_dim));
  ST_RETURN_IF_ERROR(positive("vocab_size", c.vocab_size));
  ST_RETURN_IF_ERROR(positive("max_position_embeddings", c.max_position_embeddings));
  ST_RETURN_IF_ERROR(positive("moe_num_primary_experts", c.moe_num_primary_experts));
  ST_RETURN_IF_ERROR(positive("moe_num_active_primary_experts", c.moe_num_active_primary_experts));
  ST_RETURN_IF_ERROR(positive("moe_ffn_hidden_size", c.moe_ffn_hidden_size));
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return Bad("num_key_value_heads",
               absl::StrCat("= ", c.num_key_value_heads, " must divide num_attention_heads = ",
                            c.num_attention_heads, " (GQA groups)"));
  }
  if (c.head_dim % 2 != 0) return Bad("head_dim", absl::StrCat("must be even for RoPE, got ", c.head_dim));
  if (c.moe_num_active_primary_experts > c.moe_num_primary_experts) {
    return Bad("moe_num_active_primary_experts",
               absl::StrCat("= ", c.moe_num_active_primary_experts,
                            " exceeds moe_num_primary_experts = ", c.moe_num_primary_experts));
  }
  if (!(c.rms_norm_eps > 0)) return Bad("rms_norm_eps", "must be > 0");
  if (!(c.rope_theta > 0)) return Bad("rope_theta", "must be > 0");
  const size_t L = static_cast<size_t>(c.num_hidden_layers);
  for (const auto& [key, layout] : {std::pair<const char*, const std::vector<int>*>{"rope_layout", &c.rope_layout},
                                    {"sliding_window_layout", &c.sliding_window_layout}}) {
    if (layout->size() != L) {
      return Bad(key, absl::StrCat("has ", layout->size(), " entries but num_hidden_layers = ", L,
                                   "; give one 0/1 entry a layer"));
    }
    for (size_t l = 0; l < L; ++l) {
      if ((*layout)[l] != 0 && (*layout)[l] != 1) {
        return Bad(key, absl::StrCat("entry ", l, " is ", (*layout)[l], "; entries must be 0 or 1"));
      }
    }
  }
  bool any_sliding = false;
  for (int v : c.sliding_window_layout) any_sliding |= v == 1;
  if (any_sliding && c.sliding_window_size <= 0) {
    return Bad("sliding_window_size", "must be > 0 when sliding_window_layout has a 1");
  }
  if (c.sliding_window_size < 0) return Bad("sliding_window_size", "must be >= 0");
  if (c.bos_token_id >= c.vocab_size || c.bos_token_id < -1) {
    return Bad("bos_token_id", absl::StrCat("= ", c.bos_token_id, " is outside the vocabulary of ", c.vocab_size));
  }
  for (int e : c.eos_token_id) {
    if (e < 0 || e >= c.vocab_size) {
      return Bad("eos_token_id", absl::StrCat("= ", e, " is outside the vocabulary of ", c.vocab_size));
    }
  }
  c.layer_uses_rope.assign(L, false);
  c.layer_uses_sliding.assign(L, false);
  for (size_t l = 0; l < L; ++l) {
    c.layer_uses_rope[l] = c.rope_layout[l] == 1;
    c.layer_uses_sliding[l] = c.sliding_window_layout[l] == 1;
  }
  return absl::OkStatus();
}

int64_t ModelConfig::NumEmbeddingParams() const {
  const int64_t ve = static_cast<int64_t>(vocab_size) * hidden_size;
  return tie_word_embeddings ? ve : 2 * ve;
}

namespace {
int64_t LayerParams(const ModelConfig& c, int64_t experts) {
  const int64_t H = c.hidden_size, Q = c.q_width(), KV = c.kv_width();
  const int64_t attn = H * Q + 2 * H * KV + Q * H;
  const int64_t router = static_cast<int64_t>(c.moe_num_primary_experts) * H;
  return 2 * H + attn + router + experts * 3 * H * c.moe_ffn_hidden_size;
}
}  // namespace

int64_t ModelConfig::NumParams() const {
  return NumEmbeddingParams() + num_hidden_layers * LayerParams(*this, moe_num_primary_experts) +
         hidden_size;
}

int64_t ModelConfig::NumActiveParams() const {
  return NumEmbeddingParams() +
         num_hidden_layers * LayerParams(*this, moe_num_active_primary_experts) + hidden_size;
}

std::string ModelConfig::ToJson() const {
  json j = {{"model_type", model_type},
            {"num_hidden_layers", num_hidden_layers},
            {"hidden_size", hidden_size},
            {"num_attention_heads", num_attention_heads},
            {"num_key_value_heads", num_key_value_heads},
            {"head_dim", head_dim},
            {"vocab_size", vocab_size},
            {"rms_norm_eps", rms_norm_eps},
            {"rope_theta", rope_theta},
            {"max_position_embeddings", max_position_embeddings},
            {"rope_layout", rope_layout},
            {"sliding_window_layout", sliding_window_layout},
            {"sliding_window_size", sliding_window_size},
            {"moe_num_primary_experts", moe_num_primary_experts},
            {"moe_num_active_primary_experts", moe_num_active_primary_experts},
            {"moe_ffn_hidden_size", moe_ffn_hidden_size},
            {"moe_primary_router_apply_softmax", moe_primary_router_apply_softmax},
            {"tie_word_embeddings", tie_word_embeddings},
            {"bos_token_id", bos_token_id >= 0 ? json(bos_token_id) : json(nullptr)},
            {"eos_token_id", eos_token_id}};
  return j.dump(2);
}

}  // namespace st
