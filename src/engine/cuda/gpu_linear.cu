// Skinny matrix products of the decode path: y = beta * y + x W^T for n <= 4 token rows, f16 weights, f32
// activations and accumulation. At n <= 4 a decode step is bound by reading the weights once; keeping the
// activations in f32 (unlike the cuBLAS f16 path of larger batches) keeps greedy decoding on the CPU's tokens.
// Each token's sums run in the same order whatever n is, so a batch of sequences gets the single-sequence results.
#include <algorithm>

#include "engine/cuda/gpu_ops.h"

namespace adamas::gpu {
namespace {

constexpr int kWarps = 8, kRowsPerWarp = 2, kUnroll = 4;  // 2 rows x 4 column steps: 8 16-byte loads in flight

// Columns of x staged per pass: 16 KB of shared memory per token row, 32 KB at most (two blocks per SM at NT 4).
template <int NT>
__host__ __device__ constexpr int chunk_cols() { return NT <= 2 ? 4096 : 2048; }

template <int NT>
__device__ __forceinline__ void accumulate(const uint4 (&wv)[kRowsPerWarp], const float4* xs, int c,
                                           float (&acc)[kRowsPerWarp][NT]) {
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float4 xa = xs[t * chunk_cols<NT>() / 4 + c / 4], xb = xs[t * chunk_cols<NT>() / 4 + c / 4 + 1];
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

// Streaming weights: read once, not worth keeping in L1/L2 (ld.global.cs).
__device__ __forceinline__ uint4 load_weights(const __half* p) { return __ldcs(reinterpret_cast<const uint4*>(p)); }

template <int NT>
__global__ void __launch_bounds__(kWarps * 32) skinny_kernel(const __half* w, int64_t rows, int64_t cols,
                                                             const float* x, int n, float* y, float beta) {
  constexpr int kChunk = chunk_cols<NT>();
  __shared__ float4 xs[NT * kChunk / 4];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t r0 = (int64_t(blockIdx.x) * kWarps + warp) * kRowsPerWarp;
  const __half* wrow[kRowsPerWarp];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) wrow[rr] = w + (r0 + rr < rows ? r0 + rr : rows - 1) * cols;
  float acc[kRowsPerWarp][NT] = {};
  for (int64_t c0 = 0; c0 < cols; c0 += kChunk) {
    const int cn = cols - c0 < kChunk ? int(cols - c0) : kChunk;
    __syncthreads();
    for (int e = threadIdx.x; e < NT * cn / 4; e += blockDim.x) {
      const int t = e / (cn / 4), i = e % (cn / 4);
      xs[t * kChunk / 4 + i] = t < n ? reinterpret_cast<const float4*>(x + t * cols + c0)[i] : float4{};
    }
    __syncthreads();
    // Columns in increasing order in every case, so each sum's order does not depend on NT or the unrolling.
    int c = lane * 8;
    for (; c + (kUnroll - 1) * 256 < cn; c += kUnroll * 256) {
      uint4 wv[kUnroll][kRowsPerWarp];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
#pragma unroll
        for (int rr = 0; rr < kRowsPerWarp; ++rr) wv[u][rr] = load_weights(wrow[rr] + c0 + c + u * 256);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) accumulate<NT>(wv[u], xs, c + u * 256, acc);
    }
    for (; c < cn; c += 256) {
      uint4 wv[kRowsPerWarp];
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) wv[rr] = load_weights(wrow[rr] + c0 + c);
      accumulate<NT>(wv, xs, c, acc);
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
