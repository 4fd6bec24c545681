#include "eval/recall.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/check.h"
#include "core/dtype.h"

namespace adamas {

SelectionRecall selection_recall(std::span<const float> scores, float scale, std::span<const int32_t> selected) {
  const int64_t n = int64_t(scores.size());
  ADAMAS_CHECK(n > 0 && !selected.empty() && int64_t(selected.size()) <= n, ErrorKind::invalid_argument,
               "recall: {} selected of {} scores", selected.size(), n);
  const float mx = *std::max_element(scores.begin(), scores.end());
  std::vector<double> p(static_cast<size_t>(n));
  double z = 0;
  for (int64_t j = 0; j < n; ++j) z += p[size_t(j)] = std::exp(double(scale) * double(scores[size_t(j)] - mx));
  double mass = 0;
  for (int32_t j : selected) {
    ADAMAS_CHECK(0 <= j && j < n, ErrorKind::invalid_argument, "recall: selected row {} of {}", j, n);
    mass += p[size_t(j)];
  }
  // The exact top-k (k = |selected|), ties broken by index so the set is well defined.
  const size_t k = selected.size();
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::nth_element(order.begin(), order.begin() + ptrdiff_t(k) - 1, order.end(), [&](int32_t a, int32_t b) {
    return scores[size_t(a)] != scores[size_t(b)] ? scores[size_t(a)] > scores[size_t(b)] : a < b;
  });
  std::vector<bool> top(static_cast<size_t>(n), false);
  double oracle = 0;
  for (size_t i = 0; i < k; ++i) top[size_t(order[i])] = true, oracle += p[size_t(order[i])];
  int64_t common = 0;
  for (int32_t j : selected) common += top[size_t(j)];
  return {mass / z, double(common) / double(k), oracle / z};
}

RecallResult run_recall(Session& session, std::span<const int32_t> prompt, int64_t steps) {
  const int64_t n = int64_t(prompt.size());
  ADAMAS_CHECK(steps >= 1 && steps < n, ErrorKind::invalid_argument, "recall: {} decode steps for a prompt of {}",
               steps, n);
  ADAMAS_CHECK(n <= session.context(), ErrorKind::invalid_argument, "recall: {} tokens exceed the context of {}", n,
               session.context());
  session.reset();
  session.prefill(prompt.first(size_t(n - steps)));
  return recall_after_prefill(session, prompt, steps);
}

RecallResult recall_after_prefill(Session& session, std::span<const int32_t> prompt, int64_t steps) {
  const int64_t n = int64_t(prompt.size());
  ADAMAS_CHECK(steps >= 1 && steps < n && session.position() == n - steps, ErrorKind::invalid_argument,
               "recall: the session holds {} tokens, not the prefix of {} tokens before {} steps", session.position(),
               n - steps, steps);
  ADAMAS_CHECK(n <= session.context(), ErrorKind::invalid_argument, "recall: {} tokens exceed the context of {}", n,
               session.context());
  const ModelConfig& c = session.model().config();
  const int64_t dim = c.head_dim, g = c.n_heads / c.n_kv_heads;
  const float scale = 1.0f / std::sqrt(float(dim));
  std::vector<LayerRecall> layers(size_t(c.n_layers));
  std::vector<float> scores;
  session.set_decode_observer([&](int64_t layer, const float* q, const DecodeWorkspace& ws) {
    const int64_t tokens = session.position() + 1;  // the new token is written, not yet committed
    const HeadsView keys = session.cache().keys(layer, tokens);
    LayerRecall& out = layers[size_t(layer)];
    scores.resize(size_t(tokens));
    for (int64_t h = 0; h < c.n_heads; ++h) {
      const float* qh = q + h * dim;
      for (int64_t t = 0; t < tokens; ++t) {
        const void* row = keys.row(h / g, t);
        float s = 0;
        for (int64_t i = 0; i < dim; ++i) s += qh[i] * load_f32(row, keys.dtype, i);
        scores[size_t(t)] = s;
      }
      const SelectionRecall sr = selection_recall(scores, scale, last_selection(ws, h));
      out.mass += sr.mass;
      out.overlap += sr.overlap;
      out.oracle_mass += sr.oracle_mass;
      ++out.samples;
    }
  });
  struct ClearObserver {  // the observer refers to this frame: never leave it behind, even on an error
    Session& s;
    ~ClearObserver() { s.set_decode_observer({}); }
  } clear{session};
  for (int64_t i = n - steps; i < n; ++i) session.decode(prompt[size_t(i)]);

  RecallResult r;
  int64_t sparse = 0;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    LayerRecall& lr = layers[size_t(l)];
    lr.mass /= double(lr.samples);
    lr.overlap /= double(lr.samples);
    lr.oracle_mass /= double(lr.samples);
    if (l >= session.options().dense_layers) {
      r.mass += lr.mass;
      r.overlap += lr.overlap;
      r.oracle_mass += lr.oracle_mass;
      ++sparse;
    }
  }
  if (sparse > 0) r.mass /= double(sparse), r.overlap /= double(sparse), r.oracle_mass /= double(sparse);
  r.layers = std::move(layers);
  return r;
}

}  // namespace adamas
