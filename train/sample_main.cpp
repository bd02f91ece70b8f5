// st-sample: generate text from a trained checkpoint (LibTorch; no KV cache: the runtime in
// infer/ is the fast path, this is for looking at what a training run learned).
#include <gflags/gflags.h>

#include <cstdio>
#include <thread>

#include "infer/tokenizer/tokenizer.h"
#include "infer/tools/cli.h"
#include "model/config.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

DEFINE_string(checkpoint, "", "checkpoint.h5 written by st-train");
DEFINE_string(prompt, "", "text to continue");
DEFINE_int32(max_new_tokens, 200, "tokens to generate");
DEFINE_double(temperature, 0.8, "sampling temperature; 0 = greedy");
DEFINE_int32(top_k, 40, "sample among the k most likely tokens; 0 = all");
DEFINE_uint64(seed, 1, "sampling seed");
DEFINE_string(device, "cpu", "cpu, cuda or cuda:N");

namespace {

int Fail(const absl::Status& s) { return st::cli::Fail(s); }

}  // namespace

int main(int argc, char** argv) {
  st::cli::Spec spec;
  spec.name = "st-sample";
  spec.usage = "st-sample --checkpoint runs/tiny/checkpoint.h5 --prompt 'In the beginning'";
  spec.about =
      "Samples text from an st-train checkpoint with LibTorch (no KV cache: for looking at what "
      "a run learned; st-run is the fast path).";
  spec.groups = {{"st-sample flags", "train/sample_main.cpp", {"threads"}}};
  const st::cli::Parsed parsed = st::cli::Parse(spec, argc, argv);
  if (parsed.done()) return parsed.exit_code;
  if (FLAGS_checkpoint.empty()) return st::cli::UsageError("--checkpoint is required");
  if (FLAGS_temperature < 0 || FLAGS_top_k < 0 || FLAGS_max_new_tokens < 0) {
    return st::cli::UsageError("--temperature, --top_k and --max_new_tokens must be >= 0");
  }
  auto device = st::ParseDevice(FLAGS_device);
  if (!device.ok()) return st::cli::UsageError(device.status().message());
  torch::set_num_threads(st::cli::ResolvedThreads());
  auto state = st::ReadCheckpointState(FLAGS_checkpoint);
  if (!state.ok()) return Fail(state.status());
  auto cfg = st::ParseModelConfig(state->model_config_json);
  if (!cfg.ok()) return Fail(cfg.status());
  auto tok = st::MakeTokenizer(state->tokenizer, state->tokenizer_json);
  if (!tok.ok()) return Fail(tok.status());
  st::SmallThinkerForCausalLM model(*cfg);
  absl::Status s = st::LoadCheckpoint(FLAGS_checkpoint, model, nullptr);
  if (!s.ok()) return Fail(s);
  model->to(*device);
  model->eval();

  std::vector<int32_t> ids = (*tok)->Encode(FLAGS_prompt);
  const int64_t ctx = cfg->max_position_embeddings;
  if (static_cast<int64_t>(ids.size()) >= ctx) {
    return st::cli::Fail(absl::StrCat("the prompt has ", ids.size(),
                                      " tokens but the model's context is ", ctx,
                                      "; shorten the prompt"));
  }
  if (ids.empty()) ids.push_back((*tok)->eos_id() >= 0 ? (*tok)->eos_id() : 0);
  torch::manual_seed(FLAGS_seed);
  torch::NoGradGuard no_grad;
  std::printf("%s", FLAGS_prompt.c_str());
  for (int i = 0; i < FLAGS_max_new_tokens; ++i) {
    // Keep the last `ctx` tokens (positions restart at 0 for the window).
    const int64_t n = std::min<int64_t>(ids.size(), ctx);
    torch::Tensor in = torch::from_blob(ids.data() + ids.size() - n, {1, n}, torch::kInt32)
                           .to(*device, torch::kInt64);
    torch::Tensor logits = model->forward(in).logits_BSV[0][n - 1].to(torch::kCPU, torch::kFloat32);
    logits = logits.narrow(0, 0, (*tok)->vocab_size());
    int32_t next;
    if (FLAGS_temperature == 0) {
      next = static_cast<int32_t>(logits.argmax().item<int64_t>());
    } else {
      logits = logits / FLAGS_temperature;
      if (FLAGS_top_k > 0 && FLAGS_top_k < logits.size(0)) {
        auto [vals, idx] = logits.topk(FLAGS_top_k);
        torch::Tensor pick = torch::multinomial(torch::softmax(vals, 0), 1);
        next = static_cast<int32_t>(idx[pick.item<int64_t>()].item<int64_t>());
      } else {
        next =
            static_cast<int32_t>(torch::multinomial(torch::softmax(logits, 0), 1).item<int64_t>());
      }
    }
    if (next == (*tok)->eos_id()) break;
    ids.push_back(next);
    std::printf("%s", (*tok)->Decode({next}).c_str());
    std::fflush(stdout);
  }
  std::printf("\n");
  return 0;
}
