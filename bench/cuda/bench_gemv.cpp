// bench_gemv: the decode GEMV (skinny_matmul, src/engine/cuda/gpu_linear.cu) at the Llama-2-7B shapes, every
// variant side by side in one run: time per call, weight GB/s and % of the device-to-device copy bandwidth.
// Weights are cycled over a 2 GiB pool so that no call finds its matrix in L2 (50 MB on the H100).
// "s2" is session 2's streaming kernel, frozen (gemv_session2.cu). Last, the L2 rows: one timed call of the o
// projection's shape after a 40 us pause, with its matrix cold, just read (hot), or prefetched into L2 before the
// pause (l2_prefetch, normal or evict-last priority): what the engine's wo prefetch (kFuseL2) can gain at most.
//
//   bench_gemv [--tokens 1,4] [--iters 50]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/cuda/gpu_ops.h"

namespace adamas::gpu {
void skinny_matmul_variant(int variant, const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n,
                           float* y, float beta, cudaStream_t s);
namespace bench {
void session2_gemv(const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y, float beta,
                   cudaStream_t s);
void spin(double us, cudaStream_t s);
void session2_gemv_ablation(int features, const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n,
                            float* y, cudaStream_t s);
}  // namespace bench
}

namespace {
constexpr int kVariants = 5;  // skinny_matmul_variant's 0-3, then 4: session 2's kernel
void gemv(int v, const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y, cudaStream_t s) {
  if (v == 4) return adamas::gpu::bench::session2_gemv(w, rows, cols, x, n, y, 0.0f, s);
  adamas::gpu::skinny_matmul_variant(v, w, rows, cols, x, n, y, 0.0f, s);
}
}  // namespace

