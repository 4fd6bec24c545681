// Dense decode attention of a GQA group on tensor cores (v7). A block (4 warps) takes a chunk of the rows of one
// (sequence, KV head) and computes all G <= 8 query heads of the group from each K/V row read once. Each warp
// streams its own tiles of 16 rows (32 at d = 64: 8 KB of K and V) through a 3-stage cp.async pipeline in shared
// memory, with no block barrier until its rows are done:
//   scores S = Q K^T by mma.m16n8k16: Q is the A operand (rows 0..G-1 of 16, the rest zero), K^T the B operand read
//     by ldmatrix from the row-major tile; the result has query row g = lane / 4 and keys 2t, 2t + 1 (t = lane % 4),
//   O^T += V^T P^T by mma.m16n8k16: V^T is the A operand (ldmatrix.trans), and the score fragments, turned into
//     weights, are exactly the B operand's layout (no shuffles); O^T holds d rows by 8 query columns, so nothing
//     of the accumulator is padding.
// Q and P are f32 values: each is split into 2 (f16) or 3 (bf16) terms of the K/V dtype whose sum carries about 22
// (f16) / 24 (bf16) bits, one mma per term with f32 accumulation, so the result stays within f32 rounding of the
// CPU's (the tensor cores have ~20x the throughput this needs: memory is the bound). Tiles are stored swizzled
// (16-byte chunk c of row r at c ^ (r & 7)) so that ldmatrix reads are free of bank conflicts. The warps' partials
// merge in shared memory, the blocks' partials through the last block of the (sequence, KV head) as in attend.cu.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include <cooperative_groups.h>

#include "attention/cuda/common.cuh"
#include "attention/cuda/dense_group.h"
#include "attention/cuda/launch.h"

namespace adamas::cuda::detail {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxRows = 8;  // query rows of a group (the n = 8 of the output mma)
constexpr int kMaxCluster = 8;  // v9: the blocks of a unit merge in one cluster of at most 8 (portable size)

// NB: sequences the parameter holds (v9: a launch of one sequence passes 1, ~0.1 KB instead of the 5.6 KB of
// kMaxBatch descriptors; the v3 probe measured +0.35 us of launch for the big parameter).
template <int NB>
struct DenseGroupParams {
  SeqDesc seq[NB];
  int batch;
  const float* q;  // [batch][n_heads][D]
  int n_heads, group;
  float qscale;  // scale * log2(e): scores in base-2 exponent units
  int chunk, max_chunks, units;
  int strided;  // the blocks of a unit take pieces of kWarps tiles round robin (else contiguous chunks of rows)
  int one_fence;  // v9: the arrival is thread 0's acq_rel atomic after the block barrier (v8: a fence in every thread,
                 // the last block's fence after it)
  float* part;     // [batch][n_heads][max_chunks][D] weighted V sums of the chunks
  float* part_ml;  // [batch][n_heads][max_chunks][2] max and weight sum
  uint32_t* done;  // [batch][units], zero between launches
  float* out;      // [batch][n_heads][D]
  unsigned long long* stamps;  // phase stamps (ADAMAS_CUDA_STAMPS builds), or null
};

// Tensor-core operations of a 16-bit dtype: pack two f32 into one register, mma.m16n8k16 with f32 accumulation.
template <class T>
struct Tc;
template <>
struct Tc<__half> {
  static constexpr int terms = 2;
  __device__ static uint32_t pack(float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  __device__ static float2 unpack(uint32_t u) { return __half22float2(*reinterpret_cast<const __half2*>(&u)); }
  __device__ static void mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                             uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
};
template <>
struct Tc<__nv_bfloat16> {
  static constexpr int terms = 3;
  __device__ static uint32_t pack(float a, float b) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  __device__ static float2 unpack(uint32_t u) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u));
  }
  __device__ static void mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                             uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
};

// (a, b) as a sum of Tc<T>::terms packed pairs: each term is the rounding of what the earlier terms left.
template <class T>
__device__ __forceinline__ void split_terms(float a, float b, uint32_t (&out)[Tc<T>::terms]) {
#pragma unroll
  for (int k = 0; k < Tc<T>::terms; ++k) {
    out[k] = Tc<T>::pack(a, b);
    const float2 r = Tc<T>::unpack(out[k]);
    a -= r.x, b -= r.y;
  }
}

// Four 8x8 b16 matrices from shared memory; lane l gives the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

template <int D>
constexpr int stage_rows() { return 16 * (128 / D); }  // 8 KB of K and V per warp and stage
// S: pipeline stages per warp (S - 1 tiles in flight while one is computed; default 3, NOTES v8-dense).
template <int D, class T, int S>
constexpr size_t group_smem() { return size_t(kWarps) * S * 2 * stage_rows<D>() * D * sizeof(T); }

