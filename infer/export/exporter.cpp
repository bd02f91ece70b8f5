// ExportModel: source checkpoint -> quantized model file (see exporter.h).
#include "infer/export/exporter.h"

#include <chrono>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "infer/format/model_file.h"
#include "infer/quant/codec.h"
#include "infer/tokenizer/tokenizer.h"
#include "model/check.h"

namespace st {
namespace {

std::string HfPrefix(int layer) { return absl::StrCat("model.layers.", layer, "."); }

// The class of a Hugging Face tensor name, and the type the recipe gives it.
std::string ClassOf(const std::string& hf) {
  if (hf == "model.embed_tokens.weight") return "embedding";
  if (hf == "lm_head.weight") return "lm_head";
  if (hf.find("norm") != std::string::npos) return "norm";
  if (hf.find("primary_router") != std::string::npos) return "router";
  if (hf.find(".experts.") != std::string::npos) return "expert";
  return "attention";
}

DType TypeOf(const ExportRecipe& r, const std::string& cls) {
  if (cls == "embedding") return r.embedding;
  if (cls == "lm_head") return r.lm_head;
  if (cls == "norm") return r.norms;
  if (cls == "router") return r.router;
  if (cls == "expert") return r.experts;
  return r.attention;
}

// A quantized tensor ready for the writer.
struct Encoded {
  DType dtype;
  std::vector<int64_t> dims;
  std::vector<uint8_t> bytes;
};

// Quantizes `x` (dims row-major) with `want`, falling back to F16 when the rows are not a
// multiple of the block; accumulates the error into `err`.
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
  std::vector<float> back(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = x.data() + r * cols;
    uint8_t* dst = e.bytes.data() + r * row_bytes;
    QuantizeRow(t, src, cols, dst);
    DequantizeRow(t, dst, cols, back.data());
    for (int64_t c = 0; c < cols; ++c) {
      const double d = static_cast<double>(src[c]) - back[c];
      err->max_abs_error = std::max(err->max_abs_error, std::abs(d));
      err->sum_sq_error += d * d;
      err->sum_sq_value += static_cast<double>(src[c]) * src[c];
    }
  }
  err->dtype = want;
  err->tensors += 1;
  err->elements += n;
  return e;
}

std::vector<float> Transpose(const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<float> t(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = x[r * cols + c];
  }
  return t;
}

}  // namespace

double ClassError::relative_rms() const {
  return sum_sq_value > 0 ? std::sqrt(sum_sq_error / sum_sq_value) : 0.0;
}

std::string ExportRecipe::ToString() const {
  return absl::StrCat(name, ": embedding=", DTypeName(embedding), " attention=",
                      DTypeName(attention), " router=", DTypeName(router), " norms=",
                      DTypeName(norms), " experts=", DTypeName(experts), " lm_head=",
                      DTypeName(lm_head));
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
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown recipe '", name, "'; known: f32, f16, q8_0, q4_0"));
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
  w->SetI64(kMetaBosTokenId, cfg.bos_token_id);
  // End-of-sequence ids: the config's (Hugging Face checkpoints name them), else the
  // tokenizer's end-of-text token (our configs leave them to the tokenizer).
  std::vector<int64_t> eos(cfg.eos_token_id.begin(), cfg.eos_token_id.end());
  if (eos.empty()) {
    ST_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok,
                        MakeTokenizer(src.tokenizer_name(), src.tokenizer_json()));
    if (tok->eos_id() >= 0) eos.push_back(tok->eos_id());
  }
  w->SetI64Array(kMetaEosTokenIds, eos);
  w->SetString(kMetaExportSource, src.description());
  w->SetString(kMetaExportRecipe, recipe.ToString());

  ExportReport report;
  std::vector<SourceTensor> expected = ExpectedTensors(cfg);
  const int64_t total = static_cast<int64_t>(expected.size());
  int64_t done = 0;
  auto tick = [&](int64_t elements) {
    ++done;
    report.source_elements += elements;
    if (options.progress) options.progress(done, total, report.source_elements);
  };

  // Resident tensors first (the file groups them apart from the experts).
  for (const SourceTensor& t : expected) {
    if (t.name.find(".experts.") != std::string::npos) continue;
    const std::string file_name = HfToFileName(t.name);
    if (file_name.empty()) {
      return absl::InternalError(absl::StrCat("no file name for tensor ", t.name));
    }
    ST_ASSIGN_OR_RETURN(std::vector<float> x, src.ReadF32(t.name));
    const std::string cls = ClassOf(t.name);
    Encoded e = Encode(x, t.shape, TypeOf(recipe, cls), &report.classes[cls]);
    ST_RETURN_IF_ERROR(w->AddTensor(file_name, e.dtype, e.dims, e.bytes.data(), e.bytes.size()));
    tick(static_cast<int64_t>(x.size()));
  }
  // Experts: one contiguous extent each, down stored transposed [F, H].
  const int64_t H = cfg.hidden_size, F = cfg.moe_ffn_hidden_size;
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    for (int e = 0; e < cfg.moe_num_primary_experts; ++e) {
      const std::string p = absl::StrCat(HfPrefix(l), "block_sparse_moe.experts.", e, ".");
      ST_ASSIGN_OR_RETURN(std::vector<float> gate, src.ReadF32(p + "gate.weight"));
      ST_ASSIGN_OR_RETURN(std::vector<float> up, src.ReadF32(p + "up.weight"));
      ST_ASSIGN_OR_RETURN(std::vector<float> down, src.ReadF32(p + "down.weight"));
      ClassError& err = report.classes["expert"];
      Encoded g = Encode(gate, {F, H}, recipe.experts, &err);
      Encoded u = Encode(up, {F, H}, recipe.experts, &err);
      Encoded d = Encode(Transpose(down, H, F), {F, H}, recipe.experts, &err);
      ST_RETURN_IF_ERROR(w->AddExpert(l, e, {g.dtype, g.dims, g.bytes.data(), g.bytes.size()},
                                      {u.dtype, u.dims, u.bytes.data(), u.bytes.size()},
                                      {d.dtype, d.dims, d.bytes.data(), d.bytes.size()}));
      for (int k = 0; k < 3; ++k) tick(H * F);
    }
  }
  ST_RETURN_IF_ERROR(w->Finish());
  report.bytes = w->bytes_written();
  report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace st
