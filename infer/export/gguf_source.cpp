// OpenGgufSource: a SmallThinker GGUF (llama.cpp's converter layout) as a TensorSource, and
// TokenizerFromGguf, the tokenizer.json its tokenizer.ggml.* keys describe (tensor_source.h).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "infer/export/gguf_smallthinker.h"
#include "infer/export/parallel.h"
#include "infer/export/tensor_source.h"
#include "infer/format/gguf.h"
#include "infer/format/tensors.h"
#include "infer/quant/ggml_blocks.h"
#include "infer/tokenizer/bpe.h"
#include "model/check.h"
#include "model/file_io.h"

namespace st {
namespace {

// Prefixes `s` (a GgufMetadata getter's error, which names the key) with the file.
absl::Status InFile(const std::string& where, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(where, ": ", s.message()));
}

// `key` as T, nullopt when absent; a wrong type is an error naming the file and key.
template <typename T>
absl::StatusOr<std::optional<T>> GetOptional(const GgufMetadata& md, const std::string& where,
                                             const std::string& key) {
  if (md.Find(key) == nullptr) return std::optional<T>();
  absl::StatusOr<T> v = md.Get<T>(key);
  if (!v.ok()) return InFile(where, v.status());
  return std::optional<T>(*std::move(v));
}

template <typename T>
absl::StatusOr<T> GetRequired(const GgufMetadata& md, const std::string& where,
                              const std::string& key, absl::string_view why) {
  if (md.Find(key) == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": key ", key, " is absent; ", why,
                     " (llama.cpp's convert_hf_to_gguf.py writes it for a SmallThinker model)"));
  }
  absl::StatusOr<T> v = md.Get<T>(key);
  if (!v.ok()) return InFile(where, v.status());
  return *std::move(v);
}

// A UINT32 count as the int ModelConfig holds (ValidateModelConfig bounds it).
absl::StatusOr<int> AsInt(uint32_t v, const std::string& where, const std::string& key) {
  if (v > static_cast<uint32_t>(INT_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": key ", key, " = ", v, " is too large for a model size"));
  }
  return static_cast<int>(v);
}

// ne with trailing 1s dropped (at least one kept): the C writer drops them, the Python one
// does not.
std::vector<int64_t> TrimNe(std::vector<int64_t> ne) {
  while (ne.size() > 1 && ne.back() == 1) ne.pop_back();
  return ne;
}

std::string NeText(const std::vector<int64_t>& ne) {
  return absl::StrCat("[", absl::StrJoin(ne, ", "), "]");
}

// "blk.N.ffn_{gate,up,down}_exps" -> (N, part); false for any other name.
bool ParseExpertStack(absl::string_view base, int* layer, ExpertPart* part) {
  if (!absl::ConsumePrefix(&base, "blk.")) return false;
  const size_t dot = base.find('.');
  if (dot == absl::string_view::npos || dot == 0) return false;
  const absl::string_view digits = base.substr(0, dot);
  if (digits.size() > 1 && digits[0] == '0') return false;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
  }
  int n = 0;
  if (!absl::SimpleAtoi(digits, &n)) return false;
  const absl::string_view rest = base.substr(dot + 1);
  if (rest == "ffn_gate_exps") {
    *part = ExpertPart::kGate;
  } else if (rest == "ffn_up_exps") {
    *part = ExpertPart::kUp;
  } else if (rest == "ffn_down_exps") {
    *part = ExpertPart::kDownT;
  } else {
    return false;
  }
  *layer = n;
  return true;
}

std::string ExpertStackName(int layer, ExpertPart part) {
  const char* p = part == ExpertPart::kGate ? "gate" : part == ExpertPart::kUp ? "up" : "down";
  return absl::StrCat("blk.", layer, ".ffn_", p, "_exps.weight");
}

// ---- the model config from the smallthinker.* keys

// The HF key a ValidateModelConfig message names -> the GGUF key it came from.
std::string GgufKeyFor(absl::string_view message) {
  static const std::pair<const char*, const char*> kKeys[] = {
      {"'num_hidden_layers'", "block_count"},
      {"'hidden_size'", "embedding_length"},
      {"'num_attention_heads'", "attention.head_count"},
      {"'num_key_value_heads'", "attention.head_count_kv"},
      {"'head_dim'", "attention.key_length"},
      {"'vocab_size'", "tokenizer.ggml.tokens (its length)"},
      {"'max_position_embeddings'", "context_length"},
      {"'moe_num_primary_experts'", "expert_count"},
      {"'moe_num_active_primary_experts'", "expert_used_count"},
      {"'moe_ffn_hidden_size'", "expert_feed_forward_length"},
      {"'rms_norm_eps'", "attention.layer_norm_rms_epsilon"},
      {"'rope_theta'", "rope.freq_base"},
  };
  for (const auto& [hf, gguf] : kKeys) {
    if (absl::StrContains(message, hf)) {
      return absl::StartsWith(gguf, "tokenizer.") ? gguf : GgufArchKey(gguf);
    }
  }
  return "";
}

