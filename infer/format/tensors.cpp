// The tensor registry: the table of tensor kinds, the walk over a config and name parsing.
#include "infer/format/tensors.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "model/check.h"

namespace st {
namespace {

using D = TensorDim;
using K = TensorKind;
using S = TensorScope;
using C = TensorClass;

// THE table (FORMAT.md, "Tensor names"), in TensorKind order.
constexpr TensorKindInfo kTensorKinds[kNumTensorKinds] = {
    {K::kTokenEmbd, S::kModel, "token_embd", "model.embed_tokens.weight", D::kV, D::kH, false,
     C::kEmbedding, false},
    {K::kAttnNorm, S::kLayer, "attn_norm", "input_layernorm.weight", D::kH, D::kNone, false,
     C::kNorm, false},
    {K::kAttnQ, S::kLayer, "attn_q", "self_attn.q_proj.weight", D::kQ, D::kH, false, C::kAttention,
     false},
    {K::kAttnK, S::kLayer, "attn_k", "self_attn.k_proj.weight", D::kKV, D::kH, false, C::kAttention,
     false},
    {K::kAttnV, S::kLayer, "attn_v", "self_attn.v_proj.weight", D::kKV, D::kH, false, C::kAttention,
     false},
    {K::kAttnOutput, S::kLayer, "attn_output", "self_attn.o_proj.weight", D::kH, D::kQ, false,
     C::kAttention, false},
    {K::kFfnNorm, S::kLayer, "ffn_norm", "post_attention_layernorm.weight", D::kH, D::kNone, false,
     C::kNorm, false},
    {K::kFfnGateInp, S::kLayer, "ffn_gate_inp", "block_sparse_moe.primary_router.weight", D::kE,
     D::kH, false, C::kRouter, false},
    {K::kFfnGate, S::kExpert, "ffn_gate", "gate.weight", D::kF, D::kH, false, C::kExpert, false},
    {K::kFfnUp, S::kExpert, "ffn_up", "up.weight", D::kF, D::kH, false, C::kExpert, false},
    {K::kFfnDownT, S::kExpert, "ffn_down_t", "down.weight", D::kF, D::kH, true, C::kExpert, false},
    {K::kOutputNorm, S::kModel, "output_norm", "model.norm.weight", D::kH, D::kNone, false,
     C::kNorm, false},
    {K::kOutput, S::kModel, "output", "lm_head.weight", D::kV, D::kH, false, C::kLmHead, true},
};

constexpr bool TableInKindOrder() {
  for (int i = 0; i < kNumTensorKinds; ++i) {
    if (static_cast<int>(kTensorKinds[i].kind) != i) return false;
  }
  return true;
}
static_assert(TableInKindOrder(), "kTensorKinds must be indexed by TensorKind");

constexpr absl::string_view kBlk = "blk.";
constexpr absl::string_view kLayers = "model.layers.";
constexpr absl::string_view kExperts = "block_sparse_moe.experts.";

// Parses a non-negative decimal without sign or leading zeros, < 2^31.
bool ParseIndex(absl::string_view s, int* out) {
  if (s.empty() || s.size() > 10 || (s.size() > 1 && s[0] == '0')) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v > 0x7fffffff) return false;
  *out = static_cast<int>(v);
  return true;
}

// Splits "<index>.<rest>" off the front of `s`.
bool ConsumeIndex(absl::string_view* s, int* index) {
  const size_t dot = s->find('.');
  if (dot == absl::string_view::npos || !ParseIndex(s->substr(0, dot), index)) return false;
  s->remove_prefix(dot + 1);
  return true;
}

std::vector<int64_t> DimsOf(D a, D b, const ModelConfig& cfg) {
  if (b == D::kNone) return {TensorDimValue(a, cfg)};
  return {TensorDimValue(a, cfg), TensorDimValue(b, cfg)};
}

std::string DimsText(D a, D b) {
  if (b == D::kNone) return absl::StrCat("[", TensorDimName(a), "]");
  return absl::StrCat("[", TensorDimName(a), ", ", TensorDimName(b), "]");
}

}  // namespace

const char* ExpertPartName(ExpertPart p) {
  switch (p) {
    case ExpertPart::kGate:
      return "gate";
    case ExpertPart::kUp:
      return "up";
    case ExpertPart::kDownT:
      return "down_t";
  }
  return "unknown";
}

