// A persistent fork-join thread pool for the runtime's parallel loops. Workers spin briefly
// after each job (the forward pass issues jobs back to back, microseconds apart) and then
// sleep on a condition variable, so an idle engine costs no CPU.
//
// Contract: one caller at a time (the engine's thread); the caller runs tasks too, so a pool
// of size 1 has no worker threads. Run() returns after every task has finished; tasks are
// claimed dynamically, so a worker the OS has descheduled costs the job nothing.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace st {

class ThreadPool {
 public:
  // threads >= 1, the caller included. Throws std::system_error when the OS refuses a thread
  // (the workers started so far are stopped and joined first); see Create.
  explicit ThreadPool(int threads);
  // As the constructor, but a refused thread is ResourceExhausted naming the count.
  static absl::StatusOr<std::unique_ptr<ThreadPool>> Create(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(task, thread) for every task in [0, n_tasks), tasks taken dynamically; `thread`
  // is in [0, size()) and unique among concurrently running calls (for per-thread scratch).
  template <typename Fn>
  void Run(int64_t n_tasks, Fn&& fn) {
    if (n_tasks <= 0) return;
    if (workers_.empty() || n_tasks == 1) {
      for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
      return;
    }
    auto call = [](void* ctx, int64_t task, int thread) { (*static_cast<Fn*>(ctx))(task, thread); };
    Dispatch(n_tasks, call, &fn);
  }

  // Splits [0, n) into chunks of at least `grain` items (about 4 per thread) and calls
  // fn(begin, end, thread) for each.
  template <typename Fn>
  void For(int64_t n, int64_t grain, Fn&& fn) {
    if (n <= 0) return;
    const int64_t target = static_cast<int64_t>(size()) * 4;
    int64_t chunk = (n + target - 1) / target;
    if (chunk < grain) chunk = grain;
    const int64_t tasks = (n + chunk - 1) / chunk;
    Run(tasks, [&](int64_t t, int thread) {
      const int64_t b = t * chunk, e = b + chunk < n ? b + chunk : n;
      fn(b, e, thread);
    });
  }

 private:
  using Call = void (*)(void* ctx, int64_t task, int thread);
  void Dispatch(int64_t n_tasks, Call call, void* ctx);
  void WorkerLoop(int index);
  void RunTasks(int thread);
  void StopWorkers();  // wakes every worker with stop_ set and joins it

  std::vector<std::thread> workers_;
  // The current job. Tasks are claimed with a CAS on claim_ = (job << 32) | next task, so a
  // worker that wakes late can never take a task of a finished job, and the caller waits for
  // tasks to complete, not for every worker to check in (a descheduled worker on a busy
  // machine does not stall the job).
  Call call_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_tasks_ = 0;
  uint32_t job_ = 0;
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<uint64_t> generation_{0};  // bumped once per job (wakes workers)
  std::atomic<bool> stop_{false};
  // Sleeping.
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<int> sleepers_{0};
};

}  // namespace st
