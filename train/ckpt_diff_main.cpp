// st-ckpt-diff: compares the parameters of two checkpoints (same model config), e.g. a
// data-parallel run against a single-process one. Exit status 0 when every element agrees
// within |a - b| <= atol + rtol * |b|, 1 otherwise, 2 on bad input.
#include <gflags/gflags.h>

#include <cmath>
#include <cstdio>

#include "model/config.h"
#include "train/checkpoint.h"

DEFINE_double(rtol, 1e-4, "relative tolerance");
DEFINE_double(atol, 1e-6, "absolute tolerance");

int main(int argc, char** argv) {
  gflags::SetUsageMessage("st-ckpt-diff a/checkpoint.h5 b/checkpoint.h5 [--rtol 1e-4 --atol 1e-6]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (argc != 3) {
    std::fprintf(stderr, "st-ckpt-diff: give two checkpoint files (see --help)\n");
    return 2;
  }
  st::SmallThinkerForCausalLM models[2] = {nullptr, nullptr};
  for (int i = 0; i < 2; ++i) {
    auto state = st::ReadCheckpointState(argv[1 + i]);
    if (!state.ok()) {
      std::fprintf(stderr, "st-ckpt-diff: %s\n", std::string(state.status().message()).c_str());
      return 2;
    }
    auto cfg = st::ParseModelConfig(state->model_config_json);
    if (!cfg.ok()) {
      std::fprintf(stderr, "st-ckpt-diff: %s\n", std::string(cfg.status().message()).c_str());
      return 2;
    }
    models[i] = st::SmallThinkerForCausalLM(*cfg);
    absl::Status s = st::LoadCheckpoint(argv[1 + i], models[i], nullptr);
    if (!s.ok()) {
      std::fprintf(stderr, "st-ckpt-diff: %s\n", std::string(s.message()).c_str());
      return 2;
    }
  }
  auto a = models[0]->named_parameters(), b = models[1]->named_parameters();
  if (a.size() != b.size()) {
    std::fprintf(stderr, "st-ckpt-diff: the models differ (%zu vs %zu tensors)\n", a.size(),
                 b.size());
    return 2;
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
