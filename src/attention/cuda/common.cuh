// Shared device helpers of the CUDA backend (internal): sequence descriptors, dtype loads, the warp Hadamard
// transform and bucketizer, the L1 word arithmetic on packed codes.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>

#include "adamas/cuda_attention.h"

namespace adamas::cuda::detail {

// Argument checks for .cu files (nvcc's front end cannot compile fmt's checked format strings, core/check.h).
template <class... Parts>
[[noreturn]] void raise(ErrorKind kind, const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw Error(kind, os.str());
}
#define CUDA_REQUIRE(cond, kind, ...)                                   \
  do {                                                                  \
    if (!(cond)) ::adamas::cuda::detail::raise(kind, __VA_ARGS__);      \
  } while (0)

constexpr int kMaxBatch = 64;  // sequences per launch (kernel parameter arrays); larger batches are chunked

// One sequence of a batch, as the kernels see it (strides in elements; codes in bytes).
struct SeqDesc {
  const void* k;
  const void* v;
  const uint8_t* codes;
  int64_t n;  // tokens
  int64_t k_head, k_tok, v_head, v_tok, c_head, c_tok;
};

struct BatchDesc {
  SeqDesc seq[kMaxBatch];
  int batch;
};

struct Thr {
  float t0, t1, t2;
};
static_assert(sizeof(Thresholds) == sizeof(Thr), "Thresholds must be three packed floats");

inline void launch_check(const char* what) { check_cuda(cudaGetLastError(), what); }

// ---- phase stamps (profiling; compiled in with -DADAMAS_CUDA_STAMPS, see set_phase_stamps) ----------------------
// Thread 0 of a block writes %globaltimer (ns) into slot k of the block's 8 slots of `buf` (null: nothing).
constexpr int kStampSlots = 8;
__device__ __forceinline__ unsigned long long global_timer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
#ifdef ADAMAS_CUDA_STAMPS
#define ADAMAS_STAMP(buf, k)                                                                                       \
  do {                                                                                                             \
    if ((buf) != nullptr && threadIdx.x == 0)                                                                      \
      (buf)[(blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z)) * ::adamas::cuda::detail::kStampSlots + \
            (k)] = ::adamas::cuda::detail::global_timer();                                                         \
  } while (0)
#else
#define ADAMAS_STAMP(buf, k) \
  do {                       \
  } while (0)
#endif
// Host: the buffers set by set_phase_stamps (null when unset).
unsigned long long* stamp_buffer(int which);  // 0 select, 1 attend
bool launch_verbose();                        // ADAMAS_CUDA_VERBOSE set: launches print their configuration
void verbose_print(const std::string& line);  // to stderr, unless one of the last 4 lines printed was the same

// ---- programmatic dependent launch (v5) -------------------------------------------------------------------------
// The selection kernels let the attend launch that follows them start (launch_dependents: its blocks are scheduled
// as ours exit, its launch latency hidden); the attend kernel, launched with the programmatic-serialization
// attribute, waits for the selection to be complete and visible (wait_primary) before anything else. Both are no-ops
// for launches without the attribute.
__device__ __forceinline__ void launch_dependents() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ void wait_primary() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

// ---- cp.async (16 bytes global -> shared, bypassing L1; zero-fill when not valid) ------------------------------
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const int n = valid ? 16 : 0;  // 0: zero-fill
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// ---- bulk copies (sm_90 TMA, 1-D: contiguous global bytes -> shared, completion counted on an mbarrier) ---------
__device__ __forceinline__ unsigned smem_addr(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
// After the initialisations, before any thread or the async proxy uses the barriers.
__device__ __forceinline__ void mbarrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\nfence.proxy.async.shared::cta;\n" ::: "memory");
}
// Orders this thread's earlier generic-proxy accesses of shared memory before its later bulk copies into it.
__device__ __forceinline__ void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void mbarrier_expect_tx(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}
// bytes: a multiple of 16; dst and src 16-byte aligned.
__device__ __forceinline__ void bulk_copy_g2s(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
               ::"r"(smem_addr(dst)), "l"(src), "r"(bytes), "r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void mbarrier_wait_parity(uint64_t* bar, unsigned parity) {
  unsigned done = 0;
  while (!done)
    asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done) : "r"(smem_addr(bar)), "r"(parity) : "memory");
}

