// TrainBpe: learns a byte-level BPE vocabulary from text and writes it as a Hugging Face
// tokenizer.json (Qwen2 pre-tokenizer regex, NFC, ByteLevel, special tokens) that both
// BpeTokenizer and Hugging Face's tokenizers load and encode identically.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace st {

struct BpeTrainOptions {
  int vocab_size = 4096;  // total, including the 256 byte tokens and the special tokens
  int min_frequency = 2;  // a pair seen fewer times is never merged
  std::vector<std::string> special_tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  // Called now and then with (bytes of text read so far, merges learned so far).
  std::function<void(int64_t bytes, int merges)> progress;
};

// Learns merges from `texts` (each one a document; read once to count pre-token words).
// Returns the tokenizer.json text. Fails on empty input or a vocab_size below 256 + specials.
absl::StatusOr<std::string> TrainBpe(const std::vector<std::string>& texts,
                                     const BpeTrainOptions& opt);

// Word counting is separable so that large corpora can be streamed: feed documents one by
// one, then learn. Thread-compatible (one thread at a time).
class BpeWordCounter {
 public:
  // Splits documents on the default special tokens (BpeTrainOptions().special_tokens).
  BpeWordCounter();
  // Splits documents on these special tokens (occurring literally in the text, they are left
  // out of the counts, as Hugging Face's tokenizers match them before pre-tokenizing).
  explicit BpeWordCounter(const std::vector<std::string>& special_tokens);
  ~BpeWordCounter();
  BpeWordCounter(const BpeWordCounter&) = delete;
  BpeWordCounter& operator=(const BpeWordCounter&) = delete;
  void Add(absl::string_view document);
  int64_t bytes() const;
  absl::StatusOr<std::string> Train(const BpeTrainOptions& opt) const;

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace st
