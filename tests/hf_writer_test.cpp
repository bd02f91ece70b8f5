// Tests of the Hugging Face writer (infer/export/hf_writer.h): HDF5 checkpoint -> HF directory
// -> model file equals the direct export (f32 exact, bf16 = the rounded weights), sharding +
// index, the safetensors writer's header (parsed here independently), the directory transaction
// (refusals, failures leave nothing), and the byte tokenizer's tokenizer.json against
// ByteTokenizer.
#include "infer/export/hf_writer.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "infer/export/exporter.h"
#include "infer/export/safetensors.h"
#include "infer/export/tensor_source.h"
#include "infer/format/model_file.h"
#include "infer/quant/codec.h"
#include "infer/tokenizer/tokenizer.h"
#include "model/file_io.h"
#include "nlohmann/json.hpp"
#include "tests/test_tokenizers.h"
#include "tests/test_util.h"

namespace st {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

using test_util::Contains;
using test_util::FileContents;
using test_util::ListDir;
using test_util::RandomValues;
using test_util::TinyExportConfig;
using Values = test_util::TensorValues;

// test_util::FreshDir under hf_export/.
std::string FreshDir(const std::string& name) { return test_util::FreshDir("hf_export/" + name); }

// Our training checkpoint of `cfg` holding `values`; `config_json` (optional) replaces the
// model_config attribute.
void WriteTrainCheckpoint(const std::string& path, const ModelConfig& cfg, const Values& values,
                          const std::string& tokenizer = "byte", const std::string& tok_json = "",
                          const std::string& config_json = "") {
  test_util::WriteTrainCheckpoint(path, config_json.empty() ? cfg.ToJson() : config_json,
                                  test_util::CheckpointTensors(cfg, values), tokenizer, tok_json);
}

std::unique_ptr<TensorSource> OpenOrDie(const std::string& path) {
  absl::StatusOr<std::unique_ptr<TensorSource>> s = OpenTensorSource(path);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

std::string ExportStmf(const TensorSource& src, const std::string& path,
                       const std::string& recipe) {
  ExportOptions opt;
  opt.recipe = *RecipePreset(recipe);
  absl::StatusOr<ExportReport> r = ExportModel(src, path, opt);
  EXPECT_TRUE(r.ok()) << r.status();
  return path;
}

// The two model files hold the same tensors, byte for byte, and the same model.
void ExpectSameTensors(const std::string& a_path, const std::string& b_path) {
  auto a = ModelFile::Open(a_path);
  auto b = ModelFile::Open(b_path);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ((*a)->tensors().size(), (*b)->tensors().size());
  for (const TensorInfo& ta : (*a)->tensors()) {
    const TensorInfo* tb = (*b)->Find(ta.name);
    ASSERT_NE(tb, nullptr) << ta.name;
    EXPECT_EQ(ta.dtype, tb->dtype) << ta.name;
    EXPECT_EQ(ta.dims, tb->dims) << ta.name;
    ASSERT_EQ(ta.size, tb->size) << ta.name;
    EXPECT_EQ(std::memcmp((*a)->TensorData(ta), (*b)->TensorData(*tb), ta.size), 0) << ta.name;
  }
  EXPECT_EQ((*a)->eos_token_ids(), (*b)->eos_token_ids());
  ModelConfig ca = (*a)->config(), cb = (*b)->config();
  ca.eos_token_id = cb.eos_token_id = {};  // the HF config names the tokenizer's eos explicitly
  EXPECT_EQ(ca.ToJson(), cb.ToJson());
}

absl::StatusOr<HfExportReport> ExportHf(const TensorSource& src, const std::string& dir,
                                        HfDType dtype, int64_t max_shard = 5'000'000'000,
                                        bool force = false) {
  HfExportOptions opt;
  opt.dtype = dtype;
  opt.max_shard_bytes = max_shard;
  opt.force = force;
  return ExportHfDirectory(src, dir, opt);
}

// ---------------------------------------------------------------------------------------------
// 1. HDF5 -> HF (f32) -> model file == HDF5 -> model file

TEST(HfExportTest, F32DirectoryReimportsToTheSameModelFile) {
  for (bool tied : {true, false}) {
    const std::string dir = FreshDir(tied ? "f32_tied" : "f32_untied");
    const ModelConfig cfg = TinyExportConfig(tied);
    const Values values = RandomValues(cfg, tied ? 11 : 12);
    WriteTrainCheckpoint(dir + "/ckpt.h5", cfg, values);
    auto h5 = OpenOrDie(dir + "/ckpt.h5");
    ASSERT_NE(h5, nullptr);
    absl::StatusOr<HfExportReport> r = ExportHf(*h5, dir + "/hf", HfDType::kF32);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->shards, 1);
    EXPECT_EQ(
        ListDir(dir + "/hf"),
        (std::vector<std::string>{"config.json", "generation_config.json", "model.safetensors",
                                  "tokenizer.json", "tokenizer_config.json"}));
    EXPECT_EQ(r->files, ListDir(dir + "/hf"));

    auto hf = OpenHfCheckpoint(dir + "/hf");
    ASSERT_TRUE(hf.ok()) << hf.status();
    // Every tensor exactly, as F32, and nothing else (no lm_head.weight when tied).
    ASSERT_EQ((*hf)->tensors().size(), ExpectedTensors(cfg).size());
    EXPECT_EQ((*hf)->Find("lm_head.weight") != nullptr, !tied);
    for (const SourceTensor& t : ExpectedTensors(cfg)) {
      const SourceTensor* got = (*hf)->Find(t.name);
      ASSERT_NE(got, nullptr) << t.name;
      EXPECT_EQ(got->dtype, "F32");
      EXPECT_EQ(got->shape, t.shape);
      EXPECT_EQ(*(*hf)->ReadF32(t.name), values.at(t.name)) << t.name;
    }
    // The config reads back as the model, with the byte tokenizer's end-of-text as eos.
    ModelConfig want = cfg;
    want.eos_token_id = {ByteTokenizer::kEndOfText};
    EXPECT_EQ((*hf)->config().ToJson(), want.ToJson());
    EXPECT_EQ((*hf)->generation_defaults().eos_token_id,
              std::vector<int>{ByteTokenizer::kEndOfText});
    for (const char* recipe : {"f32", "q4_0"}) {
      const std::string a = ExportStmf(*h5, absl::StrCat(dir, "/direct-", recipe, ".stmf"), recipe);
      const std::string b =
          ExportStmf(**hf, absl::StrCat(dir, "/via-hf-", recipe, ".stmf"), recipe);
      ExpectSameTensors(a, b);
    }
  }
}

TEST(HfExportTest, BpeTokenizerPassesThroughAndReexportIsIdentical) {
  const std::string dir = FreshDir("bpe");
  const ModelConfig cfg = TinyExportConfig(true);
  const std::string tok_json = test_util::MinimalTokenizerJson();
  WriteTrainCheckpoint(dir + "/ckpt.h5", cfg, RandomValues(cfg, 3), "bpe", tok_json);
  auto h5 = OpenOrDie(dir + "/ckpt.h5");
  ASSERT_NE(h5, nullptr);
  ASSERT_TRUE(ExportHf(*h5, dir + "/hf", HfDType::kBF16).ok());
  EXPECT_EQ(FileContents(dir + "/hf/tokenizer.json"), tok_json);
  // And again from the HF directory (any TensorSource): the same files come out.
  auto hf = OpenOrDie(dir + "/hf");
  ASSERT_NE(hf, nullptr);
  ASSERT_TRUE(ExportHf(*hf, dir + "/hf2", HfDType::kBF16).ok());
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json",
                        "generation_config.json", "model.safetensors"}) {
    EXPECT_EQ(FileContents(dir + "/hf/" + f), FileContents(dir + "/hf2/" + f)) << f;
  }
}

