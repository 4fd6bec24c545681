// Causal prefill attention over the cache (see gpu_ops.h). Chunks of more than 4 queries (the rows from which the
// matrix products take f16 activations too) and head_dim 64/128 run on tensor cores
// (adamas::cuda::attend_dense_causal, src/attention/cuda/prefill.cu); shorter chunks and head_dim 256 run the simple
// f32 kernel below: one block per (query, head), tiles of 128 keys, online softmax. ADAMAS_PREFILL=simple forces
// the simple kernel (the before/after prefill benchmark, bench/cuda/bench_prefill.cpp).
#include <cfloat>
#include <cstdlib>
#include <cstring>

#include "attention/cuda/prefill.h"
#include "engine/cuda/gpu_ops.h"

namespace adamas::gpu {
namespace {

constexpr int kTile = 128;  // keys per tile = threads per block

__device__ float block_reduce(float v, float* red, bool is_max) {
  for (int o = 16; o > 0; o >>= 1) {
    const float u = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, u) : v + u;
  }
  __syncthreads();
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < kTile / 32; ++w) r = is_max ? fmaxf(r, red[w]) : r + red[w];
  return r;
}

__global__ void __launch_bounds__(kTile) prefill_kernel(const float* q, int64_t p0, int64_t n_heads, CacheLayout c,
                                                        int64_t layer, int32_t slot, float scale, float* out) {
  __shared__ float qs[256], p[kTile], red[kTile / 32];
  const int64_t qi = blockIdx.x, h = blockIdx.y, hd = c.head_dim;
  const int64_t kh = h / (n_heads / c.kv_heads), last = p0 + qi;
  const float* qrow = q + (qi * n_heads + h) * hd;
  for (int64_t d = threadIdx.x; d < hd; d += kTile) qs[d] = qrow[d];
  const uint8_t* layer_base = c.base + int64_t(slot) * c.slot_bytes + layer * c.layer_bytes;
  const __half* K = reinterpret_cast<const __half*>(layer_base + c.k_off) + kh * c.capacity * hd;
  const __half* V = reinterpret_cast<const __half*>(layer_base + c.v_off) + kh * c.capacity * hd;
  float m = -FLT_MAX, l = 0.0f, acc[2] = {0.0f, 0.0f};  // dims threadIdx.x and threadIdx.x + 128
  __syncthreads();
  for (int64_t t0 = 0; t0 <= last; t0 += kTile) {
    const int64_t j = t0 + threadIdx.x;
    float s = -FLT_MAX;
    if (j <= last) {
      float dot = 0.0f;
      for (int64_t d = 0; d < hd; ++d) dot = fmaf(qs[d], __half2float(K[j * hd + d]), dot);
      s = dot * scale;
    }
    const float m_new = fmaxf(m, block_reduce(s, red, true));
    const float pj = j <= last ? expf(s - m_new) : 0.0f;
    p[threadIdx.x] = pj;
    const float corr = expf(m - m_new);
    l = l * corr + block_reduce(pj, red, false);  // its barriers also publish p[]
    const int64_t nt = last - t0 + 1 < kTile ? last - t0 + 1 : kTile;
    for (int k = 0; k < 2; ++k) {
      const int64_t d = threadIdx.x + k * kTile;
      if (d >= hd) continue;
      float a = acc[k] * corr;
      for (int64_t jj = 0; jj < nt; ++jj) a = fmaf(p[jj], __half2float(V[(t0 + jj) * hd + d]), a);
      acc[k] = a;
    }
    m = m_new;
    __syncthreads();  // p[] is rewritten by the next tile
  }
  for (int k = 0; k < 2; ++k) {
    const int64_t d = threadIdx.x + k * kTile;
    if (d < hd) out[(qi * n_heads + h) * hd + d] = acc[k] / l;
  }
}

}  // namespace

void prefill_attention(const float* q, int64_t n, int64_t p0, int64_t n_heads, const CacheLayout& cache,
                       int64_t layer, int32_t slot, float* out, cudaStream_t s) {
  const float scale = 1.0f / sqrtf(float(cache.head_dim));
  const char* env = std::getenv("ADAMAS_PREFILL");  // read per call: the benchmark switches it between runs
  const bool simple_only = env && std::strcmp(env, "simple") == 0;
  const int64_t hd = cache.head_dim, kvh = cache.kv_heads, cap = cache.capacity;
  const uint8_t* base = cache.base + int64_t(slot) * cache.slot_bytes + layer * cache.layer_bytes;
  const HeadsView k{base + cache.k_off, DType::f16, kvh, p0 + n, hd, cap * hd, hd};
  const HeadsView v{base + cache.v_off, DType::f16, kvh, p0 + n, hd, cap * hd, hd};
  if (!simple_only && n > 4 && cuda::prefill_supported(k, v))
    return cuda::attend_dense_causal(q, n, n_heads, n_heads * hd, k, v, scale, out, n_heads * hd, s);
  prefill_kernel<<<dim3(unsigned(n), unsigned(n_heads)), kTile, 0, s>>>(q, p0, n_heads, cache, layer, slot, scale,
                                                                       out);
}

}  // namespace adamas::gpu
