// Skinny matrix products of the decode path: y = beta * y + x W^T for n <= 4 token rows, f16 weights, f32
// activations and accumulation. At n <= 4 a decode step is bound by reading the weights once; keeping the
// activations in f32 (unlike the cuBLAS f16 path of larger batches) keeps greedy decoding on the CPU's tokens.
// Each token's sums run in the same order whatever n is, so a batch of sequences gets the single-sequence results.
//
// Two kernels, the same sums bit for bit (each lane adds its columns lane * 8 + 256 j in increasing j, 8 per 16-byte
// load, then a butterfly of warp shuffles):
//  - streaming (the default): one warp per row (n == 1) or pair of rows (n > 1), x read straight from global memory
//    (a few KB, L1/L2-resident) next to the weights, so no block waits on a shared-memory staging pass; small
//    blocks, so the grid is several times the SMs' resident blocks and the scheduler balances the tail. Weights
//    are loaded with ld.global.nc.L1::no_allocate (read once; they must not evict x from L1), 8 x 16 B per lane in
//    flight.
//  - staged (the previous version): 8 warps x 2 rows per block, x staged in shared memory per block.
// ADAMAS_GEMV=staged|r1|r2 picks one for A/B runs (benchmarks); unset: streaming.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "engine/cuda/gpu_ops.h"

