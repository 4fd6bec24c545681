// Top-k selection over small integer distances: a counting pass and a compaction pass, O(n + max_distance).
#include <algorithm>
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

int64_t select_topk(const uint16_t* distances, int64_t n, int max_distance, const SelectOptions& options,
                    int32_t* out) {
  validate_select(options);
  ADAMAS_CHECK(n >= 0, ErrorKind::invalid_argument, "select_topk: n = {} is negative", n);
  ADAMAS_CHECK(n <= INT32_MAX, ErrorKind::unsupported, "select_topk: {} tokens exceed int32 indices", n);
  ADAMAS_CHECK(max_distance >= 0 && max_distance < 65536, ErrorKind::invalid_argument,
               "select_topk: max_distance {} not in [0, 65535]", max_distance);
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

  // Histogram of the middle, in 4 interleaved copies so equal neighbours do not serialize on one counter.
  thread_local std::vector<uint32_t> hist;
  // The last bin counts distances above max_distance (a caller's error, reported below, never a stray write).
  const size_t bins = size_t(max_distance) + 2;
  const uint32_t over = uint32_t(max_distance) + 1;
  hist.assign(4 * bins, 0);
  int64_t i = sink;
  for (; i + 4 <= tail; i += 4) {
    ++hist[std::min<uint32_t>(distances[i], over)];
    ++hist[bins + std::min<uint32_t>(distances[i + 1], over)];
    ++hist[2 * bins + std::min<uint32_t>(distances[i + 2], over)];
    ++hist[3 * bins + std::min<uint32_t>(distances[i + 3], over)];
  }
  for (; i < tail; ++i) ++hist[std::min<uint32_t>(distances[i], over)];
  ADAMAS_CHECK(hist[over] + hist[bins + over] + hist[2 * bins + over] + hist[3 * bins + over] == 0,
               ErrorKind::invalid_argument, "select_topk: a distance exceeds max_distance {}", max_distance);
  // Cut-off T: all distances < T are kept, and `take` of those == T (the most recent ones).
  int64_t below = 0, cut = 0, take = 0, ties = 0;
  for (size_t b = 0; b <= size_t(max_distance); ++b) {
    const int64_t c = int64_t(hist[b]) + hist[bins + b] + hist[2 * bins + b] + hist[3 * bins + b];
    if (below + c >= need) {
      cut = int64_t(b), take = need - below, ties = c;
      break;
    }
    below += c;
  }
  int64_t count = 0;
  for (int64_t s = 0; s < sink; ++s) out[count++] = int32_t(s);
  int64_t skip = ties - take;  // the oldest ties are dropped
  auto keep = [&](int64_t j) {
    const int64_t d = distances[j];
    if (d < cut) {
      out[count++] = int32_t(j);
    } else if (d == cut) {
      if (skip > 0) --skip; else out[count++] = int32_t(j);
    }
  };
  int64_t j = sink;
#if defined(__AVX2__)
  // Few tokens pass (budget out of n): test 16 distances at once and only look closer where one is <= cut.
  const __m256i limit = _mm256_set1_epi16(int16_t(std::min<int64_t>(cut + 1, 32767)));
  for (; j + 16 <= tail; j += 16) {
    const __m256i d = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(distances + j));
    if (cut >= 32767 || _mm256_movemask_epi8(_mm256_cmpgt_epi16(limit, d)) != 0)
      for (int64_t u = j; u < j + 16; ++u) keep(u);
  }
#endif
  for (; j < tail; ++j) keep(j);
  for (int64_t j = tail; j < n; ++j) out[count++] = int32_t(j);
  return count;
}

}  // namespace adamas