// ---- thread-block clusters (sm_90): pushes into another block's shared memory ---------------------------------
// cooperative_groups' cluster.sync() is barrier.cluster.arrive (release) + wait (acquire): ptxas emits a GPU-scope
// MEMBAR before the barrier and an L1 invalidation after it (~0.5 us of stalls each time at MHA 32K, NOTES v10.2).
// A relaxed arrive orders nothing; pair it with fence.mbarrier_init where it publishes barrier initialisations.
__device__ __forceinline__ void cluster_arrive_relaxed() { asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory"); }
// The shared::cluster address of p (a shared variable of this block) in block `rank` of the cluster.
__device__ __forceinline__ unsigned cluster_addr(const void* p, int rank) {
  unsigned a;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(a) : "r"(smem_addr(p)), "r"(rank));
  return a;
}
// Asynchronous stores into (possibly) another block's shared memory, counted on that block's mbarrier (bar, an address
// from cluster_addr in the same block as dst) as bytes of complete_tx: the receiver waits on its own barrier, and no
// cluster barrier or memory fence is needed to see the data. dst: 16 (v4) or 8 (v2) byte aligned.
__device__ __forceinline__ void st_async_v4(unsigned dst, uint4 v, unsigned bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, [%5];\n"
               ::"r"(dst), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w), "r"(bar) : "memory");
}
__device__ __forceinline__ void st_async_v2(unsigned dst, float a, float b, unsigned bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.f32 [%0], {%1, %2}, [%3];\n"
               ::"r"(dst), "f"(a), "f"(b), "r"(bar) : "memory");
}

// ---- dtype helpers ------------------------------------------------------------------------------------------

template <class T>
__device__ __forceinline__ float to_f32(T x);
template <>
__device__ __forceinline__ float to_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_f32<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

// Eight consecutive elements from a 16-byte aligned address, as f32.
template <class T>
__device__ __forceinline__ void load8(const T* p, float (&out)[8]);
template <>
__device__ __forceinline__ void load8<__half>(const __half* p, float (&out)[8]) {
  const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
  const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}
template <>
__device__ __forceinline__ void load8<__nv_bfloat16>(const __nv_bfloat16* p, float (&out)[8]) {
  const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

// Raw 16-byte load, converted later (lets several loads be in flight before the first use).
template <class T>
__device__ __forceinline__ uint4 ld16(const T* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}
template <class T>
__device__ __forceinline__ void cvt8(const uint4& u, float (&out)[8]) {
  if constexpr (sizeof(T) == 2) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t w = (&u.x)[i];
      if constexpr (std::is_same_v<T, __half>) {
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w));
        out[2 * i] = f.x, out[2 * i + 1] = f.y;
      } else {
        out[2 * i] = __uint_as_float(w << 16);
        out[2 * i + 1] = __uint_as_float(w & 0xffff0000u);
      }
    }
  }
}

// ---- Hadamard + bucketize, one warp per vector -----------------------------------------------------------------
// Lane l holds elements [l*E, l*E + E), E = D / 32. The butterflies run in the CPU's order (stride 1, 2, 4, ...),
// each a single f32 add or subtract, then one multiply by the same f32 scale: bit-identical to the CPU.

template <int D>
__device__ __forceinline__ void warp_hadamard(float (&x)[D / 32], float scale) {
  constexpr int E = D / 32;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int h = 1; h < E; h *= 2) {
#pragma unroll
    for (int i = 0; i < E; i += 2 * h) {
#pragma unroll
      for (int j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = __fadd_rn(a, b);
        x[j + h] = __fsub_rn(a, b);
      }
    }
  }
#pragma unroll
  for (int m = 1; m < 32; m *= 2) {
#pragma unroll
    for (int j = 0; j < E; ++j) {
      const float other = __shfl_xor_sync(0xffffffffu, x[j], m);
      x[j] = (lane & m) ? __fsub_rn(other, x[j]) : __fadd_rn(x[j], other);
    }
  }
#pragma unroll
  for (int j = 0; j < E; ++j) x[j] = __fmul_rn(x[j], scale);
}

__device__ __forceinline__ uint32_t bucket(float x, const Thr& t) {
  return uint32_t(x > t.t0) + uint32_t(x > t.t1) + uint32_t(x > t.t2);
}

// Loads this lane's E elements of a vector of type T (any alignment of 2/4 bytes).
template <int D, class T>
__device__ __forceinline__ void load_lane(const T* row, float (&x)[D / 32]) {
  constexpr int E = D / 32;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int j = 0; j < E; ++j) x[j] = to_f32<T>(row[lane * E + j]);
}

