// The one registry of a SmallThinker model's tensors (FORMAT.md, "Tensor names"): one table of
// tensor kinds (file name, Hugging Face name, shape, group, export class) and ForEachTensor, the
// walk over every tensor a config implies. The model-file reader, the exporters, the Hugging
// Face source and the runtime's loader take names and shapes from here; adding a tensor kind
// touches kTensorKinds (tensors.cpp) and nothing else. Torch-free.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "model/config.h"

namespace st {

// Where a tensor lives in the model file: the resident region or an expert's extent.
enum class TensorGroup : uint8_t { kResident = 0, kExpert = 1 };
// The three matrices of one expert, in their order inside its extent.
enum class ExpertPart : uint8_t { kGate = 0, kUp = 1, kDownT = 2 };
const char* ExpertPartName(ExpertPart p);  // "gate", "up", "down_t"

// Every kind of tensor, in the order ForEachTensor visits them within their scope.
enum class TensorKind : uint8_t {
  kTokenEmbd,   // token_embd         model.embed_tokens.weight
  kAttnNorm,    // blk.N.attn_norm    model.layers.N.input_layernorm.weight
  kAttnQ,       // blk.N.attn_q       ...self_attn.q_proj.weight
  kAttnK,       // blk.N.attn_k       ...self_attn.k_proj.weight
  kAttnV,       // blk.N.attn_v       ...self_attn.v_proj.weight
  kAttnOutput,  // blk.N.attn_output  ...self_attn.o_proj.weight
  kFfnNorm,     // blk.N.ffn_norm     ...post_attention_layernorm.weight
  kFfnGateInp,  // blk.N.ffn_gate_inp ...block_sparse_moe.primary_router.weight
  kFfnGate,     // blk.N.ffn_gate.E   ...block_sparse_moe.experts.E.gate.weight
  kFfnUp,       // blk.N.ffn_up.E     ...block_sparse_moe.experts.E.up.weight
  kFfnDownT,    // blk.N.ffn_down_t.E ...block_sparse_moe.experts.E.down.weight (transposed)
  kOutputNorm,  // output_norm        model.norm.weight
  kOutput,      // output             lm_head.weight (only when the embeddings are untied)
};
inline constexpr int kNumTensorKinds = 13;

// Which indices a kind's names carry: none, the layer N, or the layer N and the expert E.
enum class TensorScope : uint8_t { kModel, kLayer, kExpert };

// The export recipe's classes (ExportRecipe has one type per class).
enum class TensorClass : uint8_t { kEmbedding, kAttention, kNorm, kRouter, kExpert, kLmHead };
const char* TensorClassName(TensorClass c);  // "embedding", "attention", "norm", "router", ...

// A size a shape is made of, read from the config.
enum class TensorDim : uint8_t {
  kNone,  // (no second dimension: a vector)
  kV,     // vocab_size
  kH,     // hidden_size
  kQ,     // num_attention_heads * head_dim
  kKV,    // num_key_value_heads * head_dim
  kE,     // moe_num_primary_experts
  kF,     // moe_ffn_hidden_size
};
int64_t TensorDimValue(TensorDim d, const ModelConfig& cfg);
const char* TensorDimName(TensorDim d);  // "V", "H", "nh*D", "nkv*D", "E", "F" (FORMAT.md's)

// One row of the table.
struct TensorKindInfo {
  TensorKind kind;
  TensorScope scope;
  // The kind's part of the file name: the whole name (kModel), "blk.N.<file>" (kLayer) or
  // "blk.N.<file>.E" (kExpert).
  const char* file;
  // The kind's part of the Hugging Face name: the whole name (kModel), "model.layers.N.<hf>"
  // (kLayer) or "model.layers.N.block_sparse_moe.experts.E.<hf>" (kExpert).
  const char* hf;
  TensorDim rows, cols;  // the shape in the model file: [rows, cols], or [rows] when cols = kNone
  bool hf_transposed;    // Hugging Face stores [cols, rows] (expert down: [H, F])
  TensorClass cls;
  bool untied_only;  // present only when tie_word_embeddings is false (the LM head)
};

// The table, indexed by TensorKind.
absl::Span<const TensorKindInfo> TensorKinds();
const TensorKindInfo& KindInfo(TensorKind k);
TensorGroup KindGroup(TensorKind k);      // kExpert for the kExpert scope, else kResident
TensorKind ExpertPartKind(ExpertPart p);  // kFfnGate, kFfnUp, kFfnDownT
bool KindPresent(TensorKind k, const ModelConfig& cfg);  // false only for a tied model's kOutput

// One tensor of a model: a kind and its indices (-1 where the scope has none).
struct TensorId {
  TensorKind kind = TensorKind::kTokenEmbd;
  int layer = -1;
  int expert = -1;

