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

#include "engine/cuda/cache_append.cuh"
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
// Optional fusions (GemvFusion, gpu_ops.h): an RMSNorm prologue on x (NORM), the sum of squares of the stored
// outputs (the next RMSNorm's input) and SwiGLU over (gate, up) row pairs in the epilogue, and programmatic dependent
// launch: the kernel is launched while the previous one ends and waits for it before its first load.
constexpr int kStreamWarps = 4;

// Read-only, read-once weights: bypass L1 (x lives there), normal L2 policy.
__device__ __forceinline__ uint4 stream_load(const __half* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ void pdl_launch_dependents() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

template <int NT, int R, bool NORM>
__device__ __forceinline__ void accumulate_stream(const uint4 (&wv)[R], const float* x, int64_t cols, int64_t c,
                                                  const float (&s)[NT], const float* g, float (&acc)[R][NT]) {
  float gv[8];
  if constexpr (NORM) {
    const float4 ga = __ldg(reinterpret_cast<const float4*>(g + c)), gb = __ldg(reinterpret_cast<const float4*>(g + c) + 1);
    gv[0] = ga.x, gv[1] = ga.y, gv[2] = ga.z, gv[3] = ga.w, gv[4] = gb.x, gv[5] = gb.y, gv[6] = gb.z, gv[7] = gb.w;
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float4* xp = reinterpret_cast<const float4*>(x + t * cols + c);
    const float4 xa = __ldg(xp), xb = __ldg(xp + 1);
    float xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
    if constexpr (NORM) {
#pragma unroll
      for (int k = 0; k < 8; ++k) xv[k] = __fmul_rn(__fmul_rn(xv[k], s[t]), gv[k]);  // rms_norm_rows' x * s * w
    }
#pragma unroll
    for (int rr = 0; rr < R; ++rr) fma8(wv[rr], xv, acc[rr][t]);
  }
}

// A warp's key `head` of token t is complete in the cache: the whole warp reads it back (L2: other SMs wrote it) and
// stores its code.
template <int D>
__device__ __forceinline__ void encode_cached_key(const GemvRope& rp, int64_t s, int64_t p, int64_t head, int lane) {
  constexpr int E = D / 32;
  const __half* row = k_row(rp.cache, s, rp.layer, head, p) + lane * E;
  float x[E];
#pragma unroll
  for (int j = 0; j < E; ++j) x[j] = __half2float(__ldcg(row + j));
  warp_encode_key<D>(x, static_cast<const cuda::detail::Thr*>(rp.thresholds)[0], rp.scale,
                     code_row(rp.cache, s, rp.layer, head, p));
}

// The qkv epilogue (GemvRope): v[0][t], v[1][t] are rows r0, r0 + 1 (an even row: one rope pair) of token t.
template <int NT>
__device__ __forceinline__ void rope_epilogue(const float (&v)[2][NT], int64_t r0, int lane, int n,
                                              const GemvRope& rp) {
  const CacheLayout& c = rp.cache;
  const int64_t hd = c.head_dim, qd = rp.n_heads * hd, kvd = c.kv_heads * hd, e = r0 % hd;
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    if (t >= n) continue;
    float a = v[0][t], b = v[1][t];
    const int64_t p = rp.pos[t], s = rp.slot[t];
    if (r0 < qd + kvd && e / 2 < rp.n_pairs) rope_pair(a, b, p, rp.inv_freq[e / 2]);
    if (r0 < qd) {
      if (lane == 0) rp.q_out[t * qd + r0] = a, rp.q_out[t * qd + r0 + 1] = b;
      continue;
    }
    const bool is_k = r0 < qd + kvd;
    const int64_t head = (r0 - qd - (is_k ? 0 : kvd)) / hd;
    __half* dst = k_row(c, s, rp.layer, head, p) + e + (is_k ? 0 : (c.v_off - c.k_off) / 2);
    if (lane == 0) dst[0] = __float2half_rn(a), dst[1] = __float2half_rn(b);
    if (!is_k || !c.has_codes) continue;
    int last = 0;
    if (lane == 0) {
      __threadfence();  // this pair is visible before it is counted
      last = atomicAdd(rp.counters + t * c.kv_heads + head, 1) == int(hd / 2) - 1;
    }
    if (!__shfl_sync(0xffffffffu, last, 0)) continue;
    __threadfence();  // every other pair of the head was fenced before its count
    if (hd == 64) encode_cached_key<64>(rp, s, p, head, lane);
    else if (hd == 128) encode_cached_key<128>(rp, s, p, head, lane);
    else encode_cached_key<256>(rp, s, p, head, lane);
    if (lane == 0) rp.counters[t * c.kv_heads + head] = 0;
  }
}

