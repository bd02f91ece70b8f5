// st-train: pretrain a SmallThinker model from a JSON train config, in one process or
// data-parallel over c10d (launch N copies: scripts/launch_local.sh, torchrun-style env, srun).
#include <gflags/gflags.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "infer/tools/cli.h"
#include "model/config.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

DEFINE_string(config, "", "train config JSON (configs/train/*.json)");
DEFINE_string(run_dir, "", "directory for checkpoint.h5 and metrics.jsonl");
DEFINE_bool(resume, false, "continue the run in --run_dir from its checkpoint");
DEFINE_string(stage, "",
              "with --resume: start a new stage with this train config (its data, seq_len, "
              "schedule; max_steps counts the stage's steps) from the checkpoint's weights, "
              "optimizer state and step");
DEFINE_double(rope_theta, 0, "with --stage: the model's RoPE base from this stage on");
DEFINE_int32(max_position_embeddings, 0,
             "with --stage: the model's context length from this stage on");
DEFINE_string(device, "cpu", "cpu, cuda or cuda:N");
DEFINE_string(model_config, "", "override the train config's model_config path");
DEFINE_string(data, "", "override the train config's token file");
DEFINE_int64(max_steps, 0, "override max_steps (also to extend a resumed run)");
DEFINE_int64(stop_at_step, -1, "stop at this step as if interrupted (checkpoint is written)");
DEFINE_bool(quiet, false, "no progress lines");
// Data parallelism (c10d, Gloo). Unset flags fall back to RANK / WORLD_SIZE / LOCAL_RANK /
// MASTER_ADDR / MASTER_PORT (torchrun), SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, or
// OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK.
DEFINE_int32(rank, 0, "this process's rank in [0, world_size)");
DEFINE_int32(world_size, 1, "number of data-parallel processes");
DEFINE_string(master_addr, "127.0.0.1", "host of rank 0 (runs the TCPStore rendezvous)");
DEFINE_int32(master_port, 29500, "TCP port of the rendezvous on master_addr");
DEFINE_string(store_file, "", "rendezvous through this file on a shared filesystem instead of TCP");
DEFINE_double(dist_timeout, 300,
              "seconds a collective may wait for the other ranks before the run fails");
DEFINE_int32(lbl_group_size, -1,
             "override the train config's lbl_group_size (ranks per load-balance group; 1 = "
             "per rank, 0 = all ranks)");
DEFINE_int32(bucket_mb, 8, "gradient all-reduce bucket size in MiB");

