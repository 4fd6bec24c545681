#include "model/quant.h"

#include <array>
#include <cstring>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define ADAMAS_QUANT_AVX2 1
#endif

#include "core/check.h"
#include "core/dtype.h"
#include "model/quant_blocks.h"

namespace adamas {
namespace {

using namespace quant;  // the block layouts

constexpr GgmlTypeInfo kUnknown{"", 0, 0, false};

constexpr std::array<GgmlTypeInfo, 31> kTypes = {{
    {"F32", 1, 4, true},        {"F16", 1, 2, true},       {"Q4_0", 32, 18, true},   {"Q4_1", 32, 20, true},
    kUnknown,                   kUnknown,                  {"Q5_0", 32, 22, false},  {"Q5_1", 32, 24, false},
    {"Q8_0", 32, 34, true},     {"Q8_1", 32, 36, false},   {"Q2_K", 256, 84, false}, {"Q3_K", 256, 110, false},
    {"Q4_K", 256, 144, true},   {"Q5_K", 256, 176, true},  {"Q6_K", 256, 210, true}, {"Q8_K", 256, 292, false},
    {"IQ2_XXS", 256, 66, false}, {"IQ2_XS", 256, 74, false}, {"IQ3_XXS", 256, 98, false}, {"IQ1_S", 256, 50, false},
    {"IQ4_NL", 32, 18, false},  {"IQ3_S", 256, 110, false}, {"IQ2_S", 256, 82, false}, {"IQ4_XS", 256, 136, false},
    {"I8", 1, 1, false},        {"I16", 1, 2, false},      {"I32", 1, 4, false},     {"I64", 1, 8, false},
    {"F64", 1, 8, false},       {"IQ1_M", 256, 56, false}, {"BF16", 1, 2, true},
}};

void dequant_q4_0(const void* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const auto b = load_block<BlockQ4_0>(src, i);
    const float d = f16_to_f32(b.d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = d * float((b.qs[j] & 0xF) - 8);
      y[j + kQK / 2] = d * float((b.qs[j] >> 4) - 8);
    }
  }
}

void dequant_q4_1(const void* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const auto b = load_block<BlockQ4_1>(src, i);
    const float d = f16_to_f32(b.d), m = f16_to_f32(b.m);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = d * float(b.qs[j] & 0xF) + m;
      y[j + kQK / 2] = d * float(b.qs[j] >> 4) + m;
    }
  }
}

void dequant_q8_0(const void* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const auto b = load_block<BlockQ8_0>(src, i);
    const float d = f16_to_f32(b.d);
    for (int j = 0; j < kQK; ++j) y[j] = d * float(b.qs[j]);
  }
}

void dequant_q4_k(const void* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockQ4_K>(src, i);
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    const uint8_t* q = b.qs;
    for (int j = 0, is = 0; j < kQK_K; j += 64, q += 32, is += 2) {
      uint8_t sc, m;
      scale_min_k4(is, b.scales, sc, m);
      const float d1 = d * sc, m1 = dmin * m;
      scale_min_k4(is + 1, b.scales, sc, m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
    }
  }
}