// Keys of the architecture that change the computation in ways not implemented: refused unless
// they hold the value that changes nothing.
absl::Status CheckUnsupportedKeys(const GgufMetadata& md, const std::string& where,
                                  const ModelConfig& cfg) {
  ST_ASSIGN_OR_RETURN(std::optional<uint32_t> rot,
                      GetOptional<uint32_t>(md, where, GgufArchKey("rope.dimension_count")));
  if (rot && static_cast<int64_t>(*rot) != cfg.head_dim) {
    return absl::UnimplementedError(absl::StrCat(
        where, ": key ", GgufArchKey("rope.dimension_count"), " = ", *rot,
        " rotates part of each head (head_dim ", cfg.head_dim, "); only full rotary is supported"));
  }
  ST_ASSIGN_OR_RETURN(std::optional<uint32_t> vlen,
                      GetOptional<uint32_t>(md, where, GgufArchKey("attention.value_length")));
  if (vlen && static_cast<int64_t>(*vlen) != cfg.head_dim) {
    return absl::UnimplementedError(
        absl::StrCat(where, ": key ", GgufArchKey("attention.value_length"), " = ", *vlen,
                     " differs from the key length ", cfg.head_dim, "; not supported"));
  }
  ST_ASSIGN_OR_RETURN(std::optional<std::string> scaling,
                      GetOptional<std::string>(md, where, GgufArchKey("rope.scaling.type")));
  if (scaling && *scaling != "none") {
    return absl::UnimplementedError(absl::StrCat(where, ": key ", GgufArchKey("rope.scaling.type"),
                                                 " = \"", *scaling,
                                                 "\": RoPE scaling is not supported"));
  }
  ST_ASSIGN_OR_RETURN(std::optional<float> base_swa,
                      GetOptional<float>(md, where, GgufArchKey("rope.freq_base_swa")));
  if (base_swa && static_cast<double>(*base_swa) != cfg.rope_theta) {
    return absl::UnimplementedError(absl::StrCat(where, ": key ", GgufArchKey("rope.freq_base_swa"),
                                                 " = ", *base_swa,
                                                 " differs from rope.freq_base = ", cfg.rope_theta,
                                                 "; one RoPE base for every layer is supported"));
  }
  for (const char* key : {"expert_shared_count", "leading_dense_block_count"}) {
    ST_ASSIGN_OR_RETURN(std::optional<uint32_t> n,
                        GetOptional<uint32_t>(md, where, GgufArchKey(key)));
    if (n && *n != 0) {
      return absl::UnimplementedError(absl::StrCat(where, ": key ", GgufArchKey(key), " = ", *n,
                                                   ": shared experts and dense layers are not "
                                                   "supported"));
    }
  }
  return absl::OkStatus();
}

// The arch keys read (or checked) above; any other smallthinker.* key is listed as ignored.
bool KnownArchKey(absl::string_view key) {
  static const char* const kKnown[] = {
      "block_count",
      "context_length",
      "embedding_length",
      "feed_forward_length",  // the converter writes the expert width here too; unused
      "attention.head_count",
      "attention.head_count_kv",
      "attention.key_length",
      "attention.value_length",
      "attention.layer_norm_rms_epsilon",
      "attention.sliding_window",
      "attention.sliding_window_pattern",
      "rope.freq_base",
      "rope.freq_base_swa",
      "rope.dimension_count",
      "rope.scaling.type",
      "expert_count",
      "expert_used_count",
      "expert_feed_forward_length",
      "expert_gating_func",
      "expert_shared_count",
      "leading_dense_block_count",
  };
  for (const char* k : kKnown) {
    if (key == GgufArchKey(k)) return true;
  }
  return false;
}

// ---- the tokenizer

