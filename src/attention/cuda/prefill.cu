// Dense causal prefill attention on tensor cores (see prefill.h). Fragment layouts are those of PTX
// mma.m16n8k16 (row.col): A (16x16) a0 = (r, c..c+1), a1 = (r+8, c), a2 = (r, c+8), a3 = (r+8, c+8) with
// r = lane/4, c = 2*(lane%4); B (16x8, k x n) b0 = (k = c..c+1, n = lane/4), b1 = (k+8, n); C (16x8) c0,c1 =
// (r, c..c+1), c2,c3 = (r+8, c..c+1). S = Q K^T reads Q and K rows from shared memory as 32-bit pairs (padded rows:
// conflict-free); P (the C fragments of S, rounded to f16) is reused in registers as the A operand of P V; V's
// B fragments come from ldmatrix.trans.
#include <cuda_fp16.h>

#include <cfloat>
#include <cmath>

#include "adamas/cuda_attention.h"
#include "attention/cuda/common.cuh"
#include "attention/cuda/prefill.h"

namespace adamas::cuda {
namespace {

constexpr int kRows = 64;  // queries per block (4 warps x 16)
constexpr int kKeys = 64;  // keys per tile
constexpr int kThreads = 128;

struct Params {
  const float* q;
  int64_t n_queries, n_heads, q_stride;
  const __half* k;
  const __half* v;
  int64_t kv_heads, tokens, k_head_stride, k_token_stride, v_head_stride, v_token_stride;
  float scale_log2;  // scale * log2(e): scores in base 2
  float* out;
  int64_t out_stride;
};

template <int D>
__host__ __device__ constexpr int row_halves() { return D + 8; }  // padded shared rows: 32-bit fragment reads hit 32 distinct banks
template <int D>
__host__ __device__ constexpr size_t shared_bytes() { return size_t(kRows + 4 * kKeys) * row_halves<D>() * sizeof(__half); }

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t shared_u32(const __half* p) { return *reinterpret_cast<const uint32_t*>(p); }

__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4_trans(const __half* p, uint32_t* r) {
  const unsigned addr = unsigned(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// 16 bytes global -> shared, zero-filled when !valid (rows past the block's last key: never read as data, and
// zeros keep 0 * garbage out of P V).
__device__ __forceinline__ void copy16(__half* dst, const __half* src, bool valid) {
  const unsigned addr = unsigned(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void copy_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void copy_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

template <int D>
__device__ void load_tile(const Params& p, int64_t kh, int64_t tile, int64_t kv_end, __half* ks, __half* vs) {
  constexpr int LD = row_halves<D>(), chunks = D / 8;
  for (int i = threadIdx.x; i < kKeys * chunks; i += kThreads) {
    const int r = i / chunks, c = (i % chunks) * 8;
    const int64_t key = tile * kKeys + r;
    const bool valid = key < kv_end;
    const int64_t t = valid ? key : 0;
    copy16(ks + r * LD + c, p.k + kh * p.k_head_stride + t * p.k_token_stride + c, valid);
    copy16(vs + r * LD + c, p.v + kh * p.v_head_stride + t * p.v_token_stride + c, valid);
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads) prefill_kernel(Params p) {
  constexpr int LD = row_halves<D>(), KS = D / 16, NT = D / 8;
  extern __shared__ __align__(16) __half smem[];
  __half* qs = smem;
  __half* ks = qs + kRows * LD;  // [2][kKeys][LD]
  __half* vs = ks + 2 * kKeys * LD;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // The longest blocks (last queries) first: causal work grows with the block index.
  const int64_t i0 = int64_t(gridDim.x - 1 - blockIdx.x) * kRows;
  const int64_t h = blockIdx.y, kh = h / (p.n_heads / p.kv_heads);
  const int64_t p0 = p.tokens - p.n_queries;
  const int64_t last_q = min(i0 + kRows, p.n_queries) - 1;
  const int64_t kv_end = p0 + last_q + 1, n_tiles = (kv_end + kKeys - 1) / kKeys;

  load_tile<D>(p, kh, 0, kv_end, ks, vs);
  copy_commit();
  // Q rows (f32 -> f16, times scale * log2 e); rows past the last query are zeros.
  for (int i = threadIdx.x; i < kRows * D / 4; i += kThreads) {
    const int r = i / (D / 4), c = (i % (D / 4)) * 4;
    float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
    if (i0 + r < p.n_queries) x = *reinterpret_cast<const float4*>(p.q + (i0 + r) * p.q_stride + h * D + c);
    uint32_t* dst = reinterpret_cast<uint32_t*>(qs + r * LD + c);
    dst[0] = pack_half2(x.x * p.scale_log2, x.y * p.scale_log2);
    dst[1] = pack_half2(x.z * p.scale_log2, x.w * p.scale_log2);
  }
  __syncthreads();
  const int fr = lane / 4, fc = 2 * (lane % 4);  // fragment row / column of this lane
  const int wr = warp * 16;
  uint32_t qf[KS][4];
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
    const __half* base = qs + (wr + fr) * LD + kk * 16 + fc;
    qf[kk][0] = shared_u32(base);
    qf[kk][1] = shared_u32(base + 8 * LD);
    qf[kk][2] = shared_u32(base + 8);
    qf[kk][3] = shared_u32(base + 8 * LD + 8);
  }
  const int64_t qpos[2] = {p0 + i0 + wr + fr, p0 + i0 + wr + fr + 8};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float o[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;

  for (int64_t t = 0; t < n_tiles; ++t) {
    const int b = int(t & 1);
    if (t + 1 < n_tiles) {
      load_tile<D>(p, kh, t + 1, kv_end, ks + (b ^ 1) * kKeys * LD, vs + (b ^ 1) * kKeys * LD);
      copy_commit();
      copy_wait<1>();
    } else {
      copy_wait<0>();
    }
    __syncthreads();
    const __half* kt = ks + b * kKeys * LD;
    const __half* vt = vs + b * kKeys * LD;
    float s[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk)
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const __half* kr = kt + (j * 8 + fr) * LD + kk * 16 + fc;
        mma16816(s[j], qf[kk], shared_u32(kr), shared_u32(kr + 8));
      }
    // Causal mask where the tile reaches past the warp's first query.
    if ((t + 1) * kKeys - 1 > p0 + i0 + wr) {
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t key = t * kKeys + j * 8 + fc + (e & 1);
          if (key > qpos[e >> 1]) s[j][e] = -INFINITY;
        }
    }
    // Online softmax per row (a row's 64 scores are spread over the 4 lanes of a quad).
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 8; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * rr], s[j][2 * rr + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[rr], mx);  // finite: key 0 is in every row's first tile
      const float corr = exp2f(m[rr] - m_new);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        s[j][2 * rr] = exp2f(s[j][2 * rr] - m_new);
        s[j][2 * rr + 1] = exp2f(s[j][2 * rr + 1] - m_new);
        sum += s[j][2 * rr] + s[j][2 * rr + 1];
      }
      l[rr] = l[rr] * corr + sum;
      m[rr] = m_new;
#pragma unroll
      for (int j = 0; j < NT; ++j) o[j][2 * rr] *= corr, o[j][2 * rr + 1] *= corr;
    }
    // O += P V, P's C fragments reused as A fragments (16 keys per step).
#pragma unroll
    for (int k2 = 0; k2 < kKeys / 16; ++k2) {
      const uint32_t a[4] = {pack_half2(s[2 * k2][0], s[2 * k2][1]), pack_half2(s[2 * k2][2], s[2 * k2][3]),
                             pack_half2(s[2 * k2 + 1][0], s[2 * k2 + 1][1]),
                             pack_half2(s[2 * k2 + 1][2], s[2 * k2 + 1][3])};
      const int mat = lane / 8, row = lane % 8;
#pragma unroll
      for (int j = 0; j < NT; j += 2) {
        uint32_t bf[4];
        ldmatrix_x4_trans(vt + (k2 * 16 + (mat & 1) * 8 + row) * LD + (j + (mat >> 1)) * 8, bf);
        mma16816(o[j], a, bf[0], bf[1]);
        mma16816(o[j + 1], a, bf[2], bf[3]);
      }
    }
    __syncthreads();  // this buffer is refilled two tiles on
  }
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 1);
    l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 2);
    const int64_t i = i0 + wr + fr + 8 * rr;
    if (i >= p.n_queries) continue;
    float* dst = p.out + i * p.out_stride + h * D + fc;
    const float inv = 1.0f / l[rr];
#pragma unroll
    for (int j = 0; j < NT; ++j)
      *reinterpret_cast<float2*>(dst + j * 8) = make_float2(o[j][2 * rr] * inv, o[j][2 * rr + 1] * inv);
  }
}