TEST(HfExportTest, ConfigJsonHasTheReleasedKeys) {
  ModelConfig cfg = TinyExportConfig(true);
  cfg.bos_token_id = 5;
  cfg.eos_token_id = {6, 7};
  ASSERT_TRUE(ValidateModelConfig(cfg).ok());
  const std::string text = HfConfigJson(cfg, "bfloat16");
  const json j = json::parse(text);
  EXPECT_EQ(j["architectures"], json({"SmallThinkerForCausalLM"}));
  EXPECT_EQ(j["model_type"], "smallthinker");
  EXPECT_EQ(j["torch_dtype"], "bfloat16");
  EXPECT_EQ(j["transformers_version"], "4.53.3");
  EXPECT_TRUE(j.contains("rope_scaling") && j["rope_scaling"].is_null());
  EXPECT_EQ(j["norm_topk_prob"], true);
  EXPECT_EQ(j["bos_token_id"], 5);
  EXPECT_EQ(j["eos_token_id"], json({6, 7}));
  EXPECT_FALSE(j.contains("auto_map"));  // no remote code is shipped
  for (const char* key : {"hidden_size",
                          "num_hidden_layers",
                          "num_attention_heads",
                          "num_key_value_heads",
                          "head_dim",
                          "vocab_size",
                          "rms_norm_eps",
                          "rope_theta",
                          "max_position_embeddings",
                          "rope_layout",
                          "sliding_window_layout",
                          "sliding_window_size",
                          "moe_num_primary_experts",
                          "moe_num_active_primary_experts",
                          "moe_ffn_hidden_size",
                          "tie_word_embeddings",
                          "attention_dropout",
                          "initializer_range",
                          "use_cache",
                          "output_router_logits"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  // Reads back to the same model under both key policies.
  for (ConfigKeys keys : {ConfigKeys::kStrict, ConfigKeys::kHuggingFace}) {
    absl::StatusOr<ModelConfig> back = ParseModelConfig(text, keys);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->ToJson(), cfg.ToJson());
  }
  EXPECT_EQ(json::parse(HfConfigJson(cfg, "float32"))["torch_dtype"], "float32");
}

// ---------------------------------------------------------------------------------------------
// 2. bf16

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(HfExportTest, Bf16IsTheRoundedSourceAndReimportsAsTheRoundedModel) {
  const std::string dir = FreshDir("bf16");
  const ModelConfig cfg = TinyExportConfig(false);
  Values values = RandomValues(cfg, 21);
  // Values where the rounding matters, in a norm (stored f32 by every recipe): ties to even
  // both ways, a carry into the exponent, the largest float (rounds to inf), a subnormal, NaN
  // with a payload, infinities, signed zero.
  const std::vector<uint32_t> special = {0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x3f7fffffu,
                                         0x7f7fffffu, 0x00000001u, 0x7f800001u, 0xffc12345u,
                                         0x7f800000u, 0xff800000u, 0x80000000u};
  std::vector<float>& norm = values.at("model.norm.weight");
  for (size_t i = 0; i < special.size(); ++i) norm[i] = FromBits(special[i]);
  WriteTrainCheckpoint(dir + "/ckpt.h5", cfg, values);
  auto h5 = OpenOrDie(dir + "/ckpt.h5");
  ASSERT_NE(h5, nullptr);
  absl::StatusOr<HfExportReport> r = ExportHf(*h5, dir + "/hf", HfDType::kBF16);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(json::parse(FileContents(dir + "/hf/config.json"))["torch_dtype"], "bfloat16");

  absl::StatusOr<SafetensorsFile> st = SafetensorsFile::Open(dir + "/hf/model.safetensors");
  ASSERT_TRUE(st.ok()) << st.status();
  Values rounded;
  for (const SourceTensor& t : ExpectedTensors(cfg)) {
    const SafetensorsFile::Entry* e = st->Find(t.name);
    ASSERT_NE(e, nullptr) << t.name;
    EXPECT_EQ(e->tensor.dtype, "BF16");
    absl::StatusOr<std::vector<uint8_t>> raw = st->ReadRaw(t.name);
    ASSERT_TRUE(raw.ok()) << raw.status();
    const std::vector<float>& x = values.at(t.name);
    ASSERT_EQ(raw->size(), 2 * x.size());
    std::vector<float>& back = rounded[t.name];
    for (size_t i = 0; i < x.size(); ++i) {
      uint16_t h;
      std::memcpy(&h, raw->data() + 2 * i, 2);
      ASSERT_EQ(h, F32ToBF16(x[i])) << t.name << "[" << i << "]";
      back.push_back(BF16ToF32(h));
    }
  }
  // The special values, checked against the rule itself (not the codec).
  std::vector<uint8_t> raw = *st->ReadRaw("model.norm.weight");
  auto half = [&](size_t i) { return static_cast<uint16_t>(raw[2 * i] | (raw[2 * i + 1] << 8)); };
  EXPECT_EQ(half(0), 0x3f80);  // tie, even below
  EXPECT_EQ(half(1), 0x3f82);  // tie, even above
  EXPECT_EQ(half(2), 0x3f81);  // above the tie
  EXPECT_EQ(half(3), 0x3f80);  // carry into the exponent
  EXPECT_EQ(half(4), 0x7f80);  // rounds to +inf
  EXPECT_EQ(half(5), 0x0000);  // the smallest subnormal rounds to 0
  EXPECT_TRUE(std::isnan(BF16ToF32(half(6))));
  EXPECT_TRUE(std::isnan(BF16ToF32(half(7))));
  EXPECT_EQ(half(7) & 0x8000, 0x8000);  // NaN keeps its sign
  EXPECT_EQ(half(8), 0x7f80);
  EXPECT_EQ(half(9), 0xff80);
  EXPECT_EQ(half(10), 0x8000);

  // Re-import == exporting the rounded weights directly.
  WriteTrainCheckpoint(dir + "/rounded.h5", cfg, rounded);
  auto rounded_src = OpenOrDie(dir + "/rounded.h5");
  auto hf = OpenOrDie(dir + "/hf");
  ASSERT_NE(rounded_src, nullptr);
  ASSERT_NE(hf, nullptr);
  for (const char* recipe : {"f32", "q8_0"}) {
    const std::string a =
        ExportStmf(*rounded_src, absl::StrCat(dir, "/rounded-", recipe, ".stmf"), recipe);
    const std::string b = ExportStmf(*hf, absl::StrCat(dir, "/via-hf-", recipe, ".stmf"), recipe);
    ExpectSameTensors(a, b);
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Sharding

TEST(HfExportTest, ShardsWithIndexReadBackIdentically) {
  const std::string dir = FreshDir("shards");
  const ModelConfig cfg = TinyExportConfig(false);
  const Values values = RandomValues(cfg, 31);
  WriteTrainCheckpoint(dir + "/ckpt.h5", cfg, values);
  auto h5 = OpenOrDie(dir + "/ckpt.h5");
  ASSERT_NE(h5, nullptr);
  const std::vector<SourceTensor> expected = ExpectedTensors(cfg);
  int64_t total = 0, largest = 0;
  for (const SourceTensor& t : expected) {
    total += 4 * t.num_elements();
    largest = std::max(largest, 4 * t.num_elements());
  }
  // 1 byte: every tensor in a shard of its own; largest: several tensors share shards.
  for (int64_t max_shard : {int64_t{1}, largest}) {
    const std::string out = absl::StrCat(dir, "/hf-", max_shard);
    absl::StatusOr<HfExportReport> r = ExportHf(*h5, out, HfDType::kF32, max_shard);
    ASSERT_TRUE(r.ok()) << r.status();
    if (max_shard == 1) {
      EXPECT_EQ(r->shards, static_cast<int>(expected.size()));
    } else {
      EXPECT_GT(r->shards, 2);
      EXPECT_LT(r->shards, static_cast<int>(expected.size()));
    }
    EXPECT_FALSE(fs::exists(out + "/model.safetensors"));
    const json index = json::parse(FileContents(out + "/model.safetensors.index.json"));
    EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), total);
    ASSERT_EQ(index["weight_map"].size(), expected.size());
    std::map<std::string, int64_t> shard_bytes;
    std::set<std::string> names_seen;
    for (int i = 1; i <= r->shards; ++i) {
      char name[64];
      std::snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", i, r->shards);
      absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Open(out + "/" + name);
      ASSERT_TRUE(f.ok()) << f.status();
      for (const SafetensorsFile::Entry& e : f->entries()) {
        EXPECT_EQ(index["weight_map"][e.tensor.name], name) << e.tensor.name;
        shard_bytes[name] += e.end - e.begin;
        names_seen.insert(e.tensor.name);
      }
      if (f->entries().size() > 1) {
        EXPECT_LE(shard_bytes[name], max_shard) << name;
      }
    }
    EXPECT_EQ(names_seen.size(), expected.size());
    auto hf = OpenHfCheckpoint(out);
    ASSERT_TRUE(hf.ok()) << hf.status();
    for (const SourceTensor& t : expected) {
      EXPECT_EQ(*(*hf)->ReadF32(t.name), values.at(t.name)) << t.name;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 4. The safetensors writer and the directory transaction

TEST(SafetensorsWriterTest, HeaderIsPaddedToEightAndOffsetsAreContiguous) {
  const std::string dir = FreshDir("writer");
  // Names of lengths 1..8 move the unpadded header length through every residue mod 8.
  for (int extra = 1; extra <= 8; ++extra) {
    std::vector<SourceTensor> tensors = {{std::string(extra, 'a'), "F32", {2, 3}},
                                         {"b.bf16", "BF16", {5}},
                                         {"c.empty", "F32", {0, 4}},
                                         {"d.f16", "F16", {3}}};
    const std::string path = absl::StrCat(dir, "/t", extra, ".safetensors");
    auto w = SafetensorsWriter::Create(path, tensors);
    ASSERT_TRUE(w.ok()) << w.status();
    std::vector<std::string> payload;
    for (const SourceTensor& t : tensors) {
      std::string bytes(static_cast<size_t>(t.num_elements() * SafetensorsDTypeSize(t.dtype)),
                        '\0');
      for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7 + extra);
      ASSERT_TRUE((*w)->Add(t.name, bytes.data(), bytes.size()).ok());
      payload.push_back(bytes);
    }
    EXPECT_FALSE(fs::exists(path));  // nothing at the final name before Commit
    ASSERT_TRUE((*w)->Finish().ok());
    ASSERT_TRUE((*w)->Commit().ok());
    EXPECT_FALSE(fs::exists(TempPathFor(path)));

    // Independent parse of the bytes.
    const std::string file = FileContents(path);
    ASSERT_GE(file.size(), 8u);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(file[i]);
    EXPECT_EQ(n % 8, 0u) << "header length " << n;
    EXPECT_EQ((8 + n) % 8, 0u);
    ASSERT_LE(8 + n, file.size());
    const std::string header = file.substr(8, n);
    const size_t close = header.find_last_of('}');
    ASSERT_NE(close, std::string::npos);
    EXPECT_LT(header.size() - close - 1, 8u);  // padding shorter than 8
    for (size_t i = close + 1; i < header.size(); ++i) EXPECT_EQ(header[i], ' ');
    // The order in the header text is the data order; nlohmann's object would sort the keys,
    // so find the positions of the names in the text.
    const json j = json::parse(header);
    EXPECT_EQ(j["__metadata__"], json({{"format", "pt"}}));
    EXPECT_EQ(header.find("\"__metadata__\""), 1u);
    uint64_t expect_begin = 0;
    size_t last_pos = 0;
    for (size_t k = 0; k < tensors.size(); ++k) {
      const json& e = j[tensors[k].name];
      const size_t pos = header.find("\"" + tensors[k].name + "\":");
      EXPECT_GT(pos, last_pos) << tensors[k].name << " out of order";
      last_pos = pos;
      EXPECT_EQ(e["dtype"], tensors[k].dtype);
      EXPECT_EQ(e["shape"], json(tensors[k].shape));
      EXPECT_EQ(e.size(), 3u);
      const uint64_t begin = e["data_offsets"][0], end = e["data_offsets"][1];
      EXPECT_EQ(begin, expect_begin) << tensors[k].name;
      EXPECT_EQ(end - begin, payload[k].size());
      EXPECT_EQ(file.substr(8 + n + begin, end - begin), payload[k]);
      expect_begin = end;
    }
    EXPECT_EQ(8 + n + expect_begin, file.size());
    EXPECT_EQ(j.size(), tensors.size() + 1);
    // And our reader takes it.
    absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(f->ReadRaw("b.bf16")->data()), 10),
              payload[1]);
  }
}

TEST(SafetensorsWriterTest, MisuseIsAnErrorAndLeavesNothing) {
  const std::string dir = FreshDir("writer_misuse");
  const std::string path = dir + "/x.safetensors";
  const std::vector<SourceTensor> tensors = {{"a", "F32", {2}}, {"b", "F32", {1}}};
  {
    auto w = SafetensorsWriter::Create(path, tensors);
    ASSERT_TRUE(w.ok()) << w.status();
    const float v[2] = {1, 2};
    absl::Status s = (*w)->Add("b", v, 4);  // out of order
    EXPECT_TRUE(Contains(s, "expected 'a'")) << s;
    s = (*w)->Add("a", v, 4);  // wrong size
    EXPECT_TRUE(Contains(s, "'a' has 4 bytes, expected 8")) << s;
    ASSERT_TRUE((*w)->Add("a", v, 8).ok());
    s = (*w)->Finish();  // "b" missing
    EXPECT_TRUE(Contains(s, "next: 'b'")) << s;
    EXPECT_FALSE((*w)->Commit().ok());
    EXPECT_TRUE(fs::exists((*w)->temp_path()));
  }
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{});  // the destructor removed the temp file
  for (const std::vector<SourceTensor>& bad :
       {std::vector<SourceTensor>{{"a", "I8", {1}}}, std::vector<SourceTensor>{{"", "F32", {1}}},
        std::vector<SourceTensor>{{"a", "F32", {1}}, {"a", "F32", {1}}},
        std::vector<SourceTensor>{{"a", "F32", {-1}}},
        std::vector<SourceTensor>{{"bad\xff", "F32", {1}}}}) {
    auto w = SafetensorsWriter::Create(path, bad);
    EXPECT_FALSE(w.ok());
    EXPECT_TRUE(Contains(w.status(), path)) << w.status();
  }
  auto w = SafetensorsWriter::Create(dir + "/no/such/dir/x.safetensors", tensors);
  ASSERT_FALSE(w.ok());
  EXPECT_TRUE(Contains(w.status(), "no/such/dir/x.safetensors.tmp")) << w.status();
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{});
}

