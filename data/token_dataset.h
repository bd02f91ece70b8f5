// Token datasets: a directory of chunked HDF5 token shards plus manifest.json (written by
// `st-data prepare`), the split reader TokenDataset, and the DataLoader the trainer draws from.
//
// Dataset directory layout (format "smallthinker.token_shards", version 2):
//   DIR/manifest.json     format, version, tokenizer {name, fingerprint, vocab_size, eos_id},
//                         train/val shard lists [{file, tokens, docs_end}], sources
//                         [{path, bytes}], prepare settings, and "complete": true written last.
//   DIR/tokenizer.json    the exact tokenizer.json text (absent for the "byte" tokenizer)
//   DIR/train-00000.h5 .. one per shard: 1-D uint32 dataset /tokens, CHUNKED (kChunkTokens),
//   DIR/val-00000.h5 ..   attributes on "/": format, version, split, index, tokenizer,
//                         fingerprint, vocab_size, eos_id, sources (JSON list of paths)
// A split is the concatenation of its shards in order: one contiguous token stream in which
// documents are terminated by eos_id. Every file is written to a temp name and renamed.
//
// Memory: a split whose ids take < 1 GB (OpenOptions::max_resident_bytes) is read whole into
// memory at Open; a bigger one stays on disk and each window is read with hyperslab reads of
// the shards it overlaps (the shard files stay open).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "infer/tokenizer/tokenizer.h"

namespace st {

inline constexpr char kTokenShardsFormat[] = "smallthinker.token_shards";
inline constexpr int kTokenShardsVersion = 2;
inline constexpr int64_t kChunkTokens = int64_t{1} << 17;  // 512 KiB chunks: fit HDF5's cache

struct ShardInfo {
  std::string file;       // name inside the dataset directory, e.g. "train-00003.h5"
  int64_t tokens = 0;     // ids in the shard
  int64_t docs_end = -1;  // prepare's resume point: documents consumed when it was closed
};

struct SourceInfo {
  std::string path;
  int64_t bytes = 0;
};

struct Manifest {
  std::string tokenizer;    // MakeTokenizer name: "byte" or "bpe"
  std::string fingerprint;  // Tokenizer::Fingerprint()
  int vocab_size = 0;
  int eos_id = -1;
  std::vector<ShardInfo> train, val;
  std::vector<SourceInfo> sources;
  std::string prepare_json = "{}";  // settings of the run that wrote it (resume checks them)
  bool complete = false;