template <int D>
void launch(const Params& p, cudaStream_t stream) {
  static const bool attributes = [] {
    check_cuda(cudaFuncSetAttribute(prefill_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(shared_bytes<D>())),
               "prefill kernel attributes");
    return true;
  }();
  (void)attributes;
  const dim3 grid(unsigned((p.n_queries + kRows - 1) / kRows), unsigned(p.n_heads));
  prefill_kernel<D><<<grid, kThreads, shared_bytes<D>(), stream>>>(p);
  check_cuda(cudaGetLastError(), "prefill kernel launch");
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

bool prefill_supported(const HeadsView& k, const HeadsView& v) {
  auto fits = [](const HeadsView& x) {
    return x.dtype == DType::f16 && (x.dim == 64 || x.dim == 128) && x.token_stride % 8 == 0 &&
           x.head_stride % 8 == 0 && aligned16(x.data);
  };
  return fits(k) && fits(v) && k.dim == v.dim;
}

void attend_dense_causal(const float* q, int64_t n_queries, int64_t n_heads, int64_t q_stride, const HeadsView& k,
                         const HeadsView& v, float scale, float* out, int64_t out_stride, cudaStream_t stream) {
  constexpr const char* where = "cuda prefill attention: ";
  CUDA_REQUIRE(prefill_supported(k, v), ErrorKind::unsupported, where, "K/V must be f16 with head_dim 64 or 128 and ",
               "16-byte aligned rows (got ", dtype_name(k.dtype), " / ", dtype_name(v.dtype), ", dim ", k.dim, " / ",
               v.dim, ")");
  CUDA_REQUIRE(k.heads == v.heads && k.tokens == v.tokens && k.heads > 0, ErrorKind::shape_mismatch, where, "K [",
               k.heads, " heads, ", k.tokens, " tokens] and V [", v.heads, ", ", v.tokens, "] differ");
  CUDA_REQUIRE(n_queries > 0 && n_queries <= k.tokens, ErrorKind::invalid_argument, where, n_queries,
               " queries over ", k.tokens, " cached tokens (expected 1 to the tokens)");
  CUDA_REQUIRE(n_heads > 0 && n_heads % k.heads == 0, ErrorKind::shape_mismatch, where, n_heads,
               " query heads is not a positive multiple of the ", k.heads, " KV heads");
  CUDA_REQUIRE(q && out && aligned16(q) && aligned16(out) && q_stride % 4 == 0 && out_stride % 4 == 0 &&
                   q_stride >= n_heads * k.dim && out_stride >= n_heads * k.dim,
               ErrorKind::invalid_argument, where, "q/out must be 16-byte aligned with strides >= ", n_heads * k.dim,
               " and multiples of 4 (got ", q_stride, " and ", out_stride, ")");
  Params p{q, n_queries, n_heads, q_stride, static_cast<const __half*>(k.data), static_cast<const __half*>(v.data),
           k.heads, k.tokens, k.head_stride, k.token_stride, v.head_stride, v.token_stride,
           float(double(scale) * 1.4426950408889634), out, out_stride};
  if (k.dim == 64) launch<64>(p, stream);
  else launch<128>(p, stream);
}

}  // namespace adamas::cuda
