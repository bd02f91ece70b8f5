// ModelConfig tests: shipped configs load with the released shapes and parameter counts,
// Hugging Face config.json files load unchanged, and every bad config gets an error naming the key.
#include "model/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace st {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

const char* const kShipped[] = {"tiny", "small", "smallthinker-4b-a0.6b", "smallthinker-21b-a3b"};

using test_util::ShippedConfig;

std::vector<int> Repeat(int n, int v) { return std::vector<int>(n, v); }

// A config as Hugging Face's SmallthinkerConfig.save_pretrained writes it (4B shapes), with
// the bookkeeping keys and the fixed feature keys set to the values the architecture has.
json HfStyle4B() {
  return json{{"_name_or_path", "PowerInfer/SmallThinker-4BA0.6B-Instruct"},
              {"architectures", {"SmallThinkerForCausalLM"}},
              {"auto_map",
               {{"AutoConfig", "configuration_smallthinker.SmallThinkerConfig"},
                {"AutoModelForCausalLM", "modeling_smallthinker.SmallThinkerForCausalLM"}}},
              {"bos_token_id", 151643},
              {"eos_token_id", {151643, 151645}},
              {"head_dim", 128},
              {"hidden_size", 1536},
              {"initializer_range", 0.02},
              {"max_position_embeddings", 32768},
              {"model_name", "smallthinker_4b_base"},
              {"model_type", "smallthinker"},
              {"moe_enable_early_router", true},
              {"moe_enable_secondary_experts", false},
              {"moe_ffn_hidden_size", 768},
              {"moe_intermediate_size", 768},
              {"moe_layer_layout", Repeat(32, 1)},
              {"moe_num_active_primary_experts", 4},
              {"moe_num_primary_experts", 32},
              {"moe_num_secondary_experts", 0},
              {"moe_primary_router_apply_softmax", false},
              {"moe_secondary_expert_size", 0},
              {"moe_shared_primary_experts", 0},
              {"norm_topk_prob", true},
              {"num_attention_heads", 12},
              {"num_experts_per_tok", 4},
              {"num_hidden_layers", 32},
              {"num_key_value_heads", 2},
              {"output_router_logits", false},
              {"pad_token_id", nullptr},
              {"profile_sparsity", false},
              {"rms_norm_eps", 1e-06},
              {"rope_layout", Repeat(32, 1)},
              {"rope_scaling", nullptr},
              {"rope_theta", 1500000.0},
              {"router_aux_loss_coef", 0.001},
              {"sliding_window_layout", Repeat(32, 0)},
              {"sliding_window_size", 4096},
              {"tie_word_embeddings", true},
              {"torch_dtype", "bfloat16"},
              {"transformers_version", "4.53.3"},
              {"use_cache", true},
              {"use_qk_norm", false},
              {"vocab_size", 151936}};
}

// The required keys only (a tiny model).
json Minimal() {
  return json{{"num_hidden_layers", 2},
              {"hidden_size", 64},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"vocab_size", 100},
              {"moe_num_primary_experts", 4},
              {"moe_num_active_primary_experts", 2},
              {"moe_ffn_hidden_size", 32}};
}

// Expects parsing to fail with a message that contains `needle` (usually the quoted key).
void ExpectError(const json& j, const std::string& needle) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j.dump());
  ASSERT_FALSE(c.ok()) << "accepted: " << j.dump();
  EXPECT_NE(c.status().message().find(needle), std::string::npos)
      << "error '" << c.status().message() << "' does not mention '" << needle << "'";
}

