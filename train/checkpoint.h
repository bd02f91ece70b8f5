// HDF5 checkpoints: parameters under their Hugging Face names, AdamW state, step, RNG, data
// position, load-balance window, and both configs as attributes. Readable with h5py / h5ls.
// The layout (names, attributes, version, dtypes) is data/checkpoint_layout.h's.
// Written under a temp name and renamed: an interrupted save never destroys the last one.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

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
  std::string history_json;    // ckpt::kAttrHistory ("" = none)
};

// `opt` may be null (weights only).
absl::Status SaveCheckpoint(const std::string& path, SmallThinkerForCausalLM& model,
                            const AdamW* opt, const CheckpointState& state);

// Reads only the attributes (configs, tokenizer, step) so a model can be built first.
absl::StatusOr<CheckpointState> ReadCheckpointState(const std::string& path);

// Loads parameters (and optimizer state when `opt` is given) into an already built model.
// Every parameter must be present with the right shape; errors name the tensor.
absl::Status LoadCheckpoint(const std::string& path, SmallThinkerForCausalLM& model, AdamW* opt);

// Linear merge (the paper averages its SFT checkpoints this way): output = sum_i w_i * input_i
// over every parameter, with the weights normalised to sum to 1 (the sum computed in float64).
// The inputs must share one model config and tokenizer (errors name the first that differs).
// The output is weights only (no optimizer state: it cannot --resume, it exports and
// fine-tunes), takes the first input's other state, and its history gains a "merge" event
// naming the inputs, their steps and normalised weights. Written atomically; `output` must
// not be one of the inputs.
struct MergeInput {
  std::string path;
  double weight = 1.0;
};
absl::Status MergeCheckpoints(const std::vector<MergeInput>& inputs, const std::string& output);

}  // namespace st
