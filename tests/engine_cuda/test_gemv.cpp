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

namespace adamas {
namespace {

// The fused GEMV (GemvFusion): the RMSNorm prologue equals the plain GEMV of the host-normalized x bit for bit (same
// f32 products in the same order); the sum-of-squares epilogue equals the double sum of the stored outputs; SwiGLU
// over (gate, up) row pairs equals the plain GEMV followed by swiglu_rows bit for bit; PDL changes nothing.
TEST(Gemv, FusionsMatchUnfused) {
  if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device";
  const Case cases[] = {{2, 8}, {38, 520}, {130, 1544}, {1002, 4104}};
  std::mt19937_64 rng(99);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (const Case& cs : cases)
    for (int n = 1; n <= 4; ++n)
      for (bool pdl : {false, true}) {
        const int64_t rows = cs.rows, cols = cs.cols;
        std::vector<__half> w(rows * cols);
        std::vector<float> x(n * cols), g(cols), y0(n * rows);
        for (auto& v : w) v = __float2half(u(rng) * 0.1f);
        for (float& v : x) v = u(rng) * 3.0f;
        for (float& v : g) v = 1.0f + 0.1f * u(rng);
        for (float& v : y0) v = u(rng);
        const float eps = 1e-5f;
        std::vector<double> ss(n, 0.0);
        std::vector<float> xn(n * cols);
        for (int t = 0; t < n; ++t) {
          for (int64_t c = 0; c < cols; ++c) ss[t] += double(x[t * cols + c]) * x[t * cols + c];
          const float s = float(1.0 / std::sqrt(ss[t] / double(cols) + double(eps)));
          for (int64_t c = 0; c < cols; ++c) xn[t * cols + c] = x[t * cols + c] * s * g[c];
        }
        __half* dw;
        float *dx, *dxn, *dg, *dy, *dref;
        double *dss, *dout_ss;
        CK(cudaMalloc(&dw, w.size() * 2));
        CK(cudaMalloc(&dx, x.size() * 4));
        CK(cudaMalloc(&dxn, xn.size() * 4));
        CK(cudaMalloc(&dg, g.size() * 4));
        CK(cudaMalloc(&dy, y0.size() * 4));
        CK(cudaMalloc(&dref, y0.size() * 4));
        CK(cudaMalloc(&dss, n * 8));
        CK(cudaMalloc(&dout_ss, n * 8));
        CK(cudaMemcpy(dw, w.data(), w.size() * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dxn, xn.data(), xn.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dg, g.data(), g.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dss, ss.data(), n * 8, cudaMemcpyHostToDevice));
        std::vector<float> want(n * rows), got(n * rows);
        // Norm prologue + residual (beta 1) + sum of squares.
        CK(cudaMemcpy(dref, y0.data(), y0.size() * 4, cudaMemcpyHostToDevice));
        gpu::skinny_matmul(dw, rows, cols, dxn, n, dref, 1.0f, nullptr);
        CK(cudaMemcpy(dy, y0.data(), y0.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMemset(dout_ss, 0, n * 8));
        gpu::GemvFusion f{.norm_ss = dss, .norm_w = dg, .eps = eps, .out_ss = dout_ss, .pdl = pdl};
        gpu::skinny_matmul_fused(dw, rows, cols, dx, n, dy, 1.0f, f, nullptr);
        CK(cudaGetLastError());
        CK(cudaMemcpy(want.data(), dref, want.size() * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(got.data(), dy, got.size() * 4, cudaMemcpyDeviceToHost));
        ASSERT_EQ(0, std::memcmp(want.data(), got.data(), got.size() * 4))
            << "norm prologue: rows " << rows << " cols " << cols << " n " << n << " pdl " << pdl;
        std::vector<double> out_ss(n);
        CK(cudaMemcpy(out_ss.data(), dout_ss, n * 8, cudaMemcpyDeviceToHost));
        for (int t = 0; t < n; ++t) {
          double ref = 0;
          for (int64_t r = 0; r < rows; ++r) ref += double(got[t * rows + r]) * got[t * rows + r];
          ASSERT_NEAR(out_ss[t], ref, 1e-12 * ref) << "sum of squares, token " << t;
        }
        // SwiGLU over row pairs (beta 0 over poison): plain GEMV + swiglu_rows vs the fused epilogue.
        const int64_t ffn = rows / 2;
        gpu::skinny_matmul(dw, rows, cols, dx, n, dref, 0.0f, nullptr);
        gpu::swiglu_rows(dref, n, ffn, dy, nullptr);
        CK(cudaMemcpy(want.data(), dy, n * ffn * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemset(dy, 0xff, y0.size() * 4));
        gpu::skinny_matmul_fused(dw, rows, cols, dx, n, dy, 0.0f, gpu::GemvFusion{.swiglu = true, .pdl = pdl},
                                 nullptr);
        CK(cudaMemcpy(got.data(), dy, got.size() * 4, cudaMemcpyDeviceToHost));
        ASSERT_EQ(0, std::memcmp(want.data(), got.data(), n * ffn * 4))
            << "swiglu: rows " << rows << " cols " << cols << " n " << n << " pdl " << pdl;
        for (int64_t i = n * ffn; i < n * rows; ++i) ASSERT_TRUE(std::isnan(got[i])) << "swiglu wrote past its output";
        // And against fp64: act = silu(gate) * up of the exact products.
        for (int t = 0; t < n; ++t)
          for (int64_t i = 0; i < ffn; ++i) {
            double gt = 0, up = 0, mag = 0;
            for (int64_t c = 0; c < cols; ++c) {
              gt += double(__half2float(w[(2 * i) * cols + c])) * x[t * cols + c];
              up += double(__half2float(w[(2 * i + 1) * cols + c])) * x[t * cols + c];
              mag += std::fabs(double(__half2float(w[(2 * i) * cols + c])) * x[t * cols + c]);
            }
            const double ref = gt / (1.0 + std::exp(-gt)) * up;
            ASSERT_NEAR(got[t * ffn + i], ref, 1e-5 * (1.0 + mag) * (1.0 + std::fabs(up)));
          }
        for (void* p : {(void*)dw, (void*)dx, (void*)dxn, (void*)dg, (void*)dy, (void*)dref, (void*)dss,
                        (void*)dout_ss})
          CK(cudaFree(p));
      }
}

}  // namespace
}  // namespace adamas
