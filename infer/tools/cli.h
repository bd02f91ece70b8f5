// The command-line convention every smallthinker.cpp tool follows (st-data, st-export,
// st-inspect, st-run, st-perplexity, st-bench, st-train, st-sample, st-train-bench, st-ckpt-diff):
// flag parsing on gflags with llama.cpp aliases, --help/-h/--version, the shared --threads flag,
// error messages and exit codes, and reading a file named on the command line. Torch-free.
//
// The convention:
//   exit 0   success; --help, -h and --version
//   exit 1   failure:     "st-x: error: MESSAGE" on stderr
//   exit 2   usage error: "st-x: error: MESSAGE" and "see st-x --help" on stderr (unknown flag,
//            with the nearest known one suggested; bad flag value; missing or unexpected argument)
//   --help   the usage lines and only the tool's own flags (grouped, with defaults), on stdout
//   names    --some-flag and --some_flag are the same flag; values follow '=' or a space
//            (booleans take only '=': --echo=false, or --noecho)
//   aliases  the spellings llama.cpp users type (AliasTable()), wherever the tool has the flag
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gflags/gflags_declare.h"
#include "model/file_io.h"

// Worker threads, the calling thread included; 0 = all cores. Defined once, in cli.cpp; a tool
// that takes it names it in its Spec (and st-bench, with Spec::threads_list, takes a comma list).
// Read it through Threads() / ThreadList(), which Parse has validated.
DECLARE_string(threads);

namespace st {
namespace cli {

// Flags shown together by --help. A flag belongs to a tool when one of its groups names it: every
// flag defined in a source file whose path ends with `defined_in`, and the flags in `names`.
struct FlagGroup {
  std::string title;               // "st-run flags", "engine flags"
  std::string defined_in;          // e.g. "infer/tools/st_run_main.cpp"; "" = none
  std::vector<std::string> names;  // further flags by name (a shared flag such as "threads")
};

// What one command line takes.
struct Spec {
  std::string name;   // "st-run": the start of every message
  std::string usage;  // usage lines without "usage: " ("st-run --model m.stmf --prompt TEXT\n...")
  std::string about;  // a paragraph --help prints after the usage; may be empty
  std::vector<FlagGroup> groups;
  // Positional (non-flag) arguments accepted; more or fewer is a usage error naming `args_name`.
  int min_args = 0;
  int max_args = 0;
  std::string args_name = "argument";  // "model file"
  // Flags of the same binary that this command does not take (st-data's other commands): giving
  // one says "--X does not apply to '<help_command minus --help>'" instead of "unknown flag".
  std::vector<std::string> inapplicable;
  // What the usage-error hint names; default "<name> --help".
  std::string help_command;
  // --threads takes a comma list of counts (st-bench: one result per value).
  bool threads_list = false;
};

// Largest --threads accepted (a larger value is a usage error; 0 = all cores).
inline constexpr int kMaxThreads = 1024;

// The outcome of Parse: the positional arguments, or the exit code main returns now.
struct Parsed {
  std::vector<std::string> args;
  int exit_code = -1;  // >= 0: --help / --version printed (0) or a usage error reported (2)
  bool done() const { return exit_code >= 0; }
};

// Parses argv into the gflags values of the Spec's flags. Every token before "--" that starts
// with '-' (and is not just "-") is a flag: "--name=value", "--name value", "-name", "--noname"
// (booleans), or an alias from AliasTable() ("-m x", "-m=x", "--temp 0"); everything else, and
// everything after "--", is a positional argument. Also records spec.name for Fail and friends.
// Never exits and never lets gflags print: errors are reported in the convention above.
Parsed Parse(const Spec& spec, int argc, char** argv);

// One alias: `spelling` ("-m", "--ctx-size") stands for the first of `targets` the tool has.
struct Alias {
  const char* spelling;
  std::vector<const char*> targets;
};
// The llama.cpp spellings: -m --model, -p --prompt, -f --prompt_file / --file, -n --n-predict
// --max_new_tokens, -t --threads, -c --ctx-size --ctx / --max_context, -s --seed, --temp
// --temperature (--top-k, --top-p, --min-p, --repeat-penalty are the flags themselves).
const std::vector<Alias>& AliasTable();

// "--help" text of a Spec (what Parse prints for --help).
std::string HelpText(const Spec& spec);

// The name given to the last Parse ("st-tool" before any).
const std::string& ToolName();
// "NAME (smallthinker.cpp) VERSION": what --version prints (VERSION: the top-level CMake
// project's).
std::string VersionLine(const std::string& name);
// Sets the name messages start with, and the command the usage hint names (default
// "NAME --help"), for messages before any Parse (st-data's unknown command).
void SetToolName(const std::string& name, const std::string& help_command = "");

// Prints "NAME: error: MESSAGE" to stderr; returns 1, the failure exit code.
int Fail(absl::string_view message);
int Fail(const absl::Status& status);
// Prints "NAME: error: MESSAGE" and "see NAME --help" to stderr; returns 2, the usage exit code.
int UsageError(absl::string_view message);
// Prints "NAME: warning: MESSAGE" to stderr.
void Warn(absl::string_view message);

// `text` broken into lines of at most `width` columns, each indented by `indent` spaces.
std::string WrapText(const std::string& text, int indent, int width = 100);

// Whether the flag was set on the command line (false for a name that is not a flag).
bool FlagGiven(const char* name);

// --threads as a count: 0 = all cores (not resolved). Valid after Parse (which refused bad values).
int Threads();
// --threads with 0 resolved to this machine's cores.
int ResolvedThreads();
// st-bench's comma list, each 0 resolved to this machine's cores.
std::vector<int> ThreadList();

// The whole of the file `path`, which the flag or argument `what` named ("--prompt_file"):
// st::ReadFile (model/file_io.h). A directory, a missing or unreadable file are errors that
// name both and say what was wrong.
using ::st::ReadFile;

// Optimal-string-alignment edit distance (an adjacent transposition costs 1).
int EditDistance(absl::string_view a, absl::string_view b);

}  // namespace cli
}  // namespace st
