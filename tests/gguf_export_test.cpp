// Tests of the GGUF exporter (infer/export/gguf_export.h), read back with GgufFile: every key and
// its type, tensor names / ne / types and expert slices against the source; a model file's
// blocks copied (down matrices transposed back); the llama.cpp layout check and --force; the
// gpt2 vocabulary of the Qwen3 tokenizer and of the byte tokenizer (which encodes as it does).
#include "infer/export/gguf_export.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "infer/export/exporter.h"
#include "infer/export/random_source.h"
#include "infer/format/gguf.h"
#include "infer/format/model_file.h"
#include "infer/format/tensors.h"
#include "infer/quant/codec.h"
#include "infer/tokenizer/bpe.h"
#include "infer/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/test_tokenizers.h"
#include "tests/test_util.h"

namespace st {
namespace {

using json = nlohmann::json;
using test_util::Contains;
using test_util::FileContents;
using test_util::TestDir;
using test_util::TinyExportConfig;

const char kQwenPath[] = ST_BINARY_DIR "/tokenizers/qwen3/tokenizer.json";

// TinyExportConfig with every layer RoPE + full attention (what llama.cpp writes without
// attention.sliding_window).
ModelConfig AllRopeConfig(bool tied) {
  ModelConfig c = TinyExportConfig(tied);
  c.rope_layout = {1, 1};
  c.sliding_window_layout = {0, 0};
  EXPECT_TRUE(ValidateModelConfig(c).ok());
  return c;
}

std::unique_ptr<TensorSource> Source(const ModelConfig& cfg, const std::string& tok = "bpe") {
  absl::StatusOr<std::unique_ptr<TensorSource>> s =
      MakeRandomSource(cfg, 7, tok, tok == "bpe" ? test_util::MinimalTokenizerJson() : "");
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

GgufExportOptions Options(const std::string& recipe, bool force = false) {
  GgufExportOptions o;
  o.recipe = *RecipePreset(recipe);
  o.force = force;
  o.name = "tiny";
  return o;
}

GgufFile OpenOrDie(const std::string& path) {
  absl::StatusOr<GgufFile> f = GgufFile::Open(path);
  EXPECT_TRUE(f.ok()) << f.status();
  return std::move(*f);
}

std::vector<float> FloatsOf(const std::string& bytes, size_t offset, size_t count) {
  std::vector<float> v(count);
  std::memcpy(v.data(), bytes.data() + offset, count * sizeof(float));
  return v;
}

// ---- metadata and tensors of a float export

TEST(GgufExport, F32WritesEveryKeyWithItsTypeAndTheTensorsOfTheSource) {
  const ModelConfig cfg = AllRopeConfig(/*tied=*/false);
  std::unique_ptr<TensorSource> src = Source(cfg);
  const std::string path = TestDir() + "/tiny.gguf";
  absl::StatusOr<GgufExportReport> r = ExportGguf(*src, path, Options("f32"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->warnings.empty());
  EXPECT_EQ(r->file_type, 0u);
  EXPECT_EQ(r->pre, "gpt-2");
  const GgufFile f = OpenOrDie(path);
  const GgufMetadata& m = f.metadata();

  // Every key, its type and its value; nothing else.
  const std::map<std::string, std::string> expected = {
      {"general.architecture", "STRING \"smallthinker\""},
      {"general.type", "STRING \"model\""},
      {"general.name", "STRING \"tiny\""},
      {"general.file_type", "UINT32 0"},
      {"general.quantization_version", "UINT32 2"},
      {"smallthinker.block_count", "UINT32 2"},
      {"smallthinker.context_length", "UINT32 128"},
      {"smallthinker.embedding_length", "UINT32 64"},
      {"smallthinker.feed_forward_length", "UINT32 32"},
      {"smallthinker.attention.head_count", "UINT32 2"},
      {"smallthinker.attention.head_count_kv", "UINT32 1"},
      {"smallthinker.attention.key_length", "UINT32 32"},
      {"smallthinker.attention.value_length", "UINT32 32"},
      {"smallthinker.expert_count", "UINT32 3"},
      {"smallthinker.expert_used_count", "UINT32 2"},
      {"smallthinker.expert_feed_forward_length", "UINT32 32"},
      {"smallthinker.expert_gating_func", "UINT32 2"},  // sigmoid
      {"tokenizer.ggml.model", "STRING \"gpt2\""},
      {"tokenizer.ggml.pre", "STRING \"gpt-2\""},
      {"tokenizer.ggml.eos_token_id", "UINT32 256"},
      {"tokenizer.ggml.add_bos_token", "BOOL false"},
      {"tokenizer.ggml.add_eos_token", "BOOL false"},
  };
  std::set<std::string> keys;
  for (const auto& [key, value] : m.entries()) keys.insert(key);
  for (const auto& [key, text] : expected) {
    const GgufValue* v = m.Find(key);
    ASSERT_NE(v, nullptr) << key;
    EXPECT_EQ(v->DebugString(), text) << key;
    keys.erase(key);
  }
  EXPECT_EQ(m.Get<float>("smallthinker.rope.freq_base").value(), static_cast<float>(1.5e6));
  EXPECT_EQ(m.Get<float>("smallthinker.attention.layer_norm_rms_epsilon").value(), 1e-6f);
  EXPECT_EQ(m.entries()[0].first, "general.architecture");  // llama.cpp's writer puts it first
  for (const char* key :
       {"smallthinker.rope.freq_base", "smallthinker.attention.layer_norm_rms_epsilon",
        "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"}) {
    EXPECT_EQ(keys.erase(key), 1u) << key;
  }
  EXPECT_TRUE(keys.empty()) << "unexpected key " << *keys.begin();
  EXPECT_EQ(m.Find("tokenizer.ggml.tokens")->TypeName(), "ARRAY[STRING]");
  EXPECT_EQ(m.Find("tokenizer.ggml.token_type")->TypeName(), "ARRAY[INT32]");
  EXPECT_EQ(m.Find("tokenizer.ggml.merges")->TypeName(), "ARRAY[STRING]");
  EXPECT_EQ(m.Find("tokenizer.ggml.merges")->array_size(), 0u);  // present though empty

  // The vocabulary: 256 byte tokens, the three added specials, padding up to vocab_size.
  const std::vector<std::string> tokens = m.GetArray<std::string>("tokenizer.ggml.tokens").value();
  const std::vector<int32_t> types = m.GetArray<int32_t>("tokenizer.ggml.token_type").value();
  ASSERT_EQ(tokens.size(), 300u);
  ASSERT_EQ(types.size(), 300u);
  EXPECT_EQ(tokens[65], "A");
  EXPECT_EQ(tokens[32], BytesToByteLevel(" "));
  EXPECT_EQ(types[65], kGgufTokenNormal);
  EXPECT_EQ(tokens[258], "<|im_end|>");
  EXPECT_EQ(types[258], kGgufTokenControl);
  EXPECT_EQ(tokens[259], "[PAD259]");
  EXPECT_EQ(types[299], kGgufTokenUnused);

  // Tensors: names, ggml shapes, types, and the source's values (experts stacked per layer).
  const int64_t h = 64, v = 300, q = 64, kv = 32, e = 3, ff = 32;
  std::vector<std::pair<std::string, std::vector<int64_t>>> want = {{"token_embd.weight", {h, v}}};
  for (int l = 0; l < 2; ++l) {
    const std::string b = absl::StrCat("blk.", l, ".");
    for (auto [n, ne] :
         std::vector<std::pair<std::string, std::vector<int64_t>>>{{"attn_norm", {h}},
                                                                   {"attn_q", {h, q}},
                                                                   {"attn_k", {h, kv}},
                                                                   {"attn_v", {h, kv}},
                                                                   {"attn_output", {q, h}},
                                                                   {"ffn_norm", {h}},
                                                                   {"ffn_gate_inp", {h, e}},
                                                                   {"ffn_gate_exps", {h, ff, e}},
                                                                   {"ffn_up_exps", {h, ff, e}},
                                                                   {"ffn_down_exps", {ff, h, e}}}) {
      want.push_back({b + n + ".weight", ne});
    }
  }
  want.push_back({"output_norm.weight", {h}});
  want.push_back({"output.weight", {h, v}});
  ASSERT_EQ(f.tensors().size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(f.tensors()[i].name, want[i].first);
    EXPECT_EQ(f.tensors()[i].ne, want[i].second) << want[i].first;
    EXPECT_EQ(f.tensors()[i].type, GgmlType::kF32) << want[i].first;
  }
  // Resident tensors: the source's floats as they are.
  for (const char* name : {"token_embd", "blk.1.attn_q", "blk.0.ffn_gate_inp", "output"}) {
    const std::string bytes = f.ReadRaw(*f.FindTensor(absl::StrCat(name, ".weight"))).value();
    const std::vector<float> x = src->ReadF32(FileToHfName(name)).value();
    EXPECT_EQ(FloatsOf(bytes, 0, x.size()), x) << name;
  }
  // Expert e of each stacked tensor: the Hugging Face matrix of expert e (down as [H, F]).
  for (int l = 0; l < 2; ++l) {
    for (const auto& [part, gguf] :
         std::vector<std::pair<ExpertPart, std::string>>{{ExpertPart::kGate, "ffn_gate_exps"},
                                                         {ExpertPart::kUp, "ffn_up_exps"},
                                                         {ExpertPart::kDownT, "ffn_down_exps"}}) {
      const std::string bytes =
          f.ReadRaw(*f.FindTensor(absl::StrCat("blk.", l, ".", gguf, ".weight"))).value();
      for (int x = 0; x < e; ++x) {
        const std::vector<float> want_rows =
            src->ReadF32(TensorId::Expert(l, x, part).HfName()).value();
        ASSERT_EQ(want_rows.size(), static_cast<size_t>(h * ff));
        EXPECT_EQ(FloatsOf(bytes, x * h * ff * 4, h * ff), want_rows)
            << "layer " << l << " expert " << x << " " << gguf;
      }
    }
  }
}

TEST(GgufExport, TrainCheckpointExportsItsValues) {
  const ModelConfig cfg = AllRopeConfig(/*tied=*/true);
  const test_util::TensorValues values = test_util::RandomValues(cfg, 3);
  const std::string h5 = TestDir() + "/checkpoint.h5";
  test_util::WriteTrainCheckpoint(h5, cfg.ToJson(), test_util::CheckpointTensors(cfg, values),
                                  "byte", "");
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenTensorSource(h5);
  ASSERT_TRUE(src.ok()) << src.status();
  const std::string path = TestDir() + "/checkpoint.gguf";
  ASSERT_TRUE(ExportGguf(**src, path, Options("f32")).ok());
  const GgufFile f = OpenOrDie(path);
  const std::string down = f.ReadRaw(*f.FindTensor("blk.1.ffn_down_exps.weight")).value();
  const std::vector<float>& want =
      values.at(TensorId::Expert(1, 2, ExpertPart::kDownT).HfName());  // [H, F]
  EXPECT_EQ(FloatsOf(down, 2 * want.size() * 4, want.size()), want);
  const std::string embd = f.ReadRaw(*f.FindTensor("token_embd.weight")).value();
  EXPECT_EQ(FloatsOf(embd, 0, 300 * 64), values.at("model.embed_tokens.weight"));
}

TEST(GgufExport, RecipesGiveTheConvertersTypesAndFileTypes) {
  const ModelConfig cfg = AllRopeConfig(/*tied=*/true);
  std::unique_ptr<TensorSource> src = Source(cfg);
  const std::map<std::string, std::pair<uint32_t, GgmlType>> want = {
      {"f16", {1, GgmlType::kF16}},
      {"q8_0", {7, GgmlType::kQ8_0}},
      {"q4_0", {2, GgmlType::kQ4_0}},
      {"q4_0_pure", {2, GgmlType::kQ4_0}}};
  for (const auto& [recipe, types] : want) {
    SCOPED_TRACE(recipe);
    const std::string path = TestDir() + "/" + recipe + ".gguf";
    absl::StatusOr<GgufExportReport> r = ExportGguf(*src, path, Options(recipe));
    ASSERT_TRUE(r.ok()) << r.status();
    const GgufFile f = OpenOrDie(path);
    EXPECT_EQ(f.metadata().Get<uint32_t>("general.file_type").value(), types.first);
    EXPECT_EQ(f.FindTensor("blk.0.ffn_up_exps.weight")->type, types.second);
    EXPECT_EQ(f.FindTensor("blk.0.ffn_gate_inp.weight")->type, GgmlType::kF32);  // router
    EXPECT_EQ(f.FindTensor("blk.1.ffn_norm.weight")->type, GgmlType::kF32);
    EXPECT_EQ(f.FindTensor("output.weight"), nullptr);  // tied: llama.cpp reuses token_embd
    const GgmlType attention = recipe == "q4_0" ? GgmlType::kQ8_0 : types.second;
    EXPECT_EQ(f.FindTensor("blk.1.attn_k.weight")->type, attention);
    EXPECT_EQ(f.FindTensor("token_embd.weight")->type, attention);
  }
  GgufExportOptions keep = Options("f32");
  keep.recipe.name = "keep";
  absl::StatusOr<GgufExportReport> r = ExportGguf(*src, TestDir() + "/keep.gguf", keep);
  EXPECT_TRUE(Contains(r.status(), "recipe keep")) << r.status();
}

// ---- the layout llama.cpp can express

TEST(GgufExport, LayoutCheckAcceptsWhatLlamaCppComputesAndNamesWhatItDoesNot) {
  EXPECT_TRUE(CheckLlamaCppLayout(AllRopeConfig(true)).ok());
  ModelConfig c = TinyExportConfig(true);  // layer 0 NoPE global, layer 1 RoPE sliding (16)
  absl::Status s = CheckLlamaCppLayout(c);
  EXPECT_TRUE(Contains(s, "the sliding window is 16 tokens")) << s;
  EXPECT_TRUE(Contains(s, "always uses 4096")) << s;
  EXPECT_TRUE(Contains(s, "llama.cpp would compute a different model")) << s;
  c.sliding_window_size = 4096;
  ASSERT_TRUE(ValidateModelConfig(c).ok());
  EXPECT_TRUE(CheckLlamaCppLayout(c).ok());

  c.rope_layout = {0, 1};
  c.sliding_window_layout = {0, 0};  // NoPE without sliding layers
  ASSERT_TRUE(ValidateModelConfig(c).ok());
  s = CheckLlamaCppLayout(c);
  EXPECT_TRUE(Contains(s, "layer 0 is NoPE")) << s;
  EXPECT_TRUE(Contains(s, "RoPE on every layer")) << s;

  c.rope_layout = {0, 0};
  c.sliding_window_layout = {0, 1};  // layer 1 NoPE with a window
  ASSERT_TRUE(ValidateModelConfig(c).ok());
  s = CheckLlamaCppLayout(c);
  EXPECT_TRUE(Contains(s, "layer 1 is NoPE with a sliding window")) << s;
  EXPECT_TRUE(Contains(s, "layer 1 would be RoPE with a sliding window")) << s;
}

TEST(GgufExport, RefusedLayoutWritesNothingUnlessForced) {
  const ModelConfig cfg = TinyExportConfig(true);  // window 16
  std::unique_ptr<TensorSource> src = Source(cfg);
  const std::string path = TestDir() + "/refused.gguf";
  absl::StatusOr<GgufExportReport> r = ExportGguf(*src, path, Options("f32"));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status(), "always uses 4096")) << r.status();
  EXPECT_TRUE(Contains(r.status(), "--force writes the GGUF anyway")) << r.status();
  EXPECT_EQ(FileContents(path), "");

  r = ExportGguf(*src, path, Options("f32", /*force=*/true));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->warnings.size(), 1u);
  EXPECT_TRUE(Contains(r->warnings[0], "written anyway")) << r->warnings[0];
  const GgufFile f = OpenOrDie(path);
  EXPECT_EQ(f.metadata().Get<uint32_t>("smallthinker.attention.sliding_window").value(), 16u);

