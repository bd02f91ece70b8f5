// GGUF import (OpenGgufSource, TokenizerFromGguf, the exporter's "keep" recipe): GGUF files laid
// out as llama.cpp's converter writes a SmallThinker, imported and checked against the weights
// and tokenizer they came from.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "infer/export/exporter.h"
#include "infer/export/gguf_export.h"
#include "infer/export/random_source.h"
#include "infer/export/tensor_source.h"
#include "infer/format/gguf.h"
#include "infer/format/model_file.h"
#include "infer/format/tensors.h"
#include "infer/quant/codec.h"
#include "infer/quant/ggml_blocks.h"
#include "infer/runtime/engine.h"
#include "infer/tokenizer/bpe.h"
#include "infer/tokenizer/tokenizer.h"
#include "model/check.h"
#include "nlohmann/json.hpp"
#include "tests/test_tokenizers.h"
#include "tests/test_util.h"

namespace st {
namespace {

using json = nlohmann::json;
using test_util::Contains;
using test_util::FileContents;
using test_util::TestDir;

constexpr char kQwenTokenizer[] = ST_BINARY_DIR "/tokenizers/qwen3/tokenizer.json";
constexpr char kQwenTokenizerConfig[] = ST_BINARY_DIR "/tokenizers/qwen3/tokenizer_config.json";

// ---- GGUF files as llama.cpp's converter writes them

struct GTensor {
  std::string name;
  GgmlType type = GgmlType::kF32;
  std::vector<int64_t> ne;  // ggml order
  std::string bytes;
};

struct GModel {
  std::vector<std::pair<std::string, GgufValue>> metadata;
  std::vector<GTensor> tensors;

