// Tests of the model file (infer/format): writer -> reader round trips for every data type,
// the expert layout, name mapping, CRC32C, and rejection of truncated, corrupt and crafted files.
#include "infer/format/model_file.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "model/file_io.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace st {
namespace {

namespace fs = std::filesystem;
using format_internal::AssembleFile;
using format_internal::EncodeDirectory;
using format_internal::EncodeMetadata;

constexpr char kConfigJson[] = R"({"num_hidden_layers": 2, "hidden_size": 64,
  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 96,
  "moe_num_primary_experts": 4, "moe_num_active_primary_experts": 2,
  "moe_ffn_hidden_size": 32, "max_position_embeddings": 128, "tie_word_embeddings": %TIE%})";

ModelConfig TinyConfig(bool tied = true) {
  std::string json = kConfigJson;
  json.replace(json.find("%TIE%"), 5, tied ? "true" : "false");
  absl::StatusOr<ModelConfig> c = ParseModelConfig(json);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

using test_util::FileContents;
using test_util::TestDir;
using test_util::WriteFile;

std::string RandomBytes(size_t n, std::mt19937& rng) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// Chooses a dtype for each tensor class of the synthetic model.
struct Recipe {
  DType embed = DType::kF32, attn = DType::kF32, norm = DType::kF32, router = DType::kF32,
        expert = DType::kF32;
  static Recipe All(DType t) { return Recipe{t, t, DType::kF32, t, t}; }
};

// What a synthetic model wrote: name -> (dtype, dims, bytes).
struct Written {
  DType dtype;
  std::vector<int64_t> dims;
  std::string bytes;
};

void SetRequiredMetadata(ModelFileWriter& w, const ModelConfig& cfg) {
  w.SetConfig(cfg);
  w.SetString(kMetaTokenizerName, "bpe");
  w.SetBytes(kMetaTokenizerJson, std::string("{\"model\":{}}\0\x01", 14));
  w.SetString(kMetaChatTemplate, "");
  w.SetI64(kMetaBosTokenId, -1);
  w.SetI64Array(kMetaEosTokenIds, {5, 7});
  w.SetString(kMetaExportSource, "test");
  w.SetString(kMetaExportRecipe, "custom");
}

// Writes the tiny model to `path`; returns every tensor's content.
std::map<std::string, Written> WriteModel(
    const std::string& path, const ModelConfig& cfg, const Recipe& r, uint32_t seed = 1,
    const std::function<void(ModelFileWriter&)>& more_metadata = nullptr) {
  std::mt19937 rng(seed);
  std::map<std::string, Written> out;
  absl::StatusOr<std::unique_ptr<ModelFileWriter>> w = ModelFileWriter::Create(path);
  EXPECT_TRUE(w.ok()) << w.status();
  SetRequiredMetadata(**w, cfg);
  if (more_metadata) more_metadata(**w);
  const int64_t H = cfg.hidden_size, V = cfg.vocab_size, F = cfg.moe_ffn_hidden_size,
                E = cfg.moe_num_primary_experts;
  auto make = [&](const std::string& name, DType t, std::vector<int64_t> dims) -> Written& {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    Written& x = out[name];
    x = Written{t, dims, RandomBytes(static_cast<size_t>(DTypeBytes(t, n)), rng)};
    return x;
  };
  auto add = [&](const std::string& name, DType t, std::vector<int64_t> dims) {
    Written& x = make(name, t, dims);
    absl::Status s = (*w)->AddTensor(name, t, dims, x.bytes.data(), x.bytes.size());
    EXPECT_TRUE(s.ok()) << s;
  };
  add("token_embd", r.embed, {V, H});
  add("output_norm", r.norm, {H});
  if (!cfg.tie_word_embeddings) add("output", r.embed, {V, H});
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string b = absl::StrCat("blk.", l, ".");
    add(b + "attn_norm", r.norm, {H});
    add(b + "attn_q", r.attn, {cfg.q_width(), H});
    add(b + "attn_k", r.attn, {cfg.kv_width(), H});
    add(b + "attn_v", r.attn, {cfg.kv_width(), H});
    add(b + "attn_output", r.attn, {H, cfg.q_width()});
    add(b + "ffn_norm", r.norm, {H});
    add(b + "ffn_gate_inp", r.router, {E, H});
  }
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    for (int e = 0; e < E; ++e) {
      Written& g = make(ExpertTensorName(l, e, ExpertPart::kGate), r.expert, {F, H});
      Written& u = make(ExpertTensorName(l, e, ExpertPart::kUp), r.expert, {F, H});
      Written& d = make(ExpertTensorName(l, e, ExpertPart::kDownT), r.expert, {F, H});
      if (e % 2 == 0) {  // both APIs
        absl::Status s = (*w)->AddExpert(l, e, {r.expert, {F, H}, g.bytes.data(), g.bytes.size()},
                                         {r.expert, {F, H}, u.bytes.data(), u.bytes.size()},
                                         {r.expert, {F, H}, d.bytes.data(), d.bytes.size()});
        EXPECT_TRUE(s.ok()) << s;
      } else {
        EXPECT_TRUE((*w)->BeginExpert(l, e).ok());
        EXPECT_TRUE(
            (*w)->AddExpertPart(ExpertPart::kGate, r.expert, {F, H}, g.bytes.data(), g.bytes.size())
                .ok());
        EXPECT_TRUE(
            (*w)->AddExpertPart(ExpertPart::kUp, r.expert, {F, H}, u.bytes.data(), u.bytes.size())
                .ok());
        EXPECT_TRUE((*w)->AddExpertPart(ExpertPart::kDownT, r.expert, {F, H}, d.bytes.data(),
                                        d.bytes.size())
                        .ok());
        EXPECT_TRUE((*w)->EndExpert().ok());
      }
    }
  }
  absl::Status s = (*w)->Finish();
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