  ModelConfig ok = cfg;  // the 21B's pattern with llama.cpp's window
  ok.sliding_window_size = 4096;
  ASSERT_TRUE(ValidateModelConfig(ok).ok());
  r = ExportGguf(*Source(ok), path, Options("f32"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->warnings.empty());
  EXPECT_EQ(
      OpenOrDie(path).metadata().Get<uint32_t>("smallthinker.attention.sliding_window").value(),
      4096u);
}

// ---- from one of our model files

// Exports `src` to a model file with `recipe`, then that file to GGUF.
struct FromModelFile {
  std::unique_ptr<ModelFile> stmf;
  GgufExportReport report;
  std::string gguf_path;
};
FromModelFile ViaModelFile(const TensorSource& src, const std::string& recipe,
                           const std::string& stem) {
  FromModelFile out;
  const std::string stmf = TestDir() + "/" + stem + ".stmf";
  ExportOptions eo;
  eo.recipe = *RecipePreset(recipe);
  absl::StatusOr<ExportReport> e = ExportModel(src, stmf, eo);
  EXPECT_TRUE(e.ok()) << e.status();
  absl::StatusOr<std::unique_ptr<ModelFile>> m = ModelFile::Open(stmf);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return out;
  out.stmf = std::move(*m);
  out.gguf_path = TestDir() + "/" + stem + ".gguf";
  absl::StatusOr<GgufExportReport> r =
      ExportGgufFromModelFile(*out.stmf, out.gguf_path, Options("f32"));
  EXPECT_TRUE(r.ok()) << r.status();
  if (r.ok()) out.report = *r;
  return out;
}

std::string StoredBytes(const ModelFile& m, const TensorInfo& t) {
  return std::string(reinterpret_cast<const char*>(m.TensorData(t)), t.size);
}

TEST(GgufExport, ModelFileBlocksAreCopiedAndDownMatricesTransposedBack) {
  const ModelConfig cfg = AllRopeConfig(/*tied=*/false);
  std::unique_ptr<TensorSource> src = Source(cfg);
  FromModelFile x = ViaModelFile(*src, "q4_0", "q4_0");
  ASSERT_NE(x.stmf, nullptr);
  const GgufFile f = OpenOrDie(x.gguf_path);
  EXPECT_EQ(f.metadata().Get<uint32_t>("general.file_type").value(), 2u);
  const int layers = 2, experts = 3, h = 64, ff = 32;
  // Resident tensors: the stored blocks, byte for byte, with the stored type.
  for (const TensorInfo& t : x.stmf->tensors()) {
    if (t.group != TensorGroup::kResident) continue;
    const GgufTensorInfo* g = f.FindTensor(t.name + ".weight");
    ASSERT_NE(g, nullptr) << t.name;
    EXPECT_EQ(f.ReadRaw(*g).value(), StoredBytes(*x.stmf, t)) << t.name;
    EXPECT_EQ(g->type, t.dtype == DType::kQ8_0 ? GgmlType::kQ8_0 : GgmlType::kF32) << t.name;
  }
  // Gate and up: each expert's stored blocks in its slice. Down: the stored [F, H] matrix
  // dequantised, transposed and quantised again along F.
  for (int l = 0; l < layers; ++l) {
    const std::string gate =
        f.ReadRaw(*f.FindTensor(absl::StrCat("blk.", l, ".ffn_gate_exps.weight"))).value();
    const std::string up =
        f.ReadRaw(*f.FindTensor(absl::StrCat("blk.", l, ".ffn_up_exps.weight"))).value();
    const GgufTensorInfo* down_info =
        f.FindTensor(absl::StrCat("blk.", l, ".ffn_down_exps.weight"));
    EXPECT_EQ(down_info->type, GgmlType::kQ4_0);
    const std::string down = f.ReadRaw(*down_info).value();
    const size_t slice = static_cast<size_t>(DTypeBytes(DType::kQ4_0, h * ff));
    for (int e = 0; e < experts; ++e) {
      const ExpertExtent ext = x.stmf->GetExpertExtent(l, e).value();
      EXPECT_EQ(gate.substr(e * slice, slice), StoredBytes(*x.stmf, *ext.gate));
      EXPECT_EQ(up.substr(e * slice, slice), StoredBytes(*x.stmf, *ext.up));
      std::vector<float> stored(h * ff), moved(h * ff);
      DequantizeRow(DType::kQ4_0, x.stmf->TensorData(*ext.down_t), h * ff, stored.data());
      DequantizeRow(DType::kQ4_0, down.data() + e * slice, h * ff, moved.data());
      for (int r = 0; r < h; ++r) {  // moved is [H, F]; stored is [F, H]
        for (int c = 0; c < ff; c += kQBlock) {
          float amax = 0;
          for (int j = c; j < c + kQBlock; ++j) amax = std::max(amax, std::abs(stored[j * h + r]));
          const double bound = QuantErrorBound(DType::kQ4_0, amax);
          for (int j = c; j < c + kQBlock; ++j) {
            EXPECT_LE(std::abs(moved[r * ff + j] - stored[j * h + r]), bound);
          }
        }
      }
    }
  }
  EXPECT_EQ(x.report.requantized_down.tensors, layers * experts);
  EXPECT_GT(x.report.requantized_down.relative_rms(), 0);
  ASSERT_EQ(x.report.warnings.size(), 1u);
  EXPECT_TRUE(Contains(x.report.warnings[0], "quantised again")) << x.report.warnings[0];

  // The direct export with the same recipe quantizes the same way: every tensor but the down
  // matrices is the same, and so is the metadata.
  const std::string direct_path = TestDir() + "/direct.gguf";
  ASSERT_TRUE(ExportGguf(*src, direct_path, Options("q4_0")).ok());
  const GgufFile direct = OpenOrDie(direct_path);
  EXPECT_EQ(direct.metadata().entries(), f.metadata().entries());
  ASSERT_EQ(direct.tensors().size(), f.tensors().size());
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const GgufTensorInfo& a = direct.tensors()[i];
    const GgufTensorInfo& b = f.tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.ne, b.ne);
    EXPECT_EQ(a.type, b.type);
    if (a.name.find("ffn_down_exps") == std::string::npos) {
      EXPECT_EQ(direct.ReadRaw(a).value(), f.ReadRaw(b).value()) << a.name;
    }
  }
}

