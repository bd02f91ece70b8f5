// st-run: generate text from a model file with the torch-free runtime.
//   st-run --model m.stmf --prompt "..." --max_new_tokens 64 --temperature 0.8 --top_k 40 --seed 1
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "gflags/gflags.h"
#include "infer/runtime/engine.h"
#include "infer/tokenizer/tokenizer.h"

DEFINE_string(model, "", "model file (.stmf) written by st-export");
DEFINE_string(prompt, "", "prompt text");
DEFINE_int32(max_new_tokens, 64, "tokens to generate at most");
DEFINE_double(temperature, 0.8, "sampling temperature; <= 0 means greedy");
DEFINE_int32(top_k, 40, "sample among the k most likely tokens; <= 0 means all");
DEFINE_uint64(seed, 1, "sampling seed");

namespace {

int Fail(const std::string& msg) {
  std::fprintf(stderr, "st-run: %s\n", msg.c_str());
  return 1;
}

int32_t Sample(const std::vector<float>& logits, std::mt19937_64& rng) {
  const int V = static_cast<int>(logits.size());
  if (FLAGS_temperature <= 0) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  std::vector<int> idx(V);
  for (int i = 0; i < V; ++i) idx[i] = i;
  const int k = FLAGS_top_k > 0 ? std::min(FLAGS_top_k, V) : V;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int a, int b) { return logits[a] > logits[b]; });
  std::vector<double> p(k);
  const double mx = logits[idx[0]];
  for (int i = 0; i < k; ++i) p[i] = std::exp((logits[idx[i]] - mx) / FLAGS_temperature);
  std::discrete_distribution<int> dist(p.begin(), p.end());
  return idx[dist(rng)];
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("st-run --model m.stmf --prompt TEXT [--max_new_tokens N] ...");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_model.empty()) return Fail("--model is required");
  if (FLAGS_prompt.empty()) return Fail("--prompt is required");
  if (FLAGS_max_new_tokens < 0) return Fail("--max_new_tokens must be >= 0");

  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  auto eng_or = st::Engine::Load(FLAGS_model);
  if (!eng_or.ok()) return Fail(std::string(eng_or.status().message()));
  st::Engine& eng = **eng_or;
  const st::ModelFile& file = eng.file();
  auto tok_or = st::MakeTokenizer(file.tokenizer_name(), file.tokenizer_json());
  if (!tok_or.ok()) return Fail(std::string(tok_or.status().message()));
  const st::Tokenizer& tok = **tok_or;
  const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();

  std::vector<int32_t> prompt = tok.Encode(FLAGS_prompt);
  if (file.bos_token_id() >= 0) prompt.insert(prompt.begin(), file.bos_token_id());
  if (prompt.empty()) return Fail("the prompt encodes to no tokens");
  if (static_cast<int64_t>(prompt.size()) > eng.max_context()) {
    return Fail("the prompt is " + std::to_string(prompt.size()) +
                " tokens, longer than the model's context of " +
                std::to_string(eng.max_context()) + " tokens");
  }
  std::vector<int64_t> eos = file.eos_token_ids();

  auto t1 = Clock::now();
  auto logits = eng.Prefill(prompt);
  if (!logits.ok()) return Fail(std::string(logits.status().message()));
  const double prefill_s = std::chrono::duration<double>(Clock::now() - t1).count();

  std::mt19937_64 rng(FLAGS_seed);
  st::StreamDecoder dec(&tok);
  std::fputs(FLAGS_prompt.c_str(), stdout);
  std::fflush(stdout);
  int generated = 0;
  std::string stop = "max_new_tokens";
  auto t2 = Clock::now();
  const st::EngineStats before = eng.stats();
  while (generated < FLAGS_max_new_tokens) {
    const int32_t next = Sample(*logits, rng);
    ++generated;
    if (std::find(eos.begin(), eos.end(), next) != eos.end()) {
      stop = "eos";
      break;
    }
    std::fputs(dec.Push(next).c_str(), stdout);
    std::fflush(stdout);
    if (generated == FLAGS_max_new_tokens) break;
    if (eng.position() >= eng.max_context()) {
      stop = "context full";
      break;
    }
    logits = eng.Forward(next);
    if (!logits.ok()) return Fail(std::string(logits.status().message()));
  }
  std::fputs(dec.Flush().c_str(), stdout);
  const double decode_s = std::chrono::duration<double>(Clock::now() - t2).count();
  const int64_t decode_forwards = eng.stats().tokens - before.tokens;
  const st::EngineStats& s = eng.stats();
  std::fprintf(stderr,
               "\n[st-run] load %.2f s | prefill %zu tokens %.2f s (%.1f tok/s) | decode %d tokens, "
               "%lld forwards %.2f s (%.1f tok/s) | stop: %s\n"
               "[st-run] ReGLU sparsity exploited: %lld of %lld expert neurons skipped (%.1f%%)\n",
               load_s, prompt.size(), prefill_s, prompt.size() / std::max(prefill_s, 1e-9),
               generated, static_cast<long long>(decode_forwards), decode_s,
               decode_forwards / std::max(decode_s, 1e-9), stop.c_str(),
               static_cast<long long>(s.reglu_skipped), static_cast<long long>(s.reglu_total),
               100.0 * s.sparsity());
  return 0;
}
