// st-train: pretrain a SmallThinker model from a JSON train config (single process).
#include <gflags/gflags.h>

#include <cstdio>

#include "model/config.h"
#include "train/cli.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

DEFINE_string(config, "", "train config JSON (configs/train/*.json)");
DEFINE_string(run_dir, "", "directory for checkpoint.h5 and metrics.jsonl");
DEFINE_bool(resume, false, "continue the run in --run_dir from its checkpoint");
DEFINE_string(device, "cpu", "cpu, cuda or cuda:N");
DEFINE_string(model_config, "", "override the train config's model_config path");
DEFINE_string(data, "", "override the train config's token file");
DEFINE_int64(max_steps, 0, "override max_steps (also to extend a resumed run)");
DEFINE_int32(threads, -1, "override intra-op threads (0 = all cores)");
DEFINE_int64(stop_at_step, -1, "stop at this step as if interrupted (checkpoint is written)");
DEFINE_bool(quiet, false, "no progress lines");

namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "st-train: error: %s\n", std::string(s.message()).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "pretrain a SmallThinker model\n"
      "  st-train --config configs/train/tiny.json --run_dir runs/tiny\n"
      "  st-train --run_dir runs/tiny --resume            # continue an interrupted run");
  if (st::HandleHelp(argc, argv, "train/train_main")) return 0;
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (argc > 1) {
    std::fprintf(stderr,
                 "st-train: error: unexpected argument '%s' (flags look like --name=value)\n",
                 argv[1]);
    return 2;
  }
  if (FLAGS_run_dir.empty()) {
    std::fprintf(stderr, "st-train: error: --run_dir is required (see --help)\n");
    return 2;
  }
  if (auto dev = st::ParseDevice(FLAGS_device); !dev.ok()) return Fail(dev.status());
  st::TrainerOptions opts;
  opts.run_dir = FLAGS_run_dir;
  opts.device = FLAGS_device;
  opts.resume = FLAGS_resume;
  opts.stop_at_step = FLAGS_stop_at_step;
  opts.quiet = FLAGS_quiet;
  if (FLAGS_resume) {
    // The run's own configs come from its checkpoint, so the resumed run is the same run.
    auto state = st::ReadCheckpointState(FLAGS_run_dir + "/checkpoint.h5");
    if (!state.ok()) return Fail(state.status());
    auto train = st::ParseTrainConfig(state->train_config_json);
    if (!train.ok()) return Fail(train.status());
    opts.train = *train;
  } else {
    if (FLAGS_config.empty()) {
      std::fprintf(stderr, "st-train: error: --config is required for a new run (see --help)\n");
      return 2;
    }
    auto train = st::LoadTrainConfig(FLAGS_config);
    if (!train.ok()) return Fail(train.status());
    opts.train = *train;
  }
  if (!FLAGS_model_config.empty()) opts.train.model_config = FLAGS_model_config;
  if (!FLAGS_data.empty()) opts.train.data = FLAGS_data;
  if (FLAGS_max_steps > 0) opts.train.max_steps = FLAGS_max_steps;
  if (FLAGS_threads >= 0) opts.train.threads = FLAGS_threads;
  if (!FLAGS_resume) {
    auto model = st::LoadModelConfig(opts.train.model_config);
    if (!model.ok()) return Fail(model.status());
    opts.model = *model;
  }
  auto trainer = st::Trainer::Create(opts);
  if (!trainer.ok()) return Fail(trainer.status());
  absl::Status s = (*trainer)->Run();
  if (!s.ok()) return Fail(s);
  return 0;
}
