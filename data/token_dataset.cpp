// Token files (write, tokenize-and-split, open with validation), the portable shuffled
// BatchSampler with exact resume, and sequential validation windows.
#include "data/token_dataset.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "data/hdf5.h"
#include "model/check.h"

namespace st {

namespace {

constexpr char kFormat[] = "smallthinker.tokens";
constexpr int64_t kVersion = 1;

// Checks that every id is in [0, vocab_size); names the split and position of the first bad one.
absl::Status CheckIds(absl::Span<const int32_t> ids, int vocab_size, const std::string& where) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "[", i, "] = ", ids[i], " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status WriteIds(H5File& f, const std::string& path, H5Type type,
                      absl::Span<const int32_t> ids) {
  std::vector<T> narrow(ids.begin(), ids.end());
  return f.WriteDataset(path, type, {static_cast<int64_t>(narrow.size())}, narrow.data());
}

// splitmix64: a tiny, fully specified generator, so shuffles match on every platform.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound) without modulo bias (rejection sampling), bound > 0.
  uint64_t Below(uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
    for (;;) {
      const uint64_t r = Next();
      if (r >= threshold) return r % bound;
    }
  }

 private:
  uint64_t state_;
};

}  // namespace

absl::Status WriteTokenFile(const std::string& path, const TokenFileMeta& meta,
                            absl::Span<const int32_t> train, absl::Span<const int32_t> val) {
  if (meta.vocab_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": vocab_size must be positive, got ", meta.vocab_size));
  }
  if (meta.tokenizer.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": tokenizer name is empty"));
  }
  ST_RETURN_IF_ERROR(CheckIds(train, meta.vocab_size, path + ": train"));
  ST_RETURN_IF_ERROR(CheckIds(val, meta.vocab_size, path + ": val"));
  const bool narrow = meta.vocab_size <= 65536;
  return WriteH5Atomically(path, [&](H5File& f) -> absl::Status {
    if (narrow) {
      ST_RETURN_IF_ERROR(WriteIds<uint16_t>(f, "/train/tokens", H5Type::kU16, train));
      ST_RETURN_IF_ERROR(WriteIds<uint16_t>(f, "/val/tokens", H5Type::kU16, val));
    } else {
      ST_RETURN_IF_ERROR(WriteIds<uint32_t>(f, "/train/tokens", H5Type::kU32, train));
      ST_RETURN_IF_ERROR(WriteIds<uint32_t>(f, "/val/tokens", H5Type::kU32, val));
    }
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "format", absl::string_view(kFormat)));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "version", kVersion));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "tokenizer", absl::string_view(meta.tokenizer)));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "vocab_size", static_cast<int64_t>(meta.vocab_size)));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "eos_id", static_cast<int64_t>(meta.eos_id)));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "source", absl::string_view(meta.source)));
    return absl::OkStatus();
  });
}

SplitTokens TokenizeAndSplit(const Tokenizer& tok, const std::string& text, double val_fraction) {
  ST_CHECK(val_fraction >= 0.0 && val_fraction <= 0.5)
      << "val_fraction must be in [0, 0.5], got " << val_fraction;
  const size_t n = text.size();
  size_t cut = n;  // text[0, cut) is train, text[cut, n) is val
  if (val_fraction > 0.0 && n >= 2) {
    const double target_d = static_cast<double>(n) * (1.0 - val_fraction);
    const size_t target =
        std::min(n - 1, std::max<size_t>(1, static_cast<size_t>(std::llround(target_d))));
    // The cut lies just after a '\n'; pick the one nearest the target, keeping both parts
    // non-empty (a cut in [1, n-1]).
    size_t best = std::string::npos;
    const size_t before = text.rfind('\n', target - 1);  // cut = before + 1 <= target
    if (before != std::string::npos) best = before + 1;
    const size_t after = text.find('\n', target);  // cut = after + 1 > target
    if (after != std::string::npos && after + 1 <= n - 1) {
      if (best == std::string::npos || (after + 1 - target) < (target - best)) best = after + 1;
    }
    if (best != std::string::npos) {
      cut = best;
    } else {
      // No usable line break: cut at the target byte, backing off UTF-8 continuation bytes.
      cut = target;
      while (cut > 1 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    }
  }
  SplitTokens out;
  out.train = tok.Encode(absl::string_view(text).substr(0, cut));
  if (cut < n) out.val = tok.Encode(absl::string_view(text).substr(cut));
  return out;
}

absl::StatusOr<TokenDataset> TokenDataset::Open(const std::string& path, const std::string& split) {
  if (split != "train" && split != "val") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown split '", split, "'; use \"train\" or \"val\""));
  }
  ST_ASSIGN_OR_RETURN(H5File f, H5File::Open(path));
  const std::string hint = "; create token files with st-data --input TEXT --output FILE";
  if (!f.HasAttr("/", "format")) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a smallthinker token file (no 'format' attribute)", hint));
  }
  ST_ASSIGN_OR_RETURN(std::string format, f.ReadStringAttr("/", "format"));
  if (format != kFormat) {
    return absl::InvalidArgumentError(absl::StrCat(path,
                                                   ": not a smallthinker token file (format '",
                                                   format, "', expected '", kFormat, "')", hint));
  }
  ST_ASSIGN_OR_RETURN(int64_t version, f.ReadIntAttr("/", "version"));
  if (version != kVersion) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": unsupported token file version ",
                                                   version, " (this build reads ", kVersion,
                                                   "); re-create it with this build's st-data"));
  }
  TokenDataset ds;
  ST_ASSIGN_OR_RETURN(ds.meta_.tokenizer, f.ReadStringAttr("/", "tokenizer"));
  ST_ASSIGN_OR_RETURN(int64_t vocab, f.ReadIntAttr("/", "vocab_size"));
  ST_ASSIGN_OR_RETURN(int64_t eos, f.ReadIntAttr("/", "eos_id"));
  if (vocab <= 0 || vocab > (int64_t{1} << 31) - 1 || eos < -1 || eos >= vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": bad vocab_size ", vocab, " / eos_id ", eos, " attributes"));
  }
  ds.meta_.vocab_size = static_cast<int>(vocab);
  ds.meta_.eos_id = static_cast<int>(eos);
  if (f.HasAttr("/", "source")) {
    ST_ASSIGN_OR_RETURN(ds.meta_.source, f.ReadStringAttr("/", "source"));
  }

  const std::string dset = "/" + split + "/tokens";
  ST_ASSIGN_OR_RETURN(H5DatasetInfo info, f.Info(dset));
  if (info.shape.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": dataset '", dset, "' must be 1-D, has rank ", info.shape.size()));
  }
  if (info.type != H5Type::kU16 && info.type != H5Type::kU32 && info.type != H5Type::kI32) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": dataset '", dset, "' must hold uint16/uint32 ids"));
  }
  // Ids above INT32_MAX clamp to INT32_MAX in HDF5's conversion and fail the range check.
  ds.tokens_.resize(static_cast<size_t>(info.shape[0]));
  ST_RETURN_IF_ERROR(
      f.ReadDataset(dset, H5Type::kI32, ds.tokens_.data(), ds.tokens_.size() * sizeof(int32_t)));
  absl::Status ids = CheckIds(ds.tokens_, ds.meta_.vocab_size, absl::StrCat(path, ": ", dset));
  if (!ids.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(ids.message(), "; the file is corrupt or its vocab_size attribute is wrong"));
  }
  return ds;
}

