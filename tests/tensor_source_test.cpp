// Tensor source tests: hand-built safetensors files (valid and malformed), Hugging Face
// checkpoint directories (single file and sharded, bf16/f16/f32, tied and untied), and our
// HDF5 training checkpoint read back through the same interface.
#include "infer/export/tensor_source.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "data/hdf5.h"
#include "nlohmann/json.hpp"
#include "tests/test_tokenizers.h"
#include "tests/test_util.h"

namespace st {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

using test_util::Contains;
using test_util::TestDir;
using test_util::WriteFile;

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Exact encoders for values that are representable (the test picks only such values).
uint16_t ToBf16(float f) {
  const uint32_t u = FloatBits(f);
  EXPECT_EQ(u & 0xffffu, 0u) << f << " is not exact in bf16";
  return static_cast<uint16_t>(u >> 16);
}
uint16_t ToF16(float f) {
  if (f == 0.0f) return std::signbit(f) ? 0x8000 : 0;
  const uint32_t u = FloatBits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const int32_t exp = static_cast<int32_t>((u >> 23) & 0xff) - 127 + 15;
  const uint32_t mant = u & 0x7fffffu;
  EXPECT_TRUE(exp > 0 && exp < 31 && (mant & 0x1fffu) == 0) << f << " is not a normal f16";
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13));
}

// Values exactly representable in bf16 and f16: multiples of 1/4 in [-4, 4].
std::vector<float> Values(int64_t n, int seed) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>((i * 7 + seed * 5) % 33 - 16) * 0.25f;
  return v;
}

// Builds a safetensors file from tensors given as float values in a chosen dtype.
struct StTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

std::string EncodeValues(const StTensor& t) {
  std::string out;
  for (float f : t.values) {
    if (t.dtype == "F32") {
      out.append(reinterpret_cast<const char*>(&f), 4);
    } else {
      const uint16_t h = t.dtype == "BF16" ? ToBf16(f) : ToF16(f);
      out.append(reinterpret_cast<const char*>(&h), 2);
    }
  }
  return out;
}

std::string Assemble(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string BuildSafetensors(const std::vector<StTensor>& tensors) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const StTensor& t : tensors) {
    const std::string bytes = EncodeValues(t);
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + bytes.size()}}};
    data += bytes;
  }
  return Assemble(header.dump(), data);
}

// A tiny SmallThinker config: 1 layer, 2 experts.
json TinyConfigJson(bool tied) {
  return json{{"model_type", "smallthinker"},
              {"architectures", {"SmallThinkerForCausalLM"}},
              {"num_hidden_layers", 1},
              {"hidden_size", 8},
              {"num_attention_heads", 2},
              {"num_key_value_heads", 1},
              {"head_dim", 4},
              {"vocab_size", 16},
              {"moe_num_primary_experts", 2},
              {"moe_num_active_primary_experts", 1},
              {"moe_ffn_hidden_size", 4},
              {"rope_layout", {1}},
              {"sliding_window_layout", {0}},
              {"tie_word_embeddings", tied}};
}

// Every tensor of the tiny model; dtypes cycle through `dtypes` so each file mixes them.
std::vector<StTensor> TinyTensors(bool tied, const std::vector<std::string>& dtypes) {
  ModelConfig cfg = *ParseModelConfig(TinyConfigJson(tied).dump());
  std::vector<StTensor> out;
  int i = 0;
  for (const SourceTensor& t : ExpectedTensors(cfg)) {
    StTensor s;
    s.name = t.name;
    s.dtype = dtypes[i % dtypes.size()];
    s.shape = t.shape;
    s.values = Values(t.num_elements(), i);
    out.push_back(std::move(s));
    ++i;
  }
  return out;
}

const std::string kTokenizerJson = test_util::MinimalTokenizerJson();

