// libFuzzer target for the safetensors reader (SafetensorsFile): any byte string, as a whole
// file, must give a validated file or an error, never a crash, a hang or an out-of-bounds read;
// every tensor of a file that opens must read. The bytes go to a memfd (no disk) that Open
// reads through /proc/self/fd. Seeds: tests/data/fuzz_safetensors. Build: scripts/fuzz.sh.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "infer/export/tensor_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("fuzz_safetensors", 0);
  if (fd < 0) std::abort();
  if (ftruncate(fd, 0) != 0) std::abort();
  for (size_t done = 0; done < size;) {
    const ssize_t put = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (put <= 0) std::abort();
    done += static_cast<size_t>(put);
  }
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  absl::StatusOr<st::SafetensorsFile> f = st::SafetensorsFile::Open(path);
  if (!f.ok()) return 0;
  for (const st::SafetensorsFile::Entry& e : f->entries()) {
    // Open checked every entry against the file's size: reads must succeed.
    if (!f->ReadF32(e.tensor.name).ok() || !f->ReadRaw(e.tensor.name).ok()) std::abort();
  }
  return 0;
}
