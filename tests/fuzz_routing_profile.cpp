// libFuzzer target for the routing profile of --pin_profile (ParseRoutingProfile): any byte
// string gives a profile or an error, never a crash; a profile that parses has layers x experts
// non-negative counts, and Hottest() ranks them all. Seeds: tests/data/fuzz_routing_profile.
// Build: scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "infer/runtime/expert_cache.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<st::RoutingProfile> p = st::ParseRoutingProfile(text, "profile.json");
  if (!p.ok()) return 0;
  if (p->layers < 1 || p->experts < 1 || p->tokens < 0 ||
      p->counts.size() != static_cast<size_t>(p->layers) * p->experts) {
    std::abort();
  }
  for (int64_t c : p->counts) {
    if (c < 0) std::abort();
  }
  if (p->Hottest().size() != p->counts.size()) std::abort();
  return 0;
}
