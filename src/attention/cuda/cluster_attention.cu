// v9: select + attend in one launch, one thread-block cluster of C blocks per (sequence, KV head), one block per SM
// (NOTES.md "v9"). Block `rank` streams the codes of tokens [rank T, rank T + T) once (distance.cuh's pass: exact u16
// distances and a middle histogram in its shared memory) and turns its histogram into cumulative counts. v11: it then
// pushes the span of those counts that varies into every block's shared memory (st.async, counted on the receiver's
// mbarrier: no cluster barrier, no remote loads), and every block finds the cut-off itself from the C blocks' counts,
// and its rank's prefix of kept and tie tokens from the lower ranks' counts at the cut: no global scratch, no L2 round
// trip. It compacts its own tokens into the output indices (the CPU's order and tie rule) and into a list in shared
// memory, gathers those K/V rows and attends them (one online softmax per warp), merges its warps and pushes its
// partials into the shared memory of the block that merges them, which merges the C partials once they have landed.
// v4-v8 paid a grid-wide arrival barrier through L2, a cut search over a global histogram, a second launch for the
// attention and its split-K merge through L2; v9-v10.2 two cluster barriers (a GPU-scope membar each).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include <cooperative_groups.h>

#include "attention/cuda/cluster_attention.h"
#include "attention/cuda/common.cuh"
#include "attention/cuda/distance.cuh"
#include "attention/cuda/launch.h"

namespace adamas::cuda::detail {
namespace {

constexpr int kThreads = 512;  // one block per SM: 16 warps (8 left the distance pass at ~1.5 TB/s, run 1)
constexpr int kWarps = kThreads / 32;
constexpr int kMaxCluster = 16;
constexpr int kMaxTokensPerBlock = 32760;  // kept and tie counts of a block are packed in 16 bits
constexpr int kRowsInFlight = 4;           // attention: selected K/V rows per warp in flight
constexpr int kRingStages = 4;             // distance passes: chunks of codes in the shared-memory ring
constexpr int kRingBytes = 32768;          // bytes per chunk (1024 tokens at d = 128)

struct ClusterParams {
  BatchDesc bd;
  const float* q;  // [batch][n_heads][D]
  int n_heads, kv_heads, units;
  const Thr* qthr;  // n_heads entries, or null
  Thr cfg_thr;
  float hscale;  // 1 / sqrt(D), the Hadamard scale
  float qscale;  // attention scale * log2(e)
  int budget, sink, window;
  int bins;  // histogram row stride: the distance bins + 1 (an always-empty last bin: after the in-place exclusive
             // scan, entry bins - 1 holds the middle's total)
  int tmax;  // tokens per block at most: a multiple of 8, <= kMaxTokensPerBlock
  int lcap;  // list entries per row (selected tokens of one block)
  int vec_codes;
  int skip;       // profiling builds: see distance_pass_ring
  int lanes2;     // G = 1, D = 128: two lanes per token, v9's layout (ADAMAS_CUDA_CLUSTER_LPT=2, for A/B)
  int ring_bulk;  // the ring may use bulk copies (ADAMAS_CUDA_CLUSTER_RING=cp.async: never, for A/B)
  int32_t* idx;  // [batch][units][cap]
  int64_t cap;
  int32_t* counts;  // [batch][units]
  float* out;       // [batch][n_heads][D] or null (selection only)
  unsigned long long* stamps;
};

// Shared memory of a block: cumulative counts [R][bins] u32, query code words [G][D/16] u32, distances [R][tmax] u16;
// with the attention: lists [R][lcap] u16; then one region that first holds the counts' inbox (the C blocks'
// cumulative counts as u16, [C][R][pitch], each block's span of them: a block's counts are at most
// kMaxTokensPerBlock) and, with the attention,
// later the warp partials [kWarps][QH][D + 2] f32 (written after the inbox was read). After the distance pass the ring
// holds the merge's inbox: the C blocks' partials [C][G][D + 2] f32, of which a block receives those of the query heads
// it merges.
template <int D, int G, bool SHARED>
struct Layout {
  static constexpr int R = SHARED ? 1 : G, QH = SHARED ? G : 1;
  __host__ __device__ static size_t up16(size_t x) { return (x + 15) / 16 * 16; }
  __host__ __device__ static int pitch(int bins) { return (bins + 7) / 8 * 8; }  // u16 per inbox row: 16-byte pieces
  __host__ __device__ static size_t qw(int bins) { return up16(size_t(R) * bins * 4); }
  __host__ __device__ static size_t dist(int bins) { return qw(bins) + up16(size_t(G) * (D / 16) * 4); }
  __host__ __device__ static size_t list(int bins, int tmax) { return dist(bins) + up16(size_t(R) * tmax * 2); }
  __host__ __device__ static size_t wpart(int bins, int tmax, int lcap) { return list(bins, tmax) + up16(size_t(R) * lcap * 2); }
  __host__ __device__ static size_t inbox_bytes(int bins, int C, bool attend) {
    const size_t counts = size_t(C) * R * pitch(bins) * 2, parts = size_t(kWarps) * QH * (D + 2) * 4;
    return attend ? (counts > parts ? counts : parts) : counts;
  }
  // The ring starts on a 128-byte boundary (a row of the 32 banks): with 16-byte alignment only, the bulk copies into
  // it made the MHA 32K selection ~2.3 us slower (NOTES v10.2).
  __host__ __device__ static size_t ring(int bins, int tmax, int lcap, int C, bool attend) {
    const size_t end = wpart(bins, tmax, lcap) + inbox_bytes(bins, C, attend);
    return (end + 127) / 128 * 128;
  }
  static_assert(size_t(kMaxCluster) * G * (D + 2) * 4 <= size_t(kRingStages) * kRingBytes, "the inbox fits the ring");
  __host__ __device__ static size_t total(int bins, int tmax, int lcap, int C, bool attend) {
    return ring(bins, tmax, lcap, C, attend) + size_t(kRingStages) * kRingBytes;
  }
};

// Forced tokens [0, s0) and [tail, n) (the CPU's rule); the middle [s0, tail) competes.
__device__ __forceinline__ int64_t forced_before(int64_t t, int64_t s0, int64_t tail) {
  return min(t, s0) + max(int64_t(0), t - tail);
}

// This lane's D / 32 elements of a K or V row, raw (several rows in flight before the first use), then as f32.
template <class T, int E>
struct RowPiece {
  static constexpr int kWords = E * int(sizeof(T)) / 4;
  uint32_t w[kWords];
};
template <class T, int E>
__device__ __forceinline__ RowPiece<T, E> load_piece(const T* p) {
  RowPiece<T, E> r;
  if constexpr (RowPiece<T, E>::kWords == 4) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
    r.w[0] = v.x, r.w[1] = v.y, r.w[2] = v.z, r.w[3] = v.w;
  } else if constexpr (RowPiece<T, E>::kWords == 2) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    r.w[0] = v.x, r.w[1] = v.y;
  } else {
    r.w[0] = __ldg(reinterpret_cast<const uint32_t*>(p));
  }
  return r;
}
template <class T, int E>
__device__ __forceinline__ void piece_f32(const RowPiece<T, E>& r, float (&x)[E]) {
#pragma unroll
  for (int i = 0; i < E / 2; ++i) {
    const uint32_t w = r.w[i];
    if constexpr (std::is_same_v<T, __half>) {
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w));
      x[2 * i] = f.x, x[2 * i + 1] = f.y;
    } else {
      x[2 * i] = __uint_as_float(w << 16), x[2 * i + 1] = __uint_as_float(w & 0xffff0000u);
    }
  }
}

