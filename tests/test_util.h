// Shared test helpers (library st_test_util): file reads and writes, per-test fresh directories,
// the fixture paths, tiny model configs, random weights and our HDF5 training checkpoint.
// Needs gtest (failures are reported with ADD_FAILURE / EXPECT); the fuzzers use
// tests/test_tokenizers.h, which does not.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "model/config.h"

namespace st::test_util {

// ---- paths (ST_SOURCE_DIR and ST_BINARY_DIR come with st_test_util)

// The KJV corpus, one verse a line; the ctest fixture prepare_kjv_corpus writes it.
inline constexpr char kKjvPath[] = ST_BINARY_DIR "/corpus/kjv.txt";

// ---- files

// The bytes of the file `path`; "" when it cannot be read (callers decide whether that fails,
// skips or is expected).
std::string FileContents(const std::string& path);

// Writes `bytes` to `path` (binary, truncating), creating missing parent directories; a failure
// is a test failure naming the path.
void WriteFile(const std::string& path, absl::string_view bytes);

// The names of the entries of `dir`, sorted.
std::vector<std::string> ListDir(const std::string& dir);

// The directory BINARY_DIR/test_tmp/<name>, created empty (whatever was there is removed).
std::string FreshDir(const std::string& name);

// A directory of the running test's own, BINARY_DIR/test_tmp/<suite>.<test> ('/' of
// parameterized names read '_'): empty at the test's first call, the same directory for the rest
// of the test. Only from inside a test (not SetUpTestSuite: use FreshDir).
std::string TestDir();

// Whether `text` (or the status's message) contains `part`.
bool Contains(absl::string_view text, absl::string_view part);
bool Contains(const absl::Status& status, absl::string_view part);

// ---- model configs

// configs/model/<name>.json; a load error is a test failure (and gives a default config).
ModelConfig ShippedConfig(const std::string& name);

// For the engine: 2 layers (NoPE global, RoPE sliding with window 6), hidden 64, 4 query heads
// and 2 KV heads of 16, vocabulary 257 (the byte tokenizer's 256 and EOS 256, no BOS), 4 experts
// of width 32 with 2 active, sigmoid router, tied embeddings, 32 positions.
ModelConfig TinyEngineConfig();

// For the exporters: 2 layers (NoPE global, RoPE sliding with window 16), hidden 64, 2 query
// heads and 1 KV head of 32, vocabulary 300, 3 experts of width 32 with 2 active, 128 positions.
ModelConfig TinyExportConfig(bool tied);

// ---- random weights and our training checkpoint

// `n` draws of normal(0, stddev) from std::mt19937(seed).
std::vector<float> RandomNormals(int64_t n, uint32_t seed, float stddev = 1.f);

using TensorValues = std::map<std::string, std::vector<float>>;

// Random float32 values for every tensor of `cfg` (ExpectedTensors order, one normal(0, 0.05)
// stream from `seed`; norms 1 + that).
TensorValues RandomValues(const ModelConfig& cfg, uint32_t seed);

struct CheckpointTensor {
  std::string name;  // the Hugging Face name
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// Every tensor of `cfg` (ExpectedTensors) with its values from `values`.
std::vector<CheckpointTensor> CheckpointTensors(const ModelConfig& cfg, const TensorValues& values);

// Writes our HDF5 training checkpoint (data/checkpoint_layout.h), spelled out here
// independently of the layout's constants: attributes format, version 1, model_config
// (`model_config_json`) and tokenizer; /params/<name> as float32; /tokenizer/json when
// `tokenizer_json` is not empty. Failures are test failures.
void WriteTrainCheckpoint(const std::string& path, const std::string& model_config_json,
                          const std::vector<CheckpointTensor>& tensors,
                          const std::string& tokenizer, const std::string& tokenizer_json);

}  // namespace st::test_util
