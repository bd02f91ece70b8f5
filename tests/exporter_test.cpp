// Tests of the model-file exporter (infer/export/exporter.h): Hugging Face-format fixtures
// (sharded, bf16, tied and untied) and random-init sources export to the model file and match the
// source tensors after dequantization within the codec's bound; the recipe presets.
#include "infer/export/exporter.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "infer/export/random_source.h"
#include "infer/export/tensor_source.h"
#include "infer/format/model_file.h"
#include "infer/quant/codec.h"
#include "infer/tokenizer/bpe_trainer.h"
#include "model/file_io.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace st {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using test_util::FreshDir;

// test_util::TinyExportConfig with 4 experts of width 64 and an EOS id.
ModelConfig FixtureConfig(bool tied) {
  ModelConfig c = test_util::TinyExportConfig(tied);
  c.moe_num_primary_experts = 4;
  c.moe_ffn_hidden_size = 64;
  c.eos_token_id = {297};
  EXPECT_TRUE(ValidateModelConfig(c).ok());
  return c;
}

// Writes one safetensors file holding `names` (values as bf16).
void WriteSafetensors(const std::string& path, const std::vector<SourceTensor>& tensors,
                      const std::map<std::string, std::vector<float>>& values) {
  json header = json::object();
  std::string data;
  for (const SourceTensor& t : tensors) {
    const std::vector<float>& v = values.at(t.name);
    const size_t begin = data.size();
    for (float x : v) {
      const uint16_t b = F32ToBF16(x);
      data.append(reinterpret_cast<const char*>(&b), 2);
    }
    header[t.name] = {
        {"dtype", "BF16"}, {"shape", t.shape}, {"data_offsets", {begin, data.size()}}};
  }
  header["__metadata__"] = {{"format", "pt"}};
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  const uint64_t n = h.size();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << h << data;
}

struct Fixture {
  std::string dir;
  ModelConfig cfg;
  std::map<std::string, std::vector<float>> values;  // exactly representable in bf16
};

// A Hugging Face directory: config.json, two safetensors shards + index, tokenizer.json.
Fixture MakeHfFixture(const std::string& name, bool tied) {
  Fixture f{FreshDir(name), FixtureConfig(tied), {}};
  f.values = test_util::RandomValues(f.cfg, 7);
  for (auto& [tensor, v] : f.values) {
    const bool norm = tensor.find("norm") != std::string::npos;
    for (float& x : v) x = BF16ToF32(F32ToBF16(x));
    if (!v.empty()) v[0] = BF16ToF32(F32ToBF16(norm ? 2.5f : 0.75f));  // an outlier per tensor
  }
  std::vector<SourceTensor> all = ExpectedTensors(f.cfg);
  std::vector<SourceTensor> a(all.begin(), all.begin() + all.size() / 2);
  std::vector<SourceTensor> b(all.begin() + all.size() / 2, all.end());
  WriteSafetensors(f.dir + "/model-00001-of-00002.safetensors", a, f.values);
  WriteSafetensors(f.dir + "/model-00002-of-00002.safetensors", b, f.values);
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (const auto& t : a) index["weight_map"][t.name] = "model-00001-of-00002.safetensors";
  for (const auto& t : b) index["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  test_util::WriteFile(f.dir + "/model.safetensors.index.json", index.dump(2));
  json cfg = json::parse(f.cfg.ToJson());
  cfg["architectures"] = {"SmallThinkerForCausalLM"};
  cfg["torch_dtype"] = "bfloat16";
  test_util::WriteFile(f.dir + "/config.json", cfg.dump(2));
  BpeTrainOptions topt;
  topt.vocab_size = 300;
  topt.min_frequency = 1;
  auto tok = TrainBpe({"the quick brown fox jumps over the lazy dog. the end. the the the"}, topt);
  EXPECT_TRUE(tok.ok()) << tok.status();
  test_util::WriteFile(f.dir + "/tokenizer.json", *tok);
  return f;
}

// Largest |x| of each 32-block of a row-major matrix's rows.
std::vector<float> BlockAmax(const std::vector<float>& x, int64_t cols) {
  std::vector<float> amax;
  for (size_t r = 0; r < x.size() / cols; ++r) {
    for (int64_t b = 0; b < cols; b += kQBlock) {
      float m = 0;
      for (int64_t c = b; c < std::min<int64_t>(cols, b + kQBlock); ++c) {
        m = std::max(m, std::abs(x[r * cols + c]));
      }
      amax.push_back(m);
    }
  }
  return amax;
}

// Every source tensor, read back from the file and dequantized, is within the codec's bound.
void ExpectFileMatchesSource(const ModelFile& m, const Fixture& f, bool exact) {
  const int64_t H = f.cfg.hidden_size, F = f.cfg.moe_ffn_hidden_size;
  int checked = 0;
  for (const auto& [hf, src] : f.values) {
    if (hf == "lm_head.weight" && f.cfg.tie_word_embeddings) continue;
    const std::string name = HfToFileName(hf);
    ASSERT_FALSE(name.empty()) << hf;
    const TensorInfo* t = m.Find(name);
    ASSERT_NE(t, nullptr) << name;
    std::vector<float> want = src;
    if (hf.find(".down.weight") != std::string::npos) {  // stored transposed: [F, H]
      ASSERT_EQ(t->dims, (std::vector<int64_t>{F, H})) << name;
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t j = 0; j < F; ++j) want[j * H + h] = src[h * F + j];
      }
    }
    const int64_t cols = t->dims.back();
    std::vector<float> got(want.size());
    DequantizeRow(t->dtype, m.TensorData(*t), static_cast<int64_t>(got.size()), got.data());
    const std::vector<float> amax = BlockAmax(want, cols);
    const int64_t block = t->dtype == DType::kQ8_0 || t->dtype == DType::kQ4_0 ? kQBlock : 1;
    for (size_t i = 0; i < want.size(); ++i) {
      const size_t row = i / cols, in_row = i % cols;
      const float a =
          block == 1 ? std::abs(want[i]) : amax[row * (cols / kQBlock) + in_row / kQBlock];
      const double bound = exact ? 0.0 : QuantErrorBound(t->dtype, a);
      ASSERT_LE(std::abs(static_cast<double>(got[i]) - want[i]), bound)
          << name << " element " << i << " (" << DTypeName(t->dtype) << ")";
    }
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(m.tensors().size()));  // every tensor in the file
}