__device__ __forceinline__ uint32_t atomic_add_acq_rel(uint32_t* p, uint32_t v) {
  uint32_t old;
  asm volatile("atom.add.acq_rel.gpu.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}

// v9: the merge of a unit's C = gridDim.x blocks (one cluster) through distributed shared memory. red: the block's
// 4 warp sums [kWarps][kMaxRows][D + 4], M / L: its max and weight sum per query row (M = -inf: no rows). Each block
// sums its warps into [G][D] behind red, then block k folds outputs [k S, k S + S) of the G x D over the C blocks.
// Called by every thread of every block of the cluster, at the kernel's top level (cluster barriers inside).
template <int D>
__device__ __forceinline__ void cluster_merge(float* red, const float* M, const float* L, int G, float* out,
                                              unsigned long long* stamps) {
  namespace cg = cooperative_groups;
  constexpr int LD = D + 4;
  float* mine = red + kWarps * kMaxRows * LD;  // [G][D]
  const int tid = threadIdx.x;
  for (int i = tid; i < G * D; i += kThreads) {
    const int q = i / D, d = i % D;
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) v += red[(w * kMaxRows + q) * LD + d];
    mine[i] = v;
  }
  ADAMAS_STAMP(stamps, 4);
  cg::cluster_group cl = cg::this_cluster();
  cl.sync();  // every block's sums, max and weight sums are in its shared memory
  ADAMAS_STAMP(stamps, 5);
  const int C = int(cl.num_blocks()), rank = int(cl.block_rank());
  const int S = (G * D + C - 1) / C;
  for (int i = rank * S + tid; i < min(G * D, rank * S + S); i += kThreads) {
    const int q = i / D;
    float m[kMaxCluster], l[kMaxCluster], a[kMaxCluster];  // every remote load issued before the first use
#pragma unroll
    for (int c = 0; c < kMaxCluster; ++c) {
      const bool ok = c < C;
      m[c] = ok ? *cl.map_shared_rank(M + q, c) : -INFINITY;
      l[c] = ok ? *cl.map_shared_rank(L + q, c) : 0.0f;
      a[c] = ok ? *cl.map_shared_rank(mine + i, c) : 0.0f;
    }
    float mx = -INFINITY;
#pragma unroll
    for (int c = 0; c < kMaxCluster; ++c) mx = fmaxf(mx, m[c]);
    float ls = 0.0f, as = 0.0f;
#pragma unroll
    for (int c = 0; c < kMaxCluster; ++c) {
      const float w = m[c] == -INFINITY ? 0.0f : exp2f(m[c] - mx);  // a block without rows weighs nothing
      ls += l[c] * w, as += a[c] * w;
    }
    out[i] = as / ls;
  }
  ADAMAS_STAMP(stamps, 6);
  cl.sync();  // the other blocks have read this block's shared memory
  ADAMAS_STAMP(stamps, 7);
}

// CL (v9): the gridDim.x blocks of a unit are one thread-block cluster and merge their partials through distributed
// shared memory (two cluster barriers) instead of global partials, a fence, an arrival atomic and the last block's
// L2 reads. Every block of a cluster takes part in the merge, those without rows too.
template <int D, class T, int S, int NB, bool CL>
__global__ void __launch_bounds__(kThreads, 2) dense_group_kernel(const __grid_constant__ DenseGroupParams<NB> p) {
  constexpr int KS = stage_rows<D>();
  constexpr int KG = KS / 16;      // 16-row groups per stage (the k of the P V mma)
  constexpr int CPR = D / 8;       // 16-byte chunks per row
  constexpr int DS = D / 16;       // k-steps of the scores = 16-row tiles of O^T
  constexpr int NT = Tc<T>::terms;
  constexpr int TILE = KS * D;     // elements of one tensor's stage tile
  constexpr int LD = D + 4;        // row stride of the warp-merge buffer (floats; breaks bank conflicts)
  static_assert(KS * CPR == 256, "8 cp.async per lane and tensor");
  static_assert(size_t(kWarps * LD + D) * kMaxRows * 4 <= group_smem<D, T, S>(), "merge buffers alias the stages");
  extern __shared__ __align__(128) unsigned char dsm[];
  __shared__ float s_m[kWarps][kMaxRows], s_l[kWarps][kMaxRows], s_M[kMaxRows], s_L[kMaxRows];
  __shared__ int s_last;

  ADAMAS_STAMP(p.stamps, 0);
  const int b = blockIdx.z, unit = blockIdx.y, chunk = blockIdx.x;
  const SeqDesc& sq = p.seq[b];
  const int64_t n = sq.n;
  const int nchunks = int((n + p.chunk - 1) / p.chunk);  // blocks of this (sequence, KV head)
  const bool idle = chunk >= nchunks;  // no rows (a short sequence of a batch)
  if (!CL && idle) return;
  const int64_t r_begin = p.strided ? 0 : int64_t(chunk) * p.chunk, r_end = p.strided ? n : min(n, r_begin + p.chunk);
  const int G = p.group, qh0 = unit * G;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const T* K = static_cast<const T*>(sq.k) + unit * sq.k_head;
  const T* V = static_cast<const T*>(sq.v) + unit * sq.v_head;

  // This warp's tiles (the block's 4 warps always stream neighbouring tiles). Strided (default): the unit's tiles in
  // pieces of kWarps, block c of P taking pieces c, c + P, ..., so the P blocks of a unit read one contiguous window
  // and differ by at most one piece (no static tail); the host makes the chunk at least one piece, so every block
  // has rows. Chunks: rows [c chunk, (c + 1) chunk) per block, tile warp + kWarps i of the chunk. (Run 3: at two
  // blocks per SM neither layout was better; the final launch shape was measured with the strided one.)
  const int tiles = idle ? 0 : int((r_end - r_begin + KS - 1) / KS);
  const int first = p.strided ? chunk * kWarps + warp : warp;
  const int step = p.strided ? kWarps * nchunks : kWarps;
  const int my_tiles = first < tiles ? (tiles - first + step - 1) / step : 0;
  T* wbuf = reinterpret_cast<T*>(dsm) + size_t(warp) * S * 2 * TILE;
  auto tile_key0 = [&](int i) { return r_begin + int64_t(first + step * i) * KS; };
  auto issue = [&](int i) {
    T* kd = wbuf + (i % S) * 2 * TILE;
    T* vd = kd + TILE;
    const int64_t key0 = tile_key0(i);
#pragma unroll
    for (int j = 0; j < KS * CPR / 32; ++j) {
      const int e = lane + 32 * j, r = e / CPR, c = e % CPR;
      const bool valid = key0 + r < r_end;
      const int64_t row = valid ? key0 + r : r_begin;  // past the end: zero-filled (weights 0, and no NaN * 0)
      const int pc = c ^ (r & 7);
      cp_async16(kd + r * D + pc * 8, K + row * sq.k_tok + c * 8, valid);
      cp_async16(vd + r * D + pc * 8, V + row * sq.v_tok + c * 8, valid);
    }
  };
#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    if (s < my_tiles) issue(s);
    cp_async_commit();
  }

  // Q as the A operand (row g, columns 2t, 2t + 1 and 2t + 8, 2t + 9 of each 16-column step), split into terms;
  // rows g >= G are zero.
  uint32_t qa[DS][2][NT];
  {
    const bool row_ok = g < G;
    const float* qr = p.q + (int64_t(b) * p.n_heads + qh0 + (row_ok ? g : 0)) * D;
#pragma unroll
    for (int s = 0; s < DS; ++s)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float2 x = row_ok ? *reinterpret_cast<const float2*>(qr + 16 * s + 8 * h + 2 * t) : make_float2(0.f, 0.f);
        split_terms<T>(x.x * p.qscale, x.y * p.qscale, qa[s][h]);
      }
  }
  ADAMAS_STAMP(p.stamps, 1);

  // O^T accumulators: acc[m] = O[2t][16m + g], O[2t + 1][16m + g], O[2t][16m + 8 + g], O[2t + 1][16m + 8 + g].
  float acc[DS][4];
