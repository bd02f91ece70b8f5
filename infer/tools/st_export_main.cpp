// st-export: writes the quantized model file from a Hugging Face SmallThinker checkpoint
// directory or an st-train HDF5 checkpoint (torch-free).
#include <gflags/gflags.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>

#include "infer/export/exporter.h"
#include "infer/export/tensor_source.h"
#include "infer/quant/types.h"

DEFINE_string(input, "", "Hugging Face checkpoint directory, or an st-train checkpoint.h5");
DEFINE_string(output, "", "model file to write (e.g. model.stmf)");
DEFINE_string(recipe, "q4_0", "type preset: f32, f16, q8_0 or q4_0 (experts q4_0, rest q8_0)");
DEFINE_bool(force, false, "replace --output if it exists");

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "export a checkpoint to the smallthinker.cpp model file\n"
      "  st-export --input runs/tiny/checkpoint.h5 --output tiny.stmf --recipe q4_0\n"
      "  st-export --input path/to/SmallThinker-4BA0.6B-Instruct --output 4b-q4_0.stmf");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_input.empty() || FLAGS_output.empty()) {
    std::fprintf(stderr, "st-export: error: --input and --output are required (see --help)\n");
    return 2;
  }
  struct stat sb;
  if (!FLAGS_force && stat(FLAGS_output.c_str(), &sb) == 0) {
    std::fprintf(stderr, "st-export: error: %s exists; pass --force to replace it\n",
                 FLAGS_output.c_str());
    return 2;
  }
  auto recipe = st::RecipePreset(FLAGS_recipe);
  if (!recipe.ok()) {
    std::fprintf(stderr, "st-export: error: %s\n", std::string(recipe.status().message()).c_str());
    return 2;
  }
  auto src = st::OpenTensorSource(FLAGS_input);
  if (!src.ok()) {
    std::fprintf(stderr, "st-export: error: %s\n", std::string(src.status().message()).c_str());
    return 1;
  }
  const st::ModelConfig& cfg = (*src)->config();
  std::printf("source: %s\n  %.1fM parameters, %d layers, %d experts (top-%d)\nrecipe %s\n",
              (*src)->description().c_str(), cfg.NumParams() / 1e6, cfg.num_hidden_layers,
              cfg.moe_num_primary_experts, cfg.moe_num_active_primary_experts,
              recipe->ToString().c_str());
  st::ExportOptions opt;
  opt.recipe = *recipe;
  const auto start = std::chrono::steady_clock::now();
  auto last = start;
  opt.progress = [&](int64_t done, int64_t total, int64_t elements) {
    const auto now = std::chrono::steady_clock::now();
    if (done != total && std::chrono::duration<double>(now - last).count() < 1.0) return;
    last = now;
    const double s = std::chrono::duration<double>(now - start).count();
    const double eta = done > 0 ? s / done * (total - done) : 0;
    std::fprintf(stderr, "\r  %lld/%lld tensors, %.1fM weights, %.1f M weights/s, ETA %.0f s   ",
                 (long long)done, (long long)total, elements / 1e6, elements / 1e6 / s, eta);
    if (done == total) std::fprintf(stderr, "\n");
  };
  auto report = st::ExportModel(**src, FLAGS_output, opt);
  if (!report.ok()) {
    std::fprintf(stderr, "\nst-export: error: %s\n", std::string(report.status().message()).c_str());
    return 1;
  }
  std::printf("quantization error by tensor class:\n");
  std::printf("  %-10s %-6s %8s %12s %14s %12s\n", "class", "type", "tensors", "elements",
              "max |error|", "rel. RMS");
  for (const auto& [cls, e] : report->classes) {
    std::printf("  %-10s %-6s %8lld %12lld %14.3g %12.3g%s\n", cls.c_str(), st::DTypeName(e.dtype),
                (long long)e.tensors, (long long)e.elements, e.max_abs_error, e.relative_rms(),
                e.fallbacks ? " (some rows not multiples of 32: stored f16)" : "");
  }
  std::printf("wrote %s: %.1f MB in %.1f s\n", FLAGS_output.c_str(), report->bytes / 1e6,
              report->seconds);
  return 0;
}
