#include "engine/sampler.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace adamas {

void validate_sampler(const SamplerConfig& c) {
  ADAMAS_CHECK(std::isfinite(c.temperature) && c.temperature >= 0, ErrorKind::invalid_argument,
               "temperature = {} (expected >= 0; 0 is greedy)", c.temperature);
  ADAMAS_CHECK(c.top_k >= 0, ErrorKind::invalid_argument, "top-k = {} (expected >= 0; 0 keeps all)", c.top_k);
  ADAMAS_CHECK(c.top_p > 0 && c.top_p <= 1, ErrorKind::invalid_argument, "top-p = {} (expected in (0, 1])", c.top_p);
}

Sampler::Sampler(const SamplerConfig& config) : config_(config), rng_(config.seed) { validate_sampler(config); }

int32_t argmax(std::span<const float> logits) {
  ADAMAS_CHECK(!logits.empty(), ErrorKind::invalid_argument, "sampler: no logits");
  return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (config_.temperature == 0.0f) return argmax(logits);
  ADAMAS_CHECK(!logits.empty(), ErrorKind::invalid_argument, "sampler: no logits");
  const int64_t n = int64_t(logits.size());
  candidates_.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) candidates_[size_t(i)] = {logits[size_t(i)], int32_t(i)};
  // Descending logit, ties to the lower id: deterministic for a given seed.
  auto before = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  const int64_t k = config_.top_k > 0 ? std::min(config_.top_k, n) : n;
  std::partial_sort(candidates_.begin(), candidates_.begin() + k, candidates_.end(), before);
  candidates_.resize(size_t(k));
  // Softmax at the temperature, then the nucleus.
  const double top = candidates_[0].first;
  std::vector<double> p(static_cast<size_t>(k));
  double sum = 0;
  for (int64_t i = 0; i < k; ++i) sum += p[size_t(i)] = std::exp((candidates_[size_t(i)].first - top) / config_.temperature);
  int64_t keep = k;
  double acc = 0;
  for (int64_t i = 0; i < k; ++i) {
    acc += p[size_t(i)] / sum;
    if (acc >= config_.top_p) {
      keep = i + 1;
      break;
    }
  }
  double mass = 0;
  for (int64_t i = 0; i < keep; ++i) mass += p[size_t(i)];
  double r = std::uniform_real_distribution<double>(0.0, mass)(rng_);
  for (int64_t i = 0; i < keep; ++i) {
    r -= p[size_t(i)];
    if (r < 0) return candidates_[size_t(i)].second;
  }
  return candidates_[size_t(keep - 1)].second;
}

}  // namespace adamas
