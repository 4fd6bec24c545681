// Sampling on the GPU, the CPU Sampler's algorithm (src/engine/sampler.cpp) over device logits: the top-k logits
// (ties to the lower id), a softmax at the temperature in double, the nucleus (the smallest prefix whose probability
// reaches top-p), then the token where the running sum passes u * (the nucleus's mass). Given the same logits and
// the same uniform draw u, the token is the CPU's: the draws come from the host, from the same generator the CPU
// Sampler uses (std::mt19937_64 seeded with the seed, one std::uniform_real_distribution<double> draw per sampled
// token), so a GPU run with a seed samples what the CPU run with that seed samples from the same logits.
// Greedy (temperature 0) stays argmax_rows.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "engine/sampler.h"

namespace adamas::gpu {

// The candidate set (top-k, or the whole vocabulary for top-k 0) is sorted in one block's shared memory.
constexpr int64_t kMaxGpuCandidates = 4096;

// validate_sampler, plus (temperature > 0) a candidate set of at most kMaxGpuCandidates tokens for this vocabulary:
// Error(unsupported) naming the limit otherwise.
void validate_gpu_sampler(const SamplerConfig& config, int64_t vocab);

// out[r] = the token sampled from logits[r] (vocab floats) with uniforms[r] in [0, 1) (device arrays), for
// config.temperature > 0.
void sample_rows(const float* logits, int64_t rows, int64_t vocab, const SamplerConfig& config,
                 const double* uniforms, int32_t* out, cudaStream_t stream);

// The uniform draws of each sequence slot (one generator per slot, restarted from the seed when the slot takes a
// new sequence), staged in pinned memory for the steps about to be enqueued.
class SamplingDraws {
 public:
  SamplingDraws(const SamplerConfig& config, int64_t slots);
  ~SamplingDraws();
  SamplingDraws(const SamplingDraws&) = delete;
  SamplingDraws& operator=(const SamplingDraws&) = delete;

  bool greedy() const { return config_.temperature == 0.0f; }
  const SamplerConfig& config() const { return config_; }
  void restart(int slot);
  // Draws `steps` uniforms for each of `slots` into the pinned ring: [step][row]. The stream must be idle (the ring
  // may be read by earlier copies).
  void draw(std::span<const int> slots, int64_t steps);
  // The host draws of step `step` (rows of the last draw()); a cudaMemcpyAsync source.
  const double* step(int64_t step) const { return ring_ + step * rows_; }

 private:
  SamplerConfig config_;
  std::vector<std::mt19937_64> rng_;
  double* ring_ = nullptr;
  int64_t cap_ = 0, rows_ = 0;
};

}  // namespace adamas::gpu
