// ModelConfig tests: shipped configs load with the released shapes, Hugging Face config.json
// files load unchanged, and every kind of bad config gets an error that names the key.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <string>

#include "model/config.h"
#include "nlohmann/json.hpp"

namespace st {
namespace {

using nlohmann::json;

std::string ConfigPath(const std::string& name) {
  return std::string(ST_SOURCE_DIR) + "/configs/model/" + name + ".json";
}

// A config as Hugging Face's SmallthinkerConfig.save_pretrained writes it (4B shapes).
json HfStyle4B() {
  return json::parse(R"({
    "architectures": ["SmallThinkerForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_smallthinker.SmallThinkerConfig"},
    "bos_token_id": 151643, "eos_token_id": [151643, 151645],
    "head_dim": 128, "hidden_size": 1536, "initializer_range": 0.02,
    "max_position_embeddings": 32768, "model_name": "smallthinker_4b_base",
    "model_type": "smallthinker", "moe_enable_early_router": true,
    "moe_enable_secondary_experts": false, "moe_ffn_hidden_size": 768,
    "moe_intermediate_size": 768, "moe_layer_layout": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],
    "moe_num_active_primary_experts": 4, "moe_num_primary_experts": 32,
    "moe_num_secondary_experts": 0, "moe_primary_router_apply_softmax": false,
    "moe_secondary_expert_size": 0, "moe_shared_primary_experts": 0,
    "num_attention_heads": 12, "num_experts_per_tok": 4, "num_hidden_layers": 32,
    "num_key_value_heads": 2, "pad_token_id": null, "rms_norm_eps": 1e-06,
    "rope_layout": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],
    "rope_theta": 1500000.0,
    "sliding_window_layout": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],
    "sliding_window_size": 4096, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "transformers_version": "4.53.3", "use_cache": true, "use_qk_norm": false,
    "vocab_size": 151936})");
}

// Expects parsing to fail with a message that mentions `needle`.
void ExpectError(const json& j, const std::string& needle) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j.dump());
  ASSERT_FALSE(c.ok()) << "accepted: " << j.dump();
  EXPECT_NE(c.status().message().find(needle), std::string::npos)
      << "error '" << c.status().message() << "' does not mention '" << needle << "'";
}

TEST(ModelConfigTest, ShippedConfigsLoadAndDeriveLayouts) {
  for (const char* name : {"tiny", "small", "smallthinker-4b-a0.6b", "smallthinker-21b-a3b"}) {
    absl::StatusOr<ModelConfig> c = LoadModelConfig(ConfigPath(name));
    ASSERT_TRUE(c.ok()) << name << ": " << c.status();
    ASSERT_EQ(c->layer_uses_rope.size(), static_cast<size_t>(c->num_hidden_layers));
    for (int l = 0; l < c->num_hidden_layers; ++l) {
      EXPECT_EQ(c->layer_uses_rope[l], c->rope_layout[l] == 1);
      EXPECT_EQ(c->layer_uses_sliding[l], c->sliding_window_layout[l] == 1);
    }
  }
  // tiny, small and 21B: layer l % 4 == 0 is NoPE + global, the others RoPE + sliding.
  for (const char* name : {"tiny", "small", "smallthinker-21b-a3b"}) {
    ModelConfig c = *LoadModelConfig(ConfigPath(name));
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      EXPECT_EQ(c.layer_uses_rope[l], l % 4 != 0) << name << " layer " << l;
      EXPECT_EQ(c.layer_uses_sliding[l], l % 4 != 0) << name << " layer " << l;
    }
  }
  ModelConfig small = *LoadModelConfig(ConfigPath("small"));
  EXPECT_GT(small.NumParams(), 10'000'000);
  EXPECT_LT(small.NumParams(), 100'000'000);
}

// Parameter counts from the shapes, by hand, against the reference's published ranges.
TEST(ModelConfigTest, ReleasedShapesGiveThePublishedParameterCounts) {
  {
    ModelConfig c = *LoadModelConfig(ConfigPath("smallthinker-4b-a0.6b"));
    const double H = 1536, Q = 12 * 128, KV = 2 * 128, F = 768, V = 151936;
    const double per_layer_fixed = 2 * H + H * Q + 2 * H * KV + Q * H + 32 * H;
    const double total_no_emb = 32 * (per_layer_fixed + 32 * 3 * H * F) + H;
    const double active_no_emb = 32 * (per_layer_fixed + 4 * 3 * H * F) + H;
    // The reference quotes total parameters with embeddings, active ones without.
    EXPECT_GT(total_no_emb + V * H, 4.0e9);
    EXPECT_LT(total_no_emb + V * H, 4.3e9);
    EXPECT_GT(active_no_emb, 0.55e9);
    EXPECT_LT(active_no_emb, 0.7e9);
    EXPECT_EQ(c.NumParams() - c.NumEmbeddingParams(), static_cast<int64_t>(total_no_emb));
    EXPECT_EQ(c.NumActiveParams() - c.NumEmbeddingParams(), static_cast<int64_t>(active_no_emb));
    EXPECT_EQ(c.NumEmbeddingParams(), static_cast<int64_t>(V * H));  // tied
    EXPECT_EQ(c.q_width(), 1536);
  }
  {
    ModelConfig c = *LoadModelConfig(ConfigPath("smallthinker-21b-a3b"));
    const double H = 2560, Q = 28 * 128, KV = 4 * 128, F = 768, V = 151936;
    const double per_layer_fixed = 2 * H + H * Q + 2 * H * KV + Q * H + 64 * H;
    const double total_no_emb = 52 * (per_layer_fixed + 64 * 3 * H * F) + H;
    const double active_no_emb = 52 * (per_layer_fixed + 6 * 3 * H * F) + H;
    // Published to one decimal (21.1-21.5 B): compare at that precision.
    const double total_b = std::round((total_no_emb + 2 * V * H) / 1e8) / 10;
    EXPECT_GE(total_b, 21.1);
    EXPECT_LE(total_b, 21.5);
    EXPECT_GT(active_no_emb, 2.85e9);
    EXPECT_LT(active_no_emb, 3.0e9);
    EXPECT_EQ(c.NumParams() - c.NumEmbeddingParams(), static_cast<int64_t>(total_no_emb));
    EXPECT_EQ(c.NumActiveParams() - c.NumEmbeddingParams(), static_cast<int64_t>(active_no_emb));
    EXPECT_EQ(c.NumEmbeddingParams(), static_cast<int64_t>(2 * V * H));  // untied
    EXPECT_EQ(c.q_width(), 3584);
  }
}

