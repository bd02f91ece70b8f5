// st-bench: throughput of the torch-free runtime on a model file, with synthetic token ids (no
// tokenizer needed). For each thread count: prefill and decode tokens/s, time to first token,
// peak RSS, the ReGLU sparsity exploited, weight bytes read per decode token, and the achieved
// weight-read bandwidth as a fraction of this machine's memory read bandwidth, measured in the
// same run with the same number of threads.
//   st-bench --model m.stmf --threads 1,2 --prompt_tokens 128 --gen_tokens 64 --reps 3 [--json]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "gflags/gflags.h"
#include "infer/format/model_file.h"
#include "infer/format/tensors.h"
#include "infer/quant/kernels.h"
#include "infer/quant/types.h"
#include "infer/runtime/engine.h"
#include "infer/runtime/int8_peak.h"
#include "infer/runtime/membw.h"
#include "infer/tokenizer/tokenizer.h"
#include "infer/tools/cli.h"
#include "infer/tools/engine_flags.h"
#include "model/random.h"
#include "nlohmann/json.hpp"

DEFINE_int32(prompt_tokens, 128, "prompt length for the prefill measurement");
DEFINE_int32(gen_tokens, 64, "tokens decoded (Forward calls) after the prefill");
DEFINE_int32(reps, 3, "timed repetitions per thread count (median, min and max are reported)");
DEFINE_int32(warmup, 1, "untimed repetitions first (pages the model in, warms the caches)");
DEFINE_bool(json, false,
            "print one JSON object per thread count on stdout; the report goes to stderr");
DEFINE_bool(simd, true, "false forces the portable scalar kernels");
DEFINE_bool(avx512, true, "use the AVX-512 VNNI kernels where the CPU has them (false: AVX2)");
DEFINE_int32(membw_mib, 1024, "buffer of the memory bandwidth probe in MiB (>= 256)");
DEFINE_int32(membw_passes, 5, "passes of the memory bandwidth probe (the fastest counts)");
DEFINE_bool(int8_peak, true,
            "measure the int8 multiply-add peak of the kernels' dot idiom on these threads, and "
            "report the fraction of it prefill reaches");
DEFINE_uint64(seed, 1, "seed of the synthetic token ids (each repetition uses its own)");
DEFINE_string(text, "",
              "take the prompt and decode tokens from this text file (tokenized with the model "
              "file's tokenizer; each repetition its own stretch) instead of synthetic ids");
DEFINE_string(record_routing, "",
              "write the routing profile of the last thread count's runs (every repetition, "
              "warm-ups included) to this JSON file, for --pin_profile");
DEFINE_bool(uniform_routing, false,
            "draw each token's k experts uniformly instead of by the router (a cache's worst "
            "case; random-weight models route deep layers to a few experts)");
DEFINE_string(batch, "",
              "also measure batched decoding (st-server's continuous batching): for each count "
              "B in this comma list, B conversations prefilled with their own prompt, then "
              "--gen_tokens steps of Engine::DecodeBatch; aggregate tok/s against B = 1");
DEFINE_bool(greedy, false,
            "decode by feeding back each step's argmax (false: feed synthetic token ids, as "
            "llama-bench does; a random-weight model's greedy loop repeats one token, and so "
            "one set of experts)");

namespace {

using Clock = std::chrono::steady_clock;

FILE* Out() { return FLAGS_json ? stderr : stdout; }

int Fail(const std::string& msg) { return st::cli::Fail(msg); }
int UsageError(const std::string& msg) { return st::cli::UsageError(msg); }

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Deterministic ids in [0, vocab): splitmix64 of (seed, i).
std::vector<int32_t> SyntheticTokens(int n, int vocab, uint64_t seed) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i) {
    const uint64_t z =
        st::SplitMix64::Mix(seed * st::SplitMix64::kGolden + static_cast<uint64_t>(i) + 1);
    ids[i] = static_cast<int32_t>(z % static_cast<uint64_t>(vocab));
  }
  return ids;
}

int32_t Argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

st::EngineStats Delta(const st::EngineStats& a, const st::EngineStats& b) {
  st::EngineStats d;
  d.tokens = b.tokens - a.tokens;
  d.forwards = b.forwards - a.forwards;
  d.reglu_total = b.reglu_total - a.reglu_total;
  d.reglu_skipped = b.reglu_skipped - a.reglu_skipped;
  d.weight_bytes = b.weight_bytes - a.weight_bytes;
  d.expert_calls = b.expert_calls - a.expert_calls;
  d.seconds_route = b.seconds_route - a.seconds_route;
  d.seconds_attention = b.seconds_attention - a.seconds_attention;
  d.seconds_moe = b.seconds_moe - a.seconds_moe;
  d.seconds_head = b.seconds_head - a.seconds_head;
  return d;
}