TEST(ExportTest, HfCheckpointExportsAndMatchesWithinTheCodecBound) {
  for (bool tied : {true, false}) {
    Fixture f = MakeHfFixture(tied ? "export_hf_tied" : "export_hf_untied", tied);
    auto src = OpenHfCheckpoint(f.dir);
    ASSERT_TRUE(src.ok()) << src.status();
    for (const char* preset : {"f32", "q8_0", "q4_0"}) {
      ExportOptions opt;
      opt.recipe = *RecipePreset(preset);
      const std::string out = absl::StrCat(f.dir, "/model-", preset, ".stmf");
      auto report = ExportModel(**src, out, opt);
      ASSERT_TRUE(report.ok()) << report.status();
      EXPECT_FALSE(fs::exists(TempPathFor(out)));
      ModelFile::Options ropt;
      ropt.verify_checksums = true;
      auto m = ModelFile::Open(out, ropt);
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_EQ((*m)->config().ToJson(), f.cfg.ToJson());
      EXPECT_EQ((*m)->Find("output") != nullptr, !tied);
      EXPECT_EQ((*m)->tokenizer_name(), "bpe");
      EXPECT_EQ((*m)->tokenizer_json(), (*src)->tokenizer_json());
      EXPECT_EQ((*m)->eos_token_ids(), (std::vector<int64_t>{297}));
      const TensorInfo* up = (*m)->Find(ExpertTensorName(1, 3, ExpertPart::kUp));
      ASSERT_NE(up, nullptr);
      EXPECT_EQ(up->dtype, std::string(preset) == "q4_0"   ? DType::kQ4_0
                           : std::string(preset) == "q8_0" ? DType::kQ8_0
                                                           : DType::kF32);
      EXPECT_EQ((*m)->Find("blk.0.ffn_gate_inp")->dtype, DType::kF32);  // router stays f32
      ExpectFileMatchesSource(**m, f, std::string(preset) == "f32");
      // Error statistics are reported for every class, and q4_0 experts are the coarsest.
      EXPECT_EQ(report->classes.at("expert").tensors, 2 * 4 * 3);
      if (std::string(preset) == "q4_0") {
        EXPECT_GT(report->classes.at("expert").relative_rms(),
                  report->classes.at("attention").relative_rms());
      }
      if (std::string(preset) == "f32") {
        EXPECT_EQ(report->classes.at("expert").max_abs_error, 0);
      }
    }
  }
}