// The pre-tokenizer tokenizer.ggml.pre names.
absl::StatusOr<ByteLevelBpeSpec::Pre> PreTokenizerOf(const std::string& pre,
                                                     const std::string& where) {
  if (pre == "qwen2") return ByteLevelBpeSpec::Pre::kQwen2;
  if (pre == "gpt-2" || pre == "default") return ByteLevelBpeSpec::Pre::kGpt2;
  return absl::UnimplementedError(
      absl::StrCat(where, ": tokenizer.ggml.pre = \"", pre,
                   "\" is not supported; supported pre-tokenizers: \"qwen2\" (Qwen2/Qwen3, "
                   "SmallThinker), \"gpt-2\" and \"default\""));
}

// The policy's token text for id key `key` (UINT32), range-checked; -1 / "" when absent.
absl::Status SetPolicyToken(const GgufMetadata& md, const std::string& where,
                            const std::string& key, const std::vector<std::string>& tokens,
                            std::string* text, int* id) {
  ST_ASSIGN_OR_RETURN(std::optional<uint32_t> v, GetOptional<uint32_t>(md, where, key));
  if (!v) return absl::OkStatus();
  if (*v >= tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": key ", key, " = ", *v,
                                                   " is outside the vocabulary of ", tokens.size(),
                                                   " tokens (tokenizer.ggml.tokens)"));
  }
  *id = static_cast<int>(*v);
  *text = tokens[*v];
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GgufTokenizer> TokenizerFromGguf(const GgufMetadata& md, const std::string& where) {
  GgufTokenizer out;
  ST_ASSIGN_OR_RETURN(std::string model, GetRequired<std::string>(md, where, "tokenizer.ggml.model",
                                                                  "the tokenizer type is needed"));
  if (model != "gpt2") {
    return absl::UnimplementedError(
        absl::StrCat(where, ": tokenizer.ggml.model = \"", model,
                     "\" is not supported; only \"gpt2\" (byte-level BPE, as Qwen2/Qwen3 and "
                     "SmallThinker use) is"));
  }
  ST_ASSIGN_OR_RETURN(std::optional<std::string> pre_key,
                      GetOptional<std::string>(md, where, "tokenizer.ggml.pre"));
  const std::string pre = pre_key ? *pre_key : "default";
  if (!pre_key) {
    out.notes.push_back(
        "tokenizer.ggml.pre is absent: GPT-2's byte-level pre-tokenizer is used (as llama.cpp "
        "does for \"default\")");
  }
  ByteLevelBpeSpec spec;
  ST_ASSIGN_OR_RETURN(spec.pre, PreTokenizerOf(pre, where));

  absl::StatusOr<std::vector<std::string>> tokens =
      md.GetArray<std::string>("tokenizer.ggml.tokens");
  if (!tokens.ok()) return InFile(where, tokens.status());
  if (tokens->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": tokenizer.ggml.tokens is empty"));
  }
  std::vector<int32_t> types(tokens->size(), 1);
  if (md.Find("tokenizer.ggml.token_type") != nullptr) {
    absl::StatusOr<std::vector<int32_t>> t = md.GetArray<int32_t>("tokenizer.ggml.token_type");
    if (!t.ok()) return InFile(where, t.status());
    if (t->size() != tokens->size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": tokenizer.ggml.token_type has ", t->size(), " entries, tokenizer.ggml.tokens ",
          tokens->size(), "; expected one type per token"));
    }
    types = *std::move(t);
  }
  std::unordered_map<std::string, size_t> vocab_ids;  // duplicates are refused
  int64_t unused = 0;
  for (size_t id = 0; id < tokens->size(); ++id) {
    const std::string& text = (*tokens)[id];
    const int32_t type = types[id];
    if (type == kGgufTokenUnused) {
      ++unused;
    } else if (type == kGgufTokenControl || type == kGgufTokenUserDefined) {
      const bool special = type == kGgufTokenControl;
      spec.added.push_back({static_cast<int>(id), text, special});
      if (special) out.policy.special_token_ids.push_back(static_cast<int>(id));
    } else {
      const auto [it, fresh] = vocab_ids.emplace(text, id);
      if (!fresh) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": tokenizer.ggml.tokens holds '",
                                                       text, "' twice (ids ", it->second, " and ",
                                                       id, ")"));
      }
      spec.vocab.emplace_back(text, static_cast<int>(id));
    }
  }
  if (unused > 0) {
    out.notes.push_back(absl::StrCat(unused,
                                     " unused tokens (token type 5, the converter's [PAD...] "
                                     "fillers) are left out of the tokenizer; their ids stay "
                                     "unused"));
  }
  absl::StatusOr<std::vector<std::string>> merges =
      md.GetArray<std::string>("tokenizer.ggml.merges");
  if (!merges.ok()) return InFile(where, merges.status());
  spec.merges.reserve(merges->size());
  for (size_t r = 0; r < merges->size(); ++r) {
    const std::string& m = (*merges)[r];
    const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string::npos;  // as llama.cpp splits
    if (sp == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": tokenizer.ggml.merges[", r, "] = '", m, "' is not \"A B\""));
    }
    spec.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
  }
  out.json = ByteLevelBpeJson(spec);
  // The result must load: merges naming unknown tokens and the like are refused here.
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = MakeTokenizer("bpe", out.json);
  if (!tok.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        where,
        ": the tokenizer of its tokenizer.ggml.* keys does not load: ", tok.status().message()));
  }

  TokenizerPolicy& p = out.policy;
  ST_RETURN_IF_ERROR(SetPolicyToken(md, where, "tokenizer.ggml.bos_token_id", *tokens, &p.bos_token,
                                    &p.bos_token_id));
  ST_RETURN_IF_ERROR(SetPolicyToken(md, where, "tokenizer.ggml.eos_token_id", *tokens, &p.eos_token,
                                    &p.eos_token_id));
  ST_RETURN_IF_ERROR(SetPolicyToken(md, where, "tokenizer.ggml.padding_token_id", *tokens,
                                    &p.pad_token, &p.pad_token_id));
  ST_RETURN_IF_ERROR(SetPolicyToken(md, where, "tokenizer.ggml.unknown_token_id", *tokens,
                                    &p.unk_token, &p.unk_token_id));
  ST_ASSIGN_OR_RETURN(std::optional<bool> add_bos,
                      GetOptional<bool>(md, where, "tokenizer.ggml.add_bos_token"));
  ST_ASSIGN_OR_RETURN(std::optional<bool> add_eos,
                      GetOptional<bool>(md, where, "tokenizer.ggml.add_eos_token"));
  p.add_bos_token = add_bos.value_or(false);  // llama.cpp's default for gpt2 tokenizers
  p.add_eos_token = add_eos.value_or(false);
  if (p.add_bos_token && p.bos_token_id < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": tokenizer.ggml.add_bos_token is true but tokenizer.ggml.bos_token_id is absent"));
  }
  if (p.add_eos_token && p.eos_token_id < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": tokenizer.ggml.add_eos_token is true but tokenizer.ggml.eos_token_id is absent"));
  }
  ST_ASSIGN_OR_RETURN(std::optional<std::string> tmpl,
                      GetOptional<std::string>(md, where, "tokenizer.chat_template"));
  out.chat_template = tmpl.value_or("");
  static const char* const kRead[] = {
      "tokenizer.ggml.model",
      "tokenizer.ggml.pre",
      "tokenizer.ggml.tokens",
      "tokenizer.ggml.token_type",
      "tokenizer.ggml.merges",
      "tokenizer.ggml.bos_token_id",
      "tokenizer.ggml.eos_token_id",
      "tokenizer.ggml.padding_token_id",
      "tokenizer.ggml.unknown_token_id",
      "tokenizer.ggml.add_bos_token",
      "tokenizer.ggml.add_eos_token",
      "tokenizer.chat_template",
  };
  std::vector<std::string> ignored;
  for (const auto& [key, value] : md.entries()) {
    if (!absl::StartsWith(key, "tokenizer.")) continue;
    if (std::find_if(std::begin(kRead), std::end(kRead),
                     [&key = key](const char* k) { return key == k; }) == std::end(kRead)) {
      ignored.push_back(key);
    }
  }
  if (!ignored.empty()) {
    out.notes.push_back(absl::StrCat("tokenizer keys ignored: ", absl::StrJoin(ignored, ", ")));
  }
  out.notes.push_back(absl::StrCat("tokenizer: byte-level BPE, pre-tokenizer \"", pre, "\", ",
                                   tokens->size() - unused, " tokens, ", merges->size(),
                                   " merges"));
  return out;
}