absl::StatusOr<BatchSampler> BatchSampler::Create(const TokenDataset* data, int seq_len,
                                                  int batch_size, uint64_t seed) {
  ST_CHECK(data != nullptr) << "BatchSampler needs a dataset";
  if (seq_len <= 0 || batch_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("seq_len and batch_size must be positive, got ",
                                                   seq_len, " and ", batch_size));
  }
  if (data->size() < static_cast<int64_t>(seq_len) + 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the dataset holds ", data->size(), " tokens, fewer than seq_len + 1 = ",
        static_cast<int64_t>(seq_len) + 1, "; use a shorter seq_len or a bigger corpus"));
  }
  BatchSampler s;
  s.data_ = data;
  s.seq_len_ = seq_len;
  s.batch_size_ = batch_size;
  s.num_windows_ = (data->size() - 1) / seq_len;
  s.state_.seed = seed;
  s.Shuffle();
  return s;
}

void BatchSampler::Shuffle() {
  order_.resize(static_cast<size_t>(num_windows_));
  for (int64_t i = 0; i < num_windows_; ++i) order_[i] = i;
  SplitMix64 rng(state_.seed ^ (static_cast<uint64_t>(state_.epoch) * 0x9E3779B97F4A7C15ULL));
  // Fisher-Yates from the back: position i swaps with a uniform j in [0, i].
  for (int64_t i = num_windows_ - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng.Below(static_cast<uint64_t>(i) + 1));
    std::swap(order_[i], order_[j]);
  }
}

void BatchSampler::Next(int32_t* out) {
  const int64_t len = static_cast<int64_t>(seq_len_) + 1;
  for (int b = 0; b < batch_size_; ++b) {
    if (state_.cursor >= num_windows_) {
      ++state_.epoch;
      state_.cursor = 0;
      Shuffle();
    }
    const int64_t start = order_[state_.cursor++] * seq_len_;
    ST_CHECK(start + len <= data_->size()) << "window past the end";
    std::memcpy(out + b * len, data_->data() + start, len * sizeof(int32_t));
  }
}

absl::Status BatchSampler::Restore(const State& s) {
  if (s.epoch < 0 || s.cursor < 0 || s.cursor > num_windows_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot restore sampler state (epoch ", s.epoch, ", cursor ", s.cursor, "): an epoch has ",
        num_windows_, " windows; was the checkpoint made with another dataset or seq_len?"));
  }
  state_ = s;
  Shuffle();
  return absl::OkStatus();
}

int64_t NumSequentialWindows(const TokenDataset& data, int seq_len) {
  ST_CHECK(seq_len > 0) << "seq_len=" << seq_len;
  if (data.size() < static_cast<int64_t>(seq_len) + 1) return 0;
  return (data.size() - 1) / seq_len;
}

void ReadSequentialWindow(const TokenDataset& data, int seq_len, int64_t i, int32_t* out) {
  ST_CHECK(i >= 0 && i < NumSequentialWindows(data, seq_len))
      << "window " << i << " of " << NumSequentialWindows(data, seq_len);
  std::memcpy(out, data.data() + i * seq_len, (static_cast<size_t>(seq_len) + 1) * sizeof(int32_t));
}

}  // namespace st