  void Set(const std::string& key, GgufValue v) {
    for (auto& [k, old] : metadata) {
      if (k == key) {
        old = std::move(v);
        return;
      }
    }
    metadata.emplace_back(key, std::move(v));
  }
  void Erase(const std::string& key) {
    for (size_t i = 0; i < metadata.size(); ++i) {
      if (metadata[i].first == key) metadata.erase(metadata.begin() + i);
    }
  }
  GTensor* Find(const std::string& name) {
    for (GTensor& t : tensors) {
      if (t.name == name) return &t;
    }
    return nullptr;
  }
};

// A tokenizer's GGUF keys: tokens, token_type (llama.cpp's types) and merges ("a b").
struct GVocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges;
};

// The converter's rule (conversion/base.py): an added token that is special or looks special
// (<|...|>) is CONTROL (3), another added token USER_DEFINED (4), a vocab entry NORMAL (1), a hole
// UNUSED (5) named [PAD<id>]. `vocab_size` pads the list as config.json's vocab_size does.
GVocab VocabFromTokenizerJson(const std::string& text, int vocab_size) {
  const json j = json::parse(text);
  GVocab v;
  v.tokens.assign(vocab_size, "");
  v.types.assign(vocab_size, 5);
  for (auto it = j["model"]["vocab"].begin(); it != j["model"]["vocab"].end(); ++it) {
    const int id = it.value().get<int>();
    v.tokens[id] = it.key();
    v.types[id] = 1;
  }
  for (const json& a : j["added_tokens"]) {
    const int id = a["id"].get<int>();
    const std::string content = a["content"].get<std::string>();
    const bool looks_special = content.size() > 4 && content.rfind("<|", 0) == 0 &&
                               content.substr(content.size() - 2) == "|>";
    v.tokens[id] = content;
    v.types[id] = a["special"].get<bool>() || looks_special ? 3 : 4;
  }
  for (int id = 0; id < vocab_size; ++id) {
    if (v.types[id] == 5) v.tokens[id] = absl::StrCat("[PAD", id, "]");
  }
  for (const json& m : j["model"]["merges"]) {
    v.merges.push_back(m.is_string()
                           ? m.get<std::string>()
                           : absl::StrCat(m[0].get<std::string>(), " ", m[1].get<std::string>()));
  }
  return v;
}

// A small byte-level BPE: the 256 byte tokens, three merges ("Ġ t", "h e", "Ġt he"), the chat
// specials and <think> (user-defined), unused fillers up to `vocab_size`.
std::string SyntheticTokenizerJson() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[BytesToByteLevel(std::string(1, static_cast<char>(b)))] = b;
  vocab["Ġt"] = 256;
  vocab["he"] = 257;
  vocab["Ġthe"] = 258;
  json added = json::array();
  const std::pair<const char*, bool> specials[] = {
      {"<|endoftext|>", true}, {"<|im_start|>", true}, {"<|im_end|>", true}, {"<think>", false}};
  int id = 259;
  for (const auto& [content, special] : specials) {
    added.push_back({{"id", id++},
                     {"content", content},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", special}});
  }
  json j = json::parse(test_util::MinimalTokenizerJson());
  j["added_tokens"] = added;
  j["model"]["vocab"] = vocab;
  j["model"]["merges"] = json::array({"Ġ t", "h e", "Ġt he"});
  return j.dump();
}

// Seeded random blocks of a ggml type with small finite scales (what the K-quants hold is
// irrelevant here: the import's reference is their dequantised value).
std::string RandomBlocks(GgmlType t, int64_t n, uint32_t seed) {
  const GgmlTypeInfo* info = FindGgmlType(static_cast<uint32_t>(t));
  const int64_t blocks = n / info->block_elems;
  std::string out(static_cast<size_t>(blocks * info->block_bytes), '\0');
  std::mt19937 rng(seed);
  for (char& c : out) c = static_cast<char>(rng() & 0xFF);
  // Offsets of the f16 scale fields in each block.
  std::vector<int> f16;
  switch (t) {
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_1:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
      f16 = {0, 2};
      break;
    case GgmlType::kQ5_0:
      f16 = {0};
      break;
    case GgmlType::kQ2_K:
      f16 = {80, 82};
      break;
    case GgmlType::kQ3_K:
      f16 = {108};
      break;
    case GgmlType::kQ6_K:
      f16 = {208};
      break;
    default:
      ADD_FAILURE() << "RandomBlocks: unsupported type " << info->name;
  }
  for (int64_t b = 0; b < blocks; ++b) {
    for (size_t i = 0; i < f16.size(); ++i) {
      const uint16_t h = F32ToF16(i == 0 ? 0.002f : 0.0005f);
      std::memcpy(&out[b * info->block_bytes + f16[i]], &h, 2);
    }
  }
  return out;
}

// `x` (rows of `row` floats) in ggml type `t`: encoded for the float types, Q8_0 and Q4_0,
// random blocks for the others.
std::string EncodeGgml(GgmlType t, const std::vector<float>& x, int64_t row, uint32_t seed) {
  const int64_t n = static_cast<int64_t>(x.size());
  const std::optional<DType> ours = DTypeOfGgml(t);
  if (!ours) return RandomBlocks(t, n, seed);
  const int64_t row_bytes = DTypeBytes(*ours, row);
  std::string out(static_cast<size_t>(n / row * row_bytes), '\0');
  for (int64_t r = 0; r < n / row; ++r) {
    QuantizeRow(*ours, x.data() + r * row, row, &out[r * row_bytes]);
  }
  return out;
}

std::vector<float> Concat(const std::vector<std::vector<float>>& parts) {
  std::vector<float> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

using TypeOf = std::function<GgmlType(const std::string& gguf_name)>;

// Norms and routers F32 (the converter and llama-quantize never quantise them), every other
// matrix `t`.
TypeOf AllMatrices(GgmlType t) {
  return [t](const std::string& name) {
    const bool f32 =
        name.find("_norm") != std::string::npos || name.find("ffn_gate_inp") != std::string::npos;
    return f32 ? GgmlType::kF32 : t;
  };
}

// The GGUF llama.cpp's converter writes for the weights of `w` (its config and tensors), the
// tensor types `type_of` gives, and the tokenizer `tokenizer_json` (vocab padded to the config's
// vocab_size).
GModel ConverterGguf(const TensorSource& w, const TypeOf& type_of,
                     const std::string& tokenizer_json) {
  const ModelConfig& c = w.config();
  GModel m;
  auto u32 = [](int64_t v) { return GgufValue::U32(static_cast<uint32_t>(v)); };
  const std::string a = "smallthinker.";
  m.Set("general.architecture", GgufValue::String("smallthinker"));
  m.Set("general.type", GgufValue::String("model"));
  m.Set("general.name", GgufValue::String("Tiny SmallThinker"));
  m.Set(a + "block_count", u32(c.num_hidden_layers));
  m.Set(a + "context_length", u32(c.max_position_embeddings));
  m.Set(a + "embedding_length", u32(c.hidden_size));
  m.Set(a + "attention.head_count", u32(c.num_attention_heads));
  m.Set(a + "attention.head_count_kv", u32(c.num_key_value_heads));
  m.Set(a + "rope.freq_base", GgufValue::F32(static_cast<float>(c.rope_theta)));
  m.Set(a + "attention.layer_norm_rms_epsilon", GgufValue::F32(static_cast<float>(c.rms_norm_eps)));
  m.Set(a + "attention.key_length", u32(c.head_dim));
  m.Set(a + "attention.value_length", u32(c.head_dim));
  m.Set("general.file_type", GgufValue::U32(0));
  m.Set(a + "expert_count", u32(c.moe_num_primary_experts));
  m.Set(a + "expert_used_count", u32(c.moe_num_active_primary_experts));
  m.Set(a + "expert_feed_forward_length", u32(c.moe_ffn_hidden_size));
  m.Set(a + "feed_forward_length", u32(c.moe_ffn_hidden_size));
  m.Set(a + "expert_gating_func", u32(c.moe_primary_router_apply_softmax ? 1 : 2));
  bool sliding = false;
  for (int s : c.sliding_window_layout) sliding |= s != 0;
  if (sliding) m.Set(a + "attention.sliding_window", u32(c.sliding_window_size));
  m.Set("general.quantization_version", GgufValue::U32(2));
  const GVocab v = VocabFromTokenizerJson(tokenizer_json, c.vocab_size);
  m.Set("tokenizer.ggml.model", GgufValue::String("gpt2"));
  m.Set("tokenizer.ggml.pre", GgufValue::String("qwen2"));
  m.Set("tokenizer.ggml.tokens", GgufValue::Array(v.tokens));
  m.Set("tokenizer.ggml.token_type", GgufValue::Array(v.types));
  m.Set("tokenizer.ggml.merges", GgufValue::Array(v.merges));
  const auto find = [&](const char* text) {
    for (size_t i = 0; i < v.tokens.size(); ++i) {
      if (v.tokens[i] == text) return static_cast<int64_t>(i);
    }
    return int64_t{-1};
  };
  m.Set("tokenizer.ggml.eos_token_id", u32(find("<|im_end|>")));
  m.Set("tokenizer.ggml.padding_token_id", u32(find("<|endoftext|>")));
  m.Set("tokenizer.ggml.bos_token_id", u32(find("<|endoftext|>")));
  m.Set("tokenizer.ggml.add_bos_token", GgufValue::Bool(false));
  m.Set("tokenizer.chat_template", GgufValue::String("{{ messages }}"));

  uint32_t seed = 1;
  auto add = [&](const std::string& name, const std::vector<float>& x, std::vector<int64_t> ne) {
    const GgmlType t = type_of(name);
    m.tensors.push_back(GTensor{name, t, ne, EncodeGgml(t, x, ne[0], seed++)});
  };
  auto read = [&](const TensorId& id) {
    absl::StatusOr<std::vector<float>> x = w.ReadF32(id.HfName());
    EXPECT_TRUE(x.ok()) << x.status();
    return x.ok() ? *x : std::vector<float>();
  };
  auto reversed = [](std::vector<int64_t> s) {
    std::reverse(s.begin(), s.end());
    return s;
  };
  using TK = TensorKind;
  const TensorId embd = TensorId::Model(TK::kTokenEmbd);
  add("token_embd.weight", read(embd), reversed(embd.HfShape(c)));
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    for (TK k : {TK::kAttnNorm, TK::kAttnQ, TK::kAttnK, TK::kAttnV, TK::kAttnOutput, TK::kFfnNorm,
                 TK::kFfnGateInp}) {
      const TensorId id = TensorId::Layer(k, l);
      add(id.FileName() + ".weight", read(id), reversed(id.HfShape(c)));
    }
    // The converter emits the stacks down, gate, up (conversion/smallthinker.py).
    const std::pair<ExpertPart, const char*> parts[] = {
        {ExpertPart::kDownT, "down"}, {ExpertPart::kGate, "gate"}, {ExpertPart::kUp, "up"}};
    for (const auto& [part, name] : parts) {
      std::vector<std::vector<float>> experts;
      for (int e = 0; e < c.moe_num_primary_experts; ++e) {
        experts.push_back(read(TensorId::Expert(l, e, part)));
      }
      std::vector<int64_t> ne = reversed(TensorId::Expert(l, 0, part).HfShape(c));
      ne.push_back(c.moe_num_primary_experts);
      add(absl::StrCat("blk.", l, ".ffn_", name, "_exps.weight"), Concat(experts), ne);
    }
  }
  const TensorId norm = TensorId::Model(TK::kOutputNorm);
  add("output_norm.weight", read(norm), reversed(norm.HfShape(c)));
  if (!c.tie_word_embeddings) {
    const TensorId out = TensorId::Model(TK::kOutput);
    add("output.weight", read(out), reversed(out.HfShape(c)));
  }
  return m;
}

void WriteGguf(const GModel& m, const std::string& path) {
  absl::StatusOr<GgufWriter> w = GgufWriter::Create(path);
  ASSERT_TRUE(w.ok()) << w.status();
  for (const auto& [k, v] : m.metadata) ASSERT_TRUE(w->AddMetadata(k, v).ok()) << k;
  for (const GTensor& t : m.tensors) {
    const absl::Status s = w->AddTensorInfo(t.name, t.type, t.ne, t.bytes.size());
    ASSERT_TRUE(s.ok()) << s;
  }
  for (const GTensor& t : m.tensors) {
    ASSERT_TRUE(w->WriteTensorData(t.name, t.bytes.data(), t.bytes.size()).ok()) << t.name;
  }
  const absl::Status s = w->Finish();
  ASSERT_TRUE(s.ok()) << s;
}

std::unique_ptr<TensorSource> RandomWeights(const ModelConfig& cfg, uint64_t seed = 7) {
  absl::StatusOr<std::unique_ptr<TensorSource>> src =
      MakeRandomSource(cfg, seed, "bpe", SyntheticTokenizerJson());
  EXPECT_TRUE(src.ok()) << src.status();
  return src.ok() ? *std::move(src) : nullptr;
}

absl::StatusOr<ExportReport> Export(const TensorSource& src, const std::string& recipe,
                                    const std::string& out) {
  ExportOptions opt;
  ST_ASSIGN_OR_RETURN(opt.recipe, RecipePreset(recipe));
  return ExportModel(src, out, opt);
}

// Logits of every position of `tokens`, one Forward at a time.
std::vector<std::vector<float>> Logits(const std::string& model,
                                       const std::vector<int32_t>& tokens) {
  EngineOptions opt;
  opt.threads = 2;
  opt.huge_pages = false;
  absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Load(model, opt);
  EXPECT_TRUE(e.ok()) << e.status();
  std::vector<std::vector<float>> out;
  if (!e.ok()) return out;
  for (int32_t t : tokens) {
    absl::StatusOr<std::vector<float>> l = (*e)->Forward(t);
    EXPECT_TRUE(l.ok()) << l.status();
    if (!l.ok()) break;
    out.push_back(*std::move(l));
  }
  return out;
}

const std::vector<int32_t> kTokens = {1, 72, 101, 256, 258, 33, 200, 259, 260, 17, 5, 261};

// ---- (a) an F32 GGUF gives the logits of the direct export of the same weights

class GgufImportF32 : public ::testing::TestWithParam<bool> {};

TEST_P(GgufImportF32, LogitsMatchTheDirectExport) {
  const bool tied = GetParam();
  const ModelConfig cfg = test_util::TinyExportConfig(tied);
  std::unique_ptr<TensorSource> w = RandomWeights(cfg);
  ASSERT_NE(w, nullptr);
  const std::string dir = TestDir();
  const GModel g = ConverterGguf(*w, AllMatrices(GgmlType::kF32), SyntheticTokenizerJson());
  WriteGguf(g, dir + "/m.gguf");
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenTensorSource(dir + "/m.gguf");
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->default_recipe(), "keep");
  const ModelConfig& got = (*src)->config();
  EXPECT_EQ(got.tie_word_embeddings, tied);
  EXPECT_EQ(got.vocab_size, cfg.vocab_size);
  EXPECT_EQ(got.rope_layout, cfg.rope_layout);
  EXPECT_EQ(got.sliding_window_layout, cfg.sliding_window_layout);
  EXPECT_EQ(got.sliding_window_size, 4096);  // llama.cpp's window, not the stored 16
  EXPECT_FALSE(got.moe_primary_router_apply_softmax);
  EXPECT_EQ(got.head_dim, cfg.head_dim);
  bool noted = false;
  for (const std::string& n : (*src)->notes()) noted |= Contains(n, "4096");
  EXPECT_TRUE(noted);
  // Every tensor reads back as the weights it came from (no permutation, expert chunks).
  for (const SourceTensor& t : (*src)->tensors()) {
    EXPECT_EQ(t.dtype, "f32");
    absl::StatusOr<std::vector<float>> a = (*src)->ReadF32(t.name), b = w->ReadF32(t.name);
    ASSERT_TRUE(a.ok() && b.ok()) << t.name;
    EXPECT_EQ(*a, *b) << t.name;
  }

  absl::StatusOr<ExportReport> imported = Export(**src, "keep", dir + "/imported.stmf");
  ASSERT_TRUE(imported.ok()) << imported.status();
  absl::StatusOr<ExportReport> direct = Export(*w, "f32", dir + "/direct.stmf");
  ASSERT_TRUE(direct.ok()) << direct.status();
  const std::vector<std::vector<float>> a = Logits(dir + "/imported.stmf", kTokens);
  const std::vector<std::vector<float>> b = Logits(dir + "/direct.stmf", kTokens);
  ASSERT_EQ(a.size(), kTokens.size());
  ASSERT_EQ(b.size(), kTokens.size());
  double max_diff = 0;
  for (size_t p = 0; p < a.size(); ++p) {
    ASSERT_EQ(a[p].size(), b[p].size());
    for (size_t i = 0; i < a[p].size(); ++i) {
      max_diff = std::max(max_diff, std::abs(static_cast<double>(a[p][i]) - b[p][i]));
    }
  }
  EXPECT_LT(max_diff, 1e-5);
  // Everything was copied but the expert down matrices (transposed: re-encoded, exactly).
  const ClassError& experts = imported->classes.at("expert");
  EXPECT_EQ(experts.copied, 2 * cfg.num_hidden_layers * cfg.moe_num_primary_experts);
  ASSERT_EQ(imported->requantised.size(), 1u);
  const ClassError& down = imported->requantised.at({"expert down", "f32"});
  EXPECT_EQ(down.tensors, cfg.num_hidden_layers * cfg.moe_num_primary_experts);
  EXPECT_EQ(down.max_abs_error, 0);

  // The tokenizer and policy came along.
  absl::StatusOr<std::unique_ptr<ModelFile>> f = ModelFile::Open(dir + "/imported.stmf");
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      MakeTokenizer((*f)->tokenizer_name(), (*f)->tokenizer_json());
  ASSERT_TRUE(tok.ok()) << tok.status();
  absl::StatusOr<std::unique_ptr<Tokenizer>> want = MakeTokenizer("bpe", SyntheticTokenizerJson());
  ASSERT_TRUE(want.ok());
  for (const char* text : {"the cat", "<|im_start|>user\nthe<|im_end|>", "<think> x"}) {
    EXPECT_EQ((*tok)->Encode(text), (*want)->Encode(text)) << text;
  }
  EXPECT_EQ((*f)->eos_token_ids(), std::vector<int64_t>({261}));
  EXPECT_EQ((*f)->chat_template(), "{{ messages }}");
  EXPECT_EQ((*f)->tokenizer_policy().eos_token, "<|im_end|>");
}

INSTANTIATE_TEST_SUITE_P(Tied, GgufImportF32, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? std::string("Tied") : std::string("Untied");
                         });

