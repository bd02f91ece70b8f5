// tokenizer_config.json and generation_config.json: the real Qwen3 files, the policy they give,
// round trips through our writers, and bad input.
#include "infer/tokenizer/hf_configs.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "infer/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/test_tokenizers.h"
#include "tests/test_util.h"

namespace st {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

constexpr char kQwenDir[] = ST_BINARY_DIR "/tokenizers/qwen3";

std::unique_ptr<Tokenizer> Minimal() {
  auto t = MakeTokenizer("bpe", test_util::MinimalTokenizerJson());
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

TEST(TokenizerConfigTest, RealQwen3FileGivesNoBosAndImEndEos) {
  const std::string cfg = test_util::FileContents(std::string(kQwenDir) + "/tokenizer_config.json");
  auto tok = LoadTokenizer(std::string(kQwenDir) + "/tokenizer.json");
  ASSERT_TRUE(tok.ok() && !cfg.empty())
      << "the ctest fixture fetch_tokenizers writes " << kQwenDir
      << " (by hand: bash scripts/fetch_tokenizers.sh BUILD/tokenizers)";
  ChatTemplates templates;
  absl::StatusOr<TokenizerPolicy> p = ParseTokenizerConfig(cfg, tok->get(), &templates);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->add_bos_token);
  EXPECT_FALSE(p->add_eos_token);
  EXPECT_EQ(p->bos_token, "");
  EXPECT_EQ(p->bos_token_id, -1);
  EXPECT_EQ(p->eos_token, "<|im_end|>");
  EXPECT_EQ(p->eos_token_id, 151645);
  EXPECT_EQ(p->pad_token_id, 151643);
  EXPECT_EQ(p->tokenizer_class, "Qwen2Tokenizer");
  EXPECT_NE(std::find(p->special_token_ids.begin(), p->special_token_ids.end(), 151644),
            p->special_token_ids.end());  // <|im_start|>
  // <think> is an added token but not a special one.
  const int think = (*tok)->TokenId("<think>");
  ASSERT_GE(think, 0);
  EXPECT_EQ(std::find(p->special_token_ids.begin(), p->special_token_ids.end(), think),
            p->special_token_ids.end());
  EXPECT_THAT(templates.default_template, HasSubstr("<|im_start|>"));
  EXPECT_THAT(templates.default_template, HasSubstr("enable_thinking"));
  // The prompt's first token is its own: nothing is put in front.
  const std::vector<int32_t> ids = p->Encode(**tok, "Hello");
  EXPECT_EQ(ids, (*tok)->Encode("Hello"));

  // Written back and read again: the same policy.
  const std::string again = TokenizerConfigJson(*p, **tok, templates.default_template);
  ChatTemplates templates2;
  absl::StatusOr<TokenizerPolicy> p2 = ParseTokenizerConfig(again, tok->get(), &templates2);
  ASSERT_TRUE(p2.ok()) << p2.status();
  EXPECT_EQ(p2->eos_token_id, p->eos_token_id);
  EXPECT_EQ(p2->pad_token_id, p->pad_token_id);
  EXPECT_EQ(p2->special_token_ids, p->special_token_ids);
  EXPECT_EQ(p2->add_bos_token, p->add_bos_token);
  EXPECT_EQ(templates2.default_template, templates.default_template);
}

TEST(TokenizerConfigTest, AddBosAndEosFollowThePolicy) {
  std::unique_ptr<Tokenizer> tok = Minimal();
  ASSERT_NE(tok, nullptr);
  const json cfg = {{"add_bos_token", true},
                    {"add_eos_token", true},
                    {"bos_token", {{"__type", "AddedToken"}, {"content", "<|endoftext|>"}}},
                    {"eos_token", "<|im_end|>"},
                    {"chat_template", json::array({{{"name", "tool_use"}, {"template", "T"}},
                                                   {{"name", "default"}, {"template", "D"}}})}};
  ChatTemplates templates;
  absl::StatusOr<TokenizerPolicy> p = ParseTokenizerConfig(cfg.dump(), tok.get(), &templates);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->Encode(*tok, "ab"), (std::vector<int32_t>{256, 'a', 'b', 258}));
  EXPECT_EQ(templates.default_template, "D");
  ASSERT_EQ(templates.named.size(), 2u);
  EXPECT_EQ(templates.named[0].first, "tool_use");
  // Round trip through the writer.
  absl::StatusOr<TokenizerPolicy> p2 =
      ParseTokenizerConfig(TokenizerConfigJson(*p, *tok, "D"), tok.get());
  ASSERT_TRUE(p2.ok()) << p2.status();
  EXPECT_EQ(p2->Encode(*tok, "ab"), p->Encode(*tok, "ab"));
}