// A small valid file's bytes (Q4_0 experts keep it small).
std::string SmallValidFile(bool tied = true) {
  const std::string path = TestDir() + "/small.stmf";
  Recipe r = Recipe::All(DType::kQ4_0);
  WriteModel(path, TinyConfig(tied), r);
  return FileContents(path);
}

// A file decomposed into its parts, to be mutated and re-assembled with a valid checksum.
struct Parts {
  std::string data;  // bytes [64, metadata_offset)
  std::map<std::string, MetaValue> metadata;
  std::vector<TensorInfo> tensors;
  std::string Assemble(uint32_t version = kModelFileVersion) const {
    return AssembleFile(data, EncodeMetadata(metadata), EncodeDirectory(tensors), version);
  }
  TensorInfo& T(const std::string& name) {
    for (TensorInfo& t : tensors) {
      if (t.name == name) return t;
    }
    ADD_FAILURE() << "no tensor " << name;
    return tensors[0];
  }
};

Parts Decompose(const std::string& bytes) {
  absl::StatusOr<std::unique_ptr<ModelFile>> f = ModelFile::OpenFromMemory(bytes, {});
  EXPECT_TRUE(f.ok()) << f.status();
  Parts p;
  p.data = bytes.substr(kModelFileHeaderSize, (*f)->metadata_offset() - kModelFileHeaderSize);
  p.metadata = (*f)->metadata();
  p.tensors = (*f)->tensors();
  return p;
}

void ExpectRejected(absl::string_view bytes, const std::string& needle, bool verify = false) {
  ModelFile::Options o;
  o.verify_checksums = verify;
  absl::StatusOr<std::unique_ptr<ModelFile>> f = ModelFile::OpenFromMemory(bytes, o);
  ASSERT_FALSE(f.ok()) << "accepted a bad file; expected an error with '" << needle << "'";
  EXPECT_NE(f.status().message().find(needle), std::string::npos)
      << "error '" << f.status().message() << "' does not mention '" << needle << "'";
}

// ------------------------------------------------------------------ basics

TEST(ModelFileCrcTest, KnownVectorAndChaining) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32c("", 0), 0u);
  std::mt19937 rng(3);
  const std::string s = RandomBytes(10007, rng);
  for (size_t cut : {0, 1, 7, 8, 9, 4096, 10006, 10007}) {
    EXPECT_EQ(Crc32c(s.data() + cut, s.size() - cut, Crc32c(s.data(), cut)),
              Crc32c(s.data(), s.size()))
        << cut;
  }
}

TEST(ModelFileNamesTest, HfNamesMapBothWays) {
  const std::pair<const char*, const char*> cases[] = {
      {"model.embed_tokens.weight", "token_embd"},
      {"model.norm.weight", "output_norm"},
      {"lm_head.weight", "output"},
      {"model.layers.3.self_attn.q_proj.weight", "blk.3.attn_q"},
      {"model.layers.3.self_attn.k_proj.weight", "blk.3.attn_k"},
      {"model.layers.3.self_attn.v_proj.weight", "blk.3.attn_v"},
      {"model.layers.3.self_attn.o_proj.weight", "blk.3.attn_output"},
      {"model.layers.10.input_layernorm.weight", "blk.10.attn_norm"},
      {"model.layers.10.post_attention_layernorm.weight", "blk.10.ffn_norm"},
      {"model.layers.0.block_sparse_moe.primary_router.weight", "blk.0.ffn_gate_inp"},
      {"model.layers.2.block_sparse_moe.experts.31.gate.weight", "blk.2.ffn_gate.31"},
      {"model.layers.2.block_sparse_moe.experts.31.up.weight", "blk.2.ffn_up.31"},
      {"model.layers.2.block_sparse_moe.experts.31.down.weight", "blk.2.ffn_down_t.31"},
  };
  for (const auto& [hf, file] : cases) {
    EXPECT_EQ(HfToFileName(hf), file);
    EXPECT_EQ(FileToHfName(file), hf);
  }
  for (const char* bad :
       {"", "model.layers.x.self_attn.q_proj.weight", "model.layers.01.input_layernorm.weight",
        "model.layers.1.mlp.gate.weight", "blk.1", "lm_head.bias"}) {
    EXPECT_EQ(HfToFileName(bad), "") << bad;
  }
  for (const char* bad :
       {"", "blk.1.attn_qq", "blk.-1.attn_q", "blk.1.ffn_gate.x", "blk.1.2.3.4"}) {
    EXPECT_EQ(FileToHfName(bad), "") << bad;
  }
  EXPECT_EQ(ExpertTensorName(1, 2, ExpertPart::kDownT), "blk.1.ffn_down_t.2");
}

