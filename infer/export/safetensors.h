// The safetensors WRITER (streaming, one tensor at a time, temp name + rename). The reader,
// SafetensorsFile, is declared in tensor_source.h; both live in safetensors.cpp.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "infer/export/tensor_source.h"
#include "model/file_io.h"

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
// (AtomicFileWriter's "<path>.tmp.<pid>"); Finish checks that every tensor came and flushes it
// to disk; Commit closes it and renames it to path. Until Commit succeeds `path` is untouched,
// and the destructor removes the temp file. Not thread-safe; move-free (held by unique_ptr).
class SafetensorsWriter {
 public:
  // `tensors`: name (unique, non-empty), dtype ("F32", "F16" or "BF16") and shape of each, in
  // file order. `metadata` becomes "__metadata__" (string -> string; {"format": "pt"} is what
  // transformers writes and expects). Errors name the path or the tensor.
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, const std::vector<SourceTensor>& tensors,
      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
  ~SafetensorsWriter() = default;  // an uncommitted temp file is removed
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The next tensor in Create's order: `name` must be that tensor and `bytes` exactly its size
  // (elements x dtype size), little-endian as stored.
  absl::Status Add(const std::string& name, const void* data, size_t bytes);
  // Every tensor added? Then fsync the temp file.
  absl::Status Finish();
  // Closes temp_path() and renames it to path() (after Finish). Replaces a file at path().
  absl::Status Commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return file_->temp_path(); }
  uint64_t header_bytes() const { return 8 + header_len_; }  // length prefix + padded JSON
  uint64_t data_bytes() const { return data_bytes_; }        // sum of the tensors' sizes
  uint64_t file_bytes() const { return header_bytes() + data_bytes_; }

 private:
  SafetensorsWriter() = default;

  std::string path_;
  std::optional<AtomicFileWriter> file_;  // set by Create
  bool finished_ = false;
  std::vector<SourceTensor> tensors_;
  std::vector<uint64_t> sizes_;  // bytes of each tensor
  size_t next_ = 0;              // index of the next tensor to Add
  uint64_t header_len_ = 0;
  uint64_t data_bytes_ = 0;
};

}  // namespace st