__device__ __forceinline__ uint32_t warp_sum(uint32_t v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Per row (static shared memory): the cut-off, the ties to skip, kept and tie tokens of the row before this block,
// this block's selected tokens.
struct RowCut {
  int cut, skip, a_before, e_before, count;
};

// A block's cumulative counts of one row as pushed to the others: cum[j] = 0 for j < lo, total for j >= hi, and the
// entries in [lo, hi) (the span of its middle distances) as u16 in the receiver's inbox at the same offsets.
struct alignas(8) CountSpan {
  uint32_t lo_hi;  // lo | hi << 16
  uint32_t total;
  __device__ int lo() const { return int(lo_hi & 0xffffu); }
  __device__ int hi() const { return int(lo_hi >> 16); }
  __device__ uint32_t at(const uint16_t* row, int j) const { return j < lo() ? 0u : j >= hi() ? total : uint32_t(row[j]); }
  __device__ int pieces() const {  // 16-byte pieces (8 entries) covering [lo, hi)
    const int l = lo() / 8, h = (hi() + 7) / 8;
    return max(0, h - l);
  }
};

// Block c's cum[j] of one row in a block's counts inbox: the row's spans at spans[c * stride] and entries at
// in_row + c * stride * pitch (stride: the rows per block, R).
__device__ __forceinline__ uint32_t inbox_cum(const CountSpan* spans, const uint16_t* in_row, int stride, int pitch,
                                              int c, int j) {
  return spans[c * stride].at(in_row + c * stride * pitch, j);
}

// Block-wide, for a block of one selection row (MHA, shared GQA), once the C blocks' counts of the row have landed in
// its inbox (block c's: spans[c], entries at cin + c * pitch): the row's cut-off. The cut: the smallest bin c with
// tot[c + 1] >= need, tot[j] = sum_c cum_c[j] (need == 0: bin 0, none of its ties), the CPU's rule (select.cu
// find_cut); no such bin (the middle is not larger than need): every middle token is kept (nb). Only the union of the
// spans [ulo, uhi) varies (tot is 0 below it and the middle's size from its end), so only those totals are summed, into
// tot (bins entries), and every bin there tests itself. (v9-v10.2: a cluster barrier, then one warp searched 32 ways
// with C remote loads per probe: ~1.2 us at MHA 32K and ~2 us at GQA with local loads, a chain of dependent loads;
// summing every bin instead of the union: ~4 us at per-head GQA 32K, NOTES v11.) Per-head GQA (R rows per block)
// takes search_cut: this form over its rows was ~2 us slower there. Every thread of the block calls it.
__device__ __forceinline__ int block_cut(const CountSpan* spans, const uint16_t* cin, int pitch, int bins, int C,
                                         int64_t need, uint32_t* tot) {
  __shared__ int ulo, uhi, cut;
  __shared__ uint32_t mid;
  if (threadIdx.x == 0) {
    int lo = bins, hi = 0;
    uint32_t m = 0;
    for (int c = 0; c < C; ++c) {
      const CountSpan sp = spans[c];
      m += sp.total;
      if (sp.total > 0) lo = min(lo, sp.lo()), hi = max(hi, sp.hi());
    }
    ulo = lo, uhi = hi, mid = m;
    cut = need == 0 ? 0 : int64_t(m) < need ? bins - 1 : -1;  // -1: found below
  }
  __syncthreads();
  // All four read here, before any thread writes the cut below (ptxas packs them into one 16-byte word: a vector load
  // of ulo, uhi and mid after the second barrier also read the cut as another thread wrote it, a racecheck hazard).
  const int lo = ulo, hi = uhi;
  const uint32_t m = mid;
  const bool search = cut < 0;
  if (search)
    for (int j = lo + int(threadIdx.x); j < hi; j += kThreads) {
      uint32_t t = 0;
      for (int c = 0; c < C; ++c) t += inbox_cum(spans, cin, 1, pitch, c, j);
      tot[j] = t;
    }
  __syncthreads();
  if (search) {
    auto total_at = [&](int j) { return j < lo ? 0u : j >= hi ? m : tot[j]; };
    // need > 0 here, and the middle holds at least need: exactly one bin j in [max(1, lo), hi] qualifies.
    for (int j = max(1, lo) + int(threadIdx.x); j <= hi; j += kThreads)
      if (int64_t(total_at(j)) >= need && int64_t(total_at(j - 1)) < need) cut = j - 1;
  }
  __syncthreads();
  return cut;
}

// Warp-wide, the same cut for one row by a 32-way search over the totals (C loads per probe): per-head GQA takes this,
// where block_cut's form over its R = G rows was ~2 us slower (NOTES v11).
__device__ __forceinline__ int search_cut(const CountSpan* spans, const uint16_t* in_row, int stride, int pitch,
                                          int bins, int C, int64_t need) {
  const int lane = threadIdx.x & 31, nb = bins - 1;
  auto total_at = [&](int j) {  // sum over the cluster of cum[j]
    uint32_t s = 0;
#pragma unroll 4
    for (int c = 0; c < C; ++c) s += inbox_cum(spans, in_row, stride, pitch, c, j);
    return s;
  };
  const uint32_t mid_all = warp_sum(lane < C ? spans[lane * stride].total : 0u);
  if (int64_t(mid_all) < need) return nb;  // keep every middle token
  int lo = 1, hi = nb;  // the smallest j in [lo, hi] with total_at(j) >= need; total_at(hi) >= need
  while (lo < hi) {
    const int step = (hi - lo + 30) / 31;
    const int j = min(hi, lo + lane * step);  // lane 31 probes hi
    const uint32_t ok = __ballot_sync(0xffffffffu, int64_t(total_at(j)) >= need);
    const int f = __ffs(int(ok)) - 1;
    const int jf = __shfl_sync(0xffffffffu, j, f), jp = __shfl_sync(0xffffffffu, j, max(f - 1, 0));
    lo = f == 0 ? jf : jp + 1;
    hi = jf;
  }
  return lo - 1;
}

// Warp-wide, given a row's cut: this block's prefix of kept and tie tokens in the row, and its number of selected
// tokens (the C blocks' counts of the row as in block_cut: spans[c * stride], entries at in_row + c * stride * pitch).
__device__ __forceinline__ RowCut row_cut(int cut, const CountSpan* spans, const uint16_t* in_row, int stride,
                                          int pitch, int bins, int C, int rank, int64_t need, int64_t forced_pre,
                                          int64_t forced_own, int len) {
  const int lane = threadIdx.x & 31, nb = bins - 1;
  auto cum_of = [&](int c, int j) { return inbox_cum(spans, in_row, stride, pitch, c, j); };
  // Lane c: block c's tokens below the cut and at it.
  uint32_t below = 0, ties = 0;
  if (lane < C) {
    below = cum_of(lane, cut);
    ties = cut < nb ? cum_of(lane, cut + 1) - below : 0u;
  }
  const uint32_t below_all = warp_sum(below), ties_all = warp_sum(ties);
  const uint32_t a_pre = warp_sum(lane < rank ? below : 0u), e_pre = warp_sum(lane < rank ? ties : 0u);
  const uint32_t a_own = __shfl_sync(0xffffffffu, below, rank), e_own = __shfl_sync(0xffffffffu, ties, rank);
  RowCut rc;
  rc.cut = cut;
  rc.skip = cut < nb ? int(int64_t(ties_all) - (need - int64_t(below_all))) : 0;
  rc.a_before = int(a_pre + forced_pre);
  rc.e_before = int(e_pre);
  // Selected here: kept and forced tokens, and the ties whose row-wide rank is >= skip.
  const int e_end = rc.e_before + int(e_own);
  rc.count = int(a_own + forced_own) + max(0, e_end - max(rc.e_before, rc.skip));
  rc.count = min(rc.count, len);
  return rc;
}
// (Run 5 tried the cluster's totals of every entry in local shared memory, one round of C x bins remote loads, then a
// local search: slower, MHA 32K select 27.4 -> 28.3 us, GQA 32K shared 16.8 -> 19.7. v11 has the counts pushed.)

// Exclusive scan, in place, of each of the R histogram rows (bins entries each): cum[i] = middle tokens below bin i.
template <int R>
__device__ __forceinline__ void histograms_to_cumulative(uint32_t* h, int bins, uint32_t* warp_sums) {
  const int tid = threadIdx.x;
  const int seg = (bins + kThreads - 1) / kThreads, lo = min(bins, tid * seg), hi = min(bins, lo + seg);
#pragma unroll 1
  for (int r = 0; r < R; ++r) {
    uint32_t* hr = h + r * bins;
    uint32_t mine = 0;
    for (int i = lo; i < hi; ++i) mine += hr[i];
    uint32_t total;
    uint32_t c = block_exclusive_scan<kThreads>(mine, warp_sums, total);
    for (int i = lo; i < hi; ++i) {
      const uint32_t v = hr[i];
      hr[i] = c;
      c += v;
    }
  }
}

// Ordered compaction of this block's tokens for its R rows, each row by its own kThreads / R threads (v10 ran the rows
// one after another on the whole block: ~1 us per row at per-head GQA, where a block's ~57-455 groups left most of
// 512 threads idle and each selected token is placed by a serial loop of its thread). In a row, thread t takes a
// contiguous run of groups of 8 tokens (one segment scan of its kept and tie counts), then writes each selected token
// to its rank in the row's output (out + r * cap, global token id) and, with lists, to its rank in this block's list
// of the row (lists + r * lcap, offset in the block). Same rule as compact_rows.
template <int R>
__device__ __forceinline__ void compact_block_rows(const uint16_t* dist, int tmax, int len, int mid_lo, int mid_hi,
                                                   const RowCut* rcs, int64_t t_begin, int32_t* out, int64_t cap,
                                                   uint16_t* lists, int lcap, uint32_t* warp_sums) {
  constexpr int T = kThreads / R;
  const int r = threadIdx.x / T, tid = threadIdx.x % T;
  const uint16_t* drow = dist + r * tmax;
  const RowCut rc = rcs[r];
  out += r * cap;
  uint16_t* list = lists != nullptr ? lists + r * lcap : nullptr;
  const int groups = (len + 7) / 8, gpt = (groups + T - 1) / T;
  const int g0 = min(groups, tid * gpt), g1 = min(groups, g0 + gpt);
  auto kinds = [&](int g, uint32_t& km, uint32_t& tm) {
    const uint4 v = *reinterpret_cast<const uint4*>(drow + g * 8);
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
    token_kinds<int>(w, g * 8, len, mid_lo, mid_hi, rc.cut, km, tm);
  };
  // The counting pass keeps the kinds of its first kCached groups (km | tm << 8) in registers for the placing pass,
  // which otherwise ran token_kinds on every group a second time (~40% of the compaction's instructions, Nsight
  // Compute at MHA 32K: NOTES v10.2). MHA 32K has 3 groups per thread, per-head GQA 32K 2; more than kCached are
  // recomputed. (8 cost short contexts ~0.5 us, where most threads have no group: NOTES v11.)
  constexpr int kCached = 4;
  uint32_t cached[kCached];
  uint32_t cnt = 0;
#pragma unroll
  for (int k = 0; k < kCached; ++k) {
    uint32_t km = 0, tm = 0;
    if (g0 + k < g1) kinds(g0 + k, km, tm);
    cached[k] = km | (tm << 8);
    cnt += uint32_t(__popc(km)) | (uint32_t(__popc(tm)) << 16);
  }
  for (int g = g0 + kCached; g < g1; ++g) {
    uint32_t km, tm;
    kinds(g, km, tm);
    cnt += uint32_t(__popc(km)) | (uint32_t(__popc(tm)) << 16);
  }
  uint32_t total;
  const uint32_t ex = block_exclusive_scan<kThreads, T>(cnt, warp_sums, total);  // T = kThreads at R = 1: v10's scan
  uint32_t a = uint32_t(rc.a_before) + (ex & 0xffffu), e = uint32_t(rc.e_before) + (ex >> 16);
  const uint32_t skip = uint32_t(rc.skip);
  const uint32_t first = uint32_t(rc.a_before) + (uint32_t(rc.e_before) > skip ? uint32_t(rc.e_before) - skip : 0u);
  auto place = [&](uint32_t slot, int local) {
    out[slot] = int32_t(t_begin + local);
    if (list != nullptr && slot - first < uint32_t(lcap)) list[slot - first] = uint16_t(local);
  };
  auto place_group = [&](int g, uint32_t m) {  // in token order (bit k: kept, bit 8 + k: tie)
    while (m != 0) {
      const int k = __ffs(int((m | (m >> 8)) & 0xffu)) - 1;
      if (m >> k & 1u) {
        place(a + (e > skip ? e - skip : 0u), g * 8 + k);
        ++a;
      } else {
        if (e >= skip) place(a + e - skip, g * 8 + k);
        ++e;
      }
      m &= ~((1u << k) | (1u << (8 + k)));
    }
  };
#pragma unroll
  for (int k = 0; k < kCached; ++k)
    if (cached[k] != 0) place_group(g0 + k, cached[k]);  // zero: past g1, or nothing selected
  for (int g = g0 + kCached; g < g1; ++g) {
    uint32_t km, tm;
    kinds(g, km, tm);
    place_group(g, km | (tm << 8));
  }
}

// Attention of this block's selected tokens: warp w takes row w % R and every (kWarps / R)-th entry of its list from
// w / R, kRowsInFlight K and V rows in flight per lane, an online softmax per query head of the row (QH: the group's
// heads when the selection is shared), and writes its partial (max in log2 units, weight sum, V sum) to wpart.
template <int D, int G, bool SHARED, class T>
__device__ __forceinline__ void attend_block(const ClusterParams& p, int b, int kvh, int64_t t_begin,
                                             const uint16_t* lists, const RowCut* rcs, float* wpart) {
  constexpr int R = SHARED ? 1 : G, QH = SHARED ? G : 1, E = D / 32, NSUB = kWarps / R;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int r = warp % R, sub = warp / R;
  const SeqDesc& sq = p.bd.seq[b];
  const T* K = static_cast<const T*>(sq.k) + kvh * sq.k_head + lane * E;
  const T* V = static_cast<const T*>(sq.v) + kvh * sq.v_head + lane * E;
  const uint16_t* list = lists + r * p.lcap;
  const int cnt = rcs[r].count;
  float qf[QH][E], m[QH], l[QH], acc[QH][E];
#pragma unroll
  for (int h = 0; h < QH; ++h) {
    const int qh = kvh * G + (SHARED ? h : r);
    const float* qr = p.q + (int64_t(b) * p.n_heads + qh) * D + lane * E;
#pragma unroll
    for (int e = 0; e < E; ++e) qf[h][e] = qr[e] * p.qscale, acc[h][e] = 0.0f;
    m[h] = -INFINITY, l[h] = 0.0f;
  }
  for (int j0 = sub; j0 < cnt; j0 += NSUB * kRowsInFlight) {
    RowPiece<T, E> kp[kRowsInFlight], vp[kRowsInFlight];
#pragma unroll
    for (int u = 0; u < kRowsInFlight; ++u) {
      const int j = j0 + u * NSUB;
      const int64_t t = t_begin + (j < cnt ? list[j] : list[j0]);
      kp[u] = load_piece<T, E>(K + t * sq.k_tok);
      vp[u] = load_piece<T, E>(V + t * sq.v_tok);
    }
    float s[QH][kRowsInFlight];
#pragma unroll
    for (int u = 0; u < kRowsInFlight; ++u) {
      float kf[E];
      piece_f32<T, E>(kp[u], kf);
#pragma unroll
      for (int h = 0; h < QH; ++h) {
        float d = 0.0f;
#pragma unroll
        for (int e = 0; e < E; ++e) d = fmaf(qf[h][e], kf[e], d);
#pragma unroll
        for (int o = 16; o > 0; o /= 2) d += __shfl_xor_sync(0xffffffffu, d, o);
        s[h][u] = j0 + u * NSUB < cnt ? d : -INFINITY;
      }
    }
#pragma unroll
    for (int h = 0; h < QH; ++h) {
      float mx = s[h][0];  // entry j0 is valid: m_new is finite
#pragma unroll
      for (int u = 1; u < kRowsInFlight; ++u) mx = fmaxf(mx, s[h][u]);
      const float m_new = fmaxf(m[h], mx), alpha = exp2f(m[h] - m_new);
      l[h] *= alpha;
#pragma unroll
      for (int e = 0; e < E; ++e) acc[h][e] *= alpha;
#pragma unroll
      for (int u = 0; u < kRowsInFlight; ++u) {
        const float w = exp2f(s[h][u] - m_new);
        float vf[E];
        piece_f32<T, E>(vp[u], vf);
        l[h] += w;
#pragma unroll
        for (int e = 0; e < E; ++e) acc[h][e] = fmaf(w, vf[e], acc[h][e]);
      }
      m[h] = m_new;
    }
  }
#pragma unroll
  for (int h = 0; h < QH; ++h) {
    float* wp = wpart + (warp * QH + h) * (D + 2);
#pragma unroll
    for (int e = 0; e < E; ++e) wp[lane * E + e] = acc[h][e];
    if (lane == 0) wp[D] = m[h], wp[D + 1] = l[h];
  }
}

// The distance passes of this kernel are fed by a ring in shared memory: kRingStages chunks of kRingBytes, one
// block barrier per chunk, kRingStages - 1 chunks always in flight (96 KB per SM) whatever the registers. The
// register-fed passes (distance.cuh) keep 64 KB per SM in flight only between their batches, and a cluster launch
// leaves SMs idle (30 clusters of 4 fit an H100, not 32: MHA batch 1 runs 32 clusters of 3 on 96 SMs): their
// stream ran at ~2 TB/s (run 5). Where a head's codes are contiguous (token stride = code bytes, the engine's and
// the bench's layout) one thread issues each chunk as one TMA bulk copy completing on the stage's mbarrier; else every
// thread copies its 16-byte pieces with cp.async. (Run 9: the two equal at MHA, bulk 2.5 us faster at GQA-shared
// 128K; run 13: the ring alone streams ~2.9 TB/s on 96 SMs, the L1 arithmetic is what bounds the pass.) Needs
// 16-byte aligned codes.
template <int D>
struct CodeRing {
  static constexpr int CB = D / 4, PPT = CB / 16, CT = kRingBytes / CB;  // code bytes, pieces per token, tokens per chunk
  const uint8_t* src;
  int64_t c_tok;
  int len, chunks;
  bool bulk;
  uint8_t* ring;
  uint64_t* bars;  // [kRingStages], bulk only
  __device__ CodeRing(const SeqDesc& sq, int kvh, int64_t t_begin, int len_, bool allow_bulk, uint8_t* ring_,
                      uint64_t* bars_)
      : src(sq.codes + kvh * sq.c_head + t_begin * sq.c_tok), c_tok(sq.c_tok), len(len_),
        chunks((len_ + CT - 1) / CT), bulk(allow_bulk && sq.c_tok == CB), ring(ring_), bars(bars_) {}
  __device__ void issue(int k) const {  // chunk k into stage k % kRingStages
    const int t0 = k * CT, cnt = min(CT, len - t0);
    uint8_t* dst = ring + size_t(k % kRingStages) * kRingBytes;
    if (bulk) {
      if (k < chunks && threadIdx.x == 0) {
        uint64_t* bar = bars + k % kRingStages;
        mbarrier_expect_tx(bar, unsigned(cnt * CB));
        bulk_copy_g2s(dst, src + int64_t(t0) * CB, unsigned(cnt * CB), bar);
      }
      return;
    }
    if (k < chunks)
      for (int i = threadIdx.x; i < cnt * PPT; i += kThreads) {
        const int tok = i / PPT, pc = i % PPT;
        cp_async16(dst + tok * CB + pc * 16, src + int64_t(t0 + tok) * c_tok + pc * 16, true);
      }
    cp_async_commit();  // a group even when empty: the waits count groups
  }
  // Before the pass's first block barrier (which orders the barriers' initialisation before any wait).
  __device__ void prologue() const {
    if (bulk && threadIdx.x == 0) {
      for (int s = 0; s < kRingStages; ++s) mbarrier_init(bars + s, 1);
      mbarrier_init_fence();
    }
#pragma unroll
    for (int k = 0; k < kRingStages - 1; ++k) issue(k);
  }
  // Waits for chunk k (every thread), refills the stage chunk k - 1 used, and returns chunk k's codes.
  __device__ const uint8_t* next(int k) const {
    if (bulk) mbarrier_wait_parity(bars + k % kRingStages, unsigned(k / kRingStages) & 1u);
    else cp_async_wait<kRingStages - 2>();
    __syncthreads();  // chunk k landed for every thread; every thread is done with chunk k - 1's stage
    if (bulk && threadIdx.x == 0) fence_proxy_async_smem();
    issue(k + kRingStages - 1);
    return ring + size_t(k % kRingStages) * kRingBytes;
  }
  __device__ void drain() const {
    if (!bulk) cp_async_wait<0>();  // (bulk: every chunk issued was waited for)
  }
};

// The integer distance pass (G = 1) over the ring: the same contract as distance_pass_int. LPT lanes per token, each
// taking NP of the token's 16-byte pieces: one lane per token (v10; at D = 128 two pieces and no shuffle; v9's two
// lanes of one piece, ADAMAS_CUDA_CLUSTER_LPT=2, is 1.2-1.9 us slower at MHA 32K). With two pieces per lane, lanes
// 4-7 of each 8 read theirs in the other order: the 32-byte stride would otherwise put lanes i and i + 4 on the same
// banks.
template <int D, int LPT, class Params>
__device__ __forceinline__ void distance_pass_ring(const Params& p, int b, int kvh, int64_t t_begin, int len,
                                                   int64_t s0, int64_t tail, uint32_t* qw_s, uint16_t* dist,
                                                   uint32_t* hist, uint8_t* ring_smem) {
  constexpr int NP = D / 64 / LPT, TPS = kThreads / LPT;
  static_assert(NP == 1 || NP == 2, "one or two 16-byte pieces per lane");
  using Ring = CodeRing<D>;
  __shared__ uint64_t bars[kRingStages];
  const Ring ring(p.bd.seq[b], kvh, t_begin, len, p.ring_bulk != 0, ring_smem, bars);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, part = lane % LPT;
  const int sw = NP == 2 ? (lane >> 2) & 1 : 0;  // slot i holds piece part * NP + (i ^ sw)
  float xq[D / 32];
  if (warp == 0) load_query<D>(p, b, kvh, xq);
  ring.prologue();
  for (int i = tid; i < p.bins; i += kThreads) hist[i] = 0;
  if (warp == 0) finish_query<D>(p, kvh, xq, qw_s);
  __syncthreads();
  ADAMAS_STAMP(p.stamps, 1);
  XorQuery<4> qx[NP];
#pragma unroll
  for (int i = 0; i < NP; ++i) qx[i] = xor_query<4>(qw_s + (part * NP + (i ^ sw)) * 4);
  const int mid_lo = int(max(int64_t(0), min(int64_t(len), s0 - t_begin)));
  const int mid_hi = int(max(int64_t(0), min(int64_t(len), tail - t_begin)));
  for (int k = 0; k < ring.chunks; ++k) {
    const uint8_t* cs = ring.next(k);
    const int t0 = k * Ring::CT, cnt = min(Ring::CT, len - t0);
    for (int j0 = 0; j0 < cnt; j0 += TPS) {  // the same trip count in every lane (shuffles)
      const int j = j0 + tid / LPT;
      const bool valid = j < cnt;
      uint4 v[NP];
#pragma unroll
      for (int i = 0; i < NP; ++i)
        v[i] = valid ? *reinterpret_cast<const uint4*>(cs + j * Ring::CB + (part * NP + (i ^ sw)) * 16)
                     : make_uint4(0, 0, 0, 0);
#ifdef ADAMAS_CUDA_STAMPS
      // Profiling builds only (wrong selections): ADAMAS_CUDA_CLUSTER_SKIP=1 replaces the L1 by one popcount (the
      // stream, stores and atomics stay), 2 also drops the stores and atomics: what bounds the pass.
      if (p.skip == 1 || p.skip == 2) {
        const int d = __popc(v[0].x ^ v[NP - 1].w) & 127;
        if (p.skip == 1 && part == 0 && valid) {
          dist[t0 + j] = uint16_t(d);
          atomicAdd(&hist[d], 1u);
        } else if (d == 1000) {
          dist[0] = 0;
        }
        continue;
      }
#endif
      int d = 0;
#pragma unroll
      for (int i = 0; i < NP; ++i) {
        const uint32_t kw[4] = {v[i].x, v[i].y, v[i].z, v[i].w};
        d += xor_l1<4>(qx[i], kw);
      }
#pragma unroll
      for (int o = 1; o < LPT; o *= 2) d += __shfl_xor_sync(0xffffffffu, d, o);
      const int local = t0 + j;
      if (part == 0 && valid) {
        dist[local] = uint16_t(d);
        if (local >= mid_lo && local < mid_hi) atomicAdd(&hist[d], 1u);
      }
    }
  }
  ring.drain();
}

// The tensor-core distance pass (G = 2, 4) over the ring: distance_pass_mma's fragments (lane (g, t) takes code words
// [t CW, t CW + CW) of keys g and g + 8 of its warp's 16), read from shared memory; the same contract.
template <int D, int G, bool SHARED, class Params>
__device__ __forceinline__ void distance_pass_mma_ring(const Params& p, int b, int kvh, int64_t t_begin, int len,
                                                       int64_t s0, int64_t tail, uint32_t* qw_s, uint16_t* dist,
                                                       uint32_t* hist, uint8_t* ring_smem) {
  constexpr int W = D / 16, CW = D / 64, TPI = kWarps * 16;
  using Ring = CodeRing<D>;
  static_assert(Ring::CT % TPI == 0, "whole steps per chunk");
  __shared__ uint64_t bars[kRingStages];
  const Ring ring(p.bd.seq[b], kvh, t_begin, len, p.ring_bulk != 0, ring_smem, bars);
  const int tmax = p.tmax, bins = p.bins;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  float xq[D / 32];
  if (warp < G) load_query<D>(p, b, kvh * G + warp, xq);
  ring.prologue();
  for (int i = tid; i < (SHARED ? 1 : G) * bins; i += kThreads) hist[i] = 0;
  if (warp < G) finish_query<D>(p, kvh * G + warp, xq, qw_s + warp * W);
  __syncthreads();
  ADAMAS_STAMP(p.stamps, 1);
  const MmaWords<CW> bq = mma_query<D, G>(qw_s);
  int qs0, qs1;
  mma_query_sums<D, G, SHARED>(qw_s, qs0, qs1);
  const int mid_lo = int(max(int64_t(0), min(int64_t(len), s0 - t_begin)));
  const int mid_hi = int(max(int64_t(0), min(int64_t(len), tail - t_begin)));
  auto key_words = [&](const uint8_t* cs, int j, uint32_t (&w)[CW]) {  // zeros past the chunk (its stale bytes)
    if constexpr (CW == 2) {
      const uint2 v = *reinterpret_cast<const uint2*>(cs + j * Ring::CB + t * 8);
      w[0] = v.x, w[1] = v.y;
    } else {
      w[0] = *reinterpret_cast<const uint32_t*>(cs + j * Ring::CB + t * 4);
    }
  };
  for (int k = 0; k < ring.chunks; ++k) {
    const uint8_t* cs = ring.next(k);
    const int t0 = k * Ring::CT, cnt = min(Ring::CT, len - t0);
    for (int j0 = 0; j0 < cnt; j0 += TPI) {
      const int base = j0 + warp * 16;
      if (base >= cnt) break;  // warp-uniform
      uint32_t lo[CW], hi[CW];
      key_words(cs, base + g, lo);
      key_words(cs, base + g + 8, hi);
      int c[4];
      mma_dots<CW>(mma_words<CW>(lo), mma_words<CW>(hi), bq, c);
      const MmaOut o = mma_outputs<G, SHARED>(c, qs0, qs1);
      const int j = base + o.key, local = t0 + j;
      if (j < cnt) record_mma_output<G, SHARED>(o, local, local >= mid_lo && local < mid_hi, dist, hist, tmax, bins);
    }
  }
  ring.drain();
}

// Folds partial (mc, lc, ac) into (m, l, a); empty partials (mc = -inf) add nothing.
__device__ __forceinline__ float merge_weight(float mc, float M) { return mc == -INFINITY ? 0.0f : exp2f(mc - M); }

template <int D, int G, bool SHARED, class T, bool ATTEND>
__global__ void __launch_bounds__(kThreads, 1) cluster_kernel(const __grid_constant__ ClusterParams p) {
  namespace cg = cooperative_groups;
  constexpr int R = SHARED ? 1 : G, QH = SHARED ? G : 1;
  using L = Layout<D, G, SHARED>;
  cg::cluster_group cluster = cg::this_cluster();
  const int C = int(cluster.num_blocks()), rank = int(cluster.block_rank());
  // C is the launch's cluster size (a constant-bank load). Run with any other than the one it was launched for (a CUDA
  // graph updated in place keeps its instantiated size), the pushes below wait forever: take_cluster_launch_key. (A
  // trap on C != gridDim.x here moved the MHA kernel's register allocation, +123 instructions: not kept.)
  const int b = blockIdx.z, kvh = blockIdx.y;
  const int64_t n = p.bd.seq[b].n;
  const int64_t per_block = ((n + C - 1) / C + 7) / 8 * 8;
  const int64_t t_begin = min(n, int64_t(rank) * per_block);
  const int len = int(min(n, t_begin + per_block) - t_begin);
  const int tid = threadIdx.x, warp = tid >> 5;
  const int64_t row0 = int64_t(b) * p.units + (SHARED ? kvh : kvh * G);  // this cluster's first selection row
  ADAMAS_STAMP(p.stamps, 0);

  extern __shared__ __align__(128) unsigned char dsm[];
  uint32_t* cum = reinterpret_cast<uint32_t*>(dsm);  // [R][bins]: histograms, then cumulative counts
  uint32_t* qw_s = reinterpret_cast<uint32_t*>(dsm + L::qw(p.bins));
  uint16_t* dist = reinterpret_cast<uint16_t*>(dsm + L::dist(p.bins));
  uint16_t* lists = ATTEND ? reinterpret_cast<uint16_t*>(dsm + L::list(p.bins, p.tmax)) : nullptr;
  uint16_t* cin = reinterpret_cast<uint16_t*>(dsm + L::wpart(p.bins, p.tmax, p.lcap));  // the counts' inbox
  float* wpart = reinterpret_cast<float*>(dsm + L::wpart(p.bins, p.tmax, p.lcap));      // after the inbox was read
  uint8_t* ring = dsm + L::ring(p.bins, p.tmax, p.lcap, C, ATTEND);
  float* inbox = reinterpret_cast<float*>(ring);  // the merge's, once every block's distance pass is over (below)
  __shared__ uint32_t warp_sums[kWarps];
  __shared__ RowCut rcs[R];
  // Completion of this block's inboxes: [0] the C blocks' count spans, [2] the counts in them, [1] the partials of the
  // query heads it merges.
  __shared__ __align__(8) uint64_t landed[3];
  static_assert(R <= 4, "spans holds 4 rows per block");
  __shared__ CountSpan spans[kMaxCluster * 4];  // [C][R]
  __shared__ uint32_t span_sums[R];             // lo | hi << 16 of this block's rows
  const int pitch = L::pitch(p.bins);
  int merged_here = 0;  // query heads of the cluster this block merges (slot s goes to rank s % C)
  for (int s = rank; s < G; s += C) ++merged_here;
  if (tid < R) span_sums[tid] = 0;
  if (tid == 0) {
    for (int i = 0; i < 3; ++i) mbarrier_init(&landed[i], 1);
    mbarrier_expect_tx(&landed[0], unsigned(C * R * 8));  // arrives: the phase ends when the bytes have landed
    if (ATTEND && merged_here > 0) mbarrier_expect_tx(&landed[1], unsigned(merged_here * C * (D + 2) * 4));
    mbarrier_init_fence();
  }
  // Publishes the initialisations; the matching wait comes after the distance pass, so no block waits at entry.
  cluster_arrive_relaxed();
  // Launched with programmatic stream serialization: the blocks may be scheduled while the kernel before (the engine's
  // qkv product, which writes q and the newest key's code) still runs; nothing it writes is read above this line.
  wait_primary();

  int64_t s0, tail;
  s0 = min(int64_t(p.sink), n);
  tail = max(s0, n - int64_t(max(p.window, 1)));
  if constexpr (kMmaDistances<G>) {
    distance_pass_mma_ring<D, G, SHARED>(p, b, kvh, t_begin, len, s0, tail, qw_s, dist, cum, ring);
  } else {
    static_assert(G == 1, "the integer ring pass makes one query head's codes");
    bool two_lanes = false;  // v9's layout at D = 128 (A/B)
    if constexpr (D == 128) two_lanes = p.lanes2 != 0;
    if (two_lanes) distance_pass_ring<D, D / 64>(p, b, kvh, t_begin, len, s0, tail, qw_s, dist, cum, ring);
    else distance_pass_ring<D, 1>(p, b, kvh, t_begin, len, s0, tail, qw_s, dist, cum, ring);
  }
  __syncthreads();
  histograms_to_cumulative<R>(cum, p.bins, warp_sums);
  __syncthreads();
  // Each row's span: lo = entries of cum that are 0, hi = entries below the row's total (cum is non-decreasing).
  for (int r = 0; r < R; ++r) {
    const uint32_t* cr = cum + r * p.bins;
    const uint32_t total = cr[p.bins - 1];
    uint32_t zeros = 0, below = 0;
    for (int j = tid; j < p.bins; j += kThreads) zeros += cr[j] == 0u, below += cr[j] < total;
    zeros = warp_sum(zeros), below = warp_sum(below);
    if ((tid & 31) == 0 && (zeros | below) != 0) atomicAdd(&span_sums[r], zeros | below << 16);
  }
  __syncthreads();
  ADAMAS_STAMP(p.stamps, 2);
  // Every block has initialised its barriers. Push this block's counts to every block: per row its span (8 bytes,
  // counted on the receiver's landed[0]) and the entries in it as u16 (16-byte pieces, on landed[2]), into row
  // [rank][r] of the receiver's inbox. No block reads another's shared memory, so none waits for another to leave it.
  // (v9-v10.2: cluster.sync, then the cut search read the others' counts remotely: a GPU-scope membar and DSMEM
  // latency per search step, NOTES v10.2. Pushing the whole rows cost shared GQA ~1 us: 49 KB per block at C = 16.)
  cluster_wait();
  {
    CountSpan mine[R];
    int first[R + 1];  // the rows' first pieces in this block's list
    first[0] = 0;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const uint32_t lh = span_sums[r];
      mine[r] = CountSpan{lh, cum[r * p.bins + p.bins - 1]};
      first[r + 1] = first[r] + mine[r].pieces();
    }
    if (tid < C * R) {
      const int c = tid / R, r = tid % R;
      st_async_v2(cluster_addr(&spans[rank * R + r], c), __uint_as_float(mine[r].lo_hi), __uint_as_float(mine[r].total),
                  cluster_addr(&landed[0], c));
    }
    for (int i = tid; i < C * first[R]; i += kThreads) {
      const int c = i / first[R], k = i % first[R];
      int r = 0;
#pragma unroll
      for (int q = 1; q < R; ++q) r += k >= first[q];
      const int j0 = (mine[r].lo() / 8 + k - first[r]) * 8;
      const uint32_t* cr = cum + r * p.bins;
      uint32_t w[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int j = j0 + 2 * q;
        w[q] = (j < p.bins ? cr[j] : 0u) | (j + 1 < p.bins ? cr[j + 1] << 16 : 0u);
      }
      st_async_v4(cluster_addr(cin + (rank * R + r) * pitch + j0, c), make_uint4(w[0], w[1], w[2], w[3]),
                  cluster_addr(&landed[2], c));
    }
  }
  mbarrier_wait_parity(&landed[0], 0);  // the spans: how many bytes of entries to expect
  if (warp == 0) {
    int pieces = 0;
    for (int i = tid; i < C * R; i += 32) pieces += spans[i].pieces();
    pieces = int(warp_sum(uint32_t(pieces)));
    // Entries may land before this: the transaction count goes negative until then, and the pending arrival keeps
    // the phase open.
    if (tid == 0) mbarrier_expect_tx(&landed[2], unsigned(pieces * 16));
  }
  mbarrier_wait_parity(&landed[2], 0);
  ADAMAS_STAMP(p.stamps, 3);

  // Need: middle tokens to keep beside the forced ones (n <= budget: more than the middle holds, all kept).
  const int64_t need = max(int64_t(0), int64_t(p.budget) - s0 - (n - tail));
  const int64_t f_pre = forced_before(t_begin, s0, tail);
  const int64_t f_own = forced_before(t_begin + len, s0, tail) - f_pre;
  int cut1 = 0;  // one row per block: the cut, found by the whole block
  if constexpr (R == 1) {
    __syncthreads();  // every thread's pushes have read cum: block_cut writes the totals over it
    cut1 = block_cut(spans, cin, pitch, p.bins, C, need, cum);
  }
  if (warp < R) {
    const int cut = R == 1 ? cut1 : search_cut(spans + warp, cin + warp * pitch, R, pitch, p.bins, C, need);
    const RowCut rc = row_cut(cut, spans + warp, cin + warp * pitch, R, pitch, p.bins, C, rank, need, f_pre, f_own, len);
    if ((tid & 31) == 0) rcs[warp] = rc;
  }
  __syncthreads();
  ADAMAS_STAMP(p.stamps, 4);

  const int mid_lo = int(max(int64_t(0), min(int64_t(len), s0 - t_begin)));
  const int mid_hi = int(max(int64_t(0), min(int64_t(len), tail - t_begin)));
  compact_block_rows<R>(dist, p.tmax, len, mid_lo, mid_hi, rcs, t_begin, p.idx + row0 * p.cap, p.cap,
                        ATTEND ? lists : nullptr, p.lcap, warp_sums);
  if (rank == 0 && tid < R) p.counts[row0 + tid] = int32_t(min(n, int64_t(p.budget)));
  ADAMAS_STAMP(p.stamps, 5);
  if constexpr (!ATTEND) {
#ifdef ADAMAS_CUDA_STAMPS
    // Profiling builds, selection only: parts of the compaction once more, stamp 6 after them: SKIP=3 the whole
    // compaction (same outputs), 4 its counting pass alone, 5 one block scan alone.
    if (p.skip >= 3 && p.skip <= 5) {
      __syncthreads();
      ADAMAS_STAMP(p.stamps, 5);
      if (p.skip == 3) {
        compact_block_rows<R>(dist, p.tmax, len, mid_lo, mid_hi, rcs, t_begin, p.idx + row0 * p.cap, p.cap, nullptr,
                              p.lcap, warp_sums);
      } else if (p.skip == 4) {
        const int groups = (len + 7) / 8, gpt = (groups + kThreads - 1) / kThreads;
        const int g0 = min(groups, tid * gpt), g1 = min(groups, g0 + gpt);
        uint32_t cnt = 0;
        for (int g = g0; g < g1; ++g) {
          const uint4 v = *reinterpret_cast<const uint4*>(dist + g * 8);
          const uint32_t w[4] = {v.x, v.y, v.z, v.w};
          uint32_t km, tm;
          token_kinds<int>(w, g * 8, len, mid_lo, mid_hi, rcs[0].cut, km, tm);
          cnt += uint32_t(__popc(km)) | (uint32_t(__popc(tm)) << 16);
        }
        if (cnt == 0xdeadbeefu) p.counts[0] = 0;
      } else {
        uint32_t total;
        const uint32_t ex = block_exclusive_scan<kThreads>(uint32_t(tid), warp_sums, total);
        if (ex == 0xdeadbeefu) p.counts[0] = int32_t(total);
      }
      ADAMAS_STAMP(p.stamps, 6);
    }
#endif
    ADAMAS_STAMP(p.stamps, 7);
    return;
  } else {
    __syncthreads();  // lists complete
    attend_block<D, G, SHARED, T>(p, b, kvh, t_begin, lists, rcs, wpart);
    __syncthreads();
    // The block's partial per query head of the cluster (slot s: head kvh * G + s), from the warps of its row, pushed
    // into the inbox of the block that merges slot s (rank s % C) at entry [rank][s], two floats per store, counted on
    // its landed[1]. The inbox is in the receiver's ring, idle since its distance pass ended: its counts reached this
    // block before the cut, and it pushed them after its pass. (v10.2 pushed with plain remote stores and a cluster
    // barrier; v9-v10 pulled after one and kept every block alive to a second.)
    constexpr int NSUB = kWarps / R, PAIRS = D / 2 + 1;  // pair D / 2: (max, weight sum)
    for (int i = tid; i < G * PAIRS; i += kThreads) {
      const int s = i / PAIRS, k = i % PAIRS, r = SHARED ? 0 : s, h = SHARED ? s : 0;
      float M = -INFINITY;
#pragma unroll
      for (int u = 0; u < NSUB; ++u) M = fmaxf(M, wpart[((r + u * R) * QH + h) * (D + 2) + D]);
      float x0 = 0.0f, x1 = 0.0f;  // the pair's weighted sums: V columns 2k, 2k + 1, or the weight sum
#pragma unroll
      for (int u = 0; u < NSUB; ++u) {
        const float* wp = wpart + ((r + u * R) * QH + h) * (D + 2);
        const float w = merge_weight(wp[D], M);
        if (k < D / 2) x0 = fmaf(w, wp[2 * k], x0), x1 = fmaf(w, wp[2 * k + 1], x1);
        else x1 = fmaf(w, wp[D + 1], x1);
      }
      if (k == D / 2) x0 = M;
      st_async_v2(cluster_addr(inbox + (rank * G + s) * (D + 2) + 2 * k, s % C), x0, x1,
                  cluster_addr(&landed[1], s % C));
    }
    ADAMAS_STAMP(p.stamps, 6);
    if (merged_here == 0) return;  // nothing reads this block's shared memory any more
    mbarrier_wait_parity(&landed[1], 0);
    for (int i = tid; i < G * D; i += kThreads) {
      const int s = i / D, col = i % D;
      if (s % C != rank) continue;
      float M = -INFINITY;
      for (int c = 0; c < C; ++c) M = fmaxf(M, inbox[(c * G + s) * (D + 2) + D]);
      float Lsum = 0.0f, A = 0.0f;
      for (int c = 0; c < C; ++c) {
        const float* cp = inbox + (c * G + s) * (D + 2);
        const float w = merge_weight(cp[D], M);
        Lsum = fmaf(w, cp[D + 1], Lsum), A = fmaf(w, cp[col], A);
      }
      p.out[(int64_t(b) * p.n_heads + kvh * G + s) * D + col] = A / Lsum;
    }
    ADAMAS_STAMP(p.stamps, 7);
  }
}

