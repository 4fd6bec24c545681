// Skinny matrix products of the decode path: y = beta * y + x W^T for n <= 4 token rows, f16 weights, f32
// activations and accumulation. At n <= 4 a decode step is bound by reading the weights once; keeping the
// activations in f32 (unlike the cuBLAS f16 path of larger batches) keeps greedy decoding on the CPU's tokens.
// Each token's sums run in the same order whatever n is, so a batch of sequences gets the single-sequence results.
#include <algorithm>

#include "engine/cuda/gpu_ops.h"

namespace adamas::gpu {
namespace {

constexpr int kWarps = 8, kRowsPerWarp = 2, kChunk = 2048;  // kChunk columns of x staged per pass

template <int NT>
__global__ void __launch_bounds__(kWarps * 32) skinny_kernel(const __half* w, int64_t rows, int64_t cols,
                                                             const float* x, int n, float* y, float beta) {
  __shared__ float4 xs[NT * kChunk / 4];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t r0 = (int64_t(blockIdx.x) * kWarps + warp) * kRowsPerWarp;
  float acc[kRowsPerWarp][NT] = {};
  for (int64_t c0 = 0; c0 < cols; c0 += kChunk) {
    const int cn = cols - c0 < kChunk ? int(cols - c0) : kChunk;
    __syncthreads();
    for (int e = threadIdx.x; e < NT * cn / 4; e += blockDim.x) {
      const int t = e / (cn / 4), i = e % (cn / 4);
      xs[t * kChunk / 4 + i] = t < n ? reinterpret_cast<const float4*>(x + t * cols + c0)[i] : float4{};
    }
    __syncthreads();
    for (int c = lane * 8; c < cn; c += 256) {
      uint4 wv[kRowsPerWarp];
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr)
        wv[rr] = r0 + rr < rows ? __ldg(reinterpret_cast<const uint4*>(w + (r0 + rr) * cols + c0 + c)) : uint4{};
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const float4 xa = xs[t * kChunk / 4 + c / 4], xb = xs[t * kChunk / 4 + c / 4 + 1];
        const float xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
        for (int rr = 0; rr < kRowsPerWarp; ++rr) {
          const __half2* h = reinterpret_cast<const __half2*>(&wv[rr]);
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            const float2 f = __half22float2(h[k]);
            acc[rr][t] = fmaf(f.x, xv[2 * k], acc[rr][t]);
            acc[rr][t] = fmaf(f.y, xv[2 * k + 1], acc[rr][t]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr)
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      float v = acc[rr][t];
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      const int64_t r = r0 + rr;
      if (lane == 0 && t < n && r < rows) {
        float* dst = y + t * rows + r;
        *dst = beta == 0.0f ? v : beta * *dst + v;  // beta 0 never reads y (it may hold poison)
      }
    }
}

}  // namespace

void skinny_matmul(const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y, float beta,
                   cudaStream_t s) {
  const unsigned blocks = unsigned((rows + kWarps * kRowsPerWarp - 1) / (kWarps * kRowsPerWarp));
  if (n == 1) skinny_kernel<1><<<blocks, kWarps * 32, 0, s>>>(w, rows, cols, x, 1, y, beta);
  else if (n == 2) skinny_kernel<2><<<blocks, kWarps * 32, 0, s>>>(w, rows, cols, x, 2, y, beta);
  else skinny_kernel<4><<<blocks, kWarps * 32, 0, s>>>(w, rows, cols, x, int(n), y, beta);
}

}  // namespace adamas::gpu