namespace {

// Where one Hugging Face tensor lies in the GGUF: a whole tensor, or expert e's chunk of a
// stacked one.
struct Slice {
  const GgufTensorInfo* info = nullptr;
  uint64_t offset = 0;  // inside the tensor's data
  uint64_t nbytes = 0;
  int64_t elements = 0;
  int64_t row = 0;  // elements of a row (ne[0])
};

class GgufSource final : public TensorSource {
 public:
  explicit GgufSource(GgufFile file) : file_(std::move(file)) {}
  ~GgufSource() override {
    if (fd_ >= 0) close(fd_);
  }
  GgufSource(const GgufSource&) = delete;
  GgufSource& operator=(const GgufSource&) = delete;

  absl::Status Load();

  const ModelConfig& config() const override { return config_; }
  const std::vector<SourceTensor>& tensors() const override { return tensors_; }
  absl::StatusOr<std::vector<float>> ReadF32(const std::string& hf_name) const override;
  absl::StatusOr<std::optional<StoredTensor>> ReadStored(const std::string& hf_name) const override;
  std::string tokenizer_name() const override { return "bpe"; }
  std::string tokenizer_json() const override { return tokenizer_.json; }
  std::string chat_template() const override { return tokenizer_.chat_template; }
  TokenizerPolicy tokenizer_policy() const override { return tokenizer_.policy; }
  std::vector<std::string> notes() const override { return notes_; }
  std::string description() const override { return description_; }
  std::string default_recipe() const override { return "keep"; }

