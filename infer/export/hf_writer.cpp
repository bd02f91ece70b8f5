// ExportHfDirectory and its pieces (config.json, the byte tokenizer's tokenizer.json, sharding,
// the directory transaction): TensorSource -> Hugging Face checkpoint directory (hf_writer.h).
#include "infer/export/hf_writer.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "infer/export/parallel.h"
#include "infer/export/safetensors.h"
#include "infer/quant/codec.h"
#include "infer/tokenizer/bpe.h"
#include "infer/tokenizer/hf_configs.h"
#include "infer/tokenizer/tokenizer.h"
#include "model/check.h"
#include "model/file_io.h"
#include "nlohmann/json.hpp"

namespace st {
namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

constexpr char kTransformersVersion[] = "4.53.3";  // the released checkpoints' version
constexpr char kEndOfText[] = "<|endoftext|>";

std::string Errno() { return std::strerror(errno); }

// Names in `dir` other than "." and "..".
absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot list directory '", dir, "': ", Errno()));
  }
  std::vector<std::string> names;
  while (const dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

// "model-00001-of-00003.safetensors" and the like: a shard name some exporter wrote.
bool IsShardName(const std::string& n) {
  const std::string prefix = "model-", suffix = ".safetensors";
  if (n.size() <= prefix.size() + suffix.size() || n.compare(0, prefix.size(), prefix) != 0 ||
      n.compare(n.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return false;
  }
  const std::string mid = n.substr(prefix.size(), n.size() - prefix.size() - suffix.size());
  const size_t of = mid.find("-of-");
  if (of == std::string::npos || of == 0 || of + 4 >= mid.size()) return false;
  auto digits = [](const std::string& s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  return digits(mid.substr(0, of)) && digits(mid.substr(of + 4));
}

// The output directory as one transaction: created when missing (with its parents), files
// written under temp names, renamed into place by Commit; the destructor undoes an uncommitted
// transaction (temp files removed, created directories removed).
class DirTransaction {
 public:
  ~DirTransaction() {
    if (committed_) return;
    writers_.clear();  // their destructors remove their temp files
    small_.clear();
    for (auto it = created_.rbegin(); it != created_.rend(); ++it) rmdir(it->c_str());
  }

  absl::Status Open(const std::string& dir, bool force) {
    dir_ = dir;
    while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
    if (dir_.empty()) return absl::InvalidArgumentError("the output directory name is empty");
    struct stat st;
    if (stat(dir_.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "'", dir_,
            "' exists and is not a directory; a Hugging Face export writes a directory: name a "
            "new or empty one"));
      }
      ST_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(dir_));
      if (!names.empty() && !force) {
        return absl::FailedPreconditionError(absl::StrCat(
            "'", dir_, "' is not empty (", names.size(), " entries, e.g. '", names.front(),
            "'); choose a new directory, or pass --force to replace the export's files in it "
            "(other files are kept)"));
      }
      existing_ = std::move(names);
      return absl::OkStatus();
    }
    if (errno != ENOENT) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot use output directory '", dir_, "': ", Errno()));
    }
    // Create it and any missing parents, outermost first.
    std::vector<std::string> missing;
    for (std::string p = dir_; !p.empty() && p != "/" && p != ".";) {
      if (stat(p.c_str(), &st) == 0) break;
      missing.push_back(p);
      const size_t slash = p.find_last_of('/');
      if (slash == std::string::npos) break;
      p = slash == 0 ? "/" : p.substr(0, slash);
      while (p.size() > 1 && p.back() == '/') p.pop_back();
    }
    for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
      if (mkdir(it->c_str(), 0755) != 0) {
        return absl::PermissionDeniedError(
            absl::StrCat("cannot create output directory '", *it, "': ", Errno(),
                         errno == EACCES || errno == EROFS ? " (not writable)" : ""));
      }
      created_.push_back(*it);
    }
    return absl::OkStatus();
  }

  std::string PathOf(const std::string& name) const { return dir_ + "/" + name; }

  // Writes `contents` to the temp name of `name`, flushed to disk.
  absl::Status WriteSmall(const std::string& name, const std::string& contents) {
    ST_ASSIGN_OR_RETURN(AtomicFileWriter w, AtomicFileWriter::Begin(PathOf(name)));
    ST_RETURN_IF_ERROR(w.Open());
    ST_RETURN_IF_ERROR(w.Write(contents));
    ST_RETURN_IF_ERROR(w.Sync());
    ST_RETURN_IF_ERROR(w.Close());
    small_.push_back(std::move(w));
    bytes_ += contents.size();
    names_.insert(name);
    return absl::OkStatus();
  }

  absl::StatusOr<SafetensorsWriter*> NewSafetensors(const std::string& name,
                                                    const std::vector<SourceTensor>& tensors) {
    ST_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsWriter> w,
                        SafetensorsWriter::Create(PathOf(name), tensors));
    names_.insert(name);
    writers_.push_back(std::move(w));
    return writers_.back().get();
  }

  // Removes what a loader would read instead of the new files (force only: Open refused a
  // non-empty directory otherwise), then renames everything into place: weights first,
  // config.json (what makes a directory a checkpoint) last.
  absl::Status Commit() {
    for (const std::string& n : existing_) {
      const bool shadows = n == "model.safetensors" || n == "model.safetensors.index.json" ||
                           n == "chat_template.jinja" || IsShardName(n);
      if (!shadows || names_.count(n) != 0) continue;
      if (unlink(PathOf(n).c_str()) != 0) {
        return absl::PermissionDeniedError(
            absl::StrCat("cannot remove '", PathOf(n),
                         "' (left from an earlier export; a loader would read it "
                         "instead of the new files): ",
                         Errno()));
      }
    }
    for (const auto& w : writers_) {
      bytes_ += w->file_bytes();
      ST_RETURN_IF_ERROR(w->Commit());
    }
    const std::string config_path = PathOf("config.json");
    for (bool last : {false, true}) {
      for (AtomicFileWriter& w : small_) {
        if ((w.path() == config_path) == last) ST_RETURN_IF_ERROR(w.Commit());
      }
    }
    committed_ = true;
    // Make the renames durable (best effort: some file systems refuse fsync on a directory).
    const int fd = open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
      fsync(fd);
      close(fd);
    }
    return absl::OkStatus();
  }

  std::vector<std::string> names() const { return {names_.begin(), names_.end()}; }
  uint64_t bytes() const { return bytes_; }

 private:
  std::string dir_;
  std::vector<std::string> existing_;    // entries before this export (force)
  std::vector<std::string> created_;     // directories this transaction made
  std::vector<AtomicFileWriter> small_;  // written and closed, not renamed
  std::vector<std::unique_ptr<SafetensorsWriter>> writers_;
  std::set<std::string> names_;
  uint64_t bytes_ = 0;
  bool committed_ = false;
};

