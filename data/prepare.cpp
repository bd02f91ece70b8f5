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
      std::ifstream in(f.path, std::ios::binary);
      if (!in) {
        return absl::NotFoundError(
            absl::StrCat("cannot read input '", f.path, "': ", std::strerror(errno)));
      }
      std::ostringstream ss;
      ss << in.rdbuf();
      if (in.bad()) return absl::DataLossError(absl::StrCat("error reading '", f.path, "'"));
      doc->text = ss.str();
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

bool IsOurFile(const std::string& name) {
  return name == "manifest.json" || name == "tokenizer.json" || absl::EndsWith(name, ".tmp") ||
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

}  // namespace

absl::StatusOr<PrepareResult> PrepareDataset(const Tokenizer& tok, const PrepareOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  const int eos = tok.eos_id();
  if (eos < 0) {
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
  ST_ASSIGN_OR_RETURN(std::vector<InputFile> files, ListInputs(opt.inputs));
  int64_t total_bytes = 0;
  Manifest m;
  m.tokenizer = tok.name();
  m.fingerprint = tok.Fingerprint();
  m.vocab_size = tok.vocab_size();
  m.eos_id = eos;
  json files_json = json::array();
  for (const InputFile& f : files) {
    m.sources.push_back({f.path, f.bytes});
    total_bytes += f.bytes;
    files_json.push_back({f.path, f.bytes});
  }
  json prepare = {{"val_fraction", opt.val_fraction},
                  {"shard_tokens", opt.shard_tokens},
                  {"inputs", files_json}};
  // Recorded only where set, so datasets prepared before the policy existed still resume.
  if (opt.policy.add_bos_token) prepare["add_bos_token_id"] = opt.policy.bos_token_id;
  if (opt.policy.add_eos_token) prepare["add_eos_token_id"] = opt.policy.eos_token_id;
  m.prepare_json = prepare.dump();
  const std::string& dir = opt.output;
  PrepareResult result;

  // An existing directory: refuse, clear, or resume.
  int64_t resume_docs = 0;
  std::error_code ec;
  const bool dir_existed = fs::exists(dir, ec);
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    return absl::AlreadyExistsError(
        absl::StrCat("--output '", dir, "' exists and is not a directory; choose another path"));
  }
  if (fs::is_directory(dir, ec)) {
    const bool has_manifest = fs::exists(fs::path(dir) / "manifest.json", ec);
    absl::StatusOr<Manifest> old =
        has_manifest ? ReadManifest(dir) : absl::StatusOr<Manifest>(absl::NotFoundError(""));
    if (opt.overwrite) {
      ST_RETURN_IF_ERROR(ClearDataset(dir, false, 0));
    } else if (has_manifest && !old.ok()) {
      return absl::Status(old.status().code(),
                          absl::StrCat(old.status().message(), " (or pass --overwrite)"));
    } else if (has_manifest && old->complete) {
      return absl::AlreadyExistsError(
          absl::StrCat(dir, " already holds a complete dataset (", old->Tokens("train"),
                       " train + ", old->Tokens("val"),
                       " val tokens); pass --overwrite to replace it, or choose another "
                       "--output"));
    } else if (has_manifest) {
      if (old->fingerprint != m.fingerprint || old->prepare_json != m.prepare_json) {
        return absl::FailedPreconditionError(absl::StrCat(
            dir,
            " holds an interrupted preparation made with another tokenizer, other inputs "
            "or other settings; re-run it with the same arguments to resume, or pass "
            "--overwrite to start over"));
      }
      // Keep the intact prefix of train shards.
      for (const ShardInfo& s : old->train) {
        if (!ShardIntact(dir, s, m) || s.docs_end < 0) break;
        m.train.push_back(s);
      }
      if (!m.train.empty()) resume_docs = m.train.back().docs_end;
      result.resumed_shards = static_cast<int>(m.train.size());
      ST_RETURN_IF_ERROR(ClearDataset(dir, true, static_cast<int>(m.train.size())));
    } else {
      for (const auto& e : fs::directory_iterator(dir, ec)) {
        if (IsOurFile(e.path().filename())) {
          return absl::AlreadyExistsError(
              absl::StrCat(dir,
                           " holds dataset files but no manifest.json; pass --overwrite to replace "
                           "them"));
        }
      }
    }
  }
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create --output directory '", dir, "': ", ec.message()));
  }
  ST_RETURN_IF_ERROR(WriteDatasetTokenizer(dir, tok));
  ST_RETURN_IF_ERROR(WriteManifest(dir, m));

  const int threads = opt.threads > 0
                          ? opt.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  Progress progress(opt.progress, total_bytes);
  DocumentReader reader(files);
  std::vector<int32_t> train_buf, val_buf;
  std::set<int> train_src, val_src;
  int64_t train_tokens_written = m.Tokens("train");
  int64_t doc_bytes = 0;  // text bytes of all documents
  int64_t next_doc = 0;   // stream index of the next document read

  auto paths_of = [&](const std::set<int>& src) {
    std::vector<std::string> p;
    for (int i : src) p.push_back(files[i].path);
    return p;
  };
  result.train_counts.assign(static_cast<size_t>(m.vocab_size), 0);
  for (const ShardInfo& s : m.train) {  // kept shards of an interrupted run
    std::vector<int32_t> ids(static_cast<size_t>(s.tokens));
    absl::StatusOr<H5File> f = H5File::Open((fs::path(dir) / s.file).string());
    if (!f.ok()) return f.status();
    ST_RETURN_IF_ERROR(f->ReadDataset("/tokens", H5Type::kI32, ids.data(), ids.size() * 4));
    ST_RETURN_IF_ERROR(f->Close());
    for (int32_t id : ids) {
      if (id < 0 || id >= m.vocab_size) {
        return absl::DataLossError(absl::StrCat(s.file, " holds id ", id,
                                                " outside the "
                                                "vocabulary; pass --overwrite to start over"));
      }
      ++result.train_counts[static_cast<size_t>(id)];
    }
  }
  auto flush_train = [&](int64_t docs_end) -> absl::Status {
    if (train_buf.empty()) return absl::OkStatus();
    for (int32_t id : train_buf) ++result.train_counts[static_cast<size_t>(id)];
    ST_ASSIGN_OR_RETURN(ShardInfo s, WriteShard(dir, m, "train", static_cast<int>(m.train.size()),
                                                train_buf, paths_of(train_src)));
    s.docs_end = docs_end;
    m.train.push_back(s);
    train_tokens_written += s.tokens;
    train_buf.clear();
    train_src.clear();
    return WriteManifest(dir, m);  // still incomplete: the shard is now part of the resume point
  };
  auto append = [&](std::vector<int32_t>* buf, std::set<int>* src, const std::vector<int32_t>& ids,
                    int source) {
    buf->insert(buf->end(), ids.begin(), ids.end());
    if (ids.empty() || ids.back() != eos) buf->push_back(eos);  // add_eos may have put it there
    src->insert(source);
  };

  // The last document of each batch is carried into the next batch unencoded, so the final
  // document of the stream is never encoded whole: at the end it may be split into train and
  // val parts instead.
  std::unique_ptr<Document> carry;
  std::vector<Document> batch;
  std::vector<bool> want, is_val;
  std::vector<std::vector<int32_t>> encoded;
  bool more = true;
  while (more) {
    batch.clear();
    int64_t batch_bytes = 0;
    if (carry != nullptr) {
      batch_bytes += static_cast<int64_t>(carry->text.size());
      batch.push_back(std::move(*carry));
      carry.reset();
    }
    while (batch.size() < 1024 && batch_bytes < (int64_t{16} << 20)) {
      Document d;
      ST_ASSIGN_OR_RETURN(bool got, reader.Next(&d));
      if (!got) {
        more = false;
        break;
      }
      batch_bytes += static_cast<int64_t>(d.text.size());
      batch.push_back(std::move(d));
    }
    if (batch.empty()) break;
    carry = std::make_unique<Document>(std::move(batch.back()));
    batch.pop_back();
    // Documents already in kept shards are re-read only to rebuild the val buffer.
    want.assign(batch.size(), true);
    is_val.assign(batch.size(), false);
    for (size_t i = 0; i < batch.size(); ++i) {
      is_val[i] = IsValDocument(batch[i].text, opt.val_fraction);
      if (next_doc + static_cast<int64_t>(i) < resume_docs) want[i] = is_val[i];
    }
    EncodeBatch(tok, opt.policy, batch, want, threads, &encoded);
    for (size_t i = 0; i < batch.size(); ++i, ++next_doc) {
      doc_bytes += static_cast<int64_t>(batch[i].text.size());
      if (is_val[i]) {
        append(&val_buf, &val_src, encoded[i], batch[i].source);
      } else if (next_doc >= resume_docs) {
        append(&train_buf, &train_src, encoded[i], batch[i].source);
        if (static_cast<int64_t>(train_buf.size()) >= opt.shard_tokens) {
          ST_RETURN_IF_ERROR(flush_train(next_doc + 1));
        }
      }
    }
    progress.Update(reader.bytes_read(),
                    train_tokens_written + static_cast<int64_t>(train_buf.size() + val_buf.size()));
  }
  if (carry == nullptr) {
    // Nothing was written but the incomplete manifest: remove what this run made, so that the
    // directory does not look like an interrupted preparation (re-running could not finish it).
    ST_RETURN_IF_ERROR(ClearDataset(dir, false, 0));
    if (!dir_existed) fs::remove(dir, ec);
    return absl::InvalidArgumentError(
        "the input holds no text (empty files or JSONL without non-empty \"text\"); nothing to "
        "tokenize");
  }
  // The final document: its split, or a line-boundary tail split when a split would be empty.
  // (It is already in the train shards when the interrupted run got as far as their last one.)
  const Document& last = *carry;
  doc_bytes += static_cast<int64_t>(last.text.size());
  const bool in_shards = next_doc < resume_docs;
  const bool last_val = IsValDocument(last.text, opt.val_fraction);
  const bool train_empty = train_tokens_written == 0 && train_buf.empty();
  const bool val_empty = val_buf.empty();
  if (opt.val_fraction > 0 && ((!last_val && val_empty) || (last_val && train_empty))) {
    const double frac =
        std::min(0.5, opt.val_fraction * static_cast<double>(doc_bytes) / last.text.size());
    const size_t cut = ValCut(last.text, frac);
    absl::string_view text(last.text);
    if (!in_shards)
      append(&train_buf, &train_src, opt.policy.Encode(tok, text.substr(0, cut)), last.source);
    if (cut < text.size()) {
      append(&val_buf, &val_src, opt.policy.Encode(tok, text.substr(cut)), last.source);
    }
  } else if (last_val) {
    append(&val_buf, &val_src, opt.policy.Encode(tok, last.text), last.source);
  } else if (!in_shards) {
    append(&train_buf, &train_src, opt.policy.Encode(tok, last.text), last.source);
  }
  ++next_doc;
  ST_RETURN_IF_ERROR(flush_train(next_doc));
  if (m.train.empty()) {
    return absl::InvalidArgumentError(
        "every document was held out for validation; lower --val_fraction");
  }
  for (int64_t off = 0, i = 0; off < static_cast<int64_t>(val_buf.size());
       off += opt.shard_tokens, ++i) {
    const int64_t n = std::min<int64_t>(opt.shard_tokens, val_buf.size() - off);
    ST_ASSIGN_OR_RETURN(
        ShardInfo s, WriteShard(dir, m, "val", static_cast<int>(i),
                                absl::MakeConstSpan(val_buf).subspan(off, n), paths_of(val_src)));
    m.val.push_back(s);
  }
  m.complete = true;
  ST_RETURN_IF_ERROR(WriteManifest(dir, m));
  progress.Done(reader.bytes_read(), m.Tokens("train") + m.Tokens("val"));
  result.manifest = m;
  result.documents = next_doc;
  result.bytes = reader.bytes_read();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace st
