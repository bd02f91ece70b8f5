// Tensor sources for the exporter: read-only, one-tensor-at-a-time access to a Hugging Face
// SmallThinker checkpoint (config.json + safetensors), our HDF5 training checkpoint or a
// llama.cpp GGUF file.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "infer/quant/types.h"
#include "infer/tokenizer/hf_configs.h"
#include "model/config.h"

namespace st {

class GgufMetadata;  // infer/format/gguf.h

// One tensor as the source stores it. `name` is the Hugging Face name
// ("model.layers.0.self_attn.q_proj.weight"); `dtype` is the stored type: a safetensors name
// ("F32", "F16", "BF16") or, for a GGUF, ggml's type name ("f32", "q4_0", "q6_K", ...); `shape`
// is row-major, torch [out, in] for matrices.
struct SourceTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  int64_t num_elements() const;  // product of shape (1 for a scalar)
};

// A tensor's stored bytes in one of the model file's types (ReadStored).
struct StoredTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // the Hugging Face shape, as SourceTensor's
  std::vector<uint8_t> bytes;  // DTypeBytes(dtype, elements): the rows of that shape, in order
};

// A checkpoint opened for export. Reads one tensor at a time so that a 21B export never holds
// the model in memory. Not thread-safe.
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual const ModelConfig& config() const = 0;
  // Every tensor the source holds, sorted by name.
  virtual const std::vector<SourceTensor>& tensors() const = 0;
  // The tensor converted to float32 (exact for F32/F16/BF16). NotFound names the tensor.
  virtual absl::StatusOr<std::vector<float>> ReadF32(const std::string& hf_name) const = 0;
  // The tensor's stored bytes when the source stores it in a type of the model file (F32, F16,
  // BF16, Q8_0, Q4_0) with the rows of its Hugging Face shape, block for block as the model file
  // lays them out: the exporter's "keep" recipe copies them unchanged. nullopt when the stored
  // type is another (the default: sources that store only float types let the exporter convert
  // them). NotFound names an unknown tensor.
  virtual absl::StatusOr<std::optional<StoredTensor>> ReadStored(const std::string& hf_name) const;
  // Tokenizer: a MakeTokenizer name ("bpe" for a Hugging Face tokenizer.json, "byte") and
  // its JSON bytes ("" for "byte").
  virtual std::string tokenizer_name() const = 0;
  virtual std::string tokenizer_json() const = 0;
  // Jinja chat template ("" when the source has none).
  virtual std::string chat_template() const = 0;
  // tokenizer_config.json's policy (default: nothing added, no named tokens) and
  // generation_config.json's defaults (empty when the source has none).
  virtual TokenizerPolicy tokenizer_policy() const { return TokenizerPolicy(); }
  virtual GenerationDefaults generation_defaults() const { return GenerationDefaults(); }
  // What the user should know about how the source was read, one line each (keys ignored, files
  // missing); empty when there is nothing to say.
  virtual std::vector<std::string> notes() const { return {}; }
  // One line for logs: "hf checkpoint <dir> (3 safetensors files)".
  virtual std::string description() const = 0;
  // The export recipe (RecipePreset name) st-export uses when none is given: "keep" for a
  // GGUF (its quantization is kept), "" for the tool's own default.
  virtual std::string default_recipe() const { return ""; }

  // Convenience: the entry for `hf_name`, or nullptr.
  const SourceTensor* Find(const std::string& hf_name) const;
};

// A validated safetensors file (https://huggingface.co/docs/safetensors format): 8-byte
// little-endian header length N, N bytes of JSON header, then the data section. Open()
// validates everything (sizes, dtypes, shapes, offsets in range, consistent with the shape,
// non-overlapping) before any tensor is read; errors name the file and the tensor. Data is
// read with pread on demand. Move-only.
class SafetensorsFile {
 public:
  struct Entry {
    SourceTensor tensor;
    int64_t begin = 0;  // byte offsets into the data section
    int64_t end = 0;
  };
  static constexpr int64_t kMaxHeaderBytes = 100LL << 20;  // 100 MB
  static constexpr int kMaxDims = 8;

  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);
  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  // Sorted by name.
  const std::vector<Entry>& entries() const { return entries_; }
  const Entry* Find(const std::string& name) const;
  // The tensor's raw bytes (little-endian, as stored).
  absl::StatusOr<std::vector<uint8_t>> ReadRaw(const std::string& name) const;
  // The tensor converted to float32.
  absl::StatusOr<std::vector<float>> ReadF32(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  int fd_ = -1;
  int64_t data_start_ = 0;  // 8 + N
  std::vector<Entry> entries_;
};

// model.safetensors.index.json: {"weight_map": {tensor name: shard file}, ...} -> that map.
// Every shard must be a plain file name (no directory part, not "." or ".."); other keys
// ("metadata") are ignored. `where` (the path) starts every error message.
absl::StatusOr<std::map<std::string, std::string>> ParseSafetensorsIndex(absl::string_view text,
                                                                         const std::string& where);

// Bytes of one element of a safetensors dtype name supported here ("F32" 4, "F16" 2,
// "BF16" 2); 0 for anything else.
int SafetensorsDTypeSize(const std::string& dtype);

// A Hugging Face SmallThinker directory: config.json (ParseModelConfig with
// ConfigKeys::kHuggingFace: keys that do not change the computation are ignored and listed in
// notes()), model.safetensors or model.safetensors.index.json ("weight_map": name -> shard) with
// its shards, tokenizer.json (required: an export without a tokenizer is unusable), and the
// optional tokenizer_config.json (BOS/EOS policy, special tokens, chat template; a
// chat_template.jinja beside it wins, as in transformers) and generation_config.json (else the
// generation keys of config.json). tokenizer_name() is "bpe".
absl::StatusOr<std::unique_ptr<TensorSource>> OpenHfCheckpoint(const std::string& dir);

