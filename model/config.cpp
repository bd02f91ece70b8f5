// ModelConfig: JSON loading with the Hugging Face key names (key policy, type checks), validation,
// serialisation back to JSON, and parameter counts.
#include "model/config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/check.h"
#include "model/file_io.h"
#include "nlohmann/json.hpp"

namespace st {
namespace {

using nlohmann::json;

// Generous sanity limits. They keep every int product used by the model (q_width, layer
// arrays) far from overflow and stop a corrupt file from asking for absurd allocations.
constexpr int kMaxLayers = 4096;
constexpr int kMaxHeads = 4096;
constexpr int kMaxHeadDim = 4096;
constexpr int kMaxHidden = 1 << 17;
constexpr int kMaxVocab = 1 << 24;
constexpr int kMaxExperts = 1 << 16;
constexpr int kMaxFfn = 1 << 20;
constexpr int kMaxPositions = 1 << 28;
constexpr long double kMaxTotalParams = 1e15L;

absl::Status Bad(absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("model config: '", key, "' ", what));
}

// Fields of ModelConfig, read with the same names.
const std::vector<std::string>& SemanticKeys() {
  static const std::vector<std::string> keys = {"model_type",
                                                "num_hidden_layers",
                                                "hidden_size",
                                                "num_attention_heads",
                                                "num_key_value_heads",
                                                "head_dim",
                                                "vocab_size",
                                                "rms_norm_eps",
                                                "rope_theta",
                                                "max_position_embeddings",
                                                "rope_layout",
                                                "sliding_window_layout",
                                                "sliding_window_size",
                                                "moe_num_primary_experts",
                                                "moe_num_active_primary_experts",
                                                "moe_ffn_hidden_size",
                                                "moe_primary_router_apply_softmax",
                                                "tie_word_embeddings",
                                                "bos_token_id",
                                                "eos_token_id"};
  return keys;
}

// Keys of the Hugging Face SmallthinkerConfig that this architecture fixes to one value, and
// the aliases it writes next to the semantic keys.
const std::vector<std::string>& FixedAndAliasKeys() {
  static const std::vector<std::string> keys = {"use_qk_norm",
                                                "moe_layer_layout",
                                                "moe_shared_primary_experts",
                                                "moe_enable_secondary_experts",
                                                "moe_num_secondary_experts",
                                                "moe_secondary_expert_size",
                                                "moe_enable_early_router",
                                                "rope_scaling",
                                                "num_experts_per_tok",
                                                "moe_intermediate_size",
                                                "hidden_act",
                                                "attention_bias",
                                                "mlp_bias",
                                                "qk_layernorm",
                                                "partial_rotary_factor",
                                                "attn_logit_softcapping",
                                                "final_logit_softcapping",
                                                "embedding_multiplier",
                                                "logits_scaling",
                                                "residual_multiplier",
                                                "attention_multiplier"};
  return keys;
}

// Keys a Hugging Face config.json may carry that do not change the computation.
const std::vector<std::string>& IgnoredKeys() {
  static const std::vector<std::string> keys = {"architectures",
                                                "auto_map",
                                                "torch_dtype",
                                                "transformers_version",
                                                "model_name",
                                                "initializer_range",
                                                "use_cache",
                                                "pad_token_id",
                                                "norm_topk_prob",
                                                "profile_sparsity",
                                                "dense_ffn_hidden_size",
                                                "output_router_logits",
                                                "router_aux_loss_coef",
                                                "attention_dropout",
                                                "_name_or_path"};
  return keys;
}

bool Contains(const std::vector<std::string>& keys, const std::string& key) {
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

bool Present(const json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

// Converts one JSON value to an int; `what` names it in errors (a key or "key[i]").
absl::Status ToInt(const json& v, const std::string& what, int& out) {
  if (v.is_number_unsigned()) {
    const uint64_t x = v.get<uint64_t>();
    if (x > static_cast<uint64_t>(std::numeric_limits<int>::max())) {
      return Bad(what, absl::StrCat("= ", v.dump(), " is too large for a 32-bit integer"));
    }
    out = static_cast<int>(x);
    return absl::OkStatus();
  }
  if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    if (x < std::numeric_limits<int>::min() || x > std::numeric_limits<int>::max()) {
      return Bad(what, absl::StrCat("= ", v.dump(), " is out of the 32-bit integer range"));
    }
    out = static_cast<int>(x);
    return absl::OkStatus();
  }
  if (v.is_number_float()) {
    return Bad(what, absl::StrCat("must be an integer, got the number ", v.dump(),
                                  " (write it without a fraction or exponent)"));
  }
  return Bad(what, absl::StrCat("must be an integer, got ", v.type_name(), " ", v.dump()));
}

// Reads an int; absent or null leaves `out` unchanged unless required.
absl::Status GetInt(const json& j, const char* key, bool required, int& out) {
  if (!Present(j, key)) {
    if (!required) return absl::OkStatus();
    return Bad(key, "is required but missing (an integer)");
  }
  return ToInt(j[key], key, out);
}

absl::Status GetDouble(const json& j, const char* key, double& out) {
  if (!j.contains(key)) return absl::OkStatus();
  const json& v = j[key];
  if (!v.is_number()) {
    return Bad(key, absl::StrCat("must be a number, got ", v.type_name(), " ", v.dump()));
  }
  out = v.get<double>();
  return absl::OkStatus();
}

absl::Status GetBool(const json& j, const char* key, bool& out) {
  if (!Present(j, key)) return absl::OkStatus();
  const json& v = j[key];
  if (!v.is_boolean()) {
    return Bad(key, absl::StrCat("must be true or false, got ", v.type_name(), " ", v.dump()));
  }
  out = v.get<bool>();
  return absl::OkStatus();
}

absl::Status GetIntList(const json& j, const char* key, std::vector<int>& out) {
  const json& v = j[key];
  if (!v.is_array()) {
    return Bad(key, absl::StrCat("must be a list of integers, got ", v.type_name(), " ", v.dump()));
  }
  out.clear();
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    int x = 0;
    ST_RETURN_IF_ERROR(ToInt(v[i], absl::StrCat(key, "[", i, "]"), x));
    out.push_back(x);
  }
  return absl::OkStatus();
}

// A key of the Hugging Face SmallthinkerConfig whose only supported value is `want`.
absl::Status Fixed(const json& j, const char* key, const json& want, absl::string_view why) {
  if (!j.contains(key) || j[key].is_null() || j[key] == want) return absl::OkStatus();
  return Bad(key, absl::StrCat("= ", j[key].dump(), " is not supported (", why,
                               "); remove the key or set it to ", want.dump()));
}

absl::Status CheckRange(const char* key, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return Bad(key,
               absl::StrCat("= ", v, " is out of range; expected ", lo, " <= ", key, " <= ", hi));
  }
  return absl::OkStatus();
}