void dequant_q5_k(const void* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockQ5_K>(src, i);
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    const uint8_t* ql = b.qs;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < kQK_K; j += 64, ql += 32, is += 2, u1 <<= 2, u2 <<= 2) {
      uint8_t sc, m;
      scale_min_k4(is, b.scales, sc, m);
      const float d1 = d * sc, m1 = dmin * m;
      scale_min_k4(is + 1, b.scales, sc, m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * float((ql[l] & 0xF) + ((b.qh[l] & u1) ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * float((ql[l] >> 4) + ((b.qh[l] & u2) ? 16 : 0)) - m2;
    }
  }
}

void dequant_q6_k(const void* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockQ6_K>(src, i);
    const float d = f16_to_f32(b.d);
    const uint8_t* ql = b.ql;
    const uint8_t* qh = b.qh;
    const int8_t* sc = b.scales;
    for (int n = 0; n < kQK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = int((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = int((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l + 0] = d * float(sc[is + 0]) * float(q1);
        y[l + 32] = d * float(sc[is + 2]) * float(q2);
        y[l + 64] = d * float(sc[is + 4]) * float(q3);
        y[l + 96] = d * float(sc[is + 6]) * float(q4);
      }
    }
  }
}

const GgmlTypeInfo& checked_info(GgmlType type, int64_t n, const char* op) {
  const GgmlTypeInfo& info = ggml_type_info(type);
  ADAMAS_CHECK(info.dequantizable, ErrorKind::unsupported, "{}: weight type {} is not supported", op, info.name);
  ADAMAS_CHECK(n >= 0 && n % info.block_size == 0, ErrorKind::invalid_argument,
               "{}: row length {} is not a multiple of the {} block size {}", op, n, info.name, info.block_size);
  return info;
}

// Generic dot: dequantize block by block into a small buffer, then a plain dot (the reference path).
float dot_by_blocks(GgmlType type, const GgmlTypeInfo& info, const void* row, const float* x, int64_t n) {
  // Dequantize a chunk of whole blocks (at least 256 elements) at a time.
  constexpr int64_t kChunk = 256;
  float buf[kChunk];
  const int64_t per = info.block_size >= kChunk ? info.block_size : kChunk - kChunk % info.block_size;
  const auto* bytes = static_cast<const uint8_t*>(row);
  double sum = 0.0;
  for (int64_t i = 0; i < n; i += per) {
    const int64_t len = std::min(per, n - i);
    dequantize_row(type, bytes + (i / info.block_size) * info.type_size, buf, len);
    float part = 0.0f;
    for (int64_t j = 0; j < len; ++j) part += buf[j] * x[i + j];
    sum += part;
  }
  return float(sum);
}

#if ADAMAS_QUANT_AVX2
// 8 consecutive int8 -> 8 floats.
inline __m256 i8x8_to_ps(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

float dot_f32_avx2(const float* a, const float* x, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(x + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(x + i + 8), acc1);
  }
  float s = hsum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) s += a[i] * x[i];
  return s;
}

// Four independent accumulators (one per 8 lanes of a 32 block) keep the FMA chains short.
float dot_q8_0_avx2(const void* row, const float* x, int64_t nb) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    const auto* b = static_cast<const uint8_t*>(row) + i * int64_t(sizeof(BlockQ8_0));
    uint16_t d16;
    std::memcpy(&d16, b, 2);
    const auto* qs = reinterpret_cast<const int8_t*>(b + 2);
    const __m256 d = _mm256_set1_ps(f16_to_f32(d16));
    acc0 = _mm256_fmadd_ps(_mm256_mul_ps(d, i8x8_to_ps(qs)), _mm256_loadu_ps(x), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_mul_ps(d, i8x8_to_ps(qs + 8)), _mm256_loadu_ps(x + 8), acc1);
    acc2 = _mm256_fmadd_ps(_mm256_mul_ps(d, i8x8_to_ps(qs + 16)), _mm256_loadu_ps(x + 16), acc2);
    acc3 = _mm256_fmadd_ps(_mm256_mul_ps(d, i8x8_to_ps(qs + 24)), _mm256_loadu_ps(x + 24), acc3);
  }
  return hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
}

inline __m256 u8x8_lo_to_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }
inline __m256 u8x8_hi_to_ps(__m128i v) { return u8x8_lo_to_ps(_mm_srli_si128(v, 8)); }

// Q4_0 / Q4_1: sum = sum(d * q * x) + (m or -8d) * sum(x). Byte j holds element j (low) and j + 16 (high).
template <bool kHasMin>
float dot_q4_avx2(const void* row, const float* x, int64_t nb) {
  constexpr int64_t kBytes = kHasMin ? 20 : 18;
  const __m128i low_mask = _mm_set1_epi8(0xF);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    const auto* b = static_cast<const uint8_t*>(row) + i * kBytes;
    uint16_t d16, m16 = 0;
    std::memcpy(&d16, b, 2);
    if constexpr (kHasMin) std::memcpy(&m16, b + 2, 2);
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + (kHasMin ? 4 : 2)));
    const __m128i lo = _mm_and_si128(q, low_mask);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), low_mask);
    const __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8);
    const __m256 x2 = _mm256_loadu_ps(x + 16), x3 = _mm256_loadu_ps(x + 24);
    const float df = f16_to_f32(d16);
    const __m256 d = _mm256_set1_ps(df);
    const __m256 m = _mm256_set1_ps(kHasMin ? f16_to_f32(m16) : -8.0f * df);
    acc0 = _mm256_fmadd_ps(_mm256_mul_ps(d, u8x8_lo_to_ps(lo)), x0, acc0);
    acc1 = _mm256_fmadd_ps(_mm256_mul_ps(d, u8x8_hi_to_ps(lo)), x1, acc1);
    acc2 = _mm256_fmadd_ps(_mm256_mul_ps(d, u8x8_lo_to_ps(hi)), x2, acc2);
    acc3 = _mm256_fmadd_ps(_mm256_mul_ps(d, u8x8_hi_to_ps(hi)), x3, acc3);
    accm = _mm256_fmadd_ps(m, _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)), accm);
  }
  return hsum(_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)), accm));
}

