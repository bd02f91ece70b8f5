// ExportGguf / ExportGgufFromModelFile and their pieces (layout check, gpt2 vocabulary, metadata,
// the tensor plan with experts stacked per layer): source -> llama.cpp GGUF (gguf_export.h).
#include "infer/export/gguf_export.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "infer/export/hf_writer.h"
#include "infer/export/parallel.h"
#include "infer/format/gguf.h"
#include "infer/format/tensors.h"
#include "infer/quant/codec.h"
#include "infer/quant/ggml_blocks.h"
#include "infer/tokenizer/bpe.h"
#include "infer/tokenizer/tokenizer.h"
#include "model/check.h"
#include "nlohmann/json.hpp"

namespace st {
namespace {

using json = nlohmann::json;

constexpr uint32_t kQuantizationVersion = 2;  // GGML_QUANT_VERSION

// llama.cpp's LLAMA_FTYPE for a file whose experts are of type `t`.
uint32_t FileTypeOf(DType t) {
  switch (t) {
    case DType::kF32:
      return 0;  // ALL_F32
    case DType::kF16:
      return 1;  // MOSTLY_F16
    case DType::kQ4_0:
      return 2;  // MOSTLY_Q4_0
    case DType::kQ8_0:
      return 7;  // MOSTLY_Q8_0
    case DType::kBF16:
      return 32;  // MOSTLY_BF16
  }
  return 0;
}

bool IsBlockType(DType t) { return DTypeBlockElems(t) > 1; }

// ---- the tokenizer

// The converter's does_token_look_special (conversion/base.py).
bool LooksSpecial(const std::string& t) {
  auto wrapped = [&t](absl::string_view open, absl::string_view close) {
    return t.size() >= open.size() + close.size() && absl::StartsWith(t, open) &&
           absl::EndsWith(t, close);
  };
  return t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]" || wrapped("<|", "|>") ||
         wrapped("<\xEF\xBD\x9C", "\xEF\xBD\x9C>") || wrapped("<unused", ">");
}

std::string TypeOfPre(const json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>()
                                                                      : std::string();
}

bool BoolOr(const json& j, const char* key, bool fallback) {
  return j.contains(key) && j[key].is_boolean() ? j[key].get<bool>() : fallback;
}

// tokenizer.ggml.pre for a tokenizer.json's pre_tokenizer: "qwen2", "gpt-2", or why neither.
absl::StatusOr<std::string> PreName(const json& pre) {
  auto refuse = [&pre](absl::string_view why) {
    std::string shown = pre.dump();
    if (shown.size() > 300) shown = shown.substr(0, 297) + "...";
    return absl::InvalidArgumentError(absl::StrCat(
        "the tokenizer's pre_tokenizer ", shown, " ", why,
        "; llama.cpp's gpt2 tokenizer knows only Qwen2's Split regex (pre \"qwen2\") and GPT-2's "
        "ByteLevel regex (pre \"gpt-2\") here, and would split text differently"));
  };
  auto no_prefix_space = [](const json& byte_level) {
    return !BoolOr(byte_level, "add_prefix_space", true);  // Hugging Face's default: true
  };
  const json* byte_level = nullptr;
  const json* split = nullptr;
  if (TypeOfPre(pre) == "ByteLevel") {
    byte_level = &pre;
  } else if (TypeOfPre(pre) == "Sequence" && pre.contains("pretokenizers") &&
             pre["pretokenizers"].is_array()) {
    const json& seq = pre["pretokenizers"];
    if (seq.size() == 1 && TypeOfPre(seq[0]) == "ByteLevel") {
      byte_level = &seq[0];
    } else if (seq.size() == 2 && TypeOfPre(seq[0]) == "Split" &&
               TypeOfPre(seq[1]) == "ByteLevel") {
      split = &seq[0];
      byte_level = &seq[1];
    }
  }
  if (byte_level == nullptr) return refuse("is not [Split, ByteLevel] or ByteLevel");
  if (!no_prefix_space(*byte_level)) return refuse("adds a prefix space");
  if (split == nullptr) {
    if (!BoolOr(*byte_level, "use_regex", true)) return refuse("splits nothing (use_regex false)");
    return std::string("gpt-2");
  }
  const json& p = split->value("pattern", json());
  const bool qwen = p.is_object() && p.contains("Regex") && p["Regex"].is_string() &&
                    p["Regex"].get<std::string>() == kQwen2Pattern &&
                    split->value("behavior", "") == "Isolated" && !BoolOr(*split, "invert", false);
  if (!qwen) return refuse("splits with a regex other than Qwen2's");
  return std::string("qwen2");
}

// "a b" from a merges entry ("a b", or ["a", "b"] with spaces inside a part written U+0120).
std::string MergeText(const json& m) {
  if (m.is_string()) return m.get<std::string>();
  const std::string g = "\xC4\xA0";  // U+0120
  return absl::StrCat(absl::StrReplaceAll(m[0].get<std::string>(), {{" ", g}}), " ",
                      absl::StrReplaceAll(m[1].get<std::string>(), {{" ", g}}));
}

// What a source says about its tokenizer, ids resolved.
struct TokenizerFacts {
  std::string name, json, chat_template;
  TokenizerPolicy policy;
  std::unique_ptr<Tokenizer> tokenizer;  // built from name and json
  int bos = -1, eos = -1;                // set by the caller
};

// The facts with the tokenizer built and the policy's token ids resolved by it.
absl::StatusOr<TokenizerFacts> Facts(std::string name, std::string json, std::string chat_template,
                                     TokenizerPolicy policy) {
  TokenizerFacts f;
  f.name = std::move(name);
  f.json = std::move(json);
  f.chat_template = std::move(chat_template);
  f.policy = std::move(policy);
  ST_ASSIGN_OR_RETURN(f.tokenizer, MakeTokenizer(f.name, f.json));
  f.policy.ResolveIds(*f.tokenizer);
  return f;
}

// ---- the layout check and the metadata

absl::Status AddMetadata(GgufWriter& w, const ModelConfig& cfg, const std::string& name,
                         uint32_t file_type, const GgufVocab& vocab, const TokenizerFacts& tok) {
  auto u32 = [&w](const std::string& key, int64_t v) {
    return w.AddMetadata(key, GgufValue::U32(static_cast<uint32_t>(v)));
  };
  auto f32 = [&w](const std::string& key, double v) {
    return w.AddMetadata(key, GgufValue::F32(static_cast<float>(v)));
  };
  ST_RETURN_IF_ERROR(w.AddMetadata("general.architecture", GgufValue::String(kGgufArch)));
  ST_RETURN_IF_ERROR(w.AddMetadata("general.type", GgufValue::String("model")));
  ST_RETURN_IF_ERROR(
      w.AddMetadata("general.name", GgufValue::String(name.empty() ? kGgufArch : name)));
  ST_RETURN_IF_ERROR(u32(GgufArchKey("block_count"), cfg.num_hidden_layers));
  ST_RETURN_IF_ERROR(u32(GgufArchKey("context_length"), cfg.max_position_embeddings));
  ST_RETURN_IF_ERROR(u32(GgufArchKey("embedding_length"), cfg.hidden_size));
  ST_RETURN_IF_ERROR(u32(GgufArchKey("feed_forward_length"), cfg.moe_ffn_hidden_size));
  ST_RETURN_IF_ERROR(u32(GgufArchKey("attention.head_count"), cfg.num_attention_heads));
  ST_RETURN_IF_ERROR(u32(GgufArchKey("attention.head_count_kv"), cfg.num_key_value_heads));
  ST_RETURN_IF_ERROR(f32(GgufArchKey("rope.freq_base"), cfg.rope_theta));
  ST_RETURN_IF_ERROR(f32(GgufArchKey("attention.layer_norm_rms_epsilon"), cfg.rms_norm_eps));
  ST_RETURN_IF_ERROR(u32(GgufArchKey("attention.key_length"), cfg.head_dim));
  ST_RETURN_IF_ERROR(u32(GgufArchKey("attention.value_length"), cfg.head_dim));
  ST_RETURN_IF_ERROR(u32("general.file_type", file_type));
  ST_RETURN_IF_ERROR(u32(GgufArchKey("expert_count"), cfg.moe_num_primary_experts));
  ST_RETURN_IF_ERROR(u32(GgufArchKey("expert_used_count"), cfg.moe_num_active_primary_experts));
  ST_RETURN_IF_ERROR(u32(GgufArchKey("expert_feed_forward_length"), cfg.moe_ffn_hidden_size));
  ST_RETURN_IF_ERROR(u32(GgufArchKey("expert_gating_func"), cfg.moe_primary_router_apply_softmax
                                                                ? kGgufGatingSoftmax
                                                                : kGgufGatingSigmoid));
  const bool slides = std::find(cfg.layer_uses_sliding.begin(), cfg.layer_uses_sliding.end(),
                                true) != cfg.layer_uses_sliding.end();
  if (slides)
    ST_RETURN_IF_ERROR(u32(GgufArchKey("attention.sliding_window"), cfg.sliding_window_size));
  ST_RETURN_IF_ERROR(u32("general.quantization_version", kQuantizationVersion));

  ST_RETURN_IF_ERROR(w.AddMetadata("tokenizer.ggml.model", GgufValue::String("gpt2")));
  ST_RETURN_IF_ERROR(w.AddMetadata("tokenizer.ggml.pre", GgufValue::String(vocab.pre)));
  ST_RETURN_IF_ERROR(w.AddMetadata("tokenizer.ggml.tokens", GgufValue::Array(vocab.tokens)));
  ST_RETURN_IF_ERROR(w.AddMetadata("tokenizer.ggml.token_type", GgufValue::Array(vocab.types)));
  // Written even when empty: llama.cpp refuses a gpt2 vocabulary without the key.
  ST_RETURN_IF_ERROR(w.AddMetadata("tokenizer.ggml.merges", GgufValue::Array(vocab.merges)));
  const std::pair<const char*, int> ids[] = {
      {"tokenizer.ggml.bos_token_id", tok.bos},
      {"tokenizer.ggml.eos_token_id", tok.eos},
      {"tokenizer.ggml.unknown_token_id", tok.policy.unk_token_id},
      {"tokenizer.ggml.padding_token_id", tok.policy.pad_token_id}};
  for (const auto& [key, id] : ids) {
    if (id >= 0 && id < cfg.vocab_size) ST_RETURN_IF_ERROR(u32(key, id));
  }
  ST_RETURN_IF_ERROR(
      w.AddMetadata("tokenizer.ggml.add_bos_token", GgufValue::Bool(tok.policy.add_bos_token)));
  ST_RETURN_IF_ERROR(
      w.AddMetadata("tokenizer.ggml.add_eos_token", GgufValue::Bool(tok.policy.add_eos_token)));
  if (!tok.chat_template.empty()) {
    ST_RETURN_IF_ERROR(
        w.AddMetadata("tokenizer.chat_template", GgufValue::String(tok.chat_template)));
  }
  return absl::OkStatus();
}

// ---- the tensor plan

// One GGUF tensor: a resident tensor of the registry, or one part of a layer's experts stacked.
struct Planned {
  std::string name;  // GGUF name, "blk.3.ffn_up_exps.weight"
  TensorId id;       // stacked: the layer's expert 0 of that part
  bool stacked = false;
  DType dtype = DType::kF32;
  std::vector<int64_t> ne;  // ggml order
  uint64_t nbytes = 0;
};

// The GGUF tensors of `cfg` in file order (token_embd, per layer attention, norms, router and
// the three stacked expert tensors, output_norm, output); `type_of(id)` gives each one's type
// (for stacked tensors: id is the layer's expert 0 of the part).
std::vector<Planned> PlanTensors(const ModelConfig& cfg,
                                 const std::function<DType(const TensorId&)>& type_of) {
  std::vector<Planned> plan;
  const int64_t e = cfg.moe_num_primary_experts;
  ForEachTensor(cfg, [&](const TensorId& id) {
    if (id.is_expert() && id.expert != 0) return true;
    Planned p;
    p.id = id;
    p.stacked = id.is_expert();
    p.dtype = type_of(id);
    std::vector<int64_t> rows_cols = p.stacked ? id.HfShape(cfg) : id.Shape(cfg);
    p.ne.assign(rows_cols.rbegin(), rows_cols.rend());  // [rows, cols] -> ne [cols, rows]
    if (p.stacked) {
      const char* stacked_name = id.part() == ExpertPart::kGate ? "ffn_gate_exps"
                                 : id.part() == ExpertPart::kUp ? "ffn_up_exps"
                                                                : "ffn_down_exps";
      p.name = absl::StrCat("blk.", id.layer, ".", stacked_name, ".weight");
      p.ne.push_back(e);
    } else {
      p.name = id.FileName() + ".weight";
    }
    int64_t rows = 1;
    for (size_t i = 1; i < p.ne.size(); ++i) rows *= p.ne[i];
    p.nbytes = static_cast<uint64_t>(DTypeBytes(p.dtype, p.ne[0]) * rows);
    plan.push_back(std::move(p));
    return true;
  });
  return plan;
}

// Quantizes rows x cols floats to `t` (rows split over the cores).
std::vector<uint8_t> EncodeRows(const float* x, int64_t rows, int64_t cols, DType t) {
  const int64_t row_bytes = DTypeBytes(t, cols);
  ST_CHECK(row_bytes > 0) << "row of " << cols << " elements is not a whole number of blocks";
  std::vector<uint8_t> out(static_cast<size_t>(rows * row_bytes));
  const int ranges = ParallelRanges(rows, std::max<int64_t>(1, (int64_t{1} << 16) / cols));
  ParallelFor(rows, ranges, [&](int, int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) QuantizeRow(t, x + r * cols, cols, out.data() + r * row_bytes);
  });
  return out;
}