void Accumulate(st::EngineStats* acc, const st::EngineStats& d) {
  acc->tokens += d.tokens;
  acc->forwards += d.forwards;
  acc->reglu_total += d.reglu_total;
  acc->reglu_skipped += d.reglu_skipped;
  acc->weight_bytes += d.weight_bytes;
  acc->expert_calls += d.expert_calls;
  acc->seconds_route += d.seconds_route;
  acc->seconds_attention += d.seconds_attention;
  acc->seconds_moe += d.seconds_moe;
  acc->seconds_head += d.seconds_head;
}

// "route 3% | attention 30% | MoE 40% | LM head 27%" (ms per token).
std::string PhaseSplit(const st::EngineStats& s) {
  const double total = s.seconds_route + s.seconds_attention + s.seconds_moe + s.seconds_head;
  if (total <= 0 || s.tokens <= 0) return "n/a";
  char buf[256];
  const double per = 1e3 / static_cast<double>(s.tokens);
  std::snprintf(buf, sizeof(buf),
                "route %.2f ms (%.0f%%) | attention %.2f ms (%.0f%%) | MoE %.2f ms (%.0f%%) | "
                "LM head %.2f ms (%.0f%%) per token",
                s.seconds_route * per, 100 * s.seconds_route / total, s.seconds_attention * per,
                100 * s.seconds_attention / total, s.seconds_moe * per, 100 * s.seconds_moe / total,
                s.seconds_head * per, 100 * s.seconds_head / total);
  return buf;
}

struct Summary {
  double median = 0, min = 0, max = 0, stddev = 0;
};

Summary Summarize(std::vector<double> v) {
  Summary s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  s.min = v.front();
  s.max = v.back();
  double mean = 0;
  for (double x : v) mean += x / n;
  double var = 0;
  for (double x : v) var += (x - mean) * (x - mean);
  s.stddev = n > 1 ? std::sqrt(var / (n - 1)) : 0.0;
  return s;
}

// One repetition: Reset, prefill the prompt, then gen_tokens greedy Forward calls.
struct Rep {
  double prefill_s = 0, decode_s = 0;
  st::EngineStats prefill, decode;
  st::ExpertCacheStats cache;  // decode only
};

absl::StatusOr<Rep> RunRep(st::Engine& eng, const std::vector<int32_t>& prompt,
                           const std::vector<int32_t>& feed) {
  const int gen = static_cast<int>(feed.size());
  Rep r;
  eng.Reset();
  const st::EngineStats s0 = eng.stats();
  const auto t0 = Clock::now();
  auto logits = eng.Prefill(prompt);
  if (!logits.ok()) return logits.status();
  const auto t1 = Clock::now();
  const st::EngineStats s1 = eng.stats();
  // The expert cache's counters cover the decode only.
  if (st::ExpertCache* c = eng.mutable_expert_cache()) c->ResetStats();
  int32_t next = FLAGS_greedy ? Argmax(*logits) : feed[0];
  for (int i = 0; i < gen; ++i) {
    logits = eng.Forward(next);
    if (!logits.ok()) return logits.status();
    next = FLAGS_greedy ? Argmax(*logits) : feed[(i + 1) % gen];
  }
  const auto t2 = Clock::now();
  r.prefill_s = Seconds(t0, t1);
  r.decode_s = Seconds(t1, t2);
  r.prefill = Delta(s0, s1);
  r.decode = Delta(s1, eng.stats());
  if (const st::ExpertCache* c = eng.expert_cache()) r.cache = c->stats();
  return r;
}

// Batched decoding: B sequences, each prefilled with its own prompt, then gen_tokens steps of
// DecodeBatch feeding each its own synthetic ids. Returns the decode seconds.
absl::StatusOr<double> RunBatchRep(st::Engine& eng, int B, const std::vector<int32_t>& ids,
                                   int prompt, int gen, st::EngineStats* decode) {
  std::vector<std::unique_ptr<st::Sequence>> seqs;
  std::vector<st::Sequence*> batch;
  for (int b = 0; b < B; ++b) {
    seqs.push_back(eng.NewSequence());
    batch.push_back(seqs.back().get());
    auto l = eng.Prefill(batch.back(), absl::MakeConstSpan(ids).subspan(
                                           static_cast<size_t>(b) * (prompt + gen), prompt));
    if (!l.ok()) return l.status();
  }
  std::vector<int32_t> tokens(B);
  std::vector<float> logits_BV;
  const st::EngineStats s0 = eng.stats();
  const auto t0 = Clock::now();
  for (int i = 0; i < gen; ++i) {
    for (int b = 0; b < B; ++b)
      tokens[b] = ids[static_cast<size_t>(b) * (prompt + gen) + prompt + i];
    if (absl::Status st = eng.DecodeBatch(batch, tokens, &logits_BV); !st.ok()) return st;
  }
  const double s = Seconds(t0, Clock::now());
  *decode = Delta(s0, eng.stats());
  return s;
}