TEST(TokenizerConfigTest, BadInputIsNamed) {
  std::unique_ptr<Tokenizer> tok = Minimal();
  ASSERT_NE(tok, nullptr);
  const std::pair<std::string, std::string> cases[] = {
      {"{", "not valid JSON"},
      {"[1]", "must be a JSON object"},
      {R"({"eos_token": "a", "eos_token": "b"})", "'eos_token' appears more than once"},
      {R"({"add_bos_token": "yes"})", "'add_bos_token' must be true or false"},
      {R"({"bos_token": 5})", "'bos_token' must be a token text"},
      {R"({"eos_token": "<|nope|>"})", "not a token of the tokenizer"},
      {R"({"add_bos_token": true})", "no bos_token is named"},
      {R"({"added_tokens_decoder": {"257": {"content": "<|im_end|>"}}})",
       "the two files come from different models"},
      {R"({"added_tokens_decoder": {"x": {"content": "<|im_end|>"}}})", "must be a token id"},
      {R"({"added_tokens_decoder": {"999999": {"content": "a"}}})", "outside the vocabulary"},
      {R"({"added_tokens_decoder": []})", "must be an object"},
      {R"({"additional_special_tokens": "<|im_end|>"})", "must be a list"},
      {R"({"chat_template": 3})", "'chat_template' must be a string or a list"},
      {R"({"chat_template": [{"name": "a"}]})", "chat_template[0]"},
      {R"({"chat_template": [{"name": "a", "template": "x"}, {"name": "a", "template": "y"}]})",
       "twice"},
      {R"({"model_max_length": -1})", "'model_max_length'"},
  };
  for (const auto& [text, want] : cases) {
    absl::StatusOr<TokenizerPolicy> p = ParseTokenizerConfig(text, tok.get());
    ASSERT_FALSE(p.ok()) << text;
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(want)) << text;
    EXPECT_THAT(std::string(p.status().message()), HasSubstr("tokenizer_config.json")) << text;
  }
  // Keys that do not change tokenization are ignored; 1e30 means "no limit".
  absl::StatusOr<TokenizerPolicy> p =
      ParseTokenizerConfig(R"({"clean_up_tokenization_spaces": false, "model_max_length": 1e30,
                               "errors": "replace", "something_new": [1, 2]})",
                           tok.get());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->model_max_length, 0);
}

TEST(GenerationConfigTest, Qwen3StyleFileRoundTrips) {
  const std::string text = R"({"bos_token_id": 151643, "do_sample": true,
    "eos_token_id": [151645, 151643], "pad_token_id": 151643, "temperature": 0.6, "top_k": 20,
    "top_p": 0.95, "transformers_version": "4.51.0"})";
  absl::StatusOr<GenerationDefaults> g = ParseGenerationConfig(text, 151936);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->do_sample, true);
  EXPECT_DOUBLE_EQ(*g->temperature, 0.6);
  EXPECT_EQ(*g->top_k, 20);
  EXPECT_DOUBLE_EQ(*g->top_p, 0.95);
  EXPECT_FALSE(g->min_p.has_value());
  EXPECT_FALSE(g->repetition_penalty.has_value());
  EXPECT_EQ(g->eos_token_id, (std::vector<int>{151645, 151643}));
  EXPECT_EQ(g->bos_token_id, 151643);
  EXPECT_EQ(g->ToString(),
            "do_sample true, temperature 0.6, top_k 20, top_p 0.95, eos [151645, 151643], bos "
            "151643, pad 151643");
  absl::StatusOr<GenerationDefaults> back = ParseGenerationConfig(GenerationConfigJson(*g), 151936);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToString(), g->ToString());
  // A single eos id is an integer, as transformers writes it.
  absl::StatusOr<GenerationDefaults> one = ParseGenerationConfig(R"({"eos_token_id": 7})", 10);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->eos_token_id, std::vector<int>{7});
  EXPECT_TRUE(ParseGenerationConfig("{}", 10)->empty());
}

TEST(GenerationConfigTest, BadValuesAreNamed) {
  const std::pair<std::string, std::string> cases[] = {
      {R"({"temperature": -1})", "'temperature'"},
      {R"({"temperature": "hot"})", "'temperature'"},
      {R"({"top_p": 0})", "'top_p'"},
      {R"({"top_p": 1.5})", "'top_p'"},
      {R"({"top_k": 1.5})", "'top_k'"},
      {R"({"top_k": -3})", "'top_k'"},
      {R"({"min_p": 2})", "'min_p'"},
      {R"({"repetition_penalty": 0})", "'repetition_penalty'"},
      {R"({"eos_token_id": [1, 99]})", "'eos_token_id[1]'"},
      {R"({"eos_token_id": "x"})", "'eos_token_id[0]'"},
      {R"({"do_sample": 1})", "'do_sample'"},
      {R"({"max_new_tokens": -5})", "'max_new_tokens'"},
      {"null", "must be a JSON object"},
  };
  for (const auto& [text, want] : cases) {
    absl::StatusOr<GenerationDefaults> g = ParseGenerationConfig(text, 10);
    ASSERT_FALSE(g.ok()) << text;
    EXPECT_THAT(std::string(g.status().message()), HasSubstr(want)) << text;
  }
}

}  // namespace
}  // namespace st
