// st-train-bench: training throughput of a model config on this machine, as tokens/s and as a
// fraction of the matmul throughput (plain torch::mm) measured in the same run.
#include <gflags/gflags.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "infer/tools/cli.h"
#include "model/config.h"
#include "model/transformer.h"
#include "train/losses.h"
#include "train/optim.h"
#include "train/trainer.h"

DEFINE_string(model_config, "configs/model/tiny.json", "model config JSON");
DEFINE_int32(seq_len, 128, "tokens a sequence");
DEFINE_int32(batch, 16, "sequences a step");
DEFINE_int32(steps, 10, "timed steps (after 2 warm-up steps)");
DEFINE_int32(mm_size, 1024, "square matmul size for the reference throughput");
DEFINE_bool(grad_checkpoint, false,
            "gradient checkpointing: each layer keeps only its input and runs again in backward");
DEFINE_string(precision, "fp32", "fp32, or bf16 (matrix products in bfloat16 through autocast)");
DEFINE_string(moe, "grouped",
              "expert computation: grouped (three batched products over the stacked experts) or "
              "loop (one index_select / three products / index_add_ per expert, the reference)");

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a) {
  return std::chrono::duration<double>(Clock::now() - a).count();
}

// fp32 GFLOP/s of torch::mm on n x n matrices.
double MatmulGflops(int64_t n) {
  torch::Tensor a = torch::randn({n, n}), b = torch::randn({n, n}), c;
  for (int i = 0; i < 3; ++i) c = torch::mm(a, b);
  int iters = 0;
  const auto t0 = Clock::now();
  while (Seconds(t0) < 1.0) {
    c = torch::mm(a, b);
    ++iters;
  }
  return 2.0 * n * n * n * iters / Seconds(t0) / 1e9;
}

