// ThreadPool: job hand-off through a generation counter; spin, then sleep.
#include "infer/runtime/thread_pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <system_error>

#include "absl/strings/str_cat.h"
#include "model/check.h"

namespace st {
namespace {

inline void CpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

// Spin iterations before a worker sleeps (~0.1-1 ms), and before the caller yields.
constexpr int kSpinBeforeSleep = 1 << 14;

}  // namespace

ThreadPool::ThreadPool(int threads) {
  ST_CHECK(threads >= 1) << "threads=" << threads;
  try {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
  } catch (...) {
    StopWorkers();  // a destructor does not run for a half-built object
    throw;
  }
}

absl::StatusOr<std::unique_ptr<ThreadPool>> ThreadPool::Create(int threads) {
  try {
    return std::make_unique<ThreadPool>(threads);
  } catch (const std::system_error& e) {
    return absl::ResourceExhaustedError(absl::StrCat("could not start ", threads, " threads (",
                                                     e.what(), "): use fewer threads (--threads)"));
  }
}

ThreadPool::~ThreadPool() { StopWorkers(); }

void ThreadPool::StopWorkers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::RunTasks(int thread) {
  uint64_t c = claim_.load();
  const uint64_t job = c >> 32;
  for (;;) {
    if ((c >> 32) != job) return;  // a newer job: the one we joined is complete
    if (!claim_.compare_exchange_weak(c, c + 1)) continue;  // c reloaded
    // We own task (c & 0xffffffff) of `job`, which cannot complete before we do: its
    // call_, ctx_ and n_tasks_ are stable.
    const int64_t task = static_cast<int64_t>(c & 0xffffffffu);
    if (task >= n_tasks_) return;
    call_(ctx_, task, thread);
    done_.fetch_add(1, std::memory_order_release);
    c = claim_.load();
  }
}

void ThreadPool::Dispatch(int64_t n_tasks, Call call, void* ctx) {
  ST_CHECK(n_tasks < (int64_t{1} << 32)) << "too many tasks: " << n_tasks;
  call_ = call;
  ctx_ = ctx;
  n_tasks_ = n_tasks;
  done_.store(0);
  claim_.store(static_cast<uint64_t>(++job_) << 32);
  // Publish, then wake sleepers. Both sides use seq_cst: either a worker registered as a
  // sleeper before we read sleepers_ (we take the lock and notify), or its predicate check
  // comes after our increment and sees the new generation.
  generation_.fetch_add(1);
  if (sleepers_.load() > 0) {
    { std::lock_guard<std::mutex> lock(mu_); }
    cv_.notify_all();
  }
  RunTasks(0);
  int spins = 0;
  while (done_.load(std::memory_order_acquire) < n_tasks) {
    if (++spins < kSpinBeforeSleep) {
      CpuRelax();
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Wait for a new generation: spin, then sleep.
    int spins = 0;
    uint64_t g;
    while ((g = generation_.load(std::memory_order_acquire)) == seen) {
      if (++spins < kSpinBeforeSleep) {
        CpuRelax();
        continue;
      }
      std::unique_lock<std::mutex> lock(mu_);
      sleepers_.fetch_add(1);
      cv_.wait(lock, [&] { return generation_.load() != seen; });
      sleepers_.fetch_sub(1);
      spins = 0;
    }
    seen = g;
    if (stop_.load()) return;
    RunTasks(index);
  }
}

}  // namespace st