// ---- host -------------------------------------------------------------------------------------------------------

template <int D, int G, bool SH, class T, bool AT>
const void* kernel_ptr() {
  return reinterpret_cast<const void*>(cluster_kernel<D, G, SH, T, AT>);
}

int max_smem_optin() {
  static int v = [] {
    int optin = 0, dev = 0;
    check_cuda(cudaGetDevice(&dev), "cluster attention device");
    check_cuda(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "shared memory limit");
    return optin;
  }();
  return v;
}

// The kernel attributes (dynamic shared memory at most: the opt-in limit less the kernel's static shared memory rounded
// up to 128 bytes, the padding before the aligned dynamic part; 16-block clusters allowed), set once per instantiation;
// returns that dynamic limit.
template <int D, int G, bool SH, class T, bool AT>
int prepare_kernel() {
  static const int max_dynamic = [] {
    auto* k = cluster_kernel<D, G, SH, T, AT>;
    cudaFuncAttributes fa{};
    check_cuda(cudaFuncGetAttributes(&fa, k), "cluster attention attributes");
    const int dyn = max_smem_optin() - (int(fa.sharedSizeBytes) + 127) / 128 * 128;
    check_cuda(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, dyn),
               "cluster attention smem attribute");
    check_cuda(cudaFuncSetAttribute(k, cudaFuncAttributeNonPortableClusterSizeAllowed, 1),
               "cluster attention cluster attribute");
    // As much L1 as the launch leaves: the code stream's loads allocate in L1 (run 4: with 117 KB of shared memory
    // per block the distance pass streamed at ~2 TB/s).
    check_cuda(cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, 0),
               "cluster attention carveout attribute");
    return dyn;
  }();
  return max_dynamic;
}

