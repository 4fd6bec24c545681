// Exact softmax attention: over selected rows (sparse decode), over all rows (dense decode, split over tokens),
// and causal over many queries (prefill). All three run the same RowsAttention inner loop.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "adamas/attention.h"
#include "attention/cpu/rows_attention.h"
#include "attention/cpu/validate.h"

namespace adamas {

namespace {

void check_kv(const HeadsView& k, const HeadsView& v, const char* where) {
  check_heads(k, where);
  check_heads(v, where);
  ADAMAS_CHECK(k.heads == v.heads && k.tokens == v.tokens && k.dim == v.dim, ErrorKind::shape_mismatch,
               "{}: K is [{} heads, {} tokens, dim {}] but V is [{}, {}, {}]", where, k.heads, k.tokens, k.dim,
               v.heads, v.tokens, v.dim);
}

int64_t group_size(int64_t n_heads, const HeadsView& k, const char* where) {
  ADAMAS_CHECK(n_heads > 0 && n_heads % k.heads == 0, ErrorKind::shape_mismatch,
               "{}: {} query heads is not a positive multiple of the {} KV heads", where, n_heads, k.heads);
  return n_heads / k.heads;
}

}  // namespace

void attend_rows(const float* q, const HeadsView& k, const HeadsView& v, int64_t head, const int32_t* rows,
                 int64_t n_rows, float scale, float* out) {
  check_kv(k, v, "attend_rows");
  check_not_null(q, "attend_rows: q");
  check_not_null(out, "attend_rows: out");
  ADAMAS_CHECK(0 <= head && head < k.heads, ErrorKind::invalid_argument, "attend_rows: head {} not in [0, {})", head,
               k.heads);
  ADAMAS_CHECK(n_rows > 0, ErrorKind::invalid_argument, "attend_rows: no rows to attend (n_rows = {})", n_rows);
  check_not_null(rows, "attend_rows: rows");
  for (int64_t j = 0; j < n_rows; ++j)
    ADAMAS_CHECK(0 <= rows[j] && rows[j] < k.tokens, ErrorKind::invalid_argument,
                 "attend_rows: row index {} not in [0, {})", rows[j], k.tokens);
  RowsAttention att(q, k.dim, 1, k.dim, scale);
  att.add_indices(k, v, head, rows, n_rows);
  att.finish(out, k.dim);
}

void attend_dense_decode(const float* q, int64_t n_heads, const HeadsView& k, const HeadsView& v, float scale,
                         float* out) {
  check_kv(k, v, "attend_dense_decode");
  check_not_null(q, "attend_dense_decode: q");
  check_not_null(out, "attend_dense_decode: out");
  ADAMAS_CHECK(k.tokens > 0, ErrorKind::invalid_argument, "attend_dense_decode: the cache is empty");
  const int64_t g = group_size(n_heads, k, "attend_dense_decode");
  const int64_t dim = k.dim;
  // Split each KV head's tokens so every thread has several items; each item serves the whole query group, so
  // every K/V row is read once per step (flash-decoding).
  const int64_t threads = omp_get_max_threads();
  const int64_t splits =
      std::clamp<int64_t>((4 * threads + k.heads - 1) / k.heads, 1, std::max<int64_t>(1, k.tokens / 512));
  const int64_t chunk = (k.tokens + splits - 1) / splits;
  const int64_t items = k.heads * splits;
  // Partial states per (item, group row): max, sum, accumulator.
  std::vector<float> pm(size_t(items * g)), pl(pm.size()), pacc(size_t(items * g * dim));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t kvh = item / splits, s = item % splits;
    const int64_t begin = s * chunk, end = std::min(k.tokens, begin + chunk);
    RowsAttention att(q + kvh * g * dim, dim, g, dim, scale);
    if (begin < end) att.add_range(k, v, kvh, begin, end);
    for (int64_t r = 0; r < g; ++r) {
      // Stored as [kv head][group row][split] so the merge reads each row's splits contiguously.
      const int64_t slot = (kvh * g + r) * splits + s;
      pm[slot] = att.max(r);
      pl[slot] = att.sum(r);
      std::copy(att.acc(r), att.acc(r) + dim, pacc.begin() + slot * dim);
    }
  }
  for (int64_t h = 0; h < n_heads; ++h)
    merge_partials(splits, &pm[h * splits], &pl[h * splits], &pacc[h * splits * dim], dim, dim, out + h * dim);
}

void attend_dense_causal(const float* q, int64_t n_queries, int64_t n_heads, int64_t q_stride, const HeadsView& k,
                         const HeadsView& v, float scale, float* out, int64_t out_stride) {
  check_kv(k, v, "attend_dense_causal");
  check_not_null(q, "attend_dense_causal: q");
  check_not_null(out, "attend_dense_causal: out");
  const int64_t g = group_size(n_heads, k, "attend_dense_causal");
  const int64_t dim = k.dim;
  ADAMAS_CHECK(n_queries > 0 && n_queries <= k.tokens, ErrorKind::invalid_argument,
               "attend_dense_causal: {} queries for a cache of {} tokens (expected 1..tokens)", n_queries, k.tokens);
  ADAMAS_CHECK(q_stride >= n_heads * dim && out_stride >= n_heads * dim, ErrorKind::shape_mismatch,
               "attend_dense_causal: q_stride {} / out_stride {} < n_heads * dim = {}", q_stride, out_stride,
               n_heads * dim);
  constexpr int64_t kQueryBlock = 16;  // queries sharing each loaded K/V block
  const int64_t first_pos = k.tokens - n_queries;
  const int64_t qblocks = (n_queries + kQueryBlock - 1) / kQueryBlock;
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
  for (int64_t qb = qblocks - 1; qb >= 0; --qb) {  // longest blocks first, for balance
    for (int64_t kvh = 0; kvh < k.heads; ++kvh) {
      const int64_t i0 = qb * kQueryBlock, i1 = std::min(n_queries, i0 + kQueryBlock);
      const int64_t rows = (i1 - i0) * g;
      std::vector<float> qrows(size_t(rows * dim)), orows(qrows.size());
      std::vector<int64_t> limits(static_cast<size_t>(rows));
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t r = 0; r < g; ++r) {
          const int64_t row = (i - i0) * g + r;
          const float* src = q + i * q_stride + (kvh * g + r) * dim;
          std::copy(src, src + dim, qrows.begin() + row * dim);
          limits[row] = first_pos + i;
        }
      RowsAttention att(qrows.data(), dim, rows, dim, scale, limits.data());
      att.add_range(k, v, kvh, 0, first_pos + i1);
      att.finish(orows.data(), dim);
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t r = 0; r < g; ++r)
          std::copy_n(orows.begin() + ((i - i0) * g + r) * dim, dim, out + i * out_stride + (kvh * g + r) * dim);
    }
  }
}

}  // namespace adamas
