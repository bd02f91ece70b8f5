// The safetensors WRITER (streaming, one tensor at a time, temp name + rename). The reader,
// SafetensorsFile, is declared in tensor_source.h; both live in safetensors.cpp.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "infer/export/tensor_source.h"

namespace st {

// Writes one safetensors file as the reference implementation does: 8-byte little-endian header
// length N, N bytes of JSON header padded with spaces to a multiple of 8 (so the data section
// starts 8-aligned), then the tensors' bytes back to back. The header lists "__metadata__"
// first, then the tensors in the order given to Create (which is also their order in the data
// section: deterministic). Each entry is {"dtype", "shape", "data_offsets": [begin, end]}, the
// offsets relative to the data section and contiguous.
//
// Streaming: Create writes the header (the layout is known up front), Add writes one tensor's
// bytes, so the caller holds one tensor at a time. The file is written to temp_path()
// (path + ".tmp"); Finish checks that every tensor came, flushes it to disk and closes it;
// Commit renames it to path. Until Commit succeeds `path` is untouched, and the destructor
// removes the temp file. Not thread-safe; move-free (held by unique_ptr).
class SafetensorsWriter {
 public:
  // `tensors`: name (unique, non-empty), dtype ("F32", "F16" or "BF16") and shape of each, in
  // file order. `metadata` becomes "__metadata__" (string -> string; {"format": "pt"} is what
  // transformers writes and expects). Errors name the path or the tensor.
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, const std::vector<SourceTensor>& tensors,
      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The next tensor in Create's order: `name` must be that tensor and `bytes` exactly its size
  // (elements x dtype size), little-endian as stored.
  absl::Status Add(const std::string& name, const void* data, size_t bytes);
  // Every tensor added? Then fsync and close the temp file.
  absl::Status Finish();
  // Renames temp_path() to path() (after Finish). Replaces an existing file at path().
  absl::Status Commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }
  uint64_t header_bytes() const { return 8 + header_len_; }  // length prefix + padded JSON
  uint64_t data_bytes() const { return data_bytes_; }        // sum of the tensors' sizes
  uint64_t file_bytes() const { return header_bytes() + data_bytes_; }

 private:
  SafetensorsWriter() = default;
  absl::Status WriteAll(const void* data, size_t n);

  std::string path_, temp_path_;
  int fd_ = -1;
  bool finished_ = false, committed_ = false;
  std::vector<SourceTensor> tensors_;
  std::vector<uint64_t> sizes_;  // bytes of each tensor
  size_t next_ = 0;              // index of the next tensor to Add
  uint64_t header_len_ = 0;
  uint64_t data_bytes_ = 0;
};

}  // namespace st
