// Kernels of Quest, StreamingLLM and the calibrated-threshold gathers (see gpu_sparse_baselines.h).
#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <cfloat>
#include <string>

#include "adamas/error.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/gpu_sparse_baselines.h"
#include "engine/cuda/radix_select.cuh"

namespace adamas::gpu {
namespace {

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// One thread per (KV head, coordinate), the rows in order: several tokens of one page fold in sequence.
__global__ void quest_fold_kernel(const __half* k_new, int64_t rows, const int32_t* pos, const int32_t* slot,
                                  QuestPages p, int64_t layer) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= p.kv_heads * p.head_dim) return;
  const int64_t h = i / p.head_dim, d = i % p.head_dim;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = pos[r];
    const int64_t at = p.offset(slot[r], layer, h, t / p.page_size) + d;
    const float x = __half2float(k_new[(r * p.kv_heads + h) * p.head_dim + d]);
    const bool first = t % p.page_size == 0;
    p.min[at] = first ? x : fminf(p.min[at], x);
    p.max[at] = first ? x : fmaxf(p.max[at], x);
  }
}

constexpr int kSelectThreads = 256;

__global__ void __launch_bounds__(kSelectThreads) quest_select_kernel(const float* q, int64_t n_heads,
                                                                      const int32_t* pos, const int32_t* slot,
                                                                      QuestPages p, int64_t layer, int64_t budget,
                                                                      SelectedRows out) {
  using Scan = cub::BlockScan<int, kSelectThreads>;
  __shared__ typename Scan::TempStorage scan;
  __shared__ RadixScratch radix;
  __shared__ float qs[256];
  const int64_t r = blockIdx.x, h = blockIdx.y, unit = r * n_heads + h, hd = p.head_dim, ps = p.page_size;
  const int64_t n = int64_t(pos[r]) + 1, kh = h / (n_heads / p.kv_heads);
  int32_t* idx = out.indices + unit * out.capacity;
  if (budget >= n) {  // everything fits: dense, as quest_select
    for (int64_t t = threadIdx.x; t < n; t += blockDim.x) idx[t] = int32_t(t);
    if (threadIdx.x == 0) out.counts[unit] = int32_t(n);
    return;
  }
  for (int64_t d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = q[unit * hd + d];
  __syncthreads();
  const int64_t n_pages = (n + ps - 1) / ps, scored = n_pages - 1;
  const int64_t keep = imin(n_pages, budget / ps > 1 ? budget / ps : 1), others = keep - 1;
  float* score = out.scores + unit * out.max_pages;
  for (int64_t pg = threadIdx.x; pg < scored; pg += blockDim.x) {
    const float* lo = p.min + p.offset(slot[r], layer, kh, pg);
    const float* hi = p.max + p.offset(slot[r], layer, kh, pg);
    float s = 0.0f;  // the CPU's order and rounding: s += max(q*hi, q*lo), no fused multiply-add
    for (int64_t d = 0; d < hd; ++d) s = __fadd_rn(s, fmaxf(__fmul_rn(qs[d], hi[d]), __fmul_rn(qs[d], lo[d])));
    score[pg] = s;
  }
  __syncthreads();
  // (score order << 32) | page: larger = better, equal scores to the more recent page.
  auto key = [score](int64_t pg) { return (uint64_t(float_order(score[pg])) << 32) | uint64_t(pg); };
  const uint64_t kth = others > 0 ? kth_largest_key(key, scored, others, radix) : ~uint64_t(0);
  // Compaction in page order: every selected page but the newest is full.
  int carry = 0;
  for (int64_t base = 0; base < n_pages; base += blockDim.x) {
    const int64_t pg = base + threadIdx.x;
    const int chosen = pg < n_pages && (pg == n_pages - 1 || (others > 0 && key(pg) >= kth)) ? 1 : 0;
    int before = 0, total = 0;
    Scan(scan).ExclusiveSum(chosen, before, total);
    if (chosen) {
      const int64_t at = int64_t(carry + before) * ps;
      for (int64_t t = pg * ps; t < imin(n, (pg + 1) * ps); ++t) idx[at + t - pg * ps] = int32_t(t);
    }
    carry += total;
    __syncthreads();  // the scan storage is reused
  }
  if (threadIdx.x == 0) out.counts[unit] = int32_t(others * ps + (n - (n_pages - 1) * ps));
}

// One block of 4 warps per (row, query head); lanes own E consecutive coordinates, warps take every 4th selected
// token with an online softmax, then the 4 partial softmaxes merge in shared memory.
constexpr int kAttendWarps = 4;

template <int E>
struct HalfVec;
template <>
struct HalfVec<2> {
  using T = __half2;
};
template <>
struct HalfVec<4> {
  using T = uint2;
};
template <>
struct HalfVec<8> {
  using T = uint4;
};

template <int E>
__device__ __forceinline__ void load_row(const __half* row, float* x) {
  const typename HalfVec<E>::T raw = *reinterpret_cast<const typename HalfVec<E>::T*>(row);
  const __half* h = reinterpret_cast<const __half*>(&raw);
#pragma unroll
  for (int e = 0; e < E; ++e) x[e] = __half2float(h[e]);
}

template <int E>
__global__ void __launch_bounds__(32 * kAttendWarps) attend_selected_kernel(const float* q, int64_t n_heads,
                                                                            const int32_t* pos, const int32_t* slot,
                                                                            CacheLayout c, int64_t layer,
                                                                            RowSelection sel, float scale,
                                                                            float* out) {
  constexpr int hd = 32 * E;
  __shared__ float wm[kAttendWarps], wl[kAttendWarps], wacc[kAttendWarps][hd];
  const int64_t r = blockIdx.x, h = blockIdx.y, unit = r * n_heads + h;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t n = int64_t(pos[r]) + 1, kh = h / (n_heads / c.kv_heads);
  const uint8_t* base = c.base + int64_t(slot[r]) * c.slot_bytes + layer * c.layer_bytes;
  const __half* K = reinterpret_cast<const __half*>(base + c.k_off) + kh * c.capacity * hd + lane * E;
  const __half* V = reinterpret_cast<const __half*>(base + c.v_off) + kh * c.capacity * hd + lane * E;
  const bool streaming = sel.method == Method::streaming;
  const int64_t count = streaming ? imin(n, sel.budget) : sel.quest.counts[unit];
  const int32_t* idx = sel.quest.indices + unit * sel.quest.capacity;
  const int64_t window_start = n - (sel.budget - sel.sink);
  float qv[E], acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) qv[e] = q[unit * hd + lane * E + e], acc[e] = 0.0f;
  float m = -FLT_MAX, l = 0.0f;
  for (int64_t t = warp; t < count; t += kAttendWarps) {
    int64_t j;
    if (!streaming) j = idx[t];
    else j = n <= sel.budget || t < sel.sink ? t : window_start + (t - sel.sink);
    float k[E], v[E];
    load_row<E>(K + j * hd, k);
    load_row<E>(V + j * hd, v);
    float dot = 0.0f;
#pragma unroll
    for (int e = 0; e < E; ++e) dot = fmaf(qv[e], k[e], dot);
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    const float s = dot * scale, m_new = fmaxf(m, s);
    const float corr = expf(m - m_new), pe = expf(s - m_new);
    l = l * corr + pe;
#pragma unroll
    for (int e = 0; e < E; ++e) acc[e] = fmaf(pe, v[e], acc[e] * corr);
    m = m_new;
  }
  if (lane == 0) wm[warp] = m, wl[warp] = l;
#pragma unroll
  for (int e = 0; e < E; ++e) wacc[warp][lane * E + e] = acc[e];
  __syncthreads();
  float M = -FLT_MAX;
  for (int w = 0; w < kAttendWarps; ++w) M = fmaxf(M, wm[w]);
  float L = 0.0f;
  for (int w = 0; w < kAttendWarps; ++w) L += wl[w] * expf(wm[w] - M);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float o = 0.0f;
    for (int w = 0; w < kAttendWarps; ++w) o += wacc[w][d] * expf(wm[w] - M);
    out[unit * hd + d] = o / L;
  }
}