// Row-major [rows, cols] elements of T -> [cols, rows], in 32 x 32 tiles.
template <typename T>
void TransposeInto(const T* x, int64_t rows, int64_t cols, T* out) {
  constexpr int64_t kTile = 32;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      for (int64_t c = c0; c < std::min(cols, c0 + kTile); ++c) {
        for (int64_t r = r0; r < std::min(rows, r0 + kTile); ++r)
          out[c * rows + r] = x[r * cols + c];
      }
    }
  }
}

// Writes the plan: metadata, infos, then each tensor's bytes from `write_tensor`, which calls
// `emit` with consecutive chunks of it; fills in `report`'s counts, file type and pre.
using Emit = std::function<absl::Status(const void* data, size_t size)>;
absl::Status WritePlan(const std::string& path, const ModelConfig& cfg,
                       const GgufExportOptions& options, const TokenizerFacts& tok,
                       const std::vector<Planned>& plan, DType expert_type,
                       const std::function<absl::Status(const Planned&, const Emit&)>& write_tensor,
                       GgufExportReport* report) {
  const auto start = std::chrono::steady_clock::now();
  ST_ASSIGN_OR_RETURN(GgufVocab vocab, GgufVocabFor(tok.name, tok.json, cfg.vocab_size));
  report->file_type = FileTypeOf(expert_type);
  report->pre = vocab.pre;
  ST_ASSIGN_OR_RETURN(GgufWriter w, GgufWriter::Create(path));
  ST_RETURN_IF_ERROR(AddMetadata(w, cfg, options.name, report->file_type, vocab, tok));
  int64_t total_bytes = 0;
  for (const Planned& p : plan) {
    ST_RETURN_IF_ERROR(w.AddTensorInfo(p.name, GgmlTypeForDType(p.dtype), p.ne, p.nbytes));
    total_bytes += static_cast<int64_t>(p.nbytes);
  }
  int64_t done = 0, written = 0;
  for (const Planned& p : plan) {
    uint64_t got = 0;
    const Emit emit = [&](const void* data, size_t size) {
      got += size;
      return w.WriteTensorData(p.name, data, size);
    };
    ST_RETURN_IF_ERROR(write_tensor(p, emit));
    ST_CHECK(got == p.nbytes) << p.name << ": wrote " << got << " bytes of " << p.nbytes;
    written += static_cast<int64_t>(got);
    if (options.progress) {
      options.progress(++done, static_cast<int64_t>(plan.size()), written, total_bytes);
    }
  }
  ST_RETURN_IF_ERROR(w.Finish());
  ST_ASSIGN_OR_RETURN(GgufFile back, GgufFile::Open(path));
  report->tensors = static_cast<int64_t>(plan.size());
  report->bytes = back.file_size();
  report->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return absl::OkStatus();
}

