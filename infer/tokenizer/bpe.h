// BpeTokenizer: Hugging Face byte-level BPE (the Qwen2 / SmallThinker family) loaded from a
// tokenizer.json: NFC normalizer, Split pre-tokenizer regex (PCRE2, JIT), ByteLevel byte <->
// unicode mapping, merges by rank, added/special tokens matched before pre-tokenization,
// ByteLevel decoder. Anything else in a tokenizer.json is rejected with a clear error.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "infer/tokenizer/tokenizer.h"

namespace st {

// The pre-tokenizer regex of Qwen2 (and of tokenizers trained by TrainBpe).
extern const char kQwen2Pattern[];

// Splits text into pre-tokens with a PCRE2 pattern (UTF mode, Unicode properties, JIT).
// Immutable after Create; Split is thread-safe (per-call match data).
class PreTokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Create(const std::string& pattern);
  ~PreTokenizer();
  // Appends the pieces of `text` (valid UTF-8) to `out`: the matches of the pattern and, as
  // Hugging Face's Split with behavior "Isolated" does, any text between matches.
  void Split(absl::string_view text, std::vector<absl::string_view>* out) const;
  // The same pieces, in order, handed to `fn` one at a time (no vector of the whole text).
  void ForEach(absl::string_view text, absl::FunctionRef<void(absl::string_view)> fn) const;
  const std::string& pattern() const { return pattern_; }

 private:
  PreTokenizer() = default;
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
};

// Byte-level mapping of GPT-2 / Hugging Face ByteLevel: each byte <-> one printable code point.
std::string BytesToByteLevel(absl::string_view bytes);  // UTF-8 of the mapped code points
// Inverse; false if a code point is not in the mapping.
bool ByteLevelToBytes(absl::string_view mapped, std::string* bytes);

// Length (1-4) of the UTF-8 sequence `lead` starts, with the allowed range of its second byte
// in [*lo, *hi] (Unicode table 3-7); 0 for a byte that cannot start a character.
int Utf8LeadByte(unsigned char lead, unsigned char* lo, unsigned char* hi);
// Appends the UTF-8 encoding of code point `cp` (a surrogate, which UTF-8 cannot hold, becomes
// U+FFFD).
void AppendUtf8(uint32_t cp, std::string* out);
// Replaces each maximal invalid UTF-8 subsequence by U+FFFD (as Python's errors="replace").
std::string SanitizeUtf8(absl::string_view text);
// NFC normalization (ICU).
std::string NormalizeNfc(absl::string_view text);

// What a byte-level BPE tokenizer.json holds, for the code that writes one (the BPE trainer, the
// GGUF import).
struct ByteLevelBpeSpec {
  // kQwen2: Qwen2/Qwen3's normalizer (NFC), pre-tokenizer (Split with kQwen2Pattern, then
  // ByteLevel without regex), post-processor and decoder, as in Qwen's tokenizer.json. kGpt2:
  // no normalizer, ByteLevel with GPT-2's regex everywhere.
  enum class Pre { kQwen2, kGpt2 };
  struct Added {
    int id = 0;
    std::string content;
    bool special = true;
  };
  Pre pre = Pre::kQwen2;
  std::vector<std::pair<std::string, int>> vocab;           // token (byte-level form), id; unique
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::vector<Added> added;                                 // "normalized": false
};
// The tokenizer.json text (no truncation, padding or dropout); `indent` as nlohmann's dump
// (-1: compact). Unchecked: load it (BpeTokenizer::FromJson) to validate.
std::string ByteLevelBpeJson(const ByteLevelBpeSpec& spec, int indent = -1);

class BpeTokenizer final : public Tokenizer {
 public:
  // Parses a tokenizer.json; errors say which part is unsupported.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromJson(absl::string_view json);
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Load(const std::string& path);
  ~BpeTokenizer() override;

  std::vector<int32_t> Encode(absl::string_view text) const override;
  std::string Decode(absl::Span<const int32_t> ids) const override;
  int vocab_size() const override;
  int eos_id() const override;
  std::string name() const override { return "bpe"; }
  int TokenId(absl::string_view token) const override;
  std::string ToJson() const override;

  struct Impl;

 private:
  BpeTokenizer() = default;
  std::unique_ptr<Impl> impl_;
};

}  // namespace st
