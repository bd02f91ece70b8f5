// The tools' command-line convention (cli.h): parsing on gflags, help, version, messages.
#include "infer/tools/cli.h"

#include <gflags/gflags.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

#ifndef ST_VERSION
#define ST_VERSION "unknown"
#endif

DEFINE_string(threads, "0",
              "worker threads, the calling thread included; 0 = all cores (at most 1024). "
              "st-bench: a comma list (e.g. 1,2) gives one result per value");

namespace st {
namespace cli {
namespace {

std::string& Name() {
  static std::string* name = new std::string("st-tool");
  return *name;
}

// What the usage-error hint names ("st-run --help").
std::string& HelpHint() {
  static std::string* hint = new std::string();
  return *hint;
}

int CoreCount() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

// "--some-flag" and "--some_flag" are one flag.
std::string Normalize(absl::string_view name) {
  std::string s(name);
  std::replace(s.begin(), s.end(), '-', '_');
  return s;
}

bool IsHelp(absl::string_view name) { return name == "help" || name == "h"; }

// One count of --threads: "0" .. kMaxThreads.
absl::StatusOr<int> ParseThreadCount(absl::string_view text) {
  int v = 0;
  if (!absl::SimpleAtoi(text, &v) || v < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--threads '", text, "' is not a thread count: give 0 (all cores) to ", kMaxThreads));
  }
  if (v > kMaxThreads) {
    return absl::InvalidArgumentError(absl::StrCat("--threads ", v, " is more than ", kMaxThreads,
                                                   " threads (this machine has ", CoreCount(),
                                                   " cores; 0 = all of them)"));
  }
  return v;
}

absl::StatusOr<std::vector<int>> ParseThreadList(absl::string_view text, bool list) {
  std::vector<int> out;
  const std::vector<absl::string_view> items = absl::StrSplit(text, ',');
  if (!list && items.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threads '", text, "' is a list; give one count (0 = all cores, at most ",
                     kMaxThreads, ")"));
  }
  for (absl::string_view item : items) {
    absl::StatusOr<int> v = ParseThreadCount(absl::StripAsciiWhitespace(item));
    if (!v.ok()) return v.status();
    out.push_back(*v);
  }
  return out;
}

// Why gflags refused `value` for a flag of `type` (its parser says nothing itself).
std::string ValueProblem(const std::string& type, const std::string& value) {
  if (type == "bool") return "is not a boolean (true/false, 1/0, yes/no)";
  if (type == "int32") {
    int64_t v;
    if (absl::SimpleAtoi(value, &v)) return "is out of range for a 32-bit integer";
    return "is not an integer";
  }
  if (type == "int64") return "is not a 64-bit integer";
  if (type == "uint32" || type == "uint64") return "is not a non-negative integer";
  if (type == "double") return "is not a number";
  return "is not a valid value";
}

// What --help prints for a flag's value.
std::string ValueName(const gflags::CommandLineFlagInfo& f) {
  if (f.type == "bool") return "";
  if (f.name == "threads") return "N";
  if (f.type == "double") return "NUM";
  if (f.type == "string") return "TEXT";
  return "N";
}

// `text` wrapped at `width` columns, each line indented by `indent` spaces.
std::string Wrap(const std::string& text, int indent, int width) {
  std::string out, line;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!line.empty() && static_cast<int>(line.size() + 1 + word.size()) + indent > width) {
      absl::StrAppend(&out, std::string(indent, ' '), line, "\n");
      line.clear();
    }
    absl::StrAppend(&line, line.empty() ? "" : " ", word);
  }
  if (!line.empty()) absl::StrAppend(&out, std::string(indent, ' '), line, "\n");
  return out;
}

// The tool's flags (by name) and the group each is shown in.
struct Known {
  std::map<std::string, gflags::CommandLineFlagInfo> flags;
  std::vector<std::vector<std::string>> by_group;  // [group] -> names, sorted
  std::map<std::string, std::string> aliases;      // spelling ("-m", "ctx_size") -> flag
  std::map<std::string, std::string> shown;        // spelling -> as AliasTable writes it
};

