// The Hugging Face exporter: any TensorSource -> a SmallThinker checkpoint directory laid out as
// the released ones are (config.json, model.safetensors or shards + index, tokenizer.json,
// tokenizer_config.json, generation_config.json). Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "infer/export/tensor_source.h"
#include "model/config.h"

namespace st {

// The element type of the written weights.
enum class HfDType { kBF16, kF32 };
// "bf16" / "bfloat16" -> kBF16, "f32" / "float32" -> kF32; anything else is an error naming it.
absl::StatusOr<HfDType> ParseHfDType(const std::string& name);
const char* HfTorchDType(HfDType t);  // "bfloat16" / "float32" (config.json's torch_dtype)

// A byte count as transformers' max_shard_size takes it: an integer with an optional unit,
// "5GB" = 5 * 10^9, "500MB", "64KB", "2GiB" = 2 * 2^30, "1MiB", "4096" or "4096B" (case of the
// unit ignored). Must be >= 1.
absl::StatusOr<int64_t> ParseShardSize(const std::string& text);

// config.json for `cfg`: the key set of the released SmallThinker-4BA0.6B-Instruct config.json
// with `cfg`'s values (ModelConfig::ToJson's semantic keys, plus architectures
// ["SmallThinkerForCausalLM"], attention_dropout, initializer_range, norm_topk_prob true,
// output_router_logits, rope_scaling null, torch_dtype = `torch_dtype`, transformers_version
// "4.53.3", use_cache), keys sorted as transformers writes them.
// Decision: no auto_map. The released file points auto_map at configuration_smallthinker.py /
// modeling_smallthinker.py, remote code we do not ship; an auto_map naming missing files makes
// trust_remote_code loads fail, so the key is left out (copy the two .py files and add auto_map
// by hand to load through the remote code). The generation keys the released file carries as
// null (max_length, temperature, top_p, repetition_penalty) and the bookkeeping keys model_name
// and tokenizer_class are left out too: generation_config.json and tokenizer_config.json hold
// them. ParseModelConfig (either key policy) reads the result back to `cfg`.
std::string HfConfigJson(const ModelConfig& cfg, const std::string& torch_dtype);

// A Hugging Face tokenizer.json equivalent to ByteTokenizer: byte-level BPE whose ids 0..255
// are the 256 bytes (each written as its ByteLevel code point), no merges, <|endoftext|> the
// special added token 256, ByteLevel pre-tokenizer (no prefix space) and decoder. Valid UTF-8
// text encodes to its bytes, and every id decodes to the same bytes, as with ByteTokenizer.
// (Invalid UTF-8 differs: a tokenizer.json tokenizer sees text, so each invalid sequence
// becomes U+FFFD; and the text "<|endoftext|>" becomes id 256 where ByteTokenizer keeps its 13
// bytes.)
std::string ByteLevelTokenizerJson();

struct HfExportOptions {
  HfDType dtype = HfDType::kBF16;
  // Shards of at most this many tensor bytes (a tensor larger than that gets a shard of its
  // own), as transformers' save_pretrained(max_shard_size="5GB"). One shard is written as
  // model.safetensors with no index.
  int64_t max_shard_bytes = 5'000'000'000;
  // An existing non-empty directory is refused unless `force`. With `force` the files this
  // export writes are replaced, and the files a loader would read in their place are removed
  // (model.safetensors, model.safetensors.index.json, model-*-of-*.safetensors,
  // chat_template.jinja); anything else in the directory is kept.
  bool force = false;
  // Called after each tensor: (tensors done, tensors total, bytes written, bytes total).
  std::function<void(int64_t done, int64_t total, int64_t bytes, int64_t total_bytes)> progress;
};

struct HfExportReport {
  std::vector<std::string> files;  // names written in the directory, sorted
  int shards = 0;
  int64_t tensors = 0;
  uint64_t tensor_bytes = 0;  // the index's total_size
  uint64_t bytes = 0;         // all files written
  double seconds = 0;
};

// Writes `dir` (created with its parents when missing) from `src`:
//   config.json            HfConfigJson(config, torch_dtype); bos/eos ids: the config's, else
//                          those of generation_config/tokenizer_config, else the tokenizer's
//                          end-of-text token (as ExportModel resolves them)
//   model.safetensors      or model-0000i-of-0000n.safetensors + model.safetensors.index.json
//                          ({"metadata": {"total_size"}, "weight_map"}): ExpectedTensors(config)
//                          in that order with their Hugging Face names (no lm_head.weight when
//                          tied), bf16 (round to nearest even, NaN kept) or f32
//   tokenizer.json         the source's; ByteLevelTokenizerJson() for the byte tokenizer
//   tokenizer_config.json  TokenizerConfigJson(policy, tokenizer, chat template)
//   generation_config.json GenerationConfigJson(defaults), bos/eos filled in from config.json
//                          where the source has none
// The source is checked first (CheckTensorsMatchConfig). Streams: one tensor in memory at a
// time. Every file is written under a temp name ("<name>.tmp.<pid>") and the files are renamed
// into place only after all of them are complete, config.json last; on any error the temp files
// are removed (and the directories this call created), so a failed export leaves nothing that
// looks like a checkpoint and changes nothing the user had. Errors name the file.
absl::StatusOr<HfExportReport> ExportHfDirectory(const TensorSource& src, const std::string& dir,
                                                 const HfExportOptions& options);

}  // namespace st
