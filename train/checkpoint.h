// HDF5 checkpoints: parameters under their Hugging Face names, AdamW state, step, RNG, data
// position, load-balance window, and both configs as attributes. Readable with h5py / h5ls.
//
// Layout (format "smallthinker.checkpoint", version 1):
//   /params/<hf name>                 float32, the parameter's shape
//   /optimizer/exp_avg/<hf name>      float32 (absent in weights-only checkpoints)
//   /optimizer/exp_avg_sq/<hf name>   float32
//   /state/rng_cpu                    uint8, torch's CPU generator state
//   /state/lbl_history                int64 [n, L, E], load-balance window counts
//   /tokenizer/json                   uint8, the tokenizer.json bytes (empty for "byte"; a
//                                     dataset, since HDF5 attributes are limited to 64 KB)
//   attributes on "/": format, version, step, optimizer_step, model_config (JSON),
//   train_config (JSON), tokenizer (MakeTokenizer name), sampler_seed, sampler_epoch,
//   sampler_cursor, sampler_rank, sampler_world (the DataLoader position)
// Written to "<path>.tmp" and renamed: an interrupted save never destroys the last one.
#pragma once

#include <torch/torch.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/token_dataset.h"
#include "model/transformer.h"
#include "train/optim.h"

namespace st {

struct CheckpointState {
  int64_t step = 0;           // optimizer steps completed
  DataLoader::State sampler;  // data position
  torch::Tensor lbl_history;  // LoadBalancePool::History()
  torch::Tensor rng_cpu;      // torch::get_rng_state-like bytes (uint8)
  std::string model_config_json;
  std::string train_config_json;
  std::string tokenizer;       // MakeTokenizer name
  std::string tokenizer_json;  // MakeTokenizer json ("" for "byte")
};

// `opt` may be null (weights only).
absl::Status SaveCheckpoint(const std::string& path, SmallThinkerForCausalLM& model,
                            const AdamW* opt, const CheckpointState& state);

// Reads only the attributes (configs, tokenizer, step) so a model can be built first.
absl::StatusOr<CheckpointState> ReadCheckpointState(const std::string& path);

// Loads parameters (and optimizer state when `opt` is given) into an already built model.
// Every parameter must be present with the right shape; errors name the tensor.
absl::Status LoadCheckpoint(const std::string& path, SmallThinkerForCausalLM& model, AdamW* opt);

}  // namespace st