// The layout check as an export applies it: an error unless `force`, else a warning.
absl::Status CheckLayout(const ModelConfig& cfg, bool force, GgufExportReport* report) {
  const absl::Status s = CheckLlamaCppLayout(cfg);
  if (s.ok()) return s;
  if (!force) {
    return absl::FailedPreconditionError(
        absl::StrCat(s.message(), "; --force writes the GGUF anyway"));
  }
  report->warnings.push_back(absl::StrCat(s.message(), " (written anyway: --force)"));
  return absl::OkStatus();
}

bool IsNormOrRouter(const TensorId& id) {
  return id.cls() == TensorClass::kNorm || id.cls() == TensorClass::kRouter;
}

}  // namespace

absl::Status CheckLlamaCppLayout(const ModelConfig& cfg) {
  constexpr char kDiffers[] = "llama.cpp would compute a different model from this GGUF";
  if (cfg.moe_num_primary_experts > kLlamaCppMaxExperts) {
    return absl::FailedPreconditionError(absl::StrCat("the model has ", cfg.moe_num_primary_experts,
                                                      " experts; llama.cpp loads at most ",
                                                      kLlamaCppMaxExperts));
  }
  const int layers = cfg.num_hidden_layers;
  const bool slides = std::find(cfg.layer_uses_sliding.begin(), cfg.layer_uses_sliding.end(),
                                true) != cfg.layer_uses_sliding.end();
  for (int l = 0; l < layers; ++l) {
    const bool rope = cfg.layer_uses_rope[l], sliding = cfg.layer_uses_sliding[l];
    if (!slides && !rope) {
      return absl::FailedPreconditionError(absl::StrCat(
          "layer ", l,
          " is NoPE, but in a GGUF without sliding-window layers llama.cpp applies RoPE on every "
          "layer (it has no per-layer RoPE setting); ",
          kDiffers));
    }
    if (slides && (rope != (l % kLlamaCppNoRopeLayerStep != 0) ||
                   sliding != (l % kLlamaCppNoRopeLayerStep != 0))) {
      return absl::FailedPreconditionError(absl::StrCat(
          "layer ", l, " is ", rope ? "RoPE" : "NoPE", " with ",
          sliding ? "a sliding window" : "full attention",
          ", but when some layers slide llama.cpp fixes the pattern: layers il % 4 == 0 NoPE with "
          "full attention, every other layer RoPE with a sliding window, so layer ",
          l, " would be ",
          l % kLlamaCppNoRopeLayerStep == 0 ? "NoPE with full attention"
                                            : "RoPE with a sliding window",
          "; ", kDiffers));
    }
  }
  if (slides && cfg.sliding_window_size != kLlamaCppSlidingWindow) {
    return absl::FailedPreconditionError(
        absl::StrCat("the sliding window is ", cfg.sliding_window_size,
                     " tokens, but llama.cpp ignores attention.sliding_window and always uses ",
                     kLlamaCppSlidingWindow, "; ", kDiffers));
  }
  return absl::OkStatus();
}

