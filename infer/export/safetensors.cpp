// The safetensors reader (full validation of untrusted files) and writer (streaming, temp name
// + rename), and the Hugging Face checkpoint directory source (config.json, single or sharded
// safetensors, tokenizer files).
#include "infer/export/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "infer/export/tensor_source.h"
#include "infer/quant/codec.h"
#include "infer/tokenizer/tokenizer.h"
#include "model/check.h"
#include "model/file_io.h"
#include "nlohmann/json.hpp"

namespace st {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");

using json = nlohmann::json;

// Reads exactly `n` bytes at `offset`.
absl::Status PreadAll(int fd, const std::string& path, int64_t offset, void* out, size_t n) {
  char* p = static_cast<char*>(out);
  while (n > 0) {
    const ssize_t got = pread(fd, p, n, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return absl::DataLossError(
          absl::StrCat(path, ": read failed at offset ", offset, ": ", std::strerror(errno)));
    }
    if (got == 0) {
      return absl::DataLossError(absl::StrCat(path, ": unexpected end of file at offset ", offset));
    }
    p += got;
    n -= static_cast<size_t>(got);
    offset += got;
  }
  return absl::OkStatus();
}

// A non-negative JSON integer that fits int64, or false.
bool GetNonNegInt(const json& v, int64_t* out) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return false;
    *out = static_cast<int64_t>(u);
    return true;
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i < 0) return false;
    *out = i;
    return true;
  }
  return false;
}

bool FileExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

