#include "infer/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "infer/tokenizer/tokenizer.h"

namespace st {
namespace {

using Entry = std::pair<float, int32_t>;  // (logit, id)

// Higher logit first; equal logits: lower id first (a strict total order, so results do not
// depend on the standard library's sort).
bool Better(const Entry& a, const Entry& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// NaN -> lowest, +-inf -> +-max: every later step works on finite values.
float Sanitize(float x) {
  constexpr float kMax = std::numeric_limits<float>::max();
  if (std::isnan(x)) return -kMax;
  return std::min(std::max(x, -kMax), kMax);
}

}  // namespace

absl::Status ValidateSamplerOptions(const SamplerOptions& o) {
  auto bad = [](absl::string_view what, double v) {
    return absl::InvalidArgumentError(absl::StrCat(what, ", got ", v));
  };
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature)) {
    return bad("temperature must be >= 0 (0 = greedy)", o.temperature);
  }
  if (o.top_k < 0) return bad("top_k must be >= 0 (0 = off)", o.top_k);
  if (!(o.top_p > 0 && o.top_p <= 1)) return bad("top_p must be in (0, 1] (1 = off)", o.top_p);
  if (!(o.min_p >= 0 && o.min_p < 1)) return bad("min_p must be in [0, 1) (0 = off)", o.min_p);
  if (!(o.repeat_penalty > 0) || !std::isfinite(o.repeat_penalty)) {
    return bad("repeat_penalty must be > 0 (1 = off)", o.repeat_penalty);
  }
  if (o.repeat_last_n < -1) {
    return bad("repeat_last_n must be >= -1 (0 = off, -1 = whole history)", o.repeat_last_n);
  }
  return absl::OkStatus();
}

absl::StatusOr<Sampler> Sampler::Create(const SamplerOptions& options) {
  absl::Status s = ValidateSamplerOptions(options);
  if (!s.ok()) return s;
  return Sampler(options);
}

void Sampler::Accept(int32_t token) {
  if (opt_.repeat_last_n == 0) return;
  history_.push_back(token);
  if (opt_.repeat_last_n > 0 && history_.size() > static_cast<size_t>(opt_.repeat_last_n)) {
    history_.pop_front();
  }
}

void Sampler::ApplyRepetitionPenalty(absl::Span<float> logits) const {
  if (opt_.repeat_penalty == 1.0 || history_.empty()) return;
  std::vector<int32_t> ids(history_.begin(), history_.end());
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  const float penalty = static_cast<float>(opt_.repeat_penalty);
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= logits.size()) continue;
    float& l = logits[id];
    l = l > 0 ? l / penalty : l * penalty;
  }
}

double Sampler::Uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

// Leaves the survivors of top-k, top-p and min-p in cand_[0, n) and returns n. Sorted (most
// likely first) when top-k or top-p needed an order; otherwise in id order.
size_t Sampler::FilterInPlace(absl::Span<const float> logits) {
  const size_t V = logits.size();
  size_t n = V;
  size_t sorted = 0;  // cand_[0, sorted) is in order and better than everything after it
  const size_t k = opt_.top_k > 0 ? std::min<size_t>(opt_.top_k, V) : V;
  if (k < V && k <= V / 16) {
    // Small k: one pass with a heap of the k best so far (its front is the worst of them).
    // Almost every token fails the first comparison, so this costs about one read of V.
    cand_.clear();
    for (size_t i = 0; i < V; ++i) {
      const Entry e(logits[i], static_cast<int32_t>(i));
      if (cand_.size() < k) {
        cand_.push_back(e);
        std::push_heap(cand_.begin(), cand_.end(), Better);
      } else if (Better(e, cand_.front())) {
        std::pop_heap(cand_.begin(), cand_.end(), Better);
        cand_.back() = e;
        std::push_heap(cand_.begin(), cand_.end(), Better);
      }
    }
    std::sort(cand_.begin(), cand_.end(), Better);
    n = sorted = k;
  } else {
    cand_.resize(V);
    for (size_t i = 0; i < V; ++i) cand_[i] = {logits[i], static_cast<int32_t>(i)};
    if (k < V) {
      std::nth_element(cand_.begin(), cand_.begin() + k, cand_.end(), Better);
      std::sort(cand_.begin(), cand_.begin() + k, Better);
      n = sorted = k;
    }
  }
  float mx = cand_[0].first;
  if (sorted == 0) {
    for (size_t i = 1; i < n; ++i) mx = std::max(mx, cand_[i].first);
  }
  const bool top_p = opt_.top_p < 1.0 && n > 1;
  // top-p's probabilities are over the top-k survivors, so sum them before min-p drops any.
  double sum = 0;
  if (top_p) {
    for (size_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(cand_[i].first) - mx);
  }
  // min-p: p_i >= min_p * p_max  <=>  exp(l_i - l_max) >= min_p. Top-p and min-p each keep a
  // prefix of the tokens in order, so applying min-p first (a cheap pass that needs no order)
  // gives the same set as the llama.cpp order, with less to sort.
  if (opt_.min_p > 0 && n > 1) {
    const double log_min_p = std::log(opt_.min_p);
    size_t w = 0;
    for (size_t i = 0; i < n; ++i) {
      if (static_cast<double>(cand_[i].first) - mx >= log_min_p) cand_[w++] = cand_[i];
    }
    n = w;
    sorted = std::min(sorted, n);
  }
  if (top_p) {
    const double target = opt_.top_p * sum;
    double cum = 0;
    size_t i = 0;
    while (i < n) {
      if (i == sorted) {  // order the next block: doubling keeps the total work ~ O(n)
        const size_t m = std::min(n, std::max<size_t>(256, 2 * sorted));
        if (m < n) {
          std::nth_element(cand_.begin() + sorted, cand_.begin() + m, cand_.begin() + n, Better);
        }
        std::sort(cand_.begin() + sorted, cand_.begin() + m, Better);
        sorted = m;
      }
      cum += std::exp(static_cast<double>(cand_[i].first) - mx);
      ++i;
      if (cum >= target) break;
    }
    n = i;
  }
  return n;
}

