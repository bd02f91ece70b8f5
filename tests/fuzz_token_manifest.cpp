// libFuzzer target for the token dataset's manifest.json (ParseManifest): any byte string gives
// a manifest or an error, never a crash; a manifest that parses serialises (ToJson) and parses
// back to the same manifest. Seeds: tests/data/fuzz_token_manifest. Build: scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "data/token_dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<st::Manifest> m = st::ParseManifest(text, "manifest.json");
  if (!m.ok()) return 0;
  const std::string again = m->ToJson();
  absl::StatusOr<st::Manifest> back = st::ParseManifest(again, "manifest.json (written back)");
  if (!back.ok() || back->ToJson() != again) std::abort();
  return 0;
}