TEST(ModelConfigTest, HuggingFaceConfigJsonLoadsUnchanged) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(HfStyle4B().dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_hidden_layers, 32);
  EXPECT_EQ(c->moe_num_active_primary_experts, 4);
  EXPECT_EQ(c->bos_token_id, 151643);
  EXPECT_EQ(c->eos_token_id, (std::vector<int>{151643, 151645}));
  EXPECT_DOUBLE_EQ(c->rope_theta, 1.5e6);
  EXPECT_FALSE(c->moe_primary_router_apply_softmax);
  // Absent apply_softmax means sigmoid gating; head_dim defaults to hidden / heads.
  json j = HfStyle4B();
  j.erase("moe_primary_router_apply_softmax");
  j.erase("head_dim");
  c = ParseModelConfig(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->moe_primary_router_apply_softmax);
  EXPECT_EQ(c->head_dim, 128);
}

TEST(ModelConfigTest, BadConfigsNameTheKey) {
  json j = HfStyle4B();
  j["moe_num_experts"] = 8;
  ExpectError(j, "unknown key 'moe_num_experts'");
  j = HfStyle4B();
  j["num_key_value_heads"] = 5;
  ExpectError(j, "num_key_value_heads");
  j = HfStyle4B();
  j["rope_layout"] = json::array({1, 1, 1});
  ExpectError(j, "rope_layout");
  j = HfStyle4B();
  j["sliding_window_layout"][3] = 2;
  ExpectError(j, "sliding_window_layout");
  j = HfStyle4B();
  j["sliding_window_layout"][3] = 1;
  j["sliding_window_size"] = 0;
  ExpectError(j, "sliding_window_size");
  j = HfStyle4B();
  j["moe_num_active_primary_experts"] = 40;
  j["num_experts_per_tok"] = 40;
  ExpectError(j, "moe_num_active_primary_experts");
  j = HfStyle4B();
  j["use_qk_norm"] = true;
  ExpectError(j, "use_qk_norm");
  j = HfStyle4B();
  j["num_experts_per_tok"] = 6;
  ExpectError(j, "num_experts_per_tok");
  j = HfStyle4B();
  j["moe_shared_primary_experts"] = 1;
  ExpectError(j, "moe_shared_primary_experts");
  j = HfStyle4B();
  j["hidden_size"] = "1536";
  ExpectError(j, "hidden_size");
  j = HfStyle4B();
  j["hidden_size"] = 1536.5;
  ExpectError(j, "hidden_size");
  j = HfStyle4B();
  j.erase("vocab_size");
  ExpectError(j, "vocab_size");
  j = HfStyle4B();
  j["head_dim"] = 127;
  ExpectError(j, "head_dim");
  j = HfStyle4B();
  j["eos_token_id"] = json::array({151643, 999999});
  ExpectError(j, "eos_token_id");
  j = HfStyle4B();
  j["model_type"] = "llama";
  ExpectError(j, "model_type");
  absl::StatusOr<ModelConfig> bad = ParseModelConfig("{\"hidden_size\": 12,,}");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("not valid JSON"), std::string::npos) << bad.status();
  absl::StatusOr<ModelConfig> missing = LoadModelConfig("/nonexistent/config.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/config.json"), std::string::npos);
}

TEST(ModelConfigTest, ToJsonRoundTrips) {
  for (const char* name : {"tiny", "smallthinker-21b-a3b"}) {
    ModelConfig a = *LoadModelConfig(ConfigPath(name));
    absl::StatusOr<ModelConfig> b = ParseModelConfig(a.ToJson());
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(b->ToJson(), a.ToJson());
    EXPECT_EQ(b->NumParams(), a.NumParams());
    EXPECT_EQ(b->layer_uses_sliding, a.layer_uses_sliding);
    EXPECT_EQ(b->bos_token_id, a.bos_token_id);
    EXPECT_EQ(b->eos_token_id, a.eos_token_id);
  }
}

}  // namespace
}  // namespace st
