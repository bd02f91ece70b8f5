// Tokenizer: the interface the data pipeline, trainer and sampler use to turn text into ids.
// ByteTokenizer is the minimal implementation (one id a byte); the Hugging Face byte-level BPE
// (issue 3) implements the same interface.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace st {

// Thread-safety: Encode/Decode are const and safe to call concurrently.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> Encode(absl::string_view text) const = 0;
  // Ids outside [0, vocab_size) decode to U+FFFD so that sampling garbage never crashes.
  virtual std::string Decode(absl::Span<const int32_t> ids) const = 0;
  virtual int vocab_size() const = 0;
  virtual int eos_id() const = 0;        // end-of-text id, -1 when the vocabulary has none
  virtual std::string name() const = 0;  // stored in token files, e.g. "byte"
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
};

// Creates a tokenizer by the name stored in token files and checkpoints ("byte").
absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizer(absl::string_view name);

}  // namespace st
