// st-ckpt-diff: compares the parameters of two checkpoints (same model config), e.g. a
// data-parallel run against a single-process one. Exit status 0 when every element agrees
// within |a - b| <= atol + rtol * |b|, 1 otherwise or when a checkpoint cannot be read, 2 on a
// usage error.
#include <gflags/gflags.h>

#include <cmath>
#include <cstdio>

#include "infer/tools/cli.h"
#include "model/config.h"
#include "train/checkpoint.h"

DEFINE_double(rtol, 1e-4, "relative tolerance");
DEFINE_double(atol, 1e-6, "absolute tolerance");

int main(int argc, char** argv) {
  st::cli::Spec spec;
  spec.name = "st-ckpt-diff";
  spec.usage = "st-ckpt-diff a/checkpoint.h5 b/checkpoint.h5 [--rtol 1e-4 --atol 1e-6]";
  spec.about =
      "Compares the parameters of two checkpoints of one model config. Exit status: 0 when every "
      "element agrees within |a - b| <= atol + rtol * |b|; 1 when some do not (or a checkpoint "
      "cannot be read: the message says which); 2 on a usage error.";
  spec.groups = {{"st-ckpt-diff flags", "train/ckpt_diff_main.cpp", {}}};
  spec.min_args = spec.max_args = 2;
  spec.args_name = "checkpoint file";
  const st::cli::Parsed parsed = st::cli::Parse(spec, argc, argv);
  if (parsed.done()) return parsed.exit_code;
  st::SmallThinkerForCausalLM models[2] = {nullptr, nullptr};
  for (int i = 0; i < 2; ++i) {
    const std::string& path = parsed.args[i];
    auto state = st::ReadCheckpointState(path);
    if (!state.ok()) return st::cli::Fail(state.status());
    auto cfg = st::ParseModelConfig(state->model_config_json);
    if (!cfg.ok()) return st::cli::Fail(absl::StrCat(path, ": ", cfg.status().message()));
    models[i] = st::SmallThinkerForCausalLM(*cfg);
    absl::Status s = st::LoadCheckpoint(path, models[i], nullptr);
    if (!s.ok()) return st::cli::Fail(s);
  }
  auto a = models[0]->named_parameters(), b = models[1]->named_parameters();
  if (a.size() != b.size()) {
    return st::cli::Fail(
        absl::StrCat("the models differ (", a.size(), " vs ", b.size(), " tensors)"));
  }
  double max_abs = 0, max_rel = 0;
  int64_t bad = 0, total = 0;
  std::string worst;
  for (const auto& item : a) {
    const torch::Tensor x = item.value().detach().to(torch::kFloat64);
    const torch::Tensor y = b[item.key()].detach().to(torch::kFloat64);
    const torch::Tensor d = (x - y).abs();
    const double m = d.max().item<double>();
    const double r = (d / (y.abs() + 1e-12)).max().item<double>();
    bad += (d > FLAGS_atol + FLAGS_rtol * y.abs()).sum().item<int64_t>();
    total += x.numel();
    if (m > max_abs) {
      max_abs = m;
      worst = item.key();
    }
    max_rel = std::max(max_rel, r);
  }
  std::printf("%lld of %lld parameters differ beyond atol %g + rtol %g; max |a - b| %.3g (%s)\n",
              static_cast<long long>(bad), static_cast<long long>(total), FLAGS_atol, FLAGS_rtol,
              max_abs, worst.c_str());
  return bad == 0 ? 0 : 1;
}
