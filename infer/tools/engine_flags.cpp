// The engine flags shared by the runtime tools (engine_flags.h).
#include "infer/tools/engine_flags.h"

#include <gflags/gflags.h>
#include <sys/stat.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

DEFINE_string(model, "", "model file (.stmf) written by st-export");
DEFINE_bool(kv_f16, true, "keep the KV cache in fp16 (--kv_f16=false: f32)");
DEFINE_bool(huge_pages, true,
            "read the model into huge-page-backed memory (false: map the file with 4 KiB pages)");
DEFINE_string(memory_budget, "",
              "total memory the process may use, page cache included (e.g. 1G, 800M); experts "
              "are then streamed from storage through an expert cache. Empty or 0: the whole "
              "model in memory");
DEFINE_string(cache_policy, "lrfu",
              "expert cache replacement policy: lru, lfu (LFU with ageing) or lrfu (a use count "
              "that halves every cache-size uses: frequency and recency together)");
DEFINE_bool(prefetch, true,
            "start expert reads as soon as the pre-attention router has chosen them, so that "
            "attention hides them (false: read when the MoE needs them, after attention)");
DEFINE_string(io, "auto", "expert reads: auto (io_uring when available), uring or pread");
DEFINE_int32(io_threads, 2, "reader threads of the pread backend");
DEFINE_string(pin_profile, "",
              "routing profile (st-run --record_routing): pin its hottest experts in the cache");
DEFINE_double(pin_fraction, 0.5, "at most this fraction of the cache's slots is pinned");
DEFINE_int32(max_context, 0,
             "longest context accepted, in tokens (0 = the model's); with a memory budget the "
             "KV cache is reserved for this many tokens");

namespace st {

absl::StatusOr<int64_t> ParseByteSize(const std::string& text) {
  const auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text,
                     "' is not a size: expected a number with an optional K, M, G or T suffix "
                     "(powers of 1024), e.g. 1G or 800M"));
  };
  if (text.empty()) return bad();
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || !std::isfinite(v) || v < 0) return bad();
  std::string suffix(end);
  for (char& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (suffix.size() >= 2 && suffix.substr(suffix.size() - 2) == "IB")
    suffix.resize(suffix.size() - 2);
  else if (!suffix.empty() && suffix.back() == 'B')
    suffix.pop_back();
  double mult = 1;
  if (suffix == "K")
    mult = 1024.0;
  else if (suffix == "M")
    mult = 1024.0 * 1024;
  else if (suffix == "G")
    mult = 1024.0 * 1024 * 1024;
  else if (suffix == "T")
    mult = 1024.0 * 1024 * 1024 * 1024;
  else if (!suffix.empty())
    return bad();
  const double bytes = v * mult;
  if (bytes > 9.0e18) return bad();
  return static_cast<int64_t>(bytes);
}

cli::FlagGroup EngineFlagGroup() { return {"engine flags", "infer/tools/engine_flags.cpp", {}}; }

