// st-perplexity: perplexity of a model file on a text, computed as llama.cpp's
// llama-perplexity does: the text's tokens are cut into non-overlapping chunks of --ctx tokens;
// each chunk runs from an empty context (its first token replaced by BOS where the model's
// tokenizer policy adds one, as llama-perplexity does with add_bos; Qwen-vocabulary models add
// none) and only the second half of each chunk is scored, so every scored token sees at least
// ctx/2 tokens of context.
//   st-perplexity --model m.stmf --file wiki.test.raw --ctx 512
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gflags/gflags.h"
#include "infer/runtime/engine.h"
#include "infer/tools/cli.h"
#include "infer/tools/engine_flags.h"
#include "infer/tools/tool_util.h"

DEFINE_string(file, "", "text file to score");
DEFINE_int32(ctx, 0, "chunk length in tokens; 0 = min(512, the model's context)");
DEFINE_int32(chunks, -1, "score at most this many chunks; -1 = all");

namespace st {
namespace {

using Clock = std::chrono::steady_clock;

using cli::Fail;
using cli::UsageError;

std::string Duration(double s) {
  const long long t = std::llround(s);
  return t >= 60 ? absl::StrFormat("%lldm%02llds", t / 60, t % 60) : absl::StrFormat("%.1fs", s);
}

int Main() {
  if (FLAGS_model.empty()) return UsageError("--model is required");
  if (FLAGS_file.empty()) return UsageError("--file is required (the text to score)");
  if (FLAGS_ctx < 0) {
    return UsageError(absl::StrCat("--ctx must be >= 0 (0 = default), got ", FLAGS_ctx));
  }
  if (FLAGS_chunks < -1 || FLAGS_chunks == 0) {
    return UsageError(absl::StrCat("--chunks must be >= 1 or -1 (all), got ", FLAGS_chunks));
  }
  auto text = cli::ReadFile(FLAGS_file, "--file");
  if (!text.ok()) return Fail(text.status().message());

  EngineOptions opt;
  opt.threads = cli::Threads();
  if (absl::Status fs = ApplyEngineFlags(&opt); !fs.ok()) return UsageError(fs.message());
  auto loaded = LoadModel(FLAGS_model, opt);
  if (!loaded.ok()) return Fail(loaded.status().message());
  Engine& eng = *loaded->engine;
  if (eng.expert_cache() != nullptr) {
    std::fprintf(stderr, "[st-perplexity] %s\n", BudgetPlanText(eng).c_str());
  }

  const int n_ctx = FLAGS_ctx > 0 ? FLAGS_ctx : std::min(512, eng.max_context());
  if (n_ctx > eng.max_context()) {
    return UsageError(absl::StrCat("--ctx ", n_ctx, " is longer than the model's context of ",
                                   eng.max_context(), " tokens"));
  }
  if (n_ctx < 4) return UsageError(absl::StrCat("--ctx must be at least 4 tokens, got ", n_ctx));

  const auto t_tok = Clock::now();
  const std::vector<int32_t> tokens = loaded->tokenizer->Encode(*text);
  const double tok_s = std::chrono::duration<double>(Clock::now() - t_tok).count();
  const int64_t available = static_cast<int64_t>(tokens.size()) / n_ctx;
  if (available == 0) {
    return Fail(absl::StrCat("'", FLAGS_file, "' is ", tokens.size(),
                             " tokens, shorter than one chunk of ", n_ctx,
                             " tokens: use a longer text or a smaller --ctx"));
  }
  const int64_t n_chunks =
      FLAGS_chunks > 0 ? std::min<int64_t>(FLAGS_chunks, available) : available;
  // -1: the policy adds no BOS, so the chunk stays as the text has it.
  const int64_t bos = loaded->policy.add_bos_token ? loaded->policy.bos_token_id : -1;
  const int first = n_ctx / 2;  // positions [first, n_ctx - 1) predict tokens first+1 .. n_ctx-1
  std::printf(
      "[st-perplexity] %s: %zu tokens (tokenized in %.2f s), %lld chunks of %d tokens, scoring "
      "the last %d of each; %d threads, %s kernels; load %.2f s\n",
      FLAGS_file.c_str(), tokens.size(), tok_s, static_cast<long long>(n_chunks), n_ctx,
      n_ctx - 1 - first, eng.threads(), eng.KernelName().c_str(), loaded->load_seconds);

  PerplexityStats stats;
  const auto t0 = Clock::now();
  for (int64_t c = 0; c < n_chunks; ++c) {
    std::vector<int32_t> chunk(tokens.begin() + c * n_ctx, tokens.begin() + (c + 1) * n_ctx);
    if (bos >= 0) chunk[0] = static_cast<int32_t>(bos);
    absl::StatusOr<double> chunk_nll = ScorePerplexityChunk(eng, chunk, first, &stats);
    if (!chunk_nll.ok()) return Fail(chunk_nll.status().message());
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    const double eta = elapsed / (c + 1) * (n_chunks - c - 1);
    std::printf("[%lld/%lld] PPL %.4f (this chunk %.4f) | %.1f tok/s | ETA %s\n",
                static_cast<long long>(c + 1), static_cast<long long>(n_chunks), stats.ppl(),
                std::exp(*chunk_nll / (n_ctx - 1 - first)),
                (c + 1) * n_ctx / std::max(elapsed, 1e-9), Duration(eta).c_str());
    std::fflush(stdout);
  }
  const double total_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("Final estimate: PPL = %.4f +/- %.5f\n", stats.ppl(), stats.ppl_stderr());
  std::printf("[st-perplexity] %lld tokens scored, %lld run in %.2f s (%.1f tok/s) | %s\n",
              static_cast<long long>(stats.count()), static_cast<long long>(n_chunks * n_ctx),
              total_s, n_chunks * n_ctx / std::max(total_s, 1e-9),
              SparsityText(eng.stats()).c_str());
  if (eng.expert_cache() != nullptr) {
    std::printf("[st-perplexity] %s\n", CacheStatsText(eng, eng.stats().tokens).c_str());
  }
  return 0;
}

}  // namespace
}  // namespace st

int main(int argc, char** argv) {
  st::cli::Spec spec;
  spec.name = "st-perplexity";
  spec.usage =
      "st-perplexity --model m.stmf --file text.txt [--ctx 512] [--chunks N]\n"
      "st-perplexity -m m.stmf -f text.txt -c 512   (llama-perplexity spellings)";
  spec.about =
      "Perplexity of a model file on a text, as llama-perplexity computes it: non-overlapping "
      "chunks of --ctx tokens, each from an empty context, the second half of each scored.";
  spec.groups = {{"st-perplexity flags", "infer/tools/st_perplexity_main.cpp", {"threads"}},
                 st::EngineFlagGroup()};
  const st::cli::Parsed parsed = st::cli::Parse(spec, argc, argv);
  if (parsed.done()) return parsed.exit_code;
  return st::Main();
}