__global__ void gather_thresholds_kernel(const Thresholds* table, int64_t slot_stride, int64_t offset,
                                         int64_t per_row, const int32_t* slot, int64_t rows, Thresholds* out) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= rows * per_row) return;
  out[i] = table[int64_t(slot[i / per_row]) * slot_stride + offset + i % per_row];
}

unsigned blocks(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

}  // namespace

int64_t quest_capacity(int64_t budget, int64_t page_size) {
  return std::max(budget, (std::max<int64_t>(1, budget / page_size)) * page_size);
}

void quest_fold_pages(const __half* k_new, int64_t rows, const int32_t* pos, const int32_t* slot,
                      const QuestPages& pages, int64_t layer, cudaStream_t s) {
  const int64_t n = pages.kv_heads * pages.head_dim;
  quest_fold_kernel<<<blocks(n, 128), 128, 0, s>>>(k_new, rows, pos, slot, pages, layer);
}

void quest_select_rows(const float* q, int64_t rows, int64_t n_heads, const int32_t* pos, const int32_t* slot,
                       const QuestPages& pages, int64_t layer, int64_t budget, const SelectedRows& out,
                       cudaStream_t s) {
  if (pages.head_dim > 256 || out.capacity < quest_capacity(budget, pages.page_size))
    throw Error(ErrorKind::invalid_argument, "quest_select_rows: head_dim " + std::to_string(pages.head_dim) +
                                                 " (<= 256), capacity " + std::to_string(out.capacity) +
                                                 " for budget " + std::to_string(budget));
  quest_select_kernel<<<dim3(unsigned(rows), unsigned(n_heads)), kSelectThreads, 0, s>>>(q, n_heads, pos, slot, pages,
                                                                                       layer, budget, out);
}

