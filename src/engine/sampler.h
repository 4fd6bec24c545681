// Next-token sampling from logits: greedy (temperature 0), or temperature with top-k and top-p (nucleus) filters,
// from a seeded generator (the same seed and logits give the same tokens).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace adamas {

struct SamplerConfig {
  float temperature = 0.0f;  // 0: greedy (argmax, ties to the lowest id)
  int64_t top_k = 40;        // keep the k most likely tokens (0: all)
  float top_p = 0.95f;       // then the smallest set whose probability reaches p (1: all)
  uint64_t seed = 0;
};
// Throws Error(invalid_argument) for temperature < 0 or not finite, top_k < 0, top_p outside (0, 1].
void validate_sampler(const SamplerConfig& config);

class Sampler {
 public:
  explicit Sampler(const SamplerConfig& config);
  const SamplerConfig& config() const { return config_; }
  // The next token id. Error(invalid_argument) for empty logits.
  int32_t sample(std::span<const float> logits);

 private:
  SamplerConfig config_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

// Index of the largest value (ties: the lowest index).
int32_t argmax(std::span<const float> logits);

}  // namespace adamas
