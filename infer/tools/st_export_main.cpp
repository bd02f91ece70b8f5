// st-export: writes the quantized model file (--format stmf), a Hugging Face checkpoint
// directory (--format hf) or a llama.cpp GGUF file (--format gguf) from a Hugging Face
// SmallThinker checkpoint directory, an st-train HDF5 checkpoint, random weights for a model
// config, or (--format gguf only) one of our model files (torch-free).
#include <gflags/gflags.h>
#include <malloc.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "infer/export/exporter.h"
#include "infer/export/gguf_export.h"
#include "infer/export/hf_writer.h"
#include "infer/export/random_source.h"
#include "infer/export/tensor_source.h"
#include "infer/format/model_file.h"
#include "infer/quant/types.h"
#include "infer/tokenizer/tokenizer.h"
#include "infer/tools/cli.h"
#include "model/check.h"
#include "model/config.h"

DEFINE_string(input, "",
              "Hugging Face checkpoint directory, a llama.cpp GGUF file (arch smallthinker), or "
              "an st-train checkpoint.h5 (--format gguf: also a model file, .stmf)");
DEFINE_string(output, "",
              "--format stmf: the model file to write (e.g. model.stmf); --format hf: the "
              "directory to write (created if missing; must be empty unless --force); --format "
              "gguf: the GGUF file to write (e.g. model.gguf)");
DEFINE_string(format, "stmf",
              "stmf: the quantized smallthinker.cpp model file; hf: a Hugging Face checkpoint "
              "directory (config.json, safetensors, tokenizer files) as the released "
              "SmallThinker models are published; gguf: a llama.cpp GGUF file (arch "
              "smallthinker) as llama.cpp's converter writes it");
DEFINE_string(recipe, "q4_0",
              "--format stmf and gguf: type preset: f32, f16, q8_0, q4_0 (experts q4_0, other "
              "matrices q8_0) or q4_0_pure (every matrix q4_0); router and norms stay f32 (a "
              "model file's tensors keep their types). --format stmf also: keep (every tensor "
              "in its stored type, or the nearest one the model file holds; the default for a "
              "GGUF --input)");
DEFINE_string(quant, "", "the same as --recipe");
DEFINE_string(hf_dtype, "bf16",
              "--format hf: the weights' type in the safetensors files: bf16 (as released; "
              "round to nearest even) or f32 (exact)");
DEFINE_string(max_shard_size, "5GB",
              "--format hf: largest safetensors shard, as transformers' max_shard_size (5GB = "
              "5e9 bytes; also MB, KB, GiB, MiB, KiB, bytes); more than one shard adds "
              "model.safetensors.index.json");
DEFINE_bool(force, false,
            "replace --output if it exists (--format hf: replace the export's files in a "
            "non-empty directory; other files there are kept); --format gguf: also write a "
            "per-layer RoPE / sliding-window layout that llama.cpp computes differently");
DEFINE_bool(random_init, false,
            "random weights (N(0, 0.02^2) matrices, unit norms) for the model --config instead "
            "of a checkpoint: a synthetic model for speed measurements");
DEFINE_string(config, "",
              "with --random-init: the model config JSON (e.g. configs/model/tiny.json)");
DEFINE_uint64(seed, 1, "with --random-init: the seed; the same seed gives the same file");
DEFINE_string(tokenizer, "byte",
              "with --random-init: 'byte' or a Hugging Face tokenizer.json to embed");

