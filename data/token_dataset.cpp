// Token shard directories: manifest (JSON), shard files (chunked HDF5), the split reader
// (resident or lazy hyperslab reads) and the rank-sharded, resumable DataLoader.
#include "data/token_dataset.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "data/hdf5.h"
#include "model/check.h"
#include "model/file_io.h"
#include "model/random.h"
#include "nlohmann/json.hpp"

namespace st {

namespace {

using json = nlohmann::json;

constexpr char kShardFormat[] = "smallthinker.token_shard";
constexpr char kOldFormat[] = "smallthinker.tokens";  // version 1: one file, /train and /val

bool IsDir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool IsFile(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The integer j[key] in [lo, hi] into *out. nlohmann's get<int>() narrows an out-of-range integer
// silently and converts a float (undefined behaviour beyond the type's range), so every integer
// of the manifest is checked here first. `fallback`: the value when the key is absent (nullptr:
// the key is required).
absl::Status GetInt(const json& j, const char* key, int64_t lo, int64_t hi, const int64_t* fallback,
                    int64_t* out) {
  if (!j.is_object() || !j.contains(key)) {
    if (fallback != nullptr) {
      *out = *fallback;
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat("missing field '", key, "'"));
  }
  const json& v = j[key];
  // (nlohmann types every non-negative integer as unsigned, negative ones as integer)
  const bool in_range =
      v.is_number_unsigned()
          ? v.get<uint64_t>() <= static_cast<uint64_t>(hi) &&
                (lo <= 0 || v.get<uint64_t>() >= static_cast<uint64_t>(lo))
          : v.is_number_integer() && v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
  if (!in_range) {
    return absl::InvalidArgumentError(absl::StrCat("field '", key, "' = ", v.dump(),
                                                   " is not an integer in [", lo, ", ", hi, "]"));
  }
  *out = v.get<int64_t>();
  return absl::OkStatus();
}

std::string Join(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

// Checks that every id is in [0, vocab_size); names the position of the first bad one.
absl::Status CheckIds(absl::Span<const int32_t> ids, int vocab_size, const std::string& where,
                      int64_t base = 0) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "[", base + static_cast<int64_t>(i), "] = ", ids[i],
                       " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

nlohmann::ordered_json ShardsToJson(const std::vector<ShardInfo>& shards) {
  nlohmann::ordered_json a = nlohmann::ordered_json::array();
  for (const ShardInfo& s : shards) {
    a.push_back({{"file", s.file}, {"tokens", s.tokens}, {"docs_end", s.docs_end}});
  }
  return a;
}

}  // namespace

int64_t Manifest::Tokens(const std::string& split) const {
  int64_t n = 0;
  for (const ShardInfo& s : split == "val" ? val : train) n += s.tokens;
  return n;
}

std::string Manifest::ToJson() const {
  // nlohmann's ordered_json keeps insertion order, so "complete" is the last key.
  nlohmann::ordered_json j;
  j["format"] = kTokenShardsFormat;
  j["version"] = kTokenShardsVersion;
  j["tokenizer"] = {{"name", tokenizer},
                    {"fingerprint", fingerprint},
                    {"vocab_size", vocab_size},
                    {"eos_id", eos_id}};
  j["tokens"] = {{"train", Tokens("train")}, {"val", Tokens("val")}};
  j["train"] = ShardsToJson(train);
  j["val"] = ShardsToJson(val);
  nlohmann::ordered_json src = nlohmann::ordered_json::array();
  for (const SourceInfo& s : sources) src.push_back({{"path", s.path}, {"bytes", s.bytes}});
  j["sources"] = src;
  j["prepare"] = nlohmann::ordered_json::parse(prepare_json.empty() ? "{}" : prepare_json);
  j["complete"] = complete;
  return j.dump(2) + "\n";
}

absl::StatusOr<Manifest> ParseManifest(const std::string& text, const std::string& where) {
  const std::string fix = "; re-create the dataset with st-data prepare --overwrite";
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": not valid JSON", fix));
  }
  try {
    if (j.value("format", "") != kTokenShardsFormat) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": format is not '", kTokenShardsFormat, "'", fix));
    }
    auto get_int = [&](const json& o, const char* key, int64_t lo, int64_t hi,
                       const int64_t* fallback, int64_t* out) -> absl::Status {
      absl::Status st = GetInt(o, key, lo, hi, fallback, out);
      if (st.ok()) return st;
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", st.message(), fix));
    };
    int64_t version = 0;
    ST_RETURN_IF_ERROR(get_int(j, "version", INT64_MIN, INT64_MAX, nullptr, &version));
    if (version != kTokenShardsVersion) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unsupported version ", version,
                                                     " (this build reads ", kTokenShardsVersion,
                                                     ")", fix));
    }
    Manifest m;
    const json& t = j.at("tokenizer");
    m.tokenizer = t.at("name").get<std::string>();
    m.fingerprint = t.at("fingerprint").get<std::string>();
    int64_t vocab_size = 0, eos_id = 0;
    ST_RETURN_IF_ERROR(get_int(t, "vocab_size", 1, INT32_MAX, nullptr, &vocab_size));
    ST_RETURN_IF_ERROR(get_int(t, "eos_id", -1, INT32_MAX, nullptr, &eos_id));
    m.vocab_size = static_cast<int>(vocab_size);
    m.eos_id = static_cast<int>(eos_id);
    if (m.eos_id >= m.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": bad vocab_size ", m.vocab_size, " / eos_id ", m.eos_id, fix));
    }
    for (const char* list : {"train", "val", "sources"}) {
      if (!j.contains(list) || !j[list].is_array()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": field '", list, "' is missing or not an array", fix));
      }
    }
    const int64_t no_docs_end = -1;
    for (const char* split : {"train", "val"}) {
      for (const json& s : j.at(split)) {
        ShardInfo info;
        info.file = s.at("file").get<std::string>();
        ST_RETURN_IF_ERROR(get_int(s, "tokens", 0, INT64_MAX, nullptr, &info.tokens));
        ST_RETURN_IF_ERROR(get_int(s, "docs_end", -1, INT64_MAX, &no_docs_end, &info.docs_end));
        if (info.file.empty() || info.file.find('/') != std::string::npos) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": bad shard entry ", s.dump(), fix));
        }
        (std::string(split) == "train" ? m.train : m.val).push_back(info);
      }
    }
    for (const json& s : j.at("sources")) {
      SourceInfo info{s.at("path").get<std::string>(), 0};
      ST_RETURN_IF_ERROR(get_int(s, "bytes", 0, INT64_MAX, nullptr, &info.bytes));
      m.sources.push_back(info);
    }
    if (j.contains("prepare")) m.prepare_json = j["prepare"].dump();
    m.complete = j.at("complete").get<bool>();
    return m;
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": missing or mistyped field (", e.what(), ")", fix));
  }
}

