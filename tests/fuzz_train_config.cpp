// libFuzzer target for the train config parser (ParseTrainConfig, torch-free): any byte string
// gives a validated config or an error, never a crash; a config that parses serialises and
// parses back. Seeds: tests/data/fuzz_train_config and configs/train. Build: scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "train/train_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<st::TrainConfig> c = st::ParseTrainConfig(text);
  if (!c.ok()) return 0;
  if (!st::ParseTrainConfig(c->ToJson()).ok()) std::abort();  // ToJson must read back
  return 0;
}
