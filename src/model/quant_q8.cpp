// Integer dot products of quantized weight blocks with 8-bit activations (see quant.h): the activation quantizer,
// the portable scalar kernel, and the AVX2 kernels that multiply a tile of weight rows by a tile of tokens.
#include <algorithm>
#include <cmath>
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define ADAMAS_Q8_AVX2 1
#endif

#include "core/check.h"
#include "core/dtype.h"
#include "model/quant.h"
#include "model/quant_blocks.h"

namespace adamas {
namespace {

using namespace quant;  // the block layouts

constexpr int64_t kQ8 = 32;  // activations per BlockQ8

inline float round_to_f16(float v) { return f16_to_f32(f32_to_f16(v)); }

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// The block size of a type with an integer kernel, after checking n (the public functions' argument check).
int64_t checked_block_size(GgmlType type, int64_t n, const char* op) {
  const GgmlTypeInfo& info = ggml_type_info(type);
  ADAMAS_CHECK(has_q8_dot(type), ErrorKind::unsupported, "{}: weight type {} has no 8-bit integer kernel", op,
               info.name);
  ADAMAS_CHECK(n >= 0 && n % info.block_size == 0, ErrorKind::invalid_argument,
               "{}: row length {} is not a multiple of the {} block size {}", op, n, info.name, info.block_size);
  return info.block_size;
}

// ---------------------------------------------------------------------------------------------------------------
// Scalar path: each weight block is decoded to integer sub-blocks of 32, w[i] = dw * sc[i / 16] * v[i] + mw, whose
// integer products with the activations' qs are exact; the floats only scale and sum them.
// ---------------------------------------------------------------------------------------------------------------

struct IntSub {
  int8_t v[32];
  int sc[2];
  float dw, mw;
};

// Weight block i of the row -> its 32-element sub-blocks (1 for the 32-blocks, 8 for the K-quants); returns how many.
int decode_int(GgmlType type, const void* row, int64_t i, IntSub* out) {
  auto nibbles = [](const uint8_t* qs, int offset, IntSub& s) {  // byte j: element j (low), j + 16 (high)
    for (int j = 0; j < 16; ++j) {
      s.v[j] = int8_t((qs[j] & 0xF) - offset);
      s.v[j + 16] = int8_t((qs[j] >> 4) - offset);
    }
  };
  switch (type) {
    case GgmlType::Q4_0: {
      const auto b = load_block<BlockQ4_0>(row, i);
      out[0] = {{}, {1, 1}, f16_to_f32(b.d), 0.0f};
      nibbles(b.qs, 8, out[0]);
      return 1;
    }
    case GgmlType::Q4_1: {
      const auto b = load_block<BlockQ4_1>(row, i);
      out[0] = {{}, {1, 1}, f16_to_f32(b.d), f16_to_f32(b.m)};
      nibbles(b.qs, 0, out[0]);
      return 1;
    }
    case GgmlType::Q8_0: {
      const auto b = load_block<BlockQ8_0>(row, i);
      out[0] = {{}, {1, 1}, f16_to_f32(b.d), 0.0f};
      std::memcpy(out[0].v, b.qs, 32);
      return 1;
    }
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      // Q5_K is Q4_K plus a fifth bit per element from qh (bit 2j of qh[l] for sub-block 2j, ...).
      const bool five = type == GgmlType::Q5_K;
      const auto b4 = five ? BlockQ4_K{} : load_block<BlockQ4_K>(row, i);
      const auto b5 = five ? load_block<BlockQ5_K>(row, i) : BlockQ5_K{};
      const float d = f16_to_f32(five ? b5.d : b4.d), dmin = f16_to_f32(five ? b5.dmin : b4.dmin);
      const uint8_t* scales = five ? b5.scales : b4.scales;
      for (int s = 0; s < 8; ++s) {
        const uint8_t* q = (five ? b5.qs : b4.qs) + 32 * (s / 2);
        uint8_t sc, m;
        scale_min_k4(s, scales, sc, m);
        out[s].sc[0] = out[s].sc[1] = 1;
        out[s].dw = d * float(sc);
        out[s].mw = -dmin * float(m);
        for (int l = 0; l < 32; ++l) {
          const int nib = s % 2 == 0 ? q[l] & 0xF : q[l] >> 4;
          out[s].v[l] = int8_t(nib + (five ? ((b5.qh[l] >> s) & 1) << 4 : 0));
        }
      }
      return 8;
    }
    case GgmlType::Q6_K: {
      // Sub-block k: half h = k / 4 of the block, quarter g = k % 4 (the layout of dequant_q6_k).
      const auto b = load_block<BlockQ6_K>(row, i);
      const float d = f16_to_f32(b.d);
      for (int k = 0; k < 8; ++k) {
        const int h = k / 4, g = k % 4;
        const uint8_t* ql = b.ql + 64 * h + 32 * (g & 1);
        const uint8_t* qh = b.qh + 32 * h;
        out[k].sc[0] = b.scales[8 * h + 2 * g];
        out[k].sc[1] = b.scales[8 * h + 2 * g + 1];
        out[k].dw = d;
        out[k].mw = 0.0f;
        for (int l = 0; l < 32; ++l) {
          const int nib = g >= 2 ? ql[l] >> 4 : ql[l] & 0xF;
          out[k].v[l] = int8_t((nib | (((qh[l] >> (2 * g)) & 3) << 4)) - 32);
        }
      }
      return 8;
    }
    default: break;
  }
  fail(ErrorKind::unsupported, "weight type {} has no 8-bit integer kernel", ggml_type_name(type));
}

void quantize_block_scalar(const float* x, BlockQ8& y) {
  float amax = 0.0f;
  for (int i = 0; i < kQ8; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
  int sum = 0;
  for (int i = 0; i < kQ8; ++i) {
    const int q = int(std::nearbyint(x[i] * id));  // round half to even, as cvtps_epi32
    y.qs[i] = int8_t(q);
    sum += q;
  }
  y.d = round_to_f16(d);
  y.s = y.d * float(sum);
}

#if ADAMAS_Q8_AVX2
// ---------------------------------------------------------------------------------------------------------------
// AVX2: a weight sub-block of 32 becomes one vector of 32 bytes; maddubs (u8 x i8 -> pairs of i16) and madd
// (-> 8 x i32) give its integer product with 32 activations, one fmadd scales it. Unsigned weights (the Q4/Q5
// nibbles) go straight into maddubs' unsigned operand and their offset or min is applied through BlockQ8::s;
// signed weights (Q8_0, Q6_K's q - 32) go in as |w| with the activations' signs flipped where w < 0.
// ---------------------------------------------------------------------------------------------------------------

struct Sub {
  __m256i w;     // u8 operand of maddubs
  __m256i sign;  // signed types: the weights whose sign is applied to the activations
  __m256i mul;   // Q6_K: the i16 scale of each half (16 elements) for madd
  float dw, mw;  // the sub-block's scale and the coefficient of the activations' sum
};

inline __m256i nibbles_avx2(__m128i q) {  // byte j: element j (low nibble), j + 16 (high nibble)
  const __m128i m = _mm_set1_epi8(0xF);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
}
inline __m256i low_nibbles(__m256i q) { return _mm256_and_si256(q, _mm256_set1_epi8(0xF)); }
inline __m256i high_nibbles(__m256i q) { return _mm256_and_si256(_mm256_srli_epi16(q, 4), _mm256_set1_epi8(0xF)); }
// Bits [shift, shift + width) of every byte, moved to bit 4 (the 16-bit shifts never carry across the mask).
inline __m256i high_bits(__m256i qh, int shift, int mask) {
  const __m256i b = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(shift)), _mm256_set1_epi8(char(mask)));
  return _mm256_slli_epi16(b, 4);
}
inline __m256i load256(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

struct TraitsQ4_0 {
  static constexpr int kSub = 1;
  static constexpr int64_t kBytes = 18;
  static constexpr bool kSigned = false, kScaled = false, kMin = true;
  static void decode(const uint8_t* b, Sub* s) {
    const float d = load_f16(b);
    s->w = nibbles_avx2(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2)));
    s->dw = d;
    s->mw = -8.0f * d;  // (q - 8) * d
  }
};