// Fills `c` from the JSON object (types and key policy only; ValidateModelConfig checks the
// invariants).
absl::Status FromJson(const json& j, ConfigKeys mode, std::vector<std::string>* ignored,
                      ModelConfig& c) {
  for (const auto& item : j.items()) {
    const std::string& key = item.key();
    if (Contains(SemanticKeys(), key) || Contains(FixedAndAliasKeys(), key)) continue;
    if (key.rfind("_comment", 0) == 0 || Contains(IgnoredKeys(), key) ||
        mode == ConfigKeys::kHuggingFace) {
      if (ignored != nullptr) ignored->push_back(key);
      continue;
    }
    return absl::InvalidArgumentError(
        absl::StrCat("unknown key '", key,
                     "' in model config; known keys: ", absl::StrJoin(SemanticKeys(), ", "), ", ",
                     absl::StrJoin(FixedAndAliasKeys(), ", "), "; accepted and ignored: ",
                     absl::StrJoin(IgnoredKeys(), ", "), " and keys starting with _comment"));
  }

  if (j.contains("model_type")) {
    const json& v = j["model_type"];
    if (!v.is_string() || v.get<std::string>() != "smallthinker") {
      return Bad("model_type",
                 absl::StrCat("= ", v.dump(), " is not supported; expected \"smallthinker\""));
    }
  }
  ST_RETURN_IF_ERROR(GetInt(j, "num_hidden_layers", true, c.num_hidden_layers));
  ST_RETURN_IF_ERROR(GetInt(j, "hidden_size", true, c.hidden_size));
  ST_RETURN_IF_ERROR(GetInt(j, "num_attention_heads", true, c.num_attention_heads));
  ST_RETURN_IF_ERROR(GetInt(j, "num_key_value_heads", true, c.num_key_value_heads));
  ST_RETURN_IF_ERROR(GetInt(j, "vocab_size", true, c.vocab_size));
  ST_RETURN_IF_ERROR(GetInt(j, "moe_num_primary_experts", true, c.moe_num_primary_experts));
  ST_RETURN_IF_ERROR(
      GetInt(j, "moe_num_active_primary_experts", true, c.moe_num_active_primary_experts));
  ST_RETURN_IF_ERROR(GetInt(j, "moe_ffn_hidden_size", true, c.moe_ffn_hidden_size));
  // The layer count sizes the default layouts below: bound it before allocating.
  ST_RETURN_IF_ERROR(CheckRange("num_hidden_layers", c.num_hidden_layers, 1, kMaxLayers));

  c.head_dim = 0;
  ST_RETURN_IF_ERROR(GetInt(j, "head_dim", false, c.head_dim));
  if (!Present(j, "head_dim") && c.num_attention_heads > 0) {  // else Validate reports it
    if (c.hidden_size % c.num_attention_heads != 0) {
      return Bad("head_dim", absl::StrCat("is absent and hidden_size = ", c.hidden_size,
                                          " is not a multiple of num_attention_heads = ",
                                          c.num_attention_heads, "; set head_dim explicitly"));
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 1.5e6;
  ST_RETURN_IF_ERROR(GetDouble(j, "rms_norm_eps", c.rms_norm_eps));
  ST_RETURN_IF_ERROR(GetDouble(j, "rope_theta", c.rope_theta));
  c.max_position_embeddings = 4096;
  ST_RETURN_IF_ERROR(GetInt(j, "max_position_embeddings", false, c.max_position_embeddings));

  if (j.contains("rope_layout")) {
    ST_RETURN_IF_ERROR(GetIntList(j, "rope_layout", c.rope_layout));
  } else {
    c.rope_layout.assign(c.num_hidden_layers, 1);
  }
  if (j.contains("sliding_window_layout")) {
    ST_RETURN_IF_ERROR(GetIntList(j, "sliding_window_layout", c.sliding_window_layout));
  } else {
    c.sliding_window_layout.assign(c.num_hidden_layers, 0);
  }
  c.sliding_window_size = 0;
  ST_RETURN_IF_ERROR(GetInt(j, "sliding_window_size", false, c.sliding_window_size));

  c.moe_primary_router_apply_softmax = false;
  ST_RETURN_IF_ERROR(
      GetBool(j, "moe_primary_router_apply_softmax", c.moe_primary_router_apply_softmax));
  c.tie_word_embeddings = true;
  ST_RETURN_IF_ERROR(GetBool(j, "tie_word_embeddings", c.tie_word_embeddings));

  c.bos_token_id = -1;
  ST_RETURN_IF_ERROR(GetInt(j, "bos_token_id", false, c.bos_token_id));
  c.eos_token_id.clear();
  if (Present(j, "eos_token_id")) {
    if (j["eos_token_id"].is_array()) {
      ST_RETURN_IF_ERROR(GetIntList(j, "eos_token_id", c.eos_token_id));
    } else {
      int eos = 0;
      ST_RETURN_IF_ERROR(ToInt(j["eos_token_id"], "eos_token_id", eos));
      c.eos_token_id = {eos};
    }
  }

  // Features of the Hugging Face class that this architecture does not have.
  ST_RETURN_IF_ERROR(Fixed(j, "use_qk_norm", false, "SmallThinker has no QK-norm"));
  ST_RETURN_IF_ERROR(
      Fixed(j, "moe_shared_primary_experts", 0, "SmallThinker has no shared experts"));
  ST_RETURN_IF_ERROR(
      Fixed(j, "moe_enable_secondary_experts", false, "SmallThinker has no secondary experts"));
  ST_RETURN_IF_ERROR(
      Fixed(j, "moe_num_secondary_experts", 0, "SmallThinker has no secondary experts"));
  ST_RETURN_IF_ERROR(
      Fixed(j, "moe_secondary_expert_size", 0, "SmallThinker has no secondary experts"));
  ST_RETURN_IF_ERROR(Fixed(j, "moe_enable_early_router", true,
                           "the router always reads the residual stream before attention"));
  ST_RETURN_IF_ERROR(Fixed(j, "rope_scaling", nullptr, "RoPE scaling is not implemented"));
  ST_RETURN_IF_ERROR(Fixed(j, "hidden_act", "relu", "SmallThinker experts are ReGLU"));
  ST_RETURN_IF_ERROR(Fixed(j, "attention_bias", false, "SmallThinker has no biases"));
  ST_RETURN_IF_ERROR(Fixed(j, "mlp_bias", false, "SmallThinker has no biases"));
  ST_RETURN_IF_ERROR(Fixed(j, "qk_layernorm", false, "SmallThinker has no QK-norm"));
  ST_RETURN_IF_ERROR(Fixed(j, "partial_rotary_factor", 1.0,
                           "RoPE rotates the whole head; partial rotation is not implemented"));
  for (const char* key : {"attn_logit_softcapping", "final_logit_softcapping"}) {
    ST_RETURN_IF_ERROR(Fixed(j, key, nullptr, "logit soft-capping is not implemented"));
  }
  for (const char* key :
       {"embedding_multiplier", "logits_scaling", "residual_multiplier", "attention_multiplier"}) {
    ST_RETURN_IF_ERROR(Fixed(j, key, 1.0, "SmallThinker scales nothing by a multiplier"));
  }
  if (j.contains("moe_layer_layout")) {
    std::vector<int> moe_layout;
    ST_RETURN_IF_ERROR(GetIntList(j, "moe_layer_layout", moe_layout));
    if (static_cast<int>(moe_layout.size()) != c.num_hidden_layers) {
      return Bad("moe_layer_layout",
                 absl::StrCat("has ", moe_layout.size(),
                              " entries; expected num_hidden_layers = ", c.num_hidden_layers));
    }
    for (size_t l = 0; l < moe_layout.size(); ++l) {
      if (moe_layout[l] != 1) {
        return Bad("moe_layer_layout",
                   absl::StrCat("entry ", l, " = ", moe_layout[l],
                                " is not supported (dense layers); every SmallThinker layer is "
                                "MoE, so every entry must be 1"));
      }
    }
  }
  if (j.contains("num_experts_per_tok")) {
    int k = 0;
    ST_RETURN_IF_ERROR(ToInt(j["num_experts_per_tok"], "num_experts_per_tok", k));
    if (k != c.moe_num_active_primary_experts) {
      return Bad("num_experts_per_tok",
                 absl::StrCat("= ", k, " disagrees with moe_num_active_primary_experts = ",
                              c.moe_num_active_primary_experts, "; they must be equal"));
    }
  }
  if (j.contains("moe_intermediate_size")) {
    int f = 0;
    ST_RETURN_IF_ERROR(ToInt(j["moe_intermediate_size"], "moe_intermediate_size", f));
    if (f != c.moe_ffn_hidden_size) {
      return Bad("moe_intermediate_size",
                 absl::StrCat("= ", f, " disagrees with moe_ffn_hidden_size = ",
                              c.moe_ffn_hidden_size, "; they must be equal"));
    }
  }
  return absl::OkStatus();
}

int64_t LayerParams(const ModelConfig& c, int64_t experts) {
  const int64_t H = c.hidden_size, Q = c.q_width(), KV = c.kv_width();
  const int64_t norms = 2 * H;
  const int64_t attn = H * Q + 2 * H * KV + Q * H;
  const int64_t router = static_cast<int64_t>(c.moe_num_primary_experts) * H;
  return norms + attn + router + experts * 3 * H * c.moe_ffn_hidden_size;
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text, ConfigKeys keys,
                                             std::vector<std::string>* ignored) {
  // Duplicate top-level keys would silently keep the last value: report them instead.
  std::string duplicate;
  std::set<std::string> seen;
  json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      if (!seen.insert(parsed.get<std::string>()).second && duplicate.empty()) {
        duplicate = parsed.get<std::string>();
      }
    }
    return true;
  };
  json j;
  try {
    j = json::parse(json_text.begin(), json_text.end(), on_event);
  } catch (const json::parse_error& e) {
    // e.what() carries the line and column; e.byte is the 1-based byte offset.
    return absl::InvalidArgumentError(
        absl::StrCat("model config is not valid JSON (at byte ", e.byte, "): ", e.what()));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("model config could not be read as JSON: ", e.what()));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model config must be a JSON object, got ", j.type_name()));
  }
  if (!duplicate.empty()) {
    return Bad(duplicate, "appears more than once; give each key once");
  }
  ModelConfig c;
  ST_RETURN_IF_ERROR(FromJson(j, keys, ignored, c));
  ST_RETURN_IF_ERROR(ValidateModelConfig(c));
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path, ConfigKeys keys,
                                            std::vector<std::string>* ignored) {
  absl::StatusOr<std::string> text = ReadFile(path, "model config");
  if (!text.ok()) {
    const absl::Status& s = text.status();
    const char* hint = s.code() == absl::StatusCode::kInvalidArgument ? " (the config.json in it)"
                       : s.code() == absl::StatusCode::kNotFound
                           ? "; the shipped configs are in configs/model/"
                           : "";
    return absl::Status(s.code(), absl::StrCat(s.message(), hint));
  }
  absl::StatusOr<ModelConfig> c = ParseModelConfig(*text, keys, ignored);
  if (!c.ok()) {
    return absl::Status(c.status().code(), absl::StrCat(path, ": ", c.status().message()));
  }
  return c;
}