absl::StatusOr<Manifest> ReadManifest(const std::string& dir) {
  if (IsFile(dir)) {
    // The old single-file format (version 1) or some other file.
    absl::StatusOr<H5File> f = H5File::Open(dir);
    if (f.ok() && f->HasAttr("/", "format")) {
      absl::StatusOr<std::string> format = f->ReadStringAttr("/", "format");
      if (format.ok() && *format == kOldFormat) {
        return absl::InvalidArgumentError(absl::StrCat(
            dir,
            " is a token file in the old single-file format (version 1), which this build no "
            "longer reads; re-create it as a dataset directory: st-data prepare --tokenizer "
            "byte --input CORPUS.txt --output DIR"));
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat(dir,
                     " is a file, not a dataset directory; create one with st-data prepare "
                     "--input TEXT --output DIR"));
  }
  if (!IsDir(dir)) {
    return absl::NotFoundError(absl::StrCat("dataset directory '", dir,
                                            "' does not exist; create it with st-data prepare"));
  }
  const std::string path = Join(dir, "manifest.json");
  if (!IsFile(path)) {
    return absl::NotFoundError(absl::StrCat(
        path, " is missing: '", dir,
        "' is not a token dataset (or its preparation never wrote a shard); run st-data prepare "
        "--output ",
        dir));
  }
  ST_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseManifest(text, path);
}

absl::Status WriteManifest(const std::string& dir, const Manifest& m) {
  return WriteFileAtomic(Join(dir, "manifest.json"), m.ToJson());
}

absl::Status WriteDatasetTokenizer(const std::string& dir, const Tokenizer& tok) {
  if (tok.name() == "byte") return absl::OkStatus();
  return WriteFileAtomic(Join(dir, "tokenizer.json"), tok.ToJson());
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadDatasetTokenizer(const std::string& dir) {
  ST_ASSIGN_OR_RETURN(Manifest m, ReadManifest(dir));
  std::string text;
  if (m.tokenizer != "byte") {
    absl::StatusOr<std::string> t = ReadFile(Join(dir, "tokenizer.json"));
    if (!t.ok()) {
      return absl::NotFoundError(
          absl::StrCat(dir, ": the dataset was made with the '", m.tokenizer,
                       "' tokenizer but its tokenizer.json cannot be read (", t.status().message(),
                       "); re-create the dataset with st-data prepare --overwrite"));
    }
    text = std::move(*t);
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = MakeTokenizer(m.tokenizer, text);
  if (!tok.ok()) {
    return absl::Status(tok.status().code(), absl::StrCat(dir,
                                                          ": cannot rebuild the dataset's "
                                                          "tokenizer: ",
                                                          tok.status().message()));
  }
  if ((*tok)->Fingerprint() != m.fingerprint || (*tok)->vocab_size() != m.vocab_size ||
      (*tok)->eos_id() != m.eos_id) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": tokenizer.json does not match the manifest (fingerprint ",
                     (*tok)->Fingerprint(), " vs ", m.fingerprint,
                     "); it was changed after the shards were written: re-create the "
                     "dataset with st-data prepare --overwrite"));
  }
  return tok;
}