struct TraitsQ4_1 {
  static constexpr int kSub = 1;
  static constexpr int64_t kBytes = 20;
  static constexpr bool kSigned = false, kScaled = false, kMin = true;
  static void decode(const uint8_t* b, Sub* s) {
    s->w = nibbles_avx2(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 4)));
    s->dw = load_f16(b);
    s->mw = load_f16(b + 2);
  }
};

struct TraitsQ8_0 {
  static constexpr int kSub = 1;
  static constexpr int64_t kBytes = 34;
  static constexpr bool kSigned = true, kScaled = false, kMin = false;
  static void decode(const uint8_t* b, Sub* s) {
    const __m256i q = load256(b + 2);
    s->w = _mm256_abs_epi8(q);  // -128 becomes 0x80, i.e. 128 as maddubs' unsigned operand
    s->sign = q;
    s->dw = load_f16(b);
  }
};

// Q4_K (kFive = false) and Q5_K: 8 sub-blocks with 6-bit scales and mins.
template <bool kFive>
struct TraitsK45 {
  static constexpr int kSub = 8;
  static constexpr int64_t kBytes = kFive ? 176 : 144;
  static constexpr bool kSigned = false, kScaled = false, kMin = true;
  static void decode(const uint8_t* b, Sub* s) {
    const float d = load_f16(b), dmin = load_f16(b + 2);
    const uint8_t* scales = b + 4;
    const uint8_t* qs = b + (kFive ? 48 : 16);
    const __m256i qh = kFive ? load256(b + 16) : _mm256_setzero_si256();
    for (int j = 0; j < 4; ++j) {
      const __m256i q = load256(qs + 32 * j);
      s[2 * j].w = low_nibbles(q);
      s[2 * j + 1].w = high_nibbles(q);
      if constexpr (kFive) {
        s[2 * j].w = _mm256_or_si256(s[2 * j].w, high_bits(qh, 2 * j, 1));
        s[2 * j + 1].w = _mm256_or_si256(s[2 * j + 1].w, high_bits(qh, 2 * j + 1, 1));
      }
      for (int k = 2 * j; k < 2 * j + 2; ++k) {
        uint8_t sc, m;
        scale_min_k4(k, scales, sc, m);
        s[k].dw = d * float(sc);
        s[k].mw = -dmin * float(m);
      }
    }
  }
};

