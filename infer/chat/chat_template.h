// Chat templates: renders a Hugging Face chat template (tokenizer_config.json "chat_template")
// over a conversation with the variables transformers' apply_chat_template passes, using the
// Jinja engine of jinja.h (torch-free).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace st {

struct ChatRenderInput {
  // Array of {"role", "content", ...}; content may be a string, null, or a list (multimodal
  // templates); tool_calls, reasoning_content etc. are passed as they are.
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;      // list of tool schemas; null = not given (`tools` is none)
  nlohmann::ordered_json documents;  // null = not given (`documents` is none)
  bool add_generation_prompt = false;
  // Special tokens as in transformers' special_tokens_map: an empty string means the tokenizer
  // has no such token, and the variable is then not defined at all (transformers leaves unset
  // tokens out of the map), e.g. Qwen3 has no bos_token.
  std::string bos_token, eos_token;
  // Extra variables merged into the context last (override the special tokens), e.g.
  // {"enable_thinking": false}. Must be a JSON object or null.
  nlohmann::ordered_json kwargs;
};

// The context apply_chat_template renders with: messages, tools, documents,
// add_generation_prompt, then bos_token / eos_token when set, then kwargs. kwargs may not
// redefine messages, tools, documents or add_generation_prompt (Python would raise too).
absl::StatusOr<nlohmann::ordered_json> ChatTemplateContext(const ChatRenderInput& in);

// ChatML (<|im_start|>role\ncontent<|im_end|>), for model files without a chat template of their
// own: what llama.cpp falls back to. st-run and st-server use it then.
inline constexpr char kChatMlTemplate[] =
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
    "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' "
    "}}{%- endif %}";

// Parses and renders; the globals raise_exception(msg) (render fails with the message),
// strftime_now(fmt), range() and namespace() are available. Errors carry
// "chat template:LINE:COLUMN:".
absl::StatusOr<std::string> RenderChatTemplate(absl::string_view template_source,
                                               const ChatRenderInput& in);

}  // namespace st
