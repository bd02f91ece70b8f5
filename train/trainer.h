// Trainer: the pretraining loop (micro-batches, accumulation, clipping, schedule, periodic
// validation, progress, JSON-lines metrics, HDF5 checkpoints, resume), in one process or
// data-parallel over c10d (distributed.h): every rank reads its own share of the data, the
// gradients are averaged, rank 0 alone evaluates, logs and writes checkpoints.
//
// A run directory holds: checkpoint.h5 (latest), metrics.jsonl (one JSON object a line:
// "train", "eval" and "router" records), and config copies for people (model.json,
// train.json). Threads: one Trainer per process; it sets torch's intra-op thread count.
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/token_dataset.h"
#include "model/config.h"
#include "model/transformer.h"
#include "train/distributed.h"
#include "train/losses.h"
#include "train/optim.h"
#include "train/train_config.h"

namespace st {

struct CheckpointState;  // train/checkpoint.h

struct TrainerOptions {
  TrainConfig train;
  ModelConfig model;
  std::string run_dir;
  std::string device = "cpu";  // "cpu", "cuda", "cuda:1"
  bool resume = false;         // continue from run_dir/checkpoint.h5
  // With resume: start a new stage from the checkpoint, as the paper's long-context stage.
  // `train` is the stage's config (its data, seq_len, schedule; max_steps counts the stage's
  // steps); the weights, optimizer state and step carry on, the data order starts afresh, and
  // the model config is the checkpoint's with the overrides below (0 = keep). The checkpoint's
  // history gains a "stage" event; a later plain --resume stays in the stage.
  bool new_stage = false;
  double stage_rope_theta = 0;
  int stage_max_position_embeddings = 0;
  int64_t stop_at_step = -1;  // stop (and checkpoint) here, as if interrupted; -1 = off
  bool quiet = false;         // no console progress
  // SIGINT / SIGTERM count from st-train's handler (null: none). Once it is above zero the run
  // stops after the step in progress, writes its checkpoint and returns OK with interrupted()
  // true; with data parallelism the ranks agree on the step (a one-number all-reduce a step).
  const std::atomic<int>* stop_signals = nullptr;
  // Data parallelism (world 1: a single process). The trainer owns the process group.
  DistOptions dist;
};

struct StepRecord {
  int64_t step;  // 1-based optimizer step just completed
  double loss, ce, lbl, lr, grad_norm;
};

class Trainer {
 public:
  // Opens the data (TrainConfig::data is a dataset directory from st-data prepare; its
  // tokenizer comes from the dataset), builds (or resumes) the model and optimizer. Errors are
  // actionable: missing files, a run directory that already holds a checkpoint without
  // --resume, a dataset whose vocabulary is larger than the model's or whose tokenizer differs
  // from the resumed checkpoint's, an unavailable device.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const TrainerOptions& opts);

  // Trains from the current step to max_steps (or stop_at_step), evaluating and
  // checkpointing on the configured cadence and at the end.
  absl::Status Run();

  // Mean cross-entropy (nats/token) over the configured validation batches.
  double Evaluate();

  int64_t step() const { return step_; }
  // True when Run returned early on a stop signal (the checkpoint holds step()).
  bool interrupted() const { return interrupted_; }
  const Distributed& dist() const { return *dist_; }
  const std::vector<StepRecord>& history() const { return history_; }
  SmallThinkerForCausalLM& model() { return model_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  std::string checkpoint_path() const;

 private:
  struct LoopState;       // the training loop's state between log lines
  struct StepLosses;      // one optimizer step's losses
  struct IntervalTiming;  // throughput and timing since the last log line

  Trainer() = default;
  // Create's steps, in order: the run directory (on --resume: the checkpoint's state, whose
  // model config replaces opts_.model); the tokenizer, train and val data; this rank's place in
  // the job (dist_, sampler_, its device); model, optimizer, load-balance pool and schedule;
  // the resumed weights and state; rank 0's parameters everywhere and the gradient buckets.
  absl::StatusOr<CheckpointState> OpenRunDirectory();
  absl::Status OpenData(const CheckpointState& resumed);
  absl::Status JoinJob();
  void BuildModel();
  absl::Status Restore(const CheckpointState& resumed);
  absl::Status SyncParameters();
  // RunSteps and its parts. AccumulateGradients runs the micro-batches' forward and backward;
  // MeanOverJob averages their losses over micro-batches and ranks (a collective);
  // GroupExpertLoad is each load-balance group's mean expert load [G][L][E] (a collective);
  // TrainRecord is the "train" metrics line.
  absl::Status RunSteps();
  LoopState StartLoop();
  absl::StatusOr<StepLosses> AccumulateGradients(LoopState& s);
  StepLosses MeanOverJob(StepLosses sum);
  void LogInterval(LoopState& s, const StepLosses& m, double lr, double grad_norm);
  std::vector<std::vector<std::vector<double>>> GroupExpertLoad(const RouterStats& stats);
  void PrintProgress(int64_t end, const StepLosses& m, double lr, double grad_norm,
                     const IntervalTiming& time, double mean_sparsity) const;
  std::string TrainRecord(int64_t tokens_per_step, const StepLosses& m, double lr, double grad_norm,
                          const IntervalTiming& time) const;
  void EvaluateAndLog();  // rank 0
  absl::Status SaveCheckpointNow();
  bool StopRequested();  // a collective when data parallel
  // On --resume (rank 0): removes checkpoint temp files a killed run left, and cuts
  // metrics.jsonl back to the records of steps the checkpoint holds (and whole lines), so the
  // resumed run's records follow on from them.
  absl::Status TidyRunDirectory();
  void AppendMetrics(const std::string& json_line);

  TrainerOptions opts_;
  torch::Device device_{torch::kCPU};
  std::unique_ptr<TokenDataset> train_data_, val_data_;
  std::unique_ptr<Distributed> dist_;
  std::unique_ptr<DataLoader> sampler_;  // this rank's share of the data stream
  SmallThinkerForCausalLM model_{nullptr};
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<LoadBalancePool> lbl_pool_;
  LrSchedule schedule_;
  std::unique_ptr<Tokenizer> tokenizer_;  // the dataset's (stored in checkpoints)
  int64_t step_ = 0;
  bool interrupted_ = false;
  std::string ckpt_history_;  // the resumed checkpoint's history (merges, stages), carried on
  int64_t stage_start_ = 0;   // the step the current stage began at (its schedule's step 0)
  std::vector<StepRecord> history_;
};

// Makes glibc keep freed memory for the next step instead of returning it to the system: a
// training step frees and reallocates the same large activation and gradient buffers, and
// with glibc's defaults (blocks over 32 MiB mmap'ed, the heap trimmed) every step faults them
// in again as zeroed pages (perf on st-train-bench small: 8% of the time in page clearing and
// faults). Call once at the start of a training process.
void KeepFreedMemory();

// Mixed precision for the forward pass and losses of one micro-batch: with precision "bf16"
// the matrix products in scope run in bfloat16 through LibTorch's autocast (CPU, or CUDA for
// a CUDA device); parameters, gradients, optimizer state and the losses' reductions stay fp32.
// "fp32" does nothing. Backward runs after the guard is gone (autograd keeps the casts).
class AutocastGuard {
 public:
  AutocastGuard(const std::string& precision, const torch::Device& device);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool on_ = false, cuda_ = false;
};

// Parses "cpu" / "cuda" / "cuda:N" and checks that the device is usable.
absl::StatusOr<torch::Device> ParseDevice(const std::string& name);

}  // namespace st
