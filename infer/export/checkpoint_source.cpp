// Our HDF5 training checkpoint as a TensorSource, the path dispatcher OpenTensorSource, and the
// completeness check of a source's tensors against its config.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "data/checkpoint_layout.h"
#include "data/hdf5.h"
#include "infer/export/tensor_source.h"
#include "infer/format/gguf.h"
#include "infer/format/tensors.h"
#include "model/check.h"

namespace st {

int64_t SourceTensor::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated by every source before it is listed
  return n;
}

const SourceTensor* TensorSource::Find(const std::string& hf_name) const {
  const std::vector<SourceTensor>& all = tensors();
  auto it =
      std::lower_bound(all.begin(), all.end(), hf_name,
                       [](const SourceTensor& t, const std::string& n) { return t.name < n; });
  if (it == all.end() || it->name != hf_name) return nullptr;
  return &*it;
}

absl::StatusOr<std::optional<StoredTensor>> TensorSource::ReadStored(
    const std::string& hf_name) const {
  if (Find(hf_name) == nullptr) {
    return absl::NotFoundError(absl::StrCat(description(), ": no tensor '", hf_name, "'"));
  }
  return std::optional<StoredTensor>();
}

namespace {

class TrainCheckpointSource final : public TensorSource {
 public:
  explicit TrainCheckpointSource(H5File file) : file_(std::move(file)) {}

  const ModelConfig& config() const override { return config_; }
  const std::vector<SourceTensor>& tensors() const override { return tensors_; }
  absl::StatusOr<std::vector<float>> ReadF32(const std::string& hf_name) const override {
    const SourceTensor* t = Find(hf_name);
    if (t == nullptr) {
      return absl::NotFoundError(
          absl::StrCat(file_.path(), ": no parameter '", hf_name, "' under ", ckpt::kParamsGroup));
    }
    std::vector<float> out(static_cast<size_t>(t->num_elements()));
    ST_RETURN_IF_ERROR(file_.ReadDataset(ckpt::ParamPath(hf_name), ckpt::kParamType, out.data(),
                                         out.size() * sizeof(float)));
    return out;
  }
  std::string tokenizer_name() const override { return tokenizer_name_; }
  std::string tokenizer_json() const override { return tokenizer_json_; }
  std::string chat_template() const override { return ""; }
  std::string description() const override {
    return absl::StrCat("training checkpoint ", file_.path(), " (", tensors_.size(), " tensors)");
  }

  absl::Status Load();

 private:
  // Collects the datasets under `group` recursively (ckpt::kParamsGroup is normally flat;
  // names in nested groups are joined with '/', the inverse of ckpt::ParamPath).
  absl::Status Collect(const std::string& group, const std::string& prefix);

  H5File file_;
  ModelConfig config_;
  std::vector<SourceTensor> tensors_;
  std::string tokenizer_name_;
  std::string tokenizer_json_;
};

absl::Status TrainCheckpointSource::Collect(const std::string& group, const std::string& prefix) {
  ST_ASSIGN_OR_RETURN(std::vector<std::string> children, file_.List(group));
  for (const std::string& child : children) {
    const std::string path = absl::StrCat(group, "/", child);
    const std::string name = prefix.empty() ? child : absl::StrCat(prefix, "/", child);
    absl::StatusOr<H5DatasetInfo> info = file_.Info(path);
    if (!info.ok()) {
      // Not a dataset: a group (recurse) or something we do not understand.
      absl::StatusOr<std::vector<std::string>> sub = file_.List(path);
      if (!sub.ok()) return info.status();
      ST_RETURN_IF_ERROR(Collect(path, name));
      continue;
    }
    if (info->type != ckpt::kParamType) {
      return absl::InvalidArgumentError(
          absl::StrCat(file_.path(), ": parameter '", name, "' is not float32"));
    }
    SourceTensor t;
    t.name = name;
    t.dtype = "F32";
    t.shape = info->shape;
    tensors_.push_back(std::move(t));
  }
  return absl::OkStatus();
}

absl::Status TrainCheckpointSource::Load() {
  const std::string& path = file_.path();
  ST_RETURN_IF_ERROR(ckpt::CheckFormat(file_));
  absl::StatusOr<std::string> cfg_json = file_.ReadStringAttr(ckpt::kRoot, ckpt::kAttrModelConfig);
  if (!cfg_json.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": missing attribute '", ckpt::kAttrModelConfig, "': ", cfg_json.status().message()));
  }
  absl::StatusOr<ModelConfig> cfg = ParseModelConfig(*cfg_json);
  if (!cfg.ok()) {
    return absl::Status(cfg.status().code(), absl::StrCat(path, ": ", ckpt::kAttrModelConfig, ": ",
                                                          cfg.status().message()));
  }
  config_ = std::move(*cfg);

  if (!file_.Exists(ckpt::kParamsGroup)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no ", ckpt::kParamsGroup, " group"));
  }
  ST_RETURN_IF_ERROR(Collect(ckpt::kParamsGroup, ""));
  std::sort(tensors_.begin(), tensors_.end(),
            [](const SourceTensor& a, const SourceTensor& b) { return a.name < b.name; });

  tokenizer_name_ = ckpt::kByteTokenizer;
  if (file_.HasAttr(ckpt::kRoot, ckpt::kAttrTokenizer)) {
    ST_ASSIGN_OR_RETURN(tokenizer_name_, file_.ReadStringAttr(ckpt::kRoot, ckpt::kAttrTokenizer));
  }
  ST_ASSIGN_OR_RETURN(tokenizer_json_, ckpt::ReadTokenizerJson(file_, tokenizer_name_, "exported"));
  return absl::OkStatus();
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Whether `path` starts with the GGUF magic (whatever its name).
bool StartsWithGgufMagic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[sizeof(kGgufMagic)] = {};
  in.read(magic, sizeof(magic));
  return in.gcount() == sizeof(magic) && std::memcmp(magic, kGgufMagic, sizeof(magic)) == 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TensorSource>> OpenTrainCheckpoint(const std::string& h5_path) {
  ST_ASSIGN_OR_RETURN(H5File f, H5File::Open(h5_path));
  auto src = std::make_unique<TrainCheckpointSource>(std::move(f));
  ST_RETURN_IF_ERROR(src->Load());
  return std::unique_ptr<TensorSource>(std::move(src));
}

