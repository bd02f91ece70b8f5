// Input listing, document streaming (text / JSONL) and the resumable, multi-threaded
// PrepareDataset that writes token shard directories.
#include "data/prepare.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "data/hdf5.h"
#include "model/check.h"
#include "model/file_io.h"
#include "nlohmann/json.hpp"

namespace st {

namespace fs = std::filesystem;
using json = nlohmann::json;

absl::StatusOr<std::vector<InputFile>> ListInputs(const std::vector<std::string>& inputs) {
  std::vector<InputFile> out;
  auto add_file = [&](const fs::path& p) -> absl::Status {
    std::error_code ec;
    const int64_t size = static_cast<int64_t>(fs::file_size(p, ec));
    if (ec) {
      return absl::NotFoundError(
          absl::StrCat("cannot read input '", p.string(), "': ", ec.message()));
    }
    if (::access(p.c_str(), R_OK) != 0) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot read input '", p.string(), "': ", std::strerror(errno)));
    }
    out.push_back({p.string(), p.extension() == ".jsonl", size});
    return absl::OkStatus();
  };
  if (inputs.empty()) return absl::InvalidArgumentError("no input given (--input PATH[,PATH...])");
  for (const std::string& in : inputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(in, ec);
    if (ec || !fs::exists(st)) {
      return absl::NotFoundError(
          absl::StrCat("input '", in, "' does not exist; check the path given to --input"));
    }
    if (fs::is_directory(st)) {
      std::vector<fs::path> found;
      fs::recursive_directory_iterator it(in, fs::directory_options::follow_directory_symlink, ec);
      if (ec) {
        return absl::PermissionDeniedError(
            absl::StrCat("cannot list input directory '", in, "': ", ec.message()));
      }
      for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (ec) {
          return absl::PermissionDeniedError(
              absl::StrCat("cannot list input directory '", in, "': ", ec.message()));
        }
        const fs::path& p = it->path();
        if (it->is_regular_file() && (p.extension() == ".txt" || p.extension() == ".jsonl")) {
          found.push_back(p);
        }
      }
      std::sort(found.begin(), found.end());
      if (found.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input directory '", in, "' holds no *.txt or *.jsonl files (searched recursively)"));
      }
      for (const fs::path& p : found) ST_RETURN_IF_ERROR(add_file(p));
    } else {
      ST_RETURN_IF_ERROR(add_file(in));
    }
  }
  return out;
}

DocumentReader::DocumentReader(std::vector<InputFile> files) : files_(std::move(files)) {}

absl::StatusOr<bool> DocumentReader::Next(Document* doc) {
  while (file_ < files_.size()) {
    const InputFile& f = files_[file_];
    if (!f.jsonl) {
      ST_ASSIGN_OR_RETURN(doc->text, ReadFile(f.path, "input"));
      doc->source = static_cast<int>(file_);
      bytes_read_ += static_cast<int64_t>(doc->text.size());
      ++file_;
      if (doc->text.empty()) continue;
      return true;
    }
    if (jsonl_ == nullptr) {
      jsonl_ = std::make_unique<std::ifstream>(f.path, std::ios::binary);
      line_ = 0;
      if (!*jsonl_) {
        jsonl_.reset();
        return absl::NotFoundError(
            absl::StrCat("cannot read input '", f.path, "': ", std::strerror(errno)));
      }
    }
    std::string line;
    while (std::getline(*jsonl_, line)) {
      ++line_;
      bytes_read_ += static_cast<int64_t>(line.size()) + 1;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank line
      json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) {
        return absl::InvalidArgumentError(
            absl::StrCat(f.path, ":", line_,
                         ": invalid JSON; a JSONL input needs one JSON object a line, "
                         "like {\"text\": \"...\"}"));
      }
      auto it = j.is_object() ? j.find("text") : j.end();
      if (!j.is_object() || it == j.end() || !it->is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(f.path, ":", line_, ": no \"text\" string field; each line must be ",
                         "an object like {\"text\": \"...\"}"));
      }
      doc->text = it->get<std::string>();
      doc->source = static_cast<int>(file_);
      if (doc->text.empty()) continue;
      return true;
    }
    if (jsonl_->bad()) return absl::DataLossError(absl::StrCat("error reading '", f.path, "'"));
    jsonl_.reset();
    ++file_;
  }
  return false;
}