absl::StatusOr<GgufVocab> GgufVocabFor(const std::string& tokenizer_name,
                                       const std::string& tokenizer_json, int vocab_size) {
  std::string text;
  if (tokenizer_name == "byte") {
    text = ByteLevelTokenizerJson();
  } else if (tokenizer_name == "bpe") {
    text = tokenizer_json;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer '", tokenizer_name, "' has no GGUF form (only 'byte' and 'bpe' have one)"));
  }
  // Our loader's checks first: whatever it refuses is not a byte-level BPE.
  if (absl::StatusOr<std::unique_ptr<Tokenizer>> tok = MakeTokenizer("bpe", text); !tok.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the tokenizer.json does not load: ", tok.status().message()));
  }
  const json j = json::parse(text);  // valid: MakeTokenizer parsed it
  const json& model = j["model"];
  if (BoolOr(model, "ignore_merges", false)) {
    return absl::InvalidArgumentError(
        "the tokenizer's BPE has ignore_merges: true, which llama.cpp's qwen2 / gpt-2 "
        "tokenizers do not do (they would merge where it looks words up)");
  }
  GgufVocab v;
  ST_ASSIGN_OR_RETURN(v.pre, PreName(j.value("pre_tokenizer", json())));
  v.tokens.resize(static_cast<size_t>(vocab_size));
  v.types.assign(static_cast<size_t>(vocab_size), kGgufTokenUnused);
  auto place = [&](int64_t id, const std::string& token, int32_t type) -> absl::Status {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("the tokenizer has token id ", id, " ('",
                                                     token, "'), past the model's vocab_size ",
                                                     vocab_size));
    }
    v.tokens[id] = token;
    v.types[id] = type;
    return absl::OkStatus();
  };
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    ST_RETURN_IF_ERROR(place(it.value().get<int64_t>(), it.key(), kGgufTokenNormal));
  }
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const json& a : j["added_tokens"]) {
      std::string content = a["content"].get<std::string>();
      const bool control = BoolOr(a, "special", false) || LooksSpecial(content);
      // The converter reads "▁" (U+2581) in a user-defined token as a space.
      if (!control) content = absl::StrReplaceAll(content, {{"\xE2\x96\x81", " "}});
      ST_RETURN_IF_ERROR(place(a["id"].get<int64_t>(), content,
                               control ? kGgufTokenControl : kGgufTokenUserDefined));
    }
  }
  for (int id = 0; id < vocab_size; ++id) {
    if (v.types[id] == kGgufTokenUnused) v.tokens[id] = absl::StrCat("[PAD", id, "]");
  }
  for (const json& m : model["merges"]) v.merges.push_back(MergeText(m));
  return v;
}

