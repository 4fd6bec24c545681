// Element-wise and per-row kernels of the GPU forward: embedding, RMSNorm, RoPE + cache append, codes append,
// SwiGLU, argmax, GQA head gathers, conversions and random fills. Arithmetic follows the CPU engine
// (src/model/llama.cpp) so that greedy decoding matches it token for token.
#include "engine/cuda/gpu_ops.h"

#include <cfloat>
#include <cmath>

#include "engine/cuda/cache_append.cuh"

namespace adamas::gpu {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n, int threads = kThreads) { return unsigned((n + threads - 1) / threads); }

__global__ void embed_kernel(const __half* table, const int32_t* tokens, int64_t dim, float* x) {
  const int64_t r = blockIdx.y;
  const __half* row = table + int64_t(tokens[r]) * dim;
  for (int64_t i = blockIdx.x * blockDim.x + threadIdx.x; i < dim; i += int64_t(gridDim.x) * blockDim.x)
    x[r * dim + i] = __half2float(row[i]);
}

template <class T>
__device__ T block_sum(T v, T* shared);

// One block per row: x[r] and its sum of squares (double, as rms_norm_kernel) for the fused first RMSNorm.
__global__ void embed_ss_kernel(const __half* table, const int32_t* tokens, int64_t dim, float* x, double* ss) {
  __shared__ double part[32];
  const int64_t r = blockIdx.x;
  const __half* row = table + int64_t(tokens[r]) * dim;
  double acc = 0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = __half2float(row[i]);
    x[r * dim + i] = v;
    acc += double(v) * v;
  }
  acc = block_sum(acc, part);
  if (threadIdx.x == 0) ss[r] = acc;
}

template <class T>
__device__ T block_sum(T v, T* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // `shared` may still be read from a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < int(blockDim.x / 32); ++w) total += shared[w];
  return total;
}

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }

template <class Out>  // f32, or f16 for the matrix products of more than 4 rows (to_half's rounding)
__global__ void rms_norm_kernel(const float* x, const float* w, int64_t dim, float eps, Out* out) {
  __shared__ double part[32];
  const float* xr = x + blockIdx.x * dim;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += double(xr[i]) * xr[i];
  ss = block_sum(ss, part);
  const float s = float(1.0 / sqrt(ss / double(dim) + double(eps)));
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) store(out + blockIdx.x * dim + i, xr[i] * s * w[i]);
}

// One block per row; threads over (head, pair) of q and k, then v.
__global__ void rope_append_kernel(const float* qkv, int64_t n_heads, const float* inv_freq, int64_t n_pairs,
                                   const int32_t* pos, const int32_t* slot, CacheLayout c, int64_t layer,
                                   float* q_out, __half* k_new) {
  const int64_t r = blockIdx.x, hd = c.head_dim, kvh = c.kv_heads;
  const int64_t qd = n_heads * hd, kvd = kvh * hd, half_hd = hd / 2;
  const float* row = qkv + r * (qd + 2 * kvd);
  const int64_t p = pos[r], s = slot[r];
  const int64_t v_delta = (c.v_off - c.k_off) / 2;  // V row = K row + v_delta halves
  for (int64_t e = threadIdx.x; e < (n_heads + kvh) * half_hd; e += blockDim.x) {
    const int64_t h = e / half_hd, i = e % half_hd;
    const bool is_q = h < n_heads;
    const float* src = is_q ? row + h * hd : row + qd + (h - n_heads) * hd;
    float a = src[2 * i], b = src[2 * i + 1];
    if (i < n_pairs) rope_pair(a, b, p, inv_freq[i]);
    if (is_q) {
      q_out[r * qd + h * hd + 2 * i] = a;
      q_out[r * qd + h * hd + 2 * i + 1] = b;
    } else {
      const int64_t kh = h - n_heads;
      __half* dst = k_row(c, s, layer, kh, p);
      dst[2 * i] = __float2half_rn(a);
      dst[2 * i + 1] = __float2half_rn(b);
      k_new[r * kvd + kh * hd + 2 * i] = dst[2 * i];
      k_new[r * kvd + kh * hd + 2 * i + 1] = dst[2 * i + 1];
      const float* vsrc = row + qd + kvd + kh * hd;
      dst[v_delta + 2 * i] = __float2half_rn(vsrc[2 * i]);
      dst[v_delta + 2 * i + 1] = __float2half_rn(vsrc[2 * i + 1]);
    }
  }
}