#pragma unroll
  for (int m = 0; m < DS; ++m) acc[m][0] = acc[m][1] = acc[m][2] = acc[m][3] = 0.0f;
  float m_run = -INFINITY, l_run = 0.0f;  // query row g: running max, this lane's share of the weight sum
  // ldmatrix addressing: lane l gives row (l % 8) + 8 (l / 16) of a 16-row group, 8-column half (l / 8) % 2.
  const int lrow = (lane & 7) + 8 * (lane >> 4), lhalf = (lane >> 3) & 1, lsw = lane & 7;
  const uint32_t wbuf_s = static_cast<uint32_t>(__cvta_generic_to_shared(wbuf));

  for (int i = 0; i < my_tiles; ++i) {
    if (i + S - 1 < my_tiles) issue(i + S - 1);
    cp_async_commit();
    cp_async_wait<S - 1>();
    __syncwarp();  // every lane's copies of tile i have landed
#ifdef ADAMAS_CUDA_STAMPS
    if (i == 0) ADAMAS_STAMP(p.stamps, 2);
#endif
    const uint32_t ks = wbuf_s + uint32_t((i % S) * 2 * TILE * sizeof(T));
    const uint32_t vs = ks + uint32_t(TILE * sizeof(T));
    const int64_t key0 = tile_key0(i);

    // Scores: one accumulator per term (shorter dependent mma chains), summed after.
    float sc[KG][2][NT][4];
#pragma unroll
    for (int kg = 0; kg < KG; ++kg)
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int k = 0; k < NT; ++k) sc[kg][nt][k][0] = sc[kg][nt][k][1] = sc[kg][nt][k][2] = sc[kg][nt][k][3] = 0.0f;
#pragma unroll
    for (int kg = 0; kg < KG; ++kg)