absl::StatusOr<GgufExportReport> ExportGguf(const TensorSource& src, const std::string& path,
                                            const GgufExportOptions& options) {
  if (options.recipe.name == "keep") {
    return absl::InvalidArgumentError(
        "recipe keep (the source's own types) is not available for a GGUF export; choose f32, "
        "f16, q8_0, q4_0 or q4_0_pure");
  }
  ST_RETURN_IF_ERROR(CheckTensorsMatchConfig(src));
  const ModelConfig& cfg = src.config();
  GgufExportReport report;
  ST_RETURN_IF_ERROR(CheckLayout(cfg, options.force, &report));
  const ExportRecipe& recipe = options.recipe;

  ST_ASSIGN_OR_RETURN(TokenizerFacts tok, Facts(src.tokenizer_name(), src.tokenizer_json(),
                                                src.chat_template(), src.tokenizer_policy()));
  tok.bos = tok.policy.bos_token_id >= 0 ? tok.policy.bos_token_id : cfg.bos_token_id;
  const std::vector<int> gen_eos = src.generation_defaults().eos_token_id;
  tok.eos = tok.policy.eos_token_id >= 0 ? tok.policy.eos_token_id
            : !cfg.eos_token_id.empty()  ? cfg.eos_token_id[0]
            : !gen_eos.empty()           ? gen_eos[0]
                                         : tok.tokenizer->eos_id();

  auto type_of = [&](const TensorId& id) {
    if (IsNormOrRouter(id)) return DType::kF32;
    DType want = recipe.attention;
    switch (id.cls()) {
      case TensorClass::kEmbedding:
        want = recipe.embedding;
        break;
      case TensorClass::kLmHead:
        want = recipe.lm_head;
        break;
      case TensorClass::kExpert:
        want = recipe.experts;
        break;
      default:
        break;
    }
    const int64_t cols = id.HfShape(cfg).back();  // the GGUF row: Hugging Face's in-features
    return cols % DTypeBlockElems(want) == 0 ? want : DType::kF16;
  };
  const std::vector<Planned> plan = PlanTensors(cfg, type_of);
  auto read = [&src](const TensorId& id, int64_t elements) -> absl::StatusOr<std::vector<float>> {
    ST_ASSIGN_OR_RETURN(std::vector<float> x, src.ReadF32(id.HfName()));
    if (static_cast<int64_t>(x.size()) != elements) {
      return absl::DataLossError(absl::StrCat(src.description(), ": tensor '", id.HfName(),
                                              "' read ", x.size(), " values, expected ", elements));
    }
    return x;
  };
  auto write_tensor = [&](const Planned& p, const Emit& emit) -> absl::Status {
    const int64_t cols = p.ne[0];
    const int64_t rows = p.ne.size() > 1 ? p.ne[1] : 1;
    const int count = p.stacked ? cfg.moe_num_primary_experts : 1;
    for (int e = 0; e < count; ++e) {
      const TensorId id = p.stacked ? TensorId::Expert(p.id.layer, e, p.id.part()) : p.id;
      ST_ASSIGN_OR_RETURN(std::vector<float> x, read(id, rows * cols));
      const std::vector<uint8_t> bytes = EncodeRows(x.data(), rows, cols, p.dtype);
      ST_RETURN_IF_ERROR(emit(bytes.data(), bytes.size()));
    }
    return absl::OkStatus();
  };
  const DType experts = type_of(TensorId::Expert(0, 0, ExpertPart::kGate));
  ST_RETURN_IF_ERROR(WritePlan(path, cfg, options, tok, plan, experts, write_tensor, &report));
  return report;
}