// Encodes the vector held by the warp and writes its D/4 code bytes to `out` (global or shared).
template <int D>
__device__ __forceinline__ void warp_encode_store(float (&x)[D / 32], const Thr& t, uint8_t* out) {
  constexpr int E = D / 32;
  const int lane = threadIdx.x & 31;
  uint32_t bits = 0;  // this lane's E codes, 2 bits each, element order
#pragma unroll
  for (int j = 0; j < E; ++j) bits |= bucket(x[j], t) << (2 * j);
  if constexpr (E == 2) {  // half a byte per lane: pairs of lanes make a byte
    const uint32_t hi = __shfl_down_sync(0xffffffffu, bits, 1);
    if ((lane & 1) == 0) out[lane / 2] = uint8_t(bits | (hi << 4));
  } else if constexpr (E == 4) {
    out[lane] = uint8_t(bits);
  } else if constexpr (E == 8) {
    out[2 * lane] = uint8_t(bits);
    out[2 * lane + 1] = uint8_t(bits >> 8);
  }
}

// ---- L1 on packed codes ----------------------------------------------------------------------------------------
// A 2-bit code c is the thermometer (c >= 1, c >= 2, c >= 3); |a - b| = number of differing thermometer bits.
// For a word of 16 codes (low bit l at even positions, high bit h at odd ones): c>=1 = h|l, c>=2 = h, c>=3 = h&l.
// P packs (c>=1) at the even positions and (c>=3) at the odd ones; c>=2 is the raw word's odd bits.
// dist(word) = popc(Pq ^ Pk) + popc((wq ^ wk) & 0xAAAAAAAA).

__device__ __forceinline__ uint32_t therm_pack(uint32_t w) {
  return ((w | (w >> 1)) & 0x55555555u) | (w & (w << 1) & 0xAAAAAAAAu);
}
__host__ __device__ inline uint32_t therm_pack_host(uint32_t w) {
  return ((w | (w >> 1)) & 0x55555555u) | (w & (w << 1) & 0xAAAAAAAAu);
}

__device__ __forceinline__ int word_l1(uint32_t pq, uint32_t wq, uint32_t pk, uint32_t wk) {
  return __popc(pq ^ pk) + __popc((wq ^ wk) & 0xAAAAAAAAu);
}

// ---- block scan ------------------------------------------------------------------------------------------------
// Block-wide exclusive scan of one value per thread (THREADS threads, warp_sums: THREADS / 32 words of shared
// memory; two block barriers). Returns the exclusive prefix, sets total. select.cu's and stream_attention.cu's tails.
// SEGMENT < THREADS (a multiple of 32): independent scans of consecutive segments of SEGMENT threads, total the
// segment's (the cluster kernel's compaction, one segment per row).
template <int THREADS, int SEGMENT = THREADS>
__device__ __forceinline__ uint32_t block_exclusive_scan(uint32_t v, uint32_t* warp_sums, uint32_t& total) {
  static_assert(SEGMENT % 32 == 0 && THREADS % SEGMENT == 0, "segments of whole warps");
  constexpr int kSegWarps = SEGMENT / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, seg0 = warp / kSegWarps * kSegWarps;
  uint32_t x = v;
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const uint32_t y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) warp_sums[warp] = x;
  __syncthreads();
  uint32_t before = 0, all = 0;
#pragma unroll
  for (int w = 0; w < THREADS / 32; ++w) {
    const uint32_t s = (kSegWarps == THREADS / 32 || (w >= seg0 && w < seg0 + kSegWarps)) ? warp_sums[w] : 0u;
    before += w < warp ? s : 0;
    all += s;
  }
  __syncthreads();
  total = all;
  return before + x - v;
}

// ---- selection helpers (v8: the stream kernel; v9: the cluster kernel) ----------------------------------------
// Block barrier, the non-aligned form (barrier.sync without .aligned: correct even where a warp has not reconverged,
// or threads reach the barrier at different instructions), after a warp reconvergence. __syncthreads() is the aligned
// form; two selection kernels of this backend with barriers after divergent code failed silently (NOTES.md, v7.2-v7.4).
__device__ __forceinline__ void cta_sync() {
  __syncwarp();
  asm volatile("barrier.sync 0;" ::: "memory");
}

