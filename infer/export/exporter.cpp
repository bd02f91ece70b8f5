// ExportModel: source checkpoint -> quantized model file (see exporter.h).
#include "infer/export/exporter.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "infer/export/parallel.h"
#include "infer/format/model_file.h"
#include "infer/format/tensors.h"
#include "infer/quant/codec.h"
#include "infer/quant/ggml_blocks.h"
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

int64_t NumElements(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;  // the registry's shapes of a validated config
  return n;
}

// Adds `from`'s counts and error sums to `into` (dtype and flags are the caller's).
void Merge(const ClassError& from, ClassError* into) {
  into->tensors += from.tensors;
  into->elements += from.elements;
  into->fallbacks += from.fallbacks;
  into->copied += from.copied;
  into->max_abs_error = std::max(into->max_abs_error, from.max_abs_error);
  into->sum_sq_error += from.sum_sq_error;
  into->sum_sq_value += from.sum_sq_value;
}

// Records that a tensor of type `t` joined class `err` ("keep": the types may differ).
void NoteType(DType t, ClassError* err) {
  if (err->tensors == 0) {
    err->dtype = t;
  } else if (err->dtype != t) {
    err->mixed = true;
  }
}

// "keep": the one type of every expert matrix: what most of them get, the wider on a tie.
absl::StatusOr<DType> KeepExpertType(const TensorSource& src) {
  const ModelConfig& cfg = src.config();
  std::map<DType, int64_t> votes;
  absl::Status status;
  ForEachTensor(cfg, [&](const TensorId& id) {
    if (!id.is_expert()) return true;
    absl::StatusOr<DType> t = KeepType(src.Find(id.HfName())->dtype);
    if (!t.ok()) {
      status = absl::InvalidArgumentError(
          absl::StrCat("tensor ", id.HfName(), ": ", t.status().message()));
      return false;
    }
    ++votes[*t];
    return true;
  });
  ST_RETURN_IF_ERROR(status);
  ST_CHECK(!votes.empty()) << "a validated config has experts";
  DType best = votes.begin()->first;
  for (const auto& [t, n] : votes) {
    const int64_t have = votes[best];
    if (n > have || (n == have && DTypeBytes(t, kQBlock) > DTypeBytes(best, kQBlock))) best = t;
  }
  return best;
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
  if (keep) {
    return absl::StrCat(name,
                        ": every tensor in its stored type, or the nearest the model file "
                        "holds; experts one type");
  }
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
  if (name == "keep") {
    r.keep = true;
    return r;
  }
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
        absl::StrCat("unknown recipe '", name, "'; known: f32, f16, q8_0, q4_0, q4_0_pure, keep"));
  }
  r.embedding = r.attention = r.experts = r.lm_head = matrices;
  if (name == "q4_0") r.experts = DType::kQ4_0;
  return r;
}

absl::StatusOr<DType> KeepType(const std::string& source_dtype) {
  const std::string t = absl::AsciiStrToLower(source_dtype);
  if (t == "f32") return DType::kF32;
  if (t == "f16") return DType::kF16;
  if (t == "bf16") return DType::kBF16;
  if (t == "q8_0") return DType::kQ8_0;
  if (t == "q4_0") return DType::kQ4_0;
  if (const GgmlTypeInfo* g = FindGgmlTypeByName(t)) {
    const double bits_per_weight = 8.0 * g->block_bytes / g->block_elems;
    return bits_per_weight <= 4.5 ? DType::kQ4_0 : DType::kQ8_0;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "stored type '", source_dtype,
      "' has no model-file counterpart; known: F32, F16, BF16 and ggml's q4_0 .. q8_K"));
}

absl::StatusOr<ExportReport> ExportModel(const TensorSource& src, const std::string& out_path,
                                         const ExportOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  ST_RETURN_IF_ERROR(CheckTensorsMatchConfig(src));
  const ModelConfig& cfg = src.config();
  const ExportRecipe& recipe = options.recipe;
  DType keep_experts = DType::kF32;
  if (recipe.keep) {
    ST_ASSIGN_OR_RETURN(keep_experts, KeepExpertType(src));
    absl::Status status;  // every resident tensor's type, before anything is written
    ForEachTensor(cfg, [&](const TensorId& id) {
      if (id.is_expert()) return true;
      absl::StatusOr<DType> t = KeepType(src.Find(id.HfName())->dtype);
      if (!t.ok()) {
        status = absl::InvalidArgumentError(
            absl::StrCat("tensor ", id.HfName(), ": ", t.status().message()));
      }
      return t.ok();
    });
    ST_RETURN_IF_ERROR(status);
  }
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
  // The tensor in the recipe's type: copied as stored ("keep", when the source stores it so),
  // else read as floats, turned into the file's layout (expert down: [H, F] -> [F, H]) and
  // quantized.
  auto encode_tensor = [&](const TensorId& id) -> absl::StatusOr<Encoded> {
    const std::string hf_name = id.HfName();
    ClassError& err = report.classes[TensorClassName(id.cls())];
    if (!recipe.keep) {
      ST_ASSIGN_OR_RETURN(std::vector<float> x, src.ReadF32(hf_name));
      const std::vector<int64_t> hf_shape = id.HfShape(cfg);
      if (id.info().hf_transposed) x = Transpose(x, hf_shape[0], hf_shape[1]);
      return Encode(x, id.Shape(cfg), TypeOf(recipe, id.cls()), &err);
    }
    const std::string& stored_type = src.Find(hf_name)->dtype;
    ST_ASSIGN_OR_RETURN(const DType nearest, KeepType(stored_type));  // checked above
    const DType want = id.is_expert() ? keep_experts : nearest;
    if (nearest == want && !id.info().hf_transposed) {
      ST_ASSIGN_OR_RETURN(std::optional<StoredTensor> stored, src.ReadStored(hf_name));
      if (stored && stored->dtype == want) {
        Encoded e{want, id.Shape(cfg), std::move(stored->bytes)};
        NoteType(want, &err);
        ++err.tensors;
        ++err.copied;
        err.elements += NumElements(e.dims);
        return e;
      }
    }
    ST_ASSIGN_OR_RETURN(std::vector<float> x, src.ReadF32(hf_name));
    const std::vector<int64_t> hf_shape = id.HfShape(cfg);
    if (id.info().hf_transposed) x = Transpose(x, hf_shape[0], hf_shape[1]);
    ClassError added;
    Encoded e = Encode(x, id.Shape(cfg), want, &added);
    NoteType(e.dtype, &err);
    Merge(added, &err);
    ClassError& req = report.requantised[{
        id.info().hf_transposed ? "expert down" : TensorClassName(id.cls()), stored_type}];
    NoteType(e.dtype, &req);
    Merge(added, &req);
    return e;
  };
  // One tensor of the registry: encoded, then written by its file name.
  auto export_tensor = [&](const TensorId& id) -> absl::Status {
    ST_ASSIGN_OR_RETURN(Encoded e, encode_tensor(id));
    const int64_t elements = NumElements(e.dims);
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