int SafetensorsDTypeSize(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "F16" || dtype == "BF16") return 2;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept
    : path_(std::move(other.path_)),
      fd_(other.fd_),
      data_start_(other.data_start_),
      entries_(std::move(other.entries_)) {
  other.fd_ = -1;
}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    path_ = std::move(other.path_);
    fd_ = other.fd_;
    data_start_ = other.data_start_;
    entries_ = std::move(other.entries_);
    other.fd_ = -1;
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() {
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  f.fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd_ < 0) {
    return absl::NotFoundError(
        absl::StrCat("cannot open safetensors file '", path, "': ", std::strerror(errno)));
  }
  struct stat st;
  if (fstat(f.fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const int64_t file_size = static_cast<int64_t>(st.st_size);
  if (file_size < 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": file is ", file_size, " bytes, too short for a safetensors header length"));
  }
  uint8_t len_bytes[8];
  ST_RETURN_IF_ERROR(PreadAll(f.fd_, path, 0, len_bytes, 8));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > static_cast<uint64_t>(kMaxHeaderBytes)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_len,
                                                   " exceeds the limit of ", kMaxHeaderBytes,
                                                   " bytes (not a safetensors file?)"));
  }
  if (header_len > static_cast<uint64_t>(file_size - 8)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_len,
                                                   " is larger than the file (", file_size,
                                                   " bytes): truncated or not safetensors"));
  }
  if (header_len < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header length ", header_len, " is too short for a JSON object"));
  }
  std::string header(static_cast<size_t>(header_len), '\0');
  ST_RETURN_IF_ERROR(PreadAll(f.fd_, path, 8, header.data(), header.size()));
  f.data_start_ = 8 + static_cast<int64_t>(header_len);
  const int64_t data_size = file_size - f.data_start_;

  const json j = json::parse(header, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header is not valid JSON"));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header is not a JSON object"));
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": '__metadata__' must be a JSON object"));
      }
      continue;
    }
    auto bad = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "': ", what));
    };
    if (name.empty()) return bad("empty tensor name");
    if (!v.is_object()) return bad("entry is not a JSON object");
    for (auto k = v.begin(); k != v.end(); ++k) {
      if (k.key() != "dtype" && k.key() != "shape" && k.key() != "data_offsets") {
        return bad(absl::StrCat("unknown key '", k.key(), "'"));
      }
    }
    if (!v.contains("dtype") || !v["dtype"].is_string()) return bad("missing string 'dtype'");
    Entry e;
    e.tensor.name = name;
    e.tensor.dtype = v["dtype"].get<std::string>();
    const int elem = SafetensorsDTypeSize(e.tensor.dtype);
    if (elem == 0) {
      return bad(
          absl::StrCat("unsupported dtype '", e.tensor.dtype, "' (supported: F32, F16, BF16)"));
    }
    if (!v.contains("shape") || !v["shape"].is_array()) return bad("missing array 'shape'");
    const json& shape = v["shape"];
    if (shape.size() > static_cast<size_t>(kMaxDims)) {
      return bad(absl::StrCat("shape has ", shape.size(), " dimensions (at most ", kMaxDims,
                              " supported)"));
    }
    int64_t count = 1;
    for (const json& d : shape) {
      int64_t dim = 0;
      if (!GetNonNegInt(d, &dim)) {
        return bad(absl::StrCat("shape ", shape.dump(),
                                " has an entry that is not a non-negative integer"));
      }
      e.tensor.shape.push_back(dim);
      if (__builtin_mul_overflow(count, dim, &count)) {
        return bad(absl::StrCat("shape ", shape.dump(), " overflows 64-bit element count"));
      }
    }
    int64_t bytes = 0;
    if (__builtin_mul_overflow(count, static_cast<int64_t>(elem), &bytes)) {
      return bad(absl::StrCat("shape ", shape.dump(), " overflows 64-bit byte count"));
    }
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2) {
      return bad("missing 'data_offsets' [begin, end]");
    }
    const json& off = v["data_offsets"];
    if (!GetNonNegInt(off[0], &e.begin) || !GetNonNegInt(off[1], &e.end)) {
      return bad(absl::StrCat("data_offsets ", off.dump(), " are not non-negative integers"));
    }
    if (e.begin > e.end) {
      return bad(absl::StrCat("data_offsets ", off.dump(), " have begin > end"));
    }
    if (e.end > data_size) {
      return bad(absl::StrCat("data_offsets ", off.dump(), " run past the end of the data (",
                              data_size, " bytes): file truncated or corrupt"));
    }
    if (e.end - e.begin != bytes) {
      return bad(absl::StrCat("data_offsets ", off.dump(), " span ", e.end - e.begin,
                              " bytes but shape ", shape.dump(), " of ", e.tensor.dtype, " needs ",
                              bytes));
    }
    f.entries_.push_back(std::move(e));
  }
  // Non-overlapping: sorted by begin, each must end before the next begins.
  std::vector<const Entry*> by_offset;
  by_offset.reserve(f.entries_.size());
  for (const Entry& e : f.entries_) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const Entry* a = by_offset[i - 1];
    const Entry* b = by_offset[i];
    if (b->begin < a->end) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensors '", a->tensor.name, "' [", a->begin, ", ", a->end,
                       ") and '", b->tensor.name, "' [", b->begin, ", ", b->end, ") overlap"));
    }
  }
  std::sort(f.entries_.begin(), f.entries_.end(),
            [](const Entry& a, const Entry& b) { return a.tensor.name < b.tensor.name; });
  return f;
}

const SafetensorsFile::Entry* SafetensorsFile::Find(const std::string& name) const {
  auto it =
      std::lower_bound(entries_.begin(), entries_.end(), name,
                       [](const Entry& e, const std::string& n) { return e.tensor.name < n; });
  if (it == entries_.end() || it->tensor.name != name) return nullptr;
  return &*it;
}

absl::StatusOr<std::vector<uint8_t>> SafetensorsFile::ReadRaw(const std::string& name) const {
  const Entry* e = Find(name);
  if (e == nullptr) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor '", name, "'"));
  }
  std::vector<uint8_t> out(static_cast<size_t>(e->end - e->begin));
  absl::Status s = PreadAll(fd_, path_, data_start_ + e->begin, out.data(), out.size());
  if (!s.ok()) {
    return absl::DataLossError(absl::StrCat("tensor '", name, "': ", s.message()));
  }
  return out;
}

