// Event timing of GPU calls with the L2 flushed before each (shared by the CUDA benchmarks of this directory).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "fill.h"

namespace bench {

inline void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

struct Timer {
  cudaEvent_t a, b;
  void* flush = nullptr;
  size_t flush_bytes = 256u << 20;
  unsigned* sink = nullptr;
  bool write_flush = false;  // --flush write: a memset (leaves L2 full of dirty lines that cost write-backs)
  Timer() {
    ck(cudaEventCreate(&a), "event");
    ck(cudaEventCreate(&b), "event");
    ck(cudaMalloc(&flush, flush_bytes), "flush buffer");
    ck(cudaMemset(flush, 0x5a, flush_bytes), "flush init");
    ck(cudaMalloc(&sink, 4), "flush sink");
  }
  void flush_l2(int i) {
    if (write_flush) ck(cudaMemsetAsync(flush, i & 0xff, flush_bytes), "flush");
    else bench_flush_read(flush, flush_bytes, sink);
  }
  // Median (us) of `iters` timed calls of f, each after an L2 flush.
  // `after_flush` (diagnostics only) runs between the flush and the first event.
  template <class F>
  double median_us(F&& f, int iters, const std::function<void()>& after_flush = {}) {
    for (int i = 0; i < 3; ++i) f();
    ck(cudaDeviceSynchronize(), "warm-up");
    std::vector<double> t;
    for (int i = 0; i < iters; ++i) {
      flush_l2(i);
      if (after_flush) after_flush();
      ck(cudaEventRecord(a), "record");
      f();
      ck(cudaEventRecord(b), "record");
      ck(cudaEventSynchronize(b), "sync");
      float ms = 0;
      ck(cudaEventElapsedTime(&ms, a, b), "elapsed");
      t.push_back(ms * 1000.0);
    }
    ck(cudaGetLastError(), "timed launches");
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

// Device-to-device copy bandwidth of 1 GiB (bytes read + written, GB/s): the reference of the "% of copy" columns.
inline double copy_bandwidth_gbs(Timer& timer) {
  const size_t bytes = size_t(1) << 30;
  void *src = nullptr, *dst = nullptr;
  ck(cudaMalloc(&src, bytes), "copy src");
  ck(cudaMalloc(&dst, bytes), "copy dst");
  ck(cudaMemset(src, 1, bytes), "copy memset");
  const double us = timer.median_us([&] { ck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice), "copy"); }, 20);
  ck(cudaFree(src), "copy free");
  ck(cudaFree(dst), "copy free");
  return 2.0 * double(bytes) / (us * 1e3);
}

}  // namespace bench