const char* TensorClassName(TensorClass c) {
  switch (c) {
    case C::kEmbedding:
      return "embedding";
    case C::kAttention:
      return "attention";
    case C::kNorm:
      return "norm";
    case C::kRouter:
      return "router";
    case C::kExpert:
      return "expert";
    case C::kLmHead:
      return "lm_head";
  }
  return "unknown";
}

int64_t TensorDimValue(TensorDim d, const ModelConfig& cfg) {
  switch (d) {
    case D::kNone:
      return 1;
    case D::kV:
      return cfg.vocab_size;
    case D::kH:
      return cfg.hidden_size;
    case D::kQ:
      return static_cast<int64_t>(cfg.num_attention_heads) * cfg.head_dim;
    case D::kKV:
      return static_cast<int64_t>(cfg.num_key_value_heads) * cfg.head_dim;
    case D::kE:
      return cfg.moe_num_primary_experts;
    case D::kF:
      return cfg.moe_ffn_hidden_size;
  }
  return 0;
}

const char* TensorDimName(TensorDim d) {
  switch (d) {
    case D::kNone:
      return "";
    case D::kV:
      return "V";
    case D::kH:
      return "H";
    case D::kQ:
      return "nh*D";
    case D::kKV:
      return "nkv*D";
    case D::kE:
      return "E";
    case D::kF:
      return "F";
  }
  return "?";
}

absl::Span<const TensorKindInfo> TensorKinds() { return kTensorKinds; }

const TensorKindInfo& KindInfo(TensorKind k) {
  const int i = static_cast<int>(k);
  ST_CHECK(i >= 0 && i < kNumTensorKinds) << "tensor kind " << i;
  return kTensorKinds[i];
}

TensorGroup KindGroup(TensorKind k) {
  return KindInfo(k).scope == S::kExpert ? TensorGroup::kExpert : TensorGroup::kResident;
}

TensorKind ExpertPartKind(ExpertPart p) {
  switch (p) {
    case ExpertPart::kGate:
      return K::kFfnGate;
    case ExpertPart::kUp:
      return K::kFfnUp;
    case ExpertPart::kDownT:
      return K::kFfnDownT;
  }
  ST_CHECK(false) << "expert part " << static_cast<int>(p);
  return K::kFfnGate;
}

bool KindPresent(TensorKind k, const ModelConfig& cfg) {
  return !KindInfo(k).untied_only || !cfg.tie_word_embeddings;
}

ExpertPart TensorId::part() const {
  switch (kind) {
    case K::kFfnUp:
      return ExpertPart::kUp;
    case K::kFfnDownT:
      return ExpertPart::kDownT;
    default:
      return ExpertPart::kGate;
  }
}

std::string TensorId::FileName() const {
  const TensorKindInfo& k = info();
  switch (k.scope) {
    case S::kModel:
      return k.file;
    case S::kLayer:
      return absl::StrCat(kBlk, layer, ".", k.file);
    case S::kExpert:
      return absl::StrCat(kBlk, layer, ".", k.file, ".", expert);
  }
  return "";
}

std::string TensorId::HfName() const {
  const TensorKindInfo& k = info();
  switch (k.scope) {
    case S::kModel:
      return k.hf;
    case S::kLayer:
      return absl::StrCat(kLayers, layer, ".", k.hf);
    case S::kExpert:
      return absl::StrCat(kLayers, layer, ".", kExperts, expert, ".", k.hf);
  }
  return "";
}

std::vector<int64_t> TensorId::Shape(const ModelConfig& cfg) const {
  return DimsOf(info().rows, info().cols, cfg);
}

std::vector<int64_t> TensorId::HfShape(const ModelConfig& cfg) const {
  const TensorKindInfo& k = info();
  return k.hf_transposed ? DimsOf(k.cols, k.rows, cfg) : DimsOf(k.rows, k.cols, cfg);
}

bool ForEachTensor(const ModelConfig& cfg, absl::FunctionRef<bool(const TensorId&)> visit) {
  // The model-scope kinds listed before the per-layer kinds come first, those after them last.
  int first_layer_kind = 0;
  while (kTensorKinds[first_layer_kind].scope == S::kModel) ++first_layer_kind;
  for (int i = 0; i < first_layer_kind; ++i) {
    const K k = kTensorKinds[i].kind;
    if (KindPresent(k, cfg) && !visit(TensorId::Model(k))) return false;
  }
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    for (const TensorKindInfo& k : kTensorKinds) {
      if (k.scope == S::kLayer && !visit(TensorId::Layer(k.kind, l))) return false;
    }
    for (int e = 0; e < cfg.moe_num_primary_experts; ++e) {
      for (const TensorKindInfo& k : kTensorKinds) {
        if (k.scope == S::kExpert && !visit(TensorId{k.kind, l, e})) return false;
      }
    }
  }
  for (int i = first_layer_kind; i < kNumTensorKinds; ++i) {
    const K k = kTensorKinds[i].kind;
    if (kTensorKinds[i].scope == S::kModel && KindPresent(k, cfg) && !visit(TensorId::Model(k))) {
      return false;
    }
  }
  return true;
}