TEST(ModelConfigShippedTest, EveryShippedConfigLoadsAndDerivesLayerArrays) {
  for (const char* name : kShipped) {
    SCOPED_TRACE(name);
    ModelConfig c = ShippedConfig(name);
    const size_t num_layers = static_cast<size_t>(c.num_hidden_layers);
    ASSERT_EQ(c.layer_uses_rope.size(), num_layers);
    ASSERT_EQ(c.layer_uses_sliding.size(), num_layers);
    for (size_t l = 0; l < num_layers; ++l) {
      EXPECT_EQ(c.layer_uses_rope[l], c.rope_layout[l] == 1);
      EXPECT_EQ(c.layer_uses_sliding[l], c.sliding_window_layout[l] == 1);
    }
    EXPECT_EQ(c.num_attention_heads % c.num_key_value_heads, 0);
    EXPECT_LE(c.moe_num_active_primary_experts, c.moe_num_primary_experts);
  }
  // tiny, small and 21B: layer l % 4 == 0 is NoPE + global, the others RoPE + sliding.
  for (const char* name : {"tiny", "small", "smallthinker-21b-a3b"}) {
    SCOPED_TRACE(name);
    ModelConfig c = ShippedConfig(name);
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      EXPECT_EQ(c.layer_uses_rope[l], l % 4 != 0) << "layer " << l;
      EXPECT_EQ(c.layer_uses_sliding[l], l % 4 != 0) << "layer " << l;
    }
    EXPECT_GT(c.sliding_window_size, 0);
  }
  // 4B as released: every layer RoPE + full attention.
  ModelConfig b4 = ShippedConfig("smallthinker-4b-a0.6b");
  for (int l = 0; l < b4.num_hidden_layers; ++l) {
    EXPECT_TRUE(b4.layer_uses_rope[l]);
    EXPECT_FALSE(b4.layer_uses_sliding[l]);
  }
}

TEST(ModelConfigShippedTest, TinyAndSmallFitTheByteTokenizer) {
  for (const char* name : {"tiny", "small"}) {
    SCOPED_TRACE(name);
    ModelConfig c = ShippedConfig(name);
    EXPECT_GE(c.vocab_size, 257);  // byte tokenizer ids 0..256
    EXPECT_EQ(c.bos_token_id, -1);
    EXPECT_TRUE(c.eos_token_id.empty());  // the tokenizer's end-of-text id applies
    EXPECT_TRUE(c.tie_word_embeddings);
  }
  ModelConfig tiny = ShippedConfig("tiny");
  EXPECT_EQ(tiny.num_hidden_layers, 4);
  EXPECT_EQ(tiny.hidden_size, 128);
  EXPECT_EQ(tiny.sliding_window_size, 64);
  EXPECT_LT(tiny.NumParams(), 3'000'000);
  ModelConfig small = ShippedConfig("small");
  EXPECT_GE(small.NumParams(), 20'000'000);
  EXPECT_LE(small.NumParams(), 60'000'000);
}

TEST(ModelConfigShippedTest, ReleasedShapesMatchTheReference) {
  ModelConfig b4 = ShippedConfig("smallthinker-4b-a0.6b");
  EXPECT_EQ(b4.num_hidden_layers, 32);
  EXPECT_EQ(b4.hidden_size, 1536);
  EXPECT_EQ(b4.q_width(), 1536);
  EXPECT_EQ(b4.kv_width(), 256);
  EXPECT_EQ(b4.moe_num_primary_experts, 32);
  EXPECT_EQ(b4.moe_num_active_primary_experts, 4);
  EXPECT_EQ(b4.max_position_embeddings, 32768);
  EXPECT_TRUE(b4.tie_word_embeddings);
  EXPECT_EQ(b4.bos_token_id, 151643);
  EXPECT_EQ(b4.eos_token_id, (std::vector<int>{151643, 151645}));
  ModelConfig b21 = ShippedConfig("smallthinker-21b-a3b");
  EXPECT_EQ(b21.num_hidden_layers, 52);
  EXPECT_EQ(b21.hidden_size, 2560);
  EXPECT_EQ(b21.q_width(), 3584);  // != hidden_size
  EXPECT_EQ(b21.kv_width(), 512);
  EXPECT_EQ(b21.moe_num_primary_experts, 64);
  EXPECT_EQ(b21.moe_num_active_primary_experts, 6);
  EXPECT_EQ(b21.max_position_embeddings, 16384);
  EXPECT_EQ(b21.sliding_window_size, 4096);
  EXPECT_FALSE(b21.tie_word_embeddings);
  for (const ModelConfig* c : {&b4, &b21}) {
    EXPECT_EQ(c->head_dim, 128);
    EXPECT_EQ(c->moe_ffn_hidden_size, 768);
    EXPECT_EQ(c->vocab_size, 151936);
    EXPECT_DOUBLE_EQ(c->rope_theta, 1.5e6);
    EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
    EXPECT_FALSE(c->moe_primary_router_apply_softmax);
  }
}