bool IsValDocument(const std::string& text, double val_fraction) {
  if (val_fraction <= 0) return false;
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  h ^= h >> 29;  // mix the low-entropy top bits of short texts
  h *= 0xBF58476D1CE4E5B9ULL;
  h ^= h >> 32;
  return static_cast<double>(h >> 11) * 0x1.0p-53 < val_fraction;
}

namespace {

// A temp file of a write: AtomicFileWriter's "<name>.tmp.<pid>", or "<name>.tmp" (older builds).
bool IsTempFile(const std::string& name) {
  const size_t tmp = name.rfind(".tmp");
  if (tmp == std::string::npos) return false;
  if (tmp + 4 == name.size()) return true;
  return name[tmp + 4] == '.' && tmp + 5 < name.size() &&
         std::all_of(name.begin() + tmp + 5, name.end(),
                     [](char c) { return c >= '0' && c <= '9'; });
}

bool IsOurFile(const std::string& name) {
  return name == "manifest.json" || name == "tokenizer.json" || IsTempFile(name) ||
         ((absl::StartsWith(name, "train-") || absl::StartsWith(name, "val-")) &&
          absl::EndsWith(name, ".h5"));
}

// Removes the dataset files of `dir` (manifest first, so a crash never leaves a complete
// manifest naming deleted shards). Other files are left alone.
absl::Status ClearDataset(const std::string& dir, bool keep_train_below, int keep_train) {
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir, ec)) names.push_back(e.path().filename());
  if (ec) return absl::InternalError(absl::StrCat("cannot list '", dir, "': ", ec.message()));
  if (!keep_train_below) {
    fs::remove(fs::path(dir) / "manifest.json", ec);
    fs::remove(fs::path(dir) / "tokenizer.json", ec);
  }
  for (const std::string& n : names) {
    if (!IsOurFile(n) || n == "manifest.json" || n == "tokenizer.json") continue;
    if (keep_train_below && absl::StartsWith(n, "train-") && absl::EndsWith(n, ".h5")) {
      int idx = -1;
      if (std::sscanf(n.c_str(), "train-%d.h5", &idx) == 1 && idx < keep_train) continue;
    }
    fs::remove(fs::path(dir) / n, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot remove '", n, "': ", ec.message()));
  }
  return absl::OkStatus();
}

// Whether shard `s` of `dir` is intact (opens, right length and fingerprint).
bool ShardIntact(const std::string& dir, const ShardInfo& s, const Manifest& m) {
  absl::StatusOr<H5File> f = H5File::Open((fs::path(dir) / s.file).string());
  if (!f.ok()) return false;
  absl::StatusOr<std::string> fp = f->ReadStringAttr("/", "fingerprint");
  absl::StatusOr<H5DatasetInfo> info = f->Info("/tokens");
  return fp.ok() && *fp == m.fingerprint && info.ok() && info->shape.size() == 1 &&
         info->shape[0] == s.tokens;
}

class Progress {
 public:
  Progress(bool on, int64_t total) : on_(on), total_(total), tty_(::isatty(2)) {}
  void Update(int64_t bytes, int64_t tokens, bool force = false) {
    if (!on_) return;
    const auto now = std::chrono::steady_clock::now();
    if (!force && now - last_ < std::chrono::seconds(1)) return;
    last_ = now;
    const double s = std::chrono::duration<double>(now - start_).count();
    const double rate = s > 0 ? bytes / s : 0;
    std::string eta = "?";
    if (total_ > 0 && rate > 0) eta = absl::StrFormat("%.0fs", (total_ - bytes) / rate);
    std::fprintf(stderr, "%sprepare: %.1f/%.1f MB (%.0f%%), %.1f MB/s, %lld tokens, ETA %s%s",
                 tty_ ? "\r" : "", bytes / 1e6, total_ / 1e6,
                 total_ > 0 ? 100.0 * bytes / total_ : 100.0, rate / 1e6,
                 static_cast<long long>(tokens), eta.c_str(), tty_ ? "   " : "\n");
    std::fflush(stderr);
  }
  void Done(int64_t bytes, int64_t tokens) {
    if (!on_) return;
    Update(bytes, tokens, true);
    if (tty_) std::fprintf(stderr, "\n");
  }

 private:
  bool on_;
  int64_t total_;
  bool tty_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_{};
};