// ---- (b) blocks of the model file's own types are copied unchanged

class GgufImportKeep : public ::testing::TestWithParam<GgmlType> {};

TEST_P(GgufImportKeep, BlocksAreCopiedAndDownIsRequantisedToTheSameType) {
  const GgmlType type = GetParam();
  const ModelConfig cfg = test_util::TinyExportConfig(/*tied=*/false);
  std::unique_ptr<TensorSource> w = RandomWeights(cfg);
  ASSERT_NE(w, nullptr);
  const std::string dir = TestDir();
  GModel g = ConverterGguf(*w, AllMatrices(type), SyntheticTokenizerJson());
  WriteGguf(g, dir + "/m.gguf");
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenGgufSource(dir + "/m.gguf");
  ASSERT_TRUE(src.ok()) << src.status();
  absl::StatusOr<ExportReport> report = Export(**src, "keep", dir + "/m.stmf");
  ASSERT_TRUE(report.ok()) << report.status();
  absl::StatusOr<std::unique_ptr<ModelFile>> f = ModelFile::Open(dir + "/m.stmf");
  ASSERT_TRUE(f.ok()) << f.status();
  const GgmlTypeInfo* info = FindGgmlType(static_cast<uint32_t>(type));
  absl::StatusOr<DType> ours = KeepType(info->name);
  ASSERT_TRUE(ours.ok());
  const int E = cfg.moe_num_primary_experts;
  int64_t checked = 0;
  ForEachTensor(cfg, [&](const TensorId& id) {
    const TensorInfo* t = (*f)->Find(id.FileName());
    EXPECT_NE(t, nullptr) << id.FileName();
    if (t == nullptr) return false;
    std::string want;
    if (!id.is_expert()) {
      want = g.Find(id.FileName() + ".weight")->bytes;
    } else {
      const char* part = id.part() == ExpertPart::kGate ? "gate" : "up";
      if (id.part() == ExpertPart::kDownT) {
        EXPECT_EQ(t->dtype, *ours) << id.FileName();
        return true;
      }
      const std::string& stack =
          g.Find(absl::StrCat("blk.", id.layer, ".ffn_", part, "_exps.weight"))->bytes;
      const size_t chunk = stack.size() / E;
      want = stack.substr(chunk * id.expert, chunk);
    }
    const std::string got(reinterpret_cast<const char*>((*f)->TensorData(*t)), t->size);
    EXPECT_EQ(got, want) << id.FileName();
    ++checked;
    return true;
  });
  EXPECT_EQ(checked, CountTensors(cfg) - cfg.num_hidden_layers * E);
  EXPECT_EQ(report->classes.at("attention").dtype, *ours);
  EXPECT_FALSE(report->classes.at("attention").mixed);
  EXPECT_EQ(report->classes.at("norm").dtype, DType::kF32);
  ASSERT_EQ(report->requantised.size(), 1u);
  const ClassError& down = report->requantised.at({"expert down", info->name});
  EXPECT_EQ(down.dtype, *ours);
  EXPECT_EQ(down.tensors, cfg.num_hidden_layers * E);
  if (type == GgmlType::kF16 || type == GgmlType::kBF16) {
    EXPECT_EQ(down.max_abs_error, 0);  // a transposition of floats is exact
  } else {
    EXPECT_GT(down.relative_rms(), 0);
    EXPECT_LT(down.relative_rms(), type == GgmlType::kQ8_0 ? 0.02 : 0.3);
  }
  EXPECT_EQ(Logits(dir + "/m.stmf", kTokens).size(), kTokens.size());
}