struct TraitsQ6_K {
  static constexpr int kSub = 8;
  static constexpr int64_t kBytes = 210;
  static constexpr bool kSigned = true, kScaled = true, kMin = false;
  static void decode(const uint8_t* b, Sub* s) {
    const float d = load_f16(b + 208);
    const auto* scales = reinterpret_cast<const int8_t*>(b + 192);
    for (int k = 0; k < 8; ++k) {  // the layout of decode_int
      const int h = k / 4, g = k % 4;
      const __m256i ql = load256(b + 64 * h + 32 * (g & 1));
      const __m256i q = _mm256_or_si256(g >= 2 ? high_nibbles(ql) : low_nibbles(ql),
                                        high_bits(load256(b + 128 + 32 * h), 2 * g, 3));
      const __m256i v = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
      s[k].w = _mm256_abs_epi8(v);
      s[k].sign = v;
      s[k].mul = _mm256_set_m128i(_mm_set1_epi16(scales[8 * h + 2 * g + 1]), _mm_set1_epi16(scales[8 * h + 2 * g]));
      s[k].dw = d;
      s[k].mw = 0.0f;
    }
  }
};

template <class Tr>
inline __m256i int_dot(const Sub& s, __m256i xq, __m256i ones) {
  // Pairs of u8 x i8 products fit i16: 2 * 128 * 127 for Q8_0, 2 * 63 * 127 for the rest.
  const __m256i p = Tr::kSigned ? _mm256_maddubs_epi16(s.w, _mm256_sign_epi8(xq, s.sign))
                                : _mm256_maddubs_epi16(s.w, xq);
  return _mm256_madd_epi16(p, Tr::kScaled ? s.mul : ones);
}

