// ReadFile, FileError, WriteFileAtomic, TempPathFor and AtomicFileWriter (POSIX file calls).
#include "model/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "model/check.h"

namespace st {
namespace {

// "<what> '<path>'", or "'<path>'" without a `what`.
std::string Named(const std::string& path, absl::string_view what) {
  return what.empty() ? absl::StrCat("'", path, "'") : absl::StrCat(what, " '", path, "'");
}

absl::StatusCode CodeOf(int err) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::StatusCode::kNotFound;
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::StatusCode::kPermissionDenied;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return absl::StatusCode::kResourceExhausted;
    case EIO:
      return absl::StatusCode::kDataLoss;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what) {
  const std::string named = Named(path, what);
  if (path.empty()) {
    return absl::InvalidArgumentError(what.empty() ? "the file name is empty"
                                                   : absl::StrCat(what, " is empty: give a file"));
  }
  int fd;
  do {
    fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int err = errno;
    const absl::StatusCode code = CodeOf(err);
    return absl::Status(
        code == absl::StatusCode::kNotFound ? code : absl::StatusCode::kPermissionDenied,
        absl::StrCat("cannot open ", named, ": ", std::strerror(err)));
  }
  std::string text;
  struct stat st;
  if (fstat(fd, &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      close(fd);
      return absl::InvalidArgumentError(absl::StrCat(named, " is a directory; give a file"));
    }
    if (S_ISREG(st.st_mode) && st.st_size > 0) text.reserve(static_cast<size_t>(st.st_size));
  }
  char buf[1 << 16];
  for (;;) {
    const ssize_t got = read(fd, buf, sizeof(buf));
    if (got == 0) break;
    if (got < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      close(fd);
      return absl::DataLossError(absl::StrCat("error reading ", named, ": ", std::strerror(err)));
    }
    text.append(buf, static_cast<size_t>(got));
  }
  close(fd);
  return text;
}

absl::Status FileError(absl::string_view action, const std::string& path, int err) {
  const absl::StatusCode code = CodeOf(err);
  absl::string_view hint;
  switch (code) {
    case absl::StatusCode::kResourceExhausted:
      hint = " (the disk is full or over quota: free space there and retry)";
      break;
    case absl::StatusCode::kPermissionDenied:
      hint = " (is the directory writable?)";
      break;
    case absl::StatusCode::kNotFound:
      hint = " (does the directory exist?)";
      break;
    default:
      break;
  }
  return absl::Status(code, absl::StrCat(action, " '", path, "': ", std::strerror(err), hint));
}

absl::Status WriteFileAtomic(const std::string& path, absl::string_view bytes) {
  absl::StatusOr<AtomicFileWriter> w = AtomicFileWriter::Begin(path);
  if (!w.ok()) return w.status();
  ST_RETURN_IF_ERROR(w->Open());
  ST_RETURN_IF_ERROR(w->Write(bytes));
  return w->Commit();
}

// ---- AtomicFileWriter ----

std::string TempPathFor(const std::string& path) {
  return absl::StrCat(path, ".tmp.", static_cast<long>(getpid()));
}

absl::StatusOr<AtomicFileWriter> AtomicFileWriter::Begin(std::string path) {
  if (path.empty()) return absl::InvalidArgumentError("the output file name is empty");
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' is a directory; give the name of a file to write"));
  }
  AtomicFileWriter w;
  w.temp_path_ = TempPathFor(path);
  w.path_ = std::move(path);
  return w;
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : path_(std::move(other.path_)),
      temp_path_(std::exchange(other.temp_path_, std::string())),
      fd_(std::exchange(other.fd_, -1)),
      committed_(other.committed_) {}

AtomicFileWriter& AtomicFileWriter::operator=(AtomicFileWriter&& other) noexcept {
  if (this != &other) {
    Discard();
    path_ = std::move(other.path_);
    temp_path_ = std::exchange(other.temp_path_, std::string());
    fd_ = std::exchange(other.fd_, -1);
    committed_ = other.committed_;
  }
  return *this;
}

AtomicFileWriter::~AtomicFileWriter() { Discard(); }

absl::Status AtomicFileWriter::Open() {
  if (committed_ || temp_path_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("writing '", path_, "': Open after Commit or on a moved-from writer"));
  }
  if (fd_ >= 0) close(fd_);
  do {
    fd_ = open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  } while (fd_ < 0 && errno == EINTR);
  if (fd_ < 0) return FileError("cannot create", temp_path_, errno);
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Write(const void* data, size_t n) {
  if (fd_ < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("writing '", temp_path_, "': the file is not open"));
  }
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t put = write(fd_, p, n);
    if (put < 0) {
      if (errno == EINTR) continue;
      return FileError("cannot write", temp_path_, errno);
    }
    p += put;
    n -= static_cast<size_t>(put);
  }
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Sync() {
  if (fd_ >= 0 && fsync(fd_) != 0) return FileError("cannot flush", temp_path_, errno);
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Close() {
  if (fd_ < 0) return absl::OkStatus();
  // No retry on EINTR: Linux has closed the descriptor either way.
  if (close(std::exchange(fd_, -1)) != 0 && errno != EINTR) {
    return FileError("cannot finish writing", temp_path_, errno);
  }
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Commit() {
  if (committed_) return absl::OkStatus();
  if (temp_path_.empty()) {
    return absl::FailedPreconditionError("Commit on a moved-from AtomicFileWriter");
  }
  ST_RETURN_IF_ERROR(Close());
  if (rename(temp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    return absl::Status(CodeOf(err), absl::StrCat("cannot rename '", temp_path_, "' to '", path_,
                                                  "': ", std::strerror(err)));
  }
  committed_ = true;
  return absl::OkStatus();
}

void AtomicFileWriter::Discard() {
  if (fd_ >= 0) close(std::exchange(fd_, -1));
  if (!committed_ && !temp_path_.empty()) unlink(temp_path_.c_str());
}

}  // namespace st
