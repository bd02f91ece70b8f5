// libFuzzer target for model.safetensors.index.json (ParseSafetensorsIndex): any byte string
// gives a weight map or an error, never a crash; every shard it names is a plain file name.
// Seeds: tests/data/fuzz_safetensors_index. Build: scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "infer/export/tensor_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto map = st::ParseSafetensorsIndex(text, "model.safetensors.index.json");
  if (!map.ok()) return 0;
  for (const auto& [name, shard] : *map) {
    if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos) {
      std::abort();  // a shard that leaves the checkpoint directory got through
    }
  }
  return 0;
}