namespace {

#define CK(e)                                                                          \
  do {                                                                                 \
    cudaError_t err_ = (e);                                                            \
    if (err_ != cudaSuccess) {                                                         \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(err_)); \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

struct Shape {
  const char* name;
  int64_t rows, cols, per_layer;  // per_layer: calls per layer in the engine (0: once per step)
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> tokens = {1, 4};
  int iters = 50;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--tokens") && i + 1 < argc) {
      tokens.clear();
      for (char* p = std::strtok(argv[++i], ","); p; p = std::strtok(nullptr, ",")) tokens.push_back(std::atoi(p));
    } else if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) {
      iters = std::atoi(argv[++i]);
    }
  }
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  int driver = 0;
  CK(cudaDriverGetVersion(&driver));
  std::printf("device: %s, %d SMs, L2 %d MB, driver API %d\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20, driver);
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  const int64_t pool_bytes = int64_t(2) << 30;
  __half* pool = nullptr;
  CK(cudaMalloc(&pool, pool_bytes));
  adamas::gpu::fill_random_half(pool, pool_bytes / 2, 7, 0.05f, s);
  float *x = nullptr, *y = nullptr;
  CK(cudaMalloc(&x, 4 * 32768 * sizeof(float)));
  CK(cudaMalloc(&y, 4 * 32768 * sizeof(float)));
  adamas::gpu::fill_random_f32(x, 4 * 32768, 9, 1.0f, 0.0f, s);
  CK(cudaStreamSynchronize(s));

  // Copy bandwidth: (read + write) bytes / time of a 512 MiB device-to-device copy.
  const int64_t cbytes = int64_t(512) << 20;
  float ms = 0;
  for (int w = 0; w < 2; ++w) CK(cudaMemcpyAsync(pool, reinterpret_cast<char*>(pool) + cbytes, cbytes,
                                                 cudaMemcpyDeviceToDevice, s));
  CK(cudaEventRecord(e0, s));
  for (int i = 0; i < 10; ++i)
    CK(cudaMemcpyAsync(pool, reinterpret_cast<char*>(pool) + cbytes, cbytes, cudaMemcpyDeviceToDevice, s));
  CK(cudaEventRecord(e1, s));
  CK(cudaEventSynchronize(e1));
  CK(cudaEventElapsedTime(&ms, e0, e1));
  const double copy_gbs = 2.0 * cbytes * 10 / (ms * 1e-3) / 1e9;
  std::printf("copy bandwidth (D2D 512 MiB, read+write): %.0f GB/s\n", copy_gbs);
  adamas::gpu::fill_random_half(pool, pool_bytes / 2, 7, 0.05f, s);

  const Shape shapes[] = {{"q/k/v/o 4096x4096", 4096, 4096, 0},  {"qkv fused 12288x4096", 12288, 4096, 1},
                          {"o 4096x4096", 4096, 4096, 1},          {"gate/up 11008x4096", 11008, 4096, 0},
                          {"gate+up fused 22016x4096", 22016, 4096, 1}, {"down 4096x11008", 4096, 11008, 1},
                          {"lm_head 32000x4096", 32000, 4096, -1}};
  const char* vname[] = {"new(default)", "old(staged)", "new r1", "new r2", "s2(b20dd1e)"};
  const int order[] = {1, 0, 2, 3, 4};
  for (int n : tokens) {
    std::printf("\n== n=%d token row(s); GB/s = weight bytes / time; %% of copy bandwidth %.0f GB/s\n", n, copy_gbs);
    std::printf("%-26s", "shape");
    for (int v : order) std::printf(" | %-12s us   GB/s    %%", vname[v]);
    std::printf(" | new/old | new/s2\n");
    double step_us[kVariants] = {};
    for (const Shape& sh : shapes) {
      const int64_t mat = sh.rows * sh.cols * 2;
      const int64_t copies = std::max<int64_t>(2, pool_bytes / mat);
      std::printf("%-26s", sh.name);
      double us_v[kVariants] = {};
      for (int v : order) {
        for (int i = 0; i < 3; ++i) gemv(v, pool + (i % copies) * (mat / 2), sh.rows, sh.cols, x, n, y, s);
        CK(cudaEventRecord(e0, s));
        for (int i = 0; i < iters; ++i) gemv(v, pool + ((i + 3) % copies) * (mat / 2), sh.rows, sh.cols, x, n, y, s);
        CK(cudaEventRecord(e1, s));
        CK(cudaEventSynchronize(e1));
        CK(cudaGetLastError());
        CK(cudaEventElapsedTime(&ms, e0, e1));
        const double us = ms * 1e3 / iters, gbs = mat / (us * 1e-6) / 1e9;
        us_v[v] = us;
        std::printf(" | %12.1f %6.0f %4.0f%%", us, gbs, 100.0 * gbs / copy_gbs);
        if (sh.per_layer > 0) step_us[v] += 32 * sh.per_layer * us;
        if (sh.per_layer < 0) step_us[v] += us;
      }
      std::printf(" | %.2fx | %.2fx\n", us_v[1] / us_v[0], us_v[4] / us_v[0]);
    }
    std::printf("%-26s", "engine step (32 layers+lm)");
    for (int v : order) std::printf(" | %12.0f  (ms %.2f)  ", step_us[v], step_us[v] / 1e3);
    std::printf(" | %.2fx | %.2fx\n", step_us[1] / step_us[0], step_us[4] / step_us[0]);
  }

  // L2 rows: o 4096x4096 (33.5 MB, under the 50 MB L2), one call timed alone after a pause, median of 31.
  const int64_t rows = 4096, cols = 4096, mat = rows * cols * 2, copies = pool_bytes / mat;
  const char* mode[] = {"cold", "hot (just read)", "prefetched", "prefetched evict_last"};
  std::printf("\n== L2: o %lldx%lld, one token row, one call after a 40 us pause; us (median of 31)\n",
              (long long)rows, (long long)cols);
  std::printf("%-24s | %12s | %12s | %12s\n", "matrix", "new(default)", "new r2", "s2(b20dd1e)");
  for (int m = 0; m < 4; ++m) {
    std::printf("%-24s", mode[m]);
    for (int v : {0, 3, 4}) {
      std::vector<float> t;
      for (int i = 0; i < 31; ++i) {
        const __half* w = pool + (i % copies) * (mat / 2);
        if (m == 1) gemv(v, w, rows, cols, x, 1, y, s);
        if (m >= 2) adamas::gpu::l2_prefetch(w, mat, m == 3, s);
        adamas::gpu::bench::spin(40, s);
        CK(cudaEventRecord(e0, s));
        gemv(v, w, rows, cols, x, 1, y, s);
        CK(cudaEventRecord(e1, s));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&ms, e0, e1));
        t.push_back(ms * 1e3f);
      }
      CK(cudaGetLastError());
      std::sort(t.begin(), t.end());
      std::printf(" | %12.1f", t[t.size() / 2]);
    }
    std::printf("\n");
  }
  // Ablation: session 2's kernel (one row per warp) plus one feature of today's kernel at a time
  // (gemv_session2.cu), one token row, the shapes whose calls run in one wave of blocks and one of many.
  std::printf("\n== s2 ablation, one token row, us per call (mean of %d, pool-cycled)\n", iters);
  const char* fname[] = {"s2", "+smem", "+param", "+pre", "+active", "+all"};
  const int fbits[] = {0, 1, 2, 4, 8, 15};
  std::printf("%-26s", "shape");
  for (const char* f : fname) std::printf(" | %8s", f);
  std::printf(" | %8s\n", "new r1");
  for (const Shape& sh : shapes) {
    const int64_t mat = sh.rows * sh.cols * 2, copies = std::max<int64_t>(2, pool_bytes / mat);
    std::printf("%-26s", sh.name);
    for (int k = 0; k < 7; ++k) {
      auto call = [&](int i) {
        const __half* w = pool + (i % copies) * (mat / 2);
        if (k < 6) adamas::gpu::bench::session2_gemv_ablation(fbits[k], w, sh.rows, sh.cols, x, 1, y, s);
        else gemv(2, w, sh.rows, sh.cols, x, 1, y, s);
      };
      for (int i = 0; i < 3; ++i) call(i);
      CK(cudaEventRecord(e0, s));
      for (int i = 0; i < iters; ++i) call(i + 3);
      CK(cudaEventRecord(e1, s));
      CK(cudaEventSynchronize(e1));
      CK(cudaGetLastError());
      CK(cudaEventElapsedTime(&ms, e0, e1));
      std::printf(" | %8.1f", ms * 1e3 / iters);
    }
    std::printf("\n");
  }
  CK(cudaFree(pool));
  return 0;
}