namespace adamas::gpu {
namespace {

// acc += the 8 f16 weights of w times xv[0..8), in order (the one order every kernel here uses).
__device__ __forceinline__ void fma8(const uint4& w, const float (&xv)[8], float& acc) {
  const __half2* h = reinterpret_cast<const __half2*>(&w);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 f = __half22float2(h[k]);
    acc = fmaf(f.x, xv[2 * k], acc);
    acc = fmaf(f.y, xv[2 * k + 1], acc);
  }
}

// Sums each row's lanes (a shuffle butterfly) and stores y[t][r0 + rr] = beta * y + sum for t < n, r < rows.
template <int R, int NT>
__device__ __forceinline__ void reduce_store(float (&acc)[R][NT], int64_t r0, int lane, int64_t rows, int n, float* y,
                                             float beta) {
#pragma unroll
  for (int rr = 0; rr < R; ++rr)
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

// ---------------------------------------------------------------------------------------------------------------
// The previous kernel (x staged in shared memory).
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
    for (int rr = 0; rr < kRowsPerWarp; ++rr) fma8(wv[rr], xv, acc[rr][t]);
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
  reduce_store<kRowsPerWarp, NT>(acc, r0, lane, rows, n, y, beta);
}

// ---------------------------------------------------------------------------------------------------------------
// The streaming kernel: R rows per warp, kStreamWarps warps per block, U column steps of 256 per batch of loads.
constexpr int kStreamWarps = 4;

// Read-only, read-once weights: bypass L1 (x lives there), normal L2 policy.
__device__ __forceinline__ uint4 stream_load(const __half* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

template <int NT, int R>
__device__ __forceinline__ void accumulate_stream(const uint4 (&wv)[R], const float* x, int64_t cols, int64_t c,
                                     float (&acc)[R][NT]) {
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float4* xp = reinterpret_cast<const float4*>(x + t * cols + c);
    const float4 xa = __ldg(xp), xb = __ldg(xp + 1);
    const float xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
    for (int rr = 0; rr < R; ++rr) fma8(wv[rr], xv, acc[rr][t]);
  }
}

template <int NT, int R>
__global__ void __launch_bounds__(kStreamWarps * 32) stream_kernel(const __half* __restrict__ w, int64_t rows,
                                                                   int64_t cols, const float* __restrict__ x, int n,
                                                                   float* __restrict__ y, float beta) {
  constexpr int U = 8 / R;  // 8 16-byte weight loads in flight per lane
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t r0 = (int64_t(blockIdx.x) * kStreamWarps + warp) * R;
  if (r0 >= rows) return;  // whole warps only: the shuffles below see full warps
  const __half* wrow[R];
#pragma unroll
  for (int rr = 0; rr < R; ++rr) wrow[rr] = w + (r0 + rr < rows ? r0 + rr : rows - 1) * cols;
  float acc[R][NT] = {};
  int64_t c = lane * 8;
  for (; c + (U - 1) * 256 < cols; c += U * 256) {
    uint4 wv[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int rr = 0; rr < R; ++rr) wv[u][rr] = stream_load(wrow[rr] + c + u * 256);
#pragma unroll
    for (int u = 0; u < U; ++u) accumulate_stream<NT, R>(wv[u], x, cols, c + u * 256, acc);
  }
  // Tail: fewer than U steps left (cols need not be a multiple of 256); loads first, then the sums in order.
  {
    uint4 wv[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int rr = 0; rr < R; ++rr)
        if (c + u * 256 < cols) wv[u][rr] = stream_load(wrow[rr] + c + u * 256);
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (c + u * 256 < cols) accumulate_stream<NT, R>(wv[u], x, cols, c + u * 256, acc);
  }
  reduce_store<R, NT>(acc, r0, lane, rows, n, y, beta);
}

template <int R>
void launch_stream(const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y, float beta,
                   cudaStream_t s) {
  const unsigned blocks = unsigned((rows + kStreamWarps * R - 1) / (kStreamWarps * R));
  const int threads = kStreamWarps * 32;
  if (n == 1) stream_kernel<1, R><<<blocks, threads, 0, s>>>(w, rows, cols, x, 1, y, beta);
  else if (n == 2) stream_kernel<2, R><<<blocks, threads, 0, s>>>(w, rows, cols, x, 2, y, beta);
  else if (n == 3) stream_kernel<3, R><<<blocks, threads, 0, s>>>(w, rows, cols, x, 3, y, beta);
  else stream_kernel<4, R><<<blocks, threads, 0, s>>>(w, rows, cols, x, 4, y, beta);
}

void launch_staged(const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y, float beta,
                   cudaStream_t s) {
  const unsigned blocks = unsigned((rows + kWarps * kRowsPerWarp - 1) / (kWarps * kRowsPerWarp));
  if (n == 1) skinny_kernel<1><<<blocks, kWarps * 32, 0, s>>>(w, rows, cols, x, 1, y, beta);
  else if (n == 2) skinny_kernel<2><<<blocks, kWarps * 32, 0, s>>>(w, rows, cols, x, 2, y, beta);
  else skinny_kernel<4><<<blocks, kWarps * 32, 0, s>>>(w, rows, cols, x, int(n), y, beta);
}

// 0 streaming (r1 at n == 1, r2 above), 1 staged, 2 streaming r1 always, 3 streaming r2 always.
int default_variant() {
  static const int v = [] {
    const char* e = std::getenv("ADAMAS_GEMV");
    if (!e) return 0;
    if (!std::strcmp(e, "staged")) return 1;
    if (!std::strcmp(e, "r1")) return 2;
    if (!std::strcmp(e, "r2")) return 3;
    return 0;
  }();
  return v;
}

}  // namespace

// The variants by number (benchmarks and tests compare them): 0 the default streaming kernel, 1 the staged one,
// 2 / 3 streaming with 1 / 2 rows per warp whatever n is. Same results bit for bit.
void skinny_matmul_variant(int variant, const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n,
                           float* y, float beta, cudaStream_t s) {
  switch (variant) {
    case 1: launch_staged(w, rows, cols, x, n, y, beta, s); break;
    case 2: launch_stream<1>(w, rows, cols, x, n, y, beta, s); break;
    case 3: launch_stream<2>(w, rows, cols, x, n, y, beta, s); break;
    default:
      if (n == 1) launch_stream<1>(w, rows, cols, x, n, y, beta, s);
      else launch_stream<2>(w, rows, cols, x, n, y, beta, s);
  }
}

void skinny_matmul(const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y, float beta,
                   cudaStream_t s) {
  skinny_matmul_variant(default_variant(), w, rows, cols, x, n, y, beta, s);
}

}  // namespace adamas::gpu