// Encodes texts[i] for every i with want[i], on `threads` threads (results in order).
void EncodeBatch(const Tokenizer& tok, const TokenizerPolicy& policy,
                 const std::vector<Document>& docs, const std::vector<bool>& want, int threads,
                 std::vector<std::vector<int32_t>>* out) {
  out->assign(docs.size(), {});
  const int n = static_cast<int>(docs.size());
  threads = std::max(1, std::min(threads, n));
  if (threads == 1) {
    for (int i = 0; i < n; ++i)
      if (want[i]) (*out)[i] = policy.Encode(tok, docs[i].text);
    return;
  }
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = t; i < n; i += threads)
        if (want[i]) (*out)[i] = policy.Encode(tok, docs[i].text);
    });
  }
  for (std::thread& th : pool) th.join();
}

absl::Status CheckPrepareOptions(const Tokenizer& tok, const PrepareOptions& opt) {
  if (tok.eos_id() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the tokenizer has no end-of-text token (<|endoftext|>), which separates documents; "
        "use a tokenizer.json that defines one"));
  }
  if (!(opt.val_fraction >= 0 && opt.val_fraction <= 0.5)) {
    return absl::InvalidArgumentError(
        absl::StrCat("val_fraction must be in [0, 0.5], got ", opt.val_fraction));
  }
  if (opt.shard_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard_tokens must be positive, got ", opt.shard_tokens));
  }
  if (opt.output.empty()) return absl::InvalidArgumentError("no output directory (--output DIR)");
  return absl::OkStatus();
}

// The manifest of a new (incomplete) dataset: tokenizer, sources and the settings a resume
// must match.
Manifest NewManifest(const Tokenizer& tok, const PrepareOptions& opt,
                     const std::vector<InputFile>& files) {
  Manifest m;
  m.tokenizer = tok.name();
  m.fingerprint = tok.Fingerprint();
  m.vocab_size = tok.vocab_size();
  m.eos_id = tok.eos_id();
  json files_json = json::array();
  for (const InputFile& f : files) {
    m.sources.push_back({f.path, f.bytes});
    files_json.push_back({f.path, f.bytes});
  }
  json prepare = {{"val_fraction", opt.val_fraction},
                  {"shard_tokens", opt.shard_tokens},
                  {"inputs", files_json}};
  // Recorded only where set, so datasets prepared before the policy existed still resume.
  if (opt.policy.add_bos_token) prepare["add_bos_token_id"] = opt.policy.bos_token_id;
  if (opt.policy.add_eos_token) prepare["add_eos_token_id"] = opt.policy.eos_token_id;
  m.prepare_json = prepare.dump();
  return m;
}

// Where a preparation starts: documents [0, docs) are in the train shards kept in the manifest.
struct ResumePoint {
  bool dir_existed = false;
  int64_t docs = 0;
  int shards = 0;
};

// An existing output directory: cleared (--overwrite), refused (a complete dataset, files
// without a manifest, an interrupted preparation with other settings), or resumed: the intact
// prefix of its train shards is kept in *m.
absl::Status ClaimExistingDirectory(const PrepareOptions& opt, Manifest* m, ResumePoint* resume) {
  const std::string& dir = opt.output;
  std::error_code ec;
  const bool has_manifest = fs::exists(fs::path(dir) / "manifest.json", ec);
  absl::StatusOr<Manifest> old =
      has_manifest ? ReadManifest(dir) : absl::StatusOr<Manifest>(absl::NotFoundError(""));
  if (opt.overwrite) return ClearDataset(dir, false, 0);
  if (has_manifest && !old.ok()) {
    return absl::Status(old.status().code(),
                        absl::StrCat(old.status().message(), " (or pass --overwrite)"));
  }
  if (has_manifest && old->complete) {
    return absl::AlreadyExistsError(
        absl::StrCat(dir, " already holds a complete dataset (", old->Tokens("train"), " train + ",
                     old->Tokens("val"),
                     " val tokens); pass --overwrite to replace it, or choose another "
                     "--output"));
  }
  if (!has_manifest) {
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (IsOurFile(e.path().filename())) {
        return absl::AlreadyExistsError(absl::StrCat(
            dir, " holds dataset files but no manifest.json; pass --overwrite to replace them"));
      }
    }
    return absl::OkStatus();
  }
  if (old->fingerprint != m->fingerprint || old->prepare_json != m->prepare_json) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir,
                     " holds an interrupted preparation made with another tokenizer, other inputs "
                     "or other settings; re-run it with the same arguments to resume, or pass "
                     "--overwrite to start over"));
  }
  for (const ShardInfo& s : old->train) {
    if (!ShardIntact(dir, s, *m) || s.docs_end < 0) break;
    m->train.push_back(s);
  }
  if (!m->train.empty()) resume->docs = m->train.back().docs_end;
  resume->shards = static_cast<int>(m->train.size());
  return ClearDataset(dir, true, static_cast<int>(m->train.size()));
}