// ------------------------------------------------------------------ round trips

void CheckRoundTrip(const std::string& path, const ModelConfig& cfg,
                    const std::map<std::string, Written>& written, bool huge_pages = false) {
  ModelFile::Options o;
  o.verify_checksums = true;
  o.huge_pages = huge_pages;
  absl::StatusOr<std::unique_ptr<ModelFile>> f = ModelFile::Open(path, o);
  ASSERT_TRUE(f.ok()) << f.status();
  const ModelFile& m = **f;
  // Read into memory: the copy starts on a 2 MiB boundary (where huge pages can back it).
  if (huge_pages) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(m.data()) % (uintptr_t{2} << 20), 0u);
  }
  EXPECT_EQ(m.version(), kModelFileVersion);
  EXPECT_EQ(m.config().ToJson(), cfg.ToJson());
  EXPECT_EQ(m.tensors().size(), written.size());
  for (const auto& [name, w] : written) {
    const TensorInfo* t = m.Find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->dtype, w.dtype) << name;
    EXPECT_EQ(t->dims, w.dims) << name;
    ASSERT_EQ(t->size, w.bytes.size()) << name;
    EXPECT_EQ(std::memcmp(m.TensorData(*t), w.bytes.data(), w.bytes.size()), 0) << name;
    EXPECT_EQ(t->offset % kTensorAlignment, 0u) << name;
  }
  // Residents first, then the experts; each expert one 4096-aligned contiguous extent.
  bool seen_expert = false;
  for (const TensorInfo& t : m.tensors()) {
    if (t.group == TensorGroup::kExpert) seen_expert = true;
    EXPECT_FALSE(seen_expert && t.group == TensorGroup::kResident) << t.name;
  }
  const int64_t F = cfg.moe_ffn_hidden_size, H = cfg.hidden_size;
  uint64_t prev_end = 0;
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    for (int e = 0; e < cfg.moe_num_primary_experts; ++e) {
      absl::StatusOr<ExpertExtent> x = m.GetExpertExtent(l, e);
      ASSERT_TRUE(x.ok()) << x.status();
      EXPECT_EQ(x->offset % kExpertAlignment, 0u);
      EXPECT_GE(x->offset, prev_end);
      prev_end = x->offset + x->size;
      EXPECT_EQ(x->gate->name, ExpertTensorName(l, e, ExpertPart::kGate));
      EXPECT_EQ(x->down_t->name, ExpertTensorName(l, e, ExpertPart::kDownT));
      EXPECT_EQ(x->gate->offset, x->offset);
      EXPECT_LT(x->up->offset - (x->gate->offset + x->gate->size), kTensorAlignment);
      EXPECT_LT(x->down_t->offset - (x->up->offset + x->up->size), kTensorAlignment);
      EXPECT_EQ(x->down_t->offset + x->down_t->size, x->offset + x->size);
      EXPECT_EQ(x->down_t->dims, (std::vector<int64_t>{F, H}));  // transposed [F,H]
      EXPECT_EQ(x->down_t->layer, static_cast<uint32_t>(l));
      EXPECT_EQ(x->down_t->expert, static_cast<uint32_t>(e));
      EXPECT_EQ(x->down_t->part, ExpertPart::kDownT);
    }
  }
  EXPECT_FALSE(m.GetExpertExtent(cfg.num_hidden_layers, 0).ok());
  EXPECT_FALSE(m.GetExpertExtent(0, -1).ok());
  EXPECT_TRUE(m.VerifyAllTensors().ok());
}

TEST(ModelFileRoundTripTest, EveryDType) {
  const ModelConfig cfg = TinyConfig();
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0}) {
    SCOPED_TRACE(DTypeName(t));
    const std::string path = TestDir() + "/every_" + DTypeName(t) + ".stmf";
    std::map<std::string, Written> w = WriteModel(path, cfg, Recipe::All(t));
    CheckRoundTrip(path, cfg, w);
    CheckRoundTrip(path, cfg, w, /*huge_pages=*/true);
    EXPECT_FALSE(fs::exists(TempPathFor(path)));
  }
}

TEST(ModelFileRoundTripTest, MixedRecipeUntiedHead) {
  const ModelConfig cfg = TinyConfig(/*tied=*/false);
  Recipe r{DType::kQ8_0, DType::kQ8_0, DType::kF32, DType::kBF16, DType::kQ4_0};
  const std::string path = TestDir() + "/mixed.stmf";
  std::map<std::string, Written> w = WriteModel(path, cfg, r);
  ASSERT_TRUE(w.count("output"));
  CheckRoundTrip(path, cfg, w);
}