Known KnownFlags(const Spec& spec) {
  std::vector<gflags::CommandLineFlagInfo> all;
  gflags::GetAllFlags(&all);
  Known k;
  k.by_group.resize(spec.groups.size());
  for (size_t g = 0; g < spec.groups.size(); ++g) {
    const FlagGroup& group = spec.groups[g];
    for (const gflags::CommandLineFlagInfo& f : all) {
      const bool in_file =
          !group.defined_in.empty() && absl::EndsWith(f.filename, group.defined_in);
      const bool named =
          std::find(group.names.begin(), group.names.end(), f.name) != group.names.end();
      if ((in_file || named) && !k.flags.count(f.name)) {
        k.flags[f.name] = f;
        k.by_group[g].push_back(f.name);
      }
    }
    std::sort(k.by_group[g].begin(), k.by_group[g].end());
  }
  for (const Alias& a : AliasTable()) {
    for (const char* target : a.targets) {
      if (k.flags.count(target)) {
        const absl::string_view s = a.spelling;
        const std::string key = absl::StartsWith(s, "--") ? Normalize(s.substr(2)) : std::string(s);
        k.aliases[key] = target;
        k.shown[key] = std::string(s);
        break;
      }
    }
  }
  return k;
}

// The known spelling nearest to `typed` (a normalized name), or "" when none is near.
std::string Nearest(const Known& k, const std::string& typed) {
  std::vector<std::string> names = {"help", "version"};
  for (const auto& [name, info] : k.flags) names.push_back(name);
  for (const auto& [spelling, target] : k.aliases) {
    if (spelling[0] != '-') names.push_back(spelling);
  }
  std::string best;
  int best_d = 1 << 30;
  for (const std::string& n : names) {
    const int d = EditDistance(typed, n);
    if (d < best_d) {
      best_d = d;
      best = n;
    }
  }
  const int limit = std::max<int>(1, static_cast<int>(typed.size()) / 3);
  if (best_d <= limit) return best;
  // A unique flag that starts with what was typed ("--max_new" -> --max_new_tokens).
  std::string prefix_match;
  if (typed.size() >= 3) {
    for (const std::string& n : names) {
      if (absl::StartsWith(n, typed)) {
        if (!prefix_match.empty()) return "";
        prefix_match = n;
      }
    }
  }
  return prefix_match;
}

std::string HelpCommand(const Spec& spec) {
  return spec.help_command.empty() ? spec.name + " --help" : spec.help_command;
}

std::string CountText(int n) {
  static const char* kWords[] = {"no", "one", "two", "three"};
  return n >= 0 && n < 4 ? kWords[n] : std::to_string(n);
}

}  // namespace

const std::vector<Alias>& AliasTable() {
  static const std::vector<Alias>* table = new std::vector<Alias>{
      {"-m", {"model"}},
      {"-p", {"prompt"}},
      {"-f", {"prompt_file", "file"}},
      {"-n", {"max_new_tokens"}},
      {"--n-predict", {"max_new_tokens"}},
      {"-t", {"threads"}},
      {"-c", {"ctx", "max_context"}},
      {"--ctx-size", {"ctx", "max_context"}},
      {"-s", {"seed"}},
      {"--temp", {"temperature"}},
      {"-np", {"parallel"}},
  };
  return *table;
}

