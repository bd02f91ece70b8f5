// HDF5 checkpoint save/load (layout in checkpoint.h).
#include "train/checkpoint.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "data/hdf5.h"
#include "model/check.h"

namespace st {
namespace {

constexpr char kFormat[] = "smallthinker.checkpoint";
constexpr int64_t kVersion = 1;

std::vector<int64_t> Shape(const torch::Tensor& t) { return t.sizes().vec(); }

absl::Status WriteTensor(H5File& f, const std::string& path, const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
  H5Type type;
  switch (c.scalar_type()) {
    case torch::kFloat32:
      type = H5Type::kF32;
      break;
    case torch::kInt64:
      type = H5Type::kI64;
      break;
    case torch::kUInt8:
      type = H5Type::kU8;
      break;
    default:
      c = c.to(torch::kFloat32);
      type = H5Type::kF32;
  }
  return f.WriteDataset(path, type, Shape(c), c.data_ptr());
}

// Reads `path` into `dst` (any device), checking the shape.
absl::Status ReadInto(const H5File& f, const std::string& path, torch::Tensor& dst) {
  absl::StatusOr<H5DatasetInfo> info = f.Info(path);
  if (!info.ok()) return info.status();
  if (info->shape != Shape(dst)) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": tensor '", path, "' has shape [", absl::StrJoin(info->shape, ","),
                     "] but the model expects [", absl::StrJoin(Shape(dst), ","),
                     "]; the checkpoint was written for a different model config"));
  }
  torch::Tensor buf = torch::empty(dst.sizes(), torch::kFloat32);
  ST_RETURN_IF_ERROR(f.ReadDataset(path, H5Type::kF32, buf.data_ptr(), buf.numel() * 4));
  torch::NoGradGuard no_grad;
  dst.copy_(buf);
  return absl::OkStatus();
}

absl::StatusOr<torch::Tensor> ReadWhole(const H5File& f, const std::string& path, H5Type type,
                                        torch::ScalarType st) {
  absl::StatusOr<H5DatasetInfo> info = f.Info(path);
  if (!info.ok()) return info.status();
  torch::Tensor t = torch::empty(info->shape, st);
  ST_RETURN_IF_ERROR(f.ReadDataset(path, type, t.data_ptr(), t.numel() * t.element_size()));
  return t;
}

}  // namespace