namespace {

int Fail(const absl::Status& s) { return st::cli::Fail(s); }

// SIGINT / SIGTERM: the first asks the trainer to stop after the step in progress and write
// its checkpoint; a second exits at once (status 130), leaving the last complete checkpoint as
// it was (checkpoints are written under a temporary name and renamed).
std::atomic<int> g_stop_signals{0};
static_assert(std::atomic<int>::is_always_lock_free, "used from a signal handler");

void OnStopSignal(int) {
  if (g_stop_signals.fetch_add(1) > 0) _exit(130);
  static const char kMsg[] =
      "\nst-train: stopping after this step and writing the checkpoint (signal again to exit "
      "at once)\n";
  (void)!write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
}

void InstallStopHandlers() {
  struct sigaction sa = {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  st::cli::Spec spec;
  spec.name = "st-train";
  spec.usage =
      "st-train --config configs/train/tiny.json --run_dir runs/tiny\n"
      "st-train --run_dir runs/tiny --resume            # continue an interrupted run\n"
      "st-train --run_dir runs/tiny --resume --stage configs/train/long.json --rope_theta 1e6";
  spec.about =
      "Pretrains a SmallThinker model from a JSON train config, in one process or data-parallel "
      "over c10d (launch N copies: scripts/launch_local.sh, torchrun-style env, srun). --threads "
      "overrides the train config's intra-op threads.";
  spec.groups = {{"st-train flags", "train/train_main.cpp", {"threads"}}};
  const st::cli::Parsed parsed = st::cli::Parse(spec, argc, argv);
  if (parsed.done()) return parsed.exit_code;
  if (FLAGS_run_dir.empty()) return st::cli::UsageError("--run_dir is required");
  if (auto dev = st::ParseDevice(FLAGS_device); !dev.ok()) {
    return st::cli::UsageError(dev.status().message());
  }
  st::TrainerOptions opts;
  opts.run_dir = FLAGS_run_dir;
  opts.device = FLAGS_device;
  opts.resume = FLAGS_resume;
  opts.stop_at_step = FLAGS_stop_at_step;
  opts.quiet = FLAGS_quiet;
  {
    st::DistOptions& d = opts.dist;
    d.rank = FLAGS_rank;
    d.world = FLAGS_world_size;
    d.master_addr = FLAGS_master_addr;
    d.master_port = FLAGS_master_port;
    d.store_file = FLAGS_store_file;
    d.timeout_s = FLAGS_dist_timeout;
    d.bucket_bytes = static_cast<int64_t>(FLAGS_bucket_mb) << 20;
    auto is_default = [](const char* name) {
      return gflags::GetCommandLineFlagInfoOrDie(name).is_default;
    };
    absl::Status s = st::DistOptionsFromEnv(&d, !is_default("rank"), !is_default("world_size"),
                                            !is_default("master_addr"), !is_default("master_port"));
    if (!s.ok()) return Fail(s);
    if (FLAGS_bucket_mb < 1) return st::cli::UsageError("--bucket_mb must be >= 1");
  }
  if (!FLAGS_stage.empty() && !FLAGS_resume) {
    return st::cli::UsageError("--stage starts a new stage of an existing run: add --resume");
  }
  if (FLAGS_stage.empty() && (FLAGS_rope_theta != 0 || FLAGS_max_position_embeddings != 0)) {
    return st::cli::UsageError(
        "--rope_theta and --max_position_embeddings change the model only at a new --stage");
  }
  if (FLAGS_rope_theta < 0 || FLAGS_max_position_embeddings < 0) {
    return st::cli::UsageError("--rope_theta and --max_position_embeddings must be positive");
  }
  if (!FLAGS_stage.empty()) {
    auto train = st::LoadTrainConfig(FLAGS_stage);
    if (!train.ok()) return Fail(train.status());
    opts.train = *train;
    opts.new_stage = true;
    opts.stage_rope_theta = FLAGS_rope_theta;
    opts.stage_max_position_embeddings = FLAGS_max_position_embeddings;
  } else if (FLAGS_resume) {
    // The run's own configs come from its checkpoint, so the resumed run is the same run.
    auto state = st::ReadCheckpointState(FLAGS_run_dir + "/checkpoint.h5");
    if (!state.ok()) return Fail(state.status());
    auto train = st::ParseTrainConfig(state->train_config_json);
    if (!train.ok()) return Fail(train.status());
    opts.train = *train;
  } else {
    if (FLAGS_config.empty()) return st::cli::UsageError("--config is required for a new run");
    auto train = st::LoadTrainConfig(FLAGS_config);
    if (!train.ok()) return Fail(train.status());
    opts.train = *train;
  }
  if (!FLAGS_model_config.empty()) opts.train.model_config = FLAGS_model_config;
  if (!FLAGS_data.empty()) opts.train.data = FLAGS_data;
  if (FLAGS_max_steps > 0) opts.train.max_steps = FLAGS_max_steps;
  if (st::cli::FlagGiven("threads")) opts.train.threads = st::cli::Threads();
  if (FLAGS_lbl_group_size >= 0) opts.train.lbl_group_size = FLAGS_lbl_group_size;
  if (!FLAGS_resume) {
    auto model = st::LoadModelConfig(opts.train.model_config);
    if (!model.ok()) return Fail(model.status());
    opts.model = *model;
  }
  // Progress lines reach a log file as they are printed (a killed run keeps its log).
  setvbuf(stdout, nullptr, _IOLBF, 0);
  st::KeepFreedMemory();
  opts.stop_signals = &g_stop_signals;
  InstallStopHandlers();
  auto trainer = st::Trainer::Create(opts);
  if (!trainer.ok()) return Fail(trainer.status());
  absl::Status s = (*trainer)->Run();
  if (!s.ok()) return Fail(s);
  return 0;  // finished, or stopped by a signal with the checkpoint written
}