// One warp per (row, head) of q and k: lane l holds elements [l E, l E + E), E = D / 32, so each rope pair (2i, 2i+1)
// is in one lane. Same arithmetic as rope_append_kernel; keys are encoded from their f16 values as stored.
template <int D>
__global__ void __launch_bounds__(256) rope_encode_kernel(const float* qkv, int64_t rows, int64_t n_heads,
                                                          const float* inv_freq, int64_t n_pairs, const int32_t* pos,
                                                          const int32_t* slot, CacheLayout c, int64_t layer,
                                                          const cuda::detail::Thr* thr, float scale, float* q_out,
                                                          bool pdl) {
  if (pdl) {
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    asm volatile("griddepcontrol.wait;" ::: "memory");  // qkv is the previous kernel's output
  }
  constexpr int E = D / 32;
  const int64_t heads = n_heads + c.kv_heads, qd = n_heads * D, kvd = c.kv_heads * D;
  const int64_t gw = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  if (gw >= rows * heads) return;
  const int lane = threadIdx.x % 32;
  const int64_t r = gw / heads, h = gw % heads;
  const float* row = qkv + r * (qd + 2 * kvd);
  const bool is_q = h < n_heads;
  const float* src = (is_q ? row + h * D : row + qd + (h - n_heads) * D) + lane * E;
  const int64_t p = pos[r];
  float x[E];
#pragma unroll
  for (int j = 0; j < E; j += 2) {
    float a = src[j], b = src[j + 1];
    const int64_t i = (lane * E + j) / 2;
    if (i < n_pairs) rope_pair(a, b, p, inv_freq[i]);
    x[j] = a, x[j + 1] = b;
  }
  if (is_q) {
#pragma unroll
    for (int j = 0; j < E; ++j) q_out[r * qd + h * D + lane * E + j] = x[j];
    return;
  }
  const int64_t kh = h - n_heads, s = slot[r];
  __half* dst = k_row(c, s, layer, kh, p) + lane * E;
  const int64_t v_delta = (c.v_off - c.k_off) / 2;  // V row = K row + v_delta halves
  const float* vsrc = row + qd + kvd + kh * D + lane * E;
#pragma unroll
  for (int j = 0; j < E; ++j) {
    const __half hk = __float2half_rn(x[j]);
    dst[j] = hk;
    x[j] = __half2float(hk);
    dst[v_delta + j] = __float2half_rn(vsrc[j]);
  }
  if (c.has_codes) warp_encode_key<D>(x, thr[0], scale, code_row(c, s, layer, kh, p));
}

__global__ void append_codes_kernel(const uint8_t* codes, const int32_t* pos, const int32_t* slot, CacheLayout c,
                                    int64_t layer) {
  const int64_t r = blockIdx.x, cb = c.head_dim / 4;
  for (int64_t e = threadIdx.x; e < c.kv_heads * cb; e += blockDim.x) {
    const int64_t h = e / cb, i = e % cb;
    uint8_t* dst = c.base + int64_t(slot[r]) * c.slot_bytes + layer * c.layer_bytes + c.codes_off +
                   (h * c.capacity + pos[r]) * cb;
    dst[i] = codes[r * c.kv_heads * cb + e];
  }
}

template <class Out>
__global__ void swiglu_kernel(const float* gu, int64_t rows, int64_t ffn, Out* act) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < rows * ffn; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / ffn, i = e % ffn;
    const float g = gu[r * 2 * ffn + 2 * i];
    store(act + e, g / (1.0f + expf(-g)) * gu[r * 2 * ffn + 2 * i + 1]);
  }
}