absl::Status ApplyEngineFlags(EngineOptions* o) {
  o->kv_f16 = FLAGS_kv_f16;
  o->huge_pages = FLAGS_huge_pages;
  if (!FLAGS_memory_budget.empty()) {
    absl::StatusOr<int64_t> b = ParseByteSize(FLAGS_memory_budget);
    if (!b.ok())
      return absl::InvalidArgumentError(absl::StrCat("--memory_budget: ", b.status().message()));
    o->memory_budget = *b;
  }
  absl::StatusOr<CachePolicy> p = ParseCachePolicy(FLAGS_cache_policy);
  if (!p.ok())
    return absl::InvalidArgumentError(absl::StrCat("--cache_policy: ", p.status().message()));
  o->cache_policy = *p;
  absl::StatusOr<IoBackend> io = ParseIoBackend(FLAGS_io);
  if (!io.ok()) return absl::InvalidArgumentError(absl::StrCat("--io: ", io.status().message()));
  o->io = *io;
  if (FLAGS_io_threads < 1 || FLAGS_io_threads > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("--io_threads must be in [1, 64], got ", FLAGS_io_threads));
  }
  o->io_threads = FLAGS_io_threads;
  o->prefetch = FLAGS_prefetch;
  o->pin_profile = FLAGS_pin_profile;
  if (!(FLAGS_pin_fraction >= 0 && FLAGS_pin_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--pin_fraction must be in [0, 1), got ", FLAGS_pin_fraction));
  }
  o->pin_fraction = FLAGS_pin_fraction;
  if (FLAGS_max_context < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_context must be >= 0 (0 = the model's), got ", FLAGS_max_context));
  }
  o->max_context = FLAGS_max_context;
  if (o->memory_budget == 0 && !o->pin_profile.empty()) {
    return absl::InvalidArgumentError(
        "--pin_profile needs --memory_budget (pinning is a cache "
        "setting; without a budget every expert is in memory)");
  }
  return absl::OkStatus();
}

std::string ExplainNotAModelFile(const std::string& path) {
  constexpr char kConvert[] = "st-export --input DIR --output m.stmf";
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return "";
  if (S_ISDIR(st.st_mode)) {
    struct stat cfg;
    if (stat((path + "/config.json").c_str(), &cfg) == 0) {
      return absl::StrCat("'", path,
                          "' is a Hugging Face checkpoint directory, not a model file; convert "
                          "it with ",
                          kConvert, " (DIR = that directory), then pass --model m.stmf");
    }
    return absl::StrCat("'", path,
                        "' is a directory; --model takes a .stmf model file written by st-export");
  }
  std::ifstream in(path, std::ios::binary);
  char b[16] = {};
  in.read(b, sizeof(b));
  const std::streamsize n = in.gcount();
  if (n >= 4 && std::memcmp(b, "STMF", 4) == 0) return "";
  if (n >= 4 && std::memcmp(b, "GGUF", 4) == 0) {
    const std::string stem = absl::EndsWith(path, ".gguf") ? path.substr(0, path.size() - 5) : path;
    return absl::StrCat("'", path,
                        "' is a GGUF file (llama.cpp's format), not a model file; convert it "
                        "with st-export --input ",
                        path, " --output ", stem, ".stmf, then pass --model ", stem, ".stmf");
  }
  if (n >= 8 && std::memcmp(b, "\x89HDF\r\n\x1a\n", 8) == 0) {
    return absl::StrCat("'", path,
                        "' is an HDF5 file (an st-train checkpoint?), not a model file; convert "
                        "it with st-export --input ",
                        path, " --output m.stmf");
  }
  // safetensors: an 8-byte little-endian header length, then the JSON header.
  if (n >= 9 && b[8] == '{') {
    return absl::StrCat("'", path,
                        "' is a safetensors file, not a model file; convert the Hugging Face "
                        "directory that holds it (with its config.json) with ",
                        kConvert);
  }
  return "";
}

std::string BudgetPlanText(const Engine& e) {
  const ExpertCache* c = e.expert_cache();
  if (c == nullptr) return "";
  const MemoryPlan& p = e.memory_plan();
  const auto mib = [](int64_t b) { return absl::StrFormat("%.0f MiB", b / 1048576.0); };
  return absl::StrCat("budget ", mib(p.budget), ": resident weights ", mib(p.resident),
                      ", KV cache ", mib(p.kv_cache), " (", e.max_context(), " tokens), buffers ",
                      mib(p.buffers), ", allowance ", mib(p.overhead), ", expert cache ",
                      mib(p.expert_cache), " = ", p.slots, " slots of ",
                      absl::StrFormat("%.2f MiB", p.slot_bytes / 1048576.0), " (", p.pinned,
                      " pinned); policy ", CachePolicyName(e.options().cache_policy), ", prefetch ",
                      e.options().prefetch ? "on" : "off", ", reads ", c->io_name());
}

std::string CacheStatsText(const Engine& e, int64_t tokens) {
  const ExpertCache* c = e.expert_cache();
  if (c == nullptr) return "";
  const ExpertCacheStats& s = c->stats();
  const double t = tokens > 0 ? static_cast<double>(tokens) : 1.0;
  return absl::StrFormat(
      "expert cache: hit rate %.1f%% (%d of %d uses), %.1f MB read/token, I/O stall %.2f "
      "ms/token, prefetch accuracy %.1f%% (%d of %d reads used), %d evictions",
      100.0 * s.hit_rate(), s.hits, s.requests, s.bytes_read / 1e6 / t, 1e3 * s.stall_seconds / t,
      100.0 * s.prefetch_accuracy(), s.prefetch_used, s.prefetch_reads, s.evictions);
}

}  // namespace st
