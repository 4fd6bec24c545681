// The L1 distance of packed 2-bit codes from their XOR, every per-code preparation on the query's side (v10).
//
// A word holds 16 codes, code i as bit 2i (low, l) and bit 2i + 1 (high, h). For one code pair a (query), b (key) with
// d = a ^ b:  |a - b| = d_l + 2 d_h - 2 [d_l & d_h & (a_l != a_h)].
// (d = 3 is the pair {0, 3}, distance 3, or {1, 2}, distance 1, and a_l != a_h tells which; the other cases are
// d_l + 2 d_h.) So per key word, with S the query's (a_l ^ a_h) at the odd bits:
//   v = d & ~((d << 1) & S)       (even bits: d_l; odd bits: d_h unless it is the {1, 2} case)
//   L1 = popc(v & even) + 2 popc(v & odd)
// and two words' even bits share one word, their odd bits another: 4 POPC per 4 words.
//
// Why (NOTES v10): the thermometer form (common.cuh therm_pack, distance.cuh lane_l1) packs every key word; this form
// needs no per-key packing (the MHA cluster pass: 47 instructions per step instead of 58). Measured alone it did not
// change that pass's time; with one lane per token (cluster_attention.cu) the pass ends ~4.5 us earlier.
// Host-callable so the CPU tests check it against the scalar L1.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define ADAMAS_XOR_L1_FN __host__ __device__ __forceinline__
#else
#define ADAMAS_XOR_L1_FN inline
#endif
#if defined(__CUDA_ARCH__)
#define ADAMAS_XOR_L1_UNROLL _Pragma("unroll")
#else
#define ADAMAS_XOR_L1_UNROLL
#endif

namespace adamas::cuda::detail {

ADAMAS_XOR_L1_FN int xor_l1_popc(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return __popc(x);
#else
  return __builtin_popcount(x);
#endif
}

constexpr uint32_t kEvenBits = 0x55555555u, kOddBits = 0xAAAAAAAAu;

// A lane's N query words (N even) and their masks S.
template <int N>
struct XorQuery {
  static_assert(N % 2 == 0, "words are taken in pairs");
  uint32_t q[N], s[N];
};

template <int N>
ADAMAS_XOR_L1_FN XorQuery<N> xor_query(const uint32_t* w) {
  XorQuery<N> x;
  ADAMAS_XOR_L1_UNROLL
  for (int i = 0; i < N; ++i) x.q[i] = w[i], x.s[i] = (w[i] ^ (w[i] << 1)) & kOddBits;
  return x;
}

// The L1 over the N words of a key (k[i] against q.q[i]).
template <int N>
ADAMAS_XOR_L1_FN int xor_l1(const XorQuery<N>& q, const uint32_t* k) {
  int ones = 0, twos = 0;
  ADAMAS_XOR_L1_UNROLL
  for (int i = 0; i < N; i += 2) {
    const uint32_t d0 = q.q[i] ^ k[i], d1 = q.q[i + 1] ^ k[i + 1];
    const uint32_t l0 = d0 << 1, l1 = d1 << 1;
    const uint32_t v0 = d0 & ~(l0 & q.s[i]), v1 = d1 & ~(l1 & q.s[i + 1]);
    const uint32_t even = (d0 & kEvenBits) | (l1 & kOddBits);  // v's even bits are d's
    const uint32_t odd = (v0 & kOddBits) | ((v1 >> 1) & kEvenBits);
    ones += xor_l1_popc(even), twos += xor_l1_popc(odd);
  }
  return ones + 2 * twos;
}

}  // namespace adamas::cuda::detail

#undef ADAMAS_XOR_L1_FN
#undef ADAMAS_XOR_L1_UNROLL
