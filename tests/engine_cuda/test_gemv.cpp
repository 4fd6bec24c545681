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

namespace adamas {
namespace {

// The qkv GEMV's RoPE epilogue (GemvRope) against the plain GEMV followed by the separate RoPE + append + encode
// kernel: q, the cache's K/V rows and the key codes bit for bit, for 1..4 tokens at different positions and slots,
// head_dim 64/128/256, GQA, over a poisoned cache; the pair counters are back at zero afterwards.
TEST(Gemv, RopeEpilogueMatchesRopeKernel) {
  if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t hd : {64, 128, 256})
    for (int n = 1; n <= 4; ++n) {
      const int64_t heads = 4, kvh = 2, cols = 264, cap = 16, slots = 3, layers = 2, layer = 1;
      const int64_t qd = heads * hd, kvd = kvh * hd, rows = qd + 2 * kvd;
      gpu::CacheLayout c;
      c.capacity = cap, c.kv_heads = kvh, c.head_dim = hd, c.has_codes = true;
      c.k_off = 0, c.v_off = kvh * cap * hd * 2, c.codes_off = 2 * c.v_off;
      c.layer_bytes = (c.codes_off + kvh * cap * hd / 4 + 255) / 256 * 256;
      c.slot_bytes = layers * c.layer_bytes;
      const int64_t cache_bytes = slots * c.slot_bytes;
      std::vector<__half> w(rows * cols);
      std::vector<float> x(n * cols), inv(hd / 2 - 4);  // the last 4 pairs are not rotated (n_rot < head_dim)
      for (auto& v : w) v = __float2half(u(rng) * 0.2f);
      for (float& v : x) v = u(rng);
      for (size_t i = 0; i < inv.size(); ++i) inv[i] = std::pow(10000.0f, -2.0f * float(i) / float(hd));
      const std::vector<int32_t> pos{5, 0, 15, 9}, slot{2, 0, 1, 2};  // token 3 shares token 0's slot
      const float thr[3] = {-0.3f, 0.0f, 0.3f};
      __half* dw;
      float *dx, *dinv, *dqkv, *dqa, *dqb, *dthr;
      int32_t *dpos, *dslot;
      int* dcnt;
      uint8_t *ca, *cb;
      CK(cudaMalloc(&dw, w.size() * 2));
      CK(cudaMalloc(&dx, x.size() * 4));
      CK(cudaMalloc(&dinv, inv.size() * 4));
      CK(cudaMalloc(&dqkv, n * rows * 4));
      CK(cudaMalloc(&dqa, n * qd * 4));
      CK(cudaMalloc(&dqb, n * qd * 4));
      CK(cudaMalloc(&dthr, 12));
      CK(cudaMalloc(&dpos, 16));
      CK(cudaMalloc(&dslot, 16));
      CK(cudaMalloc(&dcnt, 4 * kvh * 4));
      CK(cudaMalloc(&ca, cache_bytes));
      CK(cudaMalloc(&cb, cache_bytes));
      CK(cudaMemcpy(dw, w.data(), w.size() * 2, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dinv, inv.data(), inv.size() * 4, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dthr, thr, 12, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dpos, pos.data(), 16, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dslot, slot.data(), 16, cudaMemcpyHostToDevice));
      CK(cudaMemset(dcnt, 0, 4 * kvh * 4));
      CK(cudaMemset(ca, 0xa5, cache_bytes));  // the same poison in both: untouched bytes compare equal
      CK(cudaMemset(cb, 0xa5, cache_bytes));
      CK(cudaMemset(dqa, 0xff, n * qd * 4));
      CK(cudaMemset(dqb, 0xff, n * qd * 4));
      const int64_t n_pairs = int64_t(inv.size());
      const int64_t m = n;  // tokens 0 and 3 share a slot at different positions
      c.base = ca;
      gpu::skinny_matmul(dw, rows, cols, dx, m, dqkv, 0.0f, nullptr);
      gpu::rope_append_encode(dqkv, m, heads, dinv, n_pairs, dpos, dslot, c, layer, dthr, dqa, false, nullptr);
      c.base = cb;
      gpu::GemvFusion f;
      f.rope = gpu::GemvRope{.q_out = dqb, .inv_freq = dinv, .n_pairs = n_pairs, .n_heads = heads, .layer = layer,
                             .pos = dpos, .slot = dslot, .cache = c, .thresholds = dthr,
                             .scale = 1.0f / std::sqrt(float(hd)), .counters = dcnt};
      f.pdl = n % 2 == 0;
      gpu::skinny_matmul_fused(dw, rows, cols, dx, m, nullptr, 0.0f, f, nullptr);
      CK(cudaDeviceSynchronize());
      std::vector<uint8_t> a(cache_bytes), b(cache_bytes);
      CK(cudaMemcpy(a.data(), ca, cache_bytes, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(b.data(), cb, cache_bytes, cudaMemcpyDeviceToHost));
      ASSERT_EQ(0, std::memcmp(a.data(), b.data(), cache_bytes)) << "cache differs: hd " << hd << " n " << m;
      // Every token's K rows were written (not poison) and codes too.
      for (int64_t t = 0; t < m; ++t) {
        const uint8_t* k = a.data() + slot[t] * c.slot_bytes + layer * c.layer_bytes + pos[t] * hd * 2;
        ASSERT_FALSE(k[0] == 0xa5 && k[1] == 0xa5 && k[2] == 0xa5 && k[3] == 0xa5) << "K row not written";
      }
      std::vector<float> qa(m * qd), qb(m * qd);
      CK(cudaMemcpy(qa.data(), dqa, qa.size() * 4, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(qb.data(), dqb, qb.size() * 4, cudaMemcpyDeviceToHost));
      ASSERT_EQ(0, std::memcmp(qa.data(), qb.data(), qa.size() * 4)) << "q differs: hd " << hd << " n " << m;
      for (float v : qb) ASSERT_TRUE(std::isfinite(v));
      std::vector<int> cnt(4 * kvh);
      CK(cudaMemcpy(cnt.data(), dcnt, cnt.size() * 4, cudaMemcpyDeviceToHost));
      for (int v : cnt) ASSERT_EQ(v, 0) << "pair counters not reset";
      for (void* p : {(void*)dw, (void*)dx, (void*)dinv, (void*)dqkv, (void*)dqa, (void*)dqb, (void*)dthr,
                      (void*)dpos, (void*)dslot, (void*)dcnt, (void*)ca, (void*)cb})
        CK(cudaFree(p));
    }
}

}  // namespace
}  // namespace adamas