// Writes an HF checkpoint directory. `shards` > 1 splits tensors round-robin and writes the
// index; returns the tensors written.
std::vector<StTensor> WriteHfDir(const std::string& dir, bool tied,
                                 const std::vector<std::string>& dtypes, int shards,
                                 bool tokenizer = true) {
  std::vector<StTensor> tensors = TinyTensors(tied, dtypes);
  WriteFile(dir + "/config.json", TinyConfigJson(tied).dump(2));
  if (shards <= 1) {
    WriteFile(dir + "/model.safetensors", BuildSafetensors(tensors));
  } else {
    std::vector<std::vector<StTensor>> parts(static_cast<size_t>(shards));
    json weight_map = json::object();
    for (size_t i = 0; i < tensors.size(); ++i) {
      const int s = static_cast<int>(i % static_cast<size_t>(shards));
      parts[s].push_back(tensors[i]);
      weight_map[tensors[i].name] = absl::StrCat("model-", s + 1, "-of-", shards, ".safetensors");
    }
    for (int s = 0; s < shards; ++s) {
      WriteFile(absl::StrCat(dir, "/model-", s + 1, "-of-", shards, ".safetensors"),
                BuildSafetensors(parts[s]));
    }
    WriteFile(dir + "/model.safetensors.index.json",
              json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump(2));
  }
  if (tokenizer) WriteFile(dir + "/tokenizer.json", kTokenizerJson);
  return tensors;
}

void ExpectSourceMatches(const TensorSource& src, const std::vector<StTensor>& tensors) {
  ASSERT_EQ(src.tensors().size(), tensors.size());
  for (const StTensor& t : tensors) {
    const SourceTensor* st = src.Find(t.name);
    ASSERT_NE(st, nullptr) << t.name;
    EXPECT_EQ(st->dtype, t.dtype) << t.name;
    EXPECT_EQ(st->shape, t.shape) << t.name;
    absl::StatusOr<std::vector<float>> got = src.ReadF32(t.name);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, t.values) << t.name;
  }
}

// ---------------------------------------------------------------------------------------------
// Safetensors

TEST(SafetensorsTest, ReadsF32F16Bf16Exactly) {
  const std::string dir = TestDir();
  std::vector<StTensor> tensors = {
      {"a.f32", "F32", {3, 5}, Values(15, 1)},
      {"b.f16", "F16", {4}, Values(4, 2)},
      {"c.bf16", "BF16", {2, 3, 2}, Values(12, 3)},
      {"d.empty", "F32", {0, 7}, {}},
      {"e.scalar", "BF16", {}, {1.5f}},
  };
  tensors[0].values[0] = 0.1f;  // f32 keeps arbitrary values
  const std::string path = dir + "/m.safetensors";
  WriteFile(path, BuildSafetensors(tensors));
  absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->entries().size(), tensors.size());
  for (const StTensor& t : tensors) {
    const SafetensorsFile::Entry* e = f->Find(t.name);
    ASSERT_NE(e, nullptr) << t.name;
    EXPECT_EQ(e->tensor.dtype, t.dtype);
    EXPECT_EQ(e->tensor.shape, t.shape);
    absl::StatusOr<std::vector<float>> got = f->ReadF32(t.name);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, t.values) << t.name;
  }
  absl::StatusOr<std::vector<uint8_t>> raw = f->ReadRaw("b.f16");
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->size(), 8u);
  EXPECT_FALSE(f->ReadF32("nope").ok());
  EXPECT_EQ(SafetensorsDTypeSize("BF16"), 2);
  EXPECT_EQ(SafetensorsDTypeSize("I64"), 0);
}