 private:
  absl::Status ParseConfig();
  absl::Status MapTensors();
  absl::StatusOr<const Slice*> FindSlice(const std::string& hf_name) const;
  absl::StatusOr<std::vector<uint8_t>> ReadBytes(const Slice& s) const;

  GgufFile file_;
  int fd_ = -1;
  ModelConfig config_;
  GgufTokenizer tokenizer_;
  std::vector<SourceTensor> tensors_;    // sorted by name
  std::map<std::string, Slice> slices_;  // by Hugging Face name
  std::vector<std::string> notes_;
  std::string description_;
};

absl::Status GgufSource::ParseConfig() {
  const GgufMetadata& md = file_.metadata();
  const std::string& where = file_.path();
  ST_ASSIGN_OR_RETURN(std::string arch,
                      GetRequired<std::string>(md, where, "general.architecture",
                                               "it names the model architecture"));
  if (arch != kGgufArch) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": general.architecture = \"", arch,
                     "\": st-export converts only SmallThinker GGUFs (\"", kGgufArch, "\")"));
  }
  ModelConfig& c = config_;
  auto required = [&](const char* key, int* field) -> absl::Status {
    const std::string k = GgufArchKey(key);
    ST_ASSIGN_OR_RETURN(uint32_t v, GetRequired<uint32_t>(md, where, k, "it sizes the model"));
    ST_ASSIGN_OR_RETURN(*field, AsInt(v, where, k));
    return absl::OkStatus();
  };
  ST_RETURN_IF_ERROR(required("block_count", &c.num_hidden_layers));
  ST_RETURN_IF_ERROR(required("embedding_length", &c.hidden_size));
  ST_RETURN_IF_ERROR(required("context_length", &c.max_position_embeddings));
  ST_RETURN_IF_ERROR(required("attention.head_count", &c.num_attention_heads));
  ST_RETURN_IF_ERROR(required("expert_count", &c.moe_num_primary_experts));
  ST_RETURN_IF_ERROR(required("expert_used_count", &c.moe_num_active_primary_experts));
  ST_RETURN_IF_ERROR(required("expert_feed_forward_length", &c.moe_ffn_hidden_size));
  ST_ASSIGN_OR_RETURN(std::optional<uint32_t> kv,
                      GetOptional<uint32_t>(md, where, GgufArchKey("attention.head_count_kv")));
  c.num_key_value_heads = c.num_attention_heads;  // llama.cpp's default
  if (kv) {
    ST_ASSIGN_OR_RETURN(c.num_key_value_heads,
                        AsInt(*kv, where, GgufArchKey("attention.head_count_kv")));
  }
  ST_ASSIGN_OR_RETURN(std::optional<uint32_t> key_length,
                      GetOptional<uint32_t>(md, where, GgufArchKey("attention.key_length")));
  if (key_length) {
    ST_ASSIGN_OR_RETURN(c.head_dim, AsInt(*key_length, where, GgufArchKey("attention.key_length")));
  } else {
    if (c.num_attention_heads <= 0 || c.hidden_size % c.num_attention_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": key ", GgufArchKey("attention.key_length"), " is absent and ",
          GgufArchKey("embedding_length"), " = ", c.hidden_size, " is not a multiple of ",
          GgufArchKey("attention.head_count"), " = ", c.num_attention_heads));
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  ST_ASSIGN_OR_RETURN(uint32_t gating,
                      GetRequired<uint32_t>(md, where, GgufArchKey("expert_gating_func"),
                                            "it chooses the router's function (1 softmax, 2 "
                                            "sigmoid)"));
  if (gating != kGgufGatingSoftmax && gating != kGgufGatingSigmoid) {
    return absl::UnimplementedError(
        absl::StrCat(where, ": key ", GgufArchKey("expert_gating_func"), " = ", gating,
                     " is not supported; expected 1 (softmax) or 2 (sigmoid)"));
  }
  c.moe_primary_router_apply_softmax = gating == kGgufGatingSoftmax;
  ST_ASSIGN_OR_RETURN(float eps,
                      GetRequired<float>(md, where, GgufArchKey("attention.layer_norm_rms_epsilon"),
                                         "it is the RMSNorm epsilon"));
  c.rms_norm_eps = eps;
  ST_ASSIGN_OR_RETURN(std::optional<float> base,
                      GetOptional<float>(md, where, GgufArchKey("rope.freq_base")));
  c.rope_theta = base ? static_cast<double>(*base) : 10000.0;  // llama.cpp's default
  if (!base) notes_.push_back("rope.freq_base is absent: 10000 (llama.cpp's default)");

  // vocab_size: the token list's length (llama.cpp's n_vocab).
  const GgufValue* tokens = md.Find("tokenizer.ggml.tokens");
  if (tokens == nullptr || tokens->type() != GgufType::kArray ||
      tokens->element_type() != GgufType::kString) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": key tokenizer.ggml.tokens (ARRAY[STRING]) is ",
        tokens == nullptr ? "absent" : tokens->TypeName(), "; it gives the vocabulary size"));
  }
  if (tokens->array_size() > static_cast<uint64_t>(INT_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": tokenizer.ggml.tokens has too many entries"));
  }
  c.vocab_size = static_cast<int>(tokens->array_size());

  // Layer layout (src/models/smallthinker.cpp).
  const int L = c.num_hidden_layers;
  if (L < 1 || L > (1 << 20)) {  // ValidateModelConfig's message follows; bound the arrays
    c.rope_layout.clear();
    c.sliding_window_layout.clear();
  } else {
    ST_ASSIGN_OR_RETURN(std::optional<uint32_t> window,
                        GetOptional<uint32_t>(md, where, GgufArchKey("attention.sliding_window")));
    ST_ASSIGN_OR_RETURN(
        std::optional<uint32_t> pattern,
        GetOptional<uint32_t>(md, where, GgufArchKey("attention.sliding_window_pattern")));
    c.rope_layout.assign(L, 1);
    c.sliding_window_layout.assign(L, 0);
    c.sliding_window_size = 0;
    if (window && *window > 0) {
      const uint32_t period = pattern ? *pattern : 4;
      if (period == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": key ", GgufArchKey("attention.sliding_window_pattern"),
                         " = 0; expected >= 1"));
      }
      for (int l = 0; l < L; ++l) {
        c.rope_layout[l] = l % kLlamaCppNoRopeLayerStep != 0 ? 1 : 0;
        c.sliding_window_layout[l] = l % period != 0 ? 1 : 0;
      }
      c.sliding_window_size = kLlamaCppSlidingWindow;
      notes_.push_back(absl::StrCat(
          "layer layout as llama.cpp derives it: layers 0, 4, 8, ... NoPE, the others RoPE; "
          "every ",
          period, period == 1 ? "st" : "th",
          " layer from 0 full attention, the others a sliding window of ", kLlamaCppSlidingWindow,
          " (llama.cpp's fixed window; attention.sliding_window = ", *window,
          " is ignored, as llama.cpp does)"));
    } else {
      notes_.push_back(
          "layer layout: every layer RoPE + full attention (no "
          "attention.sliding_window)");
    }
  }
  c.tie_word_embeddings = file_.FindTensor("output.weight") == nullptr;
  c.model_type = kGgufArch;
  absl::Status valid = ValidateModelConfig(c);
  if (!valid.ok()) {
    const std::string key = GgufKeyFor(valid.message());
    return absl::Status(valid.code(),
                        absl::StrCat(where, ": ", valid.message(),
                                     key.empty() ? "" : absl::StrCat(" (GGUF key ", key, ")")));
  }
  ST_RETURN_IF_ERROR(CheckUnsupportedKeys(md, where, c));
  std::vector<std::string> ignored;
  for (const auto& [key, value] : md.entries()) {
    if (absl::StartsWith(key, GgufArchKey("")) && !KnownArchKey(key)) ignored.push_back(key);
  }
  if (!ignored.empty()) {
    notes_.push_back(absl::StrCat("metadata keys ignored: ", absl::StrJoin(ignored, ", ")));
  }
  return absl::OkStatus();
}