TEST(ModelFileRoundTripTest, Metadata) {
  const std::string path = TestDir() + "/meta.stmf";
  const ModelConfig cfg = TinyConfig();
  {
    absl::StatusOr<std::unique_ptr<ModelFileWriter>> w = ModelFileWriter::Create(path);
    ASSERT_TRUE(w.ok());
    SetRequiredMetadata(**w, cfg);
    (*w)->SetString(kMetaChatTemplate, "{% for m in messages %}{{ m.content }}{% endfor %}");
    (*w)->SetI64(kMetaBosTokenId, 1);
    (*w)->SetF64("export.max_abs_error", 0.125);
    (*w)->SetI64Array("export.empty", {});
    (*w)->SetBytes("export.blob", std::string(1000, '\xff'));
    // Tensors through the shared helper path would rewrite metadata; add them here.
    std::mt19937 rng(1);
    auto add = [&](const std::string& n, std::vector<int64_t> d) {
      int64_t k = 1;
      for (int64_t x : d) k *= x;
      std::string b = RandomBytes(static_cast<size_t>(k * 4), rng);
      ASSERT_TRUE((*w)->AddTensor(n, DType::kF32, d, b.data(), b.size()).ok()) << n;
    };
    const int64_t H = 64, F = 32;
    add("token_embd", {96, H});
    add("output_norm", {H});
    for (int l = 0; l < 2; ++l) {
      const std::string b = absl::StrCat("blk.", l, ".");
      for (const char* n : {"attn_norm", "ffn_norm"}) add(b + n, {H});
      add(b + "attn_q", {64, H});
      add(b + "attn_k", {32, H});
      add(b + "attn_v", {32, H});
      add(b + "attn_output", {H, 64});
      add(b + "ffn_gate_inp", {4, H});
    }
    std::string part(static_cast<size_t>(F * H * 4), '\x01');
    for (int l = 0; l < 2; ++l) {
      for (int e = 0; e < 4; ++e) {
        ModelFileWriter::Part p{DType::kF32, {F, H}, part.data(), part.size()};
        ASSERT_TRUE((*w)->AddExpert(l, e, p, p, p).ok());
      }
    }
    ASSERT_TRUE((*w)->Finish().ok());
  }
  absl::StatusOr<std::unique_ptr<ModelFile>> f = ModelFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const ModelFile& m = **f;
  EXPECT_EQ(m.tokenizer_name(), "bpe");
  EXPECT_EQ(m.tokenizer_json(), std::string("{\"model\":{}}\0\x01", 14));
  EXPECT_EQ(m.chat_template(), "{% for m in messages %}{{ m.content }}{% endfor %}");
  EXPECT_EQ(m.bos_token_id(), 1);
  EXPECT_EQ(m.eos_token_ids(), (std::vector<int64_t>{5, 7}));
  EXPECT_EQ(*m.GetString(kMetaExportSource), "test");
  EXPECT_EQ(*m.GetString(kMetaExportRecipe), "custom");
  EXPECT_EQ(*m.GetF64("export.max_abs_error"), 0.125);
  EXPECT_TRUE(m.GetI64Array("export.empty")->empty());
  EXPECT_EQ(m.GetBytes("export.blob")->size(), 1000u);
  EXPECT_EQ(m.GetI64("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m.GetI64(kMetaExportSource).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.metadata().size(), 11u);
}

// ------------------------------------------------------------------ writer errors

TEST(ModelFileWriterTest, MisuseIsRejectedAndLeavesNoFile) {
  const std::string dir = TestDir();
  const std::string path = dir + "/misuse.stmf";
  WriteFile(path, "previous contents");
  const ModelConfig cfg = TinyConfig();
  {
    absl::StatusOr<std::unique_ptr<ModelFileWriter>> w = ModelFileWriter::Create(path);
    ASSERT_TRUE(w.ok());
    std::string b(64 * 4, '\0');
    absl::Status s = (*w)->AddTensor("output_norm", DType::kF32, {64}, b.data(), 100);
    EXPECT_NE(s.message().find("has size 100 bytes but shape [64] in f32 needs 256"),
              std::string::npos)
        << s;
    s = (*w)->AddTensor("blk.0.ffn_up.1", DType::kF32, {64}, b.data(), b.size());
    EXPECT_NE(s.message().find("is an expert part"), std::string::npos) << s;
    s = (*w)->AddTensor("mystery", DType::kF32, {64}, b.data(), b.size());
    EXPECT_NE(s.message().find("not a known tensor name"), std::string::npos) << s;
    s = (*w)->AddTensor("output_norm", DType::kQ4_0, {48}, b.data(), b.size());
    EXPECT_NE(s.message().find("not a multiple of 32"), std::string::npos) << s;
    ASSERT_TRUE((*w)->AddTensor("output_norm", DType::kF32, {64}, b.data(), b.size()).ok());
    s = (*w)->AddTensor("output_norm", DType::kF32, {64}, b.data(), b.size());
    EXPECT_NE(s.message().find("added twice"), std::string::npos) << s;
    ASSERT_TRUE((*w)->BeginExpert(0, 0).ok());
    s = (*w)->AddExpertPart(ExpertPart::kUp, DType::kF32, {64}, b.data(), b.size());
    EXPECT_NE(s.message().find("expected gate"), std::string::npos) << s;
    s = (*w)->EndExpert();
    EXPECT_NE(s.message().find("has 0 of its 3 parts"), std::string::npos) << s;
    s = (*w)->Finish();
    EXPECT_FALSE(s.ok());
    EXPECT_FALSE(fs::exists(TempPathFor(path)));
  }
  {
    // Missing metadata and tensors: Finish fails, the old file stays.
    absl::StatusOr<std::unique_ptr<ModelFileWriter>> w = ModelFileWriter::Create(path);
    ASSERT_TRUE(w.ok());
    absl::Status s = (*w)->Finish();
    EXPECT_NE(s.message().find("metadata key 'model.config' is missing"), std::string::npos) << s;
  }
  {
    absl::StatusOr<std::unique_ptr<ModelFileWriter>> w = ModelFileWriter::Create(path);
    ASSERT_TRUE(w.ok());
    SetRequiredMetadata(**w, cfg);
    absl::Status s = (*w)->Finish();
    EXPECT_NE(s.message().find("num_hidden_layers = 2 but the file has tensors for only 0 layers"),
              std::string::npos)
        << s;
    EXPECT_NE(s.message().find("was not written"), std::string::npos) << s;
  }
  {
    // Abandoned without Finish.
    absl::StatusOr<std::unique_ptr<ModelFileWriter>> w = ModelFileWriter::Create(path);
    ASSERT_TRUE(w.ok());
  }
  EXPECT_EQ(FileContents(path), "previous contents");
  EXPECT_FALSE(fs::exists(TempPathFor(path)));
  absl::StatusOr<std::unique_ptr<ModelFileWriter>> bad =
      ModelFileWriter::Create(dir + "/no/such/dir/x.stmf");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("cannot create"), std::string::npos) << bad.status();
}

TEST(ModelFileWriterTest, ResidentAfterExpertIsRejected) {
  absl::StatusOr<std::unique_ptr<ModelFileWriter>> w =
      ModelFileWriter::Create(TestDir() + "/order.stmf");
  ASSERT_TRUE(w.ok());
  std::string b(32 * 64 * 4, '\0');
  ModelFileWriter::Part p{DType::kF32, {32, 64}, b.data(), b.size()};
  ASSERT_TRUE((*w)->AddExpert(0, 0, p, p, p).ok());
  absl::Status s = (*w)->AddTensor("output_norm", DType::kF32, {64}, b.data(), 256);
  EXPECT_NE(s.message().find("after an expert"), std::string::npos) << s;
}

// ------------------------------------------------------------------ rejection

TEST(ModelFileRejectTest, EveryTruncation) {
  const std::string bytes = SmallValidFile();
  ASSERT_TRUE(ModelFile::OpenFromMemory(bytes, {}).ok());
  for (size_t n = 0; n < bytes.size(); ++n) {
    absl::StatusOr<std::unique_ptr<ModelFile>> f =
        ModelFile::OpenFromMemory(absl::string_view(bytes.data(), n), {});
    ASSERT_FALSE(f.ok()) << "accepted a file truncated to " << n << " bytes";
    const absl::string_view msg = f.status().message();
    if (n < kModelFileHeaderSize) {
      ASSERT_NE(msg.find("smaller than the 64-byte header"), absl::string_view::npos) << msg;
    } else {
      ASSERT_NE(msg.find("truncated"), absl::string_view::npos) << msg;
    }
  }
  // And through the file path.
  const std::string path = TestDir() + "/truncated.stmf";
  WriteFile(path, absl::string_view(bytes.data(), bytes.size() - 1));
  absl::StatusOr<std::unique_ptr<ModelFile>> f = ModelFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find(path), std::string::npos);
  EXPECT_NE(f.status().message().find("truncated"), std::string::npos) << f.status();
  ModelFile::Options huge;
  huge.huge_pages = true;  // read into memory instead of mapped: the same checks
  f = ModelFile::Open(path, huge);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("truncated"), std::string::npos) << f.status();
  EXPECT_FALSE(ModelFile::Open(TestDir() + "/absent.stmf").ok());
}