TEST(SafetensorsTest, F16AndBf16SpecialValues) {
  const std::string dir = TestDir();
  const std::vector<uint16_t> f16 = {0x0001, 0x03ff, 0x0400, 0x3c00, 0x7bff,
                                     0x7c00, 0xfc00, 0x8000, 0xc000, 0x7e00};
  const std::vector<uint16_t> bf16 = {0x3f80, 0xbf80, 0x7f80, 0x0001, 0x8000};
  std::string data(reinterpret_cast<const char*>(f16.data()), f16.size() * 2);
  data.append(reinterpret_cast<const char*>(bf16.data()), bf16.size() * 2);
  json h = {{"h", {{"dtype", "F16"}, {"shape", {10}}, {"data_offsets", {0, 20}}}},
            {"b", {{"dtype", "BF16"}, {"shape", {5}}, {"data_offsets", {20, 30}}}}};
  WriteFile(dir + "/s.safetensors", Assemble(h.dump(), data));
  absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Open(dir + "/s.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  std::vector<float> h32 = *f->ReadF32("h");
  EXPECT_EQ(h32[0], std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(h32[1], std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(h32[2], std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(h32[3], 1.0f);
  EXPECT_EQ(h32[4], 65504.0f);
  EXPECT_EQ(h32[5], INFINITY);
  EXPECT_EQ(h32[6], -INFINITY);
  EXPECT_EQ(h32[7], 0.0f);
  EXPECT_TRUE(std::signbit(h32[7]));
  EXPECT_EQ(h32[8], -2.0f);
  EXPECT_TRUE(std::isnan(h32[9]));
  std::vector<float> b32 = *f->ReadF32("b");
  EXPECT_EQ(b32[0], 1.0f);
  EXPECT_EQ(b32[1], -1.0f);
  EXPECT_EQ(b32[2], INFINITY);
  EXPECT_EQ(b32[3], std::ldexp(1.0f, -133));  // bf16 subnormal
  EXPECT_TRUE(std::signbit(b32[4]));
}

// Writes `bytes`, opens it, expects failure whose message contains each needle and the path.
void ExpectRejected(const std::string& bytes, const std::vector<std::string>& needles) {
  const std::string path = TestDir() + "/bad.safetensors";
  WriteFile(path, bytes);
  absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok()) << "accepted";
  EXPECT_TRUE(Contains(f.status(), path)) << f.status();
  for (const std::string& n : needles) {
    EXPECT_TRUE(Contains(f.status(), n)) << "'" << f.status().message() << "' lacks '" << n << "'";
  }
}

std::string OneTensor(const json& entry, size_t data_bytes) {
  return Assemble(json{{"w", entry}}.dump(), std::string(data_bytes, '\x11'));
}

TEST(SafetensorsTest, RejectsShortFileAndBadHeaderLength) {
  ExpectRejected("abc", {"too short"});
  // Header length larger than the file.
  std::string s = Assemble("{}", "");
  s[0] = 100;
  ExpectRejected(s, {"larger than the file"});
  // Absurd header length.
  std::string huge(8, '\xff');
  ExpectRejected(huge + "{}", {"exceeds the limit"});
}

TEST(SafetensorsTest, RejectsBadJson) {
  ExpectRejected(Assemble("{\"w\": {", ""), {"not valid JSON"});
  ExpectRejected(Assemble("[1, 2]", ""), {"not a JSON object"});
  ExpectRejected(Assemble(R"({"__metadata__": 3})", ""), {"__metadata__"});
  ExpectRejected(Assemble(R"({"w": 3})", ""), {"'w'", "not a JSON object"});
}

TEST(SafetensorsTest, RejectsUnknownDtype) {
  ExpectRejected(OneTensor({{"dtype", "Q7"}, {"shape", {2}}, {"data_offsets", {0, 2}}}, 2),
                 {"'w'", "unsupported dtype 'Q7'"});
  ExpectRejected(OneTensor({{"shape", {2}}, {"data_offsets", {0, 2}}}, 2), {"'w'", "dtype"});
}

TEST(SafetensorsTest, RejectsBadShapes) {
  ExpectRejected(OneTensor({{"dtype", "F32"}, {"shape", {-1}}, {"data_offsets", {0, 0}}}, 0),
                 {"'w'", "non-negative"});
  ExpectRejected(OneTensor({{"dtype", "F32"}, {"shape", {1.5}}, {"data_offsets", {0, 0}}}, 0),
                 {"'w'", "non-negative integer"});
  ExpectRejected(
      OneTensor(
          {{"dtype", "F32"}, {"shape", {1, 1, 1, 1, 1, 1, 1, 1, 1}}, {"data_offsets", {0, 4}}}, 4),
      {"'w'", "dimensions"});
  ExpectRejected(OneTensor({{"dtype", "F32"},
                            {"shape", {int64_t{1} << 40, int64_t{1} << 40}},
                            {"data_offsets", {0, 4}}},
                           4),
                 {"'w'", "overflows"});
}

TEST(SafetensorsTest, RejectsShapeOffsetMismatch) {
  ExpectRejected(OneTensor({{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 20}}}, 24),
                 {"'w'", "span 20 bytes", "needs 24"});
  ExpectRejected(OneTensor({{"dtype", "BF16"}, {"shape", {4}}, {"data_offsets", {0, 16}}}, 16),
                 {"'w'", "needs 8"});
}

TEST(SafetensorsTest, RejectsOffsetsPastEndAndTruncatedData) {
  ExpectRejected(OneTensor({{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {8, 24}}}, 16),
                 {"'w'", "past the end"});
  ExpectRejected(OneTensor({{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {8, 4}}}, 16),
                 {"'w'", "begin > end"});
  ExpectRejected(OneTensor({{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0}}}, 16),
                 {"'w'", "data_offsets"});
  // A valid file cut short: the last tensor's data is missing.
  std::vector<StTensor> t = {{"x", "F32", {4}, Values(4, 0)}, {"y", "F32", {4}, Values(4, 1)}};
  std::string bytes = BuildSafetensors(t);
  ExpectRejected(bytes.substr(0, bytes.size() - 3), {"'y'", "past the end"});
}

TEST(SafetensorsTest, RejectsOverlappingTensors) {
  json h = {{"a", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16}}}},
            {"b", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {12, 20}}}}};
  ExpectRejected(Assemble(h.dump(), std::string(20, '\0')), {"'a'", "'b'", "overlap"});
  // Identical ranges overlap too (zero-sized tensors at the same offset do not).
  json same = {{"a", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4}}}},
               {"b", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4}}}}};
  ExpectRejected(Assemble(same.dump(), std::string(4, '\0')), {"overlap"});
  json empties = {{"a", {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {0, 0}}}},
                  {"b", {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {0, 0}}}}};
  const std::string path = TestDir() + "/ok.safetensors";
  WriteFile(path, Assemble(empties.dump(), ""));
  EXPECT_TRUE(SafetensorsFile::Open(path).ok());
}