template <int NT, int R, bool NORM, bool ROPE>
__global__ void __launch_bounds__(kStreamWarps * 32) stream_kernel(const __half* __restrict__ w, int64_t rows,
                                                                   int64_t cols, const float* __restrict__ x, int n,
                                                                   float* __restrict__ y, float beta, GemvFusion f) {
  constexpr int U = 8 / R;  // 8 16-byte weight loads in flight per lane
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t r0 = (int64_t(blockIdx.x) * kStreamWarps + warp) * R;
  // Session 2's shape around the loop (bench_gemv's ablation, session 4): loading a first batch before the PDL wait
  // and keeping warps past the last row alive (for a block barrier) each made every call 1-2 us slower, more than
  // the overlap they bought; so the wait comes first and such warps leave (no barrier below).
  if (f.pdl) {
    pdl_launch_dependents();
    pdl_wait();  // x, y and the norm sums are the previous kernels' outputs
  }
  if (r0 >= rows) return;  // whole warps only: the shuffles below see full warps
  const __half* wrow[R];
#pragma unroll
  for (int rr = 0; rr < R; ++rr) wrow[rr] = w + (r0 + rr < rows ? r0 + rr : rows - 1) * cols;
  float s[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t)
    s[t] = NORM ? float(1.0 / sqrt(f.norm_ss[t] / double(cols) + double(f.eps))) : 1.0f;  // rms_norm_rows' s
  float acc[R][NT] = {};
  // Columns lane * 8 + 256 j in increasing j, whatever U and R: each sum's order is that of every variant.
  // Full batches of U column steps load and add without guards: a guard around each (asm volatile) load becomes a
  // branch, which splits the batch into basic blocks and serialises the x loads (6-13% slower, bench_gemv 05:10).
  int64_t c = lane * 8;
  for (; c + (U - 1) * 256 < cols; c += U * 256) {
    uint4 wv[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int rr = 0; rr < R; ++rr) wv[u][rr] = stream_load(wrow[rr] + c + u * 256);
#pragma unroll
    for (int u = 0; u < U; ++u) accumulate_stream<NT, R, NORM>(wv[u], x, cols, c + u * 256, s, f.norm_w, acc);
  }
  {  // tail: fewer than U steps left (cols need not be a multiple of 256); loads first, then the sums in order
    uint4 wv[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int rr = 0; rr < R; ++rr)
        if (c + u * 256 < cols) wv[u][rr] = stream_load(wrow[rr] + c + u * 256);
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (c + u * 256 < cols) accumulate_stream<NT, R, NORM>(wv[u], x, cols, c + u * 256, s, f.norm_w, acc);
  }
  if (!ROPE && !f.swiglu && !f.out_ss) return reduce_store<R, NT>(acc, r0, lane, rows, n, y, beta);
  float v[R][NT];
#pragma unroll
  for (int rr = 0; rr < R; ++rr)
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      v[rr][t] = acc[rr][t];
      for (int o = 16; o > 0; o >>= 1) v[rr][t] += __shfl_xor_sync(0xffffffffu, v[rr][t], o);
    }
  if constexpr (ROPE) {
    static_assert(R == 2, "the rope epilogue takes a pair of rows per warp");
    rope_epilogue<NT>(v, r0, lane, n, f.rope);
    return;
  }
  if (lane != 0) return;
  if constexpr (R == 2) {
    if (f.swiglu) {  // rows (2i, 2i + 1) = (gate i, up i); r0 is even; y has rows / 2 columns
#pragma unroll
      for (int t = 0; t < NT; ++t)
        if (t < n) {
          const float g = v[0][t];
          y[t * (rows / 2) + r0 / 2] = g / (1.0f + expf(-g)) * v[1][t];  // swiglu_rows' expression
        }
      return;
    }
  }
  double sq[NT] = {};