absl::Status GgufSource::MapTensors() {
  const ModelConfig& c = config_;
  const std::string& where = file_.path();
  const int64_t E = c.moe_num_primary_experts;
  std::vector<std::string> unknown, wrong;
  std::set<std::string> seen;  // GGUF names matched to the config
  for (const GgufTensorInfo& t : file_.tensors()) {
    const GgmlTypeInfo* type = FindGgmlType(static_cast<uint32_t>(t.type));
    absl::string_view base = t.name;
    std::optional<TensorId> id;
    int layer = -1;
    ExpertPart part = ExpertPart::kGate;
    bool stack = false;
    if (absl::ConsumeSuffix(&base, ".weight")) {
      if (ParseExpertStack(base, &layer, &part)) {
        stack = layer < c.num_hidden_layers;
      } else {
        id = ParseFileTensorName(base);
        if (id &&
            (id->is_expert() || id->layer >= c.num_hidden_layers || !KindPresent(id->kind, c))) {
          id.reset();
        }
      }
    }
    if (!stack && !id) {
      unknown.push_back(t.name);
      continue;
    }
    // The ggml shape the config implies: HF's reversed (+ E for a stack).
    std::vector<int64_t> want;
    if (stack) {
      want = TensorId::Expert(layer, 0, part).HfShape(c);
      std::reverse(want.begin(), want.end());
      want.push_back(E);
    } else {
      want = id->HfShape(c);
      std::reverse(want.begin(), want.end());
    }
    if (TrimNe(t.ne) != TrimNe(want)) {
      wrong.push_back(absl::StrCat(t.name, " has ne ", NeText(t.ne), ", expected ", NeText(want)));
      continue;
    }
    if (type == nullptr) {
      return absl::UnimplementedError(absl::StrCat(
          where, ": tensor ", t.name, " has ggml type ",
          GgmlTypeLayout(static_cast<uint32_t>(t.type)).name, " (id ",
          static_cast<uint32_t>(t.type),
          "), which cannot be dequantised; supported: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, "
          "q8_0, q2_K, q3_K, q4_K, q5_K, q6_K, q8_K"));
    }
    seen.insert(t.name);
    const int64_t row = t.ne[0];
    if (stack) {
      const uint64_t chunk = t.nbytes / static_cast<uint64_t>(E);
      for (int e = 0; e < E; ++e) {
        const TensorId eid = TensorId::Expert(layer, e, part);
        slices_[eid.HfName()] =
            Slice{&t, chunk * static_cast<uint64_t>(e), chunk, t.num_elements() / E, row};
      }
    } else {
      slices_[id->HfName()] = Slice{&t, 0, t.nbytes, t.num_elements(), row};
    }
  }
  // The names the config implies that the file lacks.
  std::vector<std::string> missing;
  auto need = [&](const std::string& name) {
    if (seen.count(name) == 0 && file_.FindTensor(name) == nullptr) missing.push_back(name);
  };
  ForEachTensor(c, [&](const TensorId& id) {
    if (!id.is_expert()) {
      need(id.FileName() + ".weight");
    } else if (id.expert == 0) {
      need(ExpertStackName(id.layer, id.part()));
    }
    return true;
  });
  if (unknown.empty() && wrong.empty() && missing.empty()) return absl::OkStatus();
  std::string msg = absl::StrCat(where, ": the tensors do not match a SmallThinker of ",
                                 c.num_hidden_layers, " layers, ", E, " experts:");
  if (!unknown.empty()) {
    absl::StrAppend(&msg, " unknown tensor", unknown.size() == 1 ? "" : "s", " ",
                    ListFirstNames(unknown, "; "), ";");
  }
  if (!wrong.empty()) absl::StrAppend(&msg, " wrong shape: ", ListFirstNames(wrong, "; "), ";");
  if (!missing.empty()) absl::StrAppend(&msg, " missing: ", ListFirstNames(missing, "; "), ";");
  msg.pop_back();
  return absl::InvalidArgumentError(msg);
}

