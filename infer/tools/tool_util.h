// Shared by the runtime's command-line tools (st-run, st-perplexity): loading a model file with
// its tokenizer, with errors that say what to do, and perplexity statistics. (Messages, exit codes
// and reading files named on the command line: cli.h.)
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "infer/runtime/engine.h"
#include "infer/tokenizer/hf_configs.h"
#include "infer/tokenizer/tokenizer.h"

namespace st {

struct LoadedModel {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Tokenizer> tokenizer;
  // The file's tokenizer policy (tokenizer_config.json at export) with its ids resolved: every
  // tool encodes prompts and texts with policy.Encode, so a BOS goes in front only where the
  // checkpoint says so (Qwen / SmallThinker: never).
  TokenizerPolicy policy;
  double load_seconds = 0;
};

// Engine::Load plus the file's tokenizer. Errors name the file and say what to do (a missing
// file: pass a .stmf written by st-export; a Hugging Face directory, safetensors, HDF5 or GGUF
// file: what it is and which command converts it; the reader's own message otherwise).
absl::StatusOr<LoadedModel> LoadModel(const std::string& path, const EngineOptions& options);

// "ReGLU sparsity: S of T expert neurons skipped (P%)".
std::string SparsityText(const EngineStats& s);

// Negative log-likelihood statistics of predicted tokens, as llama-perplexity computes them
// (log-softmax in double; the error is the standard error of the mean NLL, times the PPL).
class PerplexityStats {
 public:
  // Scores `target` under softmax(logits[0, V)); returns its NLL (natural log).
  double Add(const float* logits, int V, int32_t target);
  int64_t count() const { return count_; }
  double mean_nll() const { return count_ > 0 ? nll_ / count_ : 0.0; }
  double ppl() const;
  double ppl_stderr() const;  // 0 with fewer than two tokens

 private:
  double nll_ = 0, nll2_ = 0;
  int64_t count_ = 0;
};

// One perplexity chunk as llama-perplexity scores it: `chunk` runs from an empty context
// (eng.Reset, then one PrefillAll) and the logits of position j score chunk[j + 1] for j in
// [first, chunk.size() - 1), each added to `stats`. Returns the chunk's summed NLL. The engine
// is left holding the chunk's context.
absl::StatusOr<double> ScorePerplexityChunk(Engine& eng, absl::Span<const int32_t> chunk, int first,
                                            PerplexityStats* stats);

}  // namespace st
