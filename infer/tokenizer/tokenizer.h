// Tokenizer: the interface the data pipeline, trainer, sampler and runtime use to turn text into
// ids and back (torch-free). Implementations: ByteTokenizer (one id a byte) and BpeTokenizer
// (Hugging Face byte-level BPE, bpe.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace st {

// Thread-safety: every const method is safe to call concurrently.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Special (added) tokens written in the text are matched and become their ids, as Hugging
  // Face's tokenizers do by default. Invalid UTF-8 never fails: implementations define what
  // it becomes (BPE: U+FFFD for each maximal invalid subsequence; bytes: themselves).
  virtual std::vector<int32_t> Encode(absl::string_view text) const = 0;
  // Ids outside [0, vocab_size) decode to U+FFFD so that sampling garbage never crashes.
  // Token bytes that do not form valid UTF-8 are kept as they are (streaming needs them).
  virtual std::string Decode(absl::Span<const int32_t> ids) const = 0;
  virtual int vocab_size() const = 0;  // one past the largest id
  virtual int eos_id() const = 0;      // end-of-text id, -1 when the vocabulary has none
  virtual std::string name() const = 0;  // "byte" or "bpe"
  // Id of a token given by its text form (special tokens like "<|im_end|>"), -1 if absent.
  virtual int TokenId(absl::string_view token) const = 0;
  // The tokenizer.json text that reproduces this tokenizer ("" for the byte tokenizer, which
  // MakeTokenizer("byte") rebuilds).
  virtual std::string ToJson() const = 0;
  // Stable identity: hex digest of name() + ToJson(). Stored in token files and checkpoints.
  std::string Fingerprint() const;
};

// Ids 0..255 are the bytes themselves; 256 is <|endoftext|>. vocab_size() == 257.
class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int kEndOfText = 256;
  std::vector<int32_t> Encode(absl::string_view text) const override;
  std::string Decode(absl::Span<const int32_t> ids) const override;
  int vocab_size() const override { return 257; }
  int eos_id() const override { return kEndOfText; }
  std::string name() const override { return "byte"; }
  int TokenId(absl::string_view token) const override;
  std::string ToJson() const override { return ""; }
};

// Creates a tokenizer from what token files and checkpoints store: ("byte", "") or
// ("bpe", tokenizer.json text).
absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizer(absl::string_view name,
                                                         absl::string_view json = "");
// "byte" -> ByteTokenizer; anything else is a path to a Hugging Face tokenizer.json.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& spec);

// Turns a stream of ids into text, emitting only complete UTF-8 characters: bytes of a
// character split across tokens are held back until it is complete. Not thread-safe.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer* tok) : tok_(tok) {}
  std::string Push(int32_t id);  // text that became complete with this id (may be empty)
  std::string Flush();           // what is left; invalid leftovers become U+FFFD

 private:
  const Tokenizer* tok_;
  std::string pending_;
};

}  // namespace st
