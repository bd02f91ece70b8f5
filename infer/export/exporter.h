// The exporter: streams a checkpoint (Hugging Face SmallThinker, our HDF5 or a GGUF) tensor by
// tensor into the model file, quantizing each tensor class with the type the recipe chooses (or
// keeping the stored types) and measuring the quantization error of each class. Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "infer/export/tensor_source.h"
#include "infer/quant/types.h"

namespace st {

// Which type each tensor class gets. Matrices whose rows are not a multiple of the block
// size (32) fall back to F16 for the block types, and the report says so.
struct ExportRecipe {
  std::string name;                // the preset it came from
  DType embedding = DType::kQ8_0;  // model.embed_tokens
  DType attention = DType::kQ8_0;  // q/k/v/o projections
  DType router = DType::kF32;      // primary_router
  DType norms = DType::kF32;       // RMSNorm weights
  DType experts = DType::kQ4_0;    // gate / up / down
  DType lm_head = DType::kQ8_0;    // untied LM head
  // "keep": the per-class types above are unused; every tensor gets KeepType(its stored type),
  // the expert matrices one type for all (the runtime needs it: the type most of them get,
  // the wider on a tie). A tensor already stored in that type with the model file's layout
  // (TensorSource::ReadStored) is copied block for block; any other is dequantised (expert
  // down also transposed: the file stores it [F, H]) and quantised to it.
  bool keep = false;
  std::string ToString() const;  // "q4_0: embedding=q8_0 attention=q8_0 ..."
};

// Presets: "f32" (everything F32), "f16" (matrices F16), "q8_0" (matrices Q8_0), "q4_0"
// (experts Q4_0, other matrices Q8_0), "q4_0_pure" (every matrix Q4_0: embedding, attention,
// experts, LM head; what llama.cpp benchmarks with --pure). Router and norms stay F32 in every
// preset but "keep" (ExportRecipe::keep: the source's types, st-export's default for a GGUF).
absl::StatusOr<ExportRecipe> RecipePreset(const std::string& name);

// The model-file type the "keep" recipe gives a tensor stored as `source_dtype` (a
// SourceTensor::dtype): F32, F16, BF16, Q8_0 and Q4_0 stay (safetensors' or ggml's names, any
// case); the other ggml types go to the nearest type the runtime has: Q4_0 for those of at most
// 4.5 bits per weight (q2_K, q3_K, q4_K), Q8_0 for the wider ones (q4_1, q5_0, q5_1, q5_K, q6_K,
// q8_K). InvalidArgument names an unknown type.
absl::StatusOr<DType> KeepType(const std::string& source_dtype);

// Quantization error of one tensor class, over all its elements.
// Error sums cover the tensors quantised here; tensors copied block for block ("keep") add
// none and are counted in `copied` only.
struct ClassError {
  DType dtype = DType::kF32;
  bool mixed = false;  // "keep": the class's tensors have more than one type (dtype: the first)
  int64_t tensors = 0;
  int64_t elements = 0;
  int64_t fallbacks = 0;     // tensors stored as F16 because rows were not block multiples
  int64_t copied = 0;        // "keep": tensors copied from the source as stored
  double max_abs_error = 0;  // max |x - dequant(quant(x))|
  double sum_sq_error = 0, sum_sq_value = 0;
  double relative_rms() const;  // sqrt(sum_sq_error / sum_sq_value)
};

struct ExportReport {
  std::map<std::string, ClassError> classes;  // "embedding", "attention", "router", ...
  // "keep": the tensors that could not be copied, by (what, source type): what is the class
  // name, or "expert down" for the expert down matrices (transposed, so never copied); the
  // ClassError's dtype is the type they were quantised to, its error the error this added
  // (relative to the source's dequantised values).
  std::map<std::pair<std::string, std::string>, ClassError> requantised;
  uint64_t bytes = 0;  // size of the written file
  double seconds = 0;
  int64_t source_elements = 0;
};

struct ExportOptions {
  ExportRecipe recipe;
  // Called after each tensor: (tensors done, tensors total, source elements done).
  std::function<void(int64_t done, int64_t total, int64_t elements)> progress;
};

// Checks the source against its config (CheckTensorsMatchConfig) and, for "keep", every
// tensor's type (KeepType), then writes `out_path` atomically (temp name + rename; an existing file
// is replaced only on success). Expert down matrices are stored transposed ([F, H]). Tensors, their
// file names, shapes and classes come from the registry (infer/format/tensors.h). Holds one source
// matrix in memory at a time.
absl::StatusOr<ExportReport> ExportModel(const TensorSource& src, const std::string& out_path,
                                         const ExportOptions& options);

}  // namespace st
