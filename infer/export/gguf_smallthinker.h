// What llama.cpp's SmallThinker support fixes in a GGUF file (the arch name, the gating and
// token-type ids, the window and NoPE step its graph forces): shared by the GGUF import
// (gguf_source.cpp) and export (gguf_export.cpp). Torch-free, header-only.
#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace st {

inline constexpr char kGgufArch[] = "smallthinker";  // general.architecture
// "smallthinker.<suffix>": the arch's hyperparameter keys.
inline std::string GgufArchKey(absl::string_view suffix) {
  return absl::StrCat(kGgufArch, ".", suffix);
}
// smallthinker.expert_gating_func (llama_expert_gating_func_type).
inline constexpr uint32_t kGgufGatingSoftmax = 1;
inline constexpr uint32_t kGgufGatingSigmoid = 2;
// What llama.cpp's graph forces (src/models/smallthinker.cpp): with attention.sliding_window
// present the window is 4096 whatever the key says, and layers il % 4 == 0 are NoPE + global.
inline constexpr int kLlamaCppSlidingWindow = 4096;
inline constexpr int kLlamaCppNoRopeLayerStep = 4;
// LLAMA_MAX_EXPERTS: llama.cpp refuses to load a model with more experts.
inline constexpr int kLlamaCppMaxExperts = 512;
// llama.cpp's token types (tokenizer.ggml.token_type, an INT32 array).
inline constexpr int32_t kGgufTokenNormal = 1;
inline constexpr int32_t kGgufTokenControl = 3;
inline constexpr int32_t kGgufTokenUserDefined = 4;
inline constexpr int32_t kGgufTokenUnused = 5;

}  // namespace st
