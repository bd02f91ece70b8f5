// Token files: tokenized corpora stored in HDF5, and the deterministic, resumable batch
// sampler that the trainer draws from.
//
// File layout (version 1):
//   /train/tokens   1-D uint16 (vocab <= 65536) or uint32
//   /val/tokens     1-D, same type (may be empty)
//   attributes on "/": format = "smallthinker.tokens", version = 1, tokenizer (name, e.g.
//   "byte"), vocab_size, eos_id, source (free text: where the text came from)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "data/tokenizer.h"

namespace st {

struct TokenFileMeta {
  std::string tokenizer;  // name for MakeTokenizer
  int vocab_size = 0;
  int eos_id = -1;
  std::string source;
};

// Writes atomically (temp name + rename).
absl::Status WriteTokenFile(const std::string& path, const TokenFileMeta& meta,
                            absl::Span<const int32_t> train, absl::Span<const int32_t> val);

// Tokenizes `text`, splitting it at a line boundary so that about `val_fraction` of the bytes
// at the end become the validation split (val is empty when val_fraction == 0).
struct SplitTokens {
  std::vector<int32_t> train, val;
};
SplitTokens TokenizeAndSplit(const Tokenizer& tok, const std::string& text, double val_fraction);

// One split of a token file, held in memory as int32 ids. Immutable after Open: safe to
// share between threads.
class TokenDataset {
 public:
  // split: "train" or "val". Fails with a clear message if the file is not a token file, the
  // version is unknown, or an id is >= vocab_size.
  static absl::StatusOr<TokenDataset> Open(const std::string& path, const std::string& split);
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  const int32_t* data() const { return tokens_.data(); }
  const TokenFileMeta& meta() const { return meta_; }

 private:
  std::vector<int32_t> tokens_;
  TokenFileMeta meta_;
};

// Draws batches of `batch_size` windows of `seq_len + 1` tokens (inputs and shifted targets).
// Each epoch visits every window start 0, S, 2S, ... (with S = seq_len, windows that fit)
// once, in an order shuffled by a portable generator seeded with (seed, epoch): the same
// seed gives the same batches on every machine. The whole position is State; Restore(State)
// resumes exactly where a checkpointed run stopped.
class BatchSampler {
 public:
  struct State {
    uint64_t seed = 0;
    int64_t epoch = 0;
    int64_t cursor = 0;  // windows already drawn in this epoch
  };
  // Fails if the dataset holds fewer than seq_len + 1 tokens.
  static absl::StatusOr<BatchSampler> Create(const TokenDataset* data, int seq_len, int batch_size,
                                             uint64_t seed);
  // Fills out[batch_size * (seq_len + 1)], row-major, and advances.
  void Next(int32_t* out);
  State state() const { return state_; }
  absl::Status Restore(const State& s);  // rejects a cursor past the epoch
  int64_t windows_per_epoch() const { return num_windows_; }
  int seq_len() const { return seq_len_; }
  int batch_size() const { return batch_size_; }

 private:
  void Shuffle();
  const TokenDataset* data_ = nullptr;
  int seq_len_ = 0, batch_size_ = 0;
  int64_t num_windows_ = 0;
  std::vector<int64_t> order_;  // window indices of the current epoch
  State state_;
};

// Window i (0-based) of `data` in order, for validation: tokens [i*S, i*S + S + 1).
// Returns how many windows fit.
int64_t NumSequentialWindows(const TokenDataset& data, int seq_len);
void ReadSequentialWindow(const TokenDataset& data, int seq_len, int64_t i, int32_t* out);

}  // namespace st