INSTANTIATE_TEST_SUITE_P(Types, GgufImportKeep,
                         ::testing::Values(GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0,
                                           GgmlType::kQ4_0),
                         [](const ::testing::TestParamInfo<GgmlType>& i) {
                           return std::string(FindGgmlType(static_cast<uint32_t>(i.param))->name);
                         });

// ---- (c) other ggml types are requantised to the nearest type we run, with the error reported

// One layer, sizes that are multiples of the K-quants' 256.
ModelConfig KQuantConfig() {
  ModelConfig c = test_util::TinyExportConfig(/*tied=*/true);
  c.num_hidden_layers = 1;
  c.hidden_size = c.moe_ffn_hidden_size = 256;
  c.head_dim = 128;
  c.max_position_embeddings = 64;
  c.rope_layout = {1};
  c.sliding_window_layout = {0};
  c.moe_num_primary_experts = 2;
  c.moe_num_active_primary_experts = 1;
  c.moe_primary_router_apply_softmax = true;
  EXPECT_TRUE(ValidateModelConfig(c).ok());
  return c;
}

// The relative RMS error of quantising the dequantised `blocks` (ggml type `from`, rows of
// `row`) to `to`, and the bytes that gives.
std::pair<double, std::string> Requantise(GgmlType from, const std::string& blocks, int64_t n,
                                          int64_t row, DType to) {
  std::vector<float> x(static_cast<size_t>(n));
  EXPECT_TRUE(DequantizeRowGgml(static_cast<uint32_t>(from), blocks.data(), n, x.data()).ok());
  const int64_t row_bytes = DTypeBytes(to, row);
  std::string q(static_cast<size_t>(n / row * row_bytes), '\0');
  std::vector<float> back(static_cast<size_t>(row));
  double err = 0, val = 0;
  for (int64_t r = 0; r < n / row; ++r) {
    QuantizeRow(to, x.data() + r * row, row, &q[r * row_bytes]);
    DequantizeRow(to, &q[r * row_bytes], row, back.data());
    for (int64_t i = 0; i < row; ++i) {
      const double d = static_cast<double>(x[r * row + i]) - back[i];
      err += d * d;
      val += static_cast<double>(x[r * row + i]) * x[r * row + i];
    }
  }
  return {std::sqrt(err / val), q};
}