TEST(GgufExport, ModelFileFloatDownMatricesTransposeExactly) {
  const ModelConfig cfg = AllRopeConfig(/*tied=*/true);
  std::unique_ptr<TensorSource> src = Source(cfg);
  for (const std::string recipe : {"f16", "f32"}) {
    SCOPED_TRACE(recipe);
    FromModelFile x = ViaModelFile(*src, recipe, recipe);
    ASSERT_NE(x.stmf, nullptr);
    EXPECT_EQ(x.report.requantized_down.tensors, 0);
    EXPECT_TRUE(x.report.warnings.empty());
    // Bit-equal to the direct export (the model file stores the recipe's values exactly).
    const std::string direct_path = TestDir() + "/direct_" + recipe + ".gguf";
    ASSERT_TRUE(ExportGguf(*src, direct_path, Options(recipe)).ok());
    EXPECT_EQ(FileContents(direct_path), FileContents(x.gguf_path));
  }
}

// ---- the tokenizer

TEST(GgufExport, QwenTokenizerBecomesTheConvertersQwen2Vocabulary) {
  const std::string text = FileContents(kQwenPath);
  ASSERT_FALSE(text.empty()) << kQwenPath
                             << " missing: run bash scripts/fetch_tokenizers.sh build/tokenizers";
  absl::StatusOr<GgufVocab> v = GgufVocabFor("bpe", text, 151936);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->pre, "qwen2");
  ASSERT_EQ(v->tokens.size(), 151936u);
  EXPECT_EQ(v->tokens[151643], "<|endoftext|>");
  EXPECT_EQ(v->types[151643], kGgufTokenControl);  // special
  EXPECT_EQ(v->types[151659], kGgufTokenControl);  // <|fim_prefix|>: not special, looks special
  EXPECT_EQ(v->tokens[151667], "<think>");
  EXPECT_EQ(v->types[151667], kGgufTokenUserDefined);  // not special
  EXPECT_EQ(v->tokens[151669], "[PAD151669]");
  EXPECT_EQ(v->types[151935], kGgufTokenUnused);
  EXPECT_EQ(v->types[1000], kGgufTokenNormal);
  const json j = json::parse(text);
  ASSERT_EQ(v->merges.size(), j["model"]["merges"].size());
  const json& m0 = j["model"]["merges"][0];
  EXPECT_EQ(v->merges[0], m0.is_string()
                              ? m0.get<std::string>()
                              : m0[0].get<std::string>() + " " + m0[1].get<std::string>());
  EXPECT_EQ(v->tokens[j["model"]["vocab"]["hello"].get<int>()], "hello");

  // Ids past the model's vocabulary cannot be written.
  absl::StatusOr<GgufVocab> small = GgufVocabFor("bpe", text, 151000);
  EXPECT_TRUE(Contains(small.status(), "past the model's vocab_size 151000")) << small.status();
}

