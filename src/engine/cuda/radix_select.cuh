// Block-wide selection of the k-th largest of n distinct 64-bit keys: eight 8-bit radix passes over the keys, each
// a shared-memory histogram of the keys that share the digits chosen so far (warp-aggregated atomics, since most
// keys fall into one bin in the first passes), then one warp finds the bin where the count from the top reaches k.
// Used by GPU sampling (the top-k logits) and Quest (the top pages): with a tie-breaking index in the low 32 bits
// the keys are distinct, so "key >= kth" is exactly the k largest, ties broken as the CPU code breaks them.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace adamas::gpu {

// Monotone map of a float to 32-bit unsigned order (-0 and +0 equal, as the CPU's comparisons treat them).
__device__ __forceinline__ uint32_t float_order(float f) {
  const uint32_t u = __float_as_uint(f == 0.0f ? 0.0f : f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float order_float(uint32_t o) {
  return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}

struct RadixScratch {  // shared memory of kth_largest_key
  unsigned hist[256];
  unsigned long long prefix;
  long long want;
};

// The k-th largest (1 <= k <= n) of key_at(0) .. key_at(n - 1), all distinct. Every thread of the block must call
// it (it synchronizes); every thread gets the result.
template <class KeyAt>
__device__ uint64_t kth_largest_key(KeyAt key_at, int64_t n, int64_t k, RadixScratch& s) {
  const int lane = threadIdx.x % 32;
  uint64_t prefix = 0, mask = 0;
  long long want = k;
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s.hist[i] = 0;
    __syncthreads();
    for (int64_t base = 0; base < n; base += blockDim.x) {  // the same trip count in every lane (match_any)
      const int64_t i = base + threadIdx.x;
      unsigned bin = 256;
      if (i < n) {
        const uint64_t key = key_at(i);
        if ((key & mask) == prefix) bin = unsigned(key >> shift) & 255u;
      }
      const unsigned peers = __match_any_sync(0xffffffffu, bin);
      if (bin < 256 && lane == __ffs(peers) - 1) atomicAdd(&s.hist[bin], unsigned(__popc(peers)));
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      // Lane l holds bins [8l, 8l + 8); counts from the top: the lane whose range holds the want-th key.
      unsigned mine = 0;
      for (int b = 0; b < 8; ++b) mine += s.hist[lane * 8 + b];
      unsigned above = 0;  // keys in the bins of the lanes above this one
      for (int l = 31; l > 0; --l) {
        const unsigned v = __shfl_sync(0xffffffffu, mine, l);
        if (l > lane) above += v;
      }
      if (above < unsigned(want) && above + mine >= unsigned(want)) {
        unsigned cum = above;
        for (int b = 7; b >= 0; --b) {
          const unsigned c = s.hist[lane * 8 + b];
          if (cum + c >= unsigned(want)) {
            s.prefix = prefix | (uint64_t(lane * 8 + b) << shift);
            s.want = want - cum;
            break;
          }
          cum += c;
        }
      }
    }
    __syncthreads();
    prefix = s.prefix, want = s.want;
    mask |= uint64_t(0xff) << shift;
    __syncthreads();  // s is rewritten by the next pass
  }
  return prefix;
}

}  // namespace adamas::gpu
