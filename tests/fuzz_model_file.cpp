// libFuzzer target for the model-file reader: any byte string must give a file or an error,
// never a crash, a hang or an out-of-bounds access. Build: scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "infer/format/model_file.h"

namespace {

// Writes a tiny valid model (1 layer, 2 experts) to `path`: the seed corpus.
void WriteSeed(const std::string& path, st::DType t, bool tied) {
  absl::StatusOr<st::ModelConfig> cfg = st::ParseModelConfig(absl::StrCat(
      R"({"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
      "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 32, "moe_num_primary_experts": 2,
      "moe_num_active_primary_experts": 1, "moe_ffn_hidden_size": 32,
      "max_position_embeddings": 64, "tie_word_embeddings": )",
      tied ? "true}" : "false}"));
  if (!cfg.ok()) std::abort();
  auto w = st::ModelFileWriter::Create(path);
  if (!w.ok()) std::abort();
  st::ModelFileWriter& m = **w;
  m.SetConfig(*cfg);
  m.SetString(st::kMetaTokenizerName, "byte");
  m.SetBytes(st::kMetaTokenizerJson, "");
  m.SetString(st::kMetaChatTemplate, "");
  m.SetI64(st::kMetaBosTokenId, 1);
  m.SetI64Array(st::kMetaEosTokenIds, {2});
  m.SetString(st::kMetaExportSource, "fuzz seed");
  m.SetString(st::kMetaExportRecipe, st::DTypeName(t));
  // The optional policy and generation keys, so that mutations reach their checks too.
  st::TokenizerPolicy policy;
  policy.add_bos_token = tied;
  policy.bos_token = "<s>";
  policy.eos_token = "</s>";
  policy.special_token_ids = {1, 2};
  m.SetTokenizerPolicy(policy);
  st::GenerationDefaults gen;
  gen.do_sample = true;
  gen.temperature = 0.7;
  gen.top_k = 20;
  gen.top_p = 0.9;
  gen.eos_token_id = {2};
  m.SetGenerationDefaults(gen);
  std::vector<char> buf(1 << 16, 1);
  auto add = [&](const std::string& name, st::DType dt, std::vector<int64_t> dims) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    if (!m.AddTensor(name, dt, dims, buf.data(), st::DTypeBytes(dt, n)).ok()) std::abort();
  };
  add("token_embd", t, {32, 32});
  add("output_norm", st::DType::kF32, {32});
  if (!tied) add("output", t, {32, 32});
  add("blk.0.attn_norm", st::DType::kF32, {32});
  add("blk.0.attn_q", t, {32, 32});
  add("blk.0.attn_k", t, {16, 32});
  add("blk.0.attn_v", t, {16, 32});
  add("blk.0.attn_output", t, {32, 32});
  add("blk.0.ffn_norm", st::DType::kF32, {32});
  add("blk.0.ffn_gate_inp", st::DType::kF32, {2, 32});
  const size_t part = static_cast<size_t>(st::DTypeBytes(t, 32 * 32));
  for (int e = 0; e < 2; ++e) {
    st::ModelFileWriter::Part p{t, {32, 32}, buf.data(), part};
    if (!m.AddExpert(0, e, p, p, p).ok()) std::abort();
  }
  if (!m.Finish().ok()) std::abort();
}

}  // namespace

// With ST_FUZZ_SEED_DIR set, (re)writes the seed files there before the corpus is read.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("ST_FUZZ_SEED_DIR")) {
    WriteSeed(absl::StrCat(dir, "/seed_q4_0_tied.stmf"), st::DType::kQ4_0, true);
    WriteSeed(absl::StrCat(dir, "/seed_f16_untied.stmf"), st::DType::kF16, false);
  }
  return 0;
}

namespace {

void Check(absl::string_view bytes) {
  st::ModelFile::Options options;
  options.verify_checksums = true;
  absl::StatusOr<std::unique_ptr<st::ModelFile>> f = st::ModelFile::OpenFromMemory(bytes, options);
  if (!f.ok()) return;
  // Touch what a caller would: every tensor's bytes and every expert extent.
  const st::ModelFile& m = **f;
  volatile uint8_t sink = 0;
  for (const st::TensorInfo& t : m.tensors()) {
    if (t.size > 0) sink = sink ^ m.TensorData(t)[t.size - 1];
  }
  for (int l = 0; l < m.config().num_hidden_layers; ++l) {
    for (int e = 0; e < m.config().moe_num_primary_experts; ++e) {
      absl::StatusOr<st::ExpertExtent> x = m.GetExpertExtent(l, e);
      if (x.ok()) sink = sink ^ m.data()[x->offset + x->size - 1];
    }
  }
}

}  // namespace

// Each input is parsed as is, and again with its header checksum (and tensor checksums)
// repaired, so that mutations reach the metadata, directory and layout checks behind them.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  Check(bytes);
  if (size < st::kModelFileHeaderSize) return 0;
  std::string fixed(bytes);
  uint64_t mo, ms, dof, ds;
  std::memcpy(&mo, &fixed[16], 8);
  std::memcpy(&ms, &fixed[24], 8);
  std::memcpy(&dof, &fixed[32], 8);
  std::memcpy(&ds, &fixed[40], 8);
  if (mo > size || ms > size - mo || dof > size || ds > size - dof) return 0;
  uint32_t crc = st::Crc32c(fixed.data(), 56);
  crc = st::Crc32c(fixed.data() + mo, ms, crc);
  crc = st::Crc32c(fixed.data() + dof, ds, crc);
  std::memcpy(&fixed[56], &crc, 4);
  Check(fixed);
  return 0;
}