TEST(SafetensorsTest, MissingFileIsAnError) {
  absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Open("/nonexistent/x.safetensors");
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(Contains(f.status(), "/nonexistent/x.safetensors"));
}

// ---------------------------------------------------------------------------------------------
// Hugging Face checkpoint directories

TEST(HfCheckpointTest, SingleFileUntiedBf16) {
  const std::string dir = TestDir();
  std::vector<StTensor> tensors = WriteHfDir(dir, /*tied=*/false, {"BF16"}, 1);
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenHfCheckpoint(dir);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->config().num_hidden_layers, 1);
  EXPECT_FALSE((*src)->config().tie_word_embeddings);
  EXPECT_NE((*src)->Find("lm_head.weight"), nullptr);
  ExpectSourceMatches(**src, tensors);
  EXPECT_TRUE(CheckTensorsMatchConfig(**src).ok()) << CheckTensorsMatchConfig(**src);
  EXPECT_EQ((*src)->tokenizer_name(), "bpe");
  EXPECT_EQ((*src)->tokenizer_json(), kTokenizerJson);
  EXPECT_EQ((*src)->chat_template(), "");
  EXPECT_TRUE(Contains(absl::InvalidArgumentError((*src)->description()), dir));
}

TEST(HfCheckpointTest, ShardedTiedMixedDtypesWithChatTemplate) {
  const std::string dir = TestDir();
  std::vector<StTensor> tensors = WriteHfDir(dir, /*tied=*/true, {"BF16", "F16", "F32"}, 3);
  WriteFile(dir + "/tokenizer_config.json",
            json{{"chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}"}}.dump());
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenTensorSource(dir);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_TRUE((*src)->config().tie_word_embeddings);
  EXPECT_EQ((*src)->Find("lm_head.weight"), nullptr);
  ExpectSourceMatches(**src, tensors);
  EXPECT_TRUE(CheckTensorsMatchConfig(**src).ok()) << CheckTensorsMatchConfig(**src);
  EXPECT_EQ((*src)->chat_template(), "{% for m in messages %}{{ m.content }}{% endfor %}");
  EXPECT_TRUE(Contains(absl::InvalidArgumentError((*src)->description()), "3 safetensors"));
}

TEST(HfCheckpointTest, ChatTemplateListTakesDefault) {
  const std::string dir = TestDir();
  WriteHfDir(dir, true, {"F32"}, 1);
  WriteFile(
      dir + "/tokenizer_config.json",
      json{{"chat_template",
            {{{"name", "tool_use"}, {"template", "T"}}, {{"name", "default"}, {"template", "D"}}}}}
          .dump());
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenHfCheckpoint(dir);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->chat_template(), "D");
}

