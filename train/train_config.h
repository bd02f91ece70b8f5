// TrainConfig: the JSON train config (configs/train/*.json), validated on load, unknown keys
// rejected. Command-line flags of st-train override single fields after loading.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace st {

struct TrainConfig {
  // Paths: LoadTrainConfig resolves relative ones against the config file's directory.
  std::string model_config;   // path of a model config JSON (HF keys)
  std::string data;           // token file written by st-data
  int seq_len = 128;          // tokens a sequence
  int micro_batch_size = 16;  // sequences a micro-batch
  int grad_accum_steps = 1;   // micro-batches an optimizer step
  int64_t max_steps = 300;    // optimizer steps
  // Optimizer and schedule.
  double lr = 1e-3;           // peak learning rate
  double min_lr_ratio = 0.1;  // cosine / wsd end at min_lr_ratio * lr
  int64_t warmup_steps = 30;
  std::string schedule = "cosine";  // cosine | wsd | constant
  double wsd_decay_fraction = 0.2;
  double beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-8, weight_decay = 0.1;
  double grad_clip = 1.0;  // max global grad norm; 0 disables
  // Router losses.
  double lbl_coef = 0.01;  // load-balance loss coefficient
  int lbl_window = 1;      // micro-batches pooled into the token fractions f_i
  // Data-parallel runs: ranks per load-balance group whose token fractions are summed before
  // the loss (1 = per-rank loss, 0 = the whole world: the global-batch loss).
  int lbl_group_size = 0;
  double z_loss_coef = 0.0;  // router z-loss (0 = off)
  // Cadence.
  int64_t log_interval = 10;          // steps between console lines / metrics
  int64_t eval_interval = 50;         // steps between validation runs (0 = only at the end)
  int eval_batches = 8;               // validation micro-batches per run
  int64_t checkpoint_interval = 100;  // steps between checkpoints (0 = only at the end)
  uint64_t seed = 1234;               // model init and data order
  int threads = 0;                    // intra-op threads; 0 = all cores
  // "fp32", or "bf16": forward and losses under autocast to bfloat16 (fp32 master weights,
  // gradients, optimizer state and reductions). Pays only where the hardware has bf16
  // arithmetic (AVX512-BF16 / AMX, recent GPUs); emulated elsewhere and much slower.
  std::string precision = "fp32";
  // Gradient checkpointing: every decoder layer keeps only its input in the forward pass and
  // runs again in backward (less activation memory, one more forward's time).
  bool grad_checkpoint = false;

  std::string ToJson() const;
};

absl::StatusOr<TrainConfig> ParseTrainConfig(absl::string_view json_text);
absl::StatusOr<TrainConfig> LoadTrainConfig(const std::string& path);
absl::Status ValidateTrainConfig(const TrainConfig& cfg);

}  // namespace st