TEST(ModelFileRejectTest, FlippedBytes) {
  const std::string bytes = SmallValidFile();
  absl::StatusOr<std::unique_ptr<ModelFile>> f = ModelFile::OpenFromMemory(bytes, {});
  ASSERT_TRUE(f.ok());
  const uint64_t meta_off = (*f)->metadata_offset(), dir_off = (*f)->directory_offset();
  // Any header byte flipped is rejected; the checksum field itself -> checksum error.
  for (size_t i = 0; i < kModelFileHeaderSize; ++i) {
    std::string b = bytes;
    b[i] ^= 0x10;
    EXPECT_FALSE(ModelFile::OpenFromMemory(b, {}).ok()) << "header byte " << i;
  }
  std::string b = bytes;
  b[57] ^= 1;
  ExpectRejected(b, "header checksum mismatch");
  // Metadata and directory bytes are covered by the header checksum.
  for (uint64_t i : {meta_off, meta_off + 20, dir_off + 9, bytes.size() - 1}) {
    b = bytes;
    b[i] ^= 0x04;
    ExpectRejected(b, "header checksum mismatch");
  }
  // Tensor data: only with verification, naming the tensor.
  const TensorInfo* t = (*f)->Find("blk.1.ffn_down_t.3");
  ASSERT_NE(t, nullptr);
  b = bytes;
  b[t->offset + 5] ^= 0x01;
  EXPECT_TRUE(ModelFile::OpenFromMemory(b, {}).ok());
  ExpectRejected(b, "tensor 'blk.1.ffn_down_t.3' checksum mismatch", /*verify=*/true);
}