void AddUnique(std::vector<int>* ids, int id) {
  if (id >= 0 && std::find(ids->begin(), ids->end(), id) == ids->end()) ids->push_back(id);
}

}  // namespace

absl::StatusOr<HfDType> ParseHfDType(const std::string& name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "bf16" || n == "bfloat16") return HfDType::kBF16;
  if (n == "f32" || n == "float32" || n == "fp32") return HfDType::kF32;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown Hugging Face weight type '", name, "'; use bf16 or f32"));
}

const char* HfTorchDType(HfDType t) { return t == HfDType::kBF16 ? "bfloat16" : "float32"; }

absl::StatusOr<int64_t> ParseShardSize(const std::string& text) {
  const std::string s = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  size_t digits = 0;
  while (digits < s.size() && std::isdigit(static_cast<unsigned char>(s[digits]))) ++digits;
  const std::string unit(absl::StripAsciiWhitespace(s.substr(digits)));
  int64_t mult = 0;
  if (unit.empty() || unit == "b") {
    mult = 1;
  } else if (unit == "kb") {
    mult = 1000;
  } else if (unit == "mb") {
    mult = 1000 * 1000;
  } else if (unit == "gb") {
    mult = 1000 * 1000 * 1000;
  } else if (unit == "kib") {
    mult = int64_t{1} << 10;
  } else if (unit == "mib") {
    mult = int64_t{1} << 20;
  } else if (unit == "gib") {
    mult = int64_t{1} << 30;
  }
  int64_t n = 0, bytes = 0;
  if (digits == 0 || mult == 0 || !absl::SimpleAtoi(s.substr(0, digits), &n) ||
      __builtin_mul_overflow(n, mult, &bytes) || bytes < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid size '", text,
        "'; give a positive integer with an optional unit: B, KB, MB, GB (powers of 1000) or "
        "KiB, MiB, GiB (powers of 1024), e.g. 5GB"));
  }
  return bytes;
}