// Parameter counts worked out by hand from the shapes (independently of config.cpp), checked
// against the reference's published ranges and against NumParams / NumActiveParams.
// The reference's "total" includes the embeddings (the 4B's non-embedding total is 3.80 B);
// its "active" excludes them.
TEST(ModelConfigParamsTest, FourBMatchesThePublishedCounts) {
  const int64_t L = 32, H = 1536, q = 12 * 128, kv = 2 * 128, E = 32, k = 4, F = 768, V = 151936;
  const int64_t shared_per_layer = 2 * H + (H * q + 2 * H * kv + q * H) + E * H;
  const int64_t expert = 3 * H * F;
  const int64_t total_no_emb = L * (shared_per_layer + E * expert) + H;
  const int64_t active_no_emb = L * (shared_per_layer + k * expert) + H;
  const int64_t emb = V * H;  // tied: the LM head reuses the embedding
  EXPECT_EQ(total_no_emb, 3'801'712'128);
  EXPECT_EQ(active_no_emb, 630'818'304);
  EXPECT_GE(total_no_emb + emb, 4'000'000'000);
  EXPECT_LE(total_no_emb + emb, 4'300'000'000);
  EXPECT_NEAR(static_cast<double>(active_no_emb), 0.63e9, 0.01e9);

  ModelConfig c = ShippedConfig("smallthinker-4b-a0.6b");
  EXPECT_EQ(c.NumEmbeddingParams(), emb);
  EXPECT_EQ(c.NumParams(), total_no_emb + emb);
  EXPECT_EQ(c.NumActiveParams(), active_no_emb + emb);
}

TEST(ModelConfigParamsTest, TwentyOneBMatchesThePublishedCounts) {
  const int64_t L = 52, H = 2560, q = 28 * 128, kv = 4 * 128, E = 64, k = 6, F = 768, V = 151936;
  const int64_t shared_per_layer = 2 * H + (H * q + 2 * H * kv + q * H) + E * H;
  const int64_t expert = 3 * H * F;
  const int64_t total_no_emb = L * (shared_per_layer + E * expert) + H;
  const int64_t active_no_emb = L * (shared_per_layer + k * expert) + H;
  const int64_t emb = 2 * V * H;  // untied: embedding + LM head
  EXPECT_EQ(total_no_emb, 20'728'650'240);
  EXPECT_EQ(active_no_emb, 2'939'558'400);
  // Published as 21.1-21.5 B (one decimal): 21.507 B untied, 21.118 B if it were tied.
  const double total_billions = std::round(static_cast<double>(total_no_emb + emb) / 1e8) / 10;
  EXPECT_GE(total_billions, 21.1);
  EXPECT_LE(total_billions, 21.5);
  EXPECT_GE(active_no_emb, 2'900'000'000);
  EXPECT_LE(active_no_emb, 3'000'000'000);

  ModelConfig c = ShippedConfig("smallthinker-21b-a3b");
  EXPECT_EQ(c.NumEmbeddingParams(), emb);
  EXPECT_EQ(c.NumParams(), total_no_emb + emb);
  EXPECT_EQ(c.NumActiveParams(), active_no_emb + emb);
}

TEST(ModelConfigParamsTest, TyingHalvesTheEmbeddingCount) {
  ModelConfig c = ShippedConfig("tiny");
  const int64_t tied = c.NumParams();
  c.tie_word_embeddings = false;
  EXPECT_EQ(c.NumEmbeddingParams(), 2 * int64_t{4096} * 128);
  EXPECT_EQ(c.NumParams() - tied, int64_t{4096} * 128);
  EXPECT_EQ(c.NumParams() - c.NumActiveParams(),
            int64_t{4} * (8 - 2) * 3 * 128 * 128);  // L * (E - k) * 3 * H * F
}

TEST(ModelConfigParseTest, HuggingFaceConfigJsonLoadsUnchanged) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(HfStyle4B().dump(2));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_hidden_layers, 32);
  EXPECT_EQ(c->moe_num_active_primary_experts, 4);
  EXPECT_EQ(c->moe_ffn_hidden_size, 768);
  EXPECT_EQ(c->bos_token_id, 151643);
  EXPECT_EQ(c->eos_token_id, (std::vector<int>{151643, 151645}));
  EXPECT_DOUBLE_EQ(c->rope_theta, 1.5e6);
  EXPECT_FALSE(c->moe_primary_router_apply_softmax);
  EXPECT_EQ(c->ToJson(), ShippedConfig("smallthinker-4b-a0.6b").ToJson());
}

// Every key of the released 4B config.json, values as published (tests/data/released/).
std::string ReleasedConfigText() {
  return test_util::FileContents(ST_SOURCE_DIR
                                 "/tests/data/released/smallthinker-4b-a0.6b-instruct.config.json");
}

TEST(HfConfigTest, ReleasedConfigJsonLoadsAsPublished) {
  const std::string text = ReleasedConfigText();
  ASSERT_FALSE(text.empty());
  // Our strict mode names the first key it does not know...
  absl::StatusOr<ModelConfig> strict = ParseModelConfig(text);
  ASSERT_FALSE(strict.ok());
  EXPECT_THAT(std::string(strict.status().message()), HasSubstr("unknown key 'max_length'"));
  // ...Hugging Face's mode loads it and lists what it ignored, sorted by name.
  std::vector<std::string> ignored;
  absl::StatusOr<ModelConfig> c = ParseModelConfig(text, ConfigKeys::kHuggingFace, &ignored);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->ToJson(), ShippedConfig("smallthinker-4b-a0.6b").ToJson());
  EXPECT_EQ(ignored, (std::vector<std::string>{
                         "architectures", "attention_dropout", "auto_map", "initializer_range",
                         "max_length", "model_name", "norm_topk_prob", "output_router_logits",
                         "repetition_penalty", "temperature", "tokenizer_class", "top_p",
                         "torch_dtype", "transformers_version", "use_cache"}));
}

TEST(HfConfigTest, UnknownKeysAreIgnoredButUnimplementedMathsIsRefused) {
  json j = json::parse(ReleasedConfigText());
  j["some_future_bookkeeping_key"] = {{"a", 1}};
  std::vector<std::string> ignored;
  ASSERT_TRUE(ParseModelConfig(j.dump(), ConfigKeys::kHuggingFace, &ignored).ok());
  EXPECT_NE(std::find(ignored.begin(), ignored.end(), "some_future_bookkeeping_key"),
            ignored.end());
  const std::pair<const char*, json> refused[] = {
      {"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}},
      {"moe_shared_primary_experts", 2},
      {"moe_enable_secondary_experts", true},
      {"use_qk_norm", true},
      {"hidden_act", "silu"},
      {"attention_bias", true},
      {"mlp_bias", true},
      {"partial_rotary_factor", 0.5},
      {"final_logit_softcapping", 30.0},
      {"logits_scaling", 8.0},
  };
  for (const auto& [key, value] : refused) {
    json bad = j;
    bad[key] = value;
    absl::StatusOr<ModelConfig> c = ParseModelConfig(bad.dump(), ConfigKeys::kHuggingFace);
    ASSERT_FALSE(c.ok()) << key;
    // The message names the key and the value it has.
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(absl::StrCat("'", key, "'")));
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(value.dump())) << key;
  }
  // Values that mean "not used" pass: null, the ReGLU activation, no biases, a whole rotation.
  json fine = j;
  fine["hidden_act"] = "relu";
  fine["attention_bias"] = false;
  fine["partial_rotary_factor"] = 1;
  fine["final_logit_softcapping"] = nullptr;
  EXPECT_TRUE(ParseModelConfig(fine.dump(), ConfigKeys::kHuggingFace).ok());
}

TEST(ModelConfigParseTest, OptionalKeysTakeTheirDefaults) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(Minimal().dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 16);  // hidden_size / num_attention_heads
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1.5e6);
  EXPECT_EQ(c->max_position_embeddings, 4096);
  EXPECT_EQ(c->rope_layout, Repeat(2, 1));
  EXPECT_EQ(c->sliding_window_layout, Repeat(2, 0));
  EXPECT_EQ(c->sliding_window_size, 0);
  EXPECT_FALSE(c->moe_primary_router_apply_softmax);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, -1);
  EXPECT_TRUE(c->eos_token_id.empty());
  EXPECT_EQ(c->model_type, "smallthinker");
  EXPECT_EQ(c->layer_uses_rope, std::vector<bool>(2, true));
  EXPECT_EQ(c->layer_uses_sliding, std::vector<bool>(2, false));
}

