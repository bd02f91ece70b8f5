// Whole-file reads and atomic (temp name + rename) writes: the one implementation of each that
// every library and tool uses, with errors that name the path and say what to do.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace st {

// The whole of the file `path`. `what` names it in errors ("--prompt_file", "model config");
// empty: the path alone. Errors name the path and what was wrong, with these codes (callers
// may append a hint of their own and keep the code):
//   InvalidArgument   `path` is empty, or a directory ("<what> '<path>' is a directory; give a
//                     file")
//   NotFound          `path` (or a directory on the way to it) does not exist
//   PermissionDenied  it cannot be opened (not readable)
//   DataLoss          reading failed part-way (an I/O error)
// Reads FIFOs and character devices to their end too. Thread-safe.
absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what = "");

// The status for an I/O call on `path` that failed with `err` (an errno value): "<action>
// '<path>': <strerror>" plus a hint, with a code that says what kind of failure it was:
// ResourceExhausted for a full disk or quota (the hint: free space), PermissionDenied for a
// directory or file that is not writable, NotFound for a missing directory, Internal else.
absl::Status FileError(absl::string_view action, const std::string& path, int err);

// Writes `bytes` to `path` atomically: to a temp file next to it, then renamed over it. On any
// error `path` keeps its old contents (or stays absent) and no temp file remains. Refuses an
// existing directory at `path`. Not fsync'ed: a crash of the process never loses both, but
// after a power loss the file system may keep neither; use AtomicFileWriter with Sync for that.
absl::Status WriteFileAtomic(const std::string& path, absl::string_view bytes);

// The temp name AtomicFileWriter uses for `path` in this process: "<path>.tmp.<pid>".
std::string TempPathFor(const std::string& path);

// A file written under a temp name and renamed over `path` by Commit, for streaming writers:
//   ST_ASSIGN_OR_RETURN(AtomicFileWriter w, AtomicFileWriter::Begin(path));
//   ST_RETURN_IF_ERROR(w.Open());            // or write temp_path() by its name (HDF5, ...)
//   ST_RETURN_IF_ERROR(w.Write(data, n));    // ... as often as needed
//   ST_RETURN_IF_ERROR(w.Commit());
// Until Commit succeeds `path` is untouched; the destructor (or Discard) removes the temp file
// of an uncommitted writer, so a failed or abandoned write leaves nothing behind. The temp file
// is TempPathFor(path), in the same directory (rename stays on one file system; two processes
// writing the same path do not share a temp file, but two writers of one path in one process
// would; a crash may leave one, which no reader takes for `path`). Not thread-safe; movable,
// not copyable.
class AtomicFileWriter {
 public:
  // Refuses an empty `path` and an existing directory at `path`; creates nothing yet.
  static absl::StatusOr<AtomicFileWriter> Begin(std::string path);

  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();  // Discard() unless committed

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

  // Creates (or truncates) temp_path() for writing (mode 0666 less the umask); the writer owns
  // the descriptor fd() until Close, Commit or Discard. For positioned writes (pwrite) use fd().
  absl::Status Open();
  int fd() const { return fd_; }  // -1 when not open
  // Writes all of `n` bytes at fd()'s position (after Open), retrying short writes.
  absl::Status Write(const void* data, size_t n);
  absl::Status Write(absl::string_view bytes) { return Write(bytes.data(), bytes.size()); }
  // fsync(fd()): the data reaches the disk before the rename (for files a crash must not lose).
  absl::Status Sync();
  // Closes fd() if open; a failing close is an error (the data may not have been written).
  absl::Status Close();

  // Close(), then renames temp_path() over path(), replacing any file there. The temp file must
  // exist (Open, or written by its name). Errors name both paths; after one, the destructor
  // still removes the temp file. A second Commit is a no-op.
  absl::Status Commit();
  // Closes fd() and removes the temp file now (nothing if committed).
  void Discard();
  bool committed() const { return committed_; }

 private:
  AtomicFileWriter() = default;

  std::string path_, temp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace st
