// libFuzzer target for the parsers of the Hugging Face files beside a checkpoint: config.json
// (both key modes), tokenizer_config.json and generation_config.json. Any byte string must give
// a value or an error, never a crash, a hang or an out-of-bounds access. Build: scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "infer/tokenizer/hf_configs.h"
#include "infer/tokenizer/tokenizer.h"
#include "model/config.h"
#include "tests/test_tokenizers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const st::Tokenizer* tok = [] {
    auto t = st::MakeTokenizer("bpe", st::test_util::MinimalTokenizerJson());
    if (!t.ok()) std::abort();
    return t->release();
  }();
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> ignored;
  (void)st::ParseModelConfig(text, st::ConfigKeys::kHuggingFace, &ignored);
  (void)st::ParseModelConfig(text);
  st::ChatTemplates templates;
  absl::StatusOr<st::TokenizerPolicy> p = st::ParseTokenizerConfig(text, tok, &templates);
  if (p.ok()) {
    (void)p->Encode(*tok, "hello <|im_end|>");
    (void)st::TokenizerConfigJson(*p, *tok, templates.default_template);
  }
  (void)st::ParseTokenizerConfig(text, nullptr, &templates);
  absl::StatusOr<st::GenerationDefaults> g = st::ParseGenerationConfig(text, 300);
  if (g.ok()) {
    (void)g->ToString();
    (void)st::GenerationConfigJson(*g);
  }
  return 0;
}
