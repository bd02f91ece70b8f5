// HDF5 checkpoint save/load of the model, AdamW and run state (layout: checkpoint_layout.h).
#include "train/checkpoint.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "data/checkpoint_layout.h"
#include "data/hdf5.h"
#include "model/check.h"
#include "nlohmann/json.hpp"

namespace st {
namespace {

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
  torch::Tensor buf = torch::empty(dst.sizes(), torch::kFloat32);  // ckpt::kParamType
  ST_RETURN_IF_ERROR(f.ReadDataset(path, ckpt::kParamType, buf.data_ptr(), buf.numel() * 4));
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
    ST_RETURN_IF_ERROR(f.WriteAttr(ckpt::kRoot, ckpt::kAttrFormat, ckpt::kFormat));
    ST_RETURN_IF_ERROR(f.WriteAttr(ckpt::kRoot, ckpt::kAttrVersion, ckpt::kVersion));
    ST_RETURN_IF_ERROR(f.WriteAttr(ckpt::kRoot, ckpt::kAttrStep, s.step));
    ST_RETURN_IF_ERROR(
        f.WriteAttr(ckpt::kRoot, ckpt::kAttrOptimizerStep, opt ? opt->step() : int64_t{0}));
    ST_RETURN_IF_ERROR(f.WriteAttr(ckpt::kRoot, ckpt::kAttrModelConfig, s.model_config_json));
    ST_RETURN_IF_ERROR(f.WriteAttr(ckpt::kRoot, ckpt::kAttrTrainConfig, s.train_config_json));
    ST_RETURN_IF_ERROR(f.WriteAttr(ckpt::kRoot, ckpt::kAttrTokenizer, s.tokenizer));
    ST_RETURN_IF_ERROR(
        f.WriteAttr(ckpt::kRoot, ckpt::kAttrSamplerSeed, static_cast<int64_t>(s.sampler.seed)));
    ST_RETURN_IF_ERROR(f.WriteAttr(ckpt::kRoot, ckpt::kAttrSamplerEpoch, s.sampler.epoch));
    ST_RETURN_IF_ERROR(f.WriteAttr(ckpt::kRoot, ckpt::kAttrSamplerCursor, s.sampler.cursor));
    ST_RETURN_IF_ERROR(
        f.WriteAttr(ckpt::kRoot, ckpt::kAttrSamplerRank, static_cast<int64_t>(s.sampler.rank)));
    ST_RETURN_IF_ERROR(
        f.WriteAttr(ckpt::kRoot, ckpt::kAttrSamplerWorld, static_cast<int64_t>(s.sampler.world)));
    ST_RETURN_IF_ERROR(f.WriteDataset(ckpt::kTokenizerJson, ckpt::kTokenizerJsonType,
                                      {static_cast<int64_t>(s.tokenizer_json.size())},
                                      s.tokenizer_json.data()));
    for (const auto& item : model->named_parameters()) {
      ST_RETURN_IF_ERROR(WriteTensor(f, ckpt::ParamPath(item.key()), item.value()));
    }
    if (opt != nullptr) {
      for (const auto& p : opt->params()) {
        ST_RETURN_IF_ERROR(WriteTensor(f, ckpt::ExpAvgPath(p.name), p.exp_avg));
        ST_RETURN_IF_ERROR(WriteTensor(f, ckpt::ExpAvgSqPath(p.name), p.exp_avg_sq));
      }
    }
    if (!s.history_json.empty()) {
      ST_RETURN_IF_ERROR(f.WriteAttr(ckpt::kRoot, ckpt::kAttrHistory, s.history_json));
    }
    if (s.rng_cpu.defined()) ST_RETURN_IF_ERROR(WriteTensor(f, ckpt::kRngCpu, s.rng_cpu));
    if (s.lbl_history.defined()) {
      ST_RETURN_IF_ERROR(WriteTensor(f, ckpt::kLblHistory, s.lbl_history));
    }
    // Test hook (tests/train_kill_test.sh): hold the finished temp file this long before the
    // rename, so a kill can be aimed at a checkpoint write.
    if (const char* ms = std::getenv("ST_TEST_CHECKPOINT_WRITE_DELAY_MS")) {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(ms)));
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<CheckpointState> ReadCheckpointState(const std::string& path) {
  absl::StatusOr<H5File> f = H5File::Open(path);
  if (!f.ok()) return f.status();
  ST_RETURN_IF_ERROR(ckpt::CheckFormat(*f));
  ST_RETURN_IF_ERROR(ckpt::CheckVersion(*f));
  CheckpointState s;
  ST_ASSIGN_OR_RETURN(s.step, f->ReadIntAttr(ckpt::kRoot, ckpt::kAttrStep));
  ST_ASSIGN_OR_RETURN(s.model_config_json, f->ReadStringAttr(ckpt::kRoot, ckpt::kAttrModelConfig));
  ST_ASSIGN_OR_RETURN(s.train_config_json, f->ReadStringAttr(ckpt::kRoot, ckpt::kAttrTrainConfig));
  ST_ASSIGN_OR_RETURN(s.tokenizer, f->ReadStringAttr(ckpt::kRoot, ckpt::kAttrTokenizer));
  ST_ASSIGN_OR_RETURN(int64_t seed, f->ReadIntAttr(ckpt::kRoot, ckpt::kAttrSamplerSeed));
  s.sampler.seed = static_cast<uint64_t>(seed);
  ST_ASSIGN_OR_RETURN(s.sampler.epoch, f->ReadIntAttr(ckpt::kRoot, ckpt::kAttrSamplerEpoch));
  ST_ASSIGN_OR_RETURN(s.sampler.cursor, f->ReadIntAttr(ckpt::kRoot, ckpt::kAttrSamplerCursor));
  if (f->HasAttr(ckpt::kRoot, ckpt::kAttrSamplerWorld)) {
    ST_ASSIGN_OR_RETURN(int64_t rank, f->ReadIntAttr(ckpt::kRoot, ckpt::kAttrSamplerRank));
    ST_ASSIGN_OR_RETURN(int64_t world, f->ReadIntAttr(ckpt::kRoot, ckpt::kAttrSamplerWorld));
    s.sampler.rank = static_cast<int>(rank);
    s.sampler.world = static_cast<int>(world);
  }
  ST_ASSIGN_OR_RETURN(s.tokenizer_json, ckpt::ReadTokenizerJson(*f, s.tokenizer, "used"));
  if (f->HasAttr(ckpt::kRoot, ckpt::kAttrHistory)) {
    ST_ASSIGN_OR_RETURN(s.history_json, f->ReadStringAttr(ckpt::kRoot, ckpt::kAttrHistory));
  }
  if (f->Exists(ckpt::kRngCpu)) {
    ST_ASSIGN_OR_RETURN(s.rng_cpu, ReadWhole(*f, ckpt::kRngCpu, ckpt::kRngType, torch::kUInt8));
  }
  if (f->Exists(ckpt::kLblHistory)) {
    ST_ASSIGN_OR_RETURN(s.lbl_history,
                        ReadWhole(*f, ckpt::kLblHistory, ckpt::kLblHistoryType, torch::kInt64));
  }
  return s;
}

absl::Status LoadCheckpoint(const std::string& path, SmallThinkerForCausalLM& model, AdamW* opt) {
  absl::StatusOr<H5File> f = H5File::Open(path);
  if (!f.ok()) return f.status();
  for (auto& item : model->named_parameters()) {
    ST_RETURN_IF_ERROR(ReadInto(*f, ckpt::ParamPath(item.key()), item.value()));
  }
  if (opt != nullptr) {
    if (!f->Exists(ckpt::kOptimizerGroup)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, " holds weights only (no optimizer state) and cannot resume training"));
    }
    for (auto& p : opt->params()) {
      ST_RETURN_IF_ERROR(ReadInto(*f, ckpt::ExpAvgPath(p.name), p.exp_avg));
      ST_RETURN_IF_ERROR(ReadInto(*f, ckpt::ExpAvgSqPath(p.name), p.exp_avg_sq));
    }
    ST_ASSIGN_OR_RETURN(int64_t opt_step, f->ReadIntAttr(ckpt::kRoot, ckpt::kAttrOptimizerStep));
    opt->set_step(opt_step);
  }
  return absl::OkStatus();
}

