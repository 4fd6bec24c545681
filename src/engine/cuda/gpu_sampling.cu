// Sampling kernel (see gpu_sampling.h): one block of 1024 threads per row. The k-th largest (logit, -id) key by
// radix select, the k candidates gathered and bitonic-sorted in shared memory (descending), their probabilities in
// double in parallel, then the CPU's three sequential loops (sum, nucleus, walk) by one thread, in the CPU's order,
// so that the token equals the CPU Sampler's for the same draw.
#include <algorithm>

#include <string>

#include "adamas/error.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/gpu_sampling.h"
#include "engine/cuda/radix_select.cuh"

namespace adamas::gpu {
namespace {

constexpr int kThreads = 1024;

// (logit order << 32) | (~id): larger = earlier in the CPU's order (descending logit, ties to the lower id).
__device__ __forceinline__ uint64_t logit_key(const float* row, int64_t i) {
  return (uint64_t(float_order(row[i])) << 32) | uint64_t(0xffffffffu - uint32_t(i));
}

__global__ void __launch_bounds__(kThreads) sample_kernel(const float* logits, int64_t vocab, int64_t k, int kpow2,
                                                          float temperature, float top_p, const double* uniforms,
                                                          int32_t* out) {
  extern __shared__ unsigned long long cand[];  // [kpow2] keys, then [k] double probabilities
  double* p = reinterpret_cast<double*>(cand + kpow2);
  __shared__ RadixScratch scratch;
  __shared__ int count;
  const float* row = logits + int64_t(blockIdx.x) * vocab;
  const uint64_t kth = k < vocab ? kth_largest_key([row](int64_t i) { return logit_key(row, i); }, vocab, k, scratch)
                                 : 0;
  if (threadIdx.x == 0) count = 0;
  for (int i = threadIdx.x; i < kpow2; i += blockDim.x) cand[i] = 0;  // padding sorts last
  __syncthreads();
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const uint64_t key = logit_key(row, i);
    if (key >= kth) cand[atomicAdd(&count, 1)] = key;
  }
  // Bitonic sort, descending.
  for (int size = 2; size <= kpow2; size <<= 1)
    for (int stride = size / 2; stride > 0; stride >>= 1) {
      __syncthreads();
      for (int i = threadIdx.x; i < kpow2; i += blockDim.x) {
        const int j = i ^ stride;
        if (j <= i) continue;
        const unsigned long long a = cand[i], b = cand[j];
        if ((i & size) == 0 ? a < b : a > b) cand[i] = b, cand[j] = a;
      }
    }
  __syncthreads();
  // As the CPU: top = candidates[0] (double), p_i = exp((l_i - top) / T) in double.
  const double top = order_float(uint32_t(cand[0] >> 32));
  for (int i = threadIdx.x; i < k; i += blockDim.x)
    p[i] = exp((double(order_float(uint32_t(cand[i] >> 32))) - top) / double(temperature));
  __syncthreads();
  if (threadIdx.x != 0) return;
  double sum = 0;
  for (int i = 0; i < k; ++i) sum += p[i];
  int keep = int(k);
  double acc = 0;
  for (int i = 0; i < k; ++i) {
    acc += p[i] / sum;
    if (acc >= double(top_p)) {
      keep = i + 1;
      break;
    }
  }
  double mass = 0;
  for (int i = 0; i < keep; ++i) mass += p[i];
  double r = uniforms[blockIdx.x] * (mass - 0.0) + 0.0;  // std::uniform_real_distribution(0, mass)'s arithmetic
  int pick = keep - 1;
  for (int i = 0; i < keep; ++i) {
    r -= p[i];
    if (r < 0) {
      pick = i;
      break;
    }
  }
  out[blockIdx.x] = int32_t(0xffffffffu - uint32_t(cand[pick]));
}

// Once per process, outside graph captures (SamplingDraws calls it): the largest dynamic shared size it takes.
void allow_candidates_in_shared_memory() {
  static const bool done = [] {
    check(cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 2 * kMaxGpuCandidates * 8),
          "sampling kernel attributes");
    return true;
  }();
  (void)done;
}

int64_t candidates(const SamplerConfig& c, int64_t vocab) { return c.top_k > 0 ? std::min(c.top_k, vocab) : vocab; }

}  // namespace

void validate_gpu_sampler(const SamplerConfig& c, int64_t vocab) {
  validate_sampler(c);
  if (c.temperature == 0.0f || candidates(c, vocab) <= kMaxGpuCandidates) return;
  const std::string most = std::to_string(kMaxGpuCandidates);
  throw Error(ErrorKind::unsupported, "--top-k " + std::to_string(c.top_k) + " over a vocabulary of " +
                                          std::to_string(vocab) + ": sampling on cuda keeps at most " + most +
                                          " candidates (use --top-k 1 to " + most + ")");
}

void sample_rows(const float* logits, int64_t rows, int64_t vocab, const SamplerConfig& c, const double* uniforms,
                 int32_t* out, cudaStream_t s) {
  validate_gpu_sampler(c, vocab);
  if (!(c.temperature > 0.0f && rows > 0 && vocab > 0))
    throw Error(ErrorKind::invalid_argument, "sample_rows: temperature " + std::to_string(c.temperature) + ", " +
                                                 std::to_string(rows) + " rows, vocab " + std::to_string(vocab) +
                                                 " (expected > 0)");
  const int64_t k = candidates(c, vocab);
  int kpow2 = 1;
  while (kpow2 < k) kpow2 *= 2;
  const size_t shared = size_t(kpow2) * 8 + size_t(k) * 8;
  allow_candidates_in_shared_memory();
  sample_kernel<<<unsigned(rows), kThreads, shared, s>>>(logits, vocab, k, kpow2, c.temperature, c.top_p, uniforms,
                                                         out);
}

SamplingDraws::SamplingDraws(const SamplerConfig& config, int64_t slots)
    : config_(config), rng_(size_t(slots), std::mt19937_64(config.seed)) {
  if (!greedy()) allow_candidates_in_shared_memory();
}

SamplingDraws::~SamplingDraws() {
  if (ring_) cudaFreeHost(ring_);
}

void SamplingDraws::restart(int slot) { rng_[size_t(slot)].seed(config_.seed); }

void SamplingDraws::draw(std::span<const int> slots, int64_t steps) {
  rows_ = int64_t(slots.size());
  if (steps * rows_ > cap_) {
    if (ring_) cudaFreeHost(ring_);
    ring_ = nullptr;
    cap_ = steps * rows_;
    check(cudaMallocHost(&ring_, size_t(cap_) * sizeof(double)), "pinned memory (sampling draws)");
  }
  // Step-major, each slot's generator in its own order: the same draws as one CPU Sampler per sequence.
  for (int64_t r = 0; r < rows_; ++r) {
    std::mt19937_64& g = rng_[size_t(slots[size_t(r)])];
    for (int64_t s = 0; s < steps; ++s) ring_[s * rows_ + r] = std::uniform_real_distribution<double>(0.0, 1.0)(g);
  }
}

}  // namespace adamas::gpu