TEST(ModelFileRejectTest, HeaderFields) {
  const std::string bytes = SmallValidFile();
  Parts p = Decompose(bytes);
  ExpectRejected(p.Assemble(2), "file format version 2 is not supported");
  std::string b = bytes;
  std::memcpy(&b[0], "GGUF", 4);
  ExpectRejected(b, "bad magic 'GGUF'");
  b = bytes + "xyz";
  ExpectRejected(b, "trailing bytes");
  b = bytes;
  b[48] = 3;  // tensor alignment 3
  ExpectRejected(b, "not powers of two");
  b = bytes;
  const uint64_t huge = ~0ull - 10;
  std::memcpy(&b[16], &huge, 8);  // metadata offset
  ExpectRejected(b, "section offsets overflow");
}

TEST(ModelFileRejectTest, HugeCounts) {
  Parts p = Decompose(SmallValidFile());
  const std::string meta = EncodeMetadata(p.metadata);
  std::string dir = EncodeDirectory(p.tensors);
  const uint64_t huge = 1ull << 40;
  std::string d2 = dir;
  std::memcpy(&d2[0], &huge, 8);
  ExpectRejected(AssembleFile(p.data, meta, d2), "tensor count 1099511627776 exceeds the limit");
  std::string m2 = meta;
  std::memcpy(&m2[0], &huge, 8);
  ExpectRejected(AssembleFile(p.data, m2, dir), "metadata entry count 1099511627776");
  // A string length far past the section.
  std::map<std::string, MetaValue> one = {{"a", MetaValue::String("xy")}};
  std::string m3 = EncodeMetadata(one);
  const uint64_t len = 1ull << 62;
  std::memcpy(&m3[8 + 2 + 1 + 4], &len, 8);
  ExpectRejected(AssembleFile(p.data, m3, dir), "over the 67108864-byte limit");
  // An array length past the section.
  one = {{"a", MetaValue::I64Array({1, 2})}};
  m3 = EncodeMetadata(one);
  const uint64_t n = 1000;
  std::memcpy(&m3[8 + 2 + 1 + 4], &n, 8);
  ExpectRejected(AssembleFile(p.data, m3, dir), "past the end of the section");
  // Unknown metadata type, duplicate key.
  m3 = EncodeMetadata(one);
  m3[8 + 2 + 1] = 9;
  ExpectRejected(AssembleFile(p.data, m3, dir), "unknown value type 9");
  m3 = EncodeMetadata(one);
  std::string twice = m3 + m3.substr(8);
  const uint64_t two = 2;
  std::memcpy(&twice[0], &two, 8);
  ExpectRejected(AssembleFile(p.data, twice, dir), "appears twice");
}