TEST(ExportTest, IncompleteCheckpointFailsAndWritesNothing) {
  Fixture f = MakeHfFixture("export_incomplete", true);
  // Drop one expert tensor from the index and its shard by rewriting shard 2 without it.
  std::vector<SourceTensor> all = ExpectedTensors(f.cfg);
  std::vector<SourceTensor> b(all.begin() + all.size() / 2, all.end() - 1);
  WriteSafetensors(f.dir + "/model-00002-of-00002.safetensors", b, f.values);
  json index = json::parse(test_util::FileContents(f.dir + "/model.safetensors.index.json"));
  index["weight_map"].erase(all.back().name);
  test_util::WriteFile(f.dir + "/model.safetensors.index.json", index.dump());
  auto src = OpenHfCheckpoint(f.dir);
  ASSERT_TRUE(src.ok()) << src.status();
  ExportOptions opt;
  opt.recipe = *RecipePreset("q4_0");
  auto report = ExportModel(**src, f.dir + "/out.stmf", opt);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find(all.back().name), std::string::npos) << report.status();
  EXPECT_FALSE(fs::exists(f.dir + "/out.stmf"));
  EXPECT_FALSE(fs::exists(TempPathFor(f.dir + "/out.stmf")));
  EXPECT_FALSE(RecipePreset("q3_k").ok());
}

TEST(ExportTest, RecipePresets) {
  auto pure = RecipePreset("q4_0_pure");
  ASSERT_TRUE(pure.ok()) << pure.status();
  EXPECT_EQ(pure->ToString(),
            "q4_0_pure: embedding=q4_0 attention=q4_0 router=f32 norms=f32 experts=q4_0 "
            "lm_head=q4_0");
  EXPECT_EQ(RecipePreset("q4_0")->ToString(),
            "q4_0: embedding=q8_0 attention=q8_0 router=f32 norms=f32 experts=q4_0 lm_head=q8_0");
  EXPECT_EQ(RecipePreset("q8_0")->ToString(),
            "q8_0: embedding=q8_0 attention=q8_0 router=f32 norms=f32 experts=q8_0 lm_head=q8_0");
  EXPECT_NE(RecipePreset("q3_k").status().message().find("q4_0_pure"), std::string::npos);
}

// A random-init export (st-export --random-init) of tiny, tied and untied, with q4_0_pure:
// the file verifies, has the preset's types, matches the source within the codec's bound, and
// the same seed gives the same bytes.
TEST(ExportTest, RandomInitExportsQ4_0Pure) {
  for (bool tied : {true, false}) {
    ModelConfig cfg = test_util::ShippedConfig("tiny");
    cfg.tie_word_embeddings = tied;
    Fixture f{FreshDir(tied ? "export_random_tied" : "export_random_untied"), cfg, {}};
    ExportOptions opt;
    opt.recipe = *RecipePreset("q4_0_pure");
    std::string bytes[3];
    for (int run = 0; run < 3; ++run) {
      auto src = MakeRandomSource(f.cfg, run < 2 ? 11 : 12);  // runs 0 and 1: the same seed
      ASSERT_TRUE(src.ok()) << src.status();
      const std::string out = absl::StrCat(f.dir, "/random-", run, ".stmf");
      auto report = ExportModel(**src, out, opt);
      ASSERT_TRUE(report.ok()) << report.status();
      EXPECT_EQ(report->classes.at("expert").tensors, 4 * 8 * 3);
      bytes[run] = test_util::FileContents(out);
      if (run > 0) continue;
      ModelFile::Options ropt;
      ropt.verify_checksums = true;
      auto m = ModelFile::Open(out, ropt);
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_EQ((*m)->config().ToJson(), f.cfg.ToJson());
      EXPECT_EQ((*m)->tokenizer_name(), "byte");
      EXPECT_EQ((*m)->eos_token_ids(), (std::vector<int64_t>{256}));  // the byte tokenizer's
      for (const TensorInfo& t : (*m)->tensors()) {
        const bool f32 = t.dims.size() == 1 || t.name.find("ffn_gate_inp") != std::string::npos;
        EXPECT_EQ(t.dtype, f32 ? DType::kF32 : DType::kQ4_0) << t.name;
      }
      EXPECT_EQ((*m)->Find("output") != nullptr, !tied);
      for (const SourceTensor& t : (*src)->tensors()) f.values[t.name] = *(*src)->ReadF32(t.name);
      ExpectFileMatchesSource(**m, f, false);
    }
    EXPECT_EQ(bytes[0], bytes[1]);
    EXPECT_NE(bytes[0], bytes[2]);
  }
}

}  // namespace
}  // namespace st