absl::StatusOr<std::vector<float>> SafetensorsFile::ReadF32(const std::string& name) const {
  const Entry* e = Find(name);
  if (e == nullptr) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor '", name, "'"));
  }
  const int64_t n = e->tensor.num_elements();
  std::vector<float> out(static_cast<size_t>(n));
  if (e->tensor.dtype == "F32") {
    absl::Status s = PreadAll(fd_, path_, data_start_ + e->begin, out.data(), out.size() * 4);
    if (!s.ok()) return absl::DataLossError(absl::StrCat("tensor '", name, "': ", s.message()));
    return out;
  }
  ST_ASSIGN_OR_RETURN(std::vector<uint8_t> raw, ReadRaw(name));
  const bool bf16 = e->tensor.dtype == "BF16";
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, raw.data() + 2 * i, 2);
    out[static_cast<size_t>(i)] = bf16 ? BF16ToF32(h) : F16ToF32(h);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsWriter

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, const std::vector<SourceTensor>& tensors,
    const std::map<std::string, std::string>& metadata) {
  std::unique_ptr<SafetensorsWriter> w(new SafetensorsWriter());
  w->path_ = path;
  // The header: "__metadata__" first, then the tensors in data order (ordered_json keeps
  // insertion order; the reader sorts by name itself).
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const SourceTensor& t : tensors) {
    auto bad = [&](const std::string& what) {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors writer ", path, ": tensor '", t.name, "': ", what));
    };
    if (t.name.empty() || t.name == "__metadata__") return bad("invalid tensor name");
    if (!names.insert(t.name).second) return bad("listed twice");
    const int elem = SafetensorsDTypeSize(t.dtype);
    if (elem == 0) {
      return bad(absl::StrCat("unsupported dtype '", t.dtype, "' (F32, F16 or BF16)"));
    }
    if (t.shape.size() > static_cast<size_t>(SafetensorsFile::kMaxDims)) {
      return bad(
          absl::StrCat(t.shape.size(), " dimensions (at most ", SafetensorsFile::kMaxDims, ")"));
    }
    int64_t count = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || __builtin_mul_overflow(count, d, &count)) {
        return bad(absl::StrCat("invalid shape [", absl::StrJoin(t.shape, ", "), "]"));
      }
    }
    int64_t bytes = 0;
    uint64_t end = 0;
    if (__builtin_mul_overflow(count, static_cast<int64_t>(elem), &bytes) ||
        __builtin_add_overflow(offset, static_cast<uint64_t>(bytes), &end)) {
      return bad("size overflows 64 bits");
    }
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, end}}};
    w->sizes_.push_back(static_cast<uint64_t>(bytes));
    offset = end;
  }
  w->tensors_ = tensors;
  w->data_bytes_ = offset;
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // a name that is not valid UTF-8
    return absl::InvalidArgumentError(absl::StrCat(
        "safetensors writer ", path, ": a tensor name is not valid UTF-8: ", e.what()));
  }
  // Padded with spaces to a multiple of 8, as the reference implementation does.
  text.append((8 - text.size() % 8) % 8, ' ');
  if (text.size() > static_cast<size_t>(SafetensorsFile::kMaxHeaderBytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors writer ", path, ": header of ", text.size(),
                     " bytes exceeds the readers' limit of ", SafetensorsFile::kMaxHeaderBytes,
                     " (too many tensors for one file: shard the checkpoint)"));
  }
  w->header_len_ = text.size();
  ST_ASSIGN_OR_RETURN(AtomicFileWriter file, AtomicFileWriter::Begin(path));
  w->file_.emplace(std::move(file));
  ST_RETURN_IF_ERROR(w->file_->Open());
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(w->header_len_ >> (8 * i));
  ST_RETURN_IF_ERROR(w->file_->Write(len, 8));
  ST_RETURN_IF_ERROR(w->file_->Write(text.data(), text.size()));
  return w;
}