TEST(GgufImport, OtherTypesAreRequantisedWithTheErrorReported) {
  const ModelConfig cfg = KQuantConfig();
  std::unique_ptr<TensorSource> w = RandomWeights(cfg);
  ASSERT_NE(w, nullptr);
  const std::map<std::string, GgmlType> types = {
      {"token_embd.weight", GgmlType::kQ6_K},
      {"blk.0.attn_q.weight", GgmlType::kQ5_0},
      {"blk.0.attn_k.weight", GgmlType::kQ4_1},
      {"blk.0.attn_v.weight", GgmlType::kQ2_K},
      {"blk.0.attn_output.weight", GgmlType::kQ3_K},
      {"blk.0.ffn_gate_exps.weight", GgmlType::kQ4_K},
      {"blk.0.ffn_up_exps.weight", GgmlType::kQ4_K},
      {"blk.0.ffn_down_exps.weight", GgmlType::kQ6_K},
  };
  const TypeOf type_of = [&](const std::string& name) {
    auto it = types.find(name);
    return it == types.end() ? GgmlType::kF32 : it->second;
  };
  const std::string dir = TestDir();
  GModel g = ConverterGguf(*w, type_of, SyntheticTokenizerJson());
  WriteGguf(g, dir + "/m.gguf");
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenGgufSource(dir + "/m.gguf");
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->Find("model.embed_tokens.weight")->dtype, "q6_K");
  absl::StatusOr<ExportReport> report = Export(**src, "keep", dir + "/m.stmf");
  ASSERT_TRUE(report.ok()) << report.status();

  struct Want {
    const char* what;
    const char* from;
    DType to;
    int64_t tensors;
  };
  const Want wants[] = {
      {"embedding", "q6_K", DType::kQ8_0, 1},   {"attention", "q5_0", DType::kQ8_0, 1},
      {"attention", "q4_1", DType::kQ8_0, 1},   {"attention", "q2_K", DType::kQ4_0, 1},
      {"attention", "q3_K", DType::kQ4_0, 1},   {"expert", "q4_K", DType::kQ4_0, 4},
      {"expert down", "q6_K", DType::kQ4_0, 2},  // experts: one type, Q4_0 by majority
  };
  EXPECT_EQ(report->requantised.size(), std::size(wants));
  for (const Want& want : wants) {
    auto it = report->requantised.find({want.what, want.from});
    ASSERT_NE(it, report->requantised.end()) << want.what << " " << want.from;
    EXPECT_EQ(it->second.dtype, want.to) << want.what << " " << want.from;
    EXPECT_EQ(it->second.tensors, want.tensors) << want.what << " " << want.from;
    EXPECT_GT(it->second.relative_rms(), 0) << want.what << " " << want.from;
  }
  EXPECT_TRUE(report->classes.at("attention").mixed);
  EXPECT_EQ(report->classes.at("router").copied, 1);

  // The embedding: exactly Q8_0 of the dequantised Q6_K, and the reported error is that one.
  const GTensor& embd = *g.Find("token_embd.weight");
  const auto [rms, bytes] =
      Requantise(GgmlType::kQ6_K, embd.bytes, embd.ne[0] * embd.ne[1], embd.ne[0], DType::kQ8_0);
  EXPECT_NEAR(report->requantised.at({"embedding", "q6_K"}).relative_rms(), rms, 1e-9 * rms);
  absl::StatusOr<std::unique_ptr<ModelFile>> f = ModelFile::Open(dir + "/m.stmf");
  ASSERT_TRUE(f.ok()) << f.status();
  const TensorInfo* t = (*f)->Find("token_embd");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::kQ8_0);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*f)->TensorData(*t)), t->size), bytes);
  for (int e = 0; e < cfg.moe_num_primary_experts; ++e) {
    for (ExpertPart p : {ExpertPart::kGate, ExpertPart::kUp, ExpertPart::kDownT}) {
      EXPECT_EQ((*f)->Find(ExpertTensorName(0, e, p))->dtype, DType::kQ4_0);
    }
  }
  EXPECT_EQ(Logits(dir + "/m.stmf", {1, 2, 3}).size(), 3u);
}