void attend_selected_rows(const float* q, int64_t rows, int64_t n_heads, const int32_t* pos, const int32_t* slot,
                          const CacheLayout& cache, int64_t layer, const RowSelection& sel, float* out,
                          cudaStream_t s) {
  if (!(sel.method == Method::quest || (sel.method == Method::streaming && 0 <= sel.sink && sel.sink < sel.budget)))
    throw Error(ErrorKind::invalid_argument, std::string("attend_selected_rows: method ") + method_name(sel.method) +
                                                 ", sink " + std::to_string(sel.sink) + ", budget " +
                                                 std::to_string(sel.budget));
  const float scale = 1.0f / sqrtf(float(cache.head_dim));
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(n_heads));
  constexpr int threads = 32 * kAttendWarps;
  switch (cache.head_dim) {
    case 64: return attend_selected_kernel<2><<<grid, threads, 0, s>>>(q, n_heads, pos, slot, cache, layer, sel, scale, out);
    case 128: return attend_selected_kernel<4><<<grid, threads, 0, s>>>(q, n_heads, pos, slot, cache, layer, sel, scale, out);
    case 256: return attend_selected_kernel<8><<<grid, threads, 0, s>>>(q, n_heads, pos, slot, cache, layer, sel, scale, out);
    default:
      throw Error(ErrorKind::unsupported, "attend_selected_rows: head_dim " + std::to_string(cache.head_dim) +
                                              " (64, 128, 256)");
  }
}

void gather_thresholds(const Thresholds* table, int64_t slot_stride, int64_t offset, int64_t per_row,
                       const int32_t* slot, int64_t rows, Thresholds* out, cudaStream_t s) {
  gather_thresholds_kernel<<<blocks(rows * per_row, 256), 256, 0, s>>>(table, slot_stride, offset, per_row, slot,
                                                                       rows, out);
}

}  // namespace adamas::gpu