// A source that fails to read one tensor (a corrupt checkpoint found halfway through).
class FailingSource final : public TensorSource {
 public:
  FailingSource(const TensorSource* inner, std::string fail) : inner_(inner), fail_(fail) {}
  const ModelConfig& config() const override { return inner_->config(); }
  const std::vector<SourceTensor>& tensors() const override { return inner_->tensors(); }
  absl::StatusOr<std::vector<float>> ReadF32(const std::string& name) const override {
    if (name == fail_) return absl::DataLossError("injected read failure of " + name);
    return inner_->ReadF32(name);
  }
  std::string tokenizer_name() const override { return inner_->tokenizer_name(); }
  std::string tokenizer_json() const override { return inner_->tokenizer_json(); }
  std::string chat_template() const override { return inner_->chat_template(); }
  std::string description() const override { return "failing " + inner_->description(); }

 private:
  const TensorSource* inner_;
  std::string fail_;
};

TEST(HfExportTest, RefusesNonEmptyDirectoryWithoutForceAndForceKeepsOtherFiles) {
  const std::string dir = FreshDir("force");
  const ModelConfig cfg = TinyExportConfig(true);
  WriteTrainCheckpoint(dir + "/ckpt.h5", cfg, RandomValues(cfg, 41));
  auto h5 = OpenOrDie(dir + "/ckpt.h5");
  ASSERT_NE(h5, nullptr);
  const std::string out = dir + "/out";
  fs::create_directories(out);
  test_util::WriteFile(out + "/notes.txt", "mine");
  test_util::WriteFile(out + "/model.safetensors", "stale single file");
  test_util::WriteFile(out + "/model-00001-of-00099.safetensors", "stale shard");
  test_util::WriteFile(out + "/chat_template.jinja", "stale template");
  const std::vector<std::string> before = ListDir(out);
  absl::StatusOr<HfExportReport> r = ExportHf(*h5, out, HfDType::kBF16, 50'000);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status(), "not empty")) << r.status();
  EXPECT_TRUE(Contains(r.status(), "--force")) << r.status();
  EXPECT_EQ(ListDir(out), before);
  EXPECT_EQ(FileContents(out + "/model.safetensors"), "stale single file");

  r = ExportHf(*h5, out, HfDType::kBF16, 50'000, /*force=*/true);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_GT(r->shards, 1);
  EXPECT_EQ(FileContents(out + "/notes.txt"), "mine");
  // What a loader would have read instead of the new files is gone.
  EXPECT_FALSE(fs::exists(out + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(out + "/model-00001-of-00099.safetensors"));
  EXPECT_FALSE(fs::exists(out + "/chat_template.jinja"));
  std::vector<std::string> want = r->files;
  want.push_back("notes.txt");
  std::sort(want.begin(), want.end());
  EXPECT_EQ(ListDir(out), want);
  EXPECT_TRUE(OpenHfCheckpoint(out).ok());
}

TEST(HfExportTest, OutputThatIsAFileOrUnwritableIsAClearError) {
  const std::string dir = FreshDir("bad_output");
  const ModelConfig cfg = TinyExportConfig(true);
  WriteTrainCheckpoint(dir + "/ckpt.h5", cfg, RandomValues(cfg, 51));
  auto h5 = OpenOrDie(dir + "/ckpt.h5");
  ASSERT_NE(h5, nullptr);
  const std::string file = dir + "/a_file";
  test_util::WriteFile(file, "keep");
  for (bool force : {false, true}) {
    absl::StatusOr<HfExportReport> r = ExportHf(*h5, file, HfDType::kBF16, 5'000'000'000, force);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(Contains(r.status(), "is not a directory")) << r.status();
    EXPECT_EQ(FileContents(file), "keep");
  }
  // A path under a file.
  absl::StatusOr<HfExportReport> r = ExportHf(*h5, file + "/sub", HfDType::kBF16);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status(), file + "/sub")) << r.status();

  // A directory nobody may write (root ignores modes: there, a place no one can create in).
  std::string locked = dir + "/locked";
  fs::create_directories(locked);
  ASSERT_EQ(chmod(locked.c_str(), 0555), 0);
  std::string target = locked + "/out";
  if (geteuid() == 0) target = "/proc/st_hf_export_test/out";
  r = ExportHf(*h5, target, HfDType::kBF16);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status(), "cannot create output directory")) << r.status();
  EXPECT_FALSE(fs::exists(target));
  if (geteuid() != 0) {
    // An existing, empty but read-only directory: the first file cannot be created.
    r = ExportHf(*h5, locked, HfDType::kBF16);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(Contains(r.status(), locked + "/model.safetensors.tmp")) << r.status();
  }
  chmod(locked.c_str(), 0755);
  EXPECT_EQ(ListDir(locked), std::vector<std::string>{});
}