TEST(GgufImport, KeepTypeMapsByBitsPerWeight) {
  const std::pair<const char*, DType> cases[] = {
      {"F32", DType::kF32},   {"f16", DType::kF16},   {"BF16", DType::kBF16},
      {"q8_0", DType::kQ8_0}, {"q4_0", DType::kQ4_0}, {"q4_1", DType::kQ8_0},
      {"q5_0", DType::kQ8_0}, {"q5_1", DType::kQ8_0}, {"q2_K", DType::kQ4_0},
      {"q3_K", DType::kQ4_0}, {"q4_K", DType::kQ4_0}, {"q5_K", DType::kQ8_0},
      {"q6_K", DType::kQ8_0}, {"q8_K", DType::kQ8_0},
  };
  for (const auto& [name, want] : cases) {
    absl::StatusOr<DType> t = KeepType(name);
    ASSERT_TRUE(t.ok()) << name;
    EXPECT_EQ(*t, want) << name;
  }
  EXPECT_TRUE(Contains(KeepType("iq2_xxs").status(), "iq2_xxs"));
}

// ---- (d) the tokenizer built from GGUF metadata encodes as the tokenizer.json it came from

GgufMetadata TokenizerMetadata(const GVocab& v, const std::string& pre) {
  GgufMetadata md;
  EXPECT_TRUE(md.Add("tokenizer.ggml.model", GgufValue::String("gpt2")).ok());
  EXPECT_TRUE(md.Add("tokenizer.ggml.pre", GgufValue::String(pre)).ok());
  EXPECT_TRUE(md.Add("tokenizer.ggml.tokens", GgufValue::Array(v.tokens)).ok());
  EXPECT_TRUE(md.Add("tokenizer.ggml.token_type", GgufValue::Array(v.types)).ok());
  EXPECT_TRUE(md.Add("tokenizer.ggml.merges", GgufValue::Array(v.merges)).ok());
  return md;
}