TEST(ModelConfigParseTest, TokenIdsAcceptIntListOrNull) {
  json j = Minimal();
  j["eos_token_id"] = 7;
  j["bos_token_id"] = nullptr;
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->eos_token_id, std::vector<int>{7});
  EXPECT_EQ(c->bos_token_id, -1);
  j["eos_token_id"] = nullptr;
  j["bos_token_id"] = 3;
  c = ParseModelConfig(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->eos_token_id.empty());
  EXPECT_EQ(c->bos_token_id, 3);
  j["eos_token_id"] = {1, 2};
  c = ParseModelConfig(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->eos_token_id, (std::vector<int>{1, 2}));
}

TEST(ModelConfigParseTest, CommentKeysAreIgnored) {
  json j = Minimal();
  j["_comment"] = "a note";
  j["_comment_layout"] = {"anything", 1};
  EXPECT_TRUE(ParseModelConfig(j.dump()).ok());
}

TEST(ModelConfigErrorTest, UnknownKeyIsNamedWithTheKnownKeys) {
  json j = HfStyle4B();
  j["moe_num_experts"] = 8;
  ExpectError(j, "unknown key 'moe_num_experts' in model config; known keys: ");
  ExpectError(j, "moe_num_primary_experts");  // the list of known keys
  j = Minimal();
  j["comment"] = "no leading underscore";
  ExpectError(j, "unknown key 'comment'");
}