// /proc/self/status fields in KiB (-1 when absent).
int64_t StatusKiB(const std::string& key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.compare(0, key.size() + 1, key + ":") == 0) {
      std::istringstream is(line.substr(key.size() + 1));
      int64_t kib = -1;
      is >> kib;
      return kib;
    }
  }
  return -1;
}

// Resets VmHWM to the current RSS (Linux >= 4.0); false when not permitted.
bool ResetPeakRss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

int64_t MaxRssKiB() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;  // KiB on Linux
}

std::string Mib(double bytes) {
  char buf[64];
  if (bytes >= 10.0 * (1 << 30)) {
    std::snprintf(buf, sizeof(buf), "%.1f GiB", bytes / (1 << 30));
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f MiB", bytes / (1 << 20));
  }
  return buf;
}

// 4035000000 -> "4.04B", 2300000 -> "2.30M".
std::string Count(int64_t n) {
  char buf[32];
  if (n >= 1000000000) {
    std::snprintf(buf, sizeof(buf), "%.2fB", n / 1e9);
  } else {
    std::snprintf(buf, sizeof(buf), "%.2fM", n / 1e6);
  }
  return buf;
}

void PrintModel(const st::Engine& eng, const std::string& path) {
  const st::ModelConfig& c = eng.config();
  const st::ModelFile& f = eng.file();
  FILE* o = Out();
  std::fprintf(o, "model       %s (%s)\n", path.c_str(), Mib(f.file_size()).c_str());
  std::fprintf(o,
               "config      %d layers, H %d, heads %d/%d x %d, %d experts (k %d) x F %d, vocab %d, "
               "context %d, %s params (%s active)\n",
               c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
               c.head_dim, c.moe_num_primary_experts, c.moe_num_active_primary_experts,
               c.moe_ffn_hidden_size, c.vocab_size, c.max_position_embeddings,
               Count(c.NumParams()).c_str(), Count(c.NumActiveParams()).c_str());
  // Tensor types per group: count and bytes.
  std::map<std::pair<int, std::string>, std::pair<int64_t, uint64_t>> types;
  for (const st::TensorInfo& t : f.tensors()) {
    auto& e = types[{static_cast<int>(t.group), st::DTypeName(t.dtype)}];
    e.first += 1;
    e.second += t.size;
  }
  std::string line;
  for (const auto& [key, v] : types) {
    if (!line.empty()) line += ", ";
    line += std::string(key.first == static_cast<int>(st::TensorGroup::kExpert) ? "expert "
                                                                                : "resident ") +
            key.second + " x" + std::to_string(v.first) + " (" + Mib(v.second) + ")";
  }
  std::fprintf(o, "types       %s\n", line.c_str());
}

// Multiply-adds a prefill token in the products on Q8 activations (Q4_0 / Q8_0 weights, from
// the file's tensor table): the attention projections, and the gate and up of the k experts it
// is routed to (k / E of every expert's). A prefill group computes up for every row some
// token of the group needs (with the 4B's groups of ~32 tokens, nearly all), so both count
// dense. Down runs in f32 and is not counted; neither is the LM head (the last position only).
double PrefillQ8Macs(const st::Engine& eng) {
  const st::ModelConfig& c = eng.config();
  const double share =
      static_cast<double>(c.moe_num_active_primary_experts) / c.moe_num_primary_experts;
  double macs = 0;
  for (const st::TensorInfo& t : eng.file().tensors()) {
    const std::optional<st::TensorId> id = st::ParseFileTensorName(t.name);
    if (!id || !st::UsesQ8Activations(t.dtype)) continue;
    switch (id->kind) {
      case st::TensorKind::kAttnQ:
      case st::TensorKind::kAttnK:
      case st::TensorKind::kAttnV:
      case st::TensorKind::kAttnOutput:
        macs += static_cast<double>(t.num_elements());
        break;
      case st::TensorKind::kFfnGate:
      case st::TensorKind::kFfnUp:
        macs += share * static_cast<double>(t.num_elements());
        break;
      default:
        break;
    }
  }
  return macs;
}

struct Row {
  int threads = 0;
  st::MemBwResult membw;
  st::Int8PeakResult peak;     // gmac_per_s 0: not measured
  double prefill_q8_macs = 0;  // multiply-adds a prefill token in the Q8-activation products
  Summary prefill_tps, decode_tps, ttft_ms;
  st::EngineStats prefill, decode;  // summed over the timed repetitions
  double bytes_per_token = 0, dense_bytes_per_token = 0;
  int64_t vmhwm_kib = 0, maxrss_kib = 0, rss_anon_kib = 0, rss_file_kib = 0;
  std::string kernel;
  bool budget = false;
  st::ExpertCacheStats cache;  // decode, summed over the timed repetitions
  st::MemoryPlan plan;