// Kept (bit k: forced, or middle below the cut) and tie (middle at the cut) masks of the 8 tokens t..t+7 whose u16
// distances are the halves of w[0..3], without a predicate per token: halfword SIMD compares, and the forced / valid
// ranges as bit ranges. (The per-token boolean form compiled to 16 predicates packed by P2R and miscounted the kept
// tokens on the GPU: runs 4-5, NOTES.md v8-stream.) I: the index type (int64_t token ids, or int offsets in a block).
template <class I>
__device__ __forceinline__ uint32_t bit_range(I t, I lo, I hi) {  // bits k with lo <= t + k < hi
  const int a = int(max(I(0), min(I(8), lo - t))), b = int(max(I(0), min(I(8), hi - t)));
  return b > a ? ((1u << b) - 1u) & ~((1u << a) - 1u) : 0u;
}
template <class I>
__device__ __forceinline__ void token_kinds(const uint32_t (&w)[4], I t, I n, I s0, I tail, int cut, uint32_t& km,
                                            uint32_t& tm) {
  const uint32_t cc = uint32_t(cut) * 0x00010001u;
  uint32_t lt8 = 0, eq8 = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t lt = __vcmpltu2(w[i], cc), eq = __vcmpeq2(w[i], cc);  // 0xffff in each true half
    lt8 |= ((lt & 1u) | ((lt >> 15) & 2u)) << (2 * i);
    eq8 |= ((eq & 1u) | ((eq >> 15) & 2u)) << (2 * i);
  }
  const uint32_t valid = bit_range<I>(t, I(0), n), mid = bit_range<I>(t, s0, tail);
  km = valid & (~mid | lt8);
  tm = valid & mid & eq8;
}

// ---- split-K partials (v6) -------------------------------------------------------------------------------------
// The partials of NH consecutive heads over C chunks (chunk stride ldc per head): ml[(h * ldc + c) * 2] = max (base-2
// exponent units), + 1 = sum of weights; acc[(h * ldc + c) * D + col] = weighted V sum (rows 16-byte aligned). An
// empty chunk holds (-inf, 0, zeros); at least one chunk per head is not empty. out[h * D + col] =
// sum_c w_c acc_c / sum_c w_c l_c with w_c = 2^(m_c - M). Block-wide (256 threads, NH <= 8): warp h finds head h's max
// and weight sum, then each thread takes 4 columns and a share of the chunks (consecutive lanes share a quad), all
// loads independent of each other. v5 folded the chunks online per column, ceil(C / 8) dependent L2 round trips per
// column and two columns per thread: ~5 us for a GQA unit of 33 chunks (dense GQA's fixed cost was ~17 us vs MHA's 9).
template <int D, int NH>
__device__ void merge_partials(const float* ml, const float* acc, int C, int ldc, float* out) {
  constexpr int kT = 256;
  static_assert(NH >= 1 && NH <= 8, "heads per merge");
  constexpr int Q = NH * D / 4;           // column quads
  constexpr int S = Q >= kT ? 1 : kT / Q;  // threads per quad: a power of two <= 16
  __shared__ float s_M[NH], s_L[NH];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (warp < NH) {
    const float* mh = ml + int64_t(warp) * ldc * 2;
    float M = -INFINITY;
    for (int c = lane; c < C; c += 32) M = fmaxf(M, __ldcg(mh + 2 * c));
#pragma unroll
    for (int o = 16; o > 0; o /= 2) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
    float L = 0.0f;
    for (int c = lane; c < C; c += 32) {
      const float m = __ldcg(mh + 2 * c), l = __ldcg(mh + 2 * c + 1);
      L += m == -INFINITY ? 0.0f : l * exp2f(m - M);
    }
#pragma unroll
    for (int o = 16; o > 0; o /= 2) L += __shfl_xor_sync(0xffffffffu, L, o);
    if (lane == 0) s_M[warp] = M, s_L[warp] = L;
  }
  __syncthreads();
  for (int i = tid; i < Q * S; i += kT) {  // Q * S is a multiple of 32: whole warps iterate together
    const int qd = i / S, s = i % S;
    const int h = qd / (D / 4), col = (qd % (D / 4)) * 4;
    const float M = s_M[h];
    const float* mh = ml + int64_t(h) * ldc * 2;
    const float* ah = acc + int64_t(h) * ldc * D + col;
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
#pragma unroll 4
    for (int c = s; c < C; c += S) {
      const float m = __ldcg(mh + 2 * c);
      const float4 v = __ldcg(reinterpret_cast<const float4*>(ah + int64_t(c) * D));
      const float w = m == -INFINITY ? 0.0f : exp2f(m - M);
      a0 = fmaf(w, v.x, a0), a1 = fmaf(w, v.y, a1), a2 = fmaf(w, v.z, a2), a3 = fmaf(w, v.w, a3);
    }
#pragma unroll
    for (int o = S / 2; o > 0; o /= 2) {
      a0 += __shfl_xor_sync(0xffffffffu, a0, o), a1 += __shfl_xor_sync(0xffffffffu, a1, o);
      a2 += __shfl_xor_sync(0xffffffffu, a2, o), a3 += __shfl_xor_sync(0xffffffffu, a3, o);
    }
    if (s == 0) {
      const float L = s_L[h];
      float* o = out + h * D + col;
      o[0] = a0 / L, o[1] = a1 / L, o[2] = a2 / L, o[3] = a3 / L;
    }
  }
}