namespace {

// `code` 1: a failure; 2: a usage error (the flags do not make sense).
int Fail(int code, const std::string& msg) {
  return code == 2 ? st::cli::UsageError(msg) : st::cli::Fail(msg);
}

using st::cli::FlagGiven;

// The first of `flags` given on the command line, or nullptr.
const char* FirstGiven(std::initializer_list<const char*> flags) {
  for (const char* flag : flags) {
    if (FlagGiven(flag)) return flag;
  }
  return nullptr;
}

// The source the flags name: a checkpoint (--input) or random weights (--random-init).
absl::StatusOr<std::unique_ptr<st::TensorSource>> OpenSource() {
  if (!FLAGS_random_init) return st::OpenTensorSource(FLAGS_input);
  ST_ASSIGN_OR_RETURN(st::ModelConfig cfg, st::LoadModelConfig(FLAGS_config));
  ST_ASSIGN_OR_RETURN(std::unique_ptr<st::Tokenizer> tok, st::LoadTokenizer(FLAGS_tokenizer));
  return st::MakeRandomSource(cfg, FLAGS_seed, tok->name(), tok->ToJson());
}

// Seconds since `start`.
double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void PrintSource(const st::TensorSource& src) {
  const st::ModelConfig& cfg = src.config();
  std::printf("source: %s\n  %.1fM parameters, %d layers, %d experts (top-%d)\n",
              src.description().c_str(), cfg.NumParams() / 1e6, cfg.num_hidden_layers,
              cfg.moe_num_primary_experts, cfg.moe_num_active_primary_experts);
  // How the source was read (config keys ignored, side files missing), once, at info level.
  for (const std::string& note : src.notes()) std::printf("  note: %s\n", note.c_str());
  const st::TokenizerPolicy policy = src.tokenizer_policy();
  std::printf(
      "  tokenizer policy: add_bos_token %s, add_eos_token %s; chat template %s; "
      "generation defaults: %s\n",
      policy.add_bos_token ? "true" : "false", policy.add_eos_token ? "true" : "false",
      src.chat_template().empty() ? "none" : "stored",
      src.generation_defaults().ToString().c_str());
}

// --format stmf: the quantized model file.
int ExportStmf(const st::TensorSource& src, const st::ExportRecipe& recipe) {
  const st::ModelConfig& cfg = src.config();
  std::printf("recipe %s\n", recipe.ToString().c_str());
  st::ExportOptions opt;
  opt.recipe = recipe;
  int64_t total_elements = 0;  // what the exporter reads: ExpectedTensors
  for (const st::SourceTensor& t : st::ExpectedTensors(cfg)) total_elements += t.num_elements();
  const auto start = std::chrono::steady_clock::now();
  auto last = start;
  opt.progress = [&](int64_t done, int64_t total, int64_t elements) {
    const auto now = std::chrono::steady_clock::now();
    if (done != total && std::chrono::duration<double>(now - last).count() < 1.0) return;
    last = now;
    const double s = Since(start);
    const double eta = elements > 0 ? s / elements * (total_elements - elements) : 0;
    std::fprintf(stderr, "\r  %lld/%lld tensors, %.1fM weights, %.1f M weights/s, ETA %.0f s   ",
                 (long long)done, (long long)total, elements / 1e6, elements / 1e6 / s, eta);
    if (done == total) std::fprintf(stderr, "\n");
  };
  auto report = st::ExportModel(src, FLAGS_output, opt);
  if (!report.ok()) {
    std::fprintf(stderr, "\n");
    return Fail(1, std::string(report.status().message()));
  }
  std::printf("quantization error by tensor class:\n");
  std::printf("  %-10s %-6s %8s %12s %14s %12s\n", "class", "type", "tensors", "elements",
              "max |error|", "rel. RMS");
  for (const auto& [cls, e] : report->classes) {
    std::printf("  %-10s %-6s %8lld %12lld %14.3g %12.3g%s%s\n", cls.c_str(),
                e.mixed ? "mixed" : st::DTypeName(e.dtype), (long long)e.tensors,
                (long long)e.elements, e.max_abs_error, e.relative_rms(),
                e.fallbacks ? " (some rows not multiples of 32: stored f16)" : "",
                e.copied ? absl::StrCat(" (", e.copied, " copied as stored)").c_str() : "");
  }
  // "keep": what could not be copied block for block, and the error that added.
  for (const auto& [key, e] : report->requantised) {
    std::printf(
        "  %s: %lld tensors requantised from %s to %s: max |error| %.3g, relative RMS "
        "error %.3g%s\n",
        key.first.c_str(), (long long)e.tensors, key.second.c_str(), st::DTypeName(e.dtype),
        e.max_abs_error, e.relative_rms(),
        key.first == "expert down" ? " (stored transposed: never copied)" : "");
  }
  std::printf("wrote %s: %.1f MB in %.1f s (%.0f MB/s)\n", FLAGS_output.c_str(),
              report->bytes / 1e6, report->seconds, report->bytes / 1e6 / report->seconds);
  return 0;
}

// Progress of an export that counts bytes, on stderr at most once a second (and at the end):
// "  3/126 tensors, 1.2/8.4 MB, 40.0 MB/s, ETA 0 s".
std::function<void(int64_t, int64_t, int64_t, int64_t)> ByteProgress() {
  const auto start = std::chrono::steady_clock::now();
  return [start, last = start](int64_t done, int64_t total, int64_t bytes,
                               int64_t total_bytes) mutable {
    const auto now = std::chrono::steady_clock::now();
    if (done != total && std::chrono::duration<double>(now - last).count() < 1.0) return;
    last = now;
    const double s = std::max(Since(start), 1e-9);
    const double eta = bytes > 0 ? s / bytes * (total_bytes - bytes) : 0;
    std::fprintf(stderr, "\r  %lld/%lld tensors, %.1f/%.1f MB, %.1f MB/s, ETA %.0f s   ",
                 (long long)done, (long long)total, bytes / 1e6, total_bytes / 1e6, bytes / 1e6 / s,
                 eta);
    if (done == total) std::fprintf(stderr, "\n");
  };
}

// --format hf: a Hugging Face checkpoint directory.
int ExportHf(const st::TensorSource& src, const st::HfExportOptions& base) {
  st::HfExportOptions opt = base;
  std::printf("writing a Hugging Face directory: %s weights, shards of at most %s (%lld bytes)\n",
              st::HfTorchDType(opt.dtype), FLAGS_max_shard_size.c_str(),
              (long long)opt.max_shard_bytes);
  opt.progress = ByteProgress();
  auto report = st::ExportHfDirectory(src, FLAGS_output, opt);
  if (!report.ok()) {
    std::fprintf(stderr, "\n");
    return Fail(1, std::string(report.status().message()));
  }
  std::printf("wrote %s: %lld tensors in %d safetensors file%s, %.1f MB in %.1f s (%.0f MB/s)\n",
              FLAGS_output.c_str(), (long long)report->tensors, report->shards,
              report->shards == 1 ? "" : "s", report->bytes / 1e6, report->seconds,
              report->bytes / 1e6 / std::max(report->seconds, 1e-9));
  for (const std::string& f : report->files) std::printf("  %s\n", f.c_str());
  return 0;
}

// Prints the GGUF report's warnings and the result line.
int ReportGguf(const absl::StatusOr<st::GgufExportReport>& report) {
  if (!report.ok()) {
    std::fprintf(stderr, "\n");
    return Fail(1, std::string(report.status().message()));
  }
  for (const std::string& w : report->warnings) st::cli::Warn(w);
  std::printf(
      "wrote %s: %lld tensors, general.file_type %u, tokenizer pre %s, %.1f MB in %.1f s "
      "(%.0f MB/s)\n",
      FLAGS_output.c_str(), (long long)report->tensors, report->file_type, report->pre.c_str(),
      report->bytes / 1e6, report->seconds, report->bytes / 1e6 / std::max(report->seconds, 1e-9));
  return 0;
}

// general.name: the input's last path component without .h5 / .stmf (the config's for
// --random-init).
std::string ModelName() {
  std::string p = FLAGS_random_init ? FLAGS_config : FLAGS_input;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  p = p.substr(p.find_last_of('/') + 1);
  for (const char* ext : {".h5", ".stmf", ".json"}) {
    const size_t n = std::strlen(ext);
    if (p.size() > n && p.compare(p.size() - n, n, ext) == 0) return p.substr(0, p.size() - n);
  }
  return p;
}

// --format gguf: a llama.cpp GGUF file, from a checkpoint (`src`) or a model file (`file`).
int ExportGgufFile(const st::TensorSource* src, const st::ModelFile* file,
                   const st::ExportRecipe& recipe) {
  st::GgufExportOptions opt;
  opt.recipe = recipe;
  opt.force = FLAGS_force;
  opt.name = ModelName();
  if (src != nullptr) {
    std::printf("writing a GGUF file (llama.cpp, arch smallthinker): recipe %s\n",
                recipe.ToString().c_str());
  } else {
    std::printf("writing a GGUF file (llama.cpp, arch smallthinker): tensors as stored\n");
  }
  opt.progress = ByteProgress();
  return ReportGguf(src != nullptr ? st::ExportGguf(*src, FLAGS_output, opt)
                                   : st::ExportGgufFromModelFile(*file, FLAGS_output, opt));
}

// Whether `path` is a regular file that starts with the model file's magic.
bool IsModelFile(const std::string& path) {
  struct stat sb;
  if (stat(path.c_str(), &sb) != 0 || !S_ISREG(sb.st_mode)) return false;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  char magic[4] = {};
  const bool read = std::fread(magic, 1, 4, f) == 4;
  std::fclose(f);
  return read && std::memcmp(magic, st::kModelFileMagic, 4) == 0;
}

// A model file as the source: the same summary as PrintSource.
void PrintModelFile(const std::string& path, const st::ModelFile& m) {
  const st::ModelConfig& cfg = m.config();
  auto recipe = m.GetString(st::kMetaExportRecipe);
  std::printf("source: model file %s (%s)\n  %.1fM parameters, %d layers, %d experts (top-%d)\n",
              path.c_str(), recipe.ok() ? recipe->c_str() : "recipe unknown", cfg.NumParams() / 1e6,
              cfg.num_hidden_layers, cfg.moe_num_primary_experts,
              cfg.moe_num_active_primary_experts);
  const st::TokenizerPolicy& policy = m.tokenizer_policy();
  std::printf(
      "  tokenizer %s; policy: add_bos_token %s, add_eos_token %s; chat template %s; "
      "generation defaults: %s\n",
      m.tokenizer_name().c_str(), policy.add_bos_token ? "true" : "false",
      policy.add_eos_token ? "true" : "false", m.chat_template().empty() ? "none" : "stored",
      m.generation_defaults().ToString().c_str());
}

// Both name the same existing directory (a Hugging Face export onto its own input).
bool SameDirectory(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return stat(a.c_str(), &sa) == 0 && stat(b.c_str(), &sb) == 0 && S_ISDIR(sa.st_mode) &&
         sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

}  // namespace

int main(int argc, char** argv) {
  st::cli::Spec spec;
  spec.name = "st-export";
  spec.usage =
      "st-export --input runs/tiny/checkpoint.h5 --output tiny.stmf --recipe q4_0\n"
      "st-export --input path/to/SmallThinker-4BA0.6B-Instruct --output 4b-q4_0.stmf\n"
      "st-export --input SmallThinker-4BA0.6B-Instruct.Q4_0.gguf --output 4b-q4_0.stmf\n"
      "st-export --input runs/tiny/checkpoint.h5 --format hf --output tiny-hf/\n"
      "st-export --input path/to/SmallThinker-4BA0.6B-Instruct --format gguf --quant q8_0 "
      "--output 4b-q8_0.gguf\n"
      "st-export --input 4b-q4_0.stmf --format gguf --output 4b-q4_0.gguf\n"
      "st-export --random-init --config configs/model/smallthinker-4b-a0.6b.json "
      "--quant q4_0_pure --output 4b-random.stmf";
  spec.about =
      "Exports a Hugging Face SmallThinker checkpoint directory, an st-train checkpoint or random "
      "weights to the smallthinker.cpp model file (--format stmf), a Hugging Face directory "
      "(--format hf) or a llama.cpp GGUF file (--format gguf, which also reads a model file).";
  spec.groups = {{"st-export flags", "infer/tools/st_export_main.cpp", {}}};
  const st::cli::Parsed parsed = st::cli::Parse(spec, argc, argv);
  if (parsed.done()) return parsed.exit_code;
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
    if (const char* flag = FirstGiven({"config", "seed", "tokenizer"})) {
      return Fail(2, std::string("--") + flag + " applies only with --random-init");
    }
    if (FLAGS_input.empty()) {
      return Fail(2, "--input (or --random-init --config) is required");
    }
  }
  if (FLAGS_output.empty()) return Fail(2, "--output is required");
  if (FLAGS_format != "stmf" && FLAGS_format != "hf" && FLAGS_format != "gguf") {
    return Fail(2, "--format " + FLAGS_format +
                       " is not a format; use stmf (the model file), hf (a Hugging Face "
                       "checkpoint directory) or gguf (a llama.cpp GGUF file)");
  }
  const bool hf = FLAGS_format == "hf";
  const bool gguf = FLAGS_format == "gguf";
  const bool from_model_file = !FLAGS_random_init && IsModelFile(FLAGS_input);
  if (from_model_file && !gguf) {
    return Fail(2, "--input " + FLAGS_input +
                       " is a model file; only --format gguf reads one (give the checkpoint it "
                       "was exported from for --format " +
                       FLAGS_format + ")");
  }
  std::string recipe_name = FLAGS_recipe;
  st::HfExportOptions hf_opt;
  if (hf) {
    if (const char* flag = FirstGiven({"recipe", "quant"})) {
      return Fail(2, std::string("--") + flag +
                         " applies only to --format stmf and gguf; a Hugging Face export is "
                         "not quantized (choose its weight type with --hf_dtype bf16|f32)");
    }
    auto dtype = st::ParseHfDType(FLAGS_hf_dtype);
    if (!dtype.ok()) return Fail(2, "--hf_dtype: " + std::string(dtype.status().message()));
    auto shard = st::ParseShardSize(FLAGS_max_shard_size);
    if (!shard.ok()) {
      return Fail(2, "--max_shard_size: " + std::string(shard.status().message()));
    }
    hf_opt.dtype = *dtype;
    hf_opt.max_shard_bytes = *shard;
    hf_opt.force = FLAGS_force;
    if (!FLAGS_input.empty() && SameDirectory(FLAGS_input, FLAGS_output)) {
      return Fail(2, "--output " + FLAGS_output +
                         " is the --input directory; write the export to another directory");
    }
  } else {
    if (const char* flag = FirstGiven({"hf_dtype", "max_shard_size"})) {
      return Fail(2, std::string("--") + flag + " applies only with --format hf");
    }
    const char* quant = from_model_file ? FirstGiven({"recipe", "quant"}) : nullptr;
    if (quant != nullptr) {
      return Fail(2, std::string("--") + quant +
                         " does not apply to a model file input: its tensors are copied with "
                         "the types they are stored with");
    }
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
  }
  absl::StatusOr<st::ExportRecipe> recipe = st::ExportRecipe();
  if (!hf) {
    recipe = st::RecipePreset(recipe_name);
    if (!recipe.ok()) return Fail(2, std::string(recipe.status().message()));
    if (gguf && recipe->keep) {
      return Fail(2,
                  "--recipe keep applies only to --format stmf (a GGUF export takes f32, f16, "
                  "q8_0, q4_0 or q4_0_pure)");
    }
  }
  if (from_model_file) {
    auto file = st::ModelFile::Open(FLAGS_input);
    if (!file.ok()) return Fail(1, std::string(file.status().message()));
    PrintModelFile(FLAGS_input, **file);
    return ExportGgufFile(nullptr, file->get(), *recipe);
  }
  auto src = OpenSource();
  if (!src.ok()) return Fail(1, std::string(src.status().message()));
  PrintSource(**src);
  // A source with a recipe of its own (a GGUF: "keep") gets it unless one was asked for.
  if (!hf && !gguf && !FlagGiven("recipe") && !FlagGiven("quant") &&
      !(*src)->default_recipe().empty()) {
    recipe = st::RecipePreset((*src)->default_recipe());
    if (!recipe.ok()) return Fail(1, std::string(recipe.status().message()));
  }
  if (gguf) return ExportGgufFile(src->get(), nullptr, *recipe);
  return hf ? ExportHf(**src, hf_opt) : ExportStmf(**src, *recipe);
}
