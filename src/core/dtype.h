// Scalar conversions between f32 and the 16-bit storage types (internal header). Round to nearest even.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "adamas/tensor_view.h"

namespace adamas {

inline float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN stays a quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return std::bit_cast<float>(sign);
    float m = float(mant) * (1.0f / 16777216.0f);  // subnormal: mant * 2^-24
    return sign ? -m : m;
  }
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
#endif
}

inline uint16_t f32_to_f16(float f) {
#if defined(__F16C__)
  return _cvtss_sh(f, 0);
#else
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t au = u & 0x7fffffffu;
  if (au > 0x7f800000u) return uint16_t(sign | 0x7e00u);
  if (au >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // overflow (incl. inf) -> inf
  if (au < 0x38800000u) {                                  // result is subnormal or zero
    const float a = std::bit_cast<float>(au) * 16777216.0f; // scale by 2^24, round to nearest even
    return uint16_t(sign | uint32_t(__builtin_nearbyintf(a)));
  }
  uint32_t r = au + 0xfffu + ((au >> 13) & 1u) - (112u << 23);
  return uint16_t(sign | (r >> 13));
#endif
}

// Element i of a buffer of the given dtype, as f32.
inline float load_f32(const void* data, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::f32: return static_cast<const float*>(data)[i];
    case DType::f16: return f16_to_f32(static_cast<const uint16_t*>(data)[i]);
    case DType::bf16: return bf16_to_f32(static_cast<const uint16_t*>(data)[i]);
  }
  return 0.0f;
}

inline void store_f32(void* data, DType dtype, int64_t i, float value) {
  switch (dtype) {
    case DType::f32: static_cast<float*>(data)[i] = value; break;
    case DType::f16: static_cast<uint16_t*>(data)[i] = f32_to_f16(value); break;
    case DType::bf16: static_cast<uint16_t*>(data)[i] = f32_to_bf16(value); break;
  }
}

}  // namespace adamas
