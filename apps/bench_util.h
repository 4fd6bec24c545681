// Small helpers for the benchmark commands: medians, cold-cache flushing, copy bandwidth (internal to apps/).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace adamas::app {

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

// Evicts the caches by reading a buffer larger than the last-level cache, so each timed step starts cold, as a
// decode step does after the rest of the model ran. Reading (not writing) leaves no dirty lines whose write-back
// would compete with the step for memory bandwidth.
class CacheFlusher {
 public:
  explicit CacheFlusher(size_t bytes = size_t(96) << 20) : buf_(bytes / sizeof(uint64_t), 1) {}
  void operator()() {
    uint64_t sum = 0;
#pragma omp parallel for reduction(+ : sum)
    for (size_t i = 0; i < buf_.size(); i += 8) sum += buf_[i];
    sink_ = sum;
  }

 private:
  std::vector<uint64_t> buf_;
  volatile uint64_t sink_ = 0;
};

// Median copy bandwidth of `bytes` with all threads, counted as bytes read + bytes written per second (the STREAM
// convention).
inline double copy_bandwidth(size_t bytes = size_t(512) << 20, int reps = 7) {
  std::vector<char> a(bytes, 1), b(bytes, 2);
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    const double t0 = omp_get_wtime();
#pragma omp parallel
    {
      const size_t nt = size_t(omp_get_num_threads()), id = size_t(omp_get_thread_num());
      const size_t chunk = (bytes + nt - 1) / nt, begin = std::min(bytes, id * chunk);
      const size_t len = std::min(bytes, begin + chunk) - begin;
      std::memcpy(b.data() + begin, a.data() + begin, len);
    }
    times.push_back(omp_get_wtime() - t0);
  }
  return 2.0 * double(bytes) / median(times);
}

// Median read-only bandwidth over `bytes` with all threads (a vectorized sum of every 8-byte word): the ceiling of
// any kernel that streams a cache once.
inline double read_bandwidth(size_t bytes = size_t(512) << 20, int reps = 7) {
  std::vector<uint64_t> a(bytes / sizeof(uint64_t), 3);
  std::vector<double> times;
  volatile uint64_t sink = 0;
  for (int r = 0; r < reps; ++r) {
    const double t0 = omp_get_wtime();
    uint64_t sum = 0;
#pragma omp parallel for reduction(+ : sum)
    for (size_t i = 0; i < a.size(); ++i) sum += a[i];
    times.push_back(omp_get_wtime() - t0);
    sink = sum;
  }
  (void)sink;
  return double(bytes) / median(times);
}

}  // namespace adamas::app
