// The decode GEMV (skinny_matmul, src/engine/cuda/gpu_linear.cu) against an fp64 host reference on fresh random
// data: odd row counts, cols multiples of 8 but not of 256, 1..4 token rows, beta 0 over a poisoned (NaN) output
// and beta 1 over a prior value; every variant, which must agree bit for bit, and batch rows equal to n == 1.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "adamas/cuda_attention.h"
#include "engine/cuda/gpu_ops.h"

namespace adamas::gpu {
void skinny_matmul_variant(int variant, const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n,
                           float* y, float beta, cudaStream_t s);
}

namespace adamas {
namespace {

#define CK(e) ASSERT_EQ((e), cudaSuccess)

struct Case {
  int64_t rows, cols;
};

TEST(Gemv, MatchesFp64Reference) {
  if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device";
  const Case cases[] = {{1, 8}, {3, 72}, {37, 520}, {101, 576}, {255, 1544}, {1001, 2056}, {513, 4104},
                        {129, 11016}, {77, 4096}};
  std::mt19937_64 rng(1234);
  std::uniform_real_distribution<float> uw(-1.0f, 1.0f);
  for (const Case& cs : cases) {
    const int64_t rows = cs.rows, cols = cs.cols;
    std::vector<__half> w(rows * cols);
    std::vector<float> wf(rows * cols), x(4 * cols), y0(4 * rows);
    for (int64_t i = 0; i < rows * cols; ++i) {
      w[i] = __float2half(uw(rng) * 0.1f);
      wf[i] = __half2float(w[i]);
    }
    for (float& v : x) v = uw(rng);
    for (float& v : y0) v = uw(rng);
    __half* dw;
    float *dx, *dy;
    CK(cudaMalloc(&dw, w.size() * 2));
    CK(cudaMalloc(&dx, x.size() * 4));
    CK(cudaMalloc(&dy, y0.size() * 4));
    CK(cudaMemcpy(dw, w.data(), w.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
    std::vector<float> first_n1;  // variant 0, n 1, beta 0: every other result must equal it bit for bit
    for (int variant = 0; variant < 4; ++variant)
      for (int n = 1; n <= 4; ++n)
        for (float beta : {0.0f, 1.0f}) {
          std::vector<float> y(4 * rows);
          if (beta == 0.0f) {
            CK(cudaMemset(dy, 0xff, y0.size() * 4));  // NaN poison
          } else {
            CK(cudaMemcpy(dy, y0.data(), y0.size() * 4, cudaMemcpyHostToDevice));
          }
          gpu::skinny_matmul_variant(variant, dw, rows, cols, dx, n, dy, beta, nullptr);
          CK(cudaGetLastError());
          CK(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost));
          for (int t = 0; t < n; ++t)
            for (int64_t r = 0; r < rows; ++r) {
              double ref = 0, mag = 0;
              for (int64_t c = 0; c < cols; ++c) {
                ref += double(wf[r * cols + c]) * double(x[t * cols + c]);
                mag += std::fabs(double(wf[r * cols + c]) * double(x[t * cols + c]));
              }
              const double expect = beta == 0.0f ? ref : double(y0[t * rows + r]) + ref;
              const float got = y[t * rows + r];
              ASSERT_TRUE(std::isfinite(got)) << "rows " << rows << " cols " << cols << " n " << n << " v " << variant;
              ASSERT_NEAR(got, expect, 1e-6 * (mag + std::fabs(expect)) + 1e-7)
                  << "rows " << rows << " cols " << cols << " n " << n << " t " << t << " r " << r << " variant "
                  << variant << " beta " << beta;
            }
          // Rows past n stay untouched (poison) at beta 0.
          if (beta == 0.0f) {
            for (int64_t i = n * rows; i < 4 * rows; ++i) {
              ASSERT_TRUE(std::isnan(y[i])) << "wrote past n";
            }
            // Token t of a batch of n gets the single-token result for token t's activations: x rows differ, so
            // compare token 0 only against the n == 1, variant 0 result.
            if (first_n1.empty()) first_n1.assign(y.begin(), y.begin() + rows);
            ASSERT_EQ(0, std::memcmp(first_n1.data(), y.data(), rows * 4))
                << "token 0 differs from variant 0 n 1: rows " << rows << " cols " << cols << " n " << n
                << " variant " << variant;
          }
        }
    CK(cudaFree(dw));
    CK(cudaFree(dx));
    CK(cudaFree(dy));
  }
}

}  // namespace
}  // namespace adamas
