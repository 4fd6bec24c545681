// Perplexity of a long text fed token by token from position 0, every token a decode step with the method under
// test (the paper's PG-19 protocol: no dense prefill, so the sparse attention shapes every prediction once the
// context outgrows the budget). Cumulative perplexity at checkpoints (e.g. 1K, 2K, 4K, 8K tokens).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "engine/session.h"

namespace adamas {

struct PerplexityPoint {
  int64_t tokens = 0;     // predictions counted: tokens[1 .. tokens] given their prefixes
  double nll_sum = 0;     // sum of -log p(token) (nats)
  double perplexity = 0;  // exp(nll_sum / tokens)
};

// Decodes tokens[0 .. max(checkpoints)] on a fresh sequence (the session is reset) and returns one point per
// checkpoint, in the order given. Error(invalid_argument) when a checkpoint is < 1 or needs more tokens than given
// (max(checkpoints) + 1) or than the context holds. `progress(done, total)` is called every 64 tokens.
std::vector<PerplexityPoint> run_perplexity(Session& session, std::span<const int32_t> tokens,
                                            std::span<const int64_t> checkpoints,
                                            const std::function<void(int64_t, int64_t)>& progress = {});

// -log softmax(logits)[target] in double precision.
double negative_log_likelihood(std::span<const float> logits, int32_t target);

}  // namespace adamas