absl::Status SaveCheckpoint(const std::string& path, SmallThinkerForCausalLM& model,
                            const AdamW* opt, const CheckpointState& s) {
  return WriteH5Atomically(path, [&](H5File& f) -> absl::Status {
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "format", kFormat));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "version", kVersion));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "step", s.step));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "optimizer_step", opt ? opt->step() : int64_t{0}));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "model_config", s.model_config_json));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "train_config", s.train_config_json));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "tokenizer", s.tokenizer));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "sampler_seed", static_cast<int64_t>(s.sampler.seed)));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "sampler_epoch", s.sampler.epoch));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "sampler_cursor", s.sampler.cursor));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "sampler_rank", static_cast<int64_t>(s.sampler.rank)));
    ST_RETURN_IF_ERROR(f.WriteAttr("/", "sampler_world", static_cast<int64_t>(s.sampler.world)));
    ST_RETURN_IF_ERROR(f.WriteDataset("/tokenizer/json", H5Type::kU8,
                                      {static_cast<int64_t>(s.tokenizer_json.size())},
                                      s.tokenizer_json.data()));
    for (const auto& item : model->named_parameters()) {
      ST_RETURN_IF_ERROR(WriteTensor(f, "/params/" + item.key(), item.value()));
    }
    if (opt != nullptr) {
      for (const auto& p : opt->params()) {
        ST_RETURN_IF_ERROR(WriteTensor(f, "/optimizer/exp_avg/" + p.name, p.exp_avg));
        ST_RETURN_IF_ERROR(WriteTensor(f, "/optimizer/exp_avg_sq/" + p.name, p.exp_avg_sq));
      }
    }
    if (s.rng_cpu.defined()) ST_RETURN_IF_ERROR(WriteTensor(f, "/state/rng_cpu", s.rng_cpu));
    if (s.lbl_history.defined()) {
      ST_RETURN_IF_ERROR(WriteTensor(f, "/state/lbl_history", s.lbl_history));
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<CheckpointState> ReadCheckpointState(const std::string& path) {
  absl::StatusOr<H5File> f = H5File::Open(path);
  if (!f.ok()) return f.status();
  absl::StatusOr<std::string> format = f->ReadStringAttr("/", "format");
  if (!format.ok() || *format != kFormat) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is not a smallthinker.cpp checkpoint (attribute 'format' is missing or not '",
        kFormat, "')"));
  }
  absl::StatusOr<int64_t> version = f->ReadIntAttr("/", "version");
  if (!version.ok()) return version.status();
  if (*version != kVersion) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": checkpoint version ", *version,
                                                   " is not supported (this build reads ", kVersion,
                                                   ")"));
  }
  CheckpointState s;
  ST_ASSIGN_OR_RETURN(s.step, f->ReadIntAttr("/", "step"));
  ST_ASSIGN_OR_RETURN(s.model_config_json, f->ReadStringAttr("/", "model_config"));
  ST_ASSIGN_OR_RETURN(s.train_config_json, f->ReadStringAttr("/", "train_config"));
  ST_ASSIGN_OR_RETURN(s.tokenizer, f->ReadStringAttr("/", "tokenizer"));
  ST_ASSIGN_OR_RETURN(int64_t seed, f->ReadIntAttr("/", "sampler_seed"));
  s.sampler.seed = static_cast<uint64_t>(seed);
  ST_ASSIGN_OR_RETURN(s.sampler.epoch, f->ReadIntAttr("/", "sampler_epoch"));
  ST_ASSIGN_OR_RETURN(s.sampler.cursor, f->ReadIntAttr("/", "sampler_cursor"));
  if (f->HasAttr("/", "sampler_world")) {
    ST_ASSIGN_OR_RETURN(int64_t rank, f->ReadIntAttr("/", "sampler_rank"));
    ST_ASSIGN_OR_RETURN(int64_t world, f->ReadIntAttr("/", "sampler_world"));
    s.sampler.rank = static_cast<int>(rank);
    s.sampler.world = static_cast<int>(world);
  }
  if (f->Exists("/tokenizer/json")) {
    ST_ASSIGN_OR_RETURN(H5DatasetInfo info, f->Info("/tokenizer/json"));
    s.tokenizer_json.resize(static_cast<size_t>(info.num_elements()));
    ST_RETURN_IF_ERROR(f->ReadDataset("/tokenizer/json", H5Type::kU8, s.tokenizer_json.data(),
                                      s.tokenizer_json.size()));
  } else if (s.tokenizer != "byte") {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the checkpoint names the '", s.tokenizer,
                     "' tokenizer but does not store its /tokenizer/json; it cannot be used"));
  }
  if (f->Exists("/state/rng_cpu")) {
    ST_ASSIGN_OR_RETURN(s.rng_cpu, ReadWhole(*f, "/state/rng_cpu", H5Type::kU8, torch::kUInt8));
  }
  if (f->Exists("/state/lbl_history")) {
    ST_ASSIGN_OR_RETURN(s.lbl_history,
                        ReadWhole(*f, "/state/lbl_history", H5Type::kI64, torch::kInt64));
  }
  return s;
}

absl::Status LoadCheckpoint(const std::string& path, SmallThinkerForCausalLM& model, AdamW* opt) {
  absl::StatusOr<H5File> f = H5File::Open(path);
  if (!f.ok()) return f.status();
  for (auto& item : model->named_parameters()) {
    ST_RETURN_IF_ERROR(ReadInto(*f, "/params/" + item.key(), item.value()));
  }
  if (opt != nullptr) {
    if (!f->Exists("/optimizer")) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, " holds weights only (no optimizer state) and cannot resume training"));
    }
    for (auto& p : opt->params()) {
      ST_RETURN_IF_ERROR(ReadInto(*f, "/optimizer/exp_avg/" + p.name, p.exp_avg));
      ST_RETURN_IF_ERROR(ReadInto(*f, "/optimizer/exp_avg_sq/" + p.name, p.exp_avg_sq));
    }
    ST_ASSIGN_OR_RETURN(int64_t opt_step, f->ReadIntAttr("/", "optimizer_step"));
    opt->set_step(opt_step);
  }
  return absl::OkStatus();
}

}  // namespace st
