// Tests of the tensor registry (infer/format/tensors.h): the walk over the tiny, 4B and 21B
// configs, its early stop, file <-> Hugging Face name round trips, FORMAT.md's table, and that
// the model-file reader, the Hugging Face source check and the exporter agree with it.
#include "infer/format/tensors.h"

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "infer/export/exporter.h"
#include "infer/export/random_source.h"
#include "infer/export/tensor_source.h"
#include "infer/format/model_file.h"
#include "tests/test_util.h"

namespace st {
namespace {

using test_util::ShippedConfig;

std::vector<TensorId> Walk(const ModelConfig& cfg) {
  std::vector<TensorId> ids;
  EXPECT_TRUE(ForEachTensor(cfg, [&](const TensorId& id) {
    ids.push_back(id);
    return true;
  }));
  return ids;
}

// A TensorSource with a given config and tensor list and no data.
class ListSource final : public TensorSource {
 public:
  ListSource(ModelConfig cfg, std::vector<SourceTensor> tensors)
      : cfg_(std::move(cfg)), tensors_(std::move(tensors)) {
    std::sort(tensors_.begin(), tensors_.end(),
              [](const SourceTensor& a, const SourceTensor& b) { return a.name < b.name; });
  }
  const ModelConfig& config() const override { return cfg_; }
  const std::vector<SourceTensor>& tensors() const override { return tensors_; }
  absl::StatusOr<std::vector<float>> ReadF32(const std::string& name) const override {
    return absl::NotFoundError(name);
  }
  std::string tokenizer_name() const override { return "byte"; }
  std::string tokenizer_json() const override { return ""; }
  std::string chat_template() const override { return ""; }
  std::string description() const override { return "list source"; }

 private:
  ModelConfig cfg_;
  std::vector<SourceTensor> tensors_;
};

TEST(TensorRegistryTest, TableIsConsistent) {
  ASSERT_EQ(TensorKinds().size(), static_cast<size_t>(kNumTensorKinds));
  std::set<std::string> files, hfs;
  for (const TensorKindInfo& k : TensorKinds()) {
    EXPECT_EQ(&KindInfo(k.kind), &k);
    EXPECT_TRUE(files.insert(k.file).second) << k.file;
    EXPECT_TRUE(hfs.insert(HfNamePattern(k.kind)).second) << k.hf;
    EXPECT_EQ(KindGroup(k.kind) == TensorGroup::kExpert, k.scope == TensorScope::kExpert);
    EXPECT_EQ(k.cls == TensorClass::kExpert, k.scope == TensorScope::kExpert) << k.file;
    EXPECT_NE(k.rows, TensorDim::kNone) << k.file;
    if (k.hf_transposed) {
      EXPECT_NE(k.cols, TensorDim::kNone) << k.file;
    }
  }
  for (ExpertPart p : {ExpertPart::kGate, ExpertPart::kUp, ExpertPart::kDownT}) {
    const TensorId id = TensorId::Expert(3, 7, p);
    EXPECT_EQ(id.part(), p);
    EXPECT_TRUE(id.is_expert());
    EXPECT_EQ(id.FileName(), absl::StrCat("blk.3.ffn_", ExpertPartName(p), ".7"));
  }
}

// Each kind's row of FORMAT.md's table names the registry's file name, shape and HF name.
TEST(TensorRegistryTest, FormatMdTableIsTheRegistry) {
  std::ifstream in(ST_SOURCE_DIR "/infer/format/FORMAT.md");
  ASSERT_TRUE(in.good());
  std::vector<std::string> rows;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("| `", 0) == 0) rows.push_back(line);
  }
  for (const TensorKindInfo& k : TensorKinds()) {
    const std::string file = absl::StrCat("| `", FileNamePattern(k.kind), "` ");
    const std::string* row = nullptr;
    for (const std::string& r : rows) {
      if (r.rfind(file, 0) == 0) row = &r;
    }
    ASSERT_NE(row, nullptr) << "FORMAT.md has no row for " << FileNamePattern(k.kind);
    EXPECT_NE(row->find(absl::StrCat("`", ShapePattern(k.kind), "`")), std::string::npos) << *row;
    EXPECT_NE(row->find(absl::StrCat("`", HfNamePattern(k.kind), "`")), std::string::npos) << *row;
    EXPECT_NE(row->find(k.scope == TensorScope::kExpert ? "| expert " : "| resident "),
              std::string::npos)
        << *row;
    if (k.hf_transposed) {
      EXPECT_NE(row->find(absl::StrCat("`", HfShapePattern(k.kind), "`")), std::string::npos)
          << *row;
    }
  }
}