TEST(HfExportTest, FailureHalfwayLeavesNothingBehind) {
  const std::string dir = FreshDir("failure");
  const ModelConfig cfg = TinyExportConfig(true);
  WriteTrainCheckpoint(dir + "/ckpt.h5", cfg, RandomValues(cfg, 61));
  auto h5 = OpenOrDie(dir + "/ckpt.h5");
  ASSERT_NE(h5, nullptr);
  FailingSource failing(h5.get(), "model.layers.1.block_sparse_moe.experts.2.up.weight");

  // A new nested directory: created for the export, removed with it.
  absl::StatusOr<HfExportReport> r = ExportHf(failing, dir + "/new/a/b", HfDType::kBF16, 20'000);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status(), "injected read failure")) << r.status();
  EXPECT_FALSE(fs::exists(dir + "/new"));

  // An existing empty directory stays empty.
  fs::create_directories(dir + "/empty");
  r = ExportHf(failing, dir + "/empty", HfDType::kF32);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ListDir(dir + "/empty"), std::vector<std::string>{});

  // An earlier export, replaced with --force: untouched when the new one fails.
  ASSERT_TRUE(ExportHf(*h5, dir + "/prev", HfDType::kF32).ok());
  std::map<std::string, std::string> before;
  for (const std::string& f : ListDir(dir + "/prev")) before[f] = FileContents(dir + "/prev/" + f);
  r = ExportHf(failing, dir + "/prev", HfDType::kBF16, 20'000, /*force=*/true);
  ASSERT_FALSE(r.ok());
  std::map<std::string, std::string> after;
  for (const std::string& f : ListDir(dir + "/prev")) after[f] = FileContents(dir + "/prev/" + f);
  EXPECT_TRUE(before == after) << "the earlier export changed";

  // A source that does not match its config is refused before anything is created.
  // (an untied config over a tied model's tensors: lm_head.weight is missing)
  WriteTrainCheckpoint(dir + "/untied.h5", cfg, RandomValues(cfg, 62), "byte", "",
                       TinyExportConfig(false).ToJson());
  auto mismatched = OpenOrDie(dir + "/untied.h5");
  ASSERT_NE(mismatched, nullptr);
  r = ExportHf(*mismatched, dir + "/never", HfDType::kBF16);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status(), "lm_head.weight")) << r.status();
  EXPECT_FALSE(fs::exists(dir + "/never"));
}

