// The exporter: streams a checkpoint (Hugging Face SmallThinker or our HDF5) tensor by tensor
// into the model file, quantizing each tensor class with the type the recipe chooses and
// measuring the quantization error of each class. Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

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
  std::string ToString() const;    // "q4_0: embedding=q8_0 attention=q8_0 ..."
};

// Presets: "f32" (everything F32), "f16" (matrices F16), "q8_0" (matrices Q8_0), "q4_0"
// (experts Q4_0, other matrices Q8_0), "q4_0_pure" (every matrix Q4_0: embedding, attention,
// experts, LM head; what llama.cpp benchmarks with --pure). Router and norms stay F32 in every
// preset.
absl::StatusOr<ExportRecipe> RecipePreset(const std::string& name);

// Quantization error of one tensor class, over all its elements.
struct ClassError {
  DType dtype = DType::kF32;
  int64_t tensors = 0;
  int64_t elements = 0;
  int64_t fallbacks = 0;     // tensors stored as F16 because rows were not block multiples
  double max_abs_error = 0;  // max |x - dequant(quant(x))|
  double sum_sq_error = 0, sum_sq_value = 0;
  double relative_rms() const;  // sqrt(sum_sq_error / sum_sq_value)
};

struct ExportReport {
  std::map<std::string, ClassError> classes;  // "embedding", "attention", "router", ...
  uint64_t bytes = 0;                         // size of the written file
  double seconds = 0;
  int64_t source_elements = 0;
};

struct ExportOptions {
  ExportRecipe recipe;
  // Called after each tensor: (tensors done, tensors total, source elements done).
  std::function<void(int64_t done, int64_t total, int64_t elements)> progress;
};

// Checks the source against its config (CheckTensorsMatchConfig), then writes `out_path`
// atomically (temp name + rename; an existing file is replaced only on success). Expert down
// matrices are stored transposed ([F, H]). Tensors, their file names, shapes and classes come
// from the registry (infer/format/tensors.h). Holds one source matrix in memory at a time.
absl::StatusOr<ExportReport> ExportModel(const TensorSource& src, const std::string& out_path,
                                         const ExportOptions& options);

}  // namespace st