#pragma unroll
      for (int s = 0; s < DS; ++s) {
        uint32_t kb[4];  // B operand of rows 0-7 (kb[0], kb[1]) and rows 8-15 (kb[2], kb[3]) of the group
        ldsm_x4(ks + uint32_t(((kg * 16 + lrow) * D + (((2 * s + lhalf) ^ lsw) * 8)) * sizeof(T)), kb);
#pragma unroll
        for (int k = 0; k < NT; ++k) {
          Tc<T>::mma(sc[kg][0][k], qa[s][0][k], 0u, qa[s][1][k], 0u, kb[0], kb[1]);
          Tc<T>::mma(sc[kg][1][k], qa[s][0][k], 0u, qa[s][1][k], 0u, kb[2], kb[3]);
        }
      }
    // Online softmax of query row g over the tile (keys kg * 16 + nt * 8 + 2t + e); the quad's 4 lanes share row g.
    float sv[KG][2][2];
    float mx = -INFINITY;
#pragma unroll
    for (int kg = 0; kg < KG; ++kg)
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float v = 0.0f;
#pragma unroll
          for (int k = 0; k < NT; ++k) v += sc[kg][nt][k][e];
          v = key0 + kg * 16 + nt * 8 + 2 * t + e < r_end ? v : -INFINITY;
          sv[kg][nt][e] = v;
          mx = fmaxf(mx, v);
        }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m_run, mx);  // finite: the tile's first key is in range
    const float alpha = exp2f(m_run - m_new);
    float psum = 0.0f;
    uint32_t pb[KG][2][NT];  // B operand of P^T: (P[g][2t], P[g][2t + 1]) of rows 0-7, then of rows 8-15
#pragma unroll
    for (int kg = 0; kg < KG; ++kg)
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        float p0 = exp2f(sv[kg][nt][0] - m_new), p1 = exp2f(sv[kg][nt][1] - m_new);
        psum += p0 + p1;
        if (g >= G) p0 = p1 = 0.0f;  // padding rows add nothing to the output
        split_terms<T>(p0, p1, pb[kg][nt]);
      }
    l_run = l_run * alpha + psum;
    m_run = m_new;
    // The accumulator's query columns are 2t and 2t + 1: their rescale factors live in lanes 8t and 8t + 4.
    const float a0 = __shfl_sync(0xffffffffu, alpha, 8 * t), a1 = __shfl_sync(0xffffffffu, alpha, 8 * t + 4);
#pragma unroll
    for (int m = 0; m < DS; ++m) acc[m][0] *= a0, acc[m][1] *= a1, acc[m][2] *= a0, acc[m][3] *= a1;
#pragma unroll
    for (int kg = 0; kg < KG; ++kg)
#pragma unroll
      for (int m = 0; m < DS; ++m) {
        uint32_t va[4];  // A operand V^T: d rows 16m..16m+15 by the group's 16 rows (keys)
        ldsm_x4_trans(vs + uint32_t(((kg * 16 + lrow) * D + (((2 * m + lhalf) ^ lsw) * 8)) * sizeof(T)), va);
#pragma unroll
        for (int k = 0; k < NT; ++k) Tc<T>::mma(acc[m], va[0], va[1], va[2], va[3], pb[kg][0][k], pb[kg][1][k]);
      }
    __syncwarp();  // every lane has read this stage before the next iteration refills it
  }
  cp_async_wait<0>();  // only empty groups remain
  l_run += __shfl_xor_sync(0xffffffffu, l_run, 1);
  l_run += __shfl_xor_sync(0xffffffffu, l_run, 2);
  if (t == 0) s_m[warp][g] = m_run, s_l[warp][g] = l_run;
  __syncthreads();  // every warp is done with its stages: they become the merge buffer
  ADAMAS_STAMP(p.stamps, 3);

  // Merge the warps: each scales its accumulators to the block's max, the block sums them.
  float* red = reinterpret_cast<float*>(dsm);  // [kWarps][kMaxRows][LD]
#pragma unroll
  for (int qq = 0; qq < 2; ++qq) {
    const int q = 2 * t + qq;
    if (q >= G) continue;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, s_m[w][q]);
    const float mw = s_m[warp][q];
    const float f = mw == -INFINITY ? 0.0f : exp2f(mw - M);  // a warp without rows: m = -inf, weight 0
    float* rr = red + (warp * kMaxRows + q) * LD;