absl::StatusOr<std::unique_ptr<TensorSource>> OpenTensorSource(const std::string& path) {
  if (IsDirectory(path)) return OpenHfCheckpoint(path);
  if (StartsWithGgufMagic(path)) return OpenGgufSource(path);
  if (absl::EndsWith(path, ".h5")) return OpenTrainCheckpoint(path);
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("'", path, "' does not exist"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'", path,
                   "' is neither a Hugging Face checkpoint directory (config.json + "
                   "*.safetensors + tokenizer.json), a GGUF file nor a training checkpoint "
                   "(*.h5)"));
}

std::string ListFirstNames(const std::vector<std::string>& names, absl::string_view sep) {
  constexpr size_t kShow = 5;
  std::vector<std::string> head(names.begin(), names.begin() + std::min(names.size(), kShow));
  std::string s = absl::StrJoin(head, sep);
  if (names.size() > kShow) absl::StrAppend(&s, sep, "... (", names.size() - kShow, " more)");
  return s;
}

std::vector<SourceTensor> ExpectedTensors(const ModelConfig& cfg) {
  std::vector<SourceTensor> out;
  out.reserve(static_cast<size_t>(CountTensors(cfg)));
  ForEachTensor(cfg, [&](const TensorId& id) {
    out.push_back(SourceTensor{id.HfName(), "F32", id.HfShape(cfg)});
    return true;
  });
  return out;
}

absl::Status CheckTensorsMatchConfig(const TensorSource& src) {
  const ModelConfig& cfg = src.config();
  std::map<std::string, const SourceTensor*> have;
  for (const SourceTensor& t : src.tensors()) have[t.name] = &t;

  // The config comes from an untrusted file: a forged layer or expert count must not walk (or
  // list) millions of names. The walk stops once far more are missing than the source holds.
  const size_t max_missing = std::max<size_t>(1024, 4 * have.size());
  std::vector<std::string> missing, wrong;
  const bool complete = ForEachTensor(cfg, [&](const TensorId& id) {
    const std::string name = id.HfName();
    auto it = have.find(name);
    if (it == have.end()) {
      missing.push_back(name);
      return missing.size() <= max_missing;
    }
    const std::vector<int64_t> shape = id.HfShape(cfg);
    if (it->second->shape != shape) {
      wrong.push_back(absl::StrCat(name, " has shape [", absl::StrJoin(it->second->shape, ", "),
                                   "], expected [", absl::StrJoin(shape, ", "), "]"));
    }
    have.erase(it);
    return true;
  });
  // A tied model may still carry its (redundant) head: accepted if its shape is right, and
  // ignored by the exporter.
  const TensorId lm_head = TensorId::Model(TensorKind::kOutput);
  if (complete && !KindPresent(lm_head.kind, cfg)) {
    auto it = have.find(lm_head.HfName());
    if (it != have.end()) {
      const std::vector<int64_t> want = lm_head.HfShape(cfg);
      if (it->second->shape != want) {
        wrong.push_back(absl::StrCat(lm_head.HfName(), " has shape [",
                                     absl::StrJoin(it->second->shape, ", "), "], expected [",
                                     absl::StrJoin(want, ", "), "]"));
      }
      have.erase(it);
    }
  }
  std::vector<std::string> unexpected;
  if (complete) {  // after a stopped walk the rest of `have` may still be expected
    for (const auto& [name, t] : have) unexpected.push_back(name);
  }
  if (missing.empty() && wrong.empty() && unexpected.empty()) return absl::OkStatus();

  std::string msg = absl::StrCat(
      src.description(), " does not match its config (", cfg.num_hidden_layers, " layers, ",
      cfg.moe_num_primary_experts,
      " experts, tie_word_embeddings=", cfg.tie_word_embeddings ? "true" : "false", "):");
  if (!missing.empty()) {
    absl::StrAppend(&msg, " missing ", complete ? "" : "more than ",
                    complete ? missing.size() : max_missing, ": ", ListFirstNames(missing), ";");
  }
  if (!wrong.empty()) absl::StrAppend(&msg, " wrong shape: ", ListFirstNames(wrong), ";");
  if (!unexpected.empty()) {
    absl::StrAppend(&msg, " unexpected ", unexpected.size(), ": ", ListFirstNames(unexpected), ";");
  }
  msg.pop_back();
  return absl::InvalidArgumentError(msg);
}

}  // namespace st