// Calls f.template operator()<D, G, SHARED, T>() for the supported shapes; returns false for the others.
template <class F>
bool dispatch(int D, int G, bool shared, DType dt, F&& f) {
  auto by_t = [&]<int DD, int GG, bool SH>() {
    if (dt == DType::f16) f.template operator()<DD, GG, SH, __half>();
    else f.template operator()<DD, GG, SH, __nv_bfloat16>();
    return true;
  };
  auto by_g = [&]<int DD>() {
    switch (G) {
      case 1: return by_t.template operator()<DD, 1, false>();  // shared_sum of one head: the per-head selection
      case 2: return shared ? by_t.template operator()<DD, 2, true>() : by_t.template operator()<DD, 2, false>();
      case 4: return shared ? by_t.template operator()<DD, 4, true>() : by_t.template operator()<DD, 4, false>();
      default: return false;
    }
  };
  if (D == 64) return by_g.template operator()<64>();
  if (D == 128) return by_g.template operator()<128>();
  return false;
}

// The launch shape of one batch chunk: C blocks per cluster, tokens per block, shared memory; C = 0 when none fits.
struct Shape {
  int C = 0, tmax = 0, lcap = 0, bins = 0;
  size_t smem = 0;
};

Shape choose_shape(const BatchInputs& in, const AttentionConfig& config, const BatchDesc& bd, bool attend, int sms) {
  const HeadsView& k0 = in.seqs[0].k;
  const int D = int(k0.dim), kvh = int(k0.heads), G = int(in.n_heads / k0.heads);
  const bool shared = config.group == GroupSelection::shared_sum;
  int64_t n_max = 0;
  for (int i = 0; i < bd.batch; ++i) n_max = std::max(n_max, bd.seq[i].n);
  const int64_t clusters = int64_t(bd.batch) * kvh;
  Shape best;
  const char* force = std::getenv("ADAMAS_CUDA_CLUSTER_SIZE");  // tests: a given cluster size
  const int c_hi = force && *force ? std::atoi(force) : int(std::min<int64_t>(kMaxCluster, sms / std::max<int64_t>(1, clusters)));
  const int c_lo = force && *force ? c_hi : 2;
  const char* pad_env = std::getenv("ADAMAS_CUDA_CLUSTER_PAD");
  const bool pad = pad_env && std::strcmp(pad_env, "1") == 0;
  for (int C = c_hi; C >= c_lo && best.C == 0; --C) {
    if (C < 1 || C > kMaxCluster) break;
    Shape s;
    s.C = C;
    s.tmax = int(std::min<int64_t>(kMaxTokensPerBlock + 8, ((n_max + C - 1) / C + 7) / 8 * 8));
    if (s.tmax > kMaxTokensPerBlock) continue;
    s.lcap = int(std::min<int64_t>(s.tmax, config.budget));
    s.bins = 3 * D * (shared ? G : 1) + 2;
    bool ok = dispatch(D, G, shared, k0.dtype, [&]<int DD, int GG, bool SH, class T>() {
      // One block per SM: 512 threads at more than 64 registers each leave no room for a second block. (Run 2 asked
      // for half an SM's shared memory to force it; ADAMAS_CUDA_CLUSTER_PAD=1 still does, for A/B.)
      s.smem = Layout<DD, GG, SH>::total(s.bins, s.tmax, s.lcap, C, attend);
      if (pad) s.smem = std::max(s.smem, size_t(max_smem_optin()) / 2 + 1024);
      const int max_dynamic = attend ? prepare_kernel<DD, GG, SH, T, true>() : prepare_kernel<DD, GG, SH, __half, false>();
      const void* k = attend ? kernel_ptr<DD, GG, SH, T, true>() : kernel_ptr<DD, GG, SH, __half, false>();
      if (s.smem > size_t(max_dynamic) || max_active_clusters(k, kThreads, C, s.smem) < clusters) s.C = 0;
    });
    if (ok && s.C > 0) best = s;
  }
  return best;
}