absl::Status SafetensorsWriter::Add(const std::string& name, const void* data, size_t bytes) {
  if (finished_) {
    return absl::FailedPreconditionError(
        absl::StrCat("safetensors writer ", path_, ": Add('", name, "') after Finish"));
  }
  if (next_ >= tensors_.size() || tensors_[next_].name != name) {
    return absl::FailedPreconditionError(absl::StrCat(
        "safetensors writer ", path_, ": got tensor '", name, "' but expected ",
        next_ < tensors_.size() ? "'" + tensors_[next_].name + "'" : "no more tensors"));
  }
  if (bytes != sizes_[next_]) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors writer ", path_, ": tensor '", name,
                                                   "' has ", bytes, " bytes, expected ",
                                                   sizes_[next_]));
  }
  ST_RETURN_IF_ERROR(file_->Write(data, bytes));
  ++next_;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  if (finished_) return absl::OkStatus();
  if (next_ != tensors_.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("safetensors writer ", path_, ": Finish after ", next_, " of ",
                     tensors_.size(), " tensors (next: '", tensors_[next_].name, "')"));
  }
  ST_RETURN_IF_ERROR(file_->Sync());
  finished_ = true;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Commit() {
  if (!finished_) {
    return absl::FailedPreconditionError(
        absl::StrCat("safetensors writer ", path_, ": Commit before Finish"));
  }
  return file_->Commit();
}

// ---------------------------------------------------------------------------------------------
// model.safetensors.index.json

namespace {
// A shard name from index.json must be a plain file name inside the directory.
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find('\0') == std::string::npos;
}
}  // namespace

absl::StatusOr<std::map<std::string, std::string>> ParseSafetensorsIndex(absl::string_view text,
                                                                         const std::string& where) {
  const json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": not a valid JSON object"));
  }
  if (!j.contains("weight_map") || !j["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": missing object 'weight_map' (tensor name -> shard file)"));
  }
  std::map<std::string, std::string> weight_map;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string() || !IsPlainFileName(it.value().get<std::string>())) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": weight_map entry for '", it.key(),
          "' must be a file name in the checkpoint directory, got ", it.value().dump()));
    }
    weight_map[it.key()] = it.value().get<std::string>();
  }
  return weight_map;
}

// ---------------------------------------------------------------------------------------------
// Hugging Face checkpoint directory

namespace {

class HfCheckpointSource final : public TensorSource {
 public:
  const ModelConfig& config() const override { return config_; }
  const std::vector<SourceTensor>& tensors() const override { return tensors_; }
  absl::StatusOr<std::vector<float>> ReadF32(const std::string& hf_name) const override {
    auto it = location_.find(hf_name);
    if (it == location_.end()) {
      return absl::NotFoundError(
          absl::StrCat("hf checkpoint ", dir_, ": no tensor '", hf_name, "'"));
    }
    return files_[it->second].ReadF32(hf_name);
  }
  std::string tokenizer_name() const override { return "bpe"; }
  std::string tokenizer_json() const override { return tokenizer_json_; }
  std::string chat_template() const override { return chat_template_; }
  TokenizerPolicy tokenizer_policy() const override { return policy_; }
  GenerationDefaults generation_defaults() const override { return generation_; }
  std::vector<std::string> notes() const override { return notes_; }
  std::string description() const override {
    return absl::StrCat("hf checkpoint ", dir_, " (", files_.size(), " safetensors file",
                        files_.size() == 1 ? "" : "s", ", ", tensors_.size(), " tensors)");
  }

  static absl::StatusOr<std::unique_ptr<TensorSource>> Open(const std::string& dir);

 private:
  // Adds every tensor of `file` (already validated); duplicates across files are an error.
  absl::Status AddFile(SafetensorsFile file);
  // tokenizer_config.json, chat_template.jinja and generation_config.json (all optional).
  absl::Status ReadSideFiles(const std::string& base);

