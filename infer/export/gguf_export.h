// The GGUF exporter: a checkpoint (any TensorSource) or one of our model files -> the GGUF file
// llama.cpp's converter (convert_hf_to_gguf.py, arch "smallthinker") writes for the same model:
// its metadata keys and types, tensor names and shapes, experts stacked per layer, and the
// tokenizer as a "gpt2" byte-level BPE. Torch-free. Facts and reasons: docs/gguf.md.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "infer/export/exporter.h"
#include "infer/export/gguf_smallthinker.h"
#include "infer/export/tensor_source.h"
#include "infer/format/model_file.h"
#include "model/config.h"

namespace st {

// Whether llama.cpp computes `cfg`'s per-layer attention as we do. It can express only
//   (a) every layer RoPE with full attention (the GGUF has no attention.sliding_window), or
//   (b) layers il % 4 == 0 NoPE with full attention and every other layer RoPE with a sliding
//       window of exactly kLlamaCppSlidingWindow (the GGUF has attention.sliding_window),
// and at most kLlamaCppMaxExperts experts. Any other config gives FailedPrecondition naming the
// first layer (or setting) that differs and what llama.cpp would do instead.
absl::Status CheckLlamaCppLayout(const ModelConfig& cfg);

// The tokenizer as llama.cpp's "gpt2" (byte-level BPE) vocabulary.
struct GgufVocab {
  std::string pre;                  // tokenizer.ggml.pre: "qwen2" or "gpt-2"
  std::vector<std::string> tokens;  // by id, vocab_size of them
  std::vector<int32_t> types;       // llama.cpp token types, by id (kGgufToken*)
  std::vector<std::string> merges;  // "a b" in rank order (may be empty)
};

// The vocabulary the converter writes for a tokenizer (MakeTokenizer's name and JSON), padded to
// `vocab_size` ids:
//   - "bpe" (a Hugging Face tokenizer.json): pre "qwen2" when the pre-tokenizer is Qwen2's
//     Split regex (kQwen2Pattern) before a ByteLevel without regex, "gpt-2" for a ByteLevel
//     with GPT-2's regex; both without add_prefix_space. Anything else (and ignore_merges) is
//     refused naming it: llama.cpp would split text differently.
//   - "byte": ByteLevelTokenizerJson() (hf_writer.h): the 256 bytes as single-byte tokens in
//     ByteLevel form (id = byte), no merges, <|endoftext|> (256) a control token, pre "gpt-2".
//     With no merges every byte is its own token, so llama.cpp encodes valid UTF-8 to the byte
//     tokenizer's ids; invalid UTF-8 becomes U+FFFD's three bytes there (as in our BPE form).
// Token types: an added token that is special, or looks special as the converter judges it
// ("<|...|>", "<｜...｜>", "<pad>", "<mask>", "<2mass>", "[@BOS@]", "<unused...>"), is CONTROL;
// another added token is USER_DEFINED (with "▁" read as a space); a vocabulary token NORMAL;
// a missing id "[PAD<id>]" UNUSED. Merges are "a b", a space inside a part written as U+0120
// (the converter's encoding of the list-of-pairs form). Ids >= vocab_size are an error.
absl::StatusOr<GgufVocab> GgufVocabFor(const std::string& tokenizer_name,
                                       const std::string& tokenizer_json, int vocab_size);

struct GgufExportOptions {
  // The types of a checkpoint's tensors (RecipePreset: f32, f16, q8_0, q4_0, q4_0_pure, not
  // keep; router and norms are always F32, as the converter writes them). A model file's tensors
  // keep the types they are stored with.
  ExportRecipe recipe;
  // Write a config CheckLlamaCppLayout refuses (the report warns that llama.cpp computes another
  // model from it).
  bool force = false;
  std::string name;  // general.name; "" = "smallthinker"
  // Called after each GGUF tensor: (tensors done, tensors total, bytes written, bytes total).
  std::function<void(int64_t done, int64_t total, int64_t bytes, int64_t total_bytes)> progress;
};

struct GgufExportReport {
  int64_t tensors = 0;
  uint64_t bytes = 0;      // the file
  uint32_t file_type = 0;  // general.file_type
  std::string pre;         // tokenizer.ggml.pre
  double seconds = 0;
  // What the user must know: a layout written with force, the expert down matrices of a model
  // file requantised.
  std::vector<std::string> warnings;
  // From a model file with Q4_0 / Q8_0 experts: the down matrices dequantised, transposed and
  // quantised again; the error against the stored (dequantised) values. tensors == 0 otherwise.
  ClassError requantized_down;
};

// Writes `path` (GgufWriter: atomically, re-read before it replaces anything) from a checkpoint
// (checked with CheckTensorsMatchConfig first). Every matrix gets the recipe's type for its class
// (a block type whose rows are not a multiple of 32 falls back to F16, as in ExportModel);
// general.file_type is that of the experts (F32 0, F16 1, Q4_0 2, Q8_0 7, BF16 32). Holds one
// source tensor in memory at a time.
//   metadata  general.architecture "smallthinker", general.type "model", general.name,
//             smallthinker.* (block_count, context_length, embedding_length,
//             feed_forward_length, attention.head_count, attention.head_count_kv,
//             rope.freq_base f32, attention.layer_norm_rms_epsilon f32, attention.key_length,
//             attention.value_length, expert_count, expert_used_count,
//             expert_feed_forward_length, expert_gating_func (softmax 1, sigmoid 2),
//             attention.sliding_window when a layer slides; u32 unless noted),
//             general.file_type, general.quantization_version 2, tokenizer.ggml.* (model "gpt2",
//             pre, tokens, token_type, merges, bos/eos/padding/unknown ids that exist (u32),
//             add_bos_token, add_eos_token) and tokenizer.chat_template when there is one
//   tensors   token_embd [H, V]; per layer blk.N.attn_norm [H], attn_q [H, nh*D], attn_k and
//             attn_v [H, nkv*D], attn_output [nh*D, H], ffn_norm [H], ffn_gate_inp [H, E] (F32),
//             ffn_gate_exps and ffn_up_exps [H, F, E], ffn_down_exps [F, H, E]; output_norm [H];
//             output [H, V] when untied (ggml order, ne[0] the row)
// bos: tokenizer_config.json's, else the config's. eos: tokenizer_config.json's, else the
// config's first, else generation_config.json's first, else the tokenizer's end-of-text.
// A config CheckLlamaCppLayout refuses is an error unless options.force.
absl::StatusOr<GgufExportReport> ExportGguf(const TensorSource& src, const std::string& path,
                                            const GgufExportOptions& options);

// The same from one of our model files: every tensor's blocks are copied as stored (Q4_0, Q8_0,
// F16, BF16 and F32 have ggml's layouts), except that a router or norm not stored as F32 is
// dequantised to F32 (exact), and the expert down matrices, stored transposed ([F, H]), are
// transposed back: exact for F32 / F16 / BF16; Q4_0 / Q8_0 are dequantised, transposed and
// quantised again (report.requantized_down says how far that moved them; F32 when F is not a
// multiple of 32). options.recipe is ignored. The tokenizer, chat template, policy and bos/eos
// ids are the file's (eos: its tokenizer.eos_token, else the first of its eos ids).
// general.file_type is that of the experts.
absl::StatusOr<GgufExportReport> ExportGgufFromModelFile(const ModelFile& file,
                                                         const std::string& path,
                                                         const GgufExportOptions& options);

}  // namespace st