TEST(HfCheckpointTest, TiedWithRedundantLmHeadIsAccepted) {
  const std::string dir = TestDir();
  std::vector<StTensor> tensors = TinyTensors(/*tied=*/true, {"F32"});
  tensors.push_back({"lm_head.weight", "F32", {16, 8}, Values(128, 9)});
  WriteFile(dir + "/config.json", TinyConfigJson(true).dump());
  WriteFile(dir + "/model.safetensors", BuildSafetensors(tensors));
  WriteFile(dir + "/tokenizer.json", kTokenizerJson);
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenHfCheckpoint(dir);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_TRUE(CheckTensorsMatchConfig(**src).ok()) << CheckTensorsMatchConfig(**src);
}

TEST(HfCheckpointTest, MissingTensorWrongShapeAndUnexpectedTensorAreNamed) {
  const std::string dir = TestDir();
  std::vector<StTensor> tensors = TinyTensors(/*tied=*/false, {"BF16"});
  tensors.erase(tensors.begin() + 3);  // a layer-0 attention projection
  const std::string dropped = "model.layers.0.self_attn.k_proj.weight";
  ASSERT_EQ(tensors[2].name, "model.layers.0.self_attn.q_proj.weight");
  tensors.push_back({"model.layers.0.mlp.extra.weight", "F32", {2}, {1, 2}});
  for (StTensor& t : tensors) {
    if (t.name == "model.norm.weight") {
      t.shape = {4};
      t.values.resize(4);
    }
  }
  WriteFile(dir + "/config.json", TinyConfigJson(false).dump());
  WriteFile(dir + "/model.safetensors", BuildSafetensors(tensors));
  WriteFile(dir + "/tokenizer.json", kTokenizerJson);
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenHfCheckpoint(dir);
  ASSERT_TRUE(src.ok()) << src.status();
  absl::Status s = CheckTensorsMatchConfig(**src);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, "missing 1: " + dropped)) << s;
  EXPECT_TRUE(Contains(s, "model.norm.weight has shape [4], expected [8]")) << s;
  EXPECT_TRUE(Contains(s, "unexpected 1: model.layers.0.mlp.extra.weight")) << s;
}

TEST(HfCheckpointTest, UntiedWithoutLmHeadIsMissing) {
  const std::string dir = TestDir();
  std::vector<StTensor> tensors = TinyTensors(/*tied=*/true, {"F32"});  // no lm_head
  WriteFile(dir + "/config.json", TinyConfigJson(false).dump());
  WriteFile(dir + "/model.safetensors", BuildSafetensors(tensors));
  WriteFile(dir + "/tokenizer.json", kTokenizerJson);
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenHfCheckpoint(dir);
  ASSERT_TRUE(src.ok()) << src.status();
  absl::Status s = CheckTensorsMatchConfig(**src);
  EXPECT_TRUE(Contains(s, "missing 1: lm_head.weight")) << s;
}

TEST(HfCheckpointTest, IndexParserKeepsShardsInsideTheDirectory) {
  auto m = ParseSafetensorsIndex(
      R"({"metadata": {"total_size": 8}, "weight_map": {"a": "s1.safetensors", "b": "s2"}})",
      "idx.json");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->size(), 2u);
  EXPECT_EQ(m->at("b"), "s2");
  for (const char* bad :
       {"", "[]", "{}", R"({"weight_map": []})", R"({"weight_map": {"a": "../x"}})",
        R"({"weight_map": {"a": "/abs"}})", R"({"weight_map": {"a": ".."}})",
        R"({"weight_map": {"a": ""}})", R"({"weight_map": {"a": 3}})",
        R"({"weight_map": {"a": "x\\y"}})", R"({"weight_map": {"a": "x\u0000y"}})"}) {
    auto r = ParseSafetensorsIndex(bad, "idx.json");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_TRUE(Contains(r.status(), "idx.json: ")) << r.status();
  }
}

TEST(HfCheckpointTest, MissingTokenizerIsAnError) {
  const std::string dir = TestDir();
  WriteHfDir(dir, true, {"BF16"}, 1, /*tokenizer=*/false);
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenHfCheckpoint(dir);
  ASSERT_FALSE(src.ok());
  EXPECT_TRUE(Contains(src.status(), "no tokenizer.json")) << src.status();
}