int EditDistance(absl::string_view a, absl::string_view b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<int>> d(n + 1, std::vector<int>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = static_cast<int>(i);
  for (size_t j = 0; j <= m; ++j) d[0][j] = static_cast<int>(j);
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const int cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

std::string HelpText(const Spec& spec) {
  const Known k = KnownFlags(spec);
  std::string out;
  bool first = true;
  for (absl::string_view line : absl::StrSplit(spec.usage, '\n')) {
    absl::StrAppend(&out, first ? "usage: " : "       ", line, "\n");
    first = false;
  }
  if (!spec.about.empty()) absl::StrAppend(&out, "\n", Wrap(spec.about, 0, 100));
  auto flag_entry = [&](const gflags::CommandLineFlagInfo& f) {
    std::vector<std::string> spellings;
    for (const auto& [spelling, target] : k.aliases) {
      if (target != f.name) continue;
      spellings.push_back(k.shown.at(spelling));
    }
    // Short aliases first.
    std::stable_sort(
        spellings.begin(), spellings.end(),
        [](const std::string& a, const std::string& b) { return a.size() < b.size(); });
    std::string head = "  ";
    for (const std::string& s : spellings) absl::StrAppend(&head, s, ", ");
    absl::StrAppend(&head, "--", f.name);
    const std::string value = ValueName(f);
    if (!value.empty()) absl::StrAppend(&head, " ", value);
    double d;
    if (f.type == "double" && absl::SimpleAtod(f.default_value, &d)) {
      absl::StrAppend(&head, "  (default: ", absl::StrFormat("%g", d), ")");
    } else if (!f.default_value.empty()) {
      absl::StrAppend(&head, "  (default: ", f.default_value, ")");
    }
    absl::StrAppend(&out, head, "\n", Wrap(f.description, 6, 100));
  };
  for (size_t g = 0; g < spec.groups.size(); ++g) {
    if (k.by_group[g].empty()) continue;
    absl::StrAppend(&out, "\n", spec.groups[g].title, ":\n");
    for (const std::string& name : k.by_group[g]) flag_entry(k.flags.at(name));
  }
  absl::StrAppend(&out, "\ncommon flags:\n", "  -h, --help\n",
                  Wrap("print this help and exit", 6, 100), "  --version\n",
                  Wrap("print the version and exit", 6, 100));
  absl::StrAppend(&out, "\n",
                  Wrap("Flag names take - or _ (--max-new-tokens is --max_new_tokens); a value "
                       "follows = or a space, except for booleans (--flag, --flag=false, "
                       "--noflag). Exit status: 0 success, 1 failure, 2 usage error.",
                       0, 100));
  return out;
}

int Fail(absl::string_view message) {
  std::fprintf(stderr, "%s: error: %.*s\n", Name().c_str(), static_cast<int>(message.size()),
               message.data());
  return 1;
}

int Fail(const absl::Status& status) { return Fail(status.message()); }

const std::string& ToolName() { return Name(); }

std::string WrapText(const std::string& text, int indent, int width) {
  return Wrap(text, indent, width);
}

std::string VersionLine(const std::string& name) {
  return absl::StrCat(name, " (smallthinker.cpp) ", ST_VERSION);
}

void SetToolName(const std::string& name, const std::string& help_command) {
  Name() = name;
  HelpHint() = help_command.empty() ? name + " --help" : help_command;
}

int UsageError(absl::string_view message) {
  const std::string hint = HelpHint().empty() ? Name() + " --help" : HelpHint();
  std::fprintf(stderr, "%s: error: %.*s\nsee %s\n", Name().c_str(),
               static_cast<int>(message.size()), message.data(), hint.c_str());
  return 2;
}

void Warn(absl::string_view message) {
  std::fprintf(stderr, "%s: warning: %.*s\n", Name().c_str(), static_cast<int>(message.size()),
               message.data());
}

bool FlagGiven(const char* name) {
  gflags::CommandLineFlagInfo info;
  return gflags::GetCommandLineFlagInfo(name, &info) && !info.is_default;
}

Parsed Parse(const Spec& spec, int argc, char** argv) {
  SetToolName(spec.name, HelpCommand(spec));
  Parsed p;
  const Known k = KnownFlags(spec);
  // --help anywhere before "--" wins over errors elsewhere on the line.
  auto help_requested = [&] {
    for (int i = 1; i < argc; ++i) {
      const absl::string_view a = argv[i];
      if (a == "--") break;
      if (a == "--help" || a == "-h" || a == "-help") return true;
    }
    return false;
  };
  auto usage_error = [&](const std::string& message) {
    if (help_requested()) {
      std::fputs(HelpText(spec).c_str(), stdout);
      p.exit_code = 0;
    } else {
      p.exit_code = UsageError(message);
    }
    return p;
  };
  bool flags_done = false;
  for (int i = 1; i < argc; ++i) {
    const std::string token = argv[i];
    if (flags_done || token.size() < 2 || token[0] != '-') {
      p.args.push_back(token);
      continue;
    }
    if (token == "--") {
      flags_done = true;
      continue;
    }
    const size_t dashes = token[1] == '-' ? 2 : 1;
    const size_t eq = token.find('=');
    const std::string typed = token.substr(0, eq);  // as the user wrote it, for messages
    const std::string raw = token.substr(dashes, eq == std::string::npos ? eq : eq - dashes);
    const bool has_value = eq != std::string::npos;
    const std::string value_text = has_value ? token.substr(eq + 1) : "";
    const std::string name = Normalize(raw);
    if (raw.empty() || raw[0] == '-') return usage_error(absl::StrCat("unknown flag ", typed));
    if (IsHelp(name) && !has_value) {
      std::fputs(HelpText(spec).c_str(), stdout);
      p.exit_code = 0;
      return p;
    }
    if (name == "version" && !has_value) {
      std::printf("%s\n", VersionLine(spec.name).c_str());
      p.exit_code = 0;
      return p;
    }
    // Resolve the spelling to a flag of the tool.
    std::string flag;
    bool negated = false;
    if (dashes == 1 && k.aliases.count(typed)) {
      flag = k.aliases.at(typed);
    } else if (k.flags.count(name)) {
      flag = name;
    } else if (k.aliases.count(name)) {
      flag = k.aliases.at(name);
    } else if (absl::StartsWith(name, "no") && k.flags.count(name.substr(2)) &&
               k.flags.at(name.substr(2)).type == "bool") {
      flag = name.substr(2);
      negated = true;
    }
    if (flag.empty()) {
      if (std::find(spec.inapplicable.begin(), spec.inapplicable.end(), name) !=
          spec.inapplicable.end()) {
        std::string command = HelpCommand(spec);
        if (absl::EndsWith(command, " --help")) command.resize(command.size() - 7);
        return usage_error(absl::StrCat("--", name, " does not apply to '", command, "'"));
      }
      const std::string near = Nearest(k, name);
      return usage_error(
          absl::StrCat("unknown flag ", typed,
                       near.empty() ? "" : absl::StrCat("; did you mean --", near, "?")));
    }
    const gflags::CommandLineFlagInfo& info = k.flags.at(flag);
    std::string value;
    if (negated) {
      if (has_value) return usage_error(absl::StrCat(typed, " takes no value"));
      value = "false";
    } else if (has_value) {
      value = value_text;
    } else if (info.type == "bool") {
      value = "true";
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return usage_error(absl::StrCat(typed, " needs a value"));
    }
    if (flag == "threads") {
      absl::StatusOr<std::vector<int>> t = ParseThreadList(value, spec.threads_list);
      if (!t.ok()) return usage_error(std::string(t.status().message()));
    }
    if (gflags::SetCommandLineOption(flag.c_str(), value.c_str()).empty()) {
      std::string shown = typed == "--" + flag ? typed : absl::StrCat(typed, " (--", flag, ")");
      return usage_error(absl::StrCat(shown, ": '", value, "' ", ValueProblem(info.type, value)));
    }
  }
  const int n = static_cast<int>(p.args.size());
  if (n > spec.max_args) {
    if (spec.max_args == 0) {
      return usage_error(absl::StrCat("unexpected argument '", p.args[0],
                                      "' (flags look like --name=value or --name value)"));
    }
    return usage_error(absl::StrCat("unexpected argument '", p.args[spec.max_args], "': give ",
                                    CountText(spec.max_args), " ", spec.args_name,
                                    spec.max_args == 1 ? "" : "s"));
  }
  if (n < spec.min_args) {
    const std::string count = spec.min_args == spec.max_args
                                  ? CountText(spec.min_args)
                                  : absl::StrCat("at least ", CountText(spec.min_args));
    return usage_error(absl::StrCat("give ", count, " ", spec.args_name,
                                    spec.min_args == 1 && spec.max_args == 1 ? "" : "s",
                                    n > 0 ? absl::StrCat(" (got ", n, ")") : ""));
  }
  return p;
}

int Threads() {
  absl::StatusOr<std::vector<int>> t = ParseThreadList(FLAGS_threads, false);
  return t.ok() ? t->front() : 0;
}

int ResolvedThreads() {
  const int t = Threads();
  return t > 0 ? t : CoreCount();
}

std::vector<int> ThreadList() {
  absl::StatusOr<std::vector<int>> t = ParseThreadList(FLAGS_threads, true);
  if (!t.ok()) return {CoreCount()};
  for (int& v : *t) {
    if (v == 0) v = CoreCount();
  }
  return *t;
}

}  // namespace cli
}  // namespace st