TEST(HfExportTest, ParsesSizesAndTypes) {
  EXPECT_EQ(*ParseShardSize("5GB"), 5'000'000'000);
  EXPECT_EQ(*ParseShardSize("500mb"), 500'000'000);
  EXPECT_EQ(*ParseShardSize("2GiB"), int64_t{2} << 30);
  EXPECT_EQ(*ParseShardSize("64KiB"), 65536);
  EXPECT_EQ(*ParseShardSize("4096"), 4096);
  EXPECT_EQ(*ParseShardSize("10KB"), 10'000);
  for (const char* bad : {"", "0", "GB", "-1GB", "5XB", "1.5GB", "99999999999999999999GB"}) {
    EXPECT_FALSE(ParseShardSize(bad).ok()) << bad;
  }
  EXPECT_EQ(*ParseHfDType("bf16"), HfDType::kBF16);
  EXPECT_EQ(*ParseHfDType("float32"), HfDType::kF32);
  EXPECT_FALSE(ParseHfDType("f16").ok());
}

// ---------------------------------------------------------------------------------------------
// 5. The byte tokenizer as a Hugging Face tokenizer.json

// Random valid UTF-8: ASCII (controls included), 2-, 3- and 4-byte characters.
std::string RandomUtf8(std::mt19937& rng, int chars) {
  std::string s;
  std::uniform_int_distribution<int> kind(0, 4);
  for (int i = 0; i < chars; ++i) {
    uint32_t cp;
    switch (kind(rng)) {
      case 0:
      case 1:
        cp = std::uniform_int_distribution<uint32_t>(0, 0x7f)(rng);
        break;
      case 2:
        cp = std::uniform_int_distribution<uint32_t>(0x80, 0x7ff)(rng);
        break;
      case 3:
        cp = std::uniform_int_distribution<uint32_t>(0x800, 0xffff)(rng);
        if (cp >= 0xd800 && cp <= 0xdfff) cp = 0x20ac;  // no surrogates
        break;
      default:
        cp = std::uniform_int_distribution<uint32_t>(0x10000, 0x10ffff)(rng);
    }
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xc0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xe0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      s += static_cast<char>(0xf0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }
  return s;
}

TEST(HfExportTest, ByteTokenizerJsonEncodesAndDecodesAsTheByteTokenizer) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> bpe = MakeTokenizer("bpe", ByteLevelTokenizerJson());
  ASSERT_TRUE(bpe.ok()) << bpe.status();
  const ByteTokenizer byte;
  EXPECT_EQ((*bpe)->vocab_size(), byte.vocab_size());
  EXPECT_EQ((*bpe)->eos_id(), byte.eos_id());
  EXPECT_EQ((*bpe)->TokenId("<|endoftext|>"), ByteTokenizer::kEndOfText);
  // Every id decodes to the same bytes (ids 0..255 = the bytes, 256, and out of range).
  for (int32_t id = -2; id <= 258; ++id) {
    EXPECT_EQ((*bpe)->Decode({id}), byte.Decode({id})) << id;
  }
  std::mt19937 rng(5);
  std::uniform_int_distribution<int32_t> any_id(0, 256);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<int32_t> ids(40);
    for (int32_t& id : ids) id = any_id(rng);
    EXPECT_EQ((*bpe)->Decode(ids), byte.Decode(ids));
  }
  // Valid UTF-8 text encodes to its bytes.
  std::string ascii;
  for (int c = 0; c < 128; ++c) ascii += static_cast<char>(c);
  EXPECT_EQ((*bpe)->Encode(ascii), byte.Encode(ascii));
  for (const std::string& text :
       {std::string("  leading spaces, 'quotes' and\ttabs\r\n"),
        std::string("héllo wörld — ∑ 🙂 \xe4\xb8\xad\xe6\x96\x87")}) {
    EXPECT_EQ((*bpe)->Encode(text), byte.Encode(text)) << text;
  }
  for (int trial = 0; trial < 200; ++trial) {
    const std::string text = RandomUtf8(rng, 1 + trial % 64);
    ASSERT_EQ((*bpe)->Encode(text), byte.Encode(text)) << text;
    EXPECT_EQ((*bpe)->Decode((*bpe)->Encode(text)), text);
  }
  // The documented differences: a tokenizer.json tokenizer sees text, so invalid UTF-8 becomes
  // U+FFFD and "<|endoftext|>" is the special token.
  EXPECT_EQ((*bpe)->Encode("\xff"), byte.Encode("\xef\xbf\xbd"));
  EXPECT_EQ((*bpe)->Encode("<|endoftext|>"), std::vector<int32_t>{256});
}

TEST(HfExportTest, ByteTokenizerCheckpointExportsALoadableTokenizer) {
  const std::string dir = FreshDir("byte_tok");
  const ModelConfig cfg = TinyExportConfig(true);
  WriteTrainCheckpoint(dir + "/ckpt.h5", cfg, RandomValues(cfg, 71));
  auto h5 = OpenOrDie(dir + "/ckpt.h5");
  ASSERT_NE(h5, nullptr);
  ASSERT_EQ(h5->tokenizer_name(), "byte");
  ASSERT_TRUE(ExportHf(*h5, dir + "/hf", HfDType::kBF16).ok());
  EXPECT_EQ(FileContents(dir + "/hf/tokenizer.json"), ByteLevelTokenizerJson());
  const json tc = json::parse(FileContents(dir + "/hf/tokenizer_config.json"));
  EXPECT_EQ(tc["added_tokens_decoder"]["256"]["content"], "<|endoftext|>");
  // The checkpoint's tokenizer files name no eos_token; the end id's token is written, since
  // readers that ignore config.json's ids (llama.cpp's converter) otherwise fall back to their
  // own default (llama.cpp's GPT-2 vocabulary: ',' ends generation).
  EXPECT_EQ(tc["eos_token"], "<|endoftext|>");
  EXPECT_EQ(json::parse(FileContents(dir + "/hf/generation_config.json"))["eos_token_id"], 256);
  auto hf = OpenHfCheckpoint(dir + "/hf");
  ASSERT_TRUE(hf.ok()) << hf.status();
  auto tok = MakeTokenizer((*hf)->tokenizer_name(), (*hf)->tokenizer_json());
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string text = "In the beginning God created the heaven and the earth.\n";
  EXPECT_EQ((*tok)->Encode(text), ByteTokenizer().Encode(text));
}

}  // namespace
}  // namespace st