TEST(GgufExport, PreTokenizersLlamaCppDoesNotSplitLikeAreRefused) {
  json j = json::parse(test_util::MinimalTokenizerJson());
  j["pre_tokenizer"]["add_prefix_space"] = true;
  absl::StatusOr<GgufVocab> v = GgufVocabFor("bpe", j.dump(), 300);
  EXPECT_TRUE(Contains(v.status(), "adds a prefix space")) << v.status();
  EXPECT_TRUE(Contains(v.status(), "llama.cpp's gpt2 tokenizer")) << v.status();

  j = json::parse(test_util::MinimalTokenizerJson());
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"Regex", "\\s+|\\S+"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  v = GgufVocabFor("bpe", j.dump(), 300);
  EXPECT_TRUE(Contains(v.status(), "a regex other than Qwen2's")) << v.status();

  EXPECT_TRUE(Contains(GgufVocabFor("sentencepiece", "", 300).status(), "has no GGUF form"));
}

// The vocabulary as a tokenizer.json, the way llama.cpp reads it: its tokens by id (NORMAL ones
// in ByteLevel form), CONTROL tokens as special added tokens, the merges, and the pre-tokenizer
// `pre` names (gpt-2: ByteLevel with GPT-2's regex).
std::string AsTokenizerJson(const GgufVocab& v) {
  json vocab = json::object(), added = json::array();
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    if (v.types[id] == kGgufTokenNormal) vocab[v.tokens[id]] = id;
    if (v.types[id] == kGgufTokenControl) {
      added.push_back({{"id", id}, {"content", v.tokens[id]}, {"special", true}});
    }
  }
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  EXPECT_EQ(v.pre, "gpt-2");
  return json{{"added_tokens", added},
              {"pre_tokenizer", byte_level},
              {"decoder", byte_level},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", v.merges}}}}
      .dump();
}