TEST(ModelConfigErrorTest, ShapeErrorsNameTheKey) {
  json j = HfStyle4B();
  j["num_key_value_heads"] = 5;  // 12 % 5 != 0
  ExpectError(j, "'num_key_value_heads' = 5");
  j = HfStyle4B();
  j["rope_layout"] = {1, 1, 1};
  ExpectError(j, "'rope_layout' has 3 entries");
  j = HfStyle4B();
  j["sliding_window_layout"][3] = 2;
  ExpectError(j, "'sliding_window_layout' entry 3 = 2");
  j = HfStyle4B();
  j["sliding_window_layout"][3] = 1;
  j["sliding_window_size"] = 0;
  ExpectError(j, "'sliding_window_size'");
  j = Minimal();
  j["sliding_window_layout"] = {0, 1};  // sliding used, size absent
  ExpectError(j, "'sliding_window_size'");
  j = HfStyle4B();
  j["moe_num_active_primary_experts"] = 40;
  j["num_experts_per_tok"] = 40;
  ExpectError(j, "'moe_num_active_primary_experts' = 40");
  j = HfStyle4B();
  j["head_dim"] = 127;
  ExpectError(j, "'head_dim' = 127");
  j = HfStyle4B();
  j["hidden_size"] = 0;
  ExpectError(j, "'hidden_size' = 0");
  j = HfStyle4B();
  j["vocab_size"] = -5;
  ExpectError(j, "'vocab_size' = -5");
  j = HfStyle4B();
  j["rms_norm_eps"] = 0;
  ExpectError(j, "'rms_norm_eps'");
  j = HfStyle4B();
  j["rope_theta"] = -1.0;
  ExpectError(j, "'rope_theta'");
  j = HfStyle4B();
  j["eos_token_id"] = {151643, 999999};
  ExpectError(j, "'eos_token_id' = 999999");
  j = HfStyle4B();
  j["bos_token_id"] = 151936;
  ExpectError(j, "'bos_token_id' = 151936");
  j = HfStyle4B();
  j["model_type"] = "llama";
  ExpectError(j, "'model_type'");
  j = Minimal();
  j["hidden_size"] = 66;  // not a multiple of 4 heads, head_dim absent
  ExpectError(j, "'head_dim'");
  j = Minimal();
  j["num_hidden_layers"] = 2'000'000'000;  // rejected before any per-layer array is sized
  ExpectError(j, "'num_hidden_layers'");
}

