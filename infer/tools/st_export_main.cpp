// st-export: writes the quantized model file from a Hugging Face SmallThinker checkpoint
// directory, an st-train HDF5 checkpoint, or random weights for a model config (torch-free).
#include <gflags/gflags.h>
#include <malloc.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "infer/export/exporter.h"
#include "infer/export/random_source.h"
#include "infer/export/tensor_source.h"
#include "infer/quant/types.h"
#include "infer/tokenizer/tokenizer.h"
#include "model/check.h"
#include "model/config.h"

DEFINE_string(input, "", "Hugging Face checkpoint directory, or an st-train checkpoint.h5");
DEFINE_string(output, "", "model file to write (e.g. model.stmf)");
DEFINE_string(recipe, "q4_0",
              "type preset: f32, f16, q8_0, q4_0 (experts q4_0, other matrices q8_0) or "
              "q4_0_pure (every matrix q4_0); router and norms stay f32");
DEFINE_string(quant, "", "the same as --recipe");
DEFINE_bool(force, false, "replace --output if it exists");
DEFINE_bool(random_init, false,
            "random weights (N(0, 0.02^2) matrices, unit norms) for the model --config instead "
            "of a checkpoint: a synthetic model for speed measurements");
DEFINE_string(config, "",
              "with --random-init: the model config JSON (e.g. configs/model/tiny.json)");
DEFINE_uint64(seed, 1, "with --random-init: the seed; the same seed gives the same file");
DEFINE_string(tokenizer, "byte",
              "with --random-init: 'byte' or a Hugging Face tokenizer.json to embed");

namespace {

int Fail(int code, const std::string& msg) {
  std::fprintf(stderr, "st-export: error: %s\n", msg.c_str());
  return code;
}

bool FlagGiven(const char* name) { return !gflags::GetCommandLineFlagInfoOrDie(name).is_default; }

// The source the flags name: a checkpoint (--input) or random weights (--random-init).
absl::StatusOr<std::unique_ptr<st::TensorSource>> OpenSource() {
  if (!FLAGS_random_init) return st::OpenTensorSource(FLAGS_input);
  ST_ASSIGN_OR_RETURN(st::ModelConfig cfg, st::LoadModelConfig(FLAGS_config));
  ST_ASSIGN_OR_RETURN(std::unique_ptr<st::Tokenizer> tok, st::LoadTokenizer(FLAGS_tokenizer));
  return st::MakeRandomSource(cfg, FLAGS_seed, tok->name(), tok->ToJson());
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "export a checkpoint to the smallthinker.cpp model file\n"
      "  st-export --input runs/tiny/checkpoint.h5 --output tiny.stmf --recipe q4_0\n"
      "  st-export --input path/to/SmallThinker-4BA0.6B-Instruct --output 4b-q4_0.stmf\n"
      "  st-export --random-init --config configs/model/smallthinker-4b-a0.6b.json "
      "--quant q4_0_pure --output 4b-random.stmf");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  // The exporter allocates and frees tensor-sized buffers thousands of times (an expert matrix
  // of the 21B is 7.9 MB, its q/o projections 37 MB). Take them all from the heap and keep up to
  // 256 MB of free heap instead of mmap + munmap each time: fresh pages fault and are zeroed by
  // the kernel, which was half of a random-init export's time (1.8M faults on the 21B, now
  // 0.13M).
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  if (FLAGS_random_init) {
    if (!FLAGS_input.empty()) {
      return Fail(2, "--random-init and --input exclude each other: random weights need no input");
    }
    if (FLAGS_config.empty()) {
      return Fail(2,
                  "--random-init needs --config (a model config JSON, e.g. "
                  "configs/model/smallthinker-4b-a0.6b.json)");
    }
  } else {
    for (const char* flag : {"config", "seed", "tokenizer"}) {
      if (FlagGiven(flag)) {
        return Fail(2, std::string("--") + flag + " applies only with --random-init");
      }
    }
    if (FLAGS_input.empty()) {
      return Fail(2, "--input (or --random-init --config) is required (see --help)");
    }
  }
  if (FLAGS_output.empty()) return Fail(2, "--output is required (see --help)");
  std::string recipe_name = FLAGS_recipe;
  if (!FLAGS_quant.empty()) {
    if (FlagGiven("recipe") && FLAGS_recipe != FLAGS_quant) {
      return Fail(2, "--quant " + FLAGS_quant + " and --recipe " + FLAGS_recipe +
                         " disagree (--quant is another name for --recipe; give one)");
    }
    recipe_name = FLAGS_quant;
  }
  struct stat sb;
  if (!FLAGS_force && stat(FLAGS_output.c_str(), &sb) == 0) {
    return Fail(2, FLAGS_output + " exists; pass --force to replace it");
  }
  auto recipe = st::RecipePreset(recipe_name);
  if (!recipe.ok()) return Fail(2, std::string(recipe.status().message()));
  auto src = OpenSource();
  if (!src.ok()) return Fail(1, std::string(src.status().message()));
  const st::ModelConfig& cfg = (*src)->config();
  std::printf("source: %s\n  %.1fM parameters, %d layers, %d experts (top-%d)\nrecipe %s\n",
              (*src)->description().c_str(), cfg.NumParams() / 1e6, cfg.num_hidden_layers,
              cfg.moe_num_primary_experts, cfg.moe_num_active_primary_experts,
              recipe->ToString().c_str());
  st::ExportOptions opt;
  opt.recipe = *recipe;
  int64_t total_elements = 0;  // what the exporter reads: ExpectedTensors
  for (const st::SourceTensor& t : st::ExpectedTensors(cfg)) total_elements += t.num_elements();
  const auto start = std::chrono::steady_clock::now();
  auto last = start;
  opt.progress = [&](int64_t done, int64_t total, int64_t elements) {
    const auto now = std::chrono::steady_clock::now();
    if (done != total && std::chrono::duration<double>(now - last).count() < 1.0) return;
    last = now;
    const double s = std::chrono::duration<double>(now - start).count();
    const double eta = elements > 0 ? s / elements * (total_elements - elements) : 0;
    std::fprintf(stderr, "\r  %lld/%lld tensors, %.1fM weights, %.1f M weights/s, ETA %.0f s   ",
                 (long long)done, (long long)total, elements / 1e6, elements / 1e6 / s, eta);
    if (done == total) std::fprintf(stderr, "\n");
  };
  auto report = st::ExportModel(**src, FLAGS_output, opt);
  if (!report.ok()) {
    std::fprintf(stderr, "\n");
    return Fail(1, std::string(report.status().message()));
  }
  std::printf("quantization error by tensor class:\n");
  std::printf("  %-10s %-6s %8s %12s %14s %12s\n", "class", "type", "tensors", "elements",
              "max |error|", "rel. RMS");
  for (const auto& [cls, e] : report->classes) {
    std::printf("  %-10s %-6s %8lld %12lld %14.3g %12.3g%s\n", cls.c_str(), st::DTypeName(e.dtype),
                (long long)e.tensors, (long long)e.elements, e.max_abs_error, e.relative_rms(),
                e.fallbacks ? " (some rows not multiples of 32: stored f16)" : "");
  }
  std::printf("wrote %s: %.1f MB in %.1f s (%.0f MB/s)\n", FLAGS_output.c_str(),
              report->bytes / 1e6, report->seconds, report->bytes / 1e6 / report->seconds);
  return 0;
}