  double bw() const { return membw.gb_per_s * 1e9; }                       // bytes/s
  double achieved() const { return bytes_per_token * decode_tps.median; }  // bytes/s
  double fraction() const { return bw() > 0 ? achieved() / bw() : 0.0; }   // of membw
  double bound_tps() const { return bytes_per_token > 0 ? bw() / bytes_per_token : 0.0; }
  double prefill_gmac_s() const { return prefill_q8_macs * prefill_tps.median / 1e9; }
  double peak_fraction() const {
    return peak.gmac_per_s > 0 ? prefill_gmac_s() / peak.gmac_per_s : 0.0;
  }
  double dense_bound_tps() const {
    return dense_bytes_per_token > 0 ? bw() / dense_bytes_per_token : 0.0;
  }
};

void PrintRow(const Row& r) {
  FILE* o = Out();
  std::fprintf(o, "\n== threads %d ==\n", r.threads);
  if (r.membw.bytes == 0) {
    std::fprintf(o, "memory read bandwidth    not measured (the probe does not fit the budget)\n");
  } else {
    std::fprintf(o, "memory read bandwidth    %.1f GB/s (%s buffer, best of %d passes, %s loads)\n",
                 r.membw.gb_per_s, Mib(r.membw.bytes).c_str(), FLAGS_membw_passes, r.membw.kernel);
  }
  std::fprintf(o, "prefill                  %.1f tok/s median (min %.1f, max %.1f, sd %.1f)\n",
               r.prefill_tps.median, r.prefill_tps.min, r.prefill_tps.max, r.prefill_tps.stddev);
  std::fprintf(o,
               "time to first token      %.1f ms median (min %.1f, max %.1f): prefill start to "
               "the first generated token's logits\n",
               r.ttft_ms.median, r.ttft_ms.min, r.ttft_ms.max);
  if (r.peak.gmac_per_s > 0) {
    std::fprintf(o,
                 "int8 peak                %.1f GMAC/s (%s dot idiom in registers, %d "
                 "thread%s); "
                 "prefill's int8 products (%.0f M multiply-adds a token: attention projections, "
                 "expert gate and up) run at %.1f GMAC/s = %.1f%% of it\n",
                 r.peak.gmac_per_s, r.peak.kernel, r.peak.threads, r.peak.threads == 1 ? "" : "s",
                 r.prefill_q8_macs / 1e6, r.prefill_gmac_s(), 100.0 * r.peak_fraction());
  }
  std::fprintf(o, "decode                   %.1f tok/s median (min %.1f, max %.1f, sd %.1f)\n",
               r.decode_tps.median, r.decode_tps.min, r.decode_tps.max, r.decode_tps.stddev);
  std::fprintf(o, "decode time by phase     %s\n", PhaseSplit(r.decode).c_str());
  std::fprintf(o, "prefill time by phase    %s\n", PhaseSplit(r.prefill).c_str());
  std::fprintf(o,
               "ReGLU sparsity           decode %.1f%%, prefill %.1f%% of expert neurons skipped\n",
               100.0 * r.decode.sparsity(), 100.0 * r.prefill.sparsity());
  std::fprintf(o, "weight bytes / token     %.2f MB read (dense %.2f MB: %.1f%% saved)\n",
               r.bytes_per_token / 1e6, r.dense_bytes_per_token / 1e6,
               r.dense_bytes_per_token > 0
                   ? 100.0 * (1.0 - r.bytes_per_token / r.dense_bytes_per_token)
                   : 0.0);
  std::fprintf(o, "weight-read bandwidth    %.2f GB/s = %.1f%% of the measured %.1f GB/s\n",
               r.achieved() / 1e9, 100.0 * r.fraction(), r.membw.gb_per_s);
  std::fprintf(o,
               "bandwidth-bound decode   %.1f tok/s at these bytes/token (dense: %.1f tok/s); "
               "decode reaches %.1f%% of it\n",
               r.bound_tps(), r.dense_bound_tps(), 100.0 * r.fraction());
  if (r.budget) {
    const double t = std::max<int64_t>(r.decode.tokens, 1);
    std::fprintf(o,
                 "expert cache (decode)    hit rate %.1f%%, %.1f MB read/token (%.2f GB/s), "
                 "I/O stall %.2f ms/token, prefetch accuracy %.1f%%, %.1f evictions/token\n",
                 100.0 * r.cache.hit_rate(), r.cache.bytes_read / 1e6 / t,
                 r.cache.bytes_read / 1e9 / std::max(1e-9, t / r.decode_tps.median),
                 1e3 * r.cache.stall_seconds / t, 100.0 * r.cache.prefetch_accuracy(),
                 r.cache.evictions / t);
  }
  std::fprintf(o,
               "peak RSS                 %s (VmHWM for this thread count), process ru_maxrss "
               "%s; now anon %s, file-backed %s\n",
               Mib(r.vmhwm_kib * 1024.0).c_str(), Mib(r.maxrss_kib * 1024.0).c_str(),
               Mib(r.rss_anon_kib * 1024.0).c_str(), Mib(r.rss_file_kib * 1024.0).c_str());
}