TEST(ModelConfigErrorTest, FeaturesThisArchitectureLacksAreRejected) {
  const std::vector<std::pair<std::string, json>> cases = {
      {"use_qk_norm", true},
      {"moe_shared_primary_experts", 1},
      {"moe_enable_secondary_experts", true},
      {"moe_num_secondary_experts", 4},
      {"moe_secondary_expert_size", 128},
      {"moe_enable_early_router", false},
      {"rope_scaling", json{{"type", "yarn"}, {"factor", 4.0}}},
  };
  for (const auto& [key, value] : cases) {
    json j = HfStyle4B();
    j[key] = value;
    ExpectError(j, "'" + key + "'");
    ExpectError(j, "not supported");
  }
  json j = HfStyle4B();
  j["moe_layer_layout"][5] = 0;
  ExpectError(j, "'moe_layer_layout' entry 5");
  j = HfStyle4B();
  j["moe_layer_layout"] = Repeat(31, 1);
  ExpectError(j, "'moe_layer_layout' has 31 entries");
}

TEST(ModelConfigErrorTest, AliasesMustAgree) {
  json j = HfStyle4B();
  j["num_experts_per_tok"] = 6;
  ExpectError(j, "'num_experts_per_tok' = 6");
  j = HfStyle4B();
  j["moe_intermediate_size"] = 1024;
  ExpectError(j, "'moe_intermediate_size' = 1024");
}

TEST(ModelConfigErrorTest, TypeErrorsNameTheKey) {
  json j = HfStyle4B();
  j["hidden_size"] = "1536";
  ExpectError(j, "'hidden_size' must be an integer");
  j = HfStyle4B();
  j["hidden_size"] = 1536.5;
  ExpectError(j, "'hidden_size' must be an integer");
  j = HfStyle4B();
  j["num_hidden_layers"] = true;
  ExpectError(j, "'num_hidden_layers' must be an integer");
  j = HfStyle4B();
  j["vocab_size"] = 4294967296ULL;
  ExpectError(j, "'vocab_size'");
  j = HfStyle4B();
  j["bos_token_id"] = 18446744073709551615ULL;  // must not wrap to -1 (= none)
  ExpectError(j, "'bos_token_id'");
  j = HfStyle4B();
  j["rope_layout"][2] = "1";
  ExpectError(j, "'rope_layout[2]' must be an integer");
  j = HfStyle4B();
  j["rope_layout"] = 1;
  ExpectError(j, "'rope_layout' must be a list");
  j = HfStyle4B();
  j["rope_theta"] = "1.5e6";
  ExpectError(j, "'rope_theta' must be a number");
  j = HfStyle4B();
  j["tie_word_embeddings"] = 1;
  ExpectError(j, "'tie_word_embeddings' must be true or false");
  j = HfStyle4B();
  j["eos_token_id"] = "</s>";
  ExpectError(j, "'eos_token_id' must be an integer");
}

TEST(ModelConfigErrorTest, MissingRequiredKeysAreNamed) {
  for (const char* key : {"num_hidden_layers", "hidden_size", "num_attention_heads",
                          "num_key_value_heads", "vocab_size", "moe_num_primary_experts",
                          "moe_num_active_primary_experts", "moe_ffn_hidden_size"}) {
    json j = Minimal();
    j.erase(key);
    ExpectError(j, std::string("'") + key + "' is required");
  }
}

TEST(ModelConfigErrorTest, MalformedJsonGivesThePosition) {
  absl::StatusOr<ModelConfig> bad = ParseModelConfig("{\n  \"hidden_size\": 12,,\n}");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("not valid JSON (at byte 23)"), std::string::npos)
      << bad.status();
  EXPECT_NE(bad.status().message().find("line 2, column 21"), std::string::npos) << bad.status();
  bad = ParseModelConfig("[1, 2]");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("must be a JSON object"), std::string::npos);
  bad = ParseModelConfig("");
  EXPECT_FALSE(bad.ok());
  bad = ParseModelConfig(R"({"rope_theta": 1e999})");  // out of range for a double
  EXPECT_FALSE(bad.ok());
  json j = Minimal();
  std::string text = j.dump();
  text.insert(1, "\"hidden_size\": 32, ");  // the same key twice
  bad = ParseModelConfig(text);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'hidden_size' appears more than once"), std::string::npos)
      << bad.status();
}