std::vector<Sampler::Candidate> Sampler::Filter(absl::Span<const float> logits) {
  if (logits.empty()) return {};
  std::vector<float> clean(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) clean[i] = Sanitize(logits[i]);
  const size_t n = FilterInPlace(clean);
  std::sort(cand_.begin(), cand_.begin() + n, Better);
  double sum = 0;
  std::vector<Candidate> out(n);
  for (size_t i = 0; i < n; ++i) {
    out[i] = {cand_[i].second, cand_[i].first,
              std::exp(static_cast<double>(cand_[i].first) - cand_[0].first)};
    sum += out[i].p;
  }
  for (Candidate& c : out) c.p /= sum;
  return out;
}

int32_t Sampler::Sample(absl::Span<const float> logits) {
  const size_t V = logits.size();
  if (V == 0) return -1;
  scratch_.resize(V);
  for (size_t i = 0; i < V; ++i) scratch_[i] = Sanitize(logits[i]);
  ApplyRepetitionPenalty(absl::MakeSpan(scratch_));
  if (greedy()) {
    return static_cast<int32_t>(std::max_element(scratch_.begin(), scratch_.end()) -
                                scratch_.begin());
  }
  const size_t n = FilterInPlace(scratch_);
  float mx = cand_[0].first;
  for (size_t i = 1; i < n; ++i) mx = std::max(mx, cand_[i].first);
  const double inv_t = 1.0 / opt_.temperature;
  weight_.resize(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    sum += (weight_[i] = std::exp((static_cast<double>(cand_[i].first) - mx) * inv_t));
  }
  const double u = Uniform() * sum;
  double cum = 0;
  for (size_t i = 0; i < n; ++i) {
    cum += weight_[i];
    if (u < cum) return cand_[i].second;
  }
  return cand_[n - 1].second;  // rounding: u landed at the very end
}

// ---- StopCondition ----

StopCondition::StopCondition(std::vector<int32_t> end_ids, std::vector<std::string> stop_strings)
    : end_ids_(std::move(end_ids)) {
  std::sort(end_ids_.begin(), end_ids_.end());
  end_ids_.erase(std::unique(end_ids_.begin(), end_ids_.end()), end_ids_.end());
  for (std::string& s : stop_strings) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

std::vector<int32_t> StopCondition::EndOfTextIds(absl::Span<const int64_t> file_eos_ids,
                                                 const Tokenizer& tok) {
  std::vector<int32_t> ids;
  for (int64_t id : file_eos_ids) {
    if (id >= 0 && id <= std::numeric_limits<int32_t>::max()) {
      ids.push_back(static_cast<int32_t>(id));
    }
  }
  for (const char* name : {"<|im_end|>", "<|endoftext|>"}) {
    const int id = tok.TokenId(name);
    if (id >= 0) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

bool StopCondition::IsEndOfText(int32_t id) const {
  return std::binary_search(end_ids_.begin(), end_ids_.end(), id);
}

std::string StopCondition::Push(absl::string_view text) {
  if (stopped_) return "";
  held_.append(text.data(), text.size());
  // A match cannot start in text already returned: that text was never a prefix of a stop
  // string (the longest such suffix is always held back).
  size_t best = std::string::npos;
  for (const std::string& s : stops_) {
    const size_t pos = held_.find(s);
    if (pos < best || (pos == best && pos != std::string::npos && s.size() > matched_.size())) {
      best = pos;
      matched_ = s;
    }
  }
  if (best != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, best);
    held_.clear();
    return out;
  }
  size_t hold = 0;  // the longest suffix of held_ that is a proper prefix of a stop string
  for (const std::string& s : stops_) {
    for (size_t l = std::min(s.size() - 1, held_.size()); l > hold; --l) {
      if (absl::string_view(held_).substr(held_.size() - l) == absl::string_view(s).substr(0, l)) {
        hold = l;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - hold);
  held_.erase(0, held_.size() - hold);
  return out;
}

std::string StopCondition::Flush() {
  std::string out;
  out.swap(held_);
  return stopped_ ? std::string() : out;
}

void StopCondition::Reset() {
  held_.clear();
  stopped_ = false;
  matched_.clear();
}

std::vector<std::string> ParseStopStrings(absl::string_view flag) {
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 0; i < flag.size(); ++i) {
    const char c = flag[i];
    if (c == '\\' && i + 1 < flag.size()) {
      const char e = flag[++i];
      if (e == 'n') {
        cur += '\n';
      } else if (e == 't') {
        cur += '\t';
      } else if (e == ',' || e == '\\') {
        cur += e;
      } else {  // not an escape: kept as written
        cur += '\\';
        cur += e;
      }
    } else if (c == ',') {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

}  // namespace st