#pragma unroll
    for (int m = 0; m < DS; ++m) rr[16 * m + g] = acc[m][qq] * f, rr[16 * m + 8 + g] = acc[m][2 + qq] * f;
  }
  if (tid < G) {
    float M = -INFINITY, L = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, s_m[w][tid]);
#pragma unroll
    for (int w = 0; w < kWarps; ++w) L += s_m[w][tid] == -INFINITY ? 0.0f : s_l[w][tid] * exp2f(s_m[w][tid] - M);
    s_M[tid] = M, s_L[tid] = L;
  }
  __syncthreads();
  if constexpr (CL) {
    cluster_merge<D>(red, s_M, s_L, G, p.out + (int64_t(b) * p.n_heads + qh0) * D, p.stamps);
  } else {  // the global merge (v8): partials, arrival, the last block merges
    const int64_t hbase = (int64_t(b) * p.n_heads + qh0) * p.max_chunks;
    for (int i = tid; i < G * D; i += kThreads) {
      const int q = i / D, d = i % D;
      float v = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) v += red[(w * kMaxRows + q) * LD + d];
      if (nchunks == 1) {
        p.out[(int64_t(b) * p.n_heads + qh0 + q) * D + d] = v / s_L[q];
      } else {
        const int64_t pc = hbase + int64_t(q) * p.max_chunks + chunk;
        p.part[pc * D + d] = v;
        if (d == 0) p.part_ml[pc * 2] = s_M[q], p.part_ml[pc * 2 + 1] = s_L[q];
      }
    }
    ADAMAS_STAMP(p.stamps, 4);
    if (nchunks == 1) return;
    // Arrival: the block's partial is released before the count, the last block acquires the others' (v8: a fence in
    // every thread; v9 one_fence: the block barrier orders the threads' stores before thread 0's acq_rel atomic, and
    // the last block's loads after it, as the cooperative-groups grid barrier does).
    if (!p.one_fence) __threadfence();
    __syncthreads();
    uint32_t* done = p.done + int64_t(b) * p.units + unit;
    if (tid == 0) s_last = (p.one_fence ? atomic_add_acq_rel(done, 1u) : atomicAdd(done, 1u)) == uint32_t(nchunks - 1);
    __syncthreads();
    ADAMAS_STAMP(p.stamps, 5);
    if (!s_last) return;
    if (!p.one_fence) __threadfence();
    merge_partials_online<D, kThreads>(p.part_ml + hbase * 2, p.part + hbase * D, nchunks, p.max_chunks, G,
                                       p.out + (int64_t(b) * p.n_heads + qh0) * D);
    if (tid == 0) *done = 0;
    ADAMAS_STAMP(p.stamps, 6);
  }
}