// R rows x T tokens, all nbw weight blocks: each weight block is unpacked once and used for the T tokens, each
// activation block loaded once and used for the R rows; R * T accumulators stay in registers.
template <class Tr, int R, int T>
void tile(const uint8_t* w, int64_t row_bytes, const BlockQ8* x, int64_t x_stride, int64_t nbw, float* y,
          int64_t y_stride) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[R][T];
  float macc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps(), macc[r][t] = 0.0f;
  for (int64_t b = 0; b < nbw; ++b) {
    Sub sub[R][Tr::kSub];
    for (int r = 0; r < R; ++r) Tr::decode(w + r * row_bytes + b * Tr::kBytes, sub[r]);
    for (int j = 0; j < Tr::kSub; ++j) {
      for (int t = 0; t < T; ++t) {
        const BlockQ8& xb = x[t * x_stride + b * Tr::kSub + j];
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.qs));
        for (int r = 0; r < R; ++r) {
          const Sub& s = sub[r][j];
          const __m256 p = _mm256_cvtepi32_ps(int_dot<Tr>(s, xq, ones));
          acc[r][t] = _mm256_fmadd_ps(p, _mm256_set1_ps(s.dw * xb.d), acc[r][t]);
          if constexpr (Tr::kMin) macc[r][t] += s.mw * xb.s;
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) y[t * y_stride + r] = hsum(acc[r][t]) + macc[r][t];
}

// Several tokens: tiles of one row x 8 tokens, then 4 (measured on this Zen machine, 64 tokens, ns per 32-block
// product: Q4_1 1.37-1.46 at 1 x 8, 1.34-1.85 at 1 x 4, 1.48 at 4 x 2, 1.71 at 2 x 2; the K-quants, whose blocks
// cost more to unpack, gain most from the wider tiles: Q4_K 2.0 at 1 x 8, 2.7 at 1 x 4, 10 at 4 x 1). One token
// (decode) or the remainder: 2 rows at a time.
template <class Tr>
void gemm_avx2(const uint8_t* w, int64_t rb, int64_t n_rows, const BlockQ8* x, int64_t xs, int64_t n_tokens,
               int64_t nbw, float* y, int64_t ys) {
  int64_t t = 0;
  for (; t + 8 <= n_tokens; t += 8)
    for (int64_t r = 0; r < n_rows; ++r) tile<Tr, 1, 8>(w + r * rb, rb, x + t * xs, xs, nbw, y + t * ys + r, ys);
  for (; t + 4 <= n_tokens; t += 4)
    for (int64_t r = 0; r < n_rows; ++r) tile<Tr, 1, 4>(w + r * rb, rb, x + t * xs, xs, nbw, y + t * ys + r, ys);
  const int64_t r_pairs = n_rows / 2 * 2;
  for (; t < n_tokens; ++t) {
    for (int64_t r = 0; r < r_pairs; r += 2) tile<Tr, 2, 1>(w + r * rb, rb, x + t * xs, xs, nbw, y + t * ys + r, ys);
    if (r_pairs < n_rows) tile<Tr, 1, 1>(w + r_pairs * rb, rb, x + t * xs, xs, nbw, y + t * ys + r_pairs, ys);
  }
}
#endif

float dot_q8_scalar(GgmlType type, const void* row, const BlockQ8* x, int64_t n, int64_t block_size) {
  IntSub subs[8];
  float sum = 0.0f;
  for (int64_t i = 0; i < n / block_size; ++i) {
    const int k = decode_int(type, row, i, subs);
    for (int j = 0; j < k; ++j, ++x) {
      const IntSub& s = subs[j];
      int lo = 0, hi = 0;
      for (int l = 0; l < 16; ++l) lo += int(s.v[l]) * x->qs[l];
      for (int l = 16; l < 32; ++l) hi += int(s.v[l]) * x->qs[l];
      sum += s.dw * x->d * float(s.sc[0] * lo + s.sc[1] * hi) + s.mw * x->s;
    }
  }
  return sum;
}

}  // namespace