std::string ShardFileName(const std::string& split, int index) {
  return absl::StrFormat("%s-%05d.h5", split, index);
}

absl::StatusOr<ShardInfo> WriteShard(const std::string& dir, const Manifest& m,
                                     const std::string& split, int index,
                                     absl::Span<const int32_t> ids,
                                     const std::vector<std::string>& sources) {
  const std::string name = ShardFileName(split, index);
  const std::string path = Join(dir, name);
  ST_RETURN_IF_ERROR(CheckIds(ids, m.vocab_size, path + ": /tokens"));
  std::vector<uint32_t> u(ids.begin(), ids.end());
  json src = sources;
  ST_RETURN_IF_ERROR(WriteH5Atomically(path, [&](H5File& f) -> absl::Status {
    ST_RETURN_IF_ERROR(f.WriteChunked1D("/tokens", H5Type::kU32, static_cast<int64_t>(u.size()),
                                        u.data(), kChunkTokens));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "format", absl::string_view(kShardFormat)));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "version", int64_t{kTokenShardsVersion}));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "split", absl::string_view(split)));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "index", static_cast<int64_t>(index)));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "tokenizer", absl::string_view(m.tokenizer)));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "fingerprint", absl::string_view(m.fingerprint)));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "vocab_size", static_cast<int64_t>(m.vocab_size)));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "eos_id", static_cast<int64_t>(m.eos_id)));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "sources", absl::string_view(src.dump())));
    return absl::OkStatus();
  }));
  ShardInfo info;
  info.file = name;
  info.tokens = static_cast<int64_t>(ids.size());
  return info;
}

