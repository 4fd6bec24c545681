// The Adamas estimate: exact L1 (Manhattan) distance between packed 2-bit codes, without unpacking.
//
// For one 2-bit field, a = 2*a1 + a0 (query) and b = 2*b1 + b0 (key), with x = a ^ b:
//   |a - b| = x0 + 2*x1 - 2*[x0 & x1 & (a0 ^ a1)]
// (if the high bits agree the distance is x0; if they differ it is 2 + x0 or 2 - x0, the sign set by a0 ^ a1).
// So clearing the high bit of x wherever x0 & x1 & (a0 ^ a1) turns |a - b| into "low bits count 1, high bits
// count 2" of the remaining x, which popcounts (or a 16-entry nibble table) give for 32 or 128 fields at once.
// The mask m = (a ^ (a >> 1)) & 0b01010101 depends on the query only and is computed once per query.
#include "attention/cpu/estimate.h"

#include <bit>
#include <cstring>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "adamas/attention.h"
#include "attention/cpu/validate.h"

namespace adamas {
namespace detail {
namespace {

constexpr uint64_t kLow = 0x5555555555555555ull;   // the low bit of every field
constexpr uint64_t kHigh = 0xAAAAAAAAAAAAAAAAull;  // the high bit of every field

inline uint64_t load_word(const uint8_t* p, int64_t bytes) {
  uint64_t w = 0;
  std::memcpy(&w, p, size_t(bytes < 8 ? bytes : 8));
  return w;
}

inline unsigned l1_word(uint64_t q, uint64_t qm, uint64_t k) {
  uint64_t x = q ^ k;
  const uint64_t t = (x >> 1) & x & qm;  // fields where a and b are {1,2} or {2,1}: distance 1, not 3
  x &= ~(t << 1);
  return unsigned(std::popcount(x) + std::popcount(x & kHigh));
}

inline uint64_t query_mask(uint64_t q) { return (q ^ (q >> 1)) & kLow; }

}  // namespace

void l1_group_words(const uint8_t* queries, int64_t n_queries, const uint8_t* keys, int64_t key_stride, int64_t n,
                    int64_t bytes, uint16_t* out, int64_t out_stride) {
  const int64_t words = (bytes + 7) / 8;  // bytes is 4 or a multiple of 8
  std::vector<uint64_t> q(size_t(n_queries * words)), qm(q.size());
  for (int64_t h = 0; h < n_queries; ++h)
    for (int64_t w = 0; w < words; ++w) {
      q[h * words + w] = load_word(queries + h * bytes + 8 * w, bytes - 8 * w);
      qm[h * words + w] = query_mask(q[h * words + w]);
    }
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* key = keys + j * key_stride;
    uint64_t kw[64];
    for (int64_t w = 0; w < words; ++w) kw[w] = load_word(key + 8 * w, bytes - 8 * w);
    for (int64_t h = 0; h < n_queries; ++h) {
      unsigned d = 0;
      for (int64_t w = 0; w < words; ++w) d += l1_word(q[h * words + w], qm[h * words + w], kw[w]);
      out[h * out_stride + j] = uint16_t(d);
    }
  }
}

#if defined(__AVX2__)
namespace {

// Per byte: the L1 distance of its 4 fields (0..12).
inline __m256i byte_l1(__m256i q, __m256i qm, __m256i k) {
  // Weight of a nibble when low bits count 1 and high bits count 2.
  const __m256i weights = _mm256_setr_epi8(0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6,  //
                                           0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6);
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  __m256i x = _mm256_xor_si256(q, k);
  // 16-bit shift: the bit that crosses a byte boundary lands on bit 7, which qm (0b01010101) clears.
  const __m256i t = _mm256_and_si256(_mm256_and_si256(_mm256_srli_epi16(x, 1), x), qm);
  x = _mm256_andnot_si256(_mm256_add_epi8(t, t), x);
  const __m256i lo = _mm256_and_si256(x, nibble);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), nibble);
  return _mm256_add_epi8(_mm256_shuffle_epi8(weights, lo), _mm256_shuffle_epi8(weights, hi));
}

// The per-query mask (a ^ (a >> 1)) & 0b01010101 of every code byte.
std::vector<uint8_t> query_masks(const uint8_t* queries, int64_t n) {
  std::vector<uint8_t> m(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) m[i] = uint8_t((queries[i] ^ (queries[i] >> 1)) & 0x55);
  return m;
}

// Codes of 32*C bytes (d = 128 C): C vectors per key; 4 keys per iteration, their 4 lane sums packed into 16-bit
// fields of one 64-bit lane, so one horizontal add yields 4 distances. C is a template parameter so the chunk loop
// unrolls and every partial sum stays in a register.
template <int C>
void group_wide(const uint8_t* queries, int64_t n_queries, const uint8_t* keys, int64_t key_stride, int64_t n,
                uint16_t* out, int64_t out_stride) {
  constexpr int64_t bytes = 32 * C;
  const std::vector<uint8_t> masks = query_masks(queries, n_queries * bytes);
  auto vec = [](const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); };
  const __m256i zero = _mm256_setzero_si256();
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const uint8_t* k0 = keys + j * key_stride;
    __m256i kv[4][C];
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < C; ++c) kv[r][c] = vec(k0 + r * key_stride + 32 * c);
    for (int64_t h = 0; h < n_queries; ++h) {
      __m256i sums[4];
      for (int r = 0; r < 4; ++r) {
        __m256i acc = byte_l1(vec(queries + h * bytes), vec(masks.data() + h * bytes), kv[r][0]);
        for (int c = 1; c < C; ++c)  // <= 12 * C <= 48 per byte
          acc = _mm256_add_epi8(acc, byte_l1(vec(queries + h * bytes + 32 * c), vec(masks.data() + h * bytes + 32 * c),
                                             kv[r][c]));
        sums[r] = _mm256_sad_epu8(acc, zero);  // 4 lanes of <= 8 * 48
      }
      __m256i packed = _mm256_or_si256(
          _mm256_or_si256(sums[0], _mm256_slli_epi64(sums[1], 16)),
          _mm256_or_si256(_mm256_slli_epi64(sums[2], 32), _mm256_slli_epi64(sums[3], 48)));
      __m128i s = _mm_add_epi16(_mm256_castsi256_si128(packed), _mm256_extracti128_si256(packed, 1));
      s = _mm_add_epi16(s, _mm_unpackhi_epi64(s, s));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + h * out_stride + j), s);
    }
  }
  if (j < n)
    l1_group_words(queries, n_queries, keys + j * key_stride, key_stride, n - j, bytes, out + j, out_stride);
}