  int64_t Tokens(const std::string& split) const;  // sum over the split's shards
  std::string ToJson() const;                      // pretty-printed, "complete" last
};

absl::StatusOr<Manifest> ParseManifest(const std::string& json_text, const std::string& where);
// Reads DIR/manifest.json. A plain file at `dir` in the old single-file token format gets an
// error that says how to re-create it.
absl::StatusOr<Manifest> ReadManifest(const std::string& dir);
absl::Status WriteManifest(const std::string& dir, const Manifest& m);  // atomic
// Writes DIR/tokenizer.json (atomic) unless the tokenizer is "byte".
absl::Status WriteDatasetTokenizer(const std::string& dir, const Tokenizer& tok);
// The tokenizer a dataset was made with (manifest + DIR/tokenizer.json), checked against the
// manifest's fingerprint and vocab_size.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadDatasetTokenizer(const std::string& dir);
// Name of shard `index` of `split`: "train-00007.h5".
std::string ShardFileName(const std::string& split, int index);

// Writes one shard file atomically; ids must be in [0, m.vocab_size). Returns its ShardInfo
// (docs_end left at -1 for the caller to fill).
absl::StatusOr<ShardInfo> WriteShard(const std::string& dir, const Manifest& m,
                                     const std::string& split, int index,
                                     absl::Span<const int32_t> ids,
                                     const std::vector<std::string>& sources);

// Writes a complete dataset directory from in-memory ids (tests, small tools): the train ids
// are cut into shards of `shard_tokens`; val is one shard or none when empty.
absl::Status WriteTokenDataset(const std::string& dir, const Tokenizer& tok,
                               absl::Span<const int32_t> train, absl::Span<const int32_t> val,
                               int64_t shard_tokens = int64_t{1} << 26,
                               const std::vector<SourceInfo>& sources = {});
// Same from explicit metadata (tokenizer, fingerprint, vocab_size, eos_id, sources of `meta`;
// its shard lists are ignored); writes no tokenizer.json.
absl::Status WriteTokenDataset(const std::string& dir, const Manifest& meta,
                               absl::Span<const int32_t> train, absl::Span<const int32_t> val,
                               int64_t shard_tokens = int64_t{1} << 26);

// Tokenizes `text`, splitting it at a line boundary so that about `val_fraction` of the bytes
// at the end become the validation split (val is empty when val_fraction == 0). No eos added.
struct SplitTokens {
  std::vector<int32_t> train, val;
};
// Byte offset where the val part of `text` starts (text.size() when val_fraction == 0).
size_t ValCut(const std::string& text, double val_fraction);
SplitTokens TokenizeAndSplit(const Tokenizer& tok, const std::string& text, double val_fraction);

struct OpenOptions {
  int64_t max_resident_bytes = int64_t{1} << 30;  // read the split whole below this
};

// One split ("train" or "val") of a dataset directory. Open checks the manifest (complete,
// format, version), every shard (present, HDF5, attributes and length as the manifest says)
// and, when resident, every id. Reads are thread-safe. Move-only.
class TokenDataset {
 public:
  static absl::StatusOr<TokenDataset> Open(const std::string& dir, const std::string& split,
                                           const OpenOptions& opt = {});
  TokenDataset(TokenDataset&&) noexcept;
  TokenDataset& operator=(TokenDataset&&) noexcept;
  ~TokenDataset();

  int64_t size() const;  // tokens in the split
  bool resident() const;
  const Manifest& manifest() const;
  const std::string& dir() const;
  // Copies ids [offset, offset+count) of the split's stream (crossing shards as needed).
  // Lazy reads check that every id is < vocab_size.
  absl::Status Read(int64_t offset, int64_t count, int32_t* out) const;
  // Sequential windows (validation): window i is [i*S, i*S + S + 1).
  int64_t NumWindows(int seq_len) const;
  absl::Status ReadWindow(int seq_len, int64_t i, int32_t* out) const;

 private:
  struct Impl;
  explicit TokenDataset(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Draws batches of `batch_size` windows of `seq_len + 1` tokens (inputs and shifted targets)
// packed from the contiguous stream (windows start at 0, S, 2S, ... and cross document and
// shard boundaries). Each epoch shuffles the window order with splitmix64 seeded by
// (seed, epoch), the same on every machine. Data parallelism: the shuffled order is dealt
// round-robin, rank r of world w taking positions cursor + r of each round of w windows, so
// ranks never overlap; an epoch has floor(windows / w) rounds (the < w leftover windows of
// the shuffled order are skipped that epoch). State::cursor counts windows of the epoch taken
// by all ranks together, so a checkpoint resumes exactly, also with another world size.
class DataLoader {
 public:
  struct State {
    uint64_t seed = 0;
    int64_t epoch = 0;
    int64_t cursor = 0;  // position in the epoch's shuffled order, all ranks together
    int rank = 0;        // informational on Restore: the loader keeps its own rank/world
    int world = 1;
  };
  // Fails if the dataset holds fewer than seq_len + 1 tokens or fewer windows than ranks.
  static absl::StatusOr<DataLoader> Create(const TokenDataset* data, int seq_len, int batch_size,
                                           uint64_t seed, int rank = 0, int world = 1);
  // Fills out[batch_size * (seq_len + 1)], row-major, and advances (rolling into the next
  // epoch as needed).
  absl::Status Next(int32_t* out);
  // Index (into the stream, in windows) of the window this rank takes next; advances.
  int64_t NextWindow();
  State state() const { return state_; }
  absl::Status Restore(const State& s);                       // rejects a cursor past the epoch
  int64_t windows_per_epoch() const { return num_windows_; }  // all ranks
  int64_t rounds_per_epoch() const { return num_windows_ / state_.world; }
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

}  // namespace st
