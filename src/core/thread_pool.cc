// Persistent worker threads for ParallelFor (see thread_pool.h).
#include "permdnn/core/thread_pool.h"

#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace permdnn {

int HardwareThreads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

namespace {

// Set while a thread runs a chunk; a nested ParallelFor then runs inline.
thread_local bool t_inside_job = false;

// One job at a time: ParallelFor holds `call_mutex_` for its whole duration,
// so nested or concurrent callers serialize instead of deadlocking on workers.
class Pool {
 public:
  static Pool& Get() {
    static Pool pool;
    return pool;
  }

  void Run(int64_t n, int workers,
           const std::function<void(int64_t, int64_t, int)>& fn) {
    std::lock_guard<std::mutex> call_lock(call_mutex_);
    EnsureWorkers(workers - 1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = &fn;
      n_ = n;
      workers_ = workers;
      pending_ = workers - 1;
      error_ = nullptr;
      ++generation_;
    }
    start_cv_.notify_all();
    RunChunk(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    start_cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void EnsureWorkers(int count) {
    while (static_cast<int>(threads_.size()) < count) {
      int index = static_cast<int>(threads_.size()) + 1;
      threads_.emplace_back([this, index] { WorkerLoop(index); });
    }
  }

  void RunChunk(int w) {
    int64_t begin, end;
    ChunkRange(n_, workers_, w, &begin, &end);
    t_inside_job = true;
    try {
      if (begin < end) (*fn_)(begin, end, w);
    } catch (...) {
      t_inside_job = false;
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    t_inside_job = false;
  }

  void WorkerLoop(int index) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        if (index >= workers_) continue;  // not part of this job
      }
      RunChunk(index);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (--pending_ == 0) done_cv_.notify_one();
      }
    }
  }

  std::mutex call_mutex_;
  std::mutex mutex_;
  std::condition_variable start_cv_, done_cv_;
  std::vector<std::thread> threads_;
  const std::function<void(int64_t, int64_t, int)>* fn_ = nullptr;
  int64_t n_ = 0;
  int workers_ = 0;
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace

void ParallelFor(int64_t n, int threads,
                 const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  int workers = threads < 1 ? 1 : threads;
  if (workers > n) workers = static_cast<int>(n);
  if (workers == 1 || t_inside_job) {
    fn(0, n, 0);
    return;
  }
  Pool::Get().Run(n, workers, fn);
}

}  // namespace permdnn