// 16-byte codes (d = 64): two keys per vector, the query repeated in both halves.
void group_d64(const uint8_t* queries, int64_t n_queries, const uint8_t* keys, int64_t key_stride, int64_t n,
               uint16_t* out, int64_t out_stride) {
  const std::vector<uint8_t> masks = query_masks(queries, n_queries * 16);
  auto twice = [](const uint8_t* p) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_set_m128i(x, x);
  };
  const __m256i zero = _mm256_setzero_si256();
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const uint8_t* k0 = keys + j * key_stride;
    const __m256i kab = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(k0 + key_stride),
                                            reinterpret_cast<const __m128i*>(k0));
    const __m256i kcd = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(k0 + 3 * key_stride),
                                            reinterpret_cast<const __m128i*>(k0 + 2 * key_stride));
    for (int64_t h = 0; h < n_queries; ++h) {
      const __m256i q = twice(queries + 16 * h), qm = twice(masks.data() + 16 * h);
      const __m256i sab = _mm256_sad_epu8(byte_l1(q, qm, kab), zero);  // lanes A A B B
      const __m256i scd = _mm256_sad_epu8(byte_l1(q, qm, kcd), zero);  // lanes C C D D
      __m256i t = _mm256_or_si256(sab, _mm256_slli_epi64(scd, 32));
      t = _mm256_add_epi64(t, _mm256_shuffle_epi32(t, 0x4E));  // lane 0: A | C << 32, lane 2: B | D << 32
      const uint64_t ac = uint64_t(_mm256_extract_epi64(t, 0)), bd = uint64_t(_mm256_extract_epi64(t, 2));
      uint16_t* o = out + h * out_stride + j;
      o[0] = uint16_t(ac), o[1] = uint16_t(bd), o[2] = uint16_t(ac >> 32), o[3] = uint16_t(bd >> 32);
    }
  }
  if (j < n) l1_group_words(queries, n_queries, keys + j * key_stride, key_stride, n - j, 16, out + j, out_stride);
}

}  // namespace
#endif

void l1_group_simd(const uint8_t* queries, int64_t n_queries, const uint8_t* keys, int64_t key_stride, int64_t n,
                   int64_t bytes, uint16_t* out, int64_t out_stride) {
#if defined(__AVX2__)
  if (bytes == 32) return group_wide<1>(queries, n_queries, keys, key_stride, n, out, out_stride);
  if (bytes == 64) return group_wide<2>(queries, n_queries, keys, key_stride, n, out, out_stride);
  if (bytes == 128) return group_wide<4>(queries, n_queries, keys, key_stride, n, out, out_stride);
  if (bytes == 16) return group_d64(queries, n_queries, keys, key_stride, n, out, out_stride);
#endif
  l1_group_words(queries, n_queries, keys, key_stride, n, bytes, out, out_stride);
}

}  // namespace detail

void l1_distances_group(const uint8_t* query_codes, int64_t n_queries, const CodesView& keys, int64_t head,
                        int64_t begin, int64_t end, uint16_t* out, int64_t out_stride) {
  check_dim(keys.dim, "l1_distances: codes");
  check_not_null(query_codes, "l1_distances: query codes");
  ADAMAS_CHECK(n_queries > 0, ErrorKind::invalid_argument, "l1_distances: n_queries = {} (expected > 0)", n_queries);
  ADAMAS_CHECK(0 <= head && head < keys.heads, ErrorKind::invalid_argument, "l1_distances: head {} not in [0, {})",
               head, keys.heads);
  ADAMAS_CHECK(0 <= begin && begin <= end && end <= keys.tokens, ErrorKind::invalid_argument,
               "l1_distances: token range [{}, {}) is outside the {} codes", begin, end, keys.tokens);
  if (end == begin) return;
  check_codes(keys, keys.heads, end, keys.dim, "l1_distances: codes");
  check_not_null(out, "l1_distances: out");
  ADAMAS_CHECK(n_queries == 1 || out_stride >= end - begin, ErrorKind::shape_mismatch,
               "l1_distances: out_stride {} < {} keys", out_stride, end - begin);
  detail::l1_group_simd(query_codes, n_queries, keys.row(head, begin), keys.token_stride, end - begin,
                        code_bytes(keys.dim), out, out_stride);
}

void l1_distances(const uint8_t* query_code, const CodesView& keys, int64_t head, uint16_t* out) {
  l1_distances_group(query_code, 1, keys, head, 0, keys.tokens, out, keys.tokens);
}

}  // namespace adamas
