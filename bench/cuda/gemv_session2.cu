// bench_gemv's frozen reference: the streaming decode GEMV exactly as session 2 measured it (commit b20dd1e: 4.63 ms
// per step on the H100), without the later fusions (RMSNorm prologue, SwiGLU/RoPE epilogues, PDL wait). Run next to
// the engine's kernel in one process, it tells whether the ~0.35 ms per step between session 2's run and later
// runs lies in the code or in the machine. Plus a spin kernel, so that an L2 prefetch has landed before a timed call.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace adamas::gpu::bench {
namespace {

__device__ __forceinline__ void fma8(const uint4& w, const float (&xv)[8], float& acc) {
  const __half2* h = reinterpret_cast<const __half2*>(&w);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 f = __half22float2(h[k]);
    acc = fmaf(f.x, xv[2 * k], acc);
    acc = fmaf(f.y, xv[2 * k + 1], acc);
  }
}

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
        *dst = beta == 0.0f ? v : beta * *dst + v;
      }
    }
}

constexpr int kStreamWarps = 4;

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

// Ablation (F, bench_gemv's "s2+" columns): session 2's kernel with one feature of today's kernel each, to find
// which one costs: kSmem a static __shared__ double[4][NT] and a __syncthreads behind a runtime-false flag (the
// out_ss reduction), kParam a 256-byte parameter struct by value (GemvFusion), kPre the first batch of loads before
// the loop (and a runtime-false PDL wait), kActive no early return for warps past the last row.
enum : int { kSmem = 1, kParam = 2, kPre = 4, kActive = 8 };
struct BigParam {
  const void* p[24];
  bool flag[16];
};
struct NoParam {
  bool flag[4];
};
template <int F>
using Param = std::conditional_t<(F & kParam) != 0, BigParam, NoParam>;

template <int NT, int R, int F = 0>
__global__ void __launch_bounds__(kStreamWarps * 32) stream_kernel(const __half* __restrict__ w, int64_t rows,
                                                                   int64_t cols, const float* __restrict__ x, int n,
                                                                   float* __restrict__ y, float beta, Param<F> bp) {
  constexpr int U = 8 / R;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t r0 = (int64_t(blockIdx.x) * kStreamWarps + warp) * R;
  const bool active = r0 < rows;
  if (!(F & kActive) && !active) return;
  const bool flag = bp.flag[3];  // false
  const __half* wrow[R];
#pragma unroll
  for (int rr = 0; rr < R; ++rr) wrow[rr] = w + (r0 + rr < rows ? r0 + rr : rows - 1) * cols;
  float acc[R][NT] = {};
  int64_t c = lane * 8;
  if constexpr ((F & kPre) != 0) {
    uint4 wv[U][R];
    const bool first = active && c + (U - 1) * 256 < cols;
    if (first)
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int rr = 0; rr < R; ++rr) wv[u][rr] = stream_load(wrow[rr] + c + u * 256);
    if (flag) asm volatile("griddepcontrol.wait;" ::: "memory");
    if (first) {
#pragma unroll
      for (int u = 0; u < U; ++u) accumulate_stream<NT, R>(wv[u], x, cols, c + u * 256, acc);
      c += U * 256;
    }
  }
  if (active) {
  for (; c + (U - 1) * 256 < cols; c += U * 256) {
    uint4 wv[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int rr = 0; rr < R; ++rr) wv[u][rr] = stream_load(wrow[rr] + c + u * 256);
#pragma unroll
    for (int u = 0; u < U; ++u) accumulate_stream<NT, R>(wv[u], x, cols, c + u * 256, acc);
  }
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
  }
  if constexpr ((F & kSmem) != 0) {
    __shared__ double part[kStreamWarps][NT];
    if (flag || beta == 12345.0f) {  // never true in the benchmark: the code and its shared memory exist
      part[warp][0] = acc[0][0];
      __syncthreads();
      if (threadIdx.x == 0) y[0] = float(part[1][0] + part[2][0]);
    }
  }
  reduce_store<R, NT>(acc, r0, lane, rows, n, y, beta);
}

template <int R, int F = 0>
void launch(const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y, float beta,
            cudaStream_t s) {
  const unsigned blocks = unsigned((rows + kStreamWarps * R - 1) / (kStreamWarps * R));
  const int threads = kStreamWarps * 32;
  const Param<F> bp{};
  if (n == 1) stream_kernel<1, R, F><<<blocks, threads, 0, s>>>(w, rows, cols, x, 1, y, beta, bp);
  else if (n == 2) stream_kernel<2, R, F><<<blocks, threads, 0, s>>>(w, rows, cols, x, 2, y, beta, bp);
  else if (n == 3) stream_kernel<3, R, F><<<blocks, threads, 0, s>>>(w, rows, cols, x, 3, y, beta, bp);
  else stream_kernel<4, R, F><<<blocks, threads, 0, s>>>(w, rows, cols, x, 4, y, beta, bp);
}

__global__ void spin_kernel(uint64_t ns) {
  uint64_t t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); while (t - t0 < ns);
}

}  // namespace

// Session 2's dispatch: one row per warp at one token row, two above.
void session2_gemv(const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y, float beta,
                   cudaStream_t s) {
  if (n == 1) launch<1>(w, rows, cols, x, n, y, beta, s);
  else launch<2>(w, rows, cols, x, n, y, beta, s);
}

// Session 2's kernel at one row per warp with ablation features (0..15, see kSmem..kActive).
void session2_gemv_ablation(int features, const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n,
                            float* y, cudaStream_t s) {
  switch (features) {
    case kSmem: return launch<1, kSmem>(w, rows, cols, x, n, y, 0.0f, s);
    case kParam: return launch<1, kParam>(w, rows, cols, x, n, y, 0.0f, s);
    case kPre: return launch<1, kPre>(w, rows, cols, x, n, y, 0.0f, s);
    case kActive: return launch<1, kActive>(w, rows, cols, x, n, y, 0.0f, s);
    case 15: return launch<1, 15>(w, rows, cols, x, n, y, 0.0f, s);
    default: return launch<1, 0>(w, rows, cols, x, n, y, 0.0f, s);
  }
}

void spin(double us, cudaStream_t s) { spin_kernel<<<1, 1, 0, s>>>(uint64_t(us * 1e3)); }

}  // namespace adamas::gpu::bench