  std::string dir_;
  ModelConfig config_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> location_;  // tensor -> index into files_
  std::vector<SourceTensor> tensors_;
  std::string tokenizer_json_;
  std::string chat_template_;
  TokenizerPolicy policy_;
  GenerationDefaults generation_;
  std::vector<std::string> ignored_keys_;  // of config.json
  std::vector<std::string> notes_;
};

// Generation settings a config.json may carry (transformers takes them as the generation
// defaults when there is no generation_config.json).
constexpr const char* kConfigGenerationKeys[] = {"do_sample", "temperature", "top_p",
                                                 "top_k",     "min_p",       "repetition_penalty"};

absl::Status HfCheckpointSource::ReadSideFiles(const std::string& base) {
  if (!ignored_keys_.empty()) {
    notes_.push_back(absl::StrCat("config.json: ignored keys that do not change the computation: ",
                                  absl::StrJoin(ignored_keys_, ", ")));
  }
  ST_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, MakeTokenizer("bpe", tokenizer_json_));
  const std::string tok_cfg_path = base + "tokenizer_config.json";
  if (FileExists(tok_cfg_path)) {
    ST_ASSIGN_OR_RETURN(std::string text, ReadFile(tok_cfg_path));
    ChatTemplates templates;
    absl::StatusOr<TokenizerPolicy> policy = ParseTokenizerConfig(text, tok.get(), &templates);
    if (!policy.ok()) {
      return absl::Status(policy.status().code(), absl::StrCat(base, policy.status().message()));
    }
    policy_ = *std::move(policy);
    chat_template_ = templates.default_template;
    if (chat_template_.empty() && !templates.named.empty()) {
      notes_.push_back(absl::StrCat(
          "tokenizer_config.json: named chat templates but none called \"default\"; using \"",
          templates.named.front().first, "\""));
      chat_template_ = templates.named.front().second;
    }
  } else {
    notes_.push_back(
        "no tokenizer_config.json: no BOS/EOS is added to prompts and there is no chat template");
  }
  // transformers reads chat_template.jinja in preference to tokenizer_config.json's template.
  const std::string jinja_path = base + "chat_template.jinja";
  if (FileExists(jinja_path)) {
    ST_ASSIGN_OR_RETURN(chat_template_, ReadFile(jinja_path));
  }
  const std::string gen_path = base + "generation_config.json";
  if (FileExists(gen_path)) {
    ST_ASSIGN_OR_RETURN(std::string text, ReadFile(gen_path));
    absl::StatusOr<GenerationDefaults> g = ParseGenerationConfig(text, config_.vocab_size);
    if (!g.ok()) {
      return absl::Status(g.status().code(), absl::StrCat(base, g.status().message()));
    }
    generation_ = *std::move(g);
  } else {
    // As transformers' GenerationConfig.from_model_config: the generation keys of config.json.
    ST_ASSIGN_OR_RETURN(std::string text, ReadFile(base + "config.json"));
    const json c = json::parse(text, nullptr, false);
    json g = json::object();
    for (const char* key : kConfigGenerationKeys) {
      if (c.is_object() && c.contains(key) && !c[key].is_null()) g[key] = c[key];
    }
    absl::StatusOr<GenerationDefaults> parsed = ParseGenerationConfig(g.dump(), config_.vocab_size);
    if (!parsed.ok()) {
      return absl::Status(
          parsed.status().code(),
          absl::StrCat(base, "config.json (generation keys): ", parsed.status().message()));
    }
    generation_ = *std::move(parsed);
  }
  return absl::OkStatus();
}