bool has_q8_dot(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q8_0:
    case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K: return true;
    default: return false;
  }
}

void quantize_row_q8(const float* x, BlockQ8* y, int64_t n) {
  ADAMAS_CHECK(n >= 0 && n % kQ8 == 0, ErrorKind::invalid_argument,
               "quantize_row_q8: row length {} is not a multiple of {}", n, kQ8);
  for (int64_t i = 0; i < n / kQ8; ++i, x += kQ8) {
#if ADAMAS_Q8_AVX2
    // ggml's quantize_row_q8_0 (AVX2): max |x| over the block, x / d rounded to nearest even, packed to i8.
    __m256 v[4];
    for (int k = 0; k < 4; ++k) v[k] = _mm256_loadu_ps(x + 8 * k);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1]));
    m = _mm256_max_ps(m, _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float d = _mm_cvtss_f32(m4) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    __m256i q[4];
    for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], _mm256_set1_ps(id)));
    const __m256i s8 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    // packs interleave the 128-bit lanes; the permute restores element order.
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[i].qs),
                        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    y[i].d = round_to_f16(d);
    y[i].s = y[i].d * float(_mm_cvtsi128_si32(s4));
#else
    quantize_block_scalar(x, y[i]);
#endif
  }
}

void gemm_q8(GgmlType type, const void* w, int64_t row_bytes, int64_t n_rows, const BlockQ8* x, int64_t x_stride,
             int64_t n_tokens, int64_t n, float* y, int64_t y_stride) {
  const int64_t bs = checked_block_size(type, n, "gemm_q8");
#if ADAMAS_Q8_AVX2
  const auto* wb = static_cast<const uint8_t*>(w);
  const int64_t nbw = n / bs;
  switch (type) {
    case GgmlType::Q4_0: return gemm_avx2<TraitsQ4_0>(wb, row_bytes, n_rows, x, x_stride, n_tokens, nbw, y, y_stride);
    case GgmlType::Q4_1: return gemm_avx2<TraitsQ4_1>(wb, row_bytes, n_rows, x, x_stride, n_tokens, nbw, y, y_stride);
    case GgmlType::Q8_0: return gemm_avx2<TraitsQ8_0>(wb, row_bytes, n_rows, x, x_stride, n_tokens, nbw, y, y_stride);
    case GgmlType::Q4_K:
      return gemm_avx2<TraitsK45<false>>(wb, row_bytes, n_rows, x, x_stride, n_tokens, nbw, y, y_stride);
    case GgmlType::Q5_K:
      return gemm_avx2<TraitsK45<true>>(wb, row_bytes, n_rows, x, x_stride, n_tokens, nbw, y, y_stride);
    case GgmlType::Q6_K: return gemm_avx2<TraitsQ6_K>(wb, row_bytes, n_rows, x, x_stride, n_tokens, nbw, y, y_stride);
    default: break;
  }
#endif
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t r = 0; r < n_rows; ++r)
      y[t * y_stride + r] =
          dot_q8_scalar(type, static_cast<const uint8_t*>(w) + r * row_bytes, x + t * x_stride, n, bs);
}

float vec_dot_q8(GgmlType type, const void* row, const BlockQ8* x, int64_t n) {
  float y = 0.0f;
  gemm_q8(type, row, 0, 1, x, 0, 1, n, &y, 0);
  return y;
}

void quantize_row_q8_ref(const float* x, BlockQ8* y, int64_t n) {
  ADAMAS_CHECK(n >= 0 && n % kQ8 == 0, ErrorKind::invalid_argument,
               "quantize_row_q8: row length {} is not a multiple of {}", n, kQ8);
  for (int64_t i = 0; i < n / kQ8; ++i) quantize_block_scalar(x + i * kQ8, y[i]);
}

float vec_dot_q8_ref(GgmlType type, const void* row, const BlockQ8* x, int64_t n) {
  return dot_q8_scalar(type, row, x, n, checked_block_size(type, n, "vec_dot_q8"));
}

}  // namespace adamas