absl::Status MergeCheckpoints(const std::vector<MergeInput>& inputs, const std::string& output) {
  if (inputs.size() < 2) {
    return absl::InvalidArgumentError("a merge takes at least two checkpoints");
  }
  double sum = 0;
  for (const MergeInput& in : inputs) {
    if (!std::isfinite(in.weight)) {
      return absl::InvalidArgumentError(absl::StrCat("the weight of ", in.path, " is not finite"));
    }
    if (in.path == output) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the output ", output, " is also an input; write the merge to another file"));
    }
    sum += in.weight;
  }
  if (!(std::abs(sum) > 1e-12)) {
    return absl::InvalidArgumentError(
        "the merge weights sum to 0; they are normalised by their sum");
  }
  CheckpointState first;
  SmallThinkerForCausalLM merged{nullptr};
  std::vector<torch::Tensor> acc;  // float64 sums, in named_parameters order
  nlohmann::json event = {{"event", "merge"}, {"inputs", nlohmann::json::array()}};
  for (size_t i = 0; i < inputs.size(); ++i) {
    const MergeInput& in = inputs[i];
    ST_ASSIGN_OR_RETURN(CheckpointState s, ReadCheckpointState(in.path));
    ST_ASSIGN_OR_RETURN(ModelConfig cfg, ParseModelConfig(s.model_config_json));
    if (i == 0) {
      first = s;
      merged = SmallThinkerForCausalLM(cfg);
    } else {
      ST_ASSIGN_OR_RETURN(ModelConfig cfg0, ParseModelConfig(first.model_config_json));
      if (cfg.ToJson() != cfg0.ToJson()) {
        return absl::InvalidArgumentError(absl::StrCat(in.path, " has another model config than ",
                                                       inputs[0].path, "; only one model merges"));
      }
      if (s.tokenizer != first.tokenizer || s.tokenizer_json != first.tokenizer_json) {
        return absl::InvalidArgumentError(
            absl::StrCat(in.path, " has another tokenizer than ", inputs[0].path));
      }
    }
    SmallThinkerForCausalLM m(cfg);
    ST_RETURN_IF_ERROR(LoadCheckpoint(in.path, m, nullptr));
    const double w = in.weight / sum;
    torch::NoGradGuard no_grad;
    size_t k = 0;
    for (const auto& item : m->named_parameters()) {
      torch::Tensor t = item.value().to(torch::kFloat64) * w;
      if (i == 0) {
        acc.push_back(t);
      } else {
        acc[k].add_(t);
      }
      ++k;
    }
    event["inputs"].push_back({{"path", in.path}, {"step", s.step}, {"weight", w}});
  }
  {
    torch::NoGradGuard no_grad;
    size_t k = 0;
    for (auto& item : merged->named_parameters()) item.value().copy_(acc[k++]);
  }
  nlohmann::json history = nlohmann::json::array();
  if (!first.history_json.empty()) {
    history = nlohmann::json::parse(first.history_json, nullptr, /*allow_exceptions=*/false);
    if (!history.is_array()) history = nlohmann::json::array();
  }
  history.push_back(event);
  first.history_json = history.dump();
  return SaveCheckpoint(output, merged, nullptr, first);
}

}  // namespace st