// Refuses, clears or resumes what `opt.output` holds (into *m, the new manifest), then writes
// the tokenizer and the incomplete manifest.
absl::StatusOr<ResumePoint> ClaimOutput(const Tokenizer& tok, const PrepareOptions& opt,
                                        Manifest* m) {
  const std::string& dir = opt.output;
  ResumePoint resume;
  std::error_code ec;
  resume.dir_existed = fs::exists(dir, ec);
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    return absl::AlreadyExistsError(
        absl::StrCat("--output '", dir, "' exists and is not a directory; choose another path"));
  }
  if (fs::is_directory(dir, ec)) ST_RETURN_IF_ERROR(ClaimExistingDirectory(opt, m, &resume));
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create --output directory '", dir, "': ", ec.message()));
  }
  ST_RETURN_IF_ERROR(WriteDatasetTokenizer(dir, tok));
  ST_RETURN_IF_ERROR(WriteManifest(dir, *m));
  return resume;
}

// One preparation in a claimed directory: documents are encoded in batches; train ids go to
// shards as they fill (each closed at a document end and recorded in the manifest as a resume
// point); val ids are kept until the end.
class DatasetBuilder {
 public:
  DatasetBuilder(const Tokenizer& tok, const PrepareOptions& opt, std::vector<InputFile> files,
                 Manifest m, int64_t resume_docs)
      : tok_(tok),
        opt_(opt),
        dir_(opt.output),
        eos_(tok.eos_id()),
        threads_(opt.threads > 0
                     ? opt.threads
                     : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))),
        m_(std::move(m)),
        resume_docs_(resume_docs),
        progress_(opt.progress, TotalBytes(files)),
        reader_(std::move(files)),
        train_tokens_written_(m_.Tokens("train")) {}

  // Counts the ids of the train shards kept from an interrupted run.
  absl::Status CountKeptShards();
  // Encodes every document but the last, which it returns (null when there is none).
  absl::StatusOr<std::unique_ptr<Document>> EncodeAllButLast();
  // The last document: its split, or a line-boundary tail split when a split would be empty.
  void AddLast(const Document& last);
  // Closes the last train shard, writes the val shards and the complete manifest.
  absl::StatusOr<PrepareResult> Finish();

 private:
  static int64_t TotalBytes(const std::vector<InputFile>& files) {
    int64_t total = 0;
    for (const InputFile& f : files) total += f.bytes;
    return total;
  }
  std::vector<std::string> PathsOf(const std::set<int>& src) const {
    std::vector<std::string> p;
    for (int i : src) p.push_back(reader_.files()[i].path);
    return p;
  }
  void Append(std::vector<int32_t>* buf, std::set<int>* src, const std::vector<int32_t>& ids,
              int source) {
    buf->insert(buf->end(), ids.begin(), ids.end());
    if (ids.empty() || ids.back() != eos_) buf->push_back(eos_);  // add_eos may have put it there
    src->insert(source);
  }
  absl::StatusOr<bool> ReadBatch(std::unique_ptr<Document>* carry, std::vector<Document>* batch);
  absl::Status AddBatch(const std::vector<Document>& batch);
  absl::Status FlushTrain(int64_t docs_end);

  const Tokenizer& tok_;
  const PrepareOptions& opt_;
  const std::string& dir_;
  const int eos_;
  const int threads_;
  Manifest m_;
  const int64_t resume_docs_;
  Progress progress_;
  DocumentReader reader_;
  std::vector<int64_t> train_counts_;
  std::vector<int32_t> train_buf_, val_buf_;
  std::set<int> train_src_, val_src_;
  std::vector<std::vector<int32_t>> encoded_;  // AddBatch's, kept to reuse its storage
  int64_t train_tokens_written_;
  int64_t doc_bytes_ = 0;  // text bytes of all documents
  int64_t next_doc_ = 0;   // stream index of the next document read
};

