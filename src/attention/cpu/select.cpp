// Top-k selection over small integer distances: a counting pass and a compaction pass, O(n + max_distance).
#include <algorithm>
#include <bit>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "adamas/attention.h"
#include "attention/cpu/validate.h"

namespace adamas {

void validate_select(const SelectOptions& o) {
  ADAMAS_CHECK(o.budget > 0, ErrorKind::invalid_argument, "budget = {} (expected > 0)", o.budget);
  ADAMAS_CHECK(o.sink >= 0, ErrorKind::invalid_argument, "sink = {} is negative", o.sink);
  ADAMAS_CHECK(o.window >= 0, ErrorKind::invalid_argument, "window = {} is negative", o.window);
  ADAMAS_CHECK(o.sink + std::max<int64_t>(o.window, 1) <= o.budget, ErrorKind::invalid_argument,
               "sink ({}) + window ({}, at least the newest token) exceed the budget ({})", o.sink, o.window,
               o.budget);
}

namespace {

// Keeps the `need` smallest distances among the tokens `at(0..m)` (increasing token order), ties at the cut-off
// to the most recent, by a histogram over [0, max_distance]; appends them to out. Returns the number written.
template <class At>
int64_t select_among(const uint16_t* distances, At at, int64_t m, int64_t need, int max_distance, int32_t* out) {
  // 4 interleaved histograms, so equal neighbours do not serialize on one counter.
  thread_local std::vector<uint32_t> hist;
  const size_t bins = size_t(max_distance) + 1;
  hist.assign(4 * bins, 0);
  int64_t i = 0;
  for (; i + 4 <= m; i += 4)
    for (int u = 0; u < 4; ++u) ++hist[u * bins + distances[at(i + u)]];
  for (; i < m; ++i) ++hist[distances[at(i)]];
  // Cut-off: every distance < cut is kept, and the last `take` of the `ties` at cut.
  int64_t below = 0, cut = 0, take = 0, ties = 0;
  for (size_t b = 0; b < bins; ++b) {
    const int64_t c = int64_t(hist[b]) + hist[bins + b] + hist[2 * bins + b] + hist[3 * bins + b];
    if (below + c >= need) {
      cut = int64_t(b), take = need - below, ties = c;
      break;
    }
    below += c;
  }
  // Branch-free compaction: write every index, advance only over the kept ones (writes stay below `need`).
  int64_t count = 0, skip = ties - take;  // the oldest ties are dropped
  for (int64_t k = 0; k < m && count < need; ++k) {
    const int64_t j = at(k), d = distances[j];
    const bool tie = d == cut;
    const bool kept = d < cut || (tie && skip <= 0);
    skip -= tie;
    out[count] = int32_t(j);
    count += kept;
  }
  return count;
}

#if defined(__AVX2__)
// kLeftPack[m] lists the set bits of the byte m, lowest first: the lane order that packs 8 lanes selected by m.
struct LeftPackTable {
  alignas(32) int32_t lanes[256][8];
  constexpr LeftPackTable() : lanes{} {
    for (int m = 0; m < 256; ++m) {
      int k = 0;
      for (int b = 0; b < 8; ++b)
        if (m >> b & 1) lanes[m][k++] = b;
    }
  }
};
constexpr LeftPackTable kLeftPack;
#endif

// Writes to `out` (room for end - begin + 16) the tokens j in [begin, end) with distances[j] <= limit, in
// increasing order; returns their number and the largest distance seen in the range.
std::pair<int64_t, uint32_t> collect_at_most(const uint16_t* distances, int64_t begin, int64_t end, uint32_t limit,
                                             int32_t* out) {
  uint32_t largest = 0;
  int64_t count = 0;
  int64_t j = begin;
#if defined(__AVX2__)
  // 16 distances per step, branch-free: compare, then left-pack the passing token indices 8 at a time through a
  // permutation table (the hits are too irregular for branches to predict).
  const __m256i bound = _mm256_set1_epi16(int16_t(uint16_t(std::min<uint32_t>(limit, 65534) + 1)));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i top = _mm256_setzero_si256();
  for (; j + 16 <= end; j += 16) {
    const __m256i d = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(distances + j));
    top = _mm256_max_epu16(top, d);
    const __m256i above = _mm256_cmpeq_epi16(_mm256_min_epu16(d, bound), bound);  // d > limit
    // Bytes of the 16 lanes' results: tokens 0-7 in bits 0-7, tokens 8-15 in bits 16-23.
    const uint32_t keep = ~uint32_t(_mm256_movemask_epi8(_mm256_packs_epi16(above, above)));
    const uint32_t lo = keep & 0xff, hi = (keep >> 16) & 0xff;
    const __m256i base = _mm256_add_epi32(lane, _mm256_set1_epi32(int32_t(j)));
    const __m256i plo = _mm256_load_si256(reinterpret_cast<const __m256i*>(kLeftPack.lanes[lo]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + count), _mm256_permutevar8x32_epi32(base, plo));
    count += std::popcount(lo);
    const __m256i phi = _mm256_load_si256(reinterpret_cast<const __m256i*>(kLeftPack.lanes[hi]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + count),
                        _mm256_permutevar8x32_epi32(_mm256_add_epi32(base, _mm256_set1_epi32(8)), phi));
    count += std::popcount(hi);
  }
  alignas(32) uint16_t lanes[16];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), top);
  for (uint16_t x : lanes) largest = std::max<uint32_t>(largest, x);
