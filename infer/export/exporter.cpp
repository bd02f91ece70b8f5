// ExportModel: source checkpoint -> quantized model file (see exporter.h).
#include "infer/export/exporter.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "infer/export/parallel.h"
#include "infer/format/model_file.h"
#include "infer/format/tensors.h"
#include "infer/quant/codec.h"
#include "infer/tokenizer/tokenizer.h"
#include "model/check.h"

namespace st {
namespace {

// The type the recipe gives a tensor class (the registry says each tensor's class).
DType TypeOf(const ExportRecipe& r, TensorClass cls) {
  switch (cls) {
    case TensorClass::kEmbedding:
      return r.embedding;
    case TensorClass::kLmHead:
      return r.lm_head;
    case TensorClass::kNorm:
      return r.norms;
    case TensorClass::kRouter:
      return r.router;
    case TensorClass::kExpert:
      return r.experts;
    case TensorClass::kAttention:
      return r.attention;
  }
  return r.attention;
}

// A quantized tensor ready for the writer.
struct Encoded {
  DType dtype;
  std::vector<int64_t> dims;
  std::vector<uint8_t> bytes;
};

// Adds the error of y = dequant(quant(x)) over x[0, n) to `err` (exact differences in double;
// eight independent lanes so that the compiler vectorises the reduction).
void AccumulateError(const float* x, const float* y, int64_t n, ClassError* err) {
  constexpr int kLanes = 8;
  double max_abs[kLanes] = {}, sq_err[kLanes] = {}, sq_val[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const double v = x[i + j], d = v - y[i + j];
      max_abs[j] = std::max(max_abs[j], std::abs(d));
      sq_err[j] += d * d;
      sq_val[j] += v * v;
    }
  }
  for (; i < n; ++i) {
    const double v = x[i], d = v - y[i];
    max_abs[0] = std::max(max_abs[0], std::abs(d));
    sq_err[0] += d * d;
    sq_val[0] += v * v;
  }
  for (int j = 0; j < kLanes; ++j) {
    err->max_abs_error = std::max(err->max_abs_error, max_abs[j]);
    err->sum_sq_error += sq_err[j];
    err->sum_sq_value += sq_val[j];
  }
}

// Quantizes `x` (dims row-major) with `want`, falling back to F16 when the rows are not a
// multiple of the block; accumulates the error into `err`. Rows are split over the cores.
Encoded Encode(const std::vector<float>& x, const std::vector<int64_t>& dims, DType want,
               ClassError* err) {
  const int64_t cols = dims.back();
  DType t = want;
  if (cols % DTypeBlockElems(t) != 0) {
    t = DType::kF16;
    ++err->fallbacks;
  }
  const int64_t n = static_cast<int64_t>(x.size());
  const int64_t rows = n / cols;
  const int64_t row_bytes = DTypeBytes(t, cols);
  ST_CHECK(row_bytes > 0 && rows * cols == n) << "bad tensor shape";
  Encoded e{t, dims, std::vector<uint8_t>(static_cast<size_t>(rows * row_bytes))};
  const int ranges = ParallelRanges(rows, std::max<int64_t>(1, (int64_t{1} << 16) / cols));
  std::vector<ClassError> part(static_cast<size_t>(ranges));
  ParallelFor(rows, ranges, [&](int range, int64_t begin, int64_t end) {
    std::vector<float> back(static_cast<size_t>(cols));
    for (int64_t r = begin; r < end; ++r) {
      const float* src = x.data() + r * cols;
      uint8_t* dst = e.bytes.data() + r * row_bytes;
      QuantizeRow(t, src, cols, dst);
      DequantizeRow(t, dst, cols, back.data());
      AccumulateError(src, back.data(), cols, &part[static_cast<size_t>(range)]);
    }
  });
  for (const ClassError& p : part) {  // in range order: the sums do not depend on timing
    err->max_abs_error = std::max(err->max_abs_error, p.max_abs_error);
    err->sum_sq_error += p.sum_sq_error;
    err->sum_sq_value += p.sum_sq_value;
  }
  err->dtype = want;
  err->tensors += 1;
  err->elements += n;
  return e;
}

// Row-major [rows, cols] -> [cols, rows], in 32 x 32 tiles (cache-friendly on both sides).
std::vector<float> Transpose(const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<float> t(x.size());
  constexpr int64_t kTile = 32;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    const int64_t r1 = std::min(rows, r0 + kTile);
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t c1 = std::min(cols, c0 + kTile);
      // Writes run along t's rows: the other loop order is 13x slower (2.6 ns an element on a
      // [1536, 768] matrix), its stores 6 KB apart.
      for (int64_t c = c0; c < c1; ++c) {
        for (int64_t r = r0; r < r1; ++r) t[c * rows + r] = x[r * cols + c];
      }
    }
  }
  return t;
}

}  // namespace

double ClassError::relative_rms() const {
  return sum_sq_value > 0 ? std::sqrt(sum_sq_error / sum_sq_value) : 0.0;
}

std::string ExportRecipe::ToString() const {
  return absl::StrCat(name, ": embedding=", DTypeName(embedding),
                      " attention=", DTypeName(attention), " router=", DTypeName(router),
                      " norms=", DTypeName(norms), " experts=", DTypeName(experts),
                      " lm_head=", DTypeName(lm_head));
}

