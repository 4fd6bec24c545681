// One decode step of one layer for every method, in three timed phases: estimate, select, attend.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string_view>

#include "adamas/attention.h"
#include "attention/cpu/rows_attention.h"
#include "attention/cpu/validate.h"

namespace adamas {

const char* method_name(Method m) {
  switch (m) {
    case Method::full: return "full";
    case Method::adamas: return "adamas";
    case Method::quest: return "quest";
    case Method::streaming: return "streaming";
  }
  return "?";
}

Method parse_method(const char* name) {
  const std::string_view s = name ? name : "";
  for (Method m : {Method::full, Method::adamas, Method::quest, Method::streaming})
    if (s == method_name(m)) return m;
  fail(ErrorKind::invalid_argument, "unknown attention method '{}' (expected full, adamas, quest or streaming)", s);
}

const char* group_selection_name(GroupSelection g) {
  switch (g) {
    case GroupSelection::per_head: return "per-head";
    case GroupSelection::shared_sum: return "shared-sum";
    case GroupSelection::shared_union: return "shared-union";
  }
  return "?";
}

void validate_config(const AttentionConfig& c) {
  ADAMAS_CHECK(c.budget > 0, ErrorKind::invalid_argument, "budget = {} (expected > 0)", c.budget);
  ADAMAS_CHECK(c.dense_below >= 0, ErrorKind::invalid_argument, "dense_below = {} (expected >= 0)", c.dense_below);
  if (c.method == Method::adamas) {
    validate_select({c.budget, c.sink, c.window});
    validate_thresholds(c.thresholds);
  }
  if (c.method == Method::streaming)
    ADAMAS_CHECK(0 <= c.streaming_sink && c.streaming_sink < c.budget, ErrorKind::invalid_argument,
                 "streaming_sink = {} must be in [0, budget = {})", c.streaming_sink, c.budget);
}

struct DecodeWorkspace::State {
  std::vector<uint8_t> query_codes;   // [n_heads][dim / 4]
  std::vector<uint16_t> distances;    // [n_heads][tokens], then per group sums for shared_sum
  std::vector<int32_t> selected;      // concatenated selections
  std::vector<int64_t> offset, count; // per query head: its rows in `selected`
  std::vector<std::vector<int32_t>> scratch;  // per selection unit
};

DecodeWorkspace::DecodeWorkspace() : state_(std::make_unique<State>()) {}
DecodeWorkspace::~DecodeWorkspace() = default;
DecodeWorkspace::DecodeWorkspace(DecodeWorkspace&&) noexcept = default;
DecodeWorkspace& DecodeWorkspace::operator=(DecodeWorkspace&&) noexcept = default;

std::span<const int32_t> last_selection(const DecodeWorkspace& workspace, int64_t head) {
  auto& s = const_cast<DecodeWorkspace&>(workspace).state();
  ADAMAS_CHECK(0 <= head && head < int64_t(s.offset.size()), ErrorKind::invalid_argument,
               "last_selection: head {} not in [0, {})", head, s.offset.size());
  return {s.selected.data() + s.offset[head], size_t(s.count[head])};
}

namespace {

// Lays the per-unit selections (one unit = a head, or a group when shared) out in `selected`, and points each
// query head at its unit's rows.
void publish(DecodeWorkspace::State& s, int64_t n_heads, int64_t heads_per_unit) {
  const int64_t units = n_heads / heads_per_unit;
  s.selected.clear();
  s.offset.assign(size_t(n_heads), 0);
  s.count.assign(size_t(n_heads), 0);
  for (int64_t u = 0; u < units; ++u) {
    const int64_t off = int64_t(s.selected.size());
    s.selected.insert(s.selected.end(), s.scratch[u].begin(), s.scratch[u].end());
    for (int64_t h = u * heads_per_unit; h < (u + 1) * heads_per_unit; ++h)
      s.offset[h] = off, s.count[h] = int64_t(s.scratch[u].size());
  }
}

// Sorted union of the g sorted selections that follow `first`.
std::vector<int32_t> sorted_union(const std::vector<std::vector<int32_t>>& parts, int64_t first, int64_t g) {
  std::vector<int32_t> all;
  for (int64_t i = first; i < first + g; ++i) all.insert(all.end(), parts[i].begin(), parts[i].end());
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  return all;
}

void adamas_select(const DecodeInputs& in, const AttentionConfig& c, DecodeWorkspace::State& s, int64_t g,
                   DecodeTimings& t) {
  const HeadsView& k = in.k;
  const int64_t n = k.tokens, dim = k.dim, cb = code_bytes(dim), kvh = k.heads;
  double t0 = omp_get_wtime();
  // Estimate: query codes, then distances for every (query head, token), each code row read once per group.
  s.query_codes.resize(size_t(in.n_heads * cb));
  for (int64_t h = 0; h < in.n_heads; ++h) {
    const Thresholds& th = in.query_thresholds.empty() ? c.thresholds : in.query_thresholds[h];
    encode_vector(in.q + h * dim, DType::f32, dim, th, s.query_codes.data() + h * cb);
  }
  s.distances.resize(size_t(in.n_heads * n));
  const int64_t chunk = 4096;
  const int64_t chunks = (n + chunk - 1) / chunk;
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
  for (int64_t head = 0; head < kvh; ++head)
    for (int64_t ci = 0; ci < chunks; ++ci) {
      const int64_t b = ci * chunk, e = std::min(n, b + chunk);
      l1_distances_group(s.query_codes.data() + head * g * cb, g, in.codes, head, b, e,
                         s.distances.data() + head * g * n + b, n);
    }
  int max_distance = max_l1_distance(dim);
  int64_t units = in.n_heads;
  if (c.group == GroupSelection::shared_sum) {  // sum each group's rows into its first row
    units = kvh;
    max_distance *= int(g);
#pragma omp parallel for
    for (int64_t head = 0; head < kvh; ++head) {
      uint16_t* dst = s.distances.data() + head * g * n;
      for (int64_t r = 1; r < g; ++r) {
        const uint16_t* src = dst + r * n;
        for (int64_t j = 0; j < n; ++j) dst[j] = uint16_t(dst[j] + src[j]);
      }
    }
  }
  double t1 = omp_get_wtime();
  t.estimate_s += t1 - t0;
  // Select: per unit (query head, or group for shared_sum).
  const int64_t unit_heads = in.n_heads / units;
  s.scratch.resize(size_t(in.n_heads));
  const SelectOptions opts{c.budget, c.sink, c.window};
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t u = 0; u < units; ++u) {
    auto& sel = s.scratch[u];
    sel.resize(size_t(std::min(c.budget, n)));
    const int64_t m = select_topk(s.distances.data() + u * unit_heads * n, n, max_distance, opts, sel.data());
    sel.resize(static_cast<size_t>(m));
  }
  if (c.group == GroupSelection::shared_union) {
    // Group `head` reads entries [head * g, head * g + g) and writes entry head <= head * g: never one still unread.
    for (int64_t head = 0; head < kvh; ++head) s.scratch[head] = sorted_union(s.scratch, head * g, g);
    units = kvh;
  }
  publish(s, in.n_heads, in.n_heads / units);
  t.select_s += omp_get_wtime() - t1;
}

void quest_or_streaming_select(const DecodeInputs& in, const AttentionConfig& c, DecodeWorkspace::State& s,
                               DecodeTimings& t) {
  const double t0 = omp_get_wtime();
  const int64_t n = in.k.tokens, g = in.n_heads / in.k.heads;
  if (c.method == Method::streaming) {  // one selection for all heads: sinks and the most recent window
    s.scratch.resize(1);
    auto& sel = s.scratch[0];
    sel.resize(size_t(c.budget));
    std::iota(sel.begin(), sel.begin() + c.streaming_sink, 0);
    std::iota(sel.begin() + c.streaming_sink, sel.end(), int32_t(n - (c.budget - c.streaming_sink)));
    publish(s, in.n_heads, in.n_heads);
  } else {
    s.scratch.resize(size_t(in.n_heads));
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t h = 0; h < in.n_heads; ++h)
      quest_select(in.q + h * in.k.dim, in.pages, h / g, n, c.budget, s.scratch[h]);
    publish(s, in.n_heads, 1);
  }
  t.select_s += omp_get_wtime() - t0;
}