absl::StatusOr<GgufExportReport> ExportGgufFromModelFile(const ModelFile& file,
                                                         const std::string& path,
                                                         const GgufExportOptions& options) {
  const ModelConfig& cfg = file.config();
  GgufExportReport report;
  ST_RETURN_IF_ERROR(CheckLayout(cfg, options.force, &report));
  if (!file.experts_in_memory()) {
    return absl::FailedPreconditionError(
        "the model file was opened without its experts in memory; open it whole to export it");
  }
  ST_ASSIGN_OR_RETURN(TokenizerFacts tok, Facts(file.tokenizer_name(), file.tokenizer_json(),
                                                file.chat_template(), file.tokenizer_policy()));
  tok.bos = static_cast<int>(file.bos_token_id());
  tok.eos = tok.policy.eos_token_id >= 0    ? tok.policy.eos_token_id
            : !file.eos_token_ids().empty() ? static_cast<int>(file.eos_token_ids()[0])
                                            : tok.tokenizer->eos_id();

  // The stored tensor of `id` (an expert part through its extent).
  auto stored = [&file](const TensorId& id) -> absl::StatusOr<const TensorInfo*> {
    if (!id.is_expert()) {
      const TensorInfo* info = file.Find(id.FileName());
      if (info == nullptr) return absl::NotFoundError(absl::StrCat("no tensor ", id.FileName()));
      return info;
    }
    ST_ASSIGN_OR_RETURN(ExpertExtent x, file.GetExpertExtent(id.layer, id.expert));
    return id.part() == ExpertPart::kGate ? x.gate : id.part() == ExpertPart::kUp ? x.up : x.down_t;
  };
  // A layer's experts are stacked into one tensor of one type: they must agree.
  const int64_t f = cfg.moe_ffn_hidden_size;
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    for (const ExpertPart part : {ExpertPart::kGate, ExpertPart::kUp, ExpertPart::kDownT}) {
      ST_ASSIGN_OR_RETURN(const TensorInfo* first, stored(TensorId::Expert(l, 0, part)));
      for (int e = 1; e < cfg.moe_num_primary_experts; ++e) {
        ST_ASSIGN_OR_RETURN(const TensorInfo* info, stored(TensorId::Expert(l, e, part)));
        if (info->dtype != first->dtype) {
          return absl::InvalidArgumentError(
              absl::StrCat("expert ", e, " of layer ", l, " stores ", ExpertPartName(part), " as ",
                           DTypeName(info->dtype), " but expert 0 as ", DTypeName(first->dtype),
                           "; a GGUF stacks a layer's experts into one tensor of one type"));
        }
      }
    }
  }
  absl::Status plan_status;
  auto type_of = [&](const TensorId& id) {
    absl::StatusOr<const TensorInfo*> info = stored(id);
    if (!info.ok()) {
      plan_status.Update(info.status());
      return DType::kF32;
    }
    const DType t = (*info)->dtype;
    if (IsNormOrRouter(id)) return DType::kF32;
    // Back to [H, F]: rows of F elements.
    if (id.is_expert() && id.part() == ExpertPart::kDownT && IsBlockType(t) &&
        f % DTypeBlockElems(t) != 0) {
      return DType::kF32;
    }
    return t;
  };
  const std::vector<Planned> plan = PlanTensors(cfg, type_of);
  ST_RETURN_IF_ERROR(plan_status);

  ClassError& err = report.requantized_down;
  std::vector<float> stored_values, transposed, back;
  auto write_down = [&](const TensorInfo& info, DType out_type, const Emit& emit) -> absl::Status {
    const int64_t rows = info.dims[0], cols = info.dims[1];  // [F, H]
    const uint8_t* data = file.TensorData(info);
    if (!IsBlockType(info.dtype) && out_type == info.dtype) {  // exact: move the elements
      std::vector<uint8_t> out(info.size);
      if (DTypeBytes(info.dtype, 1) == 4) {
        TransposeInto(reinterpret_cast<const uint32_t*>(data), rows, cols,
                      reinterpret_cast<uint32_t*>(out.data()));
      } else {
        TransposeInto(reinterpret_cast<const uint16_t*>(data), rows, cols,
                      reinterpret_cast<uint16_t*>(out.data()));
      }
      return emit(out.data(), out.size());
    }
    stored_values.resize(static_cast<size_t>(rows * cols));
    const int64_t in_row = DTypeBytes(info.dtype, cols);
    for (int64_t r = 0; r < rows; ++r) {
      DequantizeRow(info.dtype, data + r * in_row, cols, stored_values.data() + r * cols);
    }
    transposed.resize(stored_values.size());
    TransposeInto(stored_values.data(), rows, cols, transposed.data());
    const std::vector<uint8_t> out = EncodeRows(transposed.data(), cols, rows, out_type);
    back.resize(transposed.size());
    const int64_t out_row = DTypeBytes(out_type, rows);
    for (int64_t r = 0; r < cols; ++r) {
      DequantizeRow(out_type, out.data() + r * out_row, rows, back.data() + r * rows);
    }
    for (size_t i = 0; i < back.size(); ++i) {
      const double v = transposed[i], d = v - back[i];
      err.max_abs_error = std::max(err.max_abs_error, std::abs(d));
      err.sum_sq_error += d * d;
      err.sum_sq_value += v * v;
    }
    err.dtype = out_type;
    err.tensors += 1;
    err.elements += static_cast<int64_t>(back.size());
    return emit(out.data(), out.size());
  };
  auto write_tensor = [&](const Planned& p, const Emit& emit) -> absl::Status {
    const int count = p.stacked ? cfg.moe_num_primary_experts : 1;
    for (int e = 0; e < count; ++e) {
      const TensorId id = p.stacked ? TensorId::Expert(p.id.layer, e, p.id.part()) : p.id;
      ST_ASSIGN_OR_RETURN(const TensorInfo* info, stored(id));
      if (id.is_expert() && id.part() == ExpertPart::kDownT) {
        ST_RETURN_IF_ERROR(write_down(*info, p.dtype, emit));
      } else if (p.dtype != info->dtype) {  // a norm or router stored in another type
        std::vector<float> x(static_cast<size_t>(info->num_elements()));
        const int64_t cols = info->dims.back(), rows = info->num_elements() / cols;
        const int64_t row_bytes = DTypeBytes(info->dtype, cols);
        for (int64_t r = 0; r < rows; ++r) {
          DequantizeRow(info->dtype, file.TensorData(*info) + r * row_bytes, cols,
                        x.data() + r * cols);
        }
        ST_RETURN_IF_ERROR(emit(x.data(), x.size() * sizeof(float)));
      } else {
        ST_RETURN_IF_ERROR(emit(file.TensorData(*info), info->size));
      }
    }
    return absl::OkStatus();
  };
  ST_ASSIGN_OR_RETURN(const TensorInfo* gate0, stored(TensorId::Expert(0, 0, ExpertPart::kGate)));
  const DType experts = gate0->dtype;
  ST_RETURN_IF_ERROR(WritePlan(path, cfg, options, tok, plan, experts, write_tensor, &report));
  if (report.requantized_down.tensors > 0) {
    report.warnings.push_back(
        absl::StrCat("the expert down matrices are stored transposed in the model file; as ",
                     DTypeName(report.requantized_down.dtype),
                     " they were dequantised, transposed and quantised again (relative RMS change ",
                     report.requantized_down.relative_rms(), ", max |change| ",
                     report.requantized_down.max_abs_error,
                     "); export from the checkpoint instead for the direct quantisation"));
  }
  return report;
}

}  // namespace st
