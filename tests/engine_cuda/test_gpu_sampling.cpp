// GPU sampling (src/engine/cuda/gpu_sampling.cu) against the CPU Sampler (src/engine/sampler.cpp): for fixed random
// logits and a seed, every GPU draw must be the token the CPU Sampler with that seed returns (the GPU gets the same
// uniform draws); and the frequencies of many draws must follow the exact distribution (softmax at the temperature
// restricted to the top-k and the nucleus, computed here in fp64). Outputs are poisoned before each launch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#include "adamas/cuda_attention.h"
#include "engine/cuda/gpu_sampling.h"
#include "engine/sampler.h"
#include "gpu_test_util.h"

namespace adamas {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device: GPU sampling test skipped"

// `draws` rows of the same logits sampled on the GPU with the uniforms of one generator seeded with `seed`.
std::vector<int32_t> gpu_draws(const std::vector<float>& logits, const SamplerConfig& c, int64_t draws) {
  const int64_t vocab = int64_t(logits.size());
  std::vector<float> rows;
  rows.reserve(size_t(vocab * draws));
  for (int64_t r = 0; r < draws; ++r) rows.insert(rows.end(), logits.begin(), logits.end());
  std::mt19937_64 g(c.seed);
  std::vector<double> u(static_cast<size_t>(draws));
  for (double& x : u) x = std::uniform_real_distribution<double>(0.0, 1.0)(g);
  float* dl = nullptr;
  double* du = nullptr;
  int32_t* dout = nullptr;
  EXPECT_EQ(cudaMalloc(&dl, rows.size() * 4), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&du, u.size() * 8), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&dout, size_t(draws) * 4), cudaSuccess);
  cudaMemcpy(dl, rows.data(), rows.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(du, u.data(), u.size() * 8, cudaMemcpyHostToDevice);
  cudaMemset(dout, 0xFF, size_t(draws) * 4);  // poison: -1
  gpu::sample_rows(dl, draws, vocab, c, du, dout, nullptr);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<int32_t> out(static_cast<size_t>(draws));
  cudaMemcpy(out.data(), dout, out.size() * 4, cudaMemcpyDeviceToHost);
  cudaFree(dl), cudaFree(du), cudaFree(dout);
  return out;
}

std::vector<float> random_logits(std::mt19937& rng, int64_t vocab, float spread, int64_t ties) {
  std::normal_distribution<float> n(0.0f, spread);
  std::vector<float> l(static_cast<size_t>(vocab));
  for (float& x : l) x = n(rng);
  // Exact ties among the largest logits: the CPU's order puts the lower id first.
  const int64_t top = int64_t(std::max_element(l.begin(), l.end()) - l.begin());
  for (int64_t i = 0; i < ties; ++i) l[size_t((top + 1 + 7 * i) % vocab)] = l[size_t(top)];
  return l;
}

struct Config {
  float temperature;
  int64_t top_k;
  float top_p;
  int64_t vocab;
};

class GpuSamplingMatchesCpu : public ::testing::TestWithParam<Config> {};

TEST_P(GpuSamplingMatchesCpu, SameTokenForTheSameDraw) {
  SKIP_WITHOUT_GPU();
  const Config& p = GetParam();
  SCOPED_SEED(seed);
  std::mt19937 rng(seed);
  for (int rep = 0; rep < 3; ++rep) {
    const std::vector<float> logits = random_logits(rng, p.vocab, 2.0f + float(rep), rep);
    const SamplerConfig c{p.temperature, p.top_k, p.top_p, uint64_t(rng())};
    constexpr int64_t kDraws = 512;
    const std::vector<int32_t> got = gpu_draws(logits, c, kDraws);
    Sampler cpu(c);
    int64_t differ = 0;
    for (int64_t i = 0; i < kDraws; ++i) {
      const int32_t want = cpu.sample(logits);
      if (got[size_t(i)] != want && differ++ < 3)
        ADD_FAILURE() << "draw " << i << ": GPU " << got[size_t(i)] << ", CPU " << want;
    }
    EXPECT_EQ(differ, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, GpuSamplingMatchesCpu,
                         ::testing::Values(Config{0.8f, 40, 0.95f, 49152},    // adamas run's defaults, SmolLM2
                                           Config{1.0f, 4096, 0.9f, 32000},   // the largest candidate set
                                           Config{1.3f, 0, 1.0f, 1000},       // all tokens, no nucleus
                                           Config{0.5f, 1, 0.5f, 32000},      // top-1: argmax
                                           Config{2.0f, 300, 0.3f, 5000}));   // a narrow nucleus

// The frequencies of 40000 draws against the exact distribution: a chi-square test (df + 6 sqrt(2 df) is far in
// the tail), and no token outside the top-k and nucleus.
TEST(GpuSampling, FrequenciesFollowTheDistribution) {
  SKIP_WITHOUT_GPU();
  SCOPED_SEED(seed);
  std::mt19937 rng(seed);
  const int64_t vocab = 200;
  const std::vector<float> logits = random_logits(rng, vocab, 1.5f, 0);
  const SamplerConfig c{0.9f, 50, 0.8f, uint64_t(rng())};
  // Exact distribution, fp64: sort, top-k, softmax at T, nucleus.
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
  std::vector<double> w(size_t(c.top_k));
  for (int64_t i = 0; i < c.top_k; ++i)
    w[size_t(i)] = std::exp((double(logits[size_t(order[size_t(i)])]) - logits[size_t(order[0])]) / c.temperature);
  const double total = std::accumulate(w.begin(), w.end(), 0.0);
  int64_t keep = 0;
  for (double acc = 0; keep < c.top_k && acc < c.top_p;) acc += w[size_t(keep++)] / total;
  const double mass = std::accumulate(w.begin(), w.begin() + keep, 0.0);
  constexpr int64_t kDraws = 40000;
  const std::vector<int32_t> got = gpu_draws(logits, c, kDraws);
  std::vector<int64_t> count(size_t(vocab), 0);
  for (int32_t t : got) {
    ASSERT_TRUE(t >= 0 && t < vocab) << "token " << t;
    ++count[size_t(t)];
  }
  double chi2 = 0;
  int64_t outside = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    const int64_t id = order[size_t(i)];
    if (i >= keep) {
      outside += count[size_t(id)];
      continue;
    }
    const double expected = kDraws * w[size_t(i)] / mass;
    chi2 += (count[size_t(id)] - expected) * (count[size_t(id)] - expected) / expected;
  }
  const double df = double(keep - 1);
  std::printf("nucleus of %lld tokens: chi-square %.1f for %.0f degrees of freedom\n", (long long)keep, chi2, df);
  EXPECT_EQ(outside, 0) << "tokens outside the nucleus were drawn";
  EXPECT_GT(keep, 3) << "the test distribution should spread over several tokens";
  EXPECT_LT(chi2, df + 6 * std::sqrt(2 * df));
}

TEST(GpuSampling, ClearErrors) {
  SKIP_WITHOUT_GPU();
  EXPECT_NE(test::error_message([] { gpu::validate_gpu_sampler({0.8f, 0, 0.9f, 1}, 49152); }).find("at most 4096"),
            std::string::npos);
  EXPECT_NE(test::error_message([] { gpu::validate_gpu_sampler({0.8f, 40, 1.5f, 1}, 49152); }).find("top-p"), std::string::npos);
  EXPECT_EQ(test::error_message([] { gpu::validate_gpu_sampler({0.0f, 0, 0.9f, 1}, 49152); }), "no error");  // greedy
}

}  // namespace
}  // namespace adamas
