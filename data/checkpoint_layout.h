// The training checkpoint's HDF5 layout: group, dataset and attribute names, version, dtypes.
// The one definition, used by its torch writer/reader (train/checkpoint.cpp) and by the
// torch-free exporter (infer/export/checkpoint_source.cpp).
//
// Layout (format "smallthinker.checkpoint", version 1), readable with h5py / h5ls:
//   /params/<hf name>                 float32, the parameter's shape
//   /optimizer/exp_avg/<hf name>      float32 (absent in weights-only checkpoints)
//   /optimizer/exp_avg_sq/<hf name>   float32
//   /state/rng_cpu                    uint8, torch's CPU generator state (optional)
//   /state/lbl_history                int64 [n, L, E], load-balance window counts (optional)
//   /tokenizer/json                   uint8 [n], the tokenizer.json bytes (empty for "byte"; a
//                                     dataset, since HDF5 attributes are limited to 64 KB)
//   attributes on "/": format, version, step, optimizer_step, model_config (JSON),
//   train_config (JSON), tokenizer (MakeTokenizer name), sampler_seed, sampler_epoch,
//   sampler_cursor, sampler_rank, sampler_world (the DataLoader position; the last two are
//   absent in checkpoints from before data parallelism), history (JSON, optional: merges)
// <hf name> is the Hugging Face parameter name as is ("model.norm.weight"): dots, no slashes,
// so /params is flat (a '/' in a name would make nested groups, joined back with '/').
// Changing any of this is a new format version: existing checkpoints must keep loading.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "data/hdf5.h"

namespace st::ckpt {

inline constexpr char kFormat[] = "smallthinker.checkpoint";
inline constexpr int64_t kVersion = 1;

// Attributes, all on kRoot.
inline constexpr char kRoot[] = "/";
inline constexpr char kAttrFormat[] = "format";                 // string, kFormat
inline constexpr char kAttrVersion[] = "version";               // int64, kVersion
inline constexpr char kAttrStep[] = "step";                     // int64, optimizer steps done
inline constexpr char kAttrOptimizerStep[] = "optimizer_step";  // int64, AdamW's step (0: none)
inline constexpr char kAttrModelConfig[] = "model_config";      // string, ModelConfig JSON
inline constexpr char kAttrTrainConfig[] = "train_config";      // string, TrainConfig JSON
inline constexpr char kAttrTokenizer[] = "tokenizer";           // string, MakeTokenizer name
inline constexpr char kAttrSamplerSeed[] = "sampler_seed";      // int64 (the uint64 seed's bits)
inline constexpr char kAttrSamplerEpoch[] = "sampler_epoch";    // int64
inline constexpr char kAttrSamplerCursor[] = "sampler_cursor";  // int64
inline constexpr char kAttrSamplerRank[] = "sampler_rank";      // int64
inline constexpr char kAttrSamplerWorld[] = "sampler_world";    // int64
// JSON list of what made this checkpoint besides training (optional; absent before merges):
// [{"event": "merge", "inputs": [{"path", "step", "weight"}...]}, ...].
inline constexpr char kAttrHistory[] = "history";  // string

// Groups and datasets.
inline constexpr char kParamsGroup[] = "/params";
inline constexpr char kOptimizerGroup[] = "/optimizer";
inline constexpr char kExpAvgGroup[] = "/optimizer/exp_avg";
inline constexpr char kExpAvgSqGroup[] = "/optimizer/exp_avg_sq";
inline constexpr char kRngCpu[] = "/state/rng_cpu";
inline constexpr char kLblHistory[] = "/state/lbl_history";
inline constexpr char kTokenizerJson[] = "/tokenizer/json";

// Element types.
inline constexpr H5Type kParamType = H5Type::kF32;  // parameters and both AdamW moments
inline constexpr H5Type kRngType = H5Type::kU8;
inline constexpr H5Type kLblHistoryType = H5Type::kI64;
inline constexpr H5Type kTokenizerJsonType = H5Type::kU8;

// The tokenizer that needs no kTokenizerJson (and the exporter's default when kAttrTokenizer is
// absent).
inline constexpr char kByteTokenizer[] = "byte";

// Dataset paths of a parameter (by its Hugging Face name) and of its AdamW moments.
std::string ParamPath(absl::string_view hf_name);
std::string ExpAvgPath(absl::string_view hf_name);
std::string ExpAvgSqPath(absl::string_view hf_name);

// InvalidArgument, naming the file, unless its kAttrFormat attribute is kFormat.
absl::Status CheckFormat(const H5File& f);
// The kAttrVersion attribute's read error, or InvalidArgument unless it is kVersion. (The
// exporter does not require it: files written by hand for tests carry only the format.)
absl::Status CheckVersion(const H5File& f);

// The kTokenizerJson bytes stored for `tokenizer` (a MakeTokenizer name): "" when the dataset
// is absent and `tokenizer` is kByteTokenizer; InvalidArgument when another tokenizer has none
// ("... it cannot be <use>") or the dataset is not 1-D.
absl::StatusOr<std::string> ReadTokenizerJson(const H5File& f, absl::string_view tokenizer,
                                              absl::string_view use);

}  // namespace st::ckpt