// Launch shape (NOTES v7 runs 1-3, v8-dense). Default: one block per SM (the block asks for more than half of the
// shared memory), 2 pipeline stages and one wave of at most kMaxChunks2 blocks per (sequence, KV head) (v8-dense call
// 2: faster than v7's 3 stages and 8 blocks on every shape but GQA 4K); at 3 or 4 stages at most kMaxChunks (v7 runs
// 2-3: more blocks per KV head were slower there). 6 stages and a dynamic schedule were slower (v8-dense call 1).
// v9 (NOTES v9-dense): where a unit's blocks are 2 to 8 and every cluster of the launch is resident, they merge as
// one cluster through distributed shared memory (call 1: GQA 32K b1 at 8 blocks per KV head 51.5 us vs 56.0 with the
// global merge, whose last block took 4-5 us after the last arrival); so where the default would give a unit more
// than 8 blocks and 8 per unit still make kMinClusterBlocks, a unit gets 8 blocks of 4 stages in one cluster
// (GQA b1: 64 blocks; call 1: 4K 14.2, 32K 51.7, 128K 180.3 us vs 17.7, 54.5, 180.6 at 16 blocks of 2 stages). A
// launch of one sequence passes a one-sequence parameter (0.3-0.5 us less launch).
// Knobs (environment, read per call; for A/B runs of the benchmark and the tests; a bad value is an error):
// ADAMAS_CUDA_DENSE_SPLIT=N blocks per (sequence, KV head); ADAMAS_CUDA_DENSE_LAYOUT=chunks contiguous chunks of rows
// per block (runs 1-2); ADAMAS_CUDA_DENSE_OCC=2 two blocks per SM (runs 1-2); ADAMAS_CUDA_DENSE_STAGES=2|3|4;
// ADAMAS_CUDA_DENSE_MERGE=auto|global|cluster (cluster: required, an error where the clusters do not all fit;
// global: also v8's launch shape); ADAMAS_CUDA_DENSE_PARAM=full (the kMaxBatch parameter at batch 1);
// ADAMAS_CUDA_DENSE_FENCE=all|one (the global merge's arrival: v8's fences in every thread, or thread 0's acq_rel
// atomic, 0.2-0.4 us less at batch 1);
// ADAMAS_CUDA_DENSE=v8: the v8 kernel's behaviour (MERGE=global, PARAM=full, FENCE=all; the other knobs apply).
// At 2 stages a block keeps half the bytes in flight, so up to twice the blocks per (sequence, KV head) stream
// (NOTES v8-dense call 2: GQA b1 32K 53.9 us at 16 blocks vs 58.2 at 8).
constexpr int64_t kMaxChunks = 8, kMaxChunks2 = 16;
constexpr int64_t kMinClusterBlocks = 64;  // call 1: 64 blocks of 4 stages read GQA 128K b1 at 98% of copy
constexpr int kClusterStages = 4;
enum class Merge { automatic, global, cluster };
struct Knobs {
  int split = 0, chunks = 0, one_per_sm = 1, stages = 2, stages_set = 0, full_param = 0, one_fence = 1;
  Merge merge = Merge::automatic;
};
Knobs read_knobs(const char* where) {
  Knobs k;
  auto get = [](const char* name) { const char* e = std::getenv(name); return std::string(e ? e : ""); };
  const std::string version = get("ADAMAS_CUDA_DENSE");
  CUDA_REQUIRE(version.empty() || version == "v8", ErrorKind::invalid_argument, where,
               ": ADAMAS_CUDA_DENSE must be v6 or v8 when set (got '", version, "')");
  if (version == "v8") k.full_param = 1, k.merge = Merge::global, k.one_fence = 0;
  k.split = std::atoi(get("ADAMAS_CUDA_DENSE_SPLIT").c_str());
  k.chunks = get("ADAMAS_CUDA_DENSE_LAYOUT") == "chunks";
  k.one_per_sm = get("ADAMAS_CUDA_DENSE_OCC") != "2";
  const std::string stages = get("ADAMAS_CUDA_DENSE_STAGES");
  CUDA_REQUIRE(stages.empty() || stages == "2" || stages == "3" || stages == "4", ErrorKind::invalid_argument, where,
               ": ADAMAS_CUDA_DENSE_STAGES must be 2, 3 or 4 (got '", stages, "')");
  if (!stages.empty()) k.stages = std::atoi(stages.c_str()), k.stages_set = 1;
  CUDA_REQUIRE(k.one_per_sm || k.stages <= 3, ErrorKind::invalid_argument, where,
               ": ADAMAS_CUDA_DENSE_STAGES=4 needs one block per SM (not ADAMAS_CUDA_DENSE_OCC=2)");
  const std::string merge = get("ADAMAS_CUDA_DENSE_MERGE");
  CUDA_REQUIRE(merge.empty() || merge == "auto" || merge == "global" || merge == "cluster", ErrorKind::invalid_argument,
               where, ": ADAMAS_CUDA_DENSE_MERGE must be auto, global or cluster (got '", merge, "')");
  if (!merge.empty()) k.merge = merge == "global" ? Merge::global : merge == "cluster" ? Merge::cluster : Merge::automatic;
  const std::string fence = get("ADAMAS_CUDA_DENSE_FENCE");
  CUDA_REQUIRE(fence.empty() || fence == "all" || fence == "one", ErrorKind::invalid_argument, where,
               ": ADAMAS_CUDA_DENSE_FENCE must be all or one (got '", fence, "')");
  if (!fence.empty()) k.one_fence = fence == "one";
  const std::string param = get("ADAMAS_CUDA_DENSE_PARAM");
  CUDA_REQUIRE(param.empty() || param == "full" || param == "auto", ErrorKind::invalid_argument, where,
               ": ADAMAS_CUDA_DENSE_PARAM must be auto or full (got '", param, "')");
  if (!param.empty()) k.full_param = param == "full";
  return k;
}
constexpr size_t kWholeSmem = 200 * 1024;  // more than half of an SM's shared memory: one block per SM

