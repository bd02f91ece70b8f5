// Jinja public API: Template::Parse / Template::Render, and the one place where the engine's
// internal errors (and any allocation failure) become absl::Status values.
#include "infer/chat/jinja.h"

#include <new>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "infer/chat/jinja_internal.h"

namespace st::jinja {

namespace internal {
std::string RenderProgram(const Program& prog, const nlohmann::ordered_json& context);
}  // namespace internal

namespace {

using internal::JinjaError;

// "name:LINE:COL: message" (1-based; columns count code points), or "name: message".
absl::Status ToStatus(const JinjaError& e, absl::string_view source, const std::string& name) {
  if (e.pos < 0) return absl::InvalidArgumentError(absl::StrCat(name, ": ", e.message));
  const size_t pos = std::min(static_cast<size_t>(e.pos), source.size());
  int64_t line = 1, col = 1;
  for (size_t i = 0; i < pos;) {
    if (source[i] == '\n') {
      ++line;
      col = 1;
      ++i;
    } else {
      internal::DecodeUtf8(source, &i);
      ++col;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(name, ":", line, ":", col, ": ", e.message));
}

}  // namespace

absl::StatusOr<Template> Template::Parse(absl::string_view source, const Options& options) {
  if (options.max_output_bytes <= 0 || options.max_steps <= 0) {
    return absl::InvalidArgumentError("jinja::Options: max_output_bytes and max_steps must be > 0");
  }
  if (source.size() > (size_t{1} << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.source_name, ": template of ", source.size(), " bytes is too large"));
  }
  try {
    auto prog = std::make_shared<internal::Program>();
    prog->source.assign(source.data(), source.size());
    prog->options = options;
    std::vector<internal::Token> tokens = internal::Tokenize(source, options);
    prog->body = internal::ParseTokens(std::move(tokens), static_cast<int64_t>(source.size()));
    Template t;
    t.program_ = std::move(prog);
    return t;
  } catch (const JinjaError& e) {
    return ToStatus(e, source, options.source_name);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(options.source_name, ": out of memory while parsing the template"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(options.source_name, ": ", e.what()));
  }
}

absl::StatusOr<std::string> Template::Render(const nlohmann::ordered_json& context) const {
  if (!program_) return absl::FailedPreconditionError("jinja::Template: not parsed");
  const internal::Program& prog = *program_;
  try {
    return internal::RenderProgram(prog, context);
  } catch (const JinjaError& e) {
    return ToStatus(e, prog.source, prog.options.source_name);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(prog.options.source_name, ": out of memory while rendering"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(prog.options.source_name, ": ", e.what()));
  }
}

}  // namespace st::jinja
