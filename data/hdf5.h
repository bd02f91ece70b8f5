// H5File: a small RAII wrapper over the HDF5 C API, the one place this project touches HDF5.
// Token files (data/) and checkpoints (train/) are written and read through it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/file_io.h"

namespace st {

enum class H5Type { kF32, kF64, kI32, kI64, kU8, kU16, kU32 };
size_t H5TypeSize(H5Type t);

struct H5DatasetInfo {
  H5Type type;
  std::vector<int64_t> shape;  // empty = scalar
  int64_t num_elements() const;
};

// Owns one open HDF5 file. Move-only. Not thread-safe (HDF5 itself is not, in Debian's build).
// Object paths are absolute ("/params/model.norm.weight"); writing a dataset creates the
// missing parent groups. Errors carry the file name and the object path.
class H5File {
 public:
  static absl::StatusOr<H5File> Create(const std::string& path);  // truncates
  static absl::StatusOr<H5File> Open(const std::string& path, bool writable = false);
  H5File(H5File&& other) noexcept;
  H5File& operator=(H5File&& other) noexcept;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;
  ~H5File();

  // Closes explicitly (flushes); the destructor closes too but cannot report errors.
  absl::Status Close();

  // Writes a contiguous row-major array. `shape` empty writes a scalar.
  absl::Status WriteDataset(absl::string_view path, H5Type type, const std::vector<int64_t>& shape,
                            const void* data);
  absl::StatusOr<H5DatasetInfo> Info(absl::string_view path) const;
  // Reads the whole dataset converting to `type` (HDF5 converts numeric types);
  // `bytes` must equal num_elements * H5TypeSize(type).
  absl::Status ReadDataset(absl::string_view path, H5Type type, void* out, size_t bytes) const;
  // Writes a 1-D dataset with CHUNKED layout (chunks of `chunk` elements, clamped to
  // [1, count]), so that readers fetch any window with a hyperslab read touching only the
  // chunks it overlaps. A zero-length dataset is written contiguous (HDF5 needs chunk >= 1).
  absl::Status WriteChunked1D(absl::string_view path, H5Type type, int64_t count, const void* data,
                              int64_t chunk);
  // Chunk length of a 1-D chunked dataset, 0 when its layout is not chunked.
  absl::StatusOr<int64_t> ChunkLength(absl::string_view path) const;
  // Reads elements [offset, offset+count) of a 1-D dataset.
  absl::Status ReadSlab1D(absl::string_view path, H5Type type, int64_t offset, int64_t count,
                          void* out) const;

  bool Exists(absl::string_view path) const;  // group, dataset (not attribute)
  // Names of the direct children of a group, sorted.
  absl::StatusOr<std::vector<std::string>> List(absl::string_view group) const;
  absl::Status CreateGroup(absl::string_view path);  // with parents; ok if it exists

  // Attributes on an existing object ("/" for the file root).
  absl::Status WriteAttr(absl::string_view obj, absl::string_view name, absl::string_view value);
  absl::Status WriteAttr(absl::string_view obj, absl::string_view name, int64_t value);
  absl::Status WriteAttr(absl::string_view obj, absl::string_view name, double value);
  absl::StatusOr<std::string> ReadStringAttr(absl::string_view obj, absl::string_view name) const;
  absl::StatusOr<int64_t> ReadIntAttr(absl::string_view obj, absl::string_view name) const;
  absl::StatusOr<double> ReadDoubleAttr(absl::string_view obj, absl::string_view name) const;
  bool HasAttr(absl::string_view obj, absl::string_view name) const;

  const std::string& path() const { return path_; }

 private:
  H5File(int64_t id, std::string path) : id_(id), path_(std::move(path)) {}
  int64_t id_ = -1;  // hid_t
  std::string path_;
};

// Writes `final_path` through `write` under a temp name (AtomicFileWriter), closes it, then
// renames it over `final_path`, so an interrupted or failed write never destroys the previous
// file. On error (of `write`: returned unchanged) the temp file is removed and the old file is
// untouched.
template <typename Fn>
absl::Status WriteH5Atomically(const std::string& final_path, Fn&& write) {
  absl::StatusOr<AtomicFileWriter> out = AtomicFileWriter::Begin(final_path);
  if (!out.ok()) return out.status();
  absl::StatusOr<H5File> f = H5File::Create(out->temp_path());
  if (!f.ok()) return f.status();
  absl::Status s = write(*f);
  if (s.ok()) s = f->Close();
  if (!s.ok()) return s;
  return out->Commit();
}

}  // namespace st
