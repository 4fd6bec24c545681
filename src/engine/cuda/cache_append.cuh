// Device helpers shared by the kernels that append a token's K/V (and key code) to the cache: the separate
// RoPE + append kernel (gpu_ops.cu) and the qkv GEMV's epilogue (gpu_linear.cu). One definition, so both give the
// same bits.
#pragma once

#include <cuda_fp16.h>

#include "attention/cuda/common.cuh"  // the CUDA encoder's warp Hadamard + bucketize (bit-identical codes)
#include "engine/cuda/gpu_ops.h"

namespace adamas::gpu {

// K row of token `pos`, KV head `head` of `layer` in cache slot `slot` (the V row is v_off - k_off bytes further).
__device__ __forceinline__ __half* k_row(const CacheLayout& c, int64_t slot, int64_t layer, int64_t head,
                                         int64_t pos) {
  uint8_t* p = c.base + slot * c.slot_bytes + layer * c.layer_bytes + c.k_off;
  return reinterpret_cast<__half*>(p) + (head * c.capacity + pos) * c.head_dim;
}

__device__ __forceinline__ uint8_t* code_row(const CacheLayout& c, int64_t slot, int64_t layer, int64_t head,
                                             int64_t pos) {
  return c.base + slot * c.slot_bytes + layer * c.layer_bytes + c.codes_off + (head * c.capacity + pos) * (c.head_dim / 4);
}

// Rotates the pair (a, b) by the angle pos * inv_freq, sin/cos in double as on the CPU.
__device__ __forceinline__ void rope_pair(float& a, float& b, int64_t pos, float inv_freq) {
  const double ang = double(pos) * double(inv_freq);
  const float cs = float(cos(ang)), sn = float(sin(ang));
  const float a0 = a, b0 = b;
  a = a0 * cs - b0 * sn;
  b = a0 * sn + b0 * cs;
}

// The whole warp encodes the key x (lane l holds elements [l E, l E + E), E = D / 32, values as stored in f16) into
// `out` (D / 4 bytes): cuda::encode_vectors' arithmetic.
template <int D>
__device__ __forceinline__ void warp_encode_key(float (&x)[D / 32], const cuda::detail::Thr& thr, float scale,
                                                uint8_t* out) {
  cuda::detail::warp_hadamard<D>(x, scale);
  cuda::detail::warp_encode_store<D>(x, thr, out);
}

}  // namespace adamas::gpu