TEST(GgufImport, Qwen3TokenizerEncodesAsItsTokenizerJson) {
  const std::string text = FileContents(kQwenTokenizer);
  if (text.empty()) {
    GTEST_SKIP() << "missing " << kQwenTokenizer
                 << " (the ctest fixture fetch_tokenizers writes it; by hand: bash "
                    "scripts/fetch_tokenizers.sh BUILD/tokenizers)";
  }
  const GVocab v = VocabFromTokenizerJson(text, 151936);  // config.json's vocab_size
  GgufMetadata md = TokenizerMetadata(v, "qwen2");
  ASSERT_TRUE(md.Add("tokenizer.ggml.eos_token_id", GgufValue::U32(151645)).ok());
  ASSERT_TRUE(md.Add("tokenizer.ggml.padding_token_id", GgufValue::U32(151643)).ok());
  ASSERT_TRUE(md.Add("tokenizer.ggml.bos_token_id", GgufValue::U32(151643)).ok());
  ASSERT_TRUE(md.Add("tokenizer.ggml.add_bos_token", GgufValue::Bool(false)).ok());
  const std::string config = FileContents(kQwenTokenizerConfig);
  const std::string tmpl =
      config.empty() ? "" : json::parse(config).value("chat_template", std::string());
  ASSERT_TRUE(md.Add("tokenizer.chat_template", GgufValue::String(tmpl)).ok());
  absl::StatusOr<GgufTokenizer> g = TokenizerFromGguf(md, "qwen3 metadata");
  ASSERT_TRUE(g.ok()) << g.status();
  // The structure is Qwen's own.
  const json got = json::parse(g->json), want_json = json::parse(text);
  for (const char* key : {"normalizer", "pre_tokenizer", "post_processor", "decoder"}) {
    EXPECT_EQ(got[key], want_json[key]) << key;
  }
  EXPECT_EQ(got["model"]["vocab"], want_json["model"]["vocab"]);
  EXPECT_EQ(got["model"]["merges"].size(), want_json["model"]["merges"].size());

  absl::StatusOr<std::unique_ptr<Tokenizer>> a = MakeTokenizer("bpe", g->json);
  absl::StatusOr<std::unique_ptr<Tokenizer>> b = MakeTokenizer("bpe", text);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const char* texts[] = {
      "Hello, world!",
      "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
      "<|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>",
      "  multiple   spaces\n\n\ttabs\r\nand CRLF",
      "日本語のテキスト 123456789 ünïcödé café",
      "I'll've they're WE'RE don't",
      "emoji 🤖🚀 and <tool_call>{\"a\": 1}</tool_call> <|fim_prefix|>x<|endoftext|>",
  };
  for (const char* t : texts) {
    const std::vector<int32_t> ids = (*a)->Encode(t);
    EXPECT_EQ(ids, (*b)->Encode(t)) << t;
    EXPECT_EQ((*a)->Decode(ids), (*b)->Decode(ids)) << t;
  }
  EXPECT_EQ((*a)->TokenId("<|im_start|>"), 151644);
  EXPECT_EQ((*a)->eos_id(), (*b)->eos_id());
  EXPECT_EQ(g->policy.eos_token, "<|im_end|>");
  EXPECT_EQ(g->policy.eos_token_id, 151645);
  EXPECT_EQ(g->policy.pad_token, "<|endoftext|>");
  EXPECT_FALSE(g->policy.add_bos_token);
  EXPECT_FALSE(g->policy.add_eos_token);
  EXPECT_EQ(g->chat_template, tmpl);
  bool unused_noted = false;
  for (const std::string& n : g->notes) unused_noted |= Contains(n, "267 unused tokens");
  EXPECT_TRUE(unused_noted);
}

TEST(GgufImport, Gpt2PreTokenizerEncodesAsByteLevelWithRegex) {
  const std::string text = test_util::MinimalTokenizerJson();  // ByteLevel, use_regex: true
  absl::StatusOr<GgufTokenizer> g =
      TokenizerFromGguf(TokenizerMetadata(VocabFromTokenizerJson(text, 259), "gpt-2"), "m");
  ASSERT_TRUE(g.ok()) << g.status();
  absl::StatusOr<std::unique_ptr<Tokenizer>> a = MakeTokenizer("bpe", g->json);
  absl::StatusOr<std::unique_ptr<Tokenizer>> b = MakeTokenizer("bpe", text);
  ASSERT_TRUE(a.ok() && b.ok());
  for (const char* t : {"Hello  world's 123 <|im_end|>", "a\n\nb  c"}) {
    EXPECT_EQ((*a)->Encode(t), (*b)->Encode(t)) << t;
  }
}

// ---- (e) what is refused, and how the message names it

// One edit of the converter's file and what the refusal must say.
struct ErrorCase {
  const char* name;
  std::function<void(GModel*)> edit;
  std::vector<std::string> says;
};

TEST(GgufImportErrors, EachRefusalNamesWhatIsWrong) {
  const ModelConfig cfg = test_util::TinyExportConfig(/*tied=*/true);
  std::unique_ptr<TensorSource> w = RandomWeights(cfg);
  ASSERT_NE(w, nullptr);
  const GModel base = ConverterGguf(*w, AllMatrices(GgmlType::kF32), SyntheticTokenizerJson());
  auto set = [](const char* key, GgufValue v) { return [key, v](GModel* m) { m->Set(key, v); }; };
  const ErrorCase cases[] = {
      {"unedited", [](GModel*) {}, {}},
      {"wrong architecture",
       set("general.architecture", GgufValue::String("llama")),
       {"general.architecture = \"llama\"", "smallthinker"}},
      {"no gating function",
       [](GModel* m) { m->Erase("smallthinker.expert_gating_func"); },
       {"smallthinker.expert_gating_func is absent"}},
      {"unknown gating function",
       set("smallthinker.expert_gating_func", GgufValue::U32(3)),
       {"smallthinker.expert_gating_func = 3"}},
      {"mistyped key",
       set("smallthinker.block_count", GgufValue::I32(2)),
       {"smallthinker.block_count", "INT32"}},
      {"wrong ne",
       [](GModel* m) {
         m->Find("blk.1.attn_k.weight")->ne = {32, 64};
       },  // transposed
       {"blk.1.attn_k.weight has ne [32, 64], expected [64, 32]"}},
      {"unknown tensor",
       [](GModel* m) {
         m->tensors.push_back(GTensor{
             "blk.0.attn_q.bias", GgmlType::kF32, {64}, std::string(64 * sizeof(float), '\0')});
       },
       {"unknown tensor blk.0.attn_q.bias"}},
      {"missing tensor",
       [](GModel* m) { m->tensors.erase(m->tensors.begin() + 3); },  // blk.0.attn_k
       {"missing: blk.0.attn_k.weight"}},
      {"tokenizer model",
       set("tokenizer.ggml.model", GgufValue::String("llama")),
       {"tokenizer.ggml.model = \"llama\""}},
      {"pre-tokenizer",
       set("tokenizer.ggml.pre", GgufValue::String("llama-bpe")),
       {"tokenizer.ggml.pre = \"llama-bpe\""}},
      {"rope scaling",
       set("smallthinker.rope.scaling.type", GgufValue::String("yarn")),
       {"smallthinker.rope.scaling.type"}},
      {"eos out of range",
       set("tokenizer.ggml.eos_token_id", GgufValue::U32(300)),
       {"tokenizer.ggml.eos_token_id = 300 is outside the vocabulary"}},
  };
  for (const ErrorCase& c : cases) {
    SCOPED_TRACE(c.name);
    GModel m = base;
    c.edit(&m);
    const std::string path = TestDir() + "/m.gguf";
    WriteGguf(m, path);
    const absl::Status s = OpenTensorSource(path).status();
    EXPECT_EQ(s.ok(), c.says.empty()) << s;
    for (const std::string& part : c.says) EXPECT_TRUE(Contains(s, part)) << s;
  }
}

