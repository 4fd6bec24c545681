// The few vector primitives the CPU attention kernels need, with AVX2/FMA/F16C bodies and portable fallbacks
// (internal header). Everything else is written against these, so both paths compute the same function.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define ADAMAS_AVX2 1
#include <immintrin.h>
#endif

#include "adamas/tensor_view.h"
#include "core/dtype.h"

namespace adamas::simd {

// out[0..n) = row[0..n) as f32.
inline void to_f32(const void* row, DType dtype, int64_t n, float* out) {
  int64_t i = 0;
#if ADAMAS_AVX2
  if (dtype == DType::f16) {
    const uint16_t* p = static_cast<const uint16_t*>(row);
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i))));
  } else if (dtype == DType::bf16) {
    const uint16_t* p = static_cast<const uint16_t*>(row);
    for (; i + 8 <= n; i += 8) {
      const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i)));
      _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
  }
#endif
  for (; i < n; ++i) out[i] = load_f32(row, dtype, i);
}

inline float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float s = 0.0f;
#if ADAMAS_AVX2
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  s0 = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  s = _mm_cvtss_f32(h);
#else
  // Eight interleaved partial sums, as the vector path keeps: the same error growth (~n/8), not a serial chain's.
  float part[8] = {};
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) part[l] += a[i + l] * b[i + l];
  s = ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
#endif
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y = y * c + a * x
inline void scale_axpy(float* y, float c, float a, const float* x, int64_t n) {
  int64_t i = 0;
#if ADAMAS_AVX2
  const __m256 vc = _mm256_set1_ps(c), va = _mm256_set1_ps(a);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_mul_ps(vc, _mm256_loadu_ps(y + i))));
#endif
  for (; i < n; ++i) y[i] = y[i] * c + a * x[i];
}

// y[0..n) *= c
inline void scale(float* y, float c, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] *= c;
}

#if ADAMAS_AVX2
// exp(x) to ~2 ulp for x in [-87, 88] (Cephes' range reduction and degree-6 polynomial); x = -inf gives 0.
inline __m256 exp8(__m256 x) {
  const __m256 is_neg_inf = _mm256_cmp_ps(x, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(is_neg_inf, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}
#endif

// p[j] = exp(s[j] - m) for j < n, returns their sum. exp(-inf) = 0.
inline float exp_shifted(float* p, const float* s, float m, int64_t n) {
  float sum = 0.0f;
  int64_t j = 0;
#if ADAMAS_AVX2
  const __m256 vm = _mm256_set1_ps(m);
  __m256 vs = _mm256_setzero_ps();
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
    _mm256_storeu_ps(p + j, e);
    vs = _mm256_add_ps(vs, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vs);
  for (float v : lanes) sum += v;
#endif
  for (; j < n; ++j) {
    p[j] = std::exp(s[j] - m);
    sum += p[j];
  }
  return sum;
}

}  // namespace adamas::simd
