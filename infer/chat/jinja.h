// Jinja: the template engine for Hugging Face chat templates (torch-free). It renders exactly as
// Hugging Face's JavaScript renderer @huggingface/jinja 0.5.13 does (the oracle of
// tests/data/chat/golden.json), quirks included; see "Semantics" below.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace st::jinja {

namespace internal {
struct Program;
}

struct Options {
  // Both on is how transformers' apply_chat_template configures Jinja, and what the oracle always
  // does: a newline right after a block tag is dropped, and spaces/tabs before a block or comment
  // tag at the start of a line are dropped.
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  // Cap on the rendered text and on every string or list built while rendering.
  int64_t max_output_bytes = int64_t{64} << 20;
  // Cap on evaluation work per Render (expressions evaluated, loop iterations, list items
  // built): a template that would run longer fails instead of hanging.
  int64_t max_steps = 20'000'000;
  // Name used in error messages: "<source_name>:LINE:COLUMN: ...".
  std::string source_name = "chat template";
};

// A parsed template. Immutable after Parse; Render is const and safe to call concurrently.
// Errors (syntax, unknown filter, type errors, raise_exception, limits) are
// absl::InvalidArgumentError whose message starts with "<source_name>:LINE:COLUMN: " (1-based,
// columns count Unicode code points of the original source). Render never throws, crashes or
// hangs on any template or context: nesting, macro recursion, loop work and output are bounded.
//
// Semantics (those of the oracle, which differ from Python Jinja in places): `{{ none }}` and
// undefined print nothing; booleans print "true"/"false"; lists and dicts print as JSON with
// ", " and ": " separators; `x.strip(chars)` and friends ignore `chars` and strip whitespace;
// string length and indexing count UTF-16 code units, slicing counts code points; integers are
// IEEE doubles; `a | default` needs parentheses (`a | default('x')`). Globals: namespace(),
// range(), raise_exception(msg), strftime_now(fmt) (local time), true/false/none and their
// capitalized forms.
class Template {
 public:
  static absl::StatusOr<Template> Parse(absl::string_view source, const Options& options = {});

  // `context` is a JSON object of variables. Object key order is kept (tojson, items()), except
  // that keys that are array indices ("0", "12") come first in ascending order, as in a
  // JavaScript object. Numbers with an integral value are integers.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& context) const;

 private:
  std::shared_ptr<const internal::Program> program_;
};

}  // namespace st::jinja