namespace {

absl::Status WriteDatasetImpl(const std::string& dir, Manifest m, const Tokenizer* tok,
                              absl::Span<const int32_t> train, absl::Span<const int32_t> val,
                              int64_t shard_tokens) {
  if (shard_tokens <= 0) return absl::InvalidArgumentError("shard_tokens must be positive");
  if (::mkdir(dir.c_str(), 0777) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create dataset directory '", dir, "': ", std::strerror(errno)));
  }
  if (tok != nullptr) ST_RETURN_IF_ERROR(WriteDatasetTokenizer(dir, *tok));
  std::vector<std::string> paths;
  for (const SourceInfo& s : m.sources) paths.push_back(s.path);
  for (int64_t off = 0, i = 0; off < static_cast<int64_t>(train.size()); off += shard_tokens, ++i) {
    const int64_t n = std::min<int64_t>(shard_tokens, train.size() - off);
    ST_ASSIGN_OR_RETURN(ShardInfo s, WriteShard(dir, m, "train", static_cast<int>(i),
                                                train.subspan(off, n), paths));
    m.train.push_back(s);
  }
  if (!val.empty()) {
    ST_ASSIGN_OR_RETURN(ShardInfo s, WriteShard(dir, m, "val", 0, val, paths));
    m.val.push_back(s);
  }
  m.complete = true;
  return WriteManifest(dir, m);
}

}  // namespace

absl::Status WriteTokenDataset(const std::string& dir, const Tokenizer& tok,
                               absl::Span<const int32_t> train, absl::Span<const int32_t> val,
                               int64_t shard_tokens, const std::vector<SourceInfo>& sources) {
  Manifest m;
  m.tokenizer = tok.name();
  m.fingerprint = tok.Fingerprint();
  m.vocab_size = tok.vocab_size();
  m.eos_id = tok.eos_id();
  m.sources = sources;
  return WriteDatasetImpl(dir, std::move(m), &tok, train, val, shard_tokens);
}

absl::Status WriteTokenDataset(const std::string& dir, const Manifest& meta,
                               absl::Span<const int32_t> train, absl::Span<const int32_t> val,
                               int64_t shard_tokens) {
  Manifest m = meta;
  m.train.clear();
  m.val.clear();
  return WriteDatasetImpl(dir, std::move(m), nullptr, train, val, shard_tokens);
}

size_t ValCut(const std::string& text, double val_fraction) {
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
  return cut;
}

SplitTokens TokenizeAndSplit(const Tokenizer& tok, const std::string& text, double val_fraction) {
  const size_t cut = ValCut(text, val_fraction);
  SplitTokens out;
  out.train = tok.Encode(absl::string_view(text).substr(0, cut));
  if (cut < text.size()) out.val = tok.Encode(absl::string_view(text).substr(cut));
  return out;
}

// ---------------------------------------------------------------------------------------------
// TokenDataset

struct TokenDataset::Impl {
  std::string dir, split;
  Manifest manifest;
  std::vector<int64_t> starts;  // starts[i]: stream offset of shard i; back() = size
  std::vector<int32_t> resident;
  bool is_resident = false;
  std::vector<H5File> files;  // lazy mode: open shard files
  mutable std::mutex mu;      // HDF5 is not thread-safe
};

