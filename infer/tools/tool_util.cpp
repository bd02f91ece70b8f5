// Model loading and perplexity statistics of the runtime tools (tool_util.h).
#include "infer/tools/tool_util.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "infer/tools/engine_flags.h"
#include "model/check.h"

namespace st {

absl::StatusOr<LoadedModel> LoadModel(const std::string& path, const EngineOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  LoadedModel m;
  auto eng = Engine::Load(path, options);
  if (!eng.ok()) {
    const absl::Status& s = eng.status();
    const std::string what = ExplainNotAModelFile(path);
    if (!what.empty()) return absl::InvalidArgumentError(what);
    std::string msg(s.message());
    if (msg.find(path) == std::string::npos) msg = absl::StrCat("'", path, "': ", msg);
    if (s.code() == absl::StatusCode::kNotFound) {
      absl::StrAppend(&msg, " (--model takes a .stmf model file written by st-export)");
    }
    return absl::Status(s.code(), msg);
  }
  m.engine = *std::move(eng);
  const ModelFile& f = m.engine->file();
  auto tok = MakeTokenizer(f.tokenizer_name(), f.tokenizer_json());
  if (!tok.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the tokenizer in '", path, "' does not load: ", tok.status().message()));
  }
  m.tokenizer = *std::move(tok);
  m.policy = f.tokenizer_policy();
  m.policy.ResolveIds(*m.tokenizer);
  if (m.policy.add_eos_token && m.policy.eos_token_id < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path, "' asks for an end-of-sequence token after every text (add_eos_token) but its ",
        "tokenizer has no token \"", m.policy.eos_token, "\"; re-export the model"));
  }
  m.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return m;
}

std::string SparsityText(const EngineStats& s) {
  return absl::StrFormat("ReGLU sparsity: %d of %d expert neurons skipped (%.1f%%)",
                         s.reglu_skipped, s.reglu_total, 100.0 * s.sparsity());
}

double PerplexityStats::Add(const float* logits, int V, int32_t target) {
  double mx = logits[0];
  for (int i = 1; i < V; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double sum = 0;
  for (int i = 0; i < V; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double nll = std::log(sum) - (static_cast<double>(logits[target]) - mx);
  nll_ += nll;
  nll2_ += nll * nll;
  ++count_;
  return nll;
}

double PerplexityStats::ppl() const { return std::exp(mean_nll()); }

double PerplexityStats::ppl_stderr() const {
  if (count_ < 2) return 0.0;
  const double mean = mean_nll();
  const double var = nll2_ / count_ - mean * mean;
  return var > 0 ? std::sqrt(var / (count_ - 1)) * ppl() : 0.0;
}

absl::StatusOr<double> ScorePerplexityChunk(Engine& eng, absl::Span<const int32_t> chunk, int first,
                                            PerplexityStats* stats) {
  const int n = static_cast<int>(chunk.size());
  if (first < 0 || first >= n - 1) {
    return absl::InvalidArgumentError(absl::StrCat("perplexity: scoring from position ", first,
                                                   " leaves nothing to score in a chunk of ", n,
                                                   " tokens"));
  }
  const int V = eng.config().vocab_size;
  std::vector<float> logits_TV;
  eng.Reset();
  ST_RETURN_IF_ERROR(eng.PrefillAll(chunk, &logits_TV));
  double nll = 0;
  for (int j = first; j < n - 1; ++j) {
    nll += stats->Add(logits_TV.data() + static_cast<size_t>(j) * V, V, chunk[j + 1]);
  }
  return nll;
}

}  // namespace st