absl::StatusOr<ExportRecipe> RecipePreset(const std::string& name) {
  ExportRecipe r;
  r.name = name;
  r.router = r.norms = DType::kF32;
  DType matrices;
  if (name == "f32") {
    matrices = DType::kF32;
  } else if (name == "f16") {
    matrices = DType::kF16;
  } else if (name == "q8_0" || name == "q4_0") {
    matrices = DType::kQ8_0;
  } else if (name == "q4_0_pure") {
    matrices = DType::kQ4_0;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown recipe '", name, "'; known: f32, f16, q8_0, q4_0, q4_0_pure"));
  }
  r.embedding = r.attention = r.experts = r.lm_head = matrices;
  if (name == "q4_0") r.experts = DType::kQ4_0;
  return r;
}

absl::StatusOr<ExportReport> ExportModel(const TensorSource& src, const std::string& out_path,
                                         const ExportOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  ST_RETURN_IF_ERROR(CheckTensorsMatchConfig(src));
  const ModelConfig& cfg = src.config();
  const ExportRecipe& recipe = options.recipe;
  ST_ASSIGN_OR_RETURN(std::unique_ptr<ModelFileWriter> w, ModelFileWriter::Create(out_path));
  w->SetConfig(cfg);
  w->SetString(kMetaTokenizerName, src.tokenizer_name());
  w->SetBytes(kMetaTokenizerJson, src.tokenizer_json());
  w->SetString(kMetaChatTemplate, src.chat_template());
  const TokenizerPolicy policy = src.tokenizer_policy();
  const GenerationDefaults gen = src.generation_defaults();
  w->SetTokenizerPolicy(policy);
  w->SetGenerationDefaults(gen);
  // The BOS the policy names (tokenizer_config.json's bos_token), else the config's; it is put
  // in front of a prompt only where tokenizer.add_bos_token says so.
  w->SetI64(kMetaBosTokenId, policy.bos_token_id >= 0 ? policy.bos_token_id : cfg.bos_token_id);
  // Ids that end a reply: the config's and generation_config.json's (Hugging Face checkpoints
  // name them) and tokenizer_config.json's eos_token; else the tokenizer's end-of-text token
  // (our configs leave them to the tokenizer).
  std::vector<int64_t> eos;
  auto add_eos = [&eos](int64_t id) {
    if (id >= 0 && std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
  };
  for (int id : cfg.eos_token_id) add_eos(id);
  for (int id : gen.eos_token_id) add_eos(id);
  add_eos(policy.eos_token_id);
  if (eos.empty()) {
    ST_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok,
                        MakeTokenizer(src.tokenizer_name(), src.tokenizer_json()));
    add_eos(tok->eos_id());
  }
  w->SetI64Array(kMetaEosTokenIds, eos);
  w->SetString(kMetaExportSource, src.description());
  w->SetString(kMetaExportRecipe, recipe.ToString());

  ExportReport report;
  const int64_t total = CountTensors(cfg);
  int64_t done = 0;
  auto tick = [&](int64_t elements) {
    ++done;
    report.source_elements += elements;
    if (options.progress) options.progress(done, total, report.source_elements);
  };
  // One tensor of the registry: read by its Hugging Face name, turned into the file's layout
  // (expert down: [H, F] -> [F, H]), quantized with its class's type, written by its file name.
  auto export_tensor = [&](const TensorId& id) -> absl::Status {
    ST_ASSIGN_OR_RETURN(std::vector<float> x, src.ReadF32(id.HfName()));
    const int64_t elements = static_cast<int64_t>(x.size());
    const std::vector<int64_t> hf_shape = id.HfShape(cfg);
    if (id.info().hf_transposed) x = Transpose(x, hf_shape[0], hf_shape[1]);
    const TensorClass cls = id.cls();
    Encoded e =
        Encode(x, id.Shape(cfg), TypeOf(recipe, cls), &report.classes[TensorClassName(cls)]);
    if (!id.is_expert()) {
      ST_RETURN_IF_ERROR(
          w->AddTensor(id.FileName(), e.dtype, e.dims, e.bytes.data(), e.bytes.size()));
    } else {
      if (id.part() == ExpertPart::kGate) ST_RETURN_IF_ERROR(w->BeginExpert(id.layer, id.expert));
      ST_RETURN_IF_ERROR(
          w->AddExpertPart(id.part(), e.dtype, e.dims, e.bytes.data(), e.bytes.size()));
      if (id.part() == ExpertPart::kDownT) ST_RETURN_IF_ERROR(w->EndExpert());
    }
    tick(elements);
    return absl::OkStatus();
  };
  // Two walks: the resident tensors first (the file groups them apart from the experts), then
  // the experts, one contiguous extent each. One matrix in memory at a time.
  absl::Status status;
  for (const TensorGroup group : {TensorGroup::kResident, TensorGroup::kExpert}) {
    ForEachTensor(cfg, [&](const TensorId& id) {
      if (id.group() == group) status = export_tensor(id);
      return status.ok();
    });
    ST_RETURN_IF_ERROR(status);
  }
  ST_RETURN_IF_ERROR(w->Finish());
  report.bytes = w->bytes_written();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace st
