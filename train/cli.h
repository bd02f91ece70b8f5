// Command-line helpers shared by the LibTorch tools: a --help that lists only the tool's own
// flags (LibTorch links glog, whose dozens of flags would otherwise bury them).
#pragma once

#include <gflags/gflags.h>

#include <cstring>

namespace st {

// If argv asks for help, prints the usage message and the flags defined in files whose path
// contains `flag_file` (e.g. "train/train_main"), and returns true: main then returns 0.
inline bool HandleHelp(int argc, char** argv, const char* flag_file) {
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-help") ||
        !std::strcmp(argv[i], "-h") || !std::strcmp(argv[i], "--helpshort")) {
      gflags::ShowUsageWithFlagsRestrict(argv[0], flag_file);
      return true;
    }
  }
  return false;
}

}  // namespace st
