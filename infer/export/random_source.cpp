// MakeRandomSource: random weights for any config, generated per tensor from (seed, name) by a
// counter-based hash (see random_source.h), in parallel over element ranges.
#include "infer/export/random_source.h"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "infer/export/parallel.h"
#include "infer/tokenizer/tokenizer.h"
#include "model/check.h"
#include "model/random.h"

namespace st {
namespace {

// The splitmix64 finaliser: Mix(key + i * kGolden) is output i - 1 of the stream seeded with
// `key`, so element i of a tensor depends only on (key, i): ranges fill in parallel.
constexpr uint64_t kGolden = SplitMix64::kGolden;

// The stream key of one tensor: FNV-1a of its name mixed with the seed.
uint64_t TensorKey(uint64_t seed, const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return SplitMix64::Mix(SplitMix64::Mix(seed + kGolden) ^ h);
}

// The sum of four uniforms on {0, ..., 65535} has mean 2 * 65535 and variance
// 4 * (65536^2 - 1) / 12.
constexpr int32_t kSumMean = 2 * 65535;
const double kSumStd = std::sqrt((65536.0 * 65536.0 - 1.0) / 3.0);

// Compiled three times, picked at load time for the CPU: the 64-bit multiplies vectorise only
// with AVX-512 (0.28 ns an element, against 1.45 with AVX2 and 2.3 scalar). Integer arithmetic
// and one float multiply, so every version gives the same bits.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define ST_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ST_CPU_CLONES
#endif

// out[i - begin] = scale * (centred Irwin-Hall sum of element i's hash), i in [begin, end).
ST_CPU_CLONES void FillRange(uint64_t key, int64_t begin, int64_t end, float scale, float* out) {
  for (int64_t i = begin; i < end; ++i) {
    const uint64_t z = SplitMix64::Mix(key + static_cast<uint64_t>(i) * kGolden);
    const int32_t s = static_cast<int32_t>((z & 0xffff) + ((z >> 16) & 0xffff) +
                                           ((z >> 32) & 0xffff) + (z >> 48));
    out[i - begin] = static_cast<float>(s - kSumMean) * scale;
  }
}

// Fills x[0, n) on every core (ranges of at least 64K elements). The values do not depend on
// the split.
void FillParallel(uint64_t key, float stddev, std::vector<float>* x) {
  const int64_t n = static_cast<int64_t>(x->size());
  const float scale = static_cast<float>(stddev / kSumStd);
  float* out = x->data();
  ParallelFor(n, ParallelRanges(n, 1 << 16), [&](int, int64_t begin, int64_t end) {
    FillRange(key, begin, end, scale, out + begin);
  });
}

// A zeroed vector of n floats. Above 64 MB (embeddings, LM heads) its pages are asked to be
// transparent huge pages before the first touch: an embedding of the 21B is 1.6 GB, 380,000
// page faults in 4 KB pages, which took seconds of system time on virtual machines.
std::vector<float> AllocateLarge(size_t n) {
  std::vector<float> x;
  x.reserve(n);
#ifdef MADV_HUGEPAGE
  constexpr uintptr_t kHuge = 2 << 20;
  if (n * sizeof(float) >= (64u << 20)) {
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(x.data()) + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t end = (reinterpret_cast<uintptr_t>(x.data() + n)) & ~(kHuge - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#endif
  x.resize(n);
  return x;
}

class RandomSource final : public TensorSource {
 public:
  RandomSource(ModelConfig cfg, uint64_t seed, std::string tokenizer_name,
               std::string tokenizer_json)
      : config_(std::move(cfg)),
        seed_(seed),
        tensors_(ExpectedTensors(config_)),
        tokenizer_name_(std::move(tokenizer_name)),
        tokenizer_json_(std::move(tokenizer_json)) {
    std::sort(tensors_.begin(), tensors_.end(),
              [](const SourceTensor& a, const SourceTensor& b) { return a.name < b.name; });
  }

  const ModelConfig& config() const override { return config_; }
  const std::vector<SourceTensor>& tensors() const override { return tensors_; }
  absl::StatusOr<std::vector<float>> ReadF32(const std::string& hf_name) const override {
    const SourceTensor* t = Find(hf_name);
    if (t == nullptr) {
      return absl::NotFoundError(absl::StrCat(description(), ": no tensor '", hf_name, "'"));
    }
    // RMSNorm weights (the only 1-D tensors) are ones, as Hugging Face initialises them.
    if (t->shape.size() == 1) return std::vector<float>(static_cast<size_t>(t->shape[0]), 1.0f);
    std::vector<float> x = AllocateLarge(static_cast<size_t>(t->num_elements()));
    FillParallel(TensorKey(seed_, hf_name), kRandomInitStd, &x);
    return x;
  }
  std::string tokenizer_name() const override { return tokenizer_name_; }
  std::string tokenizer_json() const override { return tokenizer_json_; }
  std::string chat_template() const override { return ""; }
  std::string description() const override {
    return absl::StrCat("random weights (seed ", seed_, ", std ", kRandomInitStd, ", ",
                        tokenizer_name_, " tokenizer)");
  }

 private:
  ModelConfig config_;
  uint64_t seed_;
  std::vector<SourceTensor> tensors_;
  std::string tokenizer_name_;
  std::string tokenizer_json_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TensorSource>> MakeRandomSource(const ModelConfig& cfg,
                                                               uint64_t seed,
                                                               const std::string& tokenizer_name,
                                                               const std::string& tokenizer_json) {
  ModelConfig c = cfg;
  ST_RETURN_IF_ERROR(ValidateModelConfig(c));
  ST_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok,
                      MakeTokenizer(tokenizer_name, tokenizer_json));
  if (tok->vocab_size() > c.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ", tokenizer_name, " tokenizer has ", tok->vocab_size(),
                     " ids but the config's vocab_size is ", c.vocab_size,
                     "; use a config with vocab_size >= ", tok->vocab_size()));
  }
  return std::unique_ptr<TensorSource>(
      new RandomSource(std::move(c), seed, tokenizer_name, tokenizer_json));
}

}  // namespace st