__global__ void argmax_kernel(const float* logits, int64_t vocab, int32_t* out) {
  __shared__ float sv[32];
  __shared__ int32_t si[32];
  const float* row = logits + blockIdx.x * vocab;
  float best = -FLT_MAX;
  int32_t bi = 0x7fffffff;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
    if (row[i] > best) best = row[i], bi = int32_t(i);  // strictly greater: the first index of a thread's max
  auto better = [](float v, int32_t i, float bv, int32_t b) { return v > bv || (v == bv && i < b); };
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, best, o);
    const int32_t i = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(v, i, best, bi)) best = v, bi = i;
  }
  if (threadIdx.x % 32 == 0) sv[threadIdx.x / 32] = best, si[threadIdx.x / 32] = bi;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < int(blockDim.x / 32); ++w)
      if (better(sv[w], si[w], best, bi)) best = sv[w], bi = si[w];
    out[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
  }
}

__global__ void group_part_kernel(const float* src, int64_t rows, int64_t kvh, int64_t g, int64_t j, int64_t hd,
                                  float* dst, bool gather) {
  const int64_t n = rows * kvh * hd;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = e % hd, h = (e / hd) % kvh, r = e / (hd * kvh);
    const int64_t full = (r * kvh * g + h * g + j) * hd + d;
    if (gather) dst[e] = src[full];
    else dst[full] = src[e];
  }
}

__global__ void to_half_kernel(const float* src, int64_t n, __half* dst) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x)
    dst[e] = __float2half_rn(src[e]);
}

__device__ uint32_t hash32(uint64_t seed, uint64_t i) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + i + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return uint32_t((z ^ (z >> 31)) >> 32);
}
__device__ float unit(uint32_t h) { return float(h) * (2.0f / 4294967296.0f) - 1.0f; }  // [-1, 1)

__global__ void fill_half_kernel(__half* p, int64_t n, uint64_t seed, float amp) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x)
    p[e] = __float2half_rn(amp * unit(hash32(seed, uint64_t(e))));
}
__global__ void fill_f32_kernel(float* p, int64_t n, uint64_t seed, float amp, float offset) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x)
    p[e] = offset + amp * unit(hash32(seed, uint64_t(e)));
}
__global__ void fill_bytes_kernel(uint8_t* p, int64_t n, uint64_t seed) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x)
    p[e] = uint8_t(hash32(seed, uint64_t(e)));
}

constexpr int64_t kPrefetchChunk = 8192;  // bytes per thread: 4096 threads for a 4096 x 4096 f16 matrix
__global__ void l2_prefetch_kernel(const char* p, int64_t bytes, bool evict_last) {
  const int64_t off = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * kPrefetchChunk;
  if (off >= bytes) return;
  const uint32_t n = uint32_t(bytes - off < kPrefetchChunk ? bytes - off : kPrefetchChunk);
  if (evict_last) {
    uint64_t policy;
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
    asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(p + off), "r"(n), "l"(policy)
                 : "memory");
  } else {
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + off), "r"(n) : "memory");
  }
}

unsigned grid_stride_blocks(int64_t n) { return unsigned(std::min<int64_t>((n + kThreads - 1) / kThreads, 4096)); }

}  // namespace

void embed_rows(const __half* table, const int32_t* tokens, int64_t rows, int64_t dim, float* x, cudaStream_t s,
                double* ss) {
  if (ss) return embed_ss_kernel<<<unsigned(rows), kThreads, 0, s>>>(table, tokens, dim, x, ss);
  embed_kernel<<<dim3(blocks_for(dim), unsigned(rows)), kThreads, 0, s>>>(table, tokens, dim, x);
}

void rms_norm_rows(const float* x, const float* w, int64_t rows, int64_t dim, float eps, float* out,
                   cudaStream_t s) {
  rms_norm_kernel<<<unsigned(rows), kThreads, 0, s>>>(x, w, dim, eps, out);
}

void rms_norm_rows_half(const float* x, const float* w, int64_t rows, int64_t dim, float eps, __half* out,
                        cudaStream_t s) {
  rms_norm_kernel<<<unsigned(rows), kThreads, 0, s>>>(x, w, dim, eps, out);
}

void rope_and_append(const float* qkv, int64_t rows, int64_t n_heads, const float* inv_freq, int64_t n_pairs,
                     const int32_t* pos, const int32_t* slot, const CacheLayout& cache, int64_t layer, float* q_out,
                     __half* k_new, cudaStream_t s) {
  rope_append_kernel<<<unsigned(rows), kThreads, 0, s>>>(qkv, n_heads, inv_freq, n_pairs, pos, slot, cache, layer,
                                                         q_out, k_new);
}

