// Chat templates: the apply_chat_template context and the render entry point.
#include "infer/chat/chat_template.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "infer/chat/jinja.h"

namespace st {

absl::StatusOr<nlohmann::ordered_json> ChatTemplateContext(const ChatRenderInput& in) {
  if (!in.messages.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chat template: messages must be a JSON array of {role, content} objects, got ",
        in.messages.type_name()));
  }
  if (!in.kwargs.is_null() && !in.kwargs.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template: extra variables (kwargs) must be a JSON object, got ",
                     in.kwargs.type_name()));
  }
  nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
  ctx["messages"] = in.messages;
  ctx["tools"] = in.tools;
  ctx["documents"] = in.documents;
  ctx["add_generation_prompt"] = in.add_generation_prompt;
  if (!in.bos_token.empty()) ctx["bos_token"] = in.bos_token;
  if (!in.eos_token.empty()) ctx["eos_token"] = in.eos_token;
  if (in.kwargs.is_object()) {
    for (auto it = in.kwargs.begin(); it != in.kwargs.end(); ++it) {
      const std::string& k = it.key();
      if (k == "messages" || k == "tools" || k == "documents" || k == "add_generation_prompt") {
        return absl::InvalidArgumentError(absl::StrCat(
            "chat template: extra variable '", k, "' would replace the argument of the same name"));
      }
      ctx[k] = it.value();
    }
  }
  return ctx;
}

absl::StatusOr<std::string> RenderChatTemplate(absl::string_view template_source,
                                               const ChatRenderInput& in) {
  absl::StatusOr<nlohmann::ordered_json> ctx = ChatTemplateContext(in);
  if (!ctx.ok()) return ctx.status();
  absl::StatusOr<jinja::Template> t = jinja::Template::Parse(template_source);
  if (!t.ok()) return t.status();
  return t->Render(*ctx);
}

}  // namespace st