#pragma unroll
  for (int rr = 0; rr < R; ++rr)
#pragma unroll
    for (int t = 0; t < NT; ++t)
      if (t < n && r0 + rr < rows) {
        float* dst = y + t * rows + r0 + rr;
        const float out = beta == 0.0f ? v[rr][t] : beta * *dst + v[rr][t];
        *dst = out;
        sq[t] += double(out) * out;
      }
  // One atomic per warp and token row (a block sum in shared memory would need every warp at a barrier).
  if (f.out_ss)
#pragma unroll
    for (int t = 0; t < NT; ++t)
      if (t < n) atomicAdd(f.out_ss + t, sq[t]);
}

// Launches with the programmatic-serialization attribute when f.pdl (the kernel then waits on the previous one).
template <int NT, int R, bool NORM, bool ROPE>
void launch_stream_n(unsigned blocks, const __half* w, int64_t rows, int64_t cols, const float* x, float* y,
                     float beta, const GemvFusion& f, cudaStream_t s) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(blocks);
  cfg.blockDim = dim3(kStreamWarps * 32);
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = f.pdl ? 1 : 0;
  cudaLaunchKernelEx(&cfg, stream_kernel<NT, R, NORM, ROPE>, w, rows, cols, x, NT, y, beta, f);
}

template <int R, bool NORM, bool ROPE = false>
void launch_stream_norm(const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y, float beta,
                        const GemvFusion& f, cudaStream_t s) {
  const unsigned blocks = unsigned((rows + kStreamWarps * R - 1) / (kStreamWarps * R));
  if (n == 1) launch_stream_n<1, R, NORM, ROPE>(blocks, w, rows, cols, x, y, beta, f, s);
  else if (n == 2) launch_stream_n<2, R, NORM, ROPE>(blocks, w, rows, cols, x, y, beta, f, s);
  else if (n == 3) launch_stream_n<3, R, NORM, ROPE>(blocks, w, rows, cols, x, y, beta, f, s);
  else launch_stream_n<4, R, NORM, ROPE>(blocks, w, rows, cols, x, y, beta, f, s);
}

template <int R>
void launch_stream(const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y, float beta,
                   cudaStream_t s, const GemvFusion& f = {}) {
  if constexpr (R == 2) {
    if (f.rope.q_out) {
      if (f.norm_ss) return launch_stream_norm<2, true, true>(w, rows, cols, x, n, y, beta, f, s);
      return launch_stream_norm<2, false, true>(w, rows, cols, x, n, y, beta, f, s);
    }
  }
  if (f.norm_ss) launch_stream_norm<R, true>(w, rows, cols, x, n, y, beta, f, s);
  else launch_stream_norm<R, false>(w, rows, cols, x, n, y, beta, f, s);
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

void skinny_matmul_fused(const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y,
                         float beta, const GemvFusion& f, cudaStream_t s) {
  // SwiGLU and RoPE need both rows of a pair in one warp: two rows per warp. At one token, small matrices (o) also
  // run faster so (bench_gemv: 14.8 vs 15.8 us at 4096 x 4096), larger ones not (qkv 37.3 vs 37.0 us).
  const bool small = rows <= 4096 && cols <= 4096;
  if (f.swiglu || f.rope.q_out || n > 1 || small) launch_stream<2>(w, rows, cols, x, n, y, beta, s, f);
  else launch_stream<1>(w, rows, cols, x, n, y, beta, s, f);
}

}  // namespace adamas::gpu
