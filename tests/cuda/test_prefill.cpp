// The tensor-core causal prefill attention (src/attention/cuda/prefill.cu) against the CPU's
// adamas::attend_dense_causal on fresh random inputs: head_dim 64 and 128, MHA and GQA, chunks shorter and longer
// than a block of 64 queries after a cached prefix, strided q/out rows, and a cache whose rows past the last token
// hold NaN (they must not reach the result). Outputs are poisoned (NaN) before the kernel runs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <vector>

#include "adamas/attention.h"
#include "adamas/cuda_attention.h"
#include "attention/cuda/prefill.h"
#include "core/dtype.h"
#include "gpu_test_util.h"

namespace adamas {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device: prefill attention test skipped"

struct Case {
  int64_t dim, n_heads, kv_heads, cached, n_queries;
};

void check_case(const Case& c) {
  SCOPED_SEED(seed);
  SCOPED_TRACE(::testing::Message() << "dim " << c.dim << ", heads " << c.n_heads << "/" << c.kv_heads << ", cached "
                                    << c.cached << ", queries " << c.n_queries);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t d = c.dim, tokens = c.cached + c.n_queries, capacity = tokens + 37;  // rows past `tokens`: NaN
  const int64_t q_stride = c.n_heads * d + 4, out_stride = c.n_heads * d + 8;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // K with a per-channel scale (scores of a few units, a peaked but not one-hot softmax), V ~ N(0, 1).
  std::vector<float> channel(static_cast<size_t>(d));
  for (float& s : channel) s = 0.5f + std::abs(normal(rng));
  std::vector<uint16_t> k(size_t(c.kv_heads * capacity * d), f32_to_f16(nan)), v(k);
  for (int64_t h = 0; h < c.kv_heads; ++h)
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t i = 0; i < d; ++i) {
        const size_t at = size_t((h * capacity + t) * d + i);
        k[at] = f32_to_f16(normal(rng) * channel[size_t(i)]);
        v[at] = f32_to_f16(normal(rng));
      }
  std::vector<float> q(size_t(c.n_queries * q_stride), nan);
  for (int64_t r = 0; r < c.n_queries; ++r)
    for (int64_t i = 0; i < c.n_heads * d; ++i) q[size_t(r * q_stride + i)] = normal(rng);
  const float scale = 1.0f / std::sqrt(float(d));

  const HeadsView hk{k.data(), DType::f16, c.kv_heads, tokens, d, capacity * d, d};
  const HeadsView hv{v.data(), DType::f16, c.kv_heads, tokens, d, capacity * d, d};
  std::vector<float> want(size_t(c.n_queries * out_stride), 0.0f);
  attend_dense_causal(q.data(), c.n_queries, c.n_heads, q_stride, hk, hv, scale, want.data(), out_stride);

  uint16_t* dk = test::to_device(k);
  uint16_t* dv = test::to_device(v);
  float* dq = test::to_device(q);
  float* dout = test::to_device(std::vector<float>(size_t(c.n_queries * out_stride), nan));  // poisoned
  const HeadsView gk{dk, DType::f16, c.kv_heads, tokens, d, capacity * d, d};
  const HeadsView gv{dv, DType::f16, c.kv_heads, tokens, d, capacity * d, d};
  ASSERT_TRUE(cuda::prefill_supported(gk, gv));
  cuda::attend_dense_causal(dq, c.n_queries, c.n_heads, q_stride, gk, gv, scale, dout, out_stride, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> got = test::to_host(dout, want.size());
  for (void* p : {static_cast<void*>(dk), static_cast<void*>(dv), static_cast<void*>(dq), static_cast<void*>(dout)})
    cudaFree(p);

  // Q (times scale) and the softmax weights are rounded to f16 for the products (2^-12 relative each): with scores
  // of a few units that moves a weight by ~1e-3 relative, an output (|V| ~ N(0, 1)) by ~1e-3; the tolerance leaves
  // room for the largest of ~10^5 outputs. A wrong mask, tile or fragment shows up as errors of order 0.1-1.
  constexpr double kTol = 1e-2;
  double worst = 0;
  int64_t bad = 0, untouched = 0;
  for (int64_t r = 0; r < c.n_queries; ++r) {
    for (int64_t i = 0; i < c.n_heads * d; ++i) {
      const float g = got[size_t(r * out_stride + i)], w = want[size_t(r * out_stride + i)];
      const double e = std::abs(double(g) - double(w));
      if (!(e <= kTol)) ++bad;  // NaN counts as bad
      if (e > worst || std::isnan(e)) worst = std::isnan(e) ? INFINITY : e;
    }
    for (int64_t i = c.n_heads * d; i < out_stride; ++i) untouched += std::isnan(got[size_t(r * out_stride + i)]);
  }
  std::printf("dim %lld heads %lld/%lld cached %lld queries %lld: max |GPU - CPU| %.3g\n", (long long)d,
              (long long)c.n_heads, (long long)c.kv_heads, (long long)c.cached, (long long)c.n_queries, worst);
  EXPECT_EQ(bad, 0) << "max |GPU - CPU| = " << worst;
  EXPECT_EQ(untouched, c.n_queries * (out_stride - c.n_heads * d)) << "the kernel wrote past a row's heads";
}

TEST(CudaPrefill, MatchesCpuHeadDim128Mha) {
  SKIP_WITHOUT_GPU();
  check_case({128, 4, 4, 0, 200});    // a whole prompt, a partial last block
  check_case({128, 3, 3, 300, 64});   // a chunk after a cached prefix, one exact block
}

TEST(CudaPrefill, MatchesCpuHeadDim128Gqa) {
  SKIP_WITHOUT_GPU();
  check_case({128, 8, 2, 517, 150});
}

TEST(CudaPrefill, MatchesCpuHeadDim64) {
  SKIP_WITHOUT_GPU();
  check_case({64, 6, 2, 100, 333});
  check_case({64, 9, 3, 7, 5});       // SmolLM2's heads, a chunk shorter than a tile
  check_case({64, 2, 1, 0, 1});       // one query over one token
}

TEST(CudaPrefill, RejectsWhatItDoesNotSupport) {
  SKIP_WITHOUT_GPU();
  std::vector<float> f(64);
  const HeadsView f32{f.data(), DType::f32, 1, 1, 64, 64, 64};
  EXPECT_FALSE(cuda::prefill_supported(f32, f32));
  const HeadsView d256{reinterpret_cast<void*>(uintptr_t(256)), DType::f16, 1, 4, 256, 1024, 256};
  EXPECT_FALSE(cuda::prefill_supported(d256, d256));
  const std::string m = test::error_message([&] {
    cuda::attend_dense_causal(nullptr, 1, 1, 64, f32, f32, 1.0f, nullptr, 64, nullptr);
  });
  EXPECT_NE(m.find("must be f16"), std::string::npos) << m;
}

}  // namespace
}  // namespace adamas