std::string HfConfigJson(const ModelConfig& cfg, const std::string& torch_dtype) {
  json j = json::parse(cfg.ToJson());  // the semantic keys, Hugging Face names
  j["architectures"] = {"SmallThinkerForCausalLM"};
  j["attention_dropout"] = 0.0;
  j["initializer_range"] = 0.02;
  j["norm_topk_prob"] = true;  // the released value; the model code does not read it
  j["output_router_logits"] = false;
  j["rope_scaling"] = nullptr;
  j["torch_dtype"] = torch_dtype;
  j["transformers_version"] = kTransformersVersion;
  j["use_cache"] = false;   // as released (generation_config.json leaves generate() its cache)
  return j.dump(2) + "\n";  // std::map keys: sorted, as transformers' to_json_string
}

std::string ByteLevelTokenizerJson() {
  ojson vocab = ojson::object();
  for (int b = 0; b < 256; ++b) vocab[BytesToByteLevel(std::string(1, static_cast<char>(b)))] = b;
  const ojson added = ojson::array({ojson{{"id", ByteTokenizer::kEndOfText},
                                          {"content", kEndOfText},
                                          {"single_word", false},
                                          {"lstrip", false},
                                          {"rstrip", false},
                                          {"normalized", false},
                                          {"special", true}}});
  const ojson pre = {{"type", "ByteLevel"},
                     {"add_prefix_space", false},
                     {"trim_offsets", true},
                     {"use_regex", true}};
  const ojson post = {{"type", "ByteLevel"},
                      {"add_prefix_space", false},
                      {"trim_offsets", false},
                      {"use_regex", false}};
  ojson model = {{"type", "BPE"},
                 {"dropout", nullptr},
                 {"unk_token", nullptr},
                 {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr},
                 {"fuse_unk", false},
                 {"byte_fallback", false},
                 {"ignore_merges", false}};
  model["vocab"] = std::move(vocab);
  model["merges"] = ojson::array();
  ojson j = ojson::object();
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = pre;
  j["post_processor"] = post;
  j["decoder"] = pre;
  j["model"] = std::move(model);
  return j.dump(2) + "\n";
}