TEST(ModelFileRejectTest, CraftedDirectoryEntries) {
  const std::string bytes = SmallValidFile();
  auto reject = [&](const std::function<void(Parts&)>& mutate, const std::string& needle) {
    Parts p = Decompose(bytes);
    mutate(p);
    ExpectRejected(p.Assemble(), needle);
  };
  reject([](Parts& p) { p.T("blk.0.attn_k").offset = p.T("blk.0.attn_q").offset; }, "overlap");
  reject([](Parts& p) { p.T("blk.0.attn_k").offset += 4; }, "not a multiple of 64");
  reject([](Parts& p) { p.T("blk.1.ffn_gate.2").offset += 64; }, "not a multiple of 4096");
  reject([](Parts& p) { p.T("blk.0.attn_q").dtype = static_cast<DType>(77); },
         "tensor 'blk.0.attn_q' has unknown data type 77");
  reject([](Parts& p) { p.T("blk.0.attn_q").dims.assign(9, 1); },
         "tensor 'blk.0.attn_q' has 9 dimensions");
  reject(
      [](Parts& p) {
        p.T("blk.0.attn_q").dims = {int64_t{1} << 40, int64_t{1} << 40};
      },
      "overflows 64 bits");
  reject([](Parts& p) { p.T("blk.0.attn_q").dims = {0, 64}; }, "must be 1 to 2^63-1");
  reject([](Parts& p) { p.T("blk.0.attn_q").size += 1; }, "has size");
  reject([](Parts& p) { p.T("output_norm").offset = ~0ull - 64 + 1; },
         "tensor 'output_norm' extends past the data region");
  reject([](Parts& p) { p.T("output_norm").offset = 1ull << 40; }, "> file size");
  reject([](Parts& p) { p.T("output_norm").offset = 0; }, "extends past the data region");
  reject([](Parts& p) { p.T("blk.0.attn_q").dims = {64, 32}; }, "tensor 'blk.0.attn_q' has size");
  reject([](Parts& p) { p.T("blk.0.attn_q").name = "blk.0.attn_z"; },
         "'blk.0.attn_z' is not a known tensor name");
  reject([](Parts& p) { p.T("blk.0.attn_q").name = std::string(300, 'a'); }, "must be 1 to 256");
  reject([](Parts& p) { p.T("blk.0.ffn_up.1").part = ExpertPart::kGate; },
         "disagrees with its name");
  reject([](Parts& p) { p.T("blk.0.attn_q").group = TensorGroup::kExpert; }, "its name makes it");
  reject(
      [](Parts& p) {
        for (TensorInfo& t : p.tensors) {
          if (t.name == "blk.1.attn_k") {
            t = p.tensors.back();
            p.tensors.pop_back();
            break;
          }
        }
      },
      "tensor 'blk.1.attn_k' is missing");
  reject([](Parts& p) { p.tensors.push_back(p.tensors.front()); },
         "tensor 'token_embd' appears twice");
}

TEST(ModelFileRejectTest, ConfigAgainstTensors) {
  const std::string bytes = SmallValidFile();
  auto reject = [&](const char* key, const nlohmann::json& value, const std::string& needle) {
    Parts p = Decompose(bytes);
    nlohmann::json j = nlohmann::json::parse(p.metadata[kMetaConfig].str);
    j[key] = value;
    if (std::string(key) == "num_hidden_layers") {  // keep the per-layer arrays consistent
      j["rope_layout"] = std::vector<int>(value.get<int>(), 1);
      j["sliding_window_layout"] = std::vector<int>(value.get<int>(), 0);
    }
    p.metadata[kMetaConfig].str = j.dump();
    ExpectRejected(p.Assemble(), needle);
  };
  reject("num_hidden_layers", 3,
         "num_hidden_layers = 3 but the file has tensors for only 2 layers");
  reject("num_hidden_layers", 1, "unexpected tensor 'blk.1.");
  reject("num_hidden_layers", 4000,
         "num_hidden_layers = 4000 but the file has tensors for only 2 layers");
  reject("moe_num_primary_experts", 60000,
         "tensor 'blk.0.ffn_gate_inp' has shape [4,64] but the config implies [60000,64]");
  reject("moe_ffn_hidden_size", 64, "has shape [32,64] but the config implies [64,64]");
  reject("tie_word_embeddings", false, "tensor 'output' is missing");
  reject("hidden_size", -1, "metadata 'model.config'");
  // Untied file read as tied: the extra head is reported.
  Parts p = Decompose(SmallValidFile(/*tied=*/false));
  nlohmann::json j = nlohmann::json::parse(p.metadata[kMetaConfig].str);
  j["tie_word_embeddings"] = true;
  p.metadata[kMetaConfig].str = j.dump();
  ExpectRejected(p.Assemble(), "unexpected tensor 'output'");
  // More experts than the file holds: the first absent one is named.
  p = Decompose(bytes);
  j = nlohmann::json::parse(p.metadata[kMetaConfig].str);
  j["moe_num_primary_experts"] = 5;
  p.metadata[kMetaConfig].str = j.dump();
  for (TensorInfo& t : p.tensors) {
    if (t.name == "blk.0.ffn_gate_inp" || t.name == "blk.1.ffn_gate_inp") {
      t.dims[0] = 5;
      t.size = static_cast<uint64_t>(DTypeBytes(t.dtype, 5 * 64));
    }
  }
  ExpectRejected(p.Assemble(), "tensor 'blk.0.ffn_gate.4' is missing");
  // Required metadata with the wrong type.
  p = Decompose(bytes);
  p.metadata[kMetaTokenizerJson] = MetaValue::String("{}");
  ExpectRejected(p.Assemble(), "metadata key 'tokenizer.json' has type string; expected bytes");
  p = Decompose(bytes);
  p.metadata.erase(kMetaExportRecipe);
  ExpectRejected(p.Assemble(), "metadata key 'export.recipe' is missing");
}

}  // namespace
}  // namespace st