nlohmann::json RowJson(const Row& r, const st::Engine& eng) {
  nlohmann::json j;
  j["model"] = FLAGS_model;
  j["file_bytes"] = eng.file().file_size();
  j["kernel"] = r.kernel;
  j["kv_f16"] = FLAGS_kv_f16;
  j["threads"] = r.threads;
  j["prompt_tokens"] = FLAGS_prompt_tokens;
  j["gen_tokens"] = FLAGS_gen_tokens;
  j["reps"] = FLAGS_reps;
  j["membw_gb_s"] = r.membw.gb_per_s;
  j["membw_kernel"] = r.membw.kernel;
  j["int8_peak_gmac_s"] = r.peak.gmac_per_s;
  j["prefill_q8_macs_per_token"] = r.prefill_q8_macs;
  j["prefill_int8_gmac_s"] = r.prefill_gmac_s();
  j["prefill_int8_peak_fraction"] = r.peak_fraction();
  auto put = [&](const std::string& name, const Summary& s) {
    j[name + "_median"] = s.median;
    j[name + "_min"] = s.min;
    j[name + "_max"] = s.max;
    j[name + "_stddev"] = s.stddev;
  };
  put("prefill_tok_s", r.prefill_tps);
  put("decode_tok_s", r.decode_tps);
  put("ttft_ms", r.ttft_ms);
  // Milliseconds a token by phase (decode and prefill), as the report's phase split.
  for (const auto& [name, st] :
       {std::pair<const char*, const st::EngineStats*>{"decode", &r.decode},
        {"prefill", &r.prefill}}) {
    const double per = st->tokens > 0 ? 1e3 / static_cast<double>(st->tokens) : 0.0;
    j[std::string(name) + "_ms_route"] = st->seconds_route * per;
    j[std::string(name) + "_ms_attention"] = st->seconds_attention * per;
    j[std::string(name) + "_ms_moe"] = st->seconds_moe * per;
    j[std::string(name) + "_ms_head"] = st->seconds_head * per;
  }
  j["sparsity_decode"] = r.decode.sparsity();
  j["sparsity_prefill"] = r.prefill.sparsity();
  j["weight_bytes_per_token"] = r.bytes_per_token;
  j["dense_weight_bytes_per_token"] = r.dense_bytes_per_token;
  j["weight_read_gb_s"] = r.achieved() / 1e9;
  j["membw_fraction"] = r.fraction();
  j["bw_bound_tok_s"] = r.bound_tps();
  j["dense_bw_bound_tok_s"] = r.dense_bound_tps();
  j["peak_rss_mib"] = r.vmhwm_kib / 1024.0;
  j["maxrss_mib"] = r.maxrss_kib / 1024.0;
  if (r.budget) {
    const double t = std::max<int64_t>(r.decode.tokens, 1);
    j["memory_budget"] = r.plan.budget;
    j["cache_slots"] = r.plan.slots;
    j["cache_pinned"] = r.plan.pinned;
    j["cache_policy"] = st::CachePolicyName(eng.options().cache_policy);
    j["prefetch"] = eng.options().prefetch;
    j["hit_rate"] = r.cache.hit_rate();
    j["read_bytes_per_token"] = r.cache.bytes_read / t;
    j["stall_ms_per_token"] = 1e3 * r.cache.stall_seconds / t;
    j["prefetch_accuracy"] = r.cache.prefetch_accuracy();
    j["evictions_per_token"] = r.cache.evictions / t;
  }
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  st::cli::Spec spec;
  spec.name = "st-bench";
  spec.usage =
      "st-bench --model m.stmf [--threads 1,2] [--prompt_tokens 128] [--gen_tokens 64] "
      "[--reps 3] [--json]";
  spec.about =
      "Throughput of the torch-free runtime on a model file (synthetic prompt, no tokenizer "
      "needed): prefill and decode tokens/s, time to first token, peak RSS, sparsity and weight "
      "bytes per token against this machine's memory bandwidth, for each --threads value.";
  spec.groups = {{"st-bench flags", "infer/tools/st_bench_main.cpp", {"threads"}},
                 st::EngineFlagGroup()};
  spec.threads_list = true;
  const st::cli::Parsed parsed = st::cli::Parse(spec, argc, argv);
  if (parsed.done()) return parsed.exit_code;
  if (FLAGS_model.empty()) {
    return UsageError("--model is required (a .stmf file written by st-export)");
  }
  const std::vector<int> thread_counts = st::cli::ThreadList();
  if (FLAGS_prompt_tokens < 1) return UsageError("--prompt_tokens must be >= 1");
  if (FLAGS_gen_tokens < 1) return UsageError("--gen_tokens must be >= 1");
  if (FLAGS_reps < 1) return UsageError("--reps must be >= 1");
  if (FLAGS_warmup < 0) return UsageError("--warmup must be >= 0");
  if (FLAGS_membw_mib < 256) {
    return UsageError(
        "--membw_mib must be >= 256 (a smaller buffer measures the caches, not memory)");
  }
  if (FLAGS_membw_passes < 1) return UsageError("--membw_passes must be >= 1");
  {
    st::EngineOptions check;
    if (absl::Status fs = st::ApplyEngineFlags(&check); !fs.ok()) {
      return UsageError(std::string(fs.message()));
    }
  }

  std::vector<int> batches;
  for (absl::string_view b : absl::StrSplit(FLAGS_batch, ',', absl::SkipEmpty())) {
    int v = 0;
    if (!absl::SimpleAtoi(b, &v) || v < 1 || v > 256) {
      return UsageError("--batch takes a comma list of counts in [1, 256], got '" + FLAGS_batch +
                        "'");
    }
    batches.push_back(v);
  }
  std::vector<int32_t> text_ids;
  if (!FLAGS_text.empty()) {
    auto text = st::cli::ReadFile(FLAGS_text, "--text");
    if (!text.ok()) return Fail(std::string(text.status().message()));
    auto file = st::ModelFile::Open(FLAGS_model);
    if (!file.ok()) return Fail(std::string(file.status().message()));
    auto tok = st::MakeTokenizer((*file)->tokenizer_name(), (*file)->tokenizer_json());
    if (!tok.ok())
      return Fail("the model file's tokenizer does not load: " +
                  std::string(tok.status().message()));
    // As st-run and st-perplexity encode: with the model's tokenizer policy (BOS where it says).
    st::TokenizerPolicy policy = (*file)->tokenizer_policy();
    policy.ResolveIds(**tok);
    text_ids = policy.Encode(**tok, *text);
    const size_t need =
        static_cast<size_t>(FLAGS_prompt_tokens + FLAGS_gen_tokens) * (FLAGS_reps + FLAGS_warmup);
    if (text_ids.size() < need) {
      return Fail("--text '" + FLAGS_text + "' has " + std::to_string(text_ids.size()) +
                  " tokens; these repetitions need " + std::to_string(need));
    }
  }
  std::vector<Row> rows;
  bool printed_model = false, printed_probe_note = false;
  int64_t budget_bytes = 0;
  {
    st::EngineOptions probe;
    if (absl::Status fs = st::ApplyEngineFlags(&probe); fs.ok()) budget_bytes = probe.memory_budget;
  }
  for (const int threads : thread_counts) {
    // No engine is alive here: the process is single-threaded, so the probe can fork. Its
    // buffer lives in the child and counts in neither RSS figure below.
    const bool hwm_reset = ResetPeakRss();
    st::MemBwOptions mopt;
    mopt.threads = threads;
    mopt.bytes = static_cast<size_t>(FLAGS_membw_mib) << 20;
    mopt.passes = FLAGS_membw_passes;
    // Under --memory_budget the probe's buffer must fit too (inside a 1 GiB container a 1 GiB
    // buffer stalls or is killed): at most half the budget, and none when that is below the
    // 256 MiB that measures memory rather than the caches.
    absl::StatusOr<st::MemBwResult> membw = st::MemBwResult();
    if (budget_bytes > 0 && mopt.bytes > static_cast<size_t>(budget_bytes / 2)) {
      mopt.bytes = static_cast<size_t>(budget_bytes / 2) & ~((size_t{1} << 20) - 1);
    }
    if (mopt.bytes >= (size_t{256} << 20)) {
      membw = st::MeasureReadBandwidthInChild(mopt);
      if (!membw.ok()) return Fail(std::string(membw.status().message()));
    } else if (!printed_probe_note) {
      std::fprintf(Out(),
                   "note        memory bandwidth probe skipped: half the --memory_budget is below "
                   "the 256 MiB it needs; bandwidth fractions read 0\n");
      printed_probe_note = true;
    }

    // The int8 peak of the table the engine will pick (engine.cpp's choice), before the engine
    // exists, so that its threads do not compete.
    st::Int8PeakResult peak;
    if (FLAGS_int8_peak) {
      const st::Kernels* kt = &st::SelectKernels(FLAGS_simd);
      if (FLAGS_simd && !FLAGS_avx512 && st::Avx2Kernels() != nullptr) kt = st::Avx2Kernels();
      auto p = st::MeasureInt8Peak(
          *kt, threads > 0 ? threads
                           : std::max(1, static_cast<int>(std::thread::hardware_concurrency())));
      if (!p.ok()) return Fail(std::string(p.status().message()));
      peak = *p;
    }

    st::EngineOptions eopt;
    eopt.threads = threads;
    eopt.simd = FLAGS_simd;
    eopt.avx512 = FLAGS_avx512;
    if (absl::Status fs = st::ApplyEngineFlags(&eopt); !fs.ok()) {
      return Fail(std::string(fs.message()));
    }
    eopt.uniform_routing = FLAGS_uniform_routing;
    eopt.routing_seed = FLAGS_seed;
    // A budget reserves the KV cache for max_context tokens: the bench needs only its own.
    if (eopt.memory_budget > 0 && eopt.max_context == 0) {
      eopt.max_context = FLAGS_prompt_tokens + FLAGS_gen_tokens;
    }
    auto eng_or = st::Engine::Load(FLAGS_model, eopt);
    if (!eng_or.ok()) {
      const std::string what = st::ExplainNotAModelFile(FLAGS_model);
      return Fail(what.empty() ? std::string(eng_or.status().message()) : what);
    }
    st::Engine& eng = **eng_or;
    const st::ModelConfig& cfg = eng.config();
    if (static_cast<int64_t>(FLAGS_prompt_tokens) + FLAGS_gen_tokens > eng.max_context()) {
      return Fail("--prompt_tokens + --gen_tokens = " +
                  std::to_string(FLAGS_prompt_tokens + FLAGS_gen_tokens) +
                  " exceeds the model's context of " + std::to_string(eng.max_context()));
    }
    if (!printed_model) {
      PrintModel(eng, FLAGS_model);
      std::fprintf(Out(),
                   "run         kernels %s, KV cache %s, prompt %d tokens, %d generated "
                   "(%s), %d reps after %d warm-up\n",
                   eng.KernelName().c_str(), FLAGS_kv_f16 ? "f16" : "f32", FLAGS_prompt_tokens,
                   FLAGS_gen_tokens,
                   FLAGS_greedy         ? "greedy"
                   : FLAGS_text.empty() ? "synthetic ids fed back"
                                        : "the text's tokens fed back",
                   FLAGS_reps, FLAGS_warmup);
      if (!hwm_reset) {
        std::fprintf(Out(), "note        cannot reset VmHWM: peak RSS covers the whole process\n");
      }
      if (eng.expert_cache() != nullptr) {
        std::fprintf(Out(), "memory      %s\n", st::BudgetPlanText(eng).c_str());
      }
      printed_model = true;
    }
    // Each repetition its own prompt and decode tokens (warm-ups included), so a cache cannot
    // simply replay the previous repetition.
    auto tokens = [&](int rep, int n, uint64_t salt) {
      if (!text_ids.empty()) {  // consecutive stretches: prompt, then its continuation
        const size_t per_rep = static_cast<size_t>(FLAGS_prompt_tokens + FLAGS_gen_tokens);
        const size_t start =
            (static_cast<size_t>(rep + FLAGS_warmup) * per_rep + (salt ? FLAGS_prompt_tokens : 0)) %
            text_ids.size();
        std::vector<int32_t> v(n);
        for (int i = 0; i < n; ++i) v[i] = text_ids[(start + i) % text_ids.size()];
        return v;
      }
      return SyntheticTokens(n, cfg.vocab_size, FLAGS_seed * 1000003 + rep * 2 + salt);
    };
    for (int i = 0; i < FLAGS_warmup; ++i) {
      auto r =
          RunRep(eng, tokens(-1 - i, FLAGS_prompt_tokens, 0), tokens(-1 - i, FLAGS_gen_tokens, 1));
      if (!r.ok()) return Fail(std::string(r.status().message()));
    }
    Row row;
    row.threads = eng.threads();
    row.membw = *membw;
    row.peak = peak;
    row.prefill_q8_macs = PrefillQ8Macs(eng);
    row.kernel = eng.KernelName();
    row.budget = eng.expert_cache() != nullptr;
    row.plan = eng.memory_plan();
    std::vector<double> prefill_tps, decode_tps, ttft_ms;
    for (int i = 0; i < FLAGS_reps; ++i) {
      auto r = RunRep(eng, tokens(i, FLAGS_prompt_tokens, 0), tokens(i, FLAGS_gen_tokens, 1));
      if (!r.ok()) return Fail(std::string(r.status().message()));
      prefill_tps.push_back(FLAGS_prompt_tokens / std::max(r->prefill_s, 1e-12));
      decode_tps.push_back(FLAGS_gen_tokens / std::max(r->decode_s, 1e-12));
      ttft_ms.push_back(1e3 * r->prefill_s);
      Accumulate(&row.prefill, r->prefill);
      Accumulate(&row.decode, r->decode);
      row.cache.requests += r->cache.requests;
      row.cache.hits += r->cache.hits;
      row.cache.reads += r->cache.reads;
      row.cache.bytes_read += r->cache.bytes_read;
      row.cache.prefetch_reads += r->cache.prefetch_reads;
      row.cache.prefetch_used += r->cache.prefetch_used;
      row.cache.evictions += r->cache.evictions;
      row.cache.stall_seconds += r->cache.stall_seconds;
    }
    row.prefill_tps = Summarize(prefill_tps);
    row.decode_tps = Summarize(decode_tps);
    row.ttft_ms = Summarize(ttft_ms);
    row.bytes_per_token = row.decode.tokens > 0
                              ? static_cast<double>(row.decode.weight_bytes) / row.decode.tokens
                              : 0.0;
    row.dense_bytes_per_token = static_cast<double>(eng.DenseDecodeWeightBytes());
    row.vmhwm_kib = StatusKiB("VmHWM");
    row.maxrss_kib = MaxRssKiB();
    row.rss_anon_kib = StatusKiB("RssAnon");
    row.rss_file_kib = StatusKiB("RssFile");
    PrintRow(row);
    if (!FLAGS_record_routing.empty()) {
      absl::Status ws = st::WriteRoutingProfile(FLAGS_record_routing, eng.routing());
      if (!ws.ok()) return Fail(std::string(ws.message()));
    }
    if (FLAGS_json) {
      std::printf("%s\n", RowJson(row, eng).dump().c_str());
      std::fflush(stdout);
    }
    rows.push_back(row);
    if (!batches.empty()) {
      std::fprintf(Out(),
                   "\nbatched decode (%d threads): B conversations, %d tokens each after a "
                   "%d-token prompt, median of %d reps\n",
                   eng.threads(), FLAGS_gen_tokens, FLAGS_prompt_tokens, FLAGS_reps);
      std::fprintf(Out(), "      B  aggregate tok/s  per stream  vs B=1  MB/token  experts/step\n");
      double base = 0;
      for (int B : batches) {
        std::vector<double> tps;
        st::EngineStats acc;
        for (int i = -FLAGS_warmup; i < FLAGS_reps; ++i) {
          const std::vector<int32_t> ids =
              SyntheticTokens(B * (FLAGS_prompt_tokens + FLAGS_gen_tokens), cfg.vocab_size,
                              FLAGS_seed * 7919 + B * 131 + (i + FLAGS_warmup));
          st::EngineStats d;
          auto secs = RunBatchRep(eng, B, ids, FLAGS_prompt_tokens, FLAGS_gen_tokens, &d);
          if (!secs.ok()) return Fail(std::string(secs.status().message()));
          if (i < 0) continue;
          tps.push_back(B * FLAGS_gen_tokens / std::max(*secs, 1e-12));
          Accumulate(&acc, d);
        }
        const Summary sm = Summarize(tps);
        if (B == batches.front()) base = sm.median / B;  // per stream at the first count
        const double vs1 = base > 0 ? sm.median / base : 0;
        const double mb = acc.tokens > 0 ? acc.weight_bytes / 1e6 / acc.tokens : 0;
        const double experts =
            acc.forwards > 0 ? static_cast<double>(acc.expert_calls) / acc.forwards : 0;
        std::fprintf(Out(), "%7d  %15.1f  %10.1f  %5.2fx  %8.1f  %12.1f  %s\n", B, sm.median,
                     sm.median / B, vs1, mb, experts, PhaseSplit(acc).c_str());
        if (FLAGS_json) {
          nlohmann::json j = {{"threads", eng.threads()},
                              {"batch", B},
                              {"aggregate_decode_tok_s", sm.median},
                              {"aggregate_decode_tok_s_min", sm.min},
                              {"aggregate_decode_tok_s_max", sm.max},
                              {"vs_batch_1", vs1},
                              {"mb_per_token", mb}};
          std::printf("%s\n", j.dump().c_str());
          std::fflush(stdout);
        }
      }
    }
  }

  FILE* o = Out();
  std::fprintf(o,
               "\nthreads  membw GB/s  prefill tok/s  TTFT ms  decode tok/s  MB/token  "
               "%%membw  bound tok/s  sparsity  peak RSS\n");
  for (const Row& r : rows) {
    std::fprintf(o, "%7d  %10.1f  %13.1f  %7.1f  %12.1f  %8.2f  %5.1f%%  %11.1f  %7.1f%%  %s\n",
                 r.threads, r.membw.gb_per_s, r.prefill_tps.median, r.ttft_ms.median,
                 r.decode_tps.median, r.bytes_per_token / 1e6, 100 * r.fraction(), r.bound_tps(),
                 100 * r.decode.sparsity(), Mib(r.vmhwm_kib * 1024.0).c_str());
  }
  return 0;
}