// Our HDF5 checkpoint (data/checkpoint_layout.h): attribute format ==
// "smallthinker.checkpoint", model_config (JSON), tokenizer (name), /params/<hf name> float32,
// /tokenizer/json (uint8) when present. All tensors report dtype "F32".
absl::StatusOr<std::unique_ptr<TensorSource>> OpenTrainCheckpoint(const std::string& h5_path);

// A SmallThinker GGUF as llama.cpp's converter (convert_hf_to_gguf.py) and llama-quantize write
// it. The config comes from general.architecture == "smallthinker" and the smallthinker.* keys:
// block_count, embedding_length, context_length, attention.head_count,
// attention.layer_norm_rms_epsilon, expert_count, expert_used_count, expert_feed_forward_length
// and expert_gating_func (1 softmax, 2 sigmoid) are required; attention.head_count_kv (default
// head_count), attention.key_length (default embedding_length / head_count) and rope.freq_base
// (default 10000) are optional. Exact GGUF
// types as llama.cpp reads them (UINT32 counts, FLOAT32 reals); an absent required key, a wrong
// type or a key that changes the computation in a way not implemented (rope scaling, partial
// rotary, value_length != key_length, ...) is an error naming the key. vocab_size is the length
// of tokenizer.ggml.tokens. Layer layout as llama.cpp derives it: with
// attention.sliding_window > 0, layers il % 4 == 0 are NoPE + full attention and the others
// RoPE + a sliding window of 4096 (llama.cpp's fixed window; the stored value is ignored, and
// notes() says so); without it every layer is RoPE + full attention. tie_word_embeddings is
// true iff there is no output.weight.
// Tensors: every GGUF tensor must be one the config implies (token_embd, output_norm, output,
// blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate_inp,
// ffn_gate_exps, ffn_up_exps, ffn_down_exps}.weight) with the ggml shape (ne) the config
// implies and a type DequantizeRowGgml reads; anything else is an error naming the tensor. They
// are listed under their Hugging Face names and shapes (no Q/K permutation: llama.cpp's
// converter does not permute this architecture); expert e of a stacked tensor is its e-th
// contiguous chunk. dtype is ggml's type name. ReadF32 dequantises; ReadStored returns the
// F32, F16, BF16, Q8_0 and Q4_0 tensors as stored.
// Tokenizer: tokenizer.ggml.model must be "gpt2" (byte-level BPE); TokenizerFromGguf builds the
// tokenizer.json; tokenizer_name() is "bpe". default_recipe() is "keep".
absl::StatusOr<std::unique_ptr<TensorSource>> OpenGgufSource(const std::string& path);

// The tokenizer a GGUF's tokenizer.ggml.* keys describe, as what a Hugging Face checkpoint
// holds.
struct GgufTokenizer {
  std::string json;                // a tokenizer.json BpeTokenizer reads
  TokenizerPolicy policy;          // from the bos/eos/padding/unknown ids and add_bos/add_eos_token
  std::string chat_template;       // tokenizer.chat_template ("" when absent)
  std::vector<std::string> notes;  // how it was read (pre-tokenizer, tokens left out, keys ignored)
};
// Builds it from tokenizer.ggml.model ("gpt2" only), tokens, token_type (3 control and 4
// user-defined tokens become added_tokens, special true for control; 5 unused tokens are left
// out, their ids stay unused), merges ("a b") and pre: "qwen2" gives Qwen2's normalizer (NFC),
// Split pre-tokenizer (Qwen2's regex, then ByteLevel without regex) and ByteLevel decoder, as
// Qwen's tokenizer.json has them; "gpt-2" and "default" give ByteLevel with GPT-2's regex. Any
// other model or pre-tokenizer, a missing or mistyped key, an id out of range or a duplicate
// token is an error naming the key; the result is checked to load (MakeTokenizer). `where`
// (the path) starts every error.
absl::StatusOr<GgufTokenizer> TokenizerFromGguf(const GgufMetadata& metadata,
                                                const std::string& where);

// A directory -> OpenHfCheckpoint; a file starting with the GGUF magic -> OpenGgufSource; a file
// ending in .h5 -> OpenTrainCheckpoint; else an error.
absl::StatusOr<std::unique_ptr<TensorSource>> OpenTensorSource(const std::string& path);

// For error messages: the first five of `names` joined with `sep`, then "... (N more)" when
// there are more.
std::string ListFirstNames(const std::vector<std::string>& names, absl::string_view sep = ", ");

// The Hugging Face tensors the config implies (names and Hugging Face shapes from the registry,
// infer/format/tensors.h), in ForEachTensor's order (embedding, then per layer:
// input_layernorm, q/k/v/o, post_attention_layernorm, router, experts 0..E-1 gate/up/down,
// then model.norm, then lm_head.weight unless tied). Builds them all: for a validated source's
// config only (use ForEachTensor to walk an untrusted one).
std::vector<SourceTensor> ExpectedTensors(const ModelConfig& cfg);

// Every expected tensor exists with the expected shape; any other tensor is an error naming
// it (first few listed). Decision: when tie_word_embeddings is true, a present lm_head.weight
// is accepted and ignored (some exporters save the tied copy); the exporter must use
// model.embed_tokens.weight for the head in that case. Walks the registry and stops once far
// more tensors are missing than the source holds (max(1024, 4 x its tensors): "missing more
// than N"), so a forged config costs little.
absl::Status CheckTensorsMatchConfig(const TensorSource& src);

}  // namespace st