bool supported_inputs(const BatchInputs& in, const AttentionConfig& config) {
  if (in.seqs.empty() || in.q == nullptr || config.method != Method::adamas) return false;
  if (config.group == GroupSelection::shared_union) return false;
  const HeadsView& k0 = in.seqs[0].k;
  if (k0.heads <= 0 || in.n_heads % k0.heads != 0) return false;
  const int G = int(in.n_heads / k0.heads);
  if ((k0.dim != 64 && k0.dim != 128) || (G != 1 && G != 2 && G != 4)) return false;
  if (k0.dtype != DType::f16 && k0.dtype != DType::bf16) return false;
  if (in.seqs.size() > size_t(kMaxBatch) || reinterpret_cast<uintptr_t>(in.q) % 16 != 0) return false;
  for (const auto& s : in.seqs)  // the ring pass copies 16-byte pieces of codes
    if (s.codes.data == nullptr || s.k.tokens >= (int64_t(1) << 23) || reinterpret_cast<uintptr_t>(s.codes.data) % 16 != 0 ||
        s.codes.token_stride % 16 != 0 || s.codes.head_stride % 16 != 0)
      return false;
  return true;
}

template <int D, int G, bool SH, class T, bool AT>
void launch(const ClusterParams& p, const Shape& s, cudaStream_t stream) {
  prepare_kernel<D, G, SH, T, AT>();
  const dim3 grid(unsigned(s.C), unsigned(p.kv_heads), unsigned(p.bd.batch));
  cudaLaunchAttribute attr[2];
  cudaLaunchConfig_t cfg = cluster_launch_config(grid, kThreads, s.C, s.smem, stream, attr);
  // Programmatic dependent launch (the kernel waits at entry): the launch and the blocks' placement overlap the end of
  // the kernel before, when that one triggers early (the engine's products do). Session 12, run 10: Llama-2-7B 32K
  // batch 1 164.9 -> 165.7 tok/s (medians of 5). ADAMAS_CUDA_CLUSTER_PDL=0 launches without it (A/B).
  if (const char* e = std::getenv("ADAMAS_CUDA_CLUSTER_PDL"); !(e && std::strcmp(e, "0") == 0)) {
    attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[1].val.programmaticStreamSerializationAllowed = 1;
    cfg.numAttrs = 2;
  }
  if (launch_verbose()) {
    char line[256];
    std::snprintf(line, sizeof line, "[adamas] cluster %s D=%d G=%d shared=%d: grid %ux%ux%u, cluster %d, %d tokens "
                  "per block, smem %zu B\n", AT ? "decode" : "select", D, G, int(SH), grid.x, grid.y, grid.z, s.C,
                  s.tmax, s.smem);
    verbose_print(line);
  }
  note_cluster_launch(cfg);
  check_cuda(cudaLaunchKernelEx(&cfg, cluster_kernel<D, G, SH, T, AT>, p), "cluster attention launch");
}

}  // namespace