absl::Status ValidateModelConfig(ModelConfig& c) {
  if (c.model_type != "smallthinker") {
    return Bad("model_type", absl::StrCat("= \"", c.model_type,
                                          "\" is not supported; expected \"smallthinker\""));
  }
  ST_RETURN_IF_ERROR(CheckRange("num_hidden_layers", c.num_hidden_layers, 1, kMaxLayers));
  ST_RETURN_IF_ERROR(CheckRange("hidden_size", c.hidden_size, 1, kMaxHidden));
  ST_RETURN_IF_ERROR(CheckRange("num_attention_heads", c.num_attention_heads, 1, kMaxHeads));
  ST_RETURN_IF_ERROR(CheckRange("num_key_value_heads", c.num_key_value_heads, 1, kMaxHeads));
  ST_RETURN_IF_ERROR(CheckRange("head_dim", c.head_dim, 1, kMaxHeadDim));
  ST_RETURN_IF_ERROR(CheckRange("vocab_size", c.vocab_size, 1, kMaxVocab));
  ST_RETURN_IF_ERROR(
      CheckRange("max_position_embeddings", c.max_position_embeddings, 1, kMaxPositions));
  ST_RETURN_IF_ERROR(
      CheckRange("moe_num_primary_experts", c.moe_num_primary_experts, 1, kMaxExperts));
  ST_RETURN_IF_ERROR(CheckRange("moe_num_active_primary_experts", c.moe_num_active_primary_experts,
                                1, kMaxExperts));
  ST_RETURN_IF_ERROR(CheckRange("moe_ffn_hidden_size", c.moe_ffn_hidden_size, 1, kMaxFfn));
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return Bad("num_key_value_heads",
               absl::StrCat("= ", c.num_key_value_heads, " does not divide num_attention_heads = ",
                            c.num_attention_heads, "; GQA needs whole groups of query heads"));
  }
  if (c.head_dim % 2 != 0) {
    return Bad("head_dim", absl::StrCat("= ", c.head_dim,
                                        " is odd; NeoX RoPE rotates halves, so it must be even"));
  }
  if (c.moe_num_active_primary_experts > c.moe_num_primary_experts) {
    return Bad("moe_num_active_primary_experts",
               absl::StrCat("= ", c.moe_num_active_primary_experts,
                            " exceeds moe_num_primary_experts = ", c.moe_num_primary_experts,
                            "; expected 1 <= k <= E"));
  }
  if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps)) {
    return Bad("rms_norm_eps", absl::StrCat("= ", c.rms_norm_eps, " must be a finite number > 0"));
  }
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta)) {
    return Bad("rope_theta", absl::StrCat("= ", c.rope_theta, " must be a finite number > 0"));
  }
  const size_t num_layers = static_cast<size_t>(c.num_hidden_layers);
  const std::pair<const char*, const std::vector<int>*> layouts[] = {
      {"rope_layout", &c.rope_layout}, {"sliding_window_layout", &c.sliding_window_layout}};
  for (const auto& [key, layout] : layouts) {
    if (layout->size() != num_layers) {
      return Bad(key, absl::StrCat("has ", layout->size(),
                                   " entries; expected one 0/1 entry per "
                                   "layer, num_hidden_layers = ",
                                   num_layers));
    }
    for (size_t l = 0; l < num_layers; ++l) {
      if ((*layout)[l] != 0 && (*layout)[l] != 1) {
        return Bad(key, absl::StrCat("entry ", l, " = ", (*layout)[l], "; entries must be 0 or 1"));
      }
    }
  }
  const bool any_sliding =
      std::count(c.sliding_window_layout.begin(), c.sliding_window_layout.end(), 1) > 0;
  if (c.sliding_window_size < 0) {
    return Bad("sliding_window_size", absl::StrCat("= ", c.sliding_window_size, " must be >= 0"));
  }
  if (any_sliding && c.sliding_window_size == 0) {
    return Bad("sliding_window_size",
               "= 0, but sliding_window_layout has a 1: set a window > 0 or make every layer "
               "full attention");
  }
  if (c.bos_token_id < -1 || c.bos_token_id >= c.vocab_size) {
    return Bad("bos_token_id", absl::StrCat("= ", c.bos_token_id,
                                            " is outside the vocabulary; "
                                            "expected 0 <= id < vocab_size = ",
                                            c.vocab_size, " (or null / -1 for none)"));
  }
  for (int e : c.eos_token_id) {
    if (e < 0 || e >= c.vocab_size) {
      return Bad("eos_token_id", absl::StrCat("= ", e,
                                              " is outside the vocabulary; expected "
                                              "0 <= id < vocab_size = ",
                                              c.vocab_size));
    }
  }
  // Every size is bounded above, so this product cannot overflow in long double; the bound
  // keeps NumParams() comfortably inside int64.
  const long double total =
      static_cast<long double>(c.num_hidden_layers) *
          (static_cast<long double>(c.moe_num_primary_experts) * 3 * c.hidden_size *
               c.moe_ffn_hidden_size +
           static_cast<long double>(c.hidden_size) *
               (2.0L * c.num_attention_heads * c.head_dim +
                2.0L * c.num_key_value_heads * c.head_dim + c.moe_num_primary_experts + 2)) +
      2.0L * c.vocab_size * c.hidden_size;
  if (total > kMaxTotalParams) {
    return Bad("num_hidden_layers",
               absl::StrCat("and the other sizes give about ", static_cast<double>(total),
                            " parameters, more than this program supports (1e15)"));
  }

  c.layer_uses_rope.assign(num_layers, false);
  c.layer_uses_sliding.assign(num_layers, false);
  for (size_t l = 0; l < num_layers; ++l) {
    c.layer_uses_rope[l] = c.rope_layout[l] == 1;
    c.layer_uses_sliding[l] = c.sliding_window_layout[l] == 1;
  }
  return absl::OkStatus();
}

int64_t ModelConfig::NumEmbeddingParams() const {
  const int64_t table = static_cast<int64_t>(vocab_size) * hidden_size;
  return tie_word_embeddings ? table : 2 * table;
}

int64_t ModelConfig::NumParams() const {
  return NumEmbeddingParams() + num_hidden_layers * LayerParams(*this, moe_num_primary_experts) +
         hidden_size;
}

int64_t ModelConfig::NumActiveParams() const {
  return NumEmbeddingParams() +
         num_hidden_layers * LayerParams(*this, moe_num_active_primary_experts) + hidden_size;
}

std::string ModelConfig::ToJson() const {
  const json j = {{"model_type", model_type},
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