TEST(HfCheckpointTest, IndexNamingMissingShardIsAnError) {
  const std::string dir = TestDir();
  WriteHfDir(dir, true, {"BF16"}, 2);
  fs::remove(dir + "/model-2-of-2.safetensors");
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenHfCheckpoint(dir);
  ASSERT_FALSE(src.ok());
  EXPECT_TRUE(Contains(src.status(), "model-2-of-2.safetensors")) << src.status();
  EXPECT_TRUE(Contains(src.status(), "does not exist")) << src.status();
}

TEST(HfCheckpointTest, IndexAndShardsMustAgree) {
  const std::string dir = TestDir();
  WriteHfDir(dir, true, {"BF16"}, 2);
  // Index maps a tensor to the wrong shard.
  json idx = json::parse(test_util::FileContents(dir + "/model.safetensors.index.json"));
  idx["weight_map"]["model.norm.weight"] =
      idx["weight_map"]["model.norm.weight"] == "model-1-of-2.safetensors"
          ? "model-2-of-2.safetensors"
          : "model-1-of-2.safetensors";
  WriteFile(dir + "/model.safetensors.index.json", idx.dump());
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenHfCheckpoint(dir);
  ASSERT_FALSE(src.ok());
  EXPECT_TRUE(Contains(src.status(), "model.norm.weight")) << src.status();
  // Shard names may not escape the directory.
  idx["weight_map"]["model.norm.weight"] = "../model-1-of-2.safetensors";
  WriteFile(dir + "/model.safetensors.index.json", idx.dump());
  src = OpenHfCheckpoint(dir);
  ASSERT_FALSE(src.ok());
  EXPECT_TRUE(Contains(src.status(), "must be a file name")) << src.status();
}

TEST(HfCheckpointTest, BadShardIsReportedWithItsPath) {
  const std::string dir = TestDir();
  WriteHfDir(dir, true, {"BF16"}, 2);
  WriteFile(dir + "/model-1-of-2.safetensors", Assemble("{bad", ""));
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenHfCheckpoint(dir);
  ASSERT_FALSE(src.ok());
  EXPECT_TRUE(Contains(src.status(), "model-1-of-2.safetensors: header is not valid JSON"))
      << src.status();
}

TEST(HfCheckpointTest, MissingConfigOrWeightsAreErrors) {
  const std::string dir = TestDir();
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenHfCheckpoint(dir);
  ASSERT_FALSE(src.ok());
  EXPECT_TRUE(Contains(src.status(), "no config.json")) << src.status();
  WriteFile(dir + "/config.json", TinyConfigJson(true).dump());
  src = OpenHfCheckpoint(dir);
  ASSERT_FALSE(src.ok());
  EXPECT_TRUE(Contains(src.status(), "no model.safetensors")) << src.status();
  WriteFile(dir + "/config.json", R"({"num_hidden_layers": "x"})");
  src = OpenHfCheckpoint(dir);
  ASSERT_FALSE(src.ok());
  EXPECT_TRUE(Contains(src.status(), "config.json")) << src.status();
}

TEST(HfCheckpointTest, OpenTensorSourceRejectsOtherPaths) {
  const std::string dir = TestDir();
  WriteFile(dir + "/weights.bin", "x");
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenTensorSource(dir + "/weights.bin");
  ASSERT_FALSE(src.ok());
  EXPECT_TRUE(Contains(src.status(), "neither")) << src.status();
  src = OpenTensorSource(dir + "/nothing");
  ASSERT_FALSE(src.ok());
  EXPECT_TRUE(Contains(src.status(), "does not exist")) << src.status();
}