bool cluster_selected(const BatchInputs& in, const AttentionConfig& config, bool attend) {
  const char* e = std::getenv("ADAMAS_CUDA_SELECT");
  if (e != nullptr && *e && std::strcmp(e, "cluster") != 0) return false;  // another path forced
  if (!supported_inputs(in, config)) return false;
  int dev = 0, sms = 0;
  check_cuda(cudaGetDevice(&dev), "cluster attention device");
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "SM count");
  const auto chunks = make_batches(in, true, "cuda cluster attention");
  const Shape shape = choose_shape(in, config, chunks[0], attend, sms);
  if (shape.C == 0) return false;
  // Default: not for per-head GQA rows of more than 4096 tokens per block (run 3: GQA 128K b256 per head 53.8 us
  // against the grid path's 47.7; 32K, 2048 tokens per block: 29.2 against 33.0). Since the code ring (128 KB of
  // shared memory) that case no longer fits at GQA 128K batch 1: ~146 KB + 8 bytes per token of a block needs 14 or
  // more blocks per cluster, and 8 clusters all resident allow at most 9 on an H100.
  const int G = int(in.n_heads / in.seqs[0].k.heads);
  const bool forced = e != nullptr && *e;
  return forced || config.group == GroupSelection::shared_sum || G == 1 || shape.tmax <= 4096;
}