TEST(TensorRegistryTest, WalksTinyAnd4BAnd21BConfigs) {
  for (const char* name : {"tiny", "smallthinker-4b-a0.6b", "smallthinker-21b-a3b"}) {
    for (bool tied : {true, false}) {
      SCOPED_TRACE(absl::StrCat(name, tied ? " tied" : " untied"));
      ModelConfig cfg = ShippedConfig(name);
      cfg.tie_word_embeddings = tied;
      const int64_t L = cfg.num_hidden_layers, E = cfg.moe_num_primary_experts;
      const std::vector<TensorId> ids = Walk(cfg);
      ASSERT_EQ(static_cast<int64_t>(ids.size()), 2 + (tied ? 0 : 1) + L * (7 + 3 * E));
      EXPECT_EQ(static_cast<int64_t>(ids.size()), CountTensors(cfg));
      EXPECT_EQ(ids.front(), TensorId::Model(TensorKind::kTokenEmbd));
      EXPECT_EQ(ids[1], TensorId::Layer(TensorKind::kAttnNorm, 0));
      EXPECT_EQ(ids.back(), TensorId::Model(tied ? TensorKind::kOutputNorm : TensorKind::kOutput));
      std::set<std::string> files, hfs;
      std::map<std::string, int64_t> per_class;
      int64_t experts = 0, expert_params = 0, params = 0;
      for (const TensorId& id : ids) {
        const std::string file = id.FileName(), hf = id.HfName();
        EXPECT_TRUE(files.insert(file).second) << file;
        EXPECT_TRUE(hfs.insert(hf).second) << hf;
        // Round trips through the parsers and the name maps.
        ASSERT_EQ(ParseFileTensorName(file), id) << file;
        ASSERT_EQ(ParseHfTensorName(hf), id) << hf;
        ASSERT_EQ(HfToFileName(hf), file);
        ASSERT_EQ(FileToHfName(file), hf);
        // Shapes: the same in both layouts except the transposed expert down.
        const std::vector<int64_t> shape = id.Shape(cfg), hf_shape = id.HfShape(cfg);
        if (id.kind == TensorKind::kFfnDownT) {
          EXPECT_EQ(shape, (std::vector<int64_t>{cfg.moe_ffn_hidden_size, cfg.hidden_size}));
          EXPECT_EQ(hf_shape, (std::vector<int64_t>{cfg.hidden_size, cfg.moe_ffn_hidden_size}));
        } else {
          EXPECT_EQ(shape, hf_shape) << file;
        }
        int64_t n = 1;
        for (int64_t d : shape) n *= d;
        params += n;
        ++per_class[TensorClassName(id.cls())];
        if (id.is_expert()) {
          ++experts;
          expert_params += n;
          EXPECT_TRUE(id.layer >= 0 && id.layer < L && id.expert >= 0 && id.expert < E);
        } else {
          EXPECT_EQ(id.expert, -1);
          EXPECT_EQ(id.part(), ExpertPart::kGate);
        }
      }
      EXPECT_EQ(experts, 3 * L * E);
      EXPECT_EQ(per_class["norm"], 2 * L + 1);
      EXPECT_EQ(per_class["attention"], 4 * L);
      EXPECT_EQ(per_class["router"], L);
      EXPECT_EQ(per_class["embedding"], 1);
      EXPECT_EQ(per_class["lm_head"], tied ? 0 : 1);
      // The registry's shapes add up to the config's own parameter count.
      EXPECT_EQ(params, cfg.NumParams());
      // ExpectedTensors is the registry's Hugging Face projection, in the walk's order.
      const std::vector<SourceTensor> expected = ExpectedTensors(cfg);
      ASSERT_EQ(expected.size(), ids.size());
      for (size_t i = 0; i < ids.size(); ++i) {
        EXPECT_EQ(expected[i].name, ids[i].HfName());
        EXPECT_EQ(expected[i].shape, ids[i].HfShape(cfg));
      }
    }
  }
}

// A config from an untrusted file may claim 4096 layers of 65536 experts (8e8 tensors): the
// walk must stop when told to, and the source check must stop on its own.
TEST(TensorRegistryTest, StopsEarly) {
  ModelConfig cfg = ShippedConfig("tiny");
  cfg.num_hidden_layers = 4096;
  cfg.moe_num_primary_experts = 65536;
  EXPECT_EQ(CountTensors(cfg), 2 + 4096LL * (7 + 3 * 65536LL));  // tied
  int visited = 0;
  EXPECT_FALSE(ForEachTensor(cfg, [&](const TensorId&) { return ++visited < 10; }));
  EXPECT_EQ(visited, 10);
  // Stopping inside an expert's parts, inside a layer, and at the last tensor.
  ModelConfig tiny = ShippedConfig("tiny");
  const std::vector<TensorId> all = Walk(tiny);
  for (size_t stop : {size_t{0}, size_t{5}, size_t{12}, all.size() - 1}) {
    std::vector<TensorId> seen;
    const bool done = ForEachTensor(tiny, [&](const TensorId& id) {
      seen.push_back(id);
      return seen.size() <= stop;
    });
    EXPECT_FALSE(done);
    ASSERT_EQ(seen.size(), stop + 1);
    EXPECT_EQ(seen.back(), all[stop]);
  }

  // CheckTensorsMatchConfig over a real (tiny) tensor list with the forged config.
  ListSource src(cfg, ExpectedTensors(tiny));
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = CheckTensorsMatchConfig(src);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("missing more than 1024: "), std::string::npos) << s;
  EXPECT_LT(seconds, 1.0);
}