TEST(HfCheckpointTest, ExpectedTensorsOfTheReleased4BConfig) {
  const ModelConfig cfg = test_util::ShippedConfig("smallthinker-4b-a0.6b");
  std::vector<SourceTensor> want = ExpectedTensors(cfg);
  // embed + 32 layers x (7 + 32 experts x 3) + final norm; tied: no lm_head.
  ASSERT_EQ(want.size(), 1u + 32u * (7u + 32u * 3u) + 1u);
  EXPECT_EQ(want.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(want.front().shape, (std::vector<int64_t>{151936, 1536}));
  EXPECT_EQ(want[2].name, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(want[2].shape, (std::vector<int64_t>{12 * 128, 1536}));
  EXPECT_EQ(want[3].shape, (std::vector<int64_t>{2 * 128, 1536}));
  EXPECT_EQ(want[10].name, "model.layers.0.block_sparse_moe.experts.0.down.weight");
  EXPECT_EQ(want[10].shape, (std::vector<int64_t>{1536, 768}));
  EXPECT_EQ(want.back().name, "model.norm.weight");
}

// ---------------------------------------------------------------------------------------------
// Our HDF5 training checkpoint

void WriteTrainCheckpoint(const std::string& path, const std::vector<StTensor>& tensors,
                          const std::string& tokenizer, const std::string& tok_json) {
  std::vector<test_util::CheckpointTensor> params;
  for (const StTensor& t : tensors) params.push_back({t.name, t.shape, t.values});
  test_util::WriteTrainCheckpoint(path, TinyConfigJson(true).dump(), params, tokenizer, tok_json);
}

TEST(TrainCheckpointSourceTest, ReadsBackExactly) {
  const std::string dir = TestDir();
  std::vector<StTensor> tensors = TinyTensors(/*tied=*/true, {"F32"});
  for (StTensor& t : tensors) {
    for (float& v : t.values) v = v * 1.37f + 0.01f;  // arbitrary float32 values
  }
  const std::string path = dir + "/ckpt.h5";
  WriteTrainCheckpoint(path, tensors, "bpe", kTokenizerJson);
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenTensorSource(path);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->config().moe_num_primary_experts, 2);
  ExpectSourceMatches(**src, tensors);
  EXPECT_TRUE(CheckTensorsMatchConfig(**src).ok()) << CheckTensorsMatchConfig(**src);
  EXPECT_EQ((*src)->tokenizer_name(), "bpe");
  EXPECT_EQ((*src)->tokenizer_json(), kTokenizerJson);
  EXPECT_EQ((*src)->chat_template(), "");
  EXPECT_TRUE(Contains(absl::InvalidArgumentError((*src)->description()), path));
  EXPECT_FALSE((*src)->ReadF32("model.nope").ok());
}

TEST(TrainCheckpointSourceTest, ByteTokenizerWithoutJson) {
  const std::string path = TestDir() + "/ckpt.h5";
  WriteTrainCheckpoint(path, TinyTensors(true, {"F32"}), "byte", "");
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenTrainCheckpoint(path);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->tokenizer_name(), "byte");
  EXPECT_EQ((*src)->tokenizer_json(), "");
}

TEST(TrainCheckpointSourceTest, RejectsNonCheckpointsAndMissingTokenizer) {
  const std::string dir = TestDir();
  {
    absl::StatusOr<H5File> f = H5File::Create(dir + "/other.h5");
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(f->WriteAttr("/", "format", "smallthinker.tokens").ok());
    ASSERT_TRUE(f->Close().ok());
  }
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenTrainCheckpoint(dir + "/other.h5");
  ASSERT_FALSE(src.ok());
  EXPECT_TRUE(Contains(src.status(), "not a smallthinker.cpp checkpoint")) << src.status();

  const std::string path = dir + "/notok.h5";
  {
    absl::StatusOr<H5File> f = H5File::Create(path);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(f->WriteAttr("/", "format", "smallthinker.checkpoint").ok());
    ASSERT_TRUE(f->WriteAttr("/", "model_config", TinyConfigJson(true).dump()).ok());
    ASSERT_TRUE(f->WriteAttr("/", "tokenizer", "bpe").ok());
    const float one = 1;
    ASSERT_TRUE(f->WriteDataset("/params/model.norm.weight", H5Type::kF32, {1}, &one).ok());
    ASSERT_TRUE(f->Close().ok());
  }
  src = OpenTrainCheckpoint(path);
  ASSERT_FALSE(src.ok());
  EXPECT_TRUE(Contains(src.status(), "/tokenizer/json")) << src.status();

  src = OpenTrainCheckpoint(dir + "/absent.h5");
  EXPECT_FALSE(src.ok());
}

}  // namespace
}  // namespace st