// The process's peak resident set (VmHWM) in MiB, 0 when /proc does not say.
double PeakRssMib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  st::KeepFreedMemory();
  st::cli::Spec spec;
  spec.name = "st-train-bench";
  spec.usage = "st-train-bench --model_config configs/model/tiny.json [--threads N]";
  spec.about =
      "Training throughput of a model config on this machine, as tokens/s and as a fraction of "
      "the matmul throughput (torch::mm) measured in the same run.";
  spec.groups = {{"st-train-bench flags", "train/bench_main.cpp", {"threads"}}};
  const st::cli::Parsed parsed = st::cli::Parse(spec, argc, argv);
  if (parsed.done()) return parsed.exit_code;
  if (FLAGS_seq_len < 1 || FLAGS_batch < 1 || FLAGS_steps < 1 || FLAGS_mm_size < 1) {
    return st::cli::UsageError("--seq_len, --batch, --steps and --mm_size must be >= 1");
  }
  if (FLAGS_precision != "fp32" && FLAGS_precision != "bf16") {
    return st::cli::UsageError("--precision must be fp32 or bf16, got '" + FLAGS_precision + "'");
  }
  if (FLAGS_moe != "grouped" && FLAGS_moe != "loop") {
    return st::cli::UsageError("--moe must be grouped or loop, got '" + FLAGS_moe + "'");
  }
  auto cfg = st::LoadModelConfig(FLAGS_model_config);
  if (!cfg.ok()) return st::cli::Fail(cfg.status());
  const int threads = st::cli::ResolvedThreads();
  torch::set_num_threads(threads);
  const double mm_gflops = MatmulGflops(FLAGS_mm_size);

  torch::manual_seed(0);
  st::SmallThinkerForCausalLM model(*cfg);
  model->SetGroupedExperts(FLAGS_moe == "grouped");
  model->model->checkpoint_layers = FLAGS_grad_checkpoint;
  model->train();
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& it : model->named_parameters()) named.emplace_back(it.key(), it.value());
  st::AdamW opt(named, st::AdamWOptions{});
  st::LoadBalancePool pool(cfg->num_hidden_layers, cfg->moe_num_primary_experts, 1);
  const int S = FLAGS_seq_len, B = FLAGS_batch;
  auto step = [&]() {
    torch::Tensor batch = torch::randint(0, cfg->vocab_size, {B, S + 1}, torch::kInt64);
    opt.ZeroGrad();
    torch::Tensor loss;
    {
      st::AutocastGuard amp(FLAGS_precision, torch::kCPU);
      st::ForwardOutput out = model->forward(batch.narrow(1, 0, S));
      loss = st::ComputeLosses(out, batch.narrow(1, 1, S), *cfg, st::LossOptions{}, &pool).total;
    }
    loss.backward();
    opt.Step(1e-4);
  };
  for (int i = 0; i < 2; ++i) step();
  const auto t0 = Clock::now();
  for (int i = 0; i < FLAGS_steps; ++i) step();
  const double secs = Seconds(t0);
  const double tok_s = static_cast<double>(FLAGS_steps) * B * S / secs;

  // Matmul FLOPs a token, forward + backward = 3 x forward: 2 per active weight (non-embedding
  // weights with k of E experts, plus the LM head), plus attention scores and mixing over the
  // keys each query attends (S/2 on average causally, at most the window on sliding layers).
  const int64_t H = cfg->hidden_size, V = cfg->vocab_size;
  const double weights =
      static_cast<double>(cfg->NumActiveParams() - V * H - (cfg->tie_word_embeddings ? 0 : V * H)) +
      V * H;
  double attn = 0;
  for (int l = 0; l < cfg->num_hidden_layers; ++l) {
    double keys = (S + 1) / 2.0;
    if (cfg->layer_uses_sliding[l] && cfg->sliding_window_size < S) keys = cfg->sliding_window_size;
    attn += 2.0 * 2.0 * keys * cfg->q_width();
  }
  // The MoE's share of a step: one layer's MoE forward + backward on a step's worth of tokens
  // (the hidden states and router logits of a real forward), times the layers, over the step.
  double moe_s = 0;
  {
    torch::Tensor ids = torch::randint(0, cfg->vocab_size, {B, S}, torch::kInt64);
    torch::Tensor h, logits;
    {
      torch::NoGradGuard ng;
      st::ForwardOutput out = model->forward(ids);
      logits = out.routing[0].router_logits_TE.detach();
      h = torch::randn({static_cast<int64_t>(B) * S, cfg->hidden_size}) * 0.5;
    }
    auto* moe = model->model->layers[0]->as<st::DecoderLayerImpl>()->block_sparse_moe.get();
    auto once = [&]() {
      torch::Tensor hh = h.clone().requires_grad_(true);
      st::LayerRouting r;
      moe->forward(hh, logits, &r).sum().backward();
    };
    once();
    const int reps = std::max(1, FLAGS_steps);
    const auto m0 = Clock::now();
    for (int i = 0; i < reps; ++i) once();
    moe_s = Seconds(m0) / reps * cfg->num_hidden_layers;
    opt.ZeroGrad();
  }
  const double flops_per_token = 3.0 * (2.0 * weights + attn);
  const double achieved = flops_per_token * tok_s / 1e9;
  std::printf("model %s: %.2fM params, %.2fM active | seq %d x batch %d | threads %d | moe %s\n",
              FLAGS_model_config.c_str(), cfg->NumParams() / 1e6, cfg->NumActiveParams() / 1e6, S,
              B, threads, FLAGS_moe.c_str());
  std::printf("  precision %s\n", FLAGS_precision.c_str());
  std::printf(
      "  train: %.0f tokens/s (%.3f s/step) | %.2f GFLOP/s model | torch::mm %d^2: %.1f "
      "GFLOP/s | fraction of matmul throughput: %.3f\n",
      tok_s, secs / FLAGS_steps, achieved, FLAGS_mm_size, mm_gflops, achieved / mm_gflops);
  std::printf("  peak RSS %.0f MiB (VmHWM: the model, optimizer and a step's activations)%s\n",
              PeakRssMib(), FLAGS_grad_checkpoint ? ", layers checkpointed" : "");
  std::printf("  MoE (%s): %.3f s of a step's %.3f s forward + backward = %.0f%%\n",
              FLAGS_moe.c_str(), moe_s, secs / FLAGS_steps, 100.0 * moe_s / (secs / FLAGS_steps));
  return 0;
}