void cluster_attention(const BatchInputs& in, const AttentionConfig& config, Workspace& ws, float* out,
                       cudaStream_t stream) {
  const char* where = "cuda cluster attention";
  validate_config(config);
  const auto chunks = make_batches(in, true, where);
  CUDA_REQUIRE(chunks.size() == 1 && supported_inputs(in, config), ErrorKind::unsupported, where, ": this call is not supported by the cluster kernel");
  const HeadsView& k0 = in.seqs[0].k;
  const int D = int(k0.dim), n_heads = int(in.n_heads), kvh = int(k0.heads), G = n_heads / kvh;
  const bool shared = config.group == GroupSelection::shared_sum;
  const int units = shared ? kvh : n_heads;
  const int64_t batch = int64_t(in.seqs.size());
  int64_t n_max = 0;
  for (const auto& s : in.seqs) n_max = std::max(n_max, s.k.tokens);
  auto& S = ws.state();
  const Shape shape = choose_shape(in, config, chunks[0], out != nullptr, S.sms);
  CUDA_REQUIRE(shape.C > 0, ErrorKind::unsupported, where, ": no cluster size fits this batch");
  const int64_t cap = std::min<int64_t>(config.budget, n_max);
  ensure(&S.idx, &S.idx_bytes, size_t(batch * units * cap) * 4, false);
  ensure(&S.counts, &S.counts_bytes, size_t(batch * units) * 4, false);
  const float scale = 1.0f / std::sqrt(float(D));
  ClusterParams p{};
  p.bd = chunks[0];
  p.q = in.q;
  p.n_heads = n_heads, p.kv_heads = kvh, p.units = units;
  p.qthr = reinterpret_cast<const Thr*>(in.query_thresholds);
  p.cfg_thr = {config.thresholds.t0, config.thresholds.t1, config.thresholds.t2};
  p.hscale = scale;
  p.qscale = scale * 1.4426950408889634f;
  p.budget = int(config.budget), p.sink = int(config.sink), p.window = int(config.window);
  p.bins = shape.bins, p.tmax = shape.tmax, p.lcap = shape.lcap;
  bool vec = true;
  for (int i = 0; i < p.bd.batch; ++i) {
    const SeqDesc& s = p.bd.seq[i];
    vec = vec && (reinterpret_cast<uintptr_t>(s.codes) % 16 == 0) && s.c_tok % 16 == 0 && s.c_head % 16 == 0;
  }
  p.vec_codes = vec;
  const char* ring_env = std::getenv("ADAMAS_CUDA_CLUSTER_RING");
  p.ring_bulk = !(ring_env && std::strcmp(ring_env, "cp.async") == 0);
  const char* lpt_env = std::getenv("ADAMAS_CUDA_CLUSTER_LPT");
  p.lanes2 = lpt_env && std::strcmp(lpt_env, "2") == 0;
#ifdef ADAMAS_CUDA_STAMPS
  const char* skip_env = std::getenv("ADAMAS_CUDA_CLUSTER_SKIP");
  p.skip = skip_env ? std::atoi(skip_env) : 0;
#endif
  p.idx = S.idx, p.cap = cap, p.counts = S.counts;
  p.out = out;
  p.stamps = stamp_buffer(0);
  dispatch(D, G, shared, k0.dtype, [&]<int DD, int GG, bool SH, class T>() {
    if (out != nullptr) launch<DD, GG, SH, T, true>(p, shape, stream);
    else launch<DD, GG, SH, __half, false>(p, shape, stream);
  });
  S.last = SelectionView{S.idx, S.counts, batch, units, cap, shared};
}

}  // namespace adamas::cuda::detail