absl::Status GgufSource::Load() {
  const std::string& path = file_.path();
  ST_RETURN_IF_ERROR(ParseConfig());
  ST_RETURN_IF_ERROR(MapTensors());
  ST_ASSIGN_OR_RETURN(tokenizer_, TokenizerFromGguf(file_.metadata(), path));
  for (const std::string& n : tokenizer_.notes) notes_.push_back(n);
  std::map<std::string, int> type_counts;
  for (SourceTensor t : ExpectedTensors(config_)) {
    const Slice& s = slices_.at(t.name);
    t.dtype = FindGgmlType(static_cast<uint32_t>(s.info->type))->name;
    tensors_.push_back(std::move(t));
  }
  std::sort(tensors_.begin(), tensors_.end(),
            [](const SourceTensor& a, const SourceTensor& b) { return a.name < b.name; });
  for (const GgufTensorInfo& t : file_.tensors()) {
    ++type_counts[FindGgmlType(static_cast<uint32_t>(t.type))->name];
  }
  std::vector<std::string> counts;
  for (const auto& [name, n] : type_counts) counts.push_back(absl::StrCat(n, " ", name));
  const GgufValue* name = file_.metadata().Find("general.name");
  description_ = absl::StrCat("GGUF ", path);
  if (name != nullptr && name->type() == GgufType::kString) {
    absl::StrAppend(&description_, " '", *name->As<std::string>(), "'");
  }
  absl::StrAppend(&description_, " (", file_.tensors().size(),
                  " tensors: ", absl::StrJoin(counts, ", "), ")");
  fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) return FileError("cannot open GGUF file", path, errno);
  return absl::OkStatus();
}

