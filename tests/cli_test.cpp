// The tools' command-line convention (infer/tools/cli.h): flag spellings and aliases, values,
// suggestions, exit codes, positional arguments, --threads and ReadFile.
#include "infer/tools/cli.h"

#include <gflags/gflags.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

DEFINE_string(cli_test_prompt, "", "a text flag");
DEFINE_int32(cli_test_count, 3, "an integer flag");
DEFINE_bool(cli_test_echo, true, "a boolean flag");
// Defined in infer/tools/engine_flags.cpp: the target of the -c and --ctx-size aliases.
DECLARE_int32(max_context);

namespace st {
namespace cli {
namespace {

Spec TestSpec() {
  Spec s;
  s.name = "st-test";
  s.usage = "st-test [flags]";
  s.groups = {{"st-test flags", "tests/cli_test.cpp", {"threads"}}};
  s.max_args = 1;
  return s;
}

// Parses `args` (after the program name) with gflags' defaults restored first.
Parsed ParseArgs(std::vector<std::string> args, const Spec& spec = TestSpec()) {
  FLAGS_cli_test_prompt = "";
  FLAGS_cli_test_count = 3;
  FLAGS_cli_test_echo = true;
  FLAGS_max_context = 0;
  FLAGS_threads = "0";
  std::vector<char*> argv = {const_cast<char*>("st-test")};
  for (std::string& a : args) argv.push_back(a.data());
  return Parse(spec, static_cast<int>(argv.size()), argv.data());
}

TEST(Cli, EditDistanceCountsATranspositionOnce) {
  EXPECT_EQ(EditDistance("tempreature", "temperature"), 1);
  EXPECT_EQ(EditDistance("", "abc"), 3);
  EXPECT_EQ(EditDistance("model", "model"), 0);
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3);
}

TEST(Cli, SpellingsOfAFlag) {
  Parsed p = ParseArgs({"--cli_test_prompt", "a b", "--cli-test-count=7", "--nocli_test_echo"});
  ASSERT_FALSE(p.done());
  EXPECT_EQ(FLAGS_cli_test_prompt, "a b");
  EXPECT_EQ(FLAGS_cli_test_count, 7);
  EXPECT_FALSE(FLAGS_cli_test_echo);
  EXPECT_TRUE(FlagGiven("cli_test_count"));
  p = ParseArgs({"-cli_test_count", "-5", "--cli_test_echo=false", "pos"});
  ASSERT_FALSE(p.done());
  EXPECT_EQ(FLAGS_cli_test_count, -5);  // a value may start with '-'
  EXPECT_FALSE(FLAGS_cli_test_echo);
  EXPECT_EQ(p.args, std::vector<std::string>{"pos"});
}

TEST(Cli, AliasesResolveToTheToolsFlags) {
  Parsed p = ParseArgs({"-t", "2"});
  ASSERT_FALSE(p.done());
  EXPECT_EQ(Threads(), 2);
  // --max_context is not one of st-test's flags: its aliases are unknown here.
  EXPECT_EQ(ParseArgs({"-c", "64"}).exit_code, 2);
  EXPECT_EQ(FLAGS_max_context, 0);
  Spec spec = TestSpec();
  spec.groups[0].names.push_back("max_context");
  p = ParseArgs({"-t=3", "-c", "64"}, spec);
  ASSERT_FALSE(p.done());
  EXPECT_EQ(Threads(), 3);
  EXPECT_EQ(FLAGS_max_context, 64);
  ASSERT_FALSE(ParseArgs({"--ctx-size=128"}, spec).done());
  EXPECT_EQ(FLAGS_max_context, 128);
}

TEST(Cli, UsageErrorsExitTwo) {
  EXPECT_EQ(ParseArgs({"--cli_test_cuont", "1"}).exit_code,
            2);                                            // unknown (a suggestion is printed)
  EXPECT_EQ(ParseArgs({"--ctx-size", "0"}).exit_code, 2);  // alias of a flag the tool lacks
  EXPECT_EQ(ParseArgs({"--cli_test_count", "x"}).exit_code, 2);  // bad value
  EXPECT_EQ(ParseArgs({"--cli_test_count", "99999999999"}).exit_code, 2);
  EXPECT_EQ(ParseArgs({"--cli_test_echo=maybe"}).exit_code, 2);
  EXPECT_EQ(ParseArgs({"--nocli_test_echo=1"}).exit_code, 2);
  EXPECT_EQ(ParseArgs({"--cli_test_prompt"}).exit_code, 2);  // no value
  EXPECT_EQ(ParseArgs({"a", "b"}).exit_code, 2);             // one positional argument at most
  EXPECT_EQ(ParseArgs({"---x"}).exit_code, 2);
  EXPECT_EQ(ParseArgs({"--threads", "1025"}).exit_code, 2);
  EXPECT_EQ(ParseArgs({"--threads", "1,2"}).exit_code, 2);  // a list only with threads_list
  EXPECT_EQ(ParseArgs({"--threads", "-1"}).exit_code, 2);
  EXPECT_EQ(ParseArgs({"--threads="}).exit_code, 2);
}

TEST(Cli, HelpAndVersionExitZero) {
  EXPECT_EQ(ParseArgs({"--help"}).exit_code, 0);
  EXPECT_EQ(ParseArgs({"-h"}).exit_code, 0);
  EXPECT_EQ(ParseArgs({"--no_such", "--help"}).exit_code, 0);  // help wins over errors
  EXPECT_EQ(ParseArgs({"--version"}).exit_code, 0);
  EXPECT_FALSE(ParseArgs({"--", "--help"}).done());  // after "--" it is an argument
}

TEST(Cli, HelpListsOnlyTheToolsFlags) {
  Spec spec = TestSpec();
  spec.groups[0].names.push_back("max_context");
  const std::string help = HelpText(spec);
  EXPECT_NE(help.find("usage: st-test [flags]"), std::string::npos);
  EXPECT_NE(help.find("  --cli_test_count N  (default: 3)"), std::string::npos);
  EXPECT_NE(help.find("  -c, --ctx-size, --max_context N  (default: 0)"), std::string::npos);
  EXPECT_NE(help.find("  -t, --threads N  (default: 0)"), std::string::npos);
  EXPECT_EQ(help.find("flagfile"), std::string::npos);
  EXPECT_EQ(help.find("tryfromenv"), std::string::npos);
}

TEST(Cli, ThreadLists) {
  Spec spec = TestSpec();
  spec.threads_list = true;
  ASSERT_FALSE(ParseArgs({"--threads", "1,2"}, spec).done());
  EXPECT_EQ(ThreadList(), (std::vector<int>{1, 2}));
  ASSERT_FALSE(ParseArgs({"--threads", "0"}, spec).done());
  EXPECT_GE(ThreadList().at(0), 1);  // 0 = all cores, resolved
  EXPECT_GE(ResolvedThreads(), 1);
}

TEST(Cli, ReadFileRefusesDirectories) {
  absl::StatusOr<std::string> r = ReadFile(ST_SOURCE_DIR "/tests", "--prompt_file");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("is a directory; give a file"), std::string::npos);
  r = ReadFile("/nonexistent/x", "--file");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  r = ReadFile(ST_SOURCE_DIR "/tests/cli_test.cpp", "--file");
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->find("ReadFileRefusesDirectories"), std::string::npos);
}

}  // namespace
}  // namespace cli
}  // namespace st