TokenDataset::TokenDataset(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TokenDataset::TokenDataset(TokenDataset&&) noexcept = default;
TokenDataset& TokenDataset::operator=(TokenDataset&&) noexcept = default;
TokenDataset::~TokenDataset() = default;

int64_t TokenDataset::size() const { return impl_->starts.back(); }
bool TokenDataset::resident() const { return impl_->is_resident; }
const Manifest& TokenDataset::manifest() const { return impl_->manifest; }
const std::string& TokenDataset::dir() const { return impl_->dir; }

absl::StatusOr<TokenDataset> TokenDataset::Open(const std::string& dir, const std::string& split,
                                                const OpenOptions& opt) {
  if (split != "train" && split != "val") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown split '", split, "'; use \"train\" or \"val\""));
  }
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->split = split;
  ST_ASSIGN_OR_RETURN(impl->manifest, ReadManifest(dir));
  const Manifest& m = impl->manifest;
  if (!m.complete) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir,
        " is incomplete (its preparation was interrupted); re-run the same st-data prepare "
        "command to finish it"));
  }
  const std::vector<ShardInfo>& shards = split == "val" ? m.val : m.train;
  impl->starts.push_back(0);
  for (const ShardInfo& s : shards) impl->starts.push_back(impl->starts.back() + s.tokens);
  const int64_t total = impl->starts.back();
  impl->is_resident = total * static_cast<int64_t>(sizeof(int32_t)) < opt.max_resident_bytes;
  if (impl->is_resident) impl->resident.resize(static_cast<size_t>(total));
  const std::string fix = "; re-create the dataset with st-data prepare --overwrite";
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string path = Join(dir, shards[i].file);
    if (!IsFile(path)) {
      return absl::NotFoundError(
          absl::StrCat(path, ": shard listed in the manifest is missing", fix));
    }
    absl::StatusOr<H5File> f = H5File::Open(path);
    if (!f.ok()) {
      return absl::Status(f.status().code(),
                          absl::StrCat(f.status().message(), " (corrupt shard?)", fix));
    }
    absl::StatusOr<std::string> format = f->ReadStringAttr("/", "format");
    absl::StatusOr<std::string> fp = f->ReadStringAttr("/", "fingerprint");
    absl::StatusOr<int64_t> vocab = f->ReadIntAttr("/", "vocab_size");
    if (!format.ok() || *format != kShardFormat || !fp.ok() || *fp != m.fingerprint ||
        !vocab.ok() || *vocab != m.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(path,
                       ": not a shard of this dataset (format, tokenizer fingerprint or vocab_size "
                       "differ from the manifest)",
                       fix));
    }
    absl::StatusOr<H5DatasetInfo> info = f->Info("/tokens");
    if (!info.ok() || info->shape.size() != 1 || info->shape[0] != shards[i].tokens ||
        (info->type != H5Type::kU32 && info->type != H5Type::kU16)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": /tokens is missing, not 1-D uint32, or its length differs from the manifest's ",
          shards[i].tokens, " (truncated or corrupt shard)", fix));
    }
    if (impl->is_resident) {
      int32_t* dst = impl->resident.data() + impl->starts[i];
      absl::Status s = f->ReadDataset("/tokens", H5Type::kI32, dst,
                                      static_cast<size_t>(shards[i].tokens) * sizeof(int32_t));
      if (!s.ok()) return absl::DataLossError(absl::StrCat(s.message(), fix));
      absl::Status ids =
          CheckIds(absl::MakeConstSpan(dst, shards[i].tokens), m.vocab_size, path + ": /tokens");
      if (!ids.ok()) return absl::DataLossError(absl::StrCat(ids.message(), fix));
    } else {
      impl->files.push_back(std::move(*f));
    }
  }
  return TokenDataset(std::move(impl));
}

absl::Status TokenDataset::Read(int64_t offset, int64_t count, int32_t* out) const {
  const Impl& d = *impl_;
  if (offset < 0 || count < 0 || offset + count > size()) {
    return absl::OutOfRangeError(absl::StrCat(d.dir, " (", d.split, "): tokens [", offset, ", ",
                                              offset + count, ") are outside [0, ", size(), ")"));
  }
  if (d.is_resident) {
    std::memcpy(out, d.resident.data() + offset, static_cast<size_t>(count) * sizeof(int32_t));
    return absl::OkStatus();
  }
  std::lock_guard<std::mutex> lock(d.mu);
  // First shard whose end is past offset.
  size_t i = std::upper_bound(d.starts.begin(), d.starts.end(), offset) - d.starts.begin() - 1;
  int64_t done = 0;
  while (done < count) {
    const int64_t local = offset + done - d.starts[i];
    const int64_t n = std::min(count - done, d.starts[i + 1] - d.starts[i] - local);
    if (n > 0) {
      absl::Status s = d.files[i].ReadSlab1D("/tokens", H5Type::kI32, local, n, out + done);
      if (!s.ok()) return absl::DataLossError(absl::StrCat(s.message(), " (corrupt shard?)"));
      ST_RETURN_IF_ERROR(CheckIds(absl::MakeConstSpan(out + done, n), d.manifest.vocab_size,
                                  d.files[i].path() + ": /tokens", local));
      done += n;
    }
    ++i;
  }
  return absl::OkStatus();
}