namespace st {
namespace {

// The optional tokenizer-policy and generation keys: written, read back, and refused when their
// type or value is wrong.
TEST(ModelFilePolicyTest, RoundTripsAndOldFilesReadAsNothingAdded) {
  const std::string bytes = SmallValidFile();
  {
    absl::StatusOr<std::unique_ptr<ModelFile>> f = ModelFile::OpenFromMemory(bytes, {});
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_FALSE((*f)->tokenizer_policy().add_bos_token);  // a file without the keys
    EXPECT_TRUE((*f)->generation_defaults().empty());
  }
  Parts p = Decompose(bytes);
  p.metadata[kMetaBosTokenId] = MetaValue::I64(3);
  p.metadata[kMetaAddBosToken] = MetaValue::I64(1);
  p.metadata[kMetaEosToken] = MetaValue::String("<|im_end|>");
  p.metadata[kMetaSpecialTokenIds] = MetaValue::I64Array({3, 5});
  p.metadata[kMetaGenDoSample] = MetaValue::I64(1);
  p.metadata[kMetaGenTemperature] = MetaValue::F64(0.6);
  p.metadata[kMetaGenTopK] = MetaValue::I64(20);
  p.metadata[kMetaGenEosTokenIds] = MetaValue::I64Array({5, 7});
  const std::string good = p.Assemble();
  absl::StatusOr<std::unique_ptr<ModelFile>> f = ModelFile::OpenFromMemory(good, {});
  ASSERT_TRUE(f.ok()) << f.status();
  const TokenizerPolicy& policy = (*f)->tokenizer_policy();
  EXPECT_TRUE(policy.add_bos_token);
  EXPECT_EQ(policy.bos_token_id, 3);
  EXPECT_EQ(policy.eos_token, "<|im_end|>");
  EXPECT_EQ(policy.special_token_ids, (std::vector<int>{3, 5}));
  const GenerationDefaults& g = (*f)->generation_defaults();
  EXPECT_EQ(g.ToString(), "do_sample true, temperature 0.6, top_k 20, eos [5, 7]");

  struct Bad {
    const char* key;
    MetaValue value;
    const char* needle;
  };
  const Bad bad[] = {
      {kMetaAddBosToken, MetaValue::String("yes"), "'tokenizer.add_bos_token' has type string"},
      {kMetaAddBosToken, MetaValue::I64(2), "expected 0 or 1"},
      {kMetaGenTemperature, MetaValue::F64(-1), "'generation.temperature' = -1 is out of range"},
      {kMetaGenTopP, MetaValue::F64(0), "'generation.top_p' = 0 is out of range"},
      {kMetaGenTopK, MetaValue::I64(-4), "'generation.top_k' = -4 is out of range"},
      {kMetaGenEosTokenIds, MetaValue::I64Array({1 << 20}), "outside the vocabulary"},
      {kMetaSpecialTokenIds, MetaValue::I64Array({-1}), "outside the vocabulary"},
      {kMetaBosTokenId, MetaValue::I64(1 << 20), "'tokenizer.bos_token_id'"},
  };
  for (const Bad& b : bad) {
    Parts q = Decompose(good);
    q.metadata[b.key] = b.value;
    ExpectRejected(q.Assemble(), b.needle);
  }
  // add_bos_token with no BOS to add.
  Parts q = Decompose(good);
  q.metadata[kMetaBosTokenId] = MetaValue::I64(-1);
  ExpectRejected(q.Assemble(), "there is no BOS to add");
}

TEST(ModelFilePolicyTest, WriterStoresPolicyAndGenerationDefaults) {
  const std::string path = TestDir() + "/policy.stmf";
  TokenizerPolicy policy;
  policy.add_eos_token = true;
  policy.eos_token = "</s>";
  policy.pad_token = "<pad>";
  policy.tokenizer_class = "LlamaTokenizer";
  policy.special_token_ids = {2, 9};
  GenerationDefaults g;
  g.temperature = 0.7;
  g.repetition_penalty = 1.1;
  g.max_new_tokens = 99;
  g.eos_token_id = {7};
  WriteModel(path, TinyConfig(), Recipe::All(DType::kQ4_0), 1, [&](ModelFileWriter& w) {
    w.SetTokenizerPolicy(policy);
    w.SetGenerationDefaults(g);
  });
  absl::StatusOr<std::unique_ptr<ModelFile>> f = ModelFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const TokenizerPolicy& p = (*f)->tokenizer_policy();
  EXPECT_FALSE(p.add_bos_token);
  EXPECT_TRUE(p.add_eos_token);
  EXPECT_EQ(p.eos_token, "</s>");
  EXPECT_EQ(p.pad_token, "<pad>");
  EXPECT_EQ(p.bos_token, "");
  EXPECT_EQ(p.tokenizer_class, "LlamaTokenizer");
  EXPECT_EQ(p.special_token_ids, (std::vector<int>{2, 9}));
  EXPECT_EQ((*f)->generation_defaults().ToString(),
            "temperature 0.7, repetition_penalty 1.1, max_new_tokens 99, eos [7]");
  EXPECT_EQ((*f)->FindMetadata(kMetaGenTopP), nullptr);  // only what is set is written
}

}  // namespace
}  // namespace st