// v7: the same merge for a run-time number of heads nh (1..8) and kT threads, in one pass of independent loads: each
// thread folds its share of the chunks online (max, weight sum and 4 columns, batches of 16 chunks in flight: 33
// chunks in 3 round trips at S = 1), then the S threads of a column quad combine by shuffles. merge_partials needs
// the heads' max before any column (two dependent L2 round trips and a block barrier first).
template <int D, int kT>
__device__ void merge_partials_online(const float* ml, const float* acc, int C, int ldc, int nh, float* out) {
  static_assert(kT % 32 == 0, "whole warps");
  constexpr int kBatch = 16;
  const int Q = nh * D / 4;  // column quads (a multiple of 16)
  int S = 1;                 // threads per quad: a power of two <= 16, neighbouring lanes of one warp
  while (S < 16 && Q * S * 2 <= kT) S *= 2;
  const int tid = threadIdx.x;
  auto fold = [](float& m, float& l, float4& a, float mc, float lc, float4 v) {
    const float mn = fmaxf(m, mc);
    const float fo = m == -INFINITY ? 0.0f : exp2f(m - mn), fc = mc == -INFINITY ? 0.0f : exp2f(mc - mn);
    l = l * fo + lc * fc;
    a.x = a.x * fo + v.x * fc, a.y = a.y * fo + v.y * fc, a.z = a.z * fo + v.z * fc, a.w = a.w * fo + v.w * fc;
    m = mn;
  };
  for (int base = 0; base < Q * S; base += kT) {  // the same trip count in every thread (shuffles below)
    const int i = base + tid;
    const bool active = i < Q * S;
    const int qd = active ? i / S : 0, s = i % S;
    const int h = qd / (D / 4), col = (qd % (D / 4)) * 4;
    const float* mh = ml + int64_t(h) * ldc * 2;
    const float* ah = acc + int64_t(h) * ldc * D + col;
    float m = -INFINITY, l = 0.0f;
    float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (active) {
      for (int c0 = s; c0 < C; c0 += kBatch * S) {
        float mc[kBatch], lc[kBatch];
        float4 v[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int c = c0 + u * S;
          const bool ok = c < C;
          mc[u] = ok ? __ldcg(mh + 2 * c) : -INFINITY;
          lc[u] = ok ? __ldcg(mh + 2 * c + 1) : 0.0f;
          v[u] = ok ? __ldcg(reinterpret_cast<const float4*>(ah + int64_t(c) * D)) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u) fold(m, l, a, mc[u], lc[u], v[u]);
      }
    }
    for (int o = S / 2; o > 0; o /= 2) {
      const float om = __shfl_xor_sync(0xffffffffu, m, o), ol = __shfl_xor_sync(0xffffffffu, l, o);
      float4 oa;
      oa.x = __shfl_xor_sync(0xffffffffu, a.x, o), oa.y = __shfl_xor_sync(0xffffffffu, a.y, o);
      oa.z = __shfl_xor_sync(0xffffffffu, a.z, o), oa.w = __shfl_xor_sync(0xffffffffu, a.w, o);
      fold(m, l, a, om, ol, oa);
    }
    if (active && s == 0) {
      float* o = out + h * D + col;
      o[0] = a.x / l, o[1] = a.y / l, o[2] = a.z / l, o[3] = a.w / l;
    }
  }
}

}  // namespace adamas::cuda::detail
