// st-ckpt-merge: averages checkpoints of one model linearly with weights (the paper merges its
// SFT checkpoints this way) into a weights-only checkpoint that exports and fine-tunes.
#include <gflags/gflags.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "infer/tools/cli.h"
#include "train/checkpoint.h"

DEFINE_string(output, "", "the merged checkpoint file to write");
DEFINE_string(weights, "",
              "comma list of one weight per input checkpoint (normalised by their sum); default: "
              "equal weights");
DEFINE_bool(force, false, "replace an existing --output");

int main(int argc, char** argv) {
  st::cli::Spec spec;
  spec.name = "st-ckpt-merge";
  spec.usage =
      "st-ckpt-merge a/checkpoint.h5 b/checkpoint.h5 [...] --output merged.h5 [--weights 0.7,0.3]";
  spec.about =
      "Averages the parameters of checkpoints of one model config linearly, with weights "
      "normalised to sum to 1, into a weights-only checkpoint (no optimizer state: it exports and "
      "fine-tunes, it does not --resume). The output's history records the inputs, their steps "
      "and weights.";
  spec.groups = {{"st-ckpt-merge flags", "train/ckpt_merge_main.cpp", {}}};
  spec.min_args = 2;
  spec.max_args = 64;
  spec.args_name = "checkpoint file";
  const st::cli::Parsed parsed = st::cli::Parse(spec, argc, argv);
  if (parsed.done()) return parsed.exit_code;
  if (FLAGS_output.empty()) return st::cli::UsageError("--output is required");
  std::vector<st::MergeInput> inputs;
  for (const std::string& path : parsed.args) inputs.push_back({path, 1.0});
  if (!FLAGS_weights.empty()) {
    std::vector<std::string> parts = absl::StrSplit(FLAGS_weights, ',');
    if (parts.size() != inputs.size()) {
      return st::cli::UsageError("--weights has " + std::to_string(parts.size()) + " values for " +
                                 std::to_string(inputs.size()) + " checkpoints");
    }
    for (size_t i = 0; i < parts.size(); ++i) {
      if (!absl::SimpleAtod(parts[i], &inputs[i].weight)) {
        return st::cli::UsageError("--weights: '" + parts[i] + "' is not a number");
      }
    }
  }
  std::error_code ec;
  if (std::filesystem::is_directory(FLAGS_output, ec)) {
    return st::cli::Fail("--output " + FLAGS_output + " is a directory; name a file in it");
  }
  if (std::filesystem::exists(FLAGS_output, ec) && !FLAGS_force) {
    return st::cli::Fail("--output " + FLAGS_output + " exists; pass --force to replace it");
  }
  absl::Status s = st::MergeCheckpoints(inputs, FLAGS_output);
  if (!s.ok()) return st::cli::Fail(s);
  std::printf("wrote %s: the weighted mean of %zu checkpoints\n", FLAGS_output.c_str(),
              inputs.size());
  return 0;
}
