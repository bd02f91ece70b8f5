// Shared by the runtime's command-line tools (st-run, st-perplexity): loading a model file with
// its tokenizer, reading text files, and error reporting with what to do about it.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "infer/runtime/engine.h"
#include "infer/tokenizer/tokenizer.h"

namespace st {

struct LoadedModel {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Tokenizer> tokenizer;
  double load_seconds = 0;
};

// Engine::Load plus the file's tokenizer. Errors name the file and say what to do (a missing
// file: pass a .stmf written by st-export; the reader's own message otherwise).
absl::StatusOr<LoadedModel> LoadModel(const std::string& path, const EngineOptions& options);

// The whole file; `what` names it in the error ("--prompt_file").
absl::StatusOr<std::string> ReadTextFile(const std::string& path, absl::string_view what);

// "ReGLU sparsity: S of T expert neurons skipped (P%)".
std::string SparsityText(const EngineStats& s);

// Prints "tool: message" to stderr and returns 1 (the exit code).
int ToolFail(absl::string_view tool, absl::string_view message);

}  // namespace st