int64_t CountTensors(const ModelConfig& cfg) {
  int64_t model = 0, layer = 0, expert = 0;
  for (const TensorKindInfo& k : kTensorKinds) {
    if (k.scope == S::kModel) model += KindPresent(k.kind, cfg) ? 1 : 0;
    if (k.scope == S::kLayer) ++layer;
    if (k.scope == S::kExpert) ++expert;
  }
  return model + static_cast<int64_t>(cfg.num_hidden_layers) *
                     (layer + expert * static_cast<int64_t>(cfg.moe_num_primary_experts));
}

std::optional<TensorId> ParseFileTensorName(absl::string_view name) {
  for (const TensorKindInfo& k : kTensorKinds) {
    if (k.scope == S::kModel && name == k.file) return TensorId::Model(k.kind);
  }
  TensorId id;
  if (!absl::ConsumePrefix(&name, kBlk) || !ConsumeIndex(&name, &id.layer)) return std::nullopt;
  // `name` is now "<file>" (layer scope) or "<file>.<E>" (expert scope).
  const size_t dot = name.find('.');
  const absl::string_view file = name.substr(0, dot);
  for (const TensorKindInfo& k : kTensorKinds) {
    if (file != k.file) continue;
    if (k.scope == S::kLayer && dot == absl::string_view::npos) {
      id.kind = k.kind;
      return id;
    }
    if (k.scope == S::kExpert && dot != absl::string_view::npos &&
        ParseIndex(name.substr(dot + 1), &id.expert)) {
      id.kind = k.kind;
      return id;
    }
    return std::nullopt;
  }
  return std::nullopt;
}

std::optional<TensorId> ParseHfTensorName(absl::string_view hf) {
  for (const TensorKindInfo& k : kTensorKinds) {
    if (k.scope == S::kModel && hf == k.hf) return TensorId::Model(k.kind);
  }
  TensorId id;
  if (!absl::ConsumePrefix(&hf, kLayers) || !ConsumeIndex(&hf, &id.layer)) return std::nullopt;
  const bool expert = absl::ConsumePrefix(&hf, kExperts);
  if (expert && !ConsumeIndex(&hf, &id.expert)) return std::nullopt;
  for (const TensorKindInfo& k : kTensorKinds) {
    if (k.scope == (expert ? S::kExpert : S::kLayer) && hf == k.hf) {
      id.kind = k.kind;
      return id;
    }
  }
  return std::nullopt;
}

std::string FileNamePattern(TensorKind kind) {
  const TensorKindInfo& k = KindInfo(kind);
  switch (k.scope) {
    case S::kModel:
      return k.file;
    case S::kLayer:
      return absl::StrCat(kBlk, "N.", k.file);
    case S::kExpert:
      return absl::StrCat(kBlk, "N.", k.file, ".E");
  }
  return "";
}

std::string HfNamePattern(TensorKind kind) {
  const TensorKindInfo& k = KindInfo(kind);
  switch (k.scope) {
    case S::kModel:
      return k.hf;
    case S::kLayer:
      return absl::StrCat(kLayers, "N.", k.hf);
    case S::kExpert:
      return absl::StrCat(kLayers, "N.", kExperts, "E.", k.hf);
  }
  return "";
}

std::string ShapePattern(TensorKind kind) {
  return DimsText(KindInfo(kind).rows, KindInfo(kind).cols);
}

std::string HfShapePattern(TensorKind kind) {
  const TensorKindInfo& k = KindInfo(kind);
  return k.hf_transposed ? DimsText(k.cols, k.rows) : DimsText(k.rows, k.cols);
}

std::string ExpertTensorName(int layer, int expert, ExpertPart part) {
  return TensorId::Expert(layer, expert, part).FileName();
}

std::string HfToFileName(absl::string_view hf_name) {
  std::optional<TensorId> id = ParseHfTensorName(hf_name);
  return id ? id->FileName() : "";
}

std::string FileToHfName(absl::string_view file_name) {
  std::optional<TensorId> id = ParseFileTensorName(file_name);
  return id ? id->HfName() : "";
}

}  // namespace st