absl::Status DatasetBuilder::CountKeptShards() {
  train_counts_.assign(static_cast<size_t>(m_.vocab_size), 0);
  for (const ShardInfo& s : m_.train) {
    std::vector<int32_t> ids(static_cast<size_t>(s.tokens));
    absl::StatusOr<H5File> f = H5File::Open((fs::path(dir_) / s.file).string());
    if (!f.ok()) return f.status();
    ST_RETURN_IF_ERROR(f->ReadDataset("/tokens", H5Type::kI32, ids.data(), ids.size() * 4));
    ST_RETURN_IF_ERROR(f->Close());
    for (int32_t id : ids) {
      if (id < 0 || id >= m_.vocab_size) {
        return absl::DataLossError(absl::StrCat(s.file, " holds id ", id,
                                                " outside the "
                                                "vocabulary; pass --overwrite to start over"));
      }
      ++train_counts_[static_cast<size_t>(id)];
    }
  }
  return absl::OkStatus();
}

absl::Status DatasetBuilder::FlushTrain(int64_t docs_end) {
  if (train_buf_.empty()) return absl::OkStatus();
  for (int32_t id : train_buf_) ++train_counts_[static_cast<size_t>(id)];
  ST_ASSIGN_OR_RETURN(ShardInfo s, WriteShard(dir_, m_, "train", static_cast<int>(m_.train.size()),
                                              train_buf_, PathsOf(train_src_)));
  s.docs_end = docs_end;
  m_.train.push_back(s);
  train_tokens_written_ += s.tokens;
  train_buf_.clear();
  train_src_.clear();
  return WriteManifest(dir_, m_);  // still incomplete: the shard is now part of the resume point
}

// Reads a batch: the carried document, then documents up to 1024 or 16 MiB; false once the
// input is exhausted.
absl::StatusOr<bool> DatasetBuilder::ReadBatch(std::unique_ptr<Document>* carry,
                                               std::vector<Document>* batch) {
  batch->clear();
  int64_t batch_bytes = 0;
  if (*carry != nullptr) {
    batch_bytes += static_cast<int64_t>((*carry)->text.size());
    batch->push_back(std::move(**carry));
    carry->reset();
  }
  while (batch->size() < 1024 && batch_bytes < (int64_t{16} << 20)) {
    Document d;
    ST_ASSIGN_OR_RETURN(bool got, reader_.Next(&d));
    if (!got) return false;
    batch_bytes += static_cast<int64_t>(d.text.size());
    batch->push_back(std::move(d));
  }
  return true;
}

// Encodes the batch's documents (those already in kept shards only when they are val, to
// rebuild the val buffer) and adds them to their splits.
absl::Status DatasetBuilder::AddBatch(const std::vector<Document>& batch) {
  std::vector<bool> want(batch.size(), true), is_val(batch.size(), false);
  for (size_t i = 0; i < batch.size(); ++i) {
    is_val[i] = IsValDocument(batch[i].text, opt_.val_fraction);
    if (next_doc_ + static_cast<int64_t>(i) < resume_docs_) want[i] = is_val[i];
  }
  EncodeBatch(tok_, opt_.policy, batch, want, threads_, &encoded_);
  for (size_t i = 0; i < batch.size(); ++i, ++next_doc_) {
    doc_bytes_ += static_cast<int64_t>(batch[i].text.size());
    if (is_val[i]) {
      Append(&val_buf_, &val_src_, encoded_[i], batch[i].source);
    } else if (next_doc_ >= resume_docs_) {
      Append(&train_buf_, &train_src_, encoded_[i], batch[i].source);
      if (static_cast<int64_t>(train_buf_.size()) >= opt_.shard_tokens) {
        ST_RETURN_IF_ERROR(FlushTrain(next_doc_ + 1));
      }
    }
  }
  return absl::OkStatus();
}

// The last document of each batch is carried into the next batch unencoded, so the final
// document of the stream is never encoded whole: at the end it may be split into train and
// val parts instead.
absl::StatusOr<std::unique_ptr<Document>> DatasetBuilder::EncodeAllButLast() {
  std::unique_ptr<Document> carry;
  std::vector<Document> batch;
  bool more = true;
  while (more) {
    ST_ASSIGN_OR_RETURN(more, ReadBatch(&carry, &batch));
    if (batch.empty()) break;
    carry = std::make_unique<Document>(std::move(batch.back()));
    batch.pop_back();
    ST_RETURN_IF_ERROR(AddBatch(batch));
    progress_.Update(
        reader_.bytes_read(),
        train_tokens_written_ + static_cast<int64_t>(train_buf_.size() + val_buf_.size()));
  }
  return carry;
}