TEST(TensorRegistryTest, ParsersRejectNamesOutsideTheTable) {
  for (const char* bad : {"",
                          "blk",
                          "blk.",
                          "blk.0",
                          "blk.0.",
                          "blk.01.attn_q",
                          "blk.-1.attn_q",
                          "blk.+1.attn_q",
                          "blk.2147483648.attn_q",
                          "blk.0.attn_q.3",
                          "blk.0.attn_q.",
                          "blk.0.ffn_up",
                          "blk.0.ffn_up.",
                          "blk.0.ffn_up.01",
                          "blk.0.ffn_up.1.2",
                          "blk.0.token_embd",
                          "token_embd.0",
                          "output.weight",
                          "blk.0.attn_z",
                          "BLK.0.attn_q",
                          "blk.0.ffn_down.1",
                          " token_embd"}) {
    EXPECT_FALSE(ParseFileTensorName(bad)) << bad;
    EXPECT_EQ(FileToHfName(bad), "") << bad;
  }
  for (const char* bad :
       {"", "model.layers.0", "model.layers.0.", "model.layers.00.input_layernorm.weight",
        "model.layers.0.input_layernorm",
        "model.layers.0.block_sparse_moe.experts.0.primary_router.weight",
        "model.layers.0.block_sparse_moe.experts.gate.weight",
        "model.layers.0.block_sparse_moe.experts.0.down_t.weight",
        "model.layers.0.block_sparse_moe.gate.weight", "model.layers.0.model.norm.weight",
        "model.layers.0.mlp.extra.weight", "lm_head", "model.embed_tokens.weight.1"}) {
    EXPECT_FALSE(ParseHfTensorName(bad)) << bad;
    EXPECT_EQ(HfToFileName(bad), "") << bad;
  }
  EXPECT_EQ(ParseFileTensorName("blk.2147483647.ffn_up.0"),
            (TensorId{TensorKind::kFfnUp, 2147483647, 0}));
}

// The exporter writes exactly the registry's tensors (names, shapes, groups, expert tags), the
// reader accepts them, and the exporter's classes count what the registry says.
TEST(TensorRegistryTest, ReaderAndExporterAgreeWithIt) {
  for (bool tied : {true, false}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    ModelConfig cfg = ShippedConfig("tiny");
    cfg.tie_word_embeddings = tied;
    auto src = MakeRandomSource(cfg, 5);
    ASSERT_TRUE(src.ok()) << src.status();
    EXPECT_TRUE(CheckTensorsMatchConfig(**src).ok());
    const std::string out = test_util::TestDir() + (tied ? "/tied.stmf" : "/untied.stmf");
    ExportOptions opt;
    opt.recipe = *RecipePreset("q8_0");
    auto report = ExportModel(**src, out, opt);
    ASSERT_TRUE(report.ok()) << report.status();
    auto m = ModelFile::Open(out);
    ASSERT_TRUE(m.ok()) << m.status();
    const std::vector<TensorId> ids = Walk(cfg);
    ASSERT_EQ((*m)->tensors().size(), ids.size());
    std::map<std::string, int64_t> per_class;
    for (const TensorId& id : ids) {
      const TensorInfo* t = (*m)->Find(id.FileName());
      ASSERT_NE(t, nullptr) << id.FileName();
      EXPECT_EQ(t->dims, id.Shape(cfg)) << id.FileName();
      EXPECT_EQ(t->group, id.group()) << id.FileName();
      if (id.is_expert()) {
        EXPECT_EQ(t->layer, static_cast<uint32_t>(id.layer));
        EXPECT_EQ(t->expert, static_cast<uint32_t>(id.expert));
        EXPECT_EQ(t->part, id.part());
      }
      ++per_class[TensorClassName(id.cls())];
    }
    // The file order: every resident tensor in the walk's order, then the experts in it.
    std::vector<std::string> want;
    for (bool expert : {false, true}) {
      for (const TensorId& id : ids) {
        if (id.is_expert() == expert) want.push_back(id.FileName());
      }
    }
    std::vector<std::string> got;
    for (const TensorInfo& t : (*m)->tensors()) got.push_back(t.name);
    EXPECT_EQ(got, want);
    for (const auto& [cls, n] : per_class) {
      ASSERT_TRUE(report->classes.count(cls)) << cls;
      EXPECT_EQ(report->classes.at(cls).tensors, n) << cls;
    }
    EXPECT_EQ(report->classes.size(), per_class.size());
  }
}

}  // namespace
}  // namespace st
