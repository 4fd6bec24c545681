// Internal entry points of the L1 estimate, so tests can hold each code path against the scalar reference.
#pragma once

#include <cstdint>

namespace adamas::detail {

// Exact L1 between 2-bit codes, computed on 64-bit words with popcounts (the portable path).
// Keys are `n` codes of `bytes` bytes each, key j at keys + j * key_stride; queries are contiguous.
void l1_group_words(const uint8_t* queries, int64_t n_queries, const uint8_t* keys, int64_t key_stride, int64_t n,
                    int64_t bytes, uint16_t* out, int64_t out_stride);

// The AVX2 path (falls back to the word path where AVX2 is absent or the code size has no vector kernel).
void l1_group_simd(const uint8_t* queries, int64_t n_queries, const uint8_t* keys, int64_t key_stride, int64_t n,
                   int64_t bytes, uint16_t* out, int64_t out_stride);

}  // namespace adamas::detail
