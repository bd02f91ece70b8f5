#include "infer/runtime/membw.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ST_MEMBW_X86 1
#endif

namespace st {
namespace {

constexpr size_t kSliceAlign = 4096;  // slices start on page boundaries; a multiple of 256

// Sense-free spin barrier for a fixed number of threads (they spin only between passes).
class SpinBarrier {
 public:
  explicit SpinBarrier(int n) : n_(n) {}
  void Wait() {
    const int gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int spins = 0; gen_.load(std::memory_order_acquire) == gen; ++spins) {
      if (spins > 1000) std::this_thread::yield();
    }
  }

 private:
  const int n_;
  std::atomic<int> count_{0};
  std::atomic<int> gen_{0};
};

// Reads n bytes (a multiple of 256) from 32-byte aligned p; the result only defeats dead-code
// elimination.
uint64_t ReadScalar(const uint8_t* p, size_t n) {
  const uint64_t* q = reinterpret_cast<const uint64_t*>(p);
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (size_t i = 0; i < n / 8; i += 4) {
    a0 ^= q[i];
    a1 ^= q[i + 1];
    a2 ^= q[i + 2];
    a3 ^= q[i + 3];
  }
  return a0 ^ a1 ^ a2 ^ a3;
}

#ifdef ST_MEMBW_X86
__attribute__((target("avx2"))) uint64_t ReadAvx2(const uint8_t* p, size_t n) {
  __m256i a[8];
  for (auto& v : a) v = _mm256_setzero_si256();
  for (size_t i = 0; i < n; i += 256) {
    for (int j = 0; j < 8; ++j) {
      a[j] = _mm256_xor_si256(a[j], _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i) + j));
    }
  }
  for (int j = 1; j < 8; ++j) a[0] = _mm256_xor_si256(a[0], a[j]);
  return static_cast<uint64_t>(_mm256_extract_epi64(a[0], 0) ^ _mm256_extract_epi64(a[0], 1) ^
                               _mm256_extract_epi64(a[0], 2) ^ _mm256_extract_epi64(a[0], 3));
}
bool HaveAvx2() { return __builtin_cpu_supports("avx2"); }
#else
uint64_t ReadAvx2(const uint8_t* p, size_t n) { return ReadScalar(p, n); }
bool HaveAvx2() { return false; }
#endif

// What the child sends back through the pipe.
struct ChildReply {
  int code = 0;  // absl::StatusCode
  double gb_per_s = 0, best_s = 0;
  uint64_t bytes = 0;
  int threads = 0;
  int avx2 = 0;
  char message[256] = {};
};

}  // namespace

absl::StatusOr<MemBwResult> MeasureReadBandwidth(const MemBwOptions& options) {
  const int T = options.threads;
  if (T < 1) return absl::InvalidArgumentError("memory bandwidth probe: threads must be >= 1");
  if (options.passes < 1) {
    return absl::InvalidArgumentError("memory bandwidth probe: passes must be >= 1");
  }
  if (options.bytes < (size_t{1} << 20)) {
    return absl::InvalidArgumentError("memory bandwidth probe: the buffer must be >= 1 MiB");
  }
  // Equal slices, each a multiple of kSliceAlign; the remainder is not read.
  const size_t slice = options.bytes / T / kSliceAlign * kSliceAlign;
  if (slice == 0) {
    return absl::InvalidArgumentError("memory bandwidth probe: buffer too small for the threads");
  }
  const size_t total = slice * T;
  void* mem = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    return absl::ResourceExhaustedError("memory bandwidth probe: cannot map " +
                                        std::to_string(total >> 20) +
                                        " MiB: " + std::strerror(errno));
  }
#ifdef MADV_HUGEPAGE
  madvise(mem, total, MADV_HUGEPAGE);  // fewer TLB misses; harmless when unavailable
#endif
  uint8_t* buf = static_cast<uint8_t*>(mem);
  const bool avx2 = HaveAvx2();

  using Clock = std::chrono::steady_clock;
  SpinBarrier barrier(T);
  std::atomic<uint64_t> sink{0};
  double best = 1e300;
  // Pass 0 writes (each thread first-touches its own slice); passes 1..P are timed reads.
  auto work = [&](int t) {
    uint8_t* p = buf + static_cast<size_t>(t) * slice;
    for (int pass = 0; pass <= options.passes; ++pass) {
      barrier.Wait();
      const auto t0 = Clock::now();
      if (pass == 0) {
        std::memset(p, 0x5a + t, slice);
      } else {
        sink.fetch_xor(avx2 ? ReadAvx2(p, slice) : ReadScalar(p, slice), std::memory_order_relaxed);
      }
      barrier.Wait();
      if (t == 0 && pass > 0) {
        best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
      }
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(T - 1);
  for (int t = 1; t < T; ++t) workers.emplace_back(work, t);
  work(0);
  for (auto& w : workers) w.join();
  munmap(mem, total);

  MemBwResult r;
  r.best_s = best;
  r.bytes = total;
  r.threads = T;
  r.gb_per_s = static_cast<double>(total) / std::max(best, 1e-12) / 1e9;
  r.kernel = avx2 ? "avx2" : "scalar";
  return r;
}

absl::StatusOr<MemBwResult> MeasureReadBandwidthInChild(const MemBwOptions& options) {
  int fds[2];
  if (pipe(fds) != 0) {
    return absl::InternalError(std::string("memory bandwidth probe: pipe: ") +
                               std::strerror(errno));
  }
  const pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return absl::InternalError(std::string("memory bandwidth probe: fork: ") +
                               std::strerror(errno));
  }
  if (pid == 0) {
    close(fds[0]);
    ChildReply reply;
    auto r = MeasureReadBandwidth(options);
    if (r.ok()) {
      reply.gb_per_s = r->gb_per_s;
      reply.best_s = r->best_s;
      reply.bytes = r->bytes;
      reply.threads = r->threads;
      reply.avx2 = std::strcmp(r->kernel, "avx2") == 0;
    } else {
      reply.code = static_cast<int>(r.status().code());
      std::snprintf(reply.message, sizeof(reply.message), "%s",
                    std::string(r.status().message()).c_str());
    }
    const char* p = reinterpret_cast<const char*>(&reply);
    for (size_t done = 0; done < sizeof(reply);) {
      const ssize_t n = write(fds[1], p + done, sizeof(reply) - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) _exit(1);
      done += static_cast<size_t>(n);
    }
    _exit(0);
  }
  close(fds[1]);
  ChildReply reply;
  char* p = reinterpret_cast<char*>(&reply);
  size_t done = 0;
  while (done < sizeof(reply)) {
    const ssize_t n = read(fds[0], p + done, sizeof(reply) - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  close(fds[0]);
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (done != sizeof(reply) || !WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    return absl::InternalError("memory bandwidth probe: the child process died" +
                               (WIFSIGNALED(wstatus)
                                    ? " (signal " + std::to_string(WTERMSIG(wstatus)) + ")"
                                    : std::string()));
  }
  if (reply.code != 0) {
    return absl::Status(static_cast<absl::StatusCode>(reply.code), reply.message);
  }
  MemBwResult r;
  r.gb_per_s = reply.gb_per_s;
  r.best_s = reply.best_s;
  r.bytes = reply.bytes;
  r.threads = reply.threads;
  r.kernel = reply.avx2 ? "avx2" : "scalar";
  return r;
}

}  // namespace st
