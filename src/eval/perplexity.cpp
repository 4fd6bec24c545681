#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace adamas {

double negative_log_likelihood(std::span<const float> logits, int32_t target) {
  ADAMAS_CHECK(target >= 0 && size_t(target) < logits.size(), ErrorKind::invalid_argument,
               "perplexity: token {} outside the {} logits", target, logits.size());
  const float mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(double(x) - double(mx));
  return std::log(sum) + double(mx) - double(logits[size_t(target)]);
}

std::vector<PerplexityPoint> run_perplexity(Session& session, std::span<const int32_t> tokens,
                                            std::span<const int64_t> checkpoints,
                                            const std::function<void(int64_t, int64_t)>& progress) {
  ADAMAS_CHECK(!checkpoints.empty(), ErrorKind::invalid_argument, "perplexity: no checkpoint");
  const int64_t last = *std::max_element(checkpoints.begin(), checkpoints.end());
  for (int64_t c : checkpoints)
    ADAMAS_CHECK(c >= 1, ErrorKind::invalid_argument, "perplexity: checkpoint {} (expected >= 1)", c);
  ADAMAS_CHECK(last + 1 <= int64_t(tokens.size()), ErrorKind::invalid_argument,
               "perplexity: {} predictions need {} tokens, the text has {}", last, last + 1, tokens.size());
  ADAMAS_CHECK(last <= session.context(), ErrorKind::invalid_argument,
               "perplexity: {} tokens exceed the context of {}", last, session.context());
  session.reset();
  std::vector<double> cumulative(size_t(last) + 1, 0.0);  // cumulative[i]: NLL of predictions 1..i
  for (int64_t i = 0; i < last; ++i) {
    const std::span<const float> logits = session.decode(tokens[size_t(i)]);
    cumulative[size_t(i) + 1] = cumulative[size_t(i)] + negative_log_likelihood(logits, tokens[size_t(i) + 1]);
    if (progress && ((i + 1) % 64 == 0 || i + 1 == last)) progress(i + 1, last);
  }
  std::vector<PerplexityPoint> out;
  for (int64_t c : checkpoints) {
    const double nll = cumulative[size_t(c)];
    out.push_back({c, nll, std::exp(nll / double(c))});
  }
  return out;
}

}  // namespace adamas