// Attend each query head over its rows; heads of a group that share their rows attend together, reading each
// K/V row once.
void attend_selected(const DecodeInputs& in, DecodeWorkspace::State& s, int64_t g, float* out, DecodeTimings& t) {
  const double t0 = omp_get_wtime();
  const int64_t dim = in.k.dim;
  const float scale = 1.0f / std::sqrt(float(dim));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < in.n_heads; ++h) {
    const int64_t first = h - h % g;
    const bool leads = h == first;
    const bool shared = g > 1 && s.offset[first] == s.offset[first + g - 1];  // the group has one selection
    if (shared && !leads) continue;  // the group's first head attends for all of them
    const int64_t rows = shared ? g : 1;
    RowsAttention att(in.q + h * dim, dim, rows, dim, scale);
    att.add_indices(in.k, in.v, h / g, s.selected.data() + s.offset[h], s.count[h]);
    att.finish(out + h * dim, dim);
  }
  for (int64_t h = 0; h < in.n_heads; ++h) t.attended_rows += s.count[h];
  t.attend_s += omp_get_wtime() - t0;
}

}  // namespace

void decode_attention(const DecodeInputs& in, const AttentionConfig& c, DecodeWorkspace& workspace, float* out,
                      DecodeTimings* timings) {
  validate_config(c);
  check_heads(in.k, "decode_attention: k");
  check_heads(in.v, "decode_attention: v");
  ADAMAS_CHECK(in.k.heads == in.v.heads && in.k.tokens == in.v.tokens && in.k.dim == in.v.dim,
               ErrorKind::shape_mismatch, "decode_attention: K [{}, {}, {}] and V [{}, {}, {}] differ", in.k.heads,
               in.k.tokens, in.k.dim, in.v.heads, in.v.tokens, in.v.dim);
  ADAMAS_CHECK(in.k.tokens > 0, ErrorKind::invalid_argument, "decode_attention: the cache is empty");
  ADAMAS_CHECK(in.n_heads > 0 && in.n_heads % in.k.heads == 0, ErrorKind::shape_mismatch,
               "decode_attention: {} query heads is not a positive multiple of the {} KV heads", in.n_heads,
               in.k.heads);
  check_not_null(in.q, "decode_attention: q");
  check_not_null(out, "decode_attention: out");
  const int64_t n = in.k.tokens, g = in.n_heads / in.k.heads;
  const bool dense = attends_every_token(c, n);
  if (!dense && c.method == Method::adamas) {
    check_codes(in.codes, in.k.heads, n, in.k.dim, "decode_attention: codes");
    ADAMAS_CHECK(in.query_thresholds.empty() || int64_t(in.query_thresholds.size()) == in.n_heads,
                 ErrorKind::shape_mismatch, "decode_attention: {} query thresholds for {} query heads",
                 in.query_thresholds.size(), in.n_heads);
    for (const Thresholds& th : in.query_thresholds) validate_thresholds(th);
    ADAMAS_CHECK(c.group != GroupSelection::shared_sum || max_l1_distance(in.k.dim) * g < 65535,
                 ErrorKind::unsupported, "decode_attention: summed distances of {} heads of dim {} overflow 16 bits",
                 g, in.k.dim);
  }
  DecodeTimings local;
  DecodeTimings& t = timings ? *timings : local;
  auto& s = workspace.state();
  if (dense) {
    const double t0 = omp_get_wtime();
    attend_dense_decode(in.q, in.n_heads, in.k, in.v, 1.0f / std::sqrt(float(in.k.dim)), out);
    t.attend_s += omp_get_wtime() - t0;
    t.attended_rows += n * in.n_heads;
    // Every head attended every row: record that without allocating per step (the buffer only grows).
    if (int64_t(s.selected.size()) < n) s.selected.resize(size_t(n));
    std::iota(s.selected.begin(), s.selected.begin() + n, 0);
    s.offset.assign(size_t(in.n_heads), 0);
    s.count.assign(size_t(in.n_heads), n);
    return;
  }
  if (c.method == Method::adamas) adamas_select(in, c, s, g, t);
  else quest_or_streaming_select(in, c, s, t);
  attend_selected(in, s, g, out, t);
}

}  // namespace adamas