absl::StatusOr<HfExportReport> ExportHfDirectory(const TensorSource& src, const std::string& dir,
                                                 const HfExportOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (options.max_shard_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max shard size must be at least 1 byte, got ", options.max_shard_bytes));
  }
  // Everything that can be checked is checked before the directory is touched.
  ST_RETURN_IF_ERROR(CheckTensorsMatchConfig(src));
  const ModelConfig& cfg = src.config();

  std::string tok_json;
  if (src.tokenizer_name() == "byte") {
    tok_json = ByteLevelTokenizerJson();
  } else if (src.tokenizer_name() == "bpe") {
    tok_json = src.tokenizer_json();
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(src.description(), ": tokenizer '", src.tokenizer_name(),
                     "' has no Hugging Face tokenizer.json form (only 'byte' and 'bpe')"));
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = MakeTokenizer("bpe", tok_json);
  if (!tok.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        src.description(), ": its tokenizer.json does not load: ", tok.status().message()));
  }

  // bos/eos: the config's, else the tokenizer files', else the tokenizer's end-of-text (as
  // ExportModel resolves them), so that transformers' generate() stops where we do.
  const TokenizerPolicy policy = src.tokenizer_policy();
  GenerationDefaults gen = src.generation_defaults();
  ModelConfig out_cfg = cfg;
  if (out_cfg.eos_token_id.empty()) {
    for (int id : gen.eos_token_id) AddUnique(&out_cfg.eos_token_id, id);
    AddUnique(&out_cfg.eos_token_id, policy.eos_token_id);
    if (out_cfg.eos_token_id.empty() && (*tok)->eos_id() < cfg.vocab_size) {
      AddUnique(&out_cfg.eos_token_id, (*tok)->eos_id());
    }
  }
  if (out_cfg.bos_token_id < 0) {
    out_cfg.bos_token_id = policy.bos_token_id >= 0 ? policy.bos_token_id : gen.bos_token_id;
  }
  if (absl::Status s = ValidateModelConfig(out_cfg); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        src.description(), ": the bos/eos token ids of the tokenizer files do not fit the model ",
        "config: ", s.message()));
  }
  if (gen.eos_token_id.empty()) gen.eos_token_id = out_cfg.eos_token_id;
  if (gen.bos_token_id < 0) gen.bos_token_id = out_cfg.bos_token_id;
  const std::string torch_dtype = HfTorchDType(options.dtype);
  const std::string config_json = HfConfigJson(out_cfg, torch_dtype);
  {  // It must read back as the same model.
    absl::StatusOr<ModelConfig> back = ParseModelConfig(config_json, ConfigKeys::kHuggingFace);
    if (!back.ok()) {
      return absl::InternalError(
          absl::StrCat("the written config.json does not read back: ", back.status().message()));
    }
  }

  // The shard plan: ExpectedTensors (the registry's walk, Hugging Face names and shapes) in
  // order, a new shard when the next tensor would overflow the current one (transformers' rule).
  const char* st_dtype = options.dtype == HfDType::kBF16 ? "BF16" : "F32";
  const int elem = options.dtype == HfDType::kBF16 ? 2 : 4;
  std::vector<std::vector<SourceTensor>> shards;
  int64_t shard_bytes = 0, total_bytes = 0;
  std::vector<SourceTensor> expected = ExpectedTensors(cfg);
  for (SourceTensor& t : expected) {
    t.dtype = st_dtype;
    const int64_t bytes = t.num_elements() * elem;
    if (shards.empty() || (shard_bytes > 0 && shard_bytes + bytes > options.max_shard_bytes)) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(t);
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  const int n = static_cast<int>(shards.size());
  auto shard_name = [n](int i) {
    if (n == 1) return std::string("model.safetensors");
    char buf[64];
    std::snprintf(buf, sizeof(buf), "model-%05d-of-%05d.safetensors", i + 1, n);
    return std::string(buf);
  };

  DirTransaction tx;
  ST_RETURN_IF_ERROR(tx.Open(dir, options.force));
  const int64_t total = static_cast<int64_t>(expected.size());
  int64_t done = 0, written = 0;
  json weight_map = json::object();
  std::vector<uint16_t> half;
  for (int i = 0; i < n; ++i) {
    const std::string name = shard_name(i);
    ST_ASSIGN_OR_RETURN(SafetensorsWriter * w, tx.NewSafetensors(name, shards[i]));
    for (const SourceTensor& t : shards[i]) {
      ST_ASSIGN_OR_RETURN(std::vector<float> x, src.ReadF32(t.name));
      if (static_cast<int64_t>(x.size()) != t.num_elements()) {
        return absl::DataLossError(absl::StrCat(src.description(), ": tensor '", t.name, "' read ",
                                                x.size(), " values, expected ", t.num_elements()));
      }
      if (options.dtype == HfDType::kBF16) {
        half.resize(x.size());
        const int64_t count = static_cast<int64_t>(x.size());
        ParallelFor(count, ParallelRanges(count, int64_t{1} << 18), [&](int, int64_t b, int64_t e) {
          for (int64_t k = b; k < e; ++k) half[k] = F32ToBF16(x[k]);
        });
        ST_RETURN_IF_ERROR(w->Add(t.name, half.data(), half.size() * 2));
      } else {
        ST_RETURN_IF_ERROR(w->Add(t.name, x.data(), x.size() * 4));
      }
      weight_map[t.name] = name;
      written += t.num_elements() * elem;
      ++done;
      if (options.progress) options.progress(done, total, written, total_bytes);
    }
    ST_RETURN_IF_ERROR(w->Finish());
  }
  std::vector<uint16_t>().swap(half);
  if (n > 1) {
    const json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    ST_RETURN_IF_ERROR(tx.WriteSmall("model.safetensors.index.json", index.dump(2) + "\n"));
  }
  ST_RETURN_IF_ERROR(tx.WriteSmall("tokenizer.json", tok_json));
  // A tokenizer_config.json without eos_token leaves readers that do not take config.json's id
  // list to their own default: llama.cpp's converter then writes no EOS id, and llama.cpp's
  // GPT-2 vocabulary default makes ',' (id 11) end generation. Name the first end id's token.
  TokenizerPolicy written_policy = policy;
  if (written_policy.eos_token.empty() && !out_cfg.eos_token_id.empty()) {
    const int32_t eos = out_cfg.eos_token_id[0];
    written_policy.eos_token = (*tok)->Decode(absl::MakeConstSpan(&eos, 1));
  }
  ST_RETURN_IF_ERROR(tx.WriteSmall("tokenizer_config.json",
                                   TokenizerConfigJson(written_policy, **tok, src.chat_template())));
  ST_RETURN_IF_ERROR(tx.WriteSmall("generation_config.json", GenerationConfigJson(gen)));
  ST_RETURN_IF_ERROR(tx.WriteSmall("config.json", config_json));
  ST_RETURN_IF_ERROR(tx.Commit());

  HfExportReport report;
  report.files = tx.names();
  report.shards = n;
  report.tensors = total;
  report.tensor_bytes = static_cast<uint64_t>(total_bytes);
  report.bytes = tx.bytes();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace st
