// ST_CHECK: the invariant tier of error handling (torch-free). A failed check is a bug in this
// program, never bad user input: it prints file:line and the message, then aborts.
// Bad input is reported with absl::Status at API boundaries instead.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace st::internal {

// Collects a streamed message and aborts when destroyed.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* expr) {
    stream_ << file << ":" << line << ": check failed: " << expr << " ";
  }
  [[noreturn]] ~CheckFailure() {
    std::fprintf(stderr, "%s\n", stream_.str().c_str());
    std::fflush(stderr);
    std::abort();
  }
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

}  // namespace st::internal

// Usage: ST_CHECK(n > 0) << "n=" << n;
#define ST_CHECK(cond) \
  if (cond) {          \
  } else               \
    ::st::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()

// Returns early from a function returning absl::Status / StatusOr when `expr` is not ok.
#define ST_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::absl::Status st_status_ = (expr);      \
    if (!st_status_.ok()) return st_status_; \
  } while (0)

#define ST_CONCAT_INNER_(a, b) a##b
#define ST_CONCAT_(a, b) ST_CONCAT_INNER_(a, b)
#define ST_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                              \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(*tmp)
// Usage: ST_ASSIGN_OR_RETURN(auto cfg, LoadModelConfig(path));
#define ST_ASSIGN_OR_RETURN(lhs, rexpr) \
  ST_ASSIGN_OR_RETURN_IMPL_(ST_CONCAT_(st_statusor_, __LINE__), lhs, rexpr)