float dot_f16_avx2(const void* row, const float* x, int64_t n) {
  const auto* h = static_cast<const uint8_t*>(row);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 2 * i)));
    acc = _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), acc);
  }
  float s = hsum(acc);
  for (; i < n; ++i) {
    uint16_t v;
    std::memcpy(&v, h + 2 * i, 2);
    s += f16_to_f32(v) * x[i];
  }
  return s;
}

// K-quants: dequantize one 256 block to the stack, then an AVX2 dot.
float dot_k_avx2(GgmlType type, const GgmlTypeInfo& info, const void* row, const float* x, int64_t nb) {
  alignas(32) float buf[kQK_K];
  float sum = 0.0f;
  for (int64_t i = 0; i < nb; ++i) {
    dequantize_row(type, static_cast<const uint8_t*>(row) + i * info.type_size, buf, kQK_K);
    sum += dot_f32_avx2(buf, x + i * kQK_K, kQK_K);
  }
  return sum;
}
#endif

}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t type) {
  if (type >= kTypes.size() || kTypes[type].block_size == 0) return nullptr;
  return &kTypes[type];
}

const GgmlTypeInfo& ggml_type_info(GgmlType type) {
  const GgmlTypeInfo* info = ggml_type_info(uint32_t(type));
  ADAMAS_CHECK(info != nullptr, ErrorKind::unsupported, "unknown ggml type id {}", uint32_t(type));
  return *info;
}

std::string_view ggml_type_name(GgmlType type) { return ggml_type_info(type).name; }

int64_t ggml_row_bytes(GgmlType type, int64_t n) {
  const GgmlTypeInfo& info = ggml_type_info(type);
  ADAMAS_CHECK(n >= 0 && n % info.block_size == 0, ErrorKind::invalid_argument,
               "row length {} is not a multiple of the {} block size {}", n, info.name, info.block_size);
  return n / info.block_size * info.type_size;
}

void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
  const GgmlTypeInfo& info = checked_info(type, n, "dequantize_row");
  const int64_t nb = n / info.block_size;
  const auto* bytes = static_cast<const uint8_t*>(src);
  switch (type) {
    case GgmlType::F32: std::memcpy(dst, src, size_t(n) * sizeof(float)); return;
    case GgmlType::F16:
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, bytes + 2 * i, 2);
        dst[i] = type == GgmlType::F16 ? f16_to_f32(v) : bf16_to_f32(v);
      }
      return;
    case GgmlType::Q4_0: dequant_q4_0(src, dst, nb); return;
    case GgmlType::Q4_1: dequant_q4_1(src, dst, nb); return;
    case GgmlType::Q8_0: dequant_q8_0(src, dst, nb); return;
    case GgmlType::Q4_K: dequant_q4_k(src, dst, nb); return;
    case GgmlType::Q5_K: dequant_q5_k(src, dst, nb); return;
    case GgmlType::Q6_K: dequant_q6_k(src, dst, nb); return;
    default: break;
  }
  fail(ErrorKind::unsupported, "dequantize_row: weight type {} is not supported", info.name);
}

float vec_dot_ref(GgmlType type, const void* row, const float* x, int64_t n) {
  const GgmlTypeInfo& info = checked_info(type, n, "vec_dot");
  return dot_by_blocks(type, info, row, x, n);
}

float vec_dot(GgmlType type, const void* row, const float* x, int64_t n) {
  const GgmlTypeInfo& info = checked_info(type, n, "vec_dot");
#if ADAMAS_QUANT_AVX2
  const int64_t nb = n / info.block_size;
  switch (type) {
    case GgmlType::F32: {
      if (reinterpret_cast<uintptr_t>(row) % alignof(float) == 0)
        return dot_f32_avx2(static_cast<const float*>(row), x, n);
      break;
    }
    case GgmlType::F16: return dot_f16_avx2(row, x, n);
    case GgmlType::Q8_0: return dot_q8_0_avx2(row, x, nb);
    case GgmlType::Q4_0: return dot_q4_avx2<false>(row, x, nb);
    case GgmlType::Q4_1: return dot_q4_avx2<true>(row, x, nb);
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K: return dot_k_avx2(type, info, row, x, nb);
    default: break;
  }
#endif
  return dot_by_blocks(type, info, row, x, n);
}

}  // namespace adamas