void rope_append_encode(const float* qkv, int64_t rows, int64_t n_heads, const float* inv_freq, int64_t n_pairs,
                        const int32_t* pos, const int32_t* slot, const CacheLayout& cache, int64_t layer,
                        const void* thresholds, float* q_out, bool pdl, cudaStream_t s) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(blocks_for(rows * (n_heads + cache.kv_heads), 8));
  cfg.blockDim = dim3(256);
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  const auto* thr = static_cast<const cuda::detail::Thr*>(thresholds);
  const float scale = 1.0f / std::sqrt(float(cache.head_dim));  // the encoder's expression: the same f32 value
  auto go = [&](auto kernel) {
    cudaLaunchKernelEx(&cfg, kernel, qkv, rows, n_heads, inv_freq, n_pairs, pos, slot, cache, layer, thr, scale,
                       q_out, pdl);
  };
  if (cache.head_dim == 64) go(rope_encode_kernel<64>);
  else if (cache.head_dim == 128) go(rope_encode_kernel<128>);
  else go(rope_encode_kernel<256>);
}

void append_codes(const uint8_t* codes, int64_t rows, const int32_t* pos, const int32_t* slot,
                  const CacheLayout& cache, int64_t layer, cudaStream_t s) {
  append_codes_kernel<<<unsigned(rows), 128, 0, s>>>(codes, pos, slot, cache, layer);
}

void swiglu_rows(const float* gu, int64_t rows, int64_t ffn, float* act, cudaStream_t s) {
  swiglu_kernel<<<grid_stride_blocks(rows * ffn), kThreads, 0, s>>>(gu, rows, ffn, act);
}

void swiglu_rows_half(const float* gu, int64_t rows, int64_t ffn, __half* act, cudaStream_t s) {
  swiglu_kernel<<<grid_stride_blocks(rows * ffn), kThreads, 0, s>>>(gu, rows, ffn, act);
}

void argmax_rows(const float* logits, int64_t rows, int64_t vocab, int32_t* out, cudaStream_t s) {
  argmax_kernel<<<unsigned(rows), 1024, 0, s>>>(logits, vocab, out);
}

void gather_group_part(const float* q, int64_t rows, int64_t kv_heads, int64_t group, int64_t j, int64_t hd,
                       float* part, cudaStream_t s) {
  group_part_kernel<<<grid_stride_blocks(rows * kv_heads * hd), kThreads, 0, s>>>(q, rows, kv_heads, group, j, hd,
                                                                                  part, true);
}

void scatter_group_part(const float* part, int64_t rows, int64_t kv_heads, int64_t group, int64_t j, int64_t hd,
                        float* out, cudaStream_t s) {
  group_part_kernel<<<grid_stride_blocks(rows * kv_heads * hd), kThreads, 0, s>>>(part, rows, kv_heads, group, j,
                                                                                  hd, out, false);
}

void to_half(const float* src, int64_t n, __half* dst, cudaStream_t s) {
  to_half_kernel<<<grid_stride_blocks(n), kThreads, 0, s>>>(src, n, dst);
}

void l2_prefetch(const void* p, int64_t bytes, bool evict_last, cudaStream_t s) {
  const int64_t threads = (bytes + kPrefetchChunk - 1) / kPrefetchChunk;
  l2_prefetch_kernel<<<unsigned((threads + 31) / 32), 32, 0, s>>>(static_cast<const char*>(p), bytes, evict_last);
}

void fill_random_half(__half* p, int64_t n, uint64_t seed, float amp, cudaStream_t s) {
  fill_half_kernel<<<grid_stride_blocks(n), kThreads, 0, s>>>(p, n, seed, amp);
}
void fill_random_f32(float* p, int64_t n, uint64_t seed, float amp, float offset, cudaStream_t s) {
  fill_f32_kernel<<<grid_stride_blocks(n), kThreads, 0, s>>>(p, n, seed, amp, offset);
}
void fill_random_bytes(uint8_t* p, int64_t n, uint64_t seed, cudaStream_t s) {
  fill_bytes_kernel<<<grid_stride_blocks(n), kThreads, 0, s>>>(p, n, seed);
}

}  // namespace adamas::gpu
