// The Hugging Face files that sit beside a checkpoint's weights and decide how text becomes
// tokens and how a reply is sampled: tokenizer_config.json (BOS/EOS policy, special tokens, chat
// template) and generation_config.json (sampling defaults, end ids). Parsed untrusting (every
// error names the file's key and says what to do), written back in the same shape. Torch-free.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "infer/tokenizer/tokenizer.h"

namespace st {

// What tokenizer_config.json decides. Token texts are "" where the file names none; ids are
// resolved against the tokenizer and are -1 where there is no such token.
struct TokenizerPolicy {
  bool add_bos_token = false;  // put bos_token_id in front of encoded text
  bool add_eos_token = false;  // put eos_token_id after encoded text
  std::string bos_token, eos_token, pad_token, unk_token;
  int bos_token_id = -1, eos_token_id = -1, pad_token_id = -1, unk_token_id = -1;
  // Ids of the added tokens marked "special": true (added_tokens_decoder).
  std::vector<int> special_token_ids;
  std::string tokenizer_class;   // e.g. "Qwen2Tokenizer" ("" when absent)
  int64_t model_max_length = 0;  // 0 = not given

  // Fills the ids of the named tokens that `tok` has (a model file stores the texts; the BOS id
  // it stores separately is kept). Names the tokenizer lacks keep -1.
  void ResolveIds(const Tokenizer& tok);
  // Encodes with the policy: [bos] + tok.Encode(text) + [eos] as add_*_token say.
  std::vector<int32_t> Encode(const Tokenizer& tok, absl::string_view text) const;
};

// A chat template source: the default template and the named ones, as tokenizer_config.json
// ("chat_template": a string, or a list of {"name", "template"}) or chat_template.jinja hold them.
struct ChatTemplates {
  std::string default_template;                            // "" = none
  std::vector<std::pair<std::string, std::string>> named;  // (name, template), file order
};

// Parses tokenizer_config.json. `tok` resolves token texts to ids; a named token (bos, eos, pad,
// unk) the vocabulary lacks, or an added_tokens_decoder entry whose id holds another token, is
// an error. With `tok` null only the texts are read (ids stay -1; nothing is cross-checked). Keys
// that do not change tokenization are ignored. `templates` (optional) receives the chat
// template(s).
absl::StatusOr<TokenizerPolicy> ParseTokenizerConfig(absl::string_view json, const Tokenizer* tok,
                                                     ChatTemplates* templates = nullptr);

// Writes tokenizer_config.json as Hugging Face saves it (add_bos_token, add_eos_token, the token
// texts, added_tokens_decoder for `tok`'s special/added tokens, tokenizer_class, and the chat
// template when non-empty).
std::string TokenizerConfigJson(const TokenizerPolicy& policy, const Tokenizer& tok,
                                const std::string& chat_template);

// What generation_config.json decides. Absent keys stay unset; do_sample follows Hugging Face:
// when false (or absent), generation is greedy whatever the temperature says.
struct GenerationDefaults {
  std::optional<bool> do_sample;
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::optional<int> top_k, max_new_tokens;
  std::vector<int> eos_token_id;  // stop ids (may be empty)
  int bos_token_id = -1, pad_token_id = -1;

  bool empty() const;  // nothing set
  // "temperature 0.6, top_p 0.95, top_k 20, do_sample true, eos [151645, 151643]".
  std::string ToString() const;
};

// Parses generation_config.json; `vocab_size` bounds the ids (0 = no bound).
absl::StatusOr<GenerationDefaults> ParseGenerationConfig(absl::string_view json, int vocab_size);
// Writes generation_config.json in Hugging Face's key names (only what is set).
std::string GenerationConfigJson(const GenerationDefaults& g);

}  // namespace st
