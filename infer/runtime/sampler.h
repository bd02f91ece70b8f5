// Token sampling and stop conditions for generation (torch-free, no engine dependency).
//
// Sampler: the llama.cpp sampling chain, in this order:
//   repetition penalty (CTRL / llama.cpp: over the distinct tokens among the last
//   repeat_last_n, a logit > 0 is divided by the penalty and a logit < 0 multiplied)
//   -> top-k -> top-p -> min-p -> temperature -> a draw from a seeded std::mt19937_64.
// top-p and min-p see the temperature-1 distribution of the tokens that survive the steps
// before them (as in llama.cpp; Hugging Face applies the temperature first). temperature == 0
// is greedy decoding (the argmax after the repetition penalty; ties go to the lowest id).
// Deterministic for a given seed and sequence of calls, on every platform (the uniform draw
// is built from the raw 64-bit engine output, not from a std:: distribution).
//
// StopCondition: end-of-text ids and user stop strings, with streaming-safe output (text that
// could be the beginning of a stop string is held back until it is known not to be one, so a
// stop string never reaches the output).
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace st {

class Tokenizer;

struct SamplerOptions {
  double temperature = 0.8;     // >= 0; 0 = greedy
  int top_k = 40;               // >= 0; 0 = off (all tokens)
  double top_p = 1.0;           // (0, 1]; 1 = off
  double min_p = 0.0;           // [0, 1); 0 = off
  double repeat_penalty = 1.0;  // > 0; 1 = off
  int repeat_last_n = 64;       // >= -1; tokens of history penalised, 0 = off, -1 = all
  uint64_t seed = 1;
};

// OK, or InvalidArgument naming the field, its allowed range and the value given.
absl::Status ValidateSamplerOptions(const SamplerOptions& o);

class Sampler {
 public:
  // A token that survived the filters, with its temperature-1 probability among the
  // survivors (renormalised).
  struct Candidate {
    int32_t id;
    float logit;  // after the repetition penalty
    double p;
  };

  static absl::StatusOr<Sampler> Create(const SamplerOptions& options);

  const SamplerOptions& options() const { return opt_; }
  bool greedy() const { return opt_.temperature == 0; }

  // Appends a token to the history the repetition penalty looks at. Feed it the prompt and
  // every generated token (Sample does not record its own result).
  void Accept(int32_t token);
  void Accept(absl::Span<const int32_t> tokens) {
    for (int32_t t : tokens) Accept(t);
  }
  void ClearHistory() { history_.clear(); }
  const std::deque<int32_t>& history() const { return history_; }

  // Picks the next token from the logits [V] of the model (-1 when V == 0). NaN logits count
  // as the lowest value, +-inf as +-FLT_MAX.
  int32_t Sample(absl::Span<const float> logits);

  // The steps of Sample, exposed for tests and diagnostics.
  // Applies the repetition penalty of the current history to `logits` in place.
  void ApplyRepetitionPenalty(absl::Span<float> logits) const;
  // The tokens that top-k, top-p and min-p keep from already-penalised logits, most likely
  // first (ties: lower id first).
  std::vector<Candidate> Filter(absl::Span<const float> logits);

 private:
  explicit Sampler(const SamplerOptions& o) : opt_(o), rng_(o.seed) {}
  double Uniform();  // in [0, 1), 53 random bits
  size_t FilterInPlace(absl::Span<const float> logits);

  SamplerOptions opt_;
  std::mt19937_64 rng_;
  std::deque<int32_t> history_;                  // at most repeat_last_n (all when -1)
  std::vector<float> scratch_;                   // penalised logits
  std::vector<std::pair<float, int32_t>> cand_;  // (logit, id) work array
  std::vector<double> weight_;                   // sampling weights of cand_
};

// When generation stops: on an end-of-text id, or when the generated text contains one of the
// stop strings. Feed it the decoded text (complete UTF-8, from StreamDecoder) and print only
// what Push / Flush return.
class StopCondition {
 public:
  StopCondition(std::vector<int32_t> end_ids, std::vector<std::string> stop_strings);

  // The ids that end generation for a model: `file_eos_ids` (the model file's
  // eos_token_ids) plus the ids of "<|im_end|>" and "<|endoftext|>" when the tokenizer has
  // them, sorted and without duplicates.
  static std::vector<int32_t> EndOfTextIds(absl::Span<const int64_t> file_eos_ids,
                                           const Tokenizer& tok);

  bool IsEndOfText(int32_t id) const;
  // Adds generated text; returns the part that is safe to print. After a stop string is seen,
  // stopped() is true, the text before it has been returned and nothing more ever is.
  std::string Push(absl::string_view text);
  // End of generation without a stop string: returns the text held back.
  std::string Flush();
  // Starts a new generation (keeps the ids and stop strings).
  void Reset();

  bool stopped() const { return stopped_; }
  // The stop string that matched ("" if none).
  const std::string& matched() const { return matched_; }
  const std::vector<int32_t>& end_ids() const { return end_ids_; }
  const std::vector<std::string>& stop_strings() const { return stops_; }

 private:
  std::vector<int32_t> end_ids_;  // sorted
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
  std::string matched_;
};

// Splits a --stop flag value: stop strings separated by commas; "\," is a literal comma, "\n"
// a newline, "\t" a tab and "\\" a backslash. Empty pieces are dropped.
std::vector<std::string> ParseStopStrings(absl::string_view flag);

}  // namespace st