// (The last document is already in the train shards when the interrupted run got as far as
// their last one.)
void DatasetBuilder::AddLast(const Document& last) {
  doc_bytes_ += static_cast<int64_t>(last.text.size());
  const bool in_shards = next_doc_ < resume_docs_;
  const bool last_val = IsValDocument(last.text, opt_.val_fraction);
  const bool train_empty = train_tokens_written_ == 0 && train_buf_.empty();
  const bool val_empty = val_buf_.empty();
  const TokenizerPolicy& policy = opt_.policy;
  if (opt_.val_fraction > 0 && ((!last_val && val_empty) || (last_val && train_empty))) {
    const double frac =
        std::min(0.5, opt_.val_fraction * static_cast<double>(doc_bytes_) / last.text.size());
    const size_t cut = ValCut(last.text, frac);
    absl::string_view text(last.text);
    if (!in_shards) {
      Append(&train_buf_, &train_src_, policy.Encode(tok_, text.substr(0, cut)), last.source);
    }
    if (cut < text.size()) {
      Append(&val_buf_, &val_src_, policy.Encode(tok_, text.substr(cut)), last.source);
    }
  } else if (last_val) {
    Append(&val_buf_, &val_src_, policy.Encode(tok_, last.text), last.source);
  } else if (!in_shards) {
    Append(&train_buf_, &train_src_, policy.Encode(tok_, last.text), last.source);
  }
  ++next_doc_;
}

absl::StatusOr<PrepareResult> DatasetBuilder::Finish() {
  ST_RETURN_IF_ERROR(FlushTrain(next_doc_));
  if (m_.train.empty()) {
    return absl::InvalidArgumentError(
        "every document was held out for validation; lower --val_fraction");
  }
  for (int64_t off = 0, i = 0; off < static_cast<int64_t>(val_buf_.size());
       off += opt_.shard_tokens, ++i) {
    const int64_t n = std::min<int64_t>(opt_.shard_tokens, val_buf_.size() - off);
    ST_ASSIGN_OR_RETURN(
        ShardInfo s, WriteShard(dir_, m_, "val", static_cast<int>(i),
                                absl::MakeConstSpan(val_buf_).subspan(off, n), PathsOf(val_src_)));
    m_.val.push_back(s);
  }
  m_.complete = true;
  ST_RETURN_IF_ERROR(WriteManifest(dir_, m_));
  progress_.Done(reader_.bytes_read(), m_.Tokens("train") + m_.Tokens("val"));
  PrepareResult result;
  result.manifest = m_;
  result.documents = next_doc_;
  result.bytes = reader_.bytes_read();
  result.train_counts = std::move(train_counts_);
  return result;
}

}  // namespace

absl::StatusOr<PrepareResult> PrepareDataset(const Tokenizer& tok, const PrepareOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  ST_RETURN_IF_ERROR(CheckPrepareOptions(tok, opt));
  ST_ASSIGN_OR_RETURN(std::vector<InputFile> files, ListInputs(opt.inputs));
  Manifest m = NewManifest(tok, opt, files);
  ST_ASSIGN_OR_RETURN(const ResumePoint resume, ClaimOutput(tok, opt, &m));
  DatasetBuilder builder(tok, opt, std::move(files), std::move(m), resume.docs);
  ST_RETURN_IF_ERROR(builder.CountKeptShards());
  ST_ASSIGN_OR_RETURN(std::unique_ptr<Document> last, builder.EncodeAllButLast());
  if (last == nullptr) {
    // Nothing was written but the incomplete manifest: remove what this run made, so that the
    // directory does not look like an interrupted preparation (re-running could not finish it).
    ST_RETURN_IF_ERROR(ClearDataset(opt.output, false, 0));
    std::error_code ec;
    if (!resume.dir_existed) fs::remove(opt.output, ec);
    return absl::InvalidArgumentError(
        "the input holds no text (empty files or JSONL without non-empty \"text\"); nothing to "
        "tokenize");
  }
  builder.AddLast(*last);
  ST_ASSIGN_OR_RETURN(PrepareResult result, builder.Finish());
  result.resumed_shards = resume.shards;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace st