  static TensorId Model(TensorKind k) { return {k, -1, -1}; }
  static TensorId Layer(TensorKind k, int layer) { return {k, layer, -1}; }
  static TensorId Expert(int layer, int expert, ExpertPart p) {
    return {ExpertPartKind(p), layer, expert};
  }

  const TensorKindInfo& info() const { return KindInfo(kind); }
  TensorGroup group() const { return KindGroup(kind); }
  bool is_expert() const { return group() == TensorGroup::kExpert; }
  ExpertPart part() const;       // the expert part; kGate for a resident tensor (the directory's 0)
  std::string FileName() const;  // "blk.3.attn_q", "blk.3.ffn_down_t.7", "token_embd"
  std::string HfName() const;    // "model.layers.3.self_attn.q_proj.weight", ...
  // Shapes, outermost first: as stored in the model file, and as Hugging Face stores it
  // (differs only for the expert down matrix: [F, H] in the file, [H, F] in Hugging Face).
  std::vector<int64_t> Shape(const ModelConfig& cfg) const;
  std::vector<int64_t> HfShape(const ModelConfig& cfg) const;
  TensorClass cls() const { return info().cls; }

  bool operator==(const TensorId& o) const {
    return kind == o.kind && layer == o.layer && expert == o.expert;
  }
  bool operator!=(const TensorId& o) const { return !(*this == o); }
};

// Visits every tensor `cfg` implies, in the canonical order: token_embd; then for each layer
// attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate_inp, and experts
// 0..E-1 each gate, up, down_t; then output_norm and (untied only) output. `visit` returns false
// to stop the walk, and ForEachTensor then returns false (true when every tensor was visited).
// The walk builds nothing up front: a config from an untrusted file with a forged huge layer or
// expert count costs only what the visitor lets it. cfg's sizes must be validated
// (ValidateModelConfig) before shapes are taken.
bool ForEachTensor(const ModelConfig& cfg, absl::FunctionRef<bool(const TensorId&)> visit);
// How many tensors ForEachTensor visits: 2 + (untied) + L * (7 + 3 * E), without walking.
int64_t CountTensors(const ModelConfig& cfg);

// Name parsing, the inverse of FileName / HfName. Indices are decimal without sign or leading
// zeros, below 2^31. nullopt for any name the table does not produce.
std::optional<TensorId> ParseFileTensorName(absl::string_view file_name);
std::optional<TensorId> ParseHfTensorName(absl::string_view hf_name);

// Names with N and E left as letters, as FORMAT.md's table writes them: "blk.N.ffn_up.E",
// "model.layers.N.block_sparse_moe.experts.E.up.weight"; and shapes as "[nh*D, H]".
std::string FileNamePattern(TensorKind k);
std::string HfNamePattern(TensorKind k);
std::string ShapePattern(TensorKind k);
std::string HfShapePattern(TensorKind k);

// Conveniences over the parse functions (FORMAT.md, "Tensor names").
std::string ExpertTensorName(int layer, int expert, ExpertPart part);  // "blk.3.ffn_up.7"
// Hugging Face name -> file name: "model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q".
// Expert down ("...experts.E.down.weight", [H,F]) maps to "blk.N.ffn_down_t.E" (stored
// transposed, [F,H]). Returns "" for a name that has no file counterpart.
std::string HfToFileName(absl::string_view hf_name);
// The reverse; "" for an unknown name.
std::string FileToHfName(absl::string_view file_name);

}  // namespace st
