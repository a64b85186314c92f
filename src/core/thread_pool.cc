// Persistent worker threads for ParallelFor (see thread_pool.h).
#include "permdnn/core/thread_pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
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

// A worker spins up to kWorkerSpin for the next job, and the caller up to
// kCallerSpin for the last chunk, before blocking on a condition variable:
// a futex wake-up costs tens of microseconds on a VM, as long as a whole
// small operator (the Fashion-MNIST mlp's layers at B=16 take 0.1 ms; each
// runs one job). The caller's spin is short: when the machine has more
// runnable threads than cores, the worker it waits for may be waiting for
// a core, and the spinning caller would hold one.
constexpr auto kWorkerSpin = std::chrono::microseconds(100);
constexpr auto kCallerSpin = std::chrono::microseconds(20);

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Set when a spinning thread finds it was descheduled mid-spin (two clock
// reads 50 µs apart): the machine has more runnable threads than cores, and
// a thread that spins burns the scheduler share it needs to be woken
// promptly (measured under four other processes on 2 cores: 104-139 µs per
// hand-off spinning, 12 µs blocking). Spinning then stays off for 10 ms.
std::atomic<int64_t> g_no_spin_until_ns{0};
constexpr int64_t kPreemptedGapNs = 50'000, kNoSpinNs = 10'000'000;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Spins until done() or `limit` has passed, or stops at once while the
// machine is oversubscribed (above); returns done().
template <class Done>
bool SpinFor(std::chrono::microseconds limit, Done done) {
  int64_t now = NowNs();
  if (now < g_no_spin_until_ns.load(std::memory_order_relaxed)) return done();
  const int64_t until = now + std::chrono::duration_cast<std::chrono::nanoseconds>(limit).count();
  for (int i = 0;; ++i) {
    if (done()) return true;
    CpuRelax();
    if ((i & 63) == 63) {
      const int64_t t = NowNs();
      if (t - now > kPreemptedGapNs) {
        g_no_spin_until_ns.store(t + kNoSpinNs, std::memory_order_relaxed);
        return done();
      }
      if (t > until) return done();
      now = t;
    }
  }
}

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
      pending_.store(workers - 1);
      error_ = nullptr;
      generation_.fetch_add(1);
    }
    start_cv_.notify_all();
    RunChunk(0);
    if (spin_ && SpinFor(kCallerSpin, [&] { return pending_.load() == 0; })) {
      std::lock_guard<std::mutex> lock(mutex_);  // the workers' last writes to error_
    } else {
      std::unique_lock<std::mutex> lock(mutex_);
      done_cv_.wait(lock, [&] { return pending_.load() == 0; });
    }
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
    if (static_cast<int>(threads_.size()) >= count) return;
    while (static_cast<int>(threads_.size()) < count) {
      int index = static_cast<int>(threads_.size()) + 1;
      threads_.emplace_back([this, index] { WorkerLoop(index); });
    }
    // More threads than cores: a spinning thread would hold the core a
    // working one needs, so every hand-off blocks. PERMDNN_POOL_SPIN=0 turns
    // spinning off (bench/thread_pool_bench.cc measures both).
    const char* e = std::getenv("PERMDNN_POOL_SPIN");
    spin_ = !(e && std::string(e) == "0") && static_cast<int>(threads_.size()) + 1 <= HardwareThreads();
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
      if (spin_) SpinFor(kWorkerSpin, [&] { return stop_.load() || generation_.load() != seen; });
      {
        std::unique_lock<std::mutex> lock(mutex_);
        start_cv_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
        if (stop_) return;
        seen = generation_.load();
        if (index >= workers_) continue;  // not part of this job
      }
      RunChunk(index);
      if (pending_.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);  // the caller is spinning or waiting under mutex_
        done_cv_.notify_one();
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
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> spin_{true};
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