absl::Status HfCheckpointSource::AddFile(SafetensorsFile file) {
  const size_t idx = files_.size();
  for (const SafetensorsFile::Entry& e : file.entries()) {
    auto [it, inserted] = location_.emplace(e.tensor.name, idx);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", e.tensor.name, "' is in both ",
                                                     files_[it->second].path(), " and ",
                                                     file.path()));
    }
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TensorSource>> HfCheckpointSource::Open(const std::string& dir) {
  auto src = std::make_unique<HfCheckpointSource>();
  src->dir_ = dir;
  const std::string base = (!dir.empty() && dir.back() == '/') ? dir : dir + "/";

  // config.json
  const std::string config_path = base + "config.json";
  if (!FileExists(config_path)) {
    return absl::NotFoundError(
        absl::StrCat(dir, ": no config.json (not a Hugging Face checkpoint directory)"));
  }
  absl::StatusOr<ModelConfig> cfg =
      LoadModelConfig(config_path, ConfigKeys::kHuggingFace, &src->ignored_keys_);
  if (!cfg.ok()) {
    return absl::Status(cfg.status().code(),
                        absl::StrCat(config_path, ": ", cfg.status().message()));
  }
  src->config_ = std::move(*cfg);

  // Weights: model.safetensors (preferred, as transformers does) or the sharded index.
  const std::string single = base + "model.safetensors";
  const std::string index_path = base + "model.safetensors.index.json";
  if (FileExists(single)) {
    ST_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(single));
    ST_RETURN_IF_ERROR(src->AddFile(std::move(f)));
  } else if (FileExists(index_path)) {
    ST_ASSIGN_OR_RETURN(std::string text, ReadFile(index_path));
    ST_ASSIGN_OR_RETURN(const auto weight_map, ParseSafetensorsIndex(text, index_path));
    std::set<std::string> shards;
    for (const auto& [name, shard] : weight_map) shards.insert(shard);
    for (const std::string& shard : shards) {
      const std::string shard_path = base + shard;
      if (!FileExists(shard_path)) {
        return absl::NotFoundError(
            absl::StrCat(index_path, " names shard '", shard, "', which does not exist in ", dir));
      }
      ST_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(shard_path));
      ST_RETURN_IF_ERROR(src->AddFile(std::move(f)));
    }
    // The index and the shards must agree exactly.
    for (const auto& [name, shard] : weight_map) {
      auto it = src->location_.find(name);
      if (it == src->location_.end() || src->files_[it->second].path() != base + shard) {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": tensor '", name,
                                                       "' is mapped to '", shard,
                                                       "' but that shard ", "does not contain it"));
      }
    }
    for (const auto& [name, idx] : src->location_) {
      if (weight_map.count(name) == 0) {
        return absl::InvalidArgumentError(absl::StrCat(src->files_[idx].path(), ": tensor '", name,
                                                       "' is not listed in ", index_path));
      }
    }
  } else {
    return absl::NotFoundError(
        absl::StrCat(dir,
                     ": no model.safetensors or model.safetensors.index.json (only safetensors "
                     "checkpoints are supported; convert .bin/.pt weights first)"));
  }
  for (const SafetensorsFile& f : src->files_) {
    for (const SafetensorsFile::Entry& e : f.entries()) src->tensors_.push_back(e.tensor);
  }
  std::sort(src->tensors_.begin(), src->tensors_.end(),
            [](const SourceTensor& a, const SourceTensor& b) { return a.name < b.name; });

  // tokenizer.json (required) and tokenizer_config.json's chat template (optional).
  const std::string tok_path = base + "tokenizer.json";
  if (!FileExists(tok_path)) {
    return absl::NotFoundError(
        absl::StrCat(dir,
                     ": no tokenizer.json; the exported model would have no tokenizer. Copy the "
                     "model's tokenizer.json into the checkpoint directory"));
  }
  ST_ASSIGN_OR_RETURN(src->tokenizer_json_, ReadFile(tok_path));
  {
    const json t = json::parse(src->tokenizer_json_, nullptr, false);
    if (t.is_discarded() || !t.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(tok_path, ": not a valid JSON object"));
    }
  }
  ST_RETURN_IF_ERROR(src->ReadSideFiles(base));
  return std::unique_ptr<TensorSource>(std::move(src));
}

}  // namespace

absl::StatusOr<std::unique_ptr<TensorSource>> OpenHfCheckpoint(const std::string& dir) {
  return HfCheckpointSource::Open(dir);
}

}  // namespace st