// The kernel of a launch: head_dim, dtype, stages, parameter size (1 or kMaxBatch sequences), cluster merge.
struct KernelChoice {
  int D, stages;
  DType dtype;
  bool one_seq, cluster;
};
template <int D, class T, int S, int NB>
const void* pick_cl(bool cluster) {
  return cluster ? reinterpret_cast<const void*>(dense_group_kernel<D, T, S, NB, true>)
                 : reinterpret_cast<const void*>(dense_group_kernel<D, T, S, NB, false>);
}
template <int D, class T, int S>
const void* pick_nb(const KernelChoice& c) {
  return c.one_seq ? pick_cl<D, T, S, 1>(c.cluster) : pick_cl<D, T, S, kMaxBatch>(c.cluster);
}
template <int D, class T>
const void* pick_s(const KernelChoice& c) {
  return c.stages == 2 ? pick_nb<D, T, 2>(c) : c.stages == 4 ? pick_nb<D, T, 4>(c) : pick_nb<D, T, 3>(c);
}
const void* pick_kernel(const KernelChoice& c) {
  const bool h = c.dtype == DType::f16;
  if (c.D == 64) return h ? pick_s<64, __half>(c) : pick_s<64, __nv_bfloat16>(c);
  return h ? pick_s<128, __half>(c) : pick_s<128, __nv_bfloat16>(c);
}
// Shared memory of the stages: 8 KB of K and V per warp and stage at every head_dim (16 rows at 128, 32 at 64).
size_t stages_smem(int stages) { return size_t(kWarps) * stages * 8192; }

// Blocks of `kernel` resident per multiprocessor at `smem` bytes (sets its shared-memory attribute once; cached).
int blocks_per_sm(const void* f, size_t smem) {
  static std::mutex mu;
  static std::map<std::pair<const void*, size_t>, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find({f, smem}); it != cache.end()) return it->second;
  check_cuda(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kWholeSmem)),
             "dense group smem attribute");
  int v = 0;
  check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v, f, kThreads, smem), "dense group occupancy");
  return cache[{f, smem}] = std::max(v, 1);
}

template <int NB>
void launch(const DenseGroupParams<NB>& p, const void* kernel, dim3 grid, int cluster, size_t smem,
            cudaStream_t stream) {
  cudaLaunchAttribute attr[1];
  cudaLaunchConfig_t cfg = cluster_launch_config(grid, kThreads, cluster, smem, stream, attr);
  cfg.numAttrs = cluster > 1 ? 1 : 0;
  void* args[] = {const_cast<DenseGroupParams<NB>*>(&p)};
  note_cluster_launch(cfg);
  check_cuda(cudaLaunchKernelExC(&cfg, kernel, args), "dense group attention kernel launch");
}

// The fields of both parameter sizes but the sequences.
template <int NB, int NA>
void copy_common(DenseGroupParams<NB>& to, const DenseGroupParams<NA>& from) {
  to.batch = from.batch, to.q = from.q, to.n_heads = from.n_heads, to.group = from.group, to.qscale = from.qscale;
  to.chunk = from.chunk, to.max_chunks = from.max_chunks, to.units = from.units, to.strided = from.strided;
  to.one_fence = from.one_fence, to.part = from.part, to.part_ml = from.part_ml, to.done = from.done, to.out = from.out;
  to.stamps = from.stamps;
}

}  // namespace

bool dense_group_supports(int64_t dim, int64_t group) { return (dim == 64 || dim == 128) && group >= 1 && group <= 8; }

bool dense_group_disabled() {
  const char* e = std::getenv("ADAMAS_CUDA_DENSE");
  return e != nullptr && std::strcmp(e, "v6") == 0;
}