TEST(GgufExport, ByteTokenizerIsAGpt2VocabularyThatEncodesEveryTextAsItDoes) {
  absl::StatusOr<GgufVocab> v = GgufVocabFor("byte", "", 260);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->pre, "gpt-2");
  EXPECT_TRUE(v->merges.empty());
  // Token b is byte b in ByteLevel form: one token per byte, whatever the pre-tokenizer splits.
  std::set<std::string> distinct;
  for (int b = 0; b < 256; ++b) {
    EXPECT_EQ(v->tokens[b], BytesToByteLevel(std::string(1, static_cast<char>(b)))) << b;
    EXPECT_EQ(v->types[b], kGgufTokenNormal);
    distinct.insert(v->tokens[b]);
  }
  EXPECT_EQ(distinct.size(), 256u);
  EXPECT_EQ(v->tokens[ByteTokenizer::kEndOfText], "<|endoftext|>");
  EXPECT_EQ(v->types[ByteTokenizer::kEndOfText], kGgufTokenControl);
  EXPECT_EQ(v->types[259], kGgufTokenUnused);

  // Encoding through the GGUF vocabulary gives the byte tokenizer's ids on valid UTF-8 (llama.cpp
  // and our BPE both turn invalid UTF-8 into U+FFFD first; ByteTokenizer keeps the bytes).
  absl::StatusOr<std::unique_ptr<Tokenizer>> bpe = MakeTokenizer("bpe", AsTokenizerJson(*v));
  ASSERT_TRUE(bpe.ok()) << bpe.status();
  const ByteTokenizer bytes;
  std::vector<std::string> texts = {"", "Hello, world!\n", "  two  spaces\t\ttabs\r\n",
                                    "caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x99\x82",
                                    "it's 3.14 'LL"};
  std::string ascii;
  for (int c = 1; c < 128; ++c) ascii.push_back(static_cast<char>(c));
  texts.push_back(ascii);
  std::mt19937 rng(5);
  for (int i = 0; i < 300; ++i) {  // random code points of every UTF-8 length
    std::string t;
    const int n = 1 + static_cast<int>(rng() % 40);
    for (int k = 0; k < n; ++k) {
      const uint32_t limits[] = {0x80, 0x800, 0x10000, 0x110000};
      uint32_t cp = rng() % limits[rng() % 4];
      if (cp == 0 || (cp >= 0xD800 && cp < 0xE000)) cp = ' ';
      AppendUtf8(cp, &t);
    }
    texts.push_back(t);
  }
  for (const std::string& t : texts) {
    EXPECT_EQ((*bpe)->Encode(t), bytes.Encode(t)) << t;
  }
}

TEST(GgufExport, ByteTokenizerSourceWritesItsVocabularyAndEos) {
  const ModelConfig cfg = AllRopeConfig(/*tied=*/true);
  std::unique_ptr<TensorSource> src = Source(cfg, "byte");
  const std::string path = TestDir() + "/byte.gguf";
  ASSERT_TRUE(ExportGguf(*src, path, Options("q8_0")).ok());
  const GgufFile f = OpenOrDie(path);
  const GgufVocab v = GgufVocabFor("byte", "", cfg.vocab_size).value();
  EXPECT_EQ(f.metadata().GetArray<std::string>("tokenizer.ggml.tokens").value(), v.tokens);
  EXPECT_EQ(f.metadata().GetArray<int32_t>("tokenizer.ggml.token_type").value(), v.types);
  EXPECT_EQ(f.metadata().Get<uint32_t>("tokenizer.ggml.eos_token_id").value(),
            static_cast<uint32_t>(ByteTokenizer::kEndOfText));
  EXPECT_EQ(f.metadata().Find("tokenizer.ggml.bos_token_id"), nullptr);
  EXPECT_EQ(f.metadata().Find("tokenizer.chat_template"), nullptr);
}

}  // namespace
}  // namespace st
