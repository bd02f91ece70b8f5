// A TensorSource of random weights for any model config (st-export --random-init): synthetic
// model files for speed measurements without training or downloading a checkpoint.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "infer/export/tensor_source.h"
#include "model/config.h"

namespace st {

// Standard deviation of every random matrix (embedding, attention, router, experts, LM head):
// Hugging Face's default initializer_range.
inline constexpr float kRandomInitStd = 0.02f;

// tensors() are ExpectedTensors(cfg), all "F32". ReadF32(name) generates the tensor from
// (seed, name) alone, so a tensor never depends on read order or on the thread count: RMSNorm
// weights are exactly 1, every other element is kRandomInitStd * (an Irwin-Hall sum of four
// 16-bit uniforms from a counter-based hash of (seed, name, index), normalised to mean 0 and
// variance 1): symmetric, bell-shaped, bounded at +-3.46 standard deviations. Generation runs
// on every core for large tensors (hundreds of millions of values per second per core).
// The tokenizer is stored as given: a MakeTokenizer name and its JSON ("byte" and "" by
// default); it must build and must not have more ids than cfg.vocab_size (a smaller one is
// fine: the unused embedding rows are simply never looked up). The config is validated.
absl::StatusOr<std::unique_ptr<TensorSource>> MakeRandomSource(
    const ModelConfig& cfg, uint64_t seed, const std::string& tokenizer_name = "byte",
    const std::string& tokenizer_json = "");

}  // namespace st
