// libFuzzer target for the Jinja engine (infer/chat/): any template text with any context must
// render or fail with an error, never crash, hang, or run out of memory. Input: the template,
// optionally followed by a NUL byte and a JSON object used as the context (else a small
// conversation). Build and run: scripts/fuzz.sh. At start-up the fuzzer writes its seeds (each
// checked-in template of tests/data/chat/templates with a conversation of cases.json) into
// $ST_FUZZ_SEED_DIR when that is set.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "infer/chat/chat_template.h"
#include "infer/chat/jinja.h"
#include "model/file_io.h"
#include "nlohmann/json.hpp"

namespace {

using ojson = nlohmann::ordered_json;

const ojson& DefaultContext() {
  static const ojson* ctx = [] {
    st::ChatRenderInput in;
    in.messages = ojson::parse(R"([
      {"role": "system", "content": "sys"},
      {"role": "user", "content": "héllo <think>x</think>"},
      {"role": "assistant", "content": "", "reasoning_content": "r",
       "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": [1, 2.5, null]}}}]},
      {"role": "tool", "content": "42"},
      {"role": "user", "content": [{"type": "text", "text": "t"}]}])");
    in.tools =
        ojson::parse(R"([{"type": "function", "function": {"name": "f", "parameters": {}}}])");
    in.add_generation_prompt = true;
    in.bos_token = "<s>";
    in.eos_token = "</s>";
    in.kwargs = {{"enable_thinking", false}};
    absl::StatusOr<ojson> c = st::ChatTemplateContext(in);
    if (!c.ok()) std::abort();
    return new ojson(*c);
  }();
  return *ctx;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("ST_FUZZ_SEED_DIR");
  if (dir == nullptr) return 0;
  namespace fs = std::filesystem;
  const fs::path chat = fs::path(ST_SOURCE_DIR) / "tests/data/chat";
  const ojson cases =
      ojson::parse(st::ReadFile((chat / "cases.json").string()).value_or(""), nullptr, false);
  std::string conv = "{}";
  if (cases.is_object() && cases.contains("conversations")) {
    ojson ctx = ojson::object();
    ctx["messages"] = cases["conversations"][3]["messages"];
    ctx["tools"] = cases["conversations"][3]["tools"];
    ctx["add_generation_prompt"] = true;
    conv = ctx.dump();
  }
  int n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(chat / "templates", ec)) {
    const std::string text = st::ReadFile(e.path().string()).value_or("");
    std::ofstream(fs::path(dir) / ("seed_" + std::to_string(n++)), std::ios::binary) << text;
    std::ofstream(fs::path(dir) / ("seed_" + std::to_string(n++)), std::ios::binary)
        << text << std::string(1, '\0') << conv;
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string source = input.substr(0, nul);
  st::jinja::Options options;
  options.max_output_bytes = 1 << 20;  // keep each run fast; the limits themselves are tested
  options.max_steps = 200'000;
  absl::StatusOr<st::jinja::Template> t = st::jinja::Template::Parse(source, options);
  if (!t.ok()) return 0;
  if (nul != std::string::npos) {
    const ojson ctx = ojson::parse(input.substr(nul + 1), nullptr, /*allow_exceptions=*/false);
    if (ctx.is_object()) {
      (void)t->Render(ctx);
      return 0;
    }
  }
  (void)t->Render(DefaultContext());
  return 0;
}