int64_t TokenDataset::NumWindows(int seq_len) const {
  ST_CHECK(seq_len > 0) << "seq_len=" << seq_len;
  if (size() < static_cast<int64_t>(seq_len) + 1) return 0;
  return (size() - 1) / seq_len;
}

absl::Status TokenDataset::ReadWindow(int seq_len, int64_t i, int32_t* out) const {
  if (i < 0 || i >= NumWindows(seq_len)) {
    return absl::OutOfRangeError(
        absl::StrCat("window ", i, " of ", NumWindows(seq_len), " (seq_len ", seq_len, ")"));
  }
  return Read(i * seq_len, static_cast<int64_t>(seq_len) + 1, out);
}

// ---------------------------------------------------------------------------------------------
// DataLoader

absl::StatusOr<DataLoader> DataLoader::Create(const TokenDataset* data, int seq_len, int batch_size,
                                              uint64_t seed, int rank, int world) {
  ST_CHECK(data != nullptr) << "DataLoader needs a dataset";
  if (seq_len <= 0 || batch_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("seq_len and batch_size must be positive, got ",
                                                   seq_len, " and ", batch_size));
  }
  if (world <= 0 || rank < 0 || rank >= world) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " is not in a world of size ", world));
  }
  if (data->size() < static_cast<int64_t>(seq_len) + 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the dataset holds ", data->size(), " tokens, fewer than seq_len + 1 = ",
        static_cast<int64_t>(seq_len) + 1, "; use a shorter seq_len or a bigger corpus"));
  }
  DataLoader s;
  s.data_ = data;
  s.seq_len_ = seq_len;
  s.batch_size_ = batch_size;
  s.num_windows_ = data->NumWindows(seq_len);
  if (s.num_windows_ < world) {
    return absl::FailedPreconditionError(
        absl::StrCat("the dataset has ", s.num_windows_, " windows of seq_len ", seq_len,
                     ", fewer than the ", world, " data-parallel ranks"));
  }
  s.state_.seed = seed;
  s.state_.rank = rank;
  s.state_.world = world;
  s.Shuffle();
  return s;
}

void DataLoader::Shuffle() {
  order_.resize(static_cast<size_t>(num_windows_));
  for (int64_t i = 0; i < num_windows_; ++i) order_[i] = i;
  SplitMix64 rng(state_.seed ^ (static_cast<uint64_t>(state_.epoch) * SplitMix64::kGolden));
  // Fisher-Yates from the back: position i swaps with a uniform j in [0, i].
  for (int64_t i = num_windows_ - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng.Below(static_cast<uint64_t>(i) + 1));
    std::swap(order_[i], order_[j]);
  }
}

int64_t DataLoader::NextWindow() {
  if (state_.cursor + state_.world > num_windows_) {
    ++state_.epoch;
    state_.cursor = 0;
    Shuffle();
  }
  const int64_t w = order_[state_.cursor + state_.rank];
  state_.cursor += state_.world;
  return w;
}

absl::Status DataLoader::Next(int32_t* out) {
  const int64_t len = static_cast<int64_t>(seq_len_) + 1;
  for (int b = 0; b < batch_size_; ++b) {
    ST_RETURN_IF_ERROR(data_->Read(NextWindow() * seq_len_, len, out + b * len));
  }
  return absl::OkStatus();
}

absl::Status DataLoader::Restore(const State& s) {
  if (s.epoch < 0 || s.cursor < 0 || s.cursor > num_windows_) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot restore the data position (epoch ", s.epoch, ", cursor ", s.cursor,
                     "): an epoch has ", num_windows_,
                     " windows; was the checkpoint made with another dataset or seq_len?"));
  }
  state_.seed = s.seed;
  state_.epoch = s.epoch;
  state_.cursor = s.cursor;
  Shuffle();
  return absl::OkStatus();
}

}  // namespace st