TEST(ModelConfigErrorTest, MissingFileNamesThePath) {
  absl::StatusOr<ModelConfig> missing = LoadModelConfig("/nonexistent/config.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("'/nonexistent/config.json'"), std::string::npos)
      << missing.status();
  absl::StatusOr<ModelConfig> dir = LoadModelConfig(std::string(ST_SOURCE_DIR) + "/configs");
  ASSERT_FALSE(dir.ok());
  EXPECT_NE(dir.status().message().find("is a directory"), std::string::npos) << dir.status();
}

TEST(ModelConfigErrorTest, LoadErrorsStartWithThePath) {
  const std::string path = test_util::TestDir() + "/bad.json";
  json j = Minimal();
  j["hidden_sise"] = 64;
  test_util::WriteFile(path, j.dump());
  absl::StatusOr<ModelConfig> c = LoadModelConfig(path);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message().find(path + ": unknown key 'hidden_sise'"), 0u) << c.status();
  std::remove(path.c_str());
}

TEST(ModelConfigValidateTest, HandEditsAreCheckedAndArraysRefilled) {
  ModelConfig c = ShippedConfig("tiny");
  c.sliding_window_layout = {1, 1, 1, 1};
  ASSERT_TRUE(ValidateModelConfig(c).ok());
  EXPECT_EQ(c.layer_uses_sliding, std::vector<bool>(4, true));
  c.num_hidden_layers = 5;  // layouts not extended
  absl::Status s = ValidateModelConfig(c);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("'rope_layout'"), std::string::npos) << s;
}

TEST(ModelConfigToJsonTest, RoundTripsEveryShippedConfig) {
  for (const char* name : kShipped) {
    SCOPED_TRACE(name);
    ModelConfig a = ShippedConfig(name);
    const std::string text = a.ToJson();
    absl::StatusOr<ModelConfig> b = ParseModelConfig(text);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(b->ToJson(), text);
    EXPECT_EQ(b->num_hidden_layers, a.num_hidden_layers);
    EXPECT_EQ(b->hidden_size, a.hidden_size);
    EXPECT_EQ(b->num_attention_heads, a.num_attention_heads);
    EXPECT_EQ(b->num_key_value_heads, a.num_key_value_heads);
    EXPECT_EQ(b->head_dim, a.head_dim);
    EXPECT_EQ(b->vocab_size, a.vocab_size);
    EXPECT_EQ(b->rms_norm_eps, a.rms_norm_eps);  // bit-exact
    EXPECT_EQ(b->rope_theta, a.rope_theta);
    EXPECT_EQ(b->max_position_embeddings, a.max_position_embeddings);
    EXPECT_EQ(b->rope_layout, a.rope_layout);
    EXPECT_EQ(b->sliding_window_layout, a.sliding_window_layout);
    EXPECT_EQ(b->sliding_window_size, a.sliding_window_size);
    EXPECT_EQ(b->moe_num_primary_experts, a.moe_num_primary_experts);
    EXPECT_EQ(b->moe_num_active_primary_experts, a.moe_num_active_primary_experts);
    EXPECT_EQ(b->moe_ffn_hidden_size, a.moe_ffn_hidden_size);
    EXPECT_EQ(b->moe_primary_router_apply_softmax, a.moe_primary_router_apply_softmax);
    EXPECT_EQ(b->tie_word_embeddings, a.tie_word_embeddings);
    EXPECT_EQ(b->bos_token_id, a.bos_token_id);
    EXPECT_EQ(b->eos_token_id, a.eos_token_id);
    EXPECT_EQ(b->layer_uses_rope, a.layer_uses_rope);
    EXPECT_EQ(b->layer_uses_sliding, a.layer_uses_sliding);
    EXPECT_EQ(b->NumParams(), a.NumParams());
  }
  // Non-default values survive too (softmax gating, an awkward eps, no eos).
  json j = Minimal();
  j["moe_primary_router_apply_softmax"] = true;
  j["rms_norm_eps"] = 1.0 / 3.0;
  j["tie_word_embeddings"] = false;
  ModelConfig a = *ParseModelConfig(j.dump());
  ModelConfig b = *ParseModelConfig(a.ToJson());
  EXPECT_EQ(b.ToJson(), a.ToJson());
  EXPECT_TRUE(b.moe_primary_router_apply_softmax);
  EXPECT_EQ(b.rms_norm_eps, 1.0 / 3.0);
  EXPECT_FALSE(b.tie_word_embeddings);
  EXPECT_TRUE(b.eos_token_id.empty());
}

}  // namespace
}  // namespace st