void attend_dense_group(const BatchInputs& in, float scale, Workspace& ws, float* out, cudaStream_t stream,
                        const char* where) {
  CUDA_REQUIRE(out != nullptr, ErrorKind::invalid_argument, where, ": out is null");
  const auto chunks = make_batches(in, false, where);
  const HeadsView& k0 = in.seqs[0].k;
  const int D = int(k0.dim), kvh = int(k0.heads), n_heads = int(in.n_heads), G = n_heads / kvh;
  CUDA_REQUIRE(dense_group_supports(D, G), ErrorKind::unsupported, where, ": the group kernel takes head_dim 64 or 128 "
               "and 1 to 8 query heads per KV head (got ", D, ", ", G, ")");
  const int64_t batch = int64_t(in.seqs.size());
  auto& Sx = ws.state();
  int64_t rows_max = 0;
  for (const auto& s : in.seqs) rows_max = std::max(rows_max, s.k.tokens);
  // One wave (blocks = occupancy x SMs, split evenly over the (sequence, KV head) pairs of a launch), at most
  // `cap` per pair; chunks of at least one piece (a tile per warp: 64 rows at d = 128, 128 at d = 64).
  Knobs kn = read_knobs(where);
  const size_t smem = kn.one_per_sm ? kWholeSmem : stages_smem(kn.stages);
  KernelChoice kc{D, kn.stages, k0.dtype, false, false};
  const int64_t slots = int64_t(blocks_per_sm(pick_kernel(kc), smem)) * Sx.sms;
  const int64_t cap = kn.stages == 2 ? kMaxChunks2 : kMaxChunks;
  const int64_t units = std::min<int64_t>(batch, kMaxBatch) * kvh;
  const int64_t wave = std::min(cap, slots / units);
  int64_t per_unit = std::clamp<int64_t>(kn.split > 0 ? kn.split : wave, 1, 256);
  if (kn.merge != Merge::global && kn.split == 0 && !kn.stages_set && kn.one_per_sm && per_unit > kMaxCluster &&
      units * kMaxCluster >= kMinClusterBlocks && batch <= kMaxBatch) {  // v9: the cluster launch shape, if it fits
    KernelChoice cc{D, kClusterStages, k0.dtype, batch == 1 && !kn.full_param, true};
    const void* f = pick_kernel(cc);
    blocks_per_sm(f, smem);  // sets the shared-memory attribute
    if (max_active_clusters(f, kThreads, kMaxCluster, smem) >= units)
      per_unit = kMaxCluster, kn.stages = kc.stages = kClusterStages;
  }
  const int64_t chunk = std::max<int64_t>(64 * 128 / D, (rows_max + per_unit - 1) / per_unit);
  const int max_chunks = int((rows_max + chunk - 1) / chunk);
  ensure(&Sx.part, &Sx.part_bytes, size_t(batch * n_heads * max_chunks * (D + 2)) * 4, false);
  float* part_ml = Sx.part + batch * n_heads * max_chunks * D;
  ensure(&Sx.done, &Sx.done_bytes, size_t(batch * kvh) * 4, true);
  for (size_t c = 0; c < chunks.size(); ++c) {
    const int64_t b0 = int64_t(c) * kMaxBatch;
    DenseGroupParams<kMaxBatch> p{};
    std::copy(chunks[c].seq, chunks[c].seq + chunks[c].batch, p.seq);
    p.batch = chunks[c].batch;
    p.q = in.q + b0 * n_heads * D;
    p.n_heads = n_heads, p.group = G;
    p.qscale = scale * 1.4426950408889634f;
    p.chunk = int(chunk), p.max_chunks = max_chunks, p.units = kvh;
    p.strided = !kn.chunks;
    p.one_fence = kn.one_fence;
    p.part = Sx.part + b0 * n_heads * max_chunks * D;
    p.part_ml = part_ml + b0 * n_heads * max_chunks * 2;
    p.done = Sx.done + b0 * kvh;
    p.out = out + b0 * n_heads * D;
    p.stamps = stamp_buffer(1);
    const dim3 grid(unsigned(max_chunks), unsigned(kvh), unsigned(p.batch));
    // v9: the blocks of a unit merge in a cluster where they are 2 to kMaxCluster and every cluster is resident.
    kc.one_seq = p.batch == 1 && !kn.full_param;
    kc.cluster = false;
    int resident = 0;
    if (kn.merge != Merge::global && max_chunks > 1) {
      const bool fits_size = max_chunks <= kMaxCluster;
      if (fits_size) {
        KernelChoice cc = kc;
        cc.cluster = true;
        const void* f = pick_kernel(cc);
        blocks_per_sm(f, smem);  // sets the shared-memory attribute
        resident = max_active_clusters(f, kThreads, max_chunks, smem);
        kc.cluster = resident >= int(grid.y * grid.z);
      }
      CUDA_REQUIRE(kc.cluster || kn.merge != Merge::cluster, ErrorKind::unsupported, where,
                   ": ADAMAS_CUDA_DENSE_MERGE=cluster: ", grid.y * grid.z, " clusters of ", max_chunks, " blocks ",
                   fits_size ? "are not all resident (" + std::to_string(resident) + " fit)" : "exceed 8 blocks");
    }
    const void* kernel = pick_kernel(kc);
    blocks_per_sm(kernel, smem);  // sets the shared-memory attribute
    if (launch_verbose()) {
      char line[320];
      std::snprintf(line, sizeof line, "[adamas] attend dense group (v9) D=%d G=%d: grid %ux%ux%u, chunk %lld rows, "
                    "%s, %d stages, %d per SM, %s parameter, merge %s (%d clusters resident), fence %s\n", D, G,
                    grid.x, grid.y, grid.z, (long long)chunk, kn.chunks ? "chunks" : "strided", kn.stages,
                    blocks_per_sm(kernel, smem), kc.one_seq ? "1-sequence" : "full", kc.cluster ? "cluster" : "global",
                    resident, kn.one_fence ? "one" : "all");
      verbose_print(line);
    }
    if (kc.one_seq) {
      DenseGroupParams<1> p1{};
      p1.seq[0] = p.seq[0];
      copy_common(p1, p);
      launch(p1, kernel, grid, kc.cluster ? max_chunks : 1, smem, stream);
    } else {
      launch(p, kernel, grid, kc.cluster ? max_chunks : 1, smem, stream);
    }
  }
}

}  // namespace adamas::cuda::detail