// ---- round trips through our own exporter: weights -> GGUF (ExportGguf, q8_0) -> model file
// (import, keep) -> GGUF (ExportGgufFromModelFile). The imported model's logits are the direct
// q8_0 export's within the one extra Q8_0 round of the expert down matrices (same greedy token
// everywhere); the second GGUF holds every tensor of the first byte for byte, except
// ffn_down_exps (transposed twice through Q8_0: close, not equal).
TEST(GgufRoundTrip, WeightsToGgufToModelFileToGguf) {
  const ModelConfig cfg = test_util::TinyExportConfig(/*tied=*/false);
  std::unique_ptr<TensorSource> w = RandomWeights(cfg, 21);
  ASSERT_NE(w, nullptr);
  const std::string dir = TestDir();
  GgufExportOptions gopt;
  absl::StatusOr<ExportRecipe> q8 = RecipePreset("q8_0");
  ASSERT_TRUE(q8.ok());
  gopt.recipe = *q8;
  gopt.force = true;  // the test config's 16-token window is not llama.cpp's 4096
  absl::StatusOr<GgufExportReport> first = ExportGguf(*w, dir + "/a.gguf", gopt);
  ASSERT_TRUE(first.ok()) << first.status();

  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenTensorSource(dir + "/a.gguf");
  ASSERT_TRUE(src.ok()) << src.status();
  ASSERT_TRUE(Export(**src, "keep", dir + "/b.stmf").ok());
  ASSERT_TRUE(Export(*w, "q8_0", dir + "/direct.stmf").ok());
  // The import reads llama.cpp's 4096 window; over 12 tokens that equals the config's 16.
  const std::vector<std::vector<float>> a = Logits(dir + "/b.stmf", kTokens);
  const std::vector<std::vector<float>> b = Logits(dir + "/direct.stmf", kTokens);
  ASSERT_EQ(a.size(), kTokens.size());
  ASSERT_EQ(b.size(), kTokens.size());
  double max_diff = 0, max_abs = 0;
  for (size_t p = 0; p < a.size(); ++p) {
    ASSERT_EQ(a[p].size(), b[p].size());
    for (size_t i = 0; i < a[p].size(); ++i) {
      max_diff = std::max(max_diff, std::abs(static_cast<double>(a[p][i]) - b[p][i]));
      max_abs = std::max(max_abs, std::abs(static_cast<double>(b[p][i])));
    }
    EXPECT_EQ(std::max_element(a[p].begin(), a[p].end()) - a[p].begin(),
              std::max_element(b[p].begin(), b[p].end()) - b[p].begin())
        << "position " << p;
  }
  EXPECT_GT(max_diff, 0);  // down really went through Q8_0 once more
  EXPECT_LT(max_diff, 0.01 * max_abs) << "max |logit| " << max_abs;

  absl::StatusOr<std::unique_ptr<ModelFile>> f = ModelFile::Open(dir + "/b.stmf");
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<GgufExportReport> second = ExportGgufFromModelFile(**f, dir + "/c.gguf", gopt);
  ASSERT_TRUE(second.ok()) << second.status();
  absl::StatusOr<GgufFile> ga = GgufFile::Open(dir + "/a.gguf");
  absl::StatusOr<GgufFile> gc = GgufFile::Open(dir + "/c.gguf");
  ASSERT_TRUE(ga.ok() && gc.ok());
  ASSERT_EQ(ga->tensors().size(), gc->tensors().size());
  int same = 0;
  for (const GgufTensorInfo& t : ga->tensors()) {
    const GgufTensorInfo* u = gc->FindTensor(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(u->type, t.type) << t.name;
    EXPECT_EQ(u->ne, t.ne) << t.name;
    absl::StatusOr<std::string> x = ga->ReadRaw(t), y = gc->ReadRaw(*u);
    ASSERT_TRUE(x.ok() && y.ok()) << t.name;
    if (Contains(t.name, "ffn_down_exps")) {
      EXPECT_NE(*x, *y) << t.name << ": expected a second Q8_0 round";
    } else {
      EXPECT_EQ(*x, *y) << t.name;
      ++same;
    }
  }
  EXPECT_EQ(same, static_cast<int>(ga->tensors().size()) - cfg.num_hidden_layers);
  // The metadata llama.cpp reads survives too.
  for (const char* key :
       {"smallthinker.block_count", "smallthinker.expert_count", "smallthinker.expert_gating_func",
        "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
        "tokenizer.ggml.eos_token_id"}) {
    const GgufValue* va = ga->metadata().Find(key);
    const GgufValue* vc = gc->metadata().Find(key);
    ASSERT_TRUE(va != nullptr && vc != nullptr) << key;
    EXPECT_EQ(*va, *vc) << key;
  }
}

}  // namespace
}  // namespace st