#endif
  for (; j < end; ++j) {
    largest = std::max<uint32_t>(largest, distances[j]);
    out[count] = int32_t(j);
    count += distances[j] <= limit;
  }
  return {count, largest};
}

}  // namespace

int64_t select_topk(const uint16_t* distances, int64_t n, int max_distance, const SelectOptions& options,
                    int32_t* out) {
  validate_select(options);
  ADAMAS_CHECK(n >= 0, ErrorKind::invalid_argument, "select_topk: n = {} is negative", n);
  ADAMAS_CHECK(n <= INT32_MAX, ErrorKind::unsupported, "select_topk: {} tokens exceed int32 indices", n);
  ADAMAS_CHECK(max_distance >= 0 && max_distance < 65535, ErrorKind::invalid_argument,
               "select_topk: max_distance {} not in [0, 65534]", max_distance);
  if (n == 0) return 0;
  check_not_null(out, "select_topk: out");
  if (options.budget >= n) {  // everything fits: dense
    for (int64_t i = 0; i < n; ++i) out[i] = int32_t(i);
    return n;
  }
  check_not_null(distances, "select_topk: distances");
  // Forced tokens: [0, sink) and [tail, n). The free middle [sink, tail) competes for the rest of the budget.
  const int64_t sink = std::min(options.sink, n);
  const int64_t tail = std::max(sink, n - std::max<int64_t>(options.window, 1));
  const int64_t need = options.budget - sink - (n - tail);  // >= 0 by validate_select and budget < n
  const int64_t middle = tail - sink;

  // Candidates: the tokens at most a cut-off estimated from an even sample of the middle, set for about twice the
  // needed count. One vectorized pass finds them; the exact selection then runs over the candidates only. Where
  // the estimate falls short (or the middle is small), the candidates are the whole middle: same result.
  thread_local std::vector<int32_t> cand;
  if (int64_t(cand.size()) < middle + 16) cand.resize(size_t(middle + 16));  // + slack for 8-wide stores
  uint32_t limit = uint32_t(max_distance);
  constexpr int64_t kSample = 512;
  if (middle >= 8 * kSample && need * 8 <= middle) {
    thread_local std::vector<uint32_t> counts;
    counts.assign(size_t(max_distance) + 2, 0);
    for (int64_t i = 0; i < kSample; ++i)
      ++counts[std::min<uint32_t>(distances[sink + i * middle / kSample], uint32_t(max_distance) + 1)];
    const int64_t target = 2 * need * kSample / middle + 8;
    int64_t seen = 0;
    for (uint32_t b = 0; b <= uint32_t(max_distance); ++b)
      if ((seen += counts[b]) >= target) {
        limit = b;
        break;
      }
  }
  const auto [found, largest] = collect_at_most(distances, sink, tail, limit, cand.data());
  ADAMAS_CHECK(largest <= uint32_t(max_distance), ErrorKind::invalid_argument,
               "select_topk: distance {} exceeds max_distance {}", largest, max_distance);

  int64_t count = 0;
  for (int64_t s = 0; s < sink; ++s) out[count++] = int32_t(s);
  if (found >= need) {
    count += select_among(distances, [&](int64_t k) { return int64_t(cand[k]); }, found, need, max_distance,
                          out + count);
  } else {
    count += select_among(distances, [&](int64_t k) { return sink + k; }, middle, need, max_distance, out + count);
  }
  for (int64_t j = tail; j < n; ++j) out[count++] = int32_t(j);
  return count;
}

}  // namespace adamas
