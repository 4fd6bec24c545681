// `adamas demo`: the operator on a realistic synthetic case. A 32K-token cache of random keys (with outlier
// channels) in which, for every query head, a few keys are planted to align with the query: full attention puts
// most of its mass on them. Each method at the same budget reports whether it found them, its error against full
// attention and its time.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "adamas/attention.h"
#include "apps.h"
#include "bench_util.h"
#include "synthetic_cache.h"

namespace adamas::app {

namespace {

double rel_error(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) num += (a[i] - ref[i]) * double(a[i] - ref[i]), den += double(ref[i]) * ref[i];
  return std::sqrt(num / den);
}

}  // namespace

int demo_synthetic(const DemoArgs& a) {
  ADAMAS_CHECK_ARG(a.budget > 0, "--budget {} (expected > 0)", a.budget);
  ADAMAS_CHECK_ARG(a.tokens > a.budget, "--tokens {} must exceed --budget {} for a sparse demo", a.tokens, a.budget);
  ADAMAS_CHECK_ARG(a.planted > 0 && a.planted * (a.heads / a.kv_heads) < a.tokens, "--planted {} out of range",
                   a.planted);
  std::mt19937_64 rng(a.seed);
  const Thresholds th{};
  const int64_t g = a.heads / a.kv_heads, dim = a.dim;
  fmt::print("Synthetic cache: {} tokens, {} query / {} KV heads, head_dim {}, K/V f16 (random keys, outlier "
             "channels), {} planted keys per query head.\n", a.tokens, a.heads, a.kv_heads, dim, a.planted);
  SyntheticCache cache = make_cache(a.kv_heads, a.tokens, dim, DType::f16, 2.0f, th, rng);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(size_t(a.heads * dim));
  for (float& x : q) x = 2.0f * normal(rng);
  // Plant: key = 16 * q / |q| + small noise, at distinct random positions (never the newest token).
  std::uniform_int_distribution<int64_t> pos(0, a.tokens - 2);
  std::vector<std::set<int64_t>> planted(size_t(a.heads));
  std::set<std::pair<int64_t, int64_t>> used;
  for (int64_t h = 0; h < a.heads; ++h) {
    const float* qh = q.data() + h * dim;
    double norm = 0;
    for (int64_t i = 0; i < dim; ++i) norm += double(qh[i]) * qh[i];
    norm = std::sqrt(norm);
    while (int64_t(planted[h].size()) < a.planted) {
      const int64_t t = pos(rng);
      if (!used.insert({h / g, t}).second) continue;
      std::vector<float> key(static_cast<size_t>(dim));
      for (int64_t i = 0; i < dim; ++i) key[i] = float(16.0 * qh[i] / norm) + 0.2f * normal(rng);
      set_key(cache, h / g, t, key.data(), th);
      planted[h].insert(t);
    }
  }
  std::vector<float> page_min, page_max;
  const int64_t pages_n = (a.tokens + 15) / 16;
  page_min.resize(size_t(a.kv_heads * pages_n * dim)), page_max.resize(page_min.size());
  QuestPagesView pages{page_min.data(), page_max.data(), a.kv_heads, pages_n, dim, 16};
  quest_update_pages(cache.k(), 0, a.tokens, pages);

  // Calibrated variant: key thresholds per KV head from the quartiles of its rotated keys (as at prefill), query
  // thresholds per query head from the quartiles of its own rotated coordinates; codes re-encoded with them.
  std::vector<Thresholds> key_th(size_t(a.kv_heads)), query_th(size_t(a.heads));
  for (int64_t h = 0; h < a.kv_heads; ++h) key_th[h] = calibrate_head(cache.k(), h, 0, a.tokens);
  for (int64_t h = 0; h < a.heads; ++h) {
    std::vector<float> rq(q.begin() + h * dim, q.begin() + (h + 1) * dim);
    hadamard_transform(rq.data(), dim);
    query_th[h] = calibrate_thresholds(rq.data(), 1, dim, dim);
  }
  std::vector<uint8_t> cal_codes(cache.codes.size());
  encode_keys(cache.k(), 0, a.tokens, key_th,
              MutCodesView::contiguous(cal_codes.data(), a.kv_heads, a.tokens, dim));

  DecodeInputs in;
  in.q = q.data(), in.n_heads = a.heads, in.k = cache.k(), in.v = cache.v(), in.codes = cache.code_view();
  in.pages = pages;
  DecodeInputs cal = in;
  cal.codes = CodesView::contiguous(cal_codes.data(), a.kv_heads, a.tokens, dim);
  cal.query_thresholds = query_th;
  DecodeWorkspace ws;
  CacheFlusher flush;
  std::vector<float> ref(q.size());
  nlohmann::json rows = nlohmann::json::array();
  fmt::print("\n{:<10} {:>7} {:>15} {:>12} {:>10} {:>9}   {}\n", "method", "budget", "planted found", "rel. error",
             "time ms", "speedup", "selected (head 0, first 12)");
  double full_ms = 0;
  struct Row {
    Method method;
    const DecodeInputs* inputs;
    const char* label;
  };
  for (const Row& row : {Row{Method::full, &in, "full"}, Row{Method::adamas, &in, "adamas"},
                         Row{Method::adamas, &cal, "adamas-cal"}, Row{Method::quest, &in, "quest"},
                         Row{Method::streaming, &in, "streaming"}}) {
    const Method m = row.method;
    AttentionConfig cfg;
    cfg.method = m, cfg.budget = a.budget;
    std::vector<float> out(q.size());
    std::vector<double> times;
    for (int i = 0; i < 6; ++i) {
      flush();
      DecodeTimings t;
      decode_attention(*row.inputs, cfg, ws, out.data(), &t);
      if (i > 0) times.push_back(t.estimate_s + t.select_s + t.attend_s);
    }
    const double ms = median(times) * 1e3;
    if (m == Method::full) ref = out, full_ms = ms;
    int64_t found = 0;
    for (int64_t h = 0; h < a.heads; ++h)
      for (int32_t t : last_selection(ws, h)) found += planted[h].count(t);
    std::string shown;
    auto sel0 = last_selection(ws, 0);
    for (size_t i = 0; i < std::min<size_t>(12, sel0.size()); ++i)
      shown += fmt::format("{}{}", sel0[i], planted[0].count(sel0[i]) ? "* " : " ");
    if (sel0.size() > 12) shown += "...";
    const double err = rel_error(out, ref);
    fmt::print("{:<10} {:>7} {:>8}/{:<6} {:>12.2e} {:>10.3f} {:>8.1f}x   {}\n", row.label,
               m == Method::full ? a.tokens : a.budget, found, a.planted * a.heads, err, ms, full_ms / ms, shown);
    rows.push_back({{"method", row.label}, {"budget", a.budget}, {"planted_found", found},
                    {"planted_total", a.planted * a.heads}, {"rel_error", err}, {"time_ms", ms}});
  }
  fmt::print("\n* = a planted key. rel. error = |out - full| / |full| over all heads. Times: median of 5 "
             "cold-cache steps, {} threads.\nadamas: fixed thresholds (-10, 0, 10); adamas-cal: thresholds calibrated "
             "per KV head (key quartiles) and per query head.\n", omp_get_max_threads());
  if (!a.json.empty()) write_json(a.json, nlohmann::json{{"command", "demo"}, {"rows", rows}});
  return 0;
}

}  // namespace adamas::app