absl::StatusOr<const Slice*> GgufSource::FindSlice(const std::string& hf_name) const {
  auto it = slices_.find(hf_name);
  if (it == slices_.end()) {
    return absl::NotFoundError(absl::StrCat(file_.path(), ": no tensor '", hf_name, "'"));
  }
  return &it->second;
}

absl::StatusOr<std::vector<uint8_t>> GgufSource::ReadBytes(const Slice& s) const {
  std::vector<uint8_t> out(static_cast<size_t>(s.nbytes));
  const uint64_t start = file_.data_offset() + s.info->offset + s.offset;
  uint64_t done = 0;
  while (done < s.nbytes) {
    const ssize_t n = pread(fd_, out.data() + done, static_cast<size_t>(s.nbytes - done),
                            static_cast<off_t>(start + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return FileError("cannot read GGUF file", file_.path(), errno);
    if (n == 0) {
      return absl::DataLossError(absl::StrCat(file_.path(), ": tensor ", s.info->name,
                                              " ends past the end of the file (did it shrink "
                                              "since it was opened?)"));
    }
    done += static_cast<uint64_t>(n);
  }
  return out;
}

absl::StatusOr<std::vector<float>> GgufSource::ReadF32(const std::string& hf_name) const {
  ST_ASSIGN_OR_RETURN(const Slice* s, FindSlice(hf_name));
  ST_ASSIGN_OR_RETURN(std::vector<uint8_t> raw, ReadBytes(*s));
  const uint32_t type = static_cast<uint32_t>(s->info->type);
  ST_ASSIGN_OR_RETURN(const int64_t row_bytes, GgmlRowBytes(type, s->row));
  const int64_t rows = s->elements / s->row;
  std::vector<float> out(static_cast<size_t>(s->elements));
  const int ranges = ParallelRanges(rows, std::max<int64_t>(1, (int64_t{1} << 16) / s->row));
  std::vector<absl::Status> status(static_cast<size_t>(ranges));
  ParallelFor(rows, ranges, [&](int range, int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end && status[range].ok(); ++r) {
      status[range] =
          DequantizeRowGgml(type, raw.data() + r * row_bytes, s->row, out.data() + r * s->row);
    }
  });
  for (const absl::Status& st : status) ST_RETURN_IF_ERROR(st);
  return out;
}

absl::StatusOr<std::optional<StoredTensor>> GgufSource::ReadStored(
    const std::string& hf_name) const {
  ST_ASSIGN_OR_RETURN(const Slice* s, FindSlice(hf_name));
  const std::optional<DType> ours = DTypeOfGgml(s->info->type);
  if (!ours) return std::optional<StoredTensor>();
  StoredTensor t;
  t.dtype = *ours;
  t.shape = Find(hf_name)->shape;
  ST_ASSIGN_OR_RETURN(t.bytes, ReadBytes(*s));
  ST_CHECK(static_cast<int64_t>(t.bytes.size()) == DTypeBytes(t.dtype, s->elements))
      << "GGUF slice size disagrees with its type";
  return std::optional<StoredTensor>(std::move(t));
}

}  // namespace

absl::StatusOr<std::unique_ptr<TensorSource>> OpenGgufSource(const std::string& path) {
  ST_ASSIGN_OR_RETURN(GgufFile file, GgufFile::Open(path));
  auto src = std::make_unique<GgufSource>(std::move(file));
  ST_RETURN_IF_ERROR(src->Load());
  return std::unique_ptr<TensorSource>(std::move(src));
}

}  // namespace st
