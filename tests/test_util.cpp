// Shared test helpers: see test_util.h.
#include "tests/test_util.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <system_error>

#include "absl/status/statusor.h"
#include "data/hdf5.h"
#include "gtest/gtest.h"
#include "infer/export/tensor_source.h"

namespace st::test_util {

namespace fs = std::filesystem;

std::string FileContents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, absl::string_view bytes) {
  const fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  EXPECT_TRUE(out.good()) << "cannot write " << path;
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string FreshDir(const std::string& name) {
  const fs::path dir = fs::path(ST_BINARY_DIR) / "test_tmp" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string TestDir() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  if (info == nullptr) {
    ADD_FAILURE() << "TestDir() outside a test; use FreshDir(name)";
    return FreshDir("no_test");
  }
  std::string name = std::string(info->test_suite_name()) + "." + info->name();
  std::replace(name.begin(), name.end(), '/', '_');
  // Emptied once per test: a second call in the same test keeps what the first one's caller
  // wrote there.
  static std::mutex mu;
  static std::string emptied_for;
  std::lock_guard<std::mutex> lock(mu);
  if (emptied_for == name) return (fs::path(ST_BINARY_DIR) / "test_tmp" / name).string();
  emptied_for = name;
  return FreshDir(name);
}

bool Contains(absl::string_view text, absl::string_view part) {
  return text.find(part) != absl::string_view::npos;
}

bool Contains(const absl::Status& status, absl::string_view part) {
  return Contains(status.message(), part);
}

ModelConfig ShippedConfig(const std::string& name) {
  absl::StatusOr<ModelConfig> cfg =
      LoadModelConfig(std::string(ST_SOURCE_DIR) + "/configs/model/" + name + ".json");
  EXPECT_TRUE(cfg.ok()) << name << ": " << cfg.status();
  return cfg.ok() ? *cfg : ModelConfig();
}

ModelConfig TinyEngineConfig() {
  ModelConfig c;
  c.num_hidden_layers = 2;
  c.hidden_size = 64;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 257;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 32;
  c.rope_layout = {0, 1};            // layer 0 NoPE, layer 1 RoPE
  c.sliding_window_layout = {0, 1};  // layer 0 global, layer 1 sliding
  c.sliding_window_size = 6;
  c.moe_num_primary_experts = 4;
  c.moe_num_active_primary_experts = 2;
  c.moe_ffn_hidden_size = 32;
  c.moe_primary_router_apply_softmax = false;
  c.tie_word_embeddings = true;
  c.bos_token_id = -1;
  c.eos_token_id = {256};
  const absl::Status s = ValidateModelConfig(c);
  EXPECT_TRUE(s.ok()) << s;
  return c;
}

ModelConfig TinyExportConfig(bool tied) {
  ModelConfig c;
  c.num_hidden_layers = 2;
  c.hidden_size = 64;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 32;
  c.vocab_size = 300;
  c.max_position_embeddings = 128;
  c.rope_layout = {0, 1};
  c.sliding_window_layout = {0, 1};
  c.sliding_window_size = 16;
  c.moe_num_primary_experts = 3;
  c.moe_num_active_primary_experts = 2;
  c.moe_ffn_hidden_size = 32;
  c.tie_word_embeddings = tied;
  const absl::Status s = ValidateModelConfig(c);
  EXPECT_TRUE(s.ok()) << s;
  return c;
}

std::vector<float> RandomNormals(int64_t n, uint32_t seed, float stddev) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

TensorValues RandomValues(const ModelConfig& cfg, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 0.05f);
  TensorValues v;
  for (const SourceTensor& t : ExpectedTensors(cfg)) {
    std::vector<float>& x = v[t.name];
    x.resize(static_cast<size_t>(t.num_elements()));
    const bool norm = t.name.find("norm") != std::string::npos;
    for (float& f : x) f = norm ? 1.f + normal(rng) : normal(rng);
  }
  return v;
}

std::vector<CheckpointTensor> CheckpointTensors(const ModelConfig& cfg,
                                                const TensorValues& values) {
  std::vector<CheckpointTensor> out;
  for (const SourceTensor& t : ExpectedTensors(cfg)) {
    out.push_back({t.name, t.shape, values.at(t.name)});
  }
  return out;
}

void WriteTrainCheckpoint(const std::string& path, const std::string& model_config_json,
                          const std::vector<CheckpointTensor>& tensors,
                          const std::string& tokenizer, const std::string& tokenizer_json) {
  absl::StatusOr<H5File> f = H5File::Create(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_TRUE(f->WriteAttr("/", "format", "smallthinker.checkpoint").ok());
  ASSERT_TRUE(f->WriteAttr("/", "version", int64_t{1}).ok());
  ASSERT_TRUE(f->WriteAttr("/", "model_config", model_config_json).ok());
  ASSERT_TRUE(f->WriteAttr("/", "tokenizer", tokenizer).ok());
  for (const CheckpointTensor& t : tensors) {
    ASSERT_TRUE(f->WriteDataset("/params/" + t.name, H5Type::kF32, t.shape, t.values.data()).ok())
        << t.name;
  }
  if (!tokenizer_json.empty()) {
    ASSERT_TRUE(f->WriteDataset("/tokenizer/json", H5Type::kU8,
                                {static_cast<int64_t>(tokenizer_json.size())},
                                tokenizer_json.data())
                    .ok());
  }
  ASSERT_TRUE(f->Close().ok());
}

}  // namespace st::test_util
