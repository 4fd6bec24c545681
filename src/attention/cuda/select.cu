// Adamas estimate + top-k on the GPU, two launches:
//  1. estimate: per (sequence, KV head, token tile) the query codes of the group (Hadamard by warp shuffles),
//     exact L1 of every key code against them, distances to scratch, a shared-memory histogram of the free middle
//     merged into the row's global histogram; the last block of a row finds the cut-off and clears the histogram.
//  2. compact: per (row, tile of 4096 tokens) the keep flags, a block scan and a decoupled look-back over the tiles
//     of the row give each kept token its output slot: indices come out in increasing order, no sort.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <map>
#include <mutex>
#include <utility>

#include <cooperative_groups.h>

#include "attention/cuda/cluster_attention.h"
#include "attention/cuda/common.cuh"
#include "attention/cuda/distance.cuh"
#include "attention/cuda/launch.h"
#include "attention/cuda/stream_attention.h"

namespace adamas::cuda {
namespace detail {
namespace {

constexpr int kThreads = kDistThreads;  // 256
constexpr int kCompactPerThread = 16;
constexpr int kCompactTile = kThreads * kCompactPerThread;  // 4096 tokens

struct SelectParams {
  BatchDesc bd;
  const float* q;  // [batch][n_heads][D]
  int n_heads, kv_heads, group, units;  // units = n_heads (per head) or kv_heads (shared)
  int shared;
  const Thr* qthr;  // n_heads entries, or null
  Thr cfg_thr;
  float hscale;
  int budget, sink, window;
  uint16_t* dist;  // [batch][units][ld]
  int64_t ld;
  uint32_t* hist;  // [batch][units][bins]
  int bins;
  uint32_t* row_done;  // [batch][kv_heads]
  RowInfo* info;  // [batch][units]
  int tile;  // estimate tile (tokens)
  int vec_codes;  // 16-byte code loads possible
};

__device__ __forceinline__ void middle(int64_t n, int sink, int window, int64_t& s, int64_t& tail) {
  s = min(int64_t(sink), n);
  tail = max(s, n - int64_t(max(window, 1)));
}

// ---- 1. estimate ---------------------------------------------------------------------------------------------

template <int D>
__global__ void __launch_bounds__(kThreads) estimate_kernel(const __grid_constant__ SelectParams p) {
  constexpr int W = D / 16;  // 32-bit code words per vector
  const int b = blockIdx.z, kvh = blockIdx.y;
  const SeqDesc& sq = p.bd.seq[b];
  const int64_t n = sq.n;
  if (n <= p.budget) return;  // everything kept: no estimate needed
  const int64_t ntiles = (n + p.tile - 1) / p.tile;
  if (blockIdx.x >= ntiles) return;
  const int G = p.group;
  const int rows = p.shared ? 1 : G;  // histogram rows this block feeds

  extern __shared__ uint32_t smem[];
  uint32_t* qP = smem;                  // [G][W] thermometer-packed query words
  uint32_t* qW = qP + G * W;            // [G][W] raw query words
  uint32_t* hs = qW + G * W;            // [rows][bins]
  __shared__ int s_last;

  const int warp = threadIdx.x >> 5;
  for (int i = threadIdx.x; i < rows * p.bins; i += kThreads) hs[i] = 0;
  // Query codes of the group: warp g encodes query head kvh * G + g into qW (as bytes), then packs.
  if (warp < G) encode_query<D>(p, b, kvh * G + warp, qW + warp * W);
  __syncthreads();
  for (int i = threadIdx.x; i < G * W; i += kThreads) qP[i] = therm_pack(qW[i]);
  __syncthreads();

  int64_t s0, tail;
  middle(n, p.sink, p.window, s0, tail);
  const int64_t t_begin = int64_t(blockIdx.x) * p.tile;
  const int64_t t_end = min(n, t_begin + p.tile);
  const uint8_t* cbase = sq.codes + kvh * sq.c_head;
  uint16_t* dbase = p.dist + (int64_t(b) * p.units + (p.shared ? kvh : kvh * G)) * p.ld;

  constexpr int U = 4;  // tokens per thread in flight
  for (int64_t t0 = t_begin + threadIdx.x; t0 < t_end; t0 += int64_t(U) * kThreads) {
    uint32_t w[U][W];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t t = t0 + int64_t(u) * kThreads;
      if (t < t_end) {
        const uint8_t* row = cbase + t * sq.c_tok;
        if (p.vec_codes) {
#pragma unroll
          for (int i = 0; i < W / 4; ++i) {
            const uint4 v = __ldg(reinterpret_cast<const uint4*>(row) + i);
            w[u][4 * i] = v.x, w[u][4 * i + 1] = v.y, w[u][4 * i + 2] = v.z, w[u][4 * i + 3] = v.w;
          }
        } else {
#pragma unroll
          for (int i = 0; i < W; ++i) w[u][i] = __ldg(reinterpret_cast<const uint32_t*>(row) + i);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t t = t0 + int64_t(u) * kThreads;
      if (t >= t_end) break;
      uint32_t pk[W];
#pragma unroll
      for (int i = 0; i < W; ++i) pk[i] = therm_pack(w[u][i]);
      const bool mid = t >= s0 && t < tail;
      int sum = 0;
      for (int g = 0; g < G; ++g) {
        int d = 0;
#pragma unroll
        for (int i = 0; i < W; ++i) d += word_l1(qP[g * W + i], qW[g * W + i], pk[i], w[u][i]);
        if (p.shared) {
          sum += d;
        } else {
          dbase[int64_t(g) * p.ld + t] = uint16_t(d);
          if (mid) atomicAdd(&hs[g * p.bins + d], 1u);
        }
      }
      if (p.shared) {
        dbase[t] = uint16_t(sum);
        if (mid) atomicAdd(&hs[sum], 1u);
      }
    }
  }
  __syncthreads();
  uint32_t* ghist = p.hist + (int64_t(b) * p.units + (p.shared ? kvh : kvh * G)) * p.bins;
  for (int i = threadIdx.x; i < rows * p.bins; i += kThreads)
    if (hs[i]) atomicAdd(&ghist[i], hs[i]);
  // Last block of the row: cut-off search, then clear the histogram for the next launch.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const uint32_t prev = atomicAdd(&p.row_done[b * p.kv_heads + kvh], 1u);
    s_last = prev == uint32_t(ntiles - 1);
  }
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  const int64_t need = int64_t(p.budget) - s0 - (n - tail);  // >= 0: budget >= sink + max(window, 1)
  __shared__ uint32_t warp_sums[kThreads / 32];
  __shared__ int s_cut, s_below, s_ties;
  const int seg = (p.bins + kThreads - 1) / kThreads;
  for (int r = 0; r < rows; ++r) {
    uint32_t* hrow = ghist + int64_t(r) * p.bins;
    const int lo = threadIdx.x * seg, hi = min(p.bins, lo + seg);
    uint32_t mine = 0;
    for (int i = lo; i < hi; ++i) mine += __ldcg(hrow + i);
    uint32_t total;
    const uint32_t before = block_exclusive_scan<kThreads>(mine, warp_sums, total);
    if (threadIdx.x == 0) s_cut = -1;
    __syncthreads();
    // The first bin where the cumulative count reaches `need` (need == 0: bin 0 with take = 0, as on the CPU).
    if (int64_t(before) < need || (need == 0 && threadIdx.x == 0)) {
      uint32_t c = before;
      for (int i = lo; i < hi; ++i) {
        const uint32_t h = __ldcg(hrow + i);
        if (int64_t(c) + h >= need) {
          s_cut = i, s_below = int(c), s_ties = int(h);
          break;
        }
        c += h;
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      RowInfo ri;
      ri.cut = s_cut;
      ri.ties = s_ties;
      ri.skip = s_ties - int(need - s_below);
      ri.pad = 0;
      p.info[int64_t(b) * p.units + (p.shared ? kvh : kvh * G + r)] = ri;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < p.bins; i += kThreads) hrow[i] = 0;
  }
  if (threadIdx.x == 0) p.row_done[b * p.kv_heads + kvh] = 0;
}

// ---- 2. compact ----------------------------------------------------------------------------------------------

struct CompactParams {
  BatchDesc bd;
  int units, budget, sink, window;
  const uint16_t* dist;
  int64_t ld;
  const RowInfo* info;
  unsigned long long* status;  // [batch][units][status_ld]
  int64_t status_ld;
  uint32_t epoch;  // 16 bits
  uint32_t* tile_ctr;
  int total_tiles;
  int tile_base[kMaxBatch + 1];  // first tile id of each sequence
  int32_t* idx;  // [batch][units][cap]
  int64_t cap;
  int32_t* counts;  // [batch][units]
};

// Tile state word: epoch (16) | flag (2) | kept-or-forced count (23) | tie count (23).
constexpr unsigned long long kAgg = 1, kInc = 2;
__device__ __forceinline__ unsigned long long pack_state(uint32_t epoch, unsigned long long flag, uint32_t a,
                                                         uint32_t e) {
  return (static_cast<unsigned long long>(epoch) << 48) | (flag << 46) |
         (static_cast<unsigned long long>(a) << 23) | e;
}

__global__ void __launch_bounds__(kThreads) compact_kernel(const __grid_constant__ CompactParams p) {
  __shared__ int s_id;
  __shared__ uint32_t warp_sums[kThreads / 32];
  __shared__ uint32_t s_apre, s_epre;
  if (threadIdx.x == 0) {
    const int id = int(atomicAdd(p.tile_ctr, 1u));
    if (id == p.total_tiles - 1) atomicExch(p.tile_ctr, 0u);  // every other block has its id: reset for next time
    s_id = id;
  }
  __syncthreads();
  const int id = s_id;
  int b = 0;
  while (id >= p.tile_base[b + 1]) ++b;
  const SeqDesc& sq = p.bd.seq[b];
  const int64_t n = sq.n;
  const int tiles = int((n + kCompactTile - 1) / kCompactTile);
  const int unit = (id - p.tile_base[b]) / tiles, tile = (id - p.tile_base[b]) % tiles;
  const int64_t row = int64_t(b) * p.units + unit;
  int32_t* out = p.idx + row * p.cap;
  const int64_t t_first = int64_t(tile) * kCompactTile + int64_t(threadIdx.x) * kCompactPerThread;
  if (n <= p.budget) {  // keep everything
    for (int j = 0; j < kCompactPerThread; ++j)
      if (t_first + j < n) out[t_first + j] = int32_t(t_first + j);
    if (tile == 0 && threadIdx.x == 0) p.counts[row] = int32_t(n);
    return;
  }
  int64_t s0, tail;
  middle(n, p.sink, p.window, s0, tail);
  const RowInfo ri = p.info[row];
  uint16_t d[kCompactPerThread];
  {
    const uint16_t* src = p.dist + row * p.ld + t_first;
    if (t_first < n) {  // dist rows are padded to a multiple of the tile: whole vectors are readable
      const uint4 a = *reinterpret_cast<const uint4*>(src);
      const uint4 c = *reinterpret_cast<const uint4*>(src + 8);
      const uint16_t* pa = reinterpret_cast<const uint16_t*>(&a);
      const uint16_t* pc = reinterpret_cast<const uint16_t*>(&c);
#pragma unroll
      for (int j = 0; j < 8; ++j) d[j] = pa[j], d[8 + j] = pc[j];
    }
  }
  uint32_t kind = 0;  // 2 bits per token: 1 = kept (forced or below the cut), 2 = tie
  uint32_t a_cnt = 0, e_cnt = 0;
#pragma unroll
  for (int j = 0; j < kCompactPerThread; ++j) {
    const int64_t t = t_first + j;
    if (t >= n) break;
    const bool mid = t >= s0 && t < tail;
    const bool keep = !mid || int(d[j]) < ri.cut;
    const bool tie = mid && int(d[j]) == ri.cut;
    kind |= (keep ? 1u : tie ? 2u : 0u) << (2 * j);
    a_cnt += keep, e_cnt += tie;
  }
  uint32_t total;
  const uint32_t ex = block_exclusive_scan<kThreads>(a_cnt | (e_cnt << 16), warp_sums, total);
  const uint32_t agg_a = total & 0xffffu, agg_e = total >> 16;
  // Decoupled look-back over the earlier tiles of this row.
  unsigned long long* st = p.status + row * p.status_ld;
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    uint32_t pa = 0, pe = 0;
    if (tile == 0) {
      if (lane == 0) atomicExch(st, pack_state(p.epoch, kInc, agg_a, agg_e));
    } else {
      if (lane == 0) atomicExch(st + tile, pack_state(p.epoch, kAgg, agg_a, agg_e));
      int pos = tile - 1;
      while (true) {
        const int k = pos - lane;
        unsigned long long s = 0;
        bool ok;
        do {
          if (k >= 0) s = *reinterpret_cast<volatile unsigned long long*>(st + k);
          else s = pack_state(p.epoch, kInc, 0, 0);
          ok = uint32_t(s >> 48) == p.epoch && ((s >> 46) & 3u) != 0;
        } while (!__all_sync(0xffffffffu, ok));
        const uint32_t inc = __ballot_sync(0xffffffffu, ((s >> 46) & 3u) == kInc);
        const int first = inc ? __ffs(inc) - 1 : 32;
        uint32_t va = lane <= first ? uint32_t((s >> 23) & 0x7fffffu) : 0u;
        uint32_t ve = lane <= first ? uint32_t(s & 0x7fffffu) : 0u;
#pragma unroll
        for (int o = 16; o > 0; o /= 2) {
          va += __shfl_xor_sync(0xffffffffu, va, o);
          ve += __shfl_xor_sync(0xffffffffu, ve, o);
        }
        pa += va, pe += ve;
        if (inc) break;
        pos -= 32;
      }
      if (lane == 0) atomicExch(st + tile, pack_state(p.epoch, kInc, pa + agg_a, pe + agg_e));
    }
    if (lane == 0) s_apre = pa, s_epre = pe;
  }
  __syncthreads();
  uint32_t a_before = s_apre + (ex & 0xffffu), ties_before = s_epre + (ex >> 16);
  const uint32_t skip = uint32_t(ri.skip);
#pragma unroll
  for (int j = 0; j < kCompactPerThread; ++j) {
    const uint32_t k = (kind >> (2 * j)) & 3u;
    if (k == 1) {
      out[a_before + (ties_before > skip ? ties_before - skip : 0)] = int32_t(t_first + j);
      ++a_before;
    } else if (k == 2) {
      if (ties_before >= skip) out[a_before + ties_before - skip] = int32_t(t_first + j);
      ++ties_before;
    }
  }
  if (tile == 0 && threadIdx.x == 0) p.counts[row] = int32_t(p.budget);
}

constexpr size_t kFusedSmemMax = 160 * 1024;  // the fused kernel's shared memory at most (else v1)

// ---- shared by the fused (v3) and grid (v4) kernels ------------------------------------------------------------

// Block `rank` of `parts` over a sequence of n tokens: tokens [*t_begin, *t_begin + returned count), a multiple of
// 8 per block (the last one shorter, later ones empty).
__device__ __forceinline__ int block_tokens(int64_t n, int parts, int rank, int64_t* t_begin) {
  const int64_t T = ((n + parts - 1) / parts + 7) / 8 * 8;
  *t_begin = min(n, int64_t(rank) * T);
  return int(min(n, *t_begin + T) - *t_begin);
}

// Words of shared memory before the distances: histograms, other per-block arrays, query words; rounded up so the
// distances start 16-byte aligned (the compaction reads them 8 at a time).
__host__ __device__ inline int dist_offset_words(int words) { return (words + 3) / 4 * 4; }

// Tokens [t_begin, t_begin + len) of one sequence and KV head, every row (R) of the block: `out_row0` + r * cap.
template <int R>
__device__ __forceinline__ void keep_all(int64_t t_begin, int len, int64_t n, bool first_block, int32_t* out_row0,
                                         int64_t cap, int32_t* counts_row0) {
  for (int r = 0; r < R; ++r) {
    int32_t* out = out_row0 + r * cap;
    for (int i = threadIdx.x; i < len; i += kThreads) out[t_begin + i] = int32_t(t_begin + i);
    if (first_block && threadIdx.x == 0) counts_row0[r] = int32_t(n);
  }
}

// Compaction of a block's tokens [t_begin, t_begin + len) for its R rows (distances in dist[R][tmax]): kept tokens
// (forced, or middle below cut[r]) and the ties past the first skip[r] of the row go to their ranks in the row's
// output; pre[r] = kept and tie tokens of the row before this block. Warp w takes row w / (8 / R) and a contiguous
// segment of it, 8 tokens per lane per step (one 16-byte read of distances): a count pass, one block barrier, a
// placement pass (v4; v3 scanned the whole block per 4096 tokens, two barriers each). v5: kept/tie bit masks per
// group of 8 and a fast path for groups inside the middle (v4 spent ~17 instructions per token and pass: 2.8 us
// of MHA 32K's select, 8.8 us of GQA 128K's).
template <int R>
__device__ void compact_rows(const uint16_t* dist, int tmax, int len, int64_t t_begin, int64_t s0, int64_t tail,
                             const int* cut, const int* skip, const uint32_t (*pre)[2], int32_t* out_row0,
                             int64_t cap) {
  constexpr int kWarps = kThreads / 32;
  static_assert(R >= 1 && R <= kWarps && kWarps % R == 0, "rows per block");
  constexpr int SPR = kWarps / R;  // segments (warps) per row
  __shared__ uint32_t wcnt[kWarps][2];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int r = warp / SPR, s = warp % SPR;
  const int groups = (len + 7) / 8, gps = (groups + SPR - 1) / SPR;
  const int g0 = min(groups, s * gps), g1 = min(groups, g0 + gps);
  const uint16_t* drow = dist + int64_t(r) * tmax;
  const int c = cut[r];
  // middle tokens of this block: local indices [mid_lo, mid_hi)
  const int mid_lo = int(max(int64_t(0), min(int64_t(len), s0 - t_begin)));
  const int mid_hi = int(max(int64_t(0), min(int64_t(len), tail - t_begin)));
  // 2 bits per token of the group of 8 at g: 1 = kept, 2 = tie; counts added to a and e. A group wholly inside the
  // middle (nearly all of them) takes 2 compares per token and 2 POPC per group.
  auto kinds = [&](int g, uint32_t& a, uint32_t& e) {
    const uint4 v = *reinterpret_cast<const uint4*>(drow + g * 8);
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
    const int i0 = g * 8;
    uint32_t km = 0, tm = 0;  // kept and tie bits, token j at bit j
    if (i0 >= mid_lo && i0 + 8 <= mid_hi) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int d = int((w[j / 2] >> (16 * (j & 1))) & 0xffffu);
        km |= uint32_t(d < c) << j;
        tm |= uint32_t(d == c) << j;
      }
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int i = i0 + j, d = int((w[j / 2] >> (16 * (j & 1))) & 0xffffu);
        const bool mid = i >= mid_lo && i < mid_hi;
        km |= uint32_t(i < len && (!mid || d < c)) << j;
        tm |= uint32_t(i < len && mid && d == c) << j;
      }
    }
    a += __popc(km), e += __popc(tm);
    return km | (tm << 8);
  };
  uint32_t a = 0, e = 0;
  for (int g = g0 + lane; g < g1; g += 32) kinds(g, a, e);
  uint32_t ae = a | (e << 16);  // < 2^16 each: len <= 32767
#pragma unroll
  for (int o = 16; o > 0; o /= 2) ae += __shfl_xor_sync(0xffffffffu, ae, o);
  if (lane == 0) wcnt[warp][0] = ae & 0xffffu, wcnt[warp][1] = ae >> 16;
  __syncthreads();
  uint32_t ca = pre[r][0], ce = pre[r][1];
  for (int w = r * SPR; w < warp; ++w) ca += wcnt[w][0], ce += wcnt[w][1];
  int32_t* out = out_row0 + int64_t(r) * cap;
  const uint32_t sk = uint32_t(skip[r]);
  for (int gb = g0; gb < g1; gb += 32) {
    const int g = gb + lane;
    uint32_t ka = 0, ke = 0;
    const uint32_t kind = g < g1 ? kinds(g, ka, ke) : 0u;
    const uint32_t v = ka | (ke << 16);
    uint32_t incl = v;
#pragma unroll
    for (int o = 1; o < 32; o *= 2) {
      const uint32_t y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    const uint32_t ex = incl - v, tot = __shfl_sync(0xffffffffu, incl, 31);
    uint32_t ab = ca + (ex & 0xffffu), eb = ce + (ex >> 16);
    for (uint32_t m = kind & 0xffffu; m != 0;) {  // kept/tie tokens in order (bit j: kept, bit 8 + j: tie)
      const int j = __ffs(int((m | (m >> 8)) & 0xffu)) - 1;
      const int32_t t = int32_t(t_begin + g * 8 + j);
      if (m >> j & 1u) {
        out[ab + (eb > sk ? eb - sk : 0)] = t;
        ++ab;
      } else {
        if (eb >= sk) out[ab + eb - sk] = t;
        ++eb;
      }
      m &= ~((1u << j) | (1u << (8 + j)));
    }
    ca += tot & 0xffffu, ce += tot >> 16;
  }
}

// ---- v2: fused estimate + cut-off + compaction, one launch, one cluster per (sequence, KV head) --------------
// A cluster of C blocks covers one (sequence, KV head): block `rank` takes tokens [rank * T, rank * T + T).
// Distances stay in the block's shared memory; the per-block histograms are reduced across the cluster through
// distributed shared memory (each block sums a slice of the bins), the cut-off is found from the slice sums, and
// each block compacts its own tokens after an exclusive prefix of the kept/tie counts of the lower ranks. Nothing
// but codes (read once) and indices (written once) touches global memory; no counters, no scratch, no round trips.

// What the fused (v3) and grid (v4) kernels share: the batch, the query side, the config, the output.
struct RowSelectParams {
  BatchDesc bd;
  const float* q;  // [batch][n_heads][D]
  int n_heads, kv_heads, units;
  const Thr* qthr;
  Thr cfg_thr;
  float hscale;
  int budget, sink, window;
  int bins;  // histogram bins
  int tmax;  // tokens per block (max over the batch), multiple of 8
  int vec_codes;
  int32_t* idx;  // [batch][units][cap]
  int64_t cap;
  int32_t* counts;  // [batch][units]
  unsigned long long* stamps;  // phase stamps (profiling builds), or null
};

struct FusedParams : RowSelectParams {
  int slice_bins;  // bins per cluster rank in the reduction
};

__device__ __forceinline__ uint32_t block_sum(uint32_t v, uint32_t* warp_sums) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  uint32_t all = 0;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) all += warp_sums[w];
  return all;
}

// Warp-wide: the cut-off in `bins` consecutive histogram bins h (bin ids first_bin + i), `before` tokens below
// them: the first bin where the inclusive count reaches `need` (need == 0: the first bin, taking none of its
// ties, as on the CPU). Lane 0 writes the cut and the number of its ties to drop (the oldest). The caller knows the
// cut lies in these bins.
__device__ __forceinline__ void find_cut(const uint32_t* h, int bins, int64_t before, int64_t need, int first_bin,
                                         int* cut, int* skip) {
  // v5: lane l sums bins [l k, l k + k) (independent loads), one warp scan finds the lane holding the cut, which
  // walks its k bins (v4: ceil(bins / 32) dependent rounds of a 32-bin warp scan).
  const int lane = threadIdx.x & 31;
  const int k = (bins + 31) / 32, lo = min(bins, lane * k), hi = min(bins, lo + k);
  uint32_t mine = 0;
  for (int i = lo; i < hi; ++i) mine += h[i];
  uint32_t incl = mine;
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const uint32_t y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += y;
  }
  const uint32_t ok = __ballot_sync(0xffffffffu, before + int64_t(incl) >= need);
  // The caller knows the cut lies in these bins: ok != 0. Its lane walks its bins.
  if (lane == __ffs(ok) - 1) {
    int64_t c = before + int64_t(incl - mine);
    for (int i = lo; i < hi; ++i) {
      const uint32_t v = h[i];
      if (c + v >= need) {
        *cut = first_bin + i, *skip = int(v) - int(need - c);
        break;
      }
      c += v;
    }
  }
}

template <int D, int G, bool SHARED>
__global__ void __launch_bounds__(kThreads, 2) fused_select_kernel(const __grid_constant__ FusedParams p) {
  namespace cg = cooperative_groups;
  constexpr int W = D / 16;        // 32-bit code words per key
  constexpr int R = SHARED ? 1 : G;
  constexpr int kWarps = kThreads / 32;
  cg::cluster_group cluster = cg::this_cluster();
  const int C = int(cluster.num_blocks()), rank = int(cluster.block_rank());
  const int b = blockIdx.z, kvh = blockIdx.y;
  const int64_t n = p.bd.seq[b].n;
  int64_t t_begin;
  const int len = block_tokens(n, C, rank, &t_begin);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row0 = int64_t(b) * p.units + (SHARED ? kvh : kvh * G);  // first output row of this block
  ADAMAS_STAMP(p.stamps, 0);
  launch_dependents();

  if (n <= p.budget) {  // keep everything (the whole cluster takes this branch: no cluster barriers)
    keep_all<R>(t_begin, len, n, rank == 0, p.idx + row0 * p.cap, p.cap, p.counts + row0);
    return;
  }

  extern __shared__ __align__(16) uint32_t smem[];
  uint32_t* hist = smem;                          // [R][bins]
  uint32_t* tot = hist + R * p.bins;              // [R][slice_bins]: this rank's slice of the cluster's histogram
  uint32_t* qw_s = tot + R * p.slice_bins;        // [G][W] query code words
  uint16_t* dist = reinterpret_cast<uint16_t*>(smem + dist_offset_words(R * (p.bins + p.slice_bins) + G * W));
  __shared__ uint32_t ssum[R], cnt[R][2], pre[R][2];
  __shared__ int s_cut[R], s_skip[R];

  int64_t s0, tail;
  middle(n, p.sink, p.window, s0, tail);
  distance_pass<D, G, SHARED>(p, b, kvh, t_begin, len, s0, tail, qw_s, dist, hist);
  ADAMAS_STAMP(p.stamps, 2);
  cluster.sync();  // every block's histogram is complete
  ADAMAS_STAMP(p.stamps, 3);

  // Reduce-scatter: this rank sums bins [rank * S, rank * S + S) of every row over the cluster.
  const int S = p.slice_bins;
  for (int i = tid; i < R * S; i += kThreads) {
    const int r = i / S, bin = rank * S + i % S;
    uint32_t v = 0;
    if (bin < p.bins)
      for (int c = 0; c < C; ++c) v += cluster.map_shared_rank(hist, c)[r * p.bins + bin];
    tot[i] = v;
  }
  __syncthreads();
  if (warp < R) {
    uint32_t v = 0;
    for (int j = lane; j < S; j += 32) v += tot[warp * S + j];
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) ssum[warp] = v;
  }
  cluster.sync();  // slices and their sums are ready
  ADAMAS_STAMP(p.stamps, 4);

  // Cut-off of each row (warp r): the first bin whose inclusive count over the middle reaches `need`.
  const int64_t need = int64_t(p.budget) - s0 - (n - tail);  // >= 0, < the middle's size
  if (warp < R) {
    const int r = warp;
    uint32_t v = lane < C ? *cluster.map_shared_rank(&ssum[r], lane) : 0u;
    uint32_t incl = v;
#pragma unroll
    for (int o = 1; o < 32; o *= 2) {
      const uint32_t y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    const uint32_t hit = __ballot_sync(0xffffffffu, lane < C && int64_t(incl) >= need);
    const int j = __ffs(hit) - 1;  // the slice holding the cut (exists: the middle has more than `need` tokens)
    const int64_t before = int64_t(__shfl_sync(0xffffffffu, incl, j)) - __shfl_sync(0xffffffffu, v, j);
    find_cut(cluster.map_shared_rank(tot, j) + r * S, S, before, need, j * S, &s_cut[r], &s_skip[r]);
  }
  __syncthreads();
  ADAMAS_STAMP(p.stamps, 5);

  // This block's kept (forced or below the cut) and tie counts per row.
  __shared__ uint32_t warp_sums[kWarps];
  for (int r = 0; r < R; ++r) {
    const int cut = s_cut[r];
    uint32_t a = 0, e = 0;
    for (int i = tid; i < len; i += kThreads) {
      const int64_t t = t_begin + i;
      const bool mid = t >= s0 && t < tail;
      const int dv = dist[r * p.tmax + i];
      a += !mid || dv < cut;
      e += mid && dv == cut;
    }
    const uint32_t ae = block_sum(a | (e << 16), warp_sums);  // len <= 32767 per block (host ensures)
    if (tid == 0) cnt[r][0] = ae & 0xffffu, cnt[r][1] = ae >> 16;
  }
  cluster.sync();  // counts are ready
  ADAMAS_STAMP(p.stamps, 6);
  if (warp < R) {
    uint32_t a = 0, e = 0;
    if (lane < rank) a = cluster.map_shared_rank(&cnt[warp][0], lane)[0], e = cluster.map_shared_rank(&cnt[warp][0], lane)[1];
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
      a += __shfl_xor_sync(0xffffffffu, a, o);
      e += __shfl_xor_sync(0xffffffffu, e, o);
    }
    if (lane == 0) pre[warp][0] = a, pre[warp][1] = e;
  }
  cluster.barrier_arrive();  // done reading other blocks' shared memory (they may exit once all arrive)
  __syncthreads();
  compact_rows<R>(dist, p.tmax, len, t_begin, s0, tail, s_cut, s_skip, pre, p.idx + row0 * p.cap, p.cap);
  if (rank == 0 && tid == 0)
    for (int r = 0; r < R; ++r) p.counts[row0 + r] = int32_t(p.budget);
  cluster.barrier_wait();
  ADAMAS_STAMP(p.stamps, 7);
}

// ---- v4: one launch, no clusters: P blocks per (sequence, KV head), one barrier through L2 ----------------------
// v3's clusters could not cover the GPU evenly (GPC fragmentation: 30 resident clusters of 8; MHA ran 224 blocks on
// 132 SMs, GQA 128 blocks of which some shared an SM) and needed three cluster barriers. Here the P blocks of a
// (sequence, KV head) are plain blocks of a cooperative launch (all resident: P = blocks per SM x SMs / units).
// After its distance pass a block publishes its cumulative middle counts per row (cum[bin] = tokens below bin) and
// adds its histogram into the row's histogram in L2; one arrival barrier per (sequence, KV head); then every block
// finds the cut-off of its rows from the row histogram and its prefix (kept and tie tokens of the lower ranks) from
// the lower ranks' cumulative counts at the cut: no second or third barrier. The row histograms alternate between
// two buffers by the barrier's generation; each launch clears the buffer that the next one will use.

struct GridParams : RowSelectParams {
  int P;  // blocks per (sequence, KV head)
  uint32_t* cum;  // [batch][units][P][bins + 1]
  uint32_t* total;  // [2][batch][units][bins] row histograms by generation parity; the next one zero
  int64_t total_half;
  uint32_t* bar;  // [batch][kv_heads][2]: arrivals (zero between launches), generation
};

template <int D, int G, bool SHARED>
__global__ void __launch_bounds__(kThreads, 2) grid_select_kernel(const __grid_constant__ GridParams p) {
  constexpr int W = D / 16;
  constexpr int R = SHARED ? 1 : G;
  const int P = p.P, rank = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const int64_t n = p.bd.seq[b].n;
  int64_t t_begin;
  const int len = block_tokens(n, P, rank, &t_begin);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row0 = int64_t(b) * p.units + (SHARED ? kvh : kvh * G);
  ADAMAS_STAMP(p.stamps, 0);
  launch_dependents();
  if (n <= p.budget) {  // every block of this (sequence, KV head) takes this branch: no barrier
    keep_all<R>(t_begin, len, n, rank == 0, p.idx + row0 * p.cap, p.cap, p.counts + row0);
    return;
  }

  extern __shared__ __align__(16) uint32_t smem[];
  uint32_t* hist = smem;               // [R][bins]: this block's, then (after the barrier) the rows'
  uint32_t* qw_s = hist + R * p.bins;  // [G][W] query code words
  uint16_t* dist = reinterpret_cast<uint16_t*>(smem + dist_offset_words(R * p.bins + G * W));  // [R][tmax]
  __shared__ uint32_t s_gen, pre[R][2];
  __shared__ int s_cut[R], s_skip[R];
  uint32_t* bar = p.bar + (int64_t(b) * p.kv_heads + kvh) * 2;
  // The generation, read before this block arrives; its value is first needed after the distance pass (v4 stored it
  // to shared memory at once, so warp 0 waited a DRAM round trip before making the query codes: ~1.5 us).
  uint32_t gen_early = 0;
  if (tid == 0) gen_early = *reinterpret_cast<volatile uint32_t*>(bar + 1);

  int64_t s0, tail;
  middle(n, p.sink, p.window, s0, tail);
  distance_pass<D, G, SHARED>(p, b, kvh, t_begin, len, s0, tail, qw_s, dist, hist);
  if (tid == 0) s_gen = gen_early;
  __syncthreads();
  ADAMAS_STAMP(p.stamps, 2);

  // Publish (warp r, row r; v5: the rows in parallel, no block barriers): cumulative middle counts, and the histogram
  // added into the row's (generation parity).
  const uint32_t gen = s_gen, parity = gen & 1u;
  uint32_t* tot = p.total + parity * p.total_half + row0 * p.bins;
  if (warp < R) {
    const int r = warp;
    const uint32_t* h = hist + r * p.bins;
    const int k = (p.bins + 32) / 32, lo = min(p.bins + 1, lane * k), hi = min(p.bins + 1, lo + k);  // bins + 1
    uint32_t mine = 0;
    for (int i = lo; i < min(hi, p.bins); ++i) mine += h[i];
    uint32_t c = mine;
#pragma unroll
    for (int o = 1; o < 32; o *= 2) {
      const uint32_t y = __shfl_up_sync(0xffffffffu, c, o);
      if (lane >= o) c += y;
    }
    c -= mine;
    uint32_t* cum = p.cum + ((row0 + r) * P + rank) * (p.bins + 1);
    for (int i = lo; i < hi; ++i) {
      cum[i] = c;
      if (i < p.bins) {
        const uint32_t v = h[i];
        if (v) atomicAdd(tot + r * p.bins + i, v);
        c += v;
      }
    }
  }
  __syncthreads();
  ADAMAS_STAMP(p.stamps, 3);
  if (tid == 0) {  // arrival barrier of the P blocks of (b, kvh); the last one resets the count, bumps the generation
    __threadfence();  // the block's writes (ordered before this by the block barrier) before the arrival
    if (atomicAdd(bar, 1u) == uint32_t(P - 1)) {
      atomicExch(bar, 0u);
      __threadfence();
      atomicExch(bar + 1, gen + 1);
    } else {
      while (*reinterpret_cast<volatile uint32_t*>(bar + 1) == gen) __nanosleep(32);
    }
    __threadfence();
  }
  __syncthreads();
  ADAMAS_STAMP(p.stamps, 4);

  // The rows' histograms into shared memory; this block's share of the other buffer cleared for the next launch.
  for (int i = tid; i < R * p.bins; i += kThreads) hist[i] = __ldcg(tot + i);
  {
    uint32_t* other = p.total + (parity ^ 1u) * p.total_half + row0 * p.bins;
    const int S = (p.bins + P - 1) / P;
    for (int i = tid; i < R * S; i += kThreads) {
      const int r = i / S, bin = rank * S + i % S;
      if (bin < p.bins) other[r * p.bins + bin] = 0;
    }
  }
  __syncthreads();
  // Warp r: the cut-off of row r, then the kept and tie tokens of the lower ranks (their counts below the cut and
  // at it) plus the forced tokens before this block.
  const int64_t need = int64_t(p.budget) - s0 - (n - tail);  // >= 0, < the middle's size
  if (warp < R) {
    const int r = warp;
    find_cut(hist + r * p.bins, p.bins, 0, need, 0, &s_cut[r], &s_skip[r]);
    __syncwarp();
    const int cut = s_cut[r];
    uint32_t a = 0, e = 0;
    for (int j = lane; j < rank; j += 32) {
      const uint32_t* cj = p.cum + ((row0 + r) * P + j) * (p.bins + 1);
      const uint32_t below = __ldcg(cj + cut), upto = __ldcg(cj + cut + 1);
      a += below, e += upto - below;
    }
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
      a += __shfl_xor_sync(0xffffffffu, a, o);
      e += __shfl_xor_sync(0xffffffffu, e, o);
    }
    const int64_t forced = min(t_begin, s0) + max(int64_t(0), t_begin - tail);
    if (lane == 0) pre[r][0] = a + uint32_t(forced), pre[r][1] = e;
  }
  __syncthreads();
  ADAMAS_STAMP(p.stamps, 5);
  compact_rows<R>(dist, p.tmax, len, t_begin, s0, tail, s_cut, s_skip, pre, p.idx + row0 * p.cap, p.cap);
  if (rank == 0 && tid == 0)
    for (int r = 0; r < R; ++r) p.counts[row0 + r] = int32_t(p.budget);
  ADAMAS_STAMP(p.stamps, 7);
}

// ---- standalone distances (tests, studies) -----------------------------------------------------------------------

template <int D>
__global__ void l1_kernel(const uint8_t* __restrict__ qcode, const uint8_t* __restrict__ codes, int64_t c_tok,
                          int64_t n, uint16_t* __restrict__ out) {
  constexpr int W = D / 16;
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n) return;
  int d = 0;
#pragma unroll
  for (int i = 0; i < W; ++i) {
    uint32_t wq = 0, wk = 0;
    for (int j = 0; j < 4; ++j) {
      wq |= uint32_t(qcode[4 * i + j]) << (8 * j);
      wk |= uint32_t(codes[t * c_tok + 4 * i + j]) << (8 * j);
    }
    d += word_l1(therm_pack(wq), wq, therm_pack(wk), wk);
  }
  out[t] = uint16_t(d);
}

template <int D>
void launch_estimate(const SelectParams& p, dim3 grid, size_t smem, cudaStream_t stream) {
  if (smem > 48 * 1024)
    check_cuda(cudaFuncSetAttribute(estimate_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
               "estimate smem attribute");
  estimate_kernel<D><<<grid, kThreads, smem, stream>>>(p);
  launch_check("estimate kernel launch");
}

// Shared-memory and cluster-size attributes of one instantiation (set once, to the largest values used).
template <int D, int G, bool SH>
void prepare_fused_t() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto* k = fused_select_kernel<D, G, SH>;
    check_cuda(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kFusedSmemMax)),
               "fused select smem attribute");
    check_cuda(cudaFuncSetAttribute(k, cudaFuncAttributeNonPortableClusterSizeAllowed, 1),
               "fused select cluster attribute");
  });
}

// Most clusters of C blocks (smem bytes each) resident at once, 0 when none fits.
// v3: the cluster size is chosen so that every cluster of the launch is resident (v2's 32 clusters of 8 on an H100
// got 30 slots: the last 2 ran as a second wave, doubling select's time).
template <int D, int G, bool SH>
int max_clusters_t(int C, size_t smem) {
  prepare_fused_t<D, G, SH>();
  return max_active_clusters(reinterpret_cast<const void*>(fused_select_kernel<D, G, SH>), kThreads, C, smem);
}

// Launches the fused kernel with clusters of C blocks; false when a cluster of that size cannot be resident.
template <int D, int G, bool SH>
bool launch_fused_t(const FusedParams& p, int C, size_t smem, dim3 grid, cudaStream_t stream) {
  const int clusters = max_clusters_t<D, G, SH>(C, smem);
  if (clusters < 1) return false;
  cudaLaunchAttribute attr[1];
  const cudaLaunchConfig_t cfg = cluster_launch_config(grid, kThreads, C, smem, stream, attr);
  if (launch_verbose()) {
    char line[256];
    std::snprintf(line, sizeof line, "[adamas] fused select D=%d G=%d shared=%d: grid %ux%ux%u, cluster %d, smem "
                  "%zu B, max active clusters %d (%d blocks)\n", D, G, int(SH), grid.x, grid.y, grid.z, C, smem,
                  clusters, clusters * C);
    verbose_print(line);
  }
  note_cluster_launch(cfg);
  check_cuda(cudaLaunchKernelEx(&cfg, fused_select_kernel<D, G, SH>, p), "fused select launch");
  return true;
}

// Calls f.template operator()<D, G, SHARED>() for a runtime (D, G, shared) (G = 1 is never shared).
template <int D, class F>
decltype(auto) dispatch_gs(int G, bool shared, F&& f) {
  switch (G) {
    case 1: return f.template operator()<D, 1, false>();
    case 2: return shared ? f.template operator()<D, 2, true>() : f.template operator()<D, 2, false>();
    case 4: return shared ? f.template operator()<D, 4, true>() : f.template operator()<D, 4, false>();
    default: return shared ? f.template operator()<D, 8, true>() : f.template operator()<D, 8, false>();
  }
}
template <class F>
decltype(auto) dispatch_dgs(int D, int G, bool shared, F&& f) {
  switch (D) {
    case 64: return dispatch_gs<64>(G, shared, f);
    case 128: return dispatch_gs<128>(G, shared, f);
    default: return dispatch_gs<256>(G, shared, f);
  }
}

// ---- v4 host side ----
constexpr size_t kGridSmemMax = 200 * 1024;

// Blocks of grid_select_kernel<D, G, SH> resident per SM at `smem` bytes of dynamic shared memory; cached.
template <int D, int G, bool SH>
int grid_occupancy_t(size_t smem) {
  static std::mutex mu;
  static std::map<size_t, int> cache;
  static bool attr = false;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find(smem); it != cache.end()) return it->second;
  if (!attr) {
    check_cuda(cudaFuncSetAttribute(grid_select_kernel<D, G, SH>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(kGridSmemMax)), "grid select smem attribute");
    attr = true;
  }
  int v = 0;
  check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v, grid_select_kernel<D, G, SH>, kThreads, smem),
             "grid select occupancy");
  cache[smem] = v;
  return v;
}

size_t grid_smem(int D, int G, int R, int bins, int tmax) {
  return size_t(dist_offset_words(R * bins + G * (D / 16))) * 4 + size_t(R) * size_t(tmax) * 2;
}

// Selection path: ADAMAS_CUDA_SELECT=v1 forces the two-launch path, =fused:C the cluster kernel (v3) with clusters
// of C, =grid:P the grid kernel (v4) with P blocks per (sequence, KV head) (tests); unset: grid when all its blocks
// are resident with P >= 2, else fused when its shared memory fits, else v1.
struct SelectPath {
  bool v1 = false;
  int force_c = 0, force_p = 0;
};
SelectPath select_path() {
  SelectPath sp;
  if (const char* e = std::getenv("ADAMAS_CUDA_SELECT")) {
    if (std::strcmp(e, "v1") == 0) sp.v1 = true;
    else if (std::strncmp(e, "fused:", 6) == 0) sp.force_c = std::atoi(e + 6);
    else if (std::strncmp(e, "grid:", 5) == 0) sp.force_p = std::atoi(e + 5);
  }
  return sp;
}

size_t fused_smem(int D, int G, int R, int bins, int C, int64_t n_max, int64_t* tmax, int* slice_bins) {
  *tmax = ((n_max + C - 1) / C + 7) / 8 * 8;
  *slice_bins = (bins + C - 1) / C;
  return size_t(dist_offset_words(R * bins + R * *slice_bins + G * (D / 16))) * 4 + size_t(R) * size_t(*tmax) * 2;
}

// The longest sequence of a batch chunk; returns whether all its codes allow 16-byte loads.
bool scan_chunk(const BatchDesc& bd, int64_t* n_max) {
  bool vec = true;
  *n_max = 0;
  for (int i = 0; i < bd.batch; ++i) {
    const SeqDesc& s = bd.seq[i];
    *n_max = std::max(*n_max, s.n);
    vec = vec && (reinterpret_cast<uintptr_t>(s.codes) % 16 == 0) && s.c_tok % 16 == 0 && s.c_head % 16 == 0;
  }
  return vec;
}

// The shared parameters of the fused and grid kernels.
void fill_row_params(RowSelectParams& p, const BatchDesc& bd, const float* q, int kvh, int n_heads, int units,
                     const AttentionConfig& config, const Thr* qthr, float hscale, int bins, int64_t tmax, bool vec,
                     int32_t* idx, int64_t cap, int32_t* counts) {
  p.bd = bd;
  p.q = q;
  p.n_heads = n_heads, p.kv_heads = kvh, p.units = units;
  p.qthr = qthr;
  p.cfg_thr = {config.thresholds.t0, config.thresholds.t1, config.thresholds.t2};
  p.hscale = hscale;
  p.budget = int(config.budget), p.sink = int(config.sink), p.window = int(config.window);
  p.bins = bins, p.tmax = int(tmax), p.vec_codes = vec;
  p.idx = idx, p.cap = cap, p.counts = counts;
  p.stamps = stamp_buffer(0);
}

// Tries the grid path (v4) for one batch chunk; false: use another path.
bool try_grid(const BatchDesc& bd, const float* q, int D, int kvh, int n_heads, bool shared, int units,
              const AttentionConfig& config, const Thr* qthr, float hscale, Workspace::State& S, int32_t* idx,
              int64_t cap, int32_t* counts, cudaStream_t stream) {
  const SelectPath sp = select_path();
  if (sp.v1 || sp.force_c > 0) return false;
  const int G = n_heads / kvh, R = shared ? 1 : G;
  const int bins = 3 * D * (shared ? G : 1) + 1;
  int64_t n_max = 0;
  const bool vec = scan_chunk(bd, &n_max);
  const int64_t groups = int64_t(bd.batch) * kvh;  // (sequence, KV head) pairs: P blocks each
  int P = 0, tmax = 0;
  size_t smem = 0;
  for (int occ_target = 2; occ_target >= 1 && P == 0; --occ_target) {
    int p = sp.force_p > 0 ? sp.force_p : int(std::min<int64_t>(int64_t(occ_target) * S.sms / groups, 1024));
    if (sp.force_p == 0) p = int(std::min<int64_t>(p, std::max<int64_t>(1, (n_max + 255) / 256)));  // >= 256 tokens
    if (p < (sp.force_p > 0 ? 1 : 2)) continue;
    const int64_t t = ((n_max + p - 1) / p + 7) / 8 * 8;
    if (t > 32767) continue;
    const size_t sm = grid_smem(D, G, R, bins, int(t));
    if (sm > kGridSmemMax) continue;
    const int occ = dispatch_dgs(D, G, shared, [&]<int DD, int GG, bool SH>() { return grid_occupancy_t<DD, GG, SH>(sm); });
    if (groups * p > int64_t(occ) * S.sms || (sp.force_p == 0 && occ < occ_target)) continue;
    P = p, tmax = int(t), smem = sm;
  }
  if (P == 0) return false;
  // Scratch: cumulative counts (overwritten by every launch), row histograms by parity and barriers (persistent:
  // zero when the layout changes or the buffers grow). Every chunk of a batch uses the same scratch (stream order).
  const size_t cum_bytes = size_t(bd.batch) * units * P * (bins + 1) * 4;
  const size_t total_bytes = 2 * size_t(bd.batch) * units * bins * 4, bar_bytes = size_t(bd.batch) * kvh * 2 * 4;
  ensure(&S.gcum, &S.gcum_bytes, cum_bytes, false);
  const bool grow = total_bytes > S.gtotal_bytes || bar_bytes > S.gbar_bytes;
  ensure(&S.gtotal, &S.gtotal_bytes, total_bytes, true);
  ensure(&S.gbar, &S.gbar_bytes, bar_bytes, true);
  const int64_t key[3] = {units, bins, kvh};
  if (grow || !std::equal(key, key + 3, S.grid_key)) {
    check_cuda(cudaMemsetAsync(S.gtotal, 0, S.gtotal_bytes, stream), "cuda::select: grid scratch reset");
    check_cuda(cudaMemsetAsync(S.gbar, 0, S.gbar_bytes, stream), "cuda::select: grid scratch reset");
    std::copy(key, key + 3, S.grid_key);
  }
  GridParams p{};
  fill_row_params(p, bd, q, kvh, n_heads, units, config, qthr, hscale, bins, tmax, vec, idx, cap, counts);
  p.P = P;
  p.cum = S.gcum;
  p.total = S.gtotal;
  p.total_half = int64_t(S.gtotal_bytes / 8);  // half the buffer (u32): fixed until it grows, which resets it
  p.bar = S.gbar;
  const dim3 grid(unsigned(P), unsigned(kvh), unsigned(bd.batch));
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeCooperative;
  attr[0].val.cooperative = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  if (launch_verbose()) {
    char line[256];
    std::snprintf(line, sizeof line, "[adamas] grid select D=%d G=%d shared=%d: grid %ux%ux%u (P=%d, %d tokens per "
                  "block), smem %zu B\n", D, G, int(shared), grid.x, grid.y, grid.z, P, tmax, smem);
    verbose_print(line);
  }
  dispatch_dgs(D, G, shared, [&]<int DD, int GG, bool SH>() {
    check_cuda(cudaLaunchKernelEx(&cfg, grid_select_kernel<DD, GG, SH>, p), "grid select launch");
  });
  return true;
}

// Tries the fused path for one batch chunk; false: use v1.
bool try_fused(const BatchDesc& bd, const float* q, int D, int kvh, int n_heads, bool shared, int units,
               const AttentionConfig& config, const Thr* qthr, float hscale, int sms, int32_t* idx, int64_t cap,
               int32_t* counts, cudaStream_t stream) {
  const SelectPath sp = select_path();
  if (sp.v1) return false;
  const int G = n_heads / kvh, R = shared ? 1 : G;
  const int bins = 3 * D * (shared ? G : 1) + 1;
  int64_t n_max = 0;
  const bool vec = scan_chunk(bd, &n_max);
  int64_t tmax = 0;
  int slice_bins = 0;
  auto fits = [&](int c) {
    const size_t smem = fused_smem(D, G, R, bins, c, n_max, &tmax, &slice_bins);
    return smem <= kFusedSmemMax && tmax <= 32768;
  };
  const int64_t clusters = int64_t(bd.batch) * kvh;
  int C = 0;
  if (sp.force_c > 0) {
    C = sp.force_c;
  } else {
    // v3: the largest cluster (<= 16 blocks, <= 2 blocks per SM in all) whose clusters are all resident at once.
    for (int c = 16; c >= 1 && C == 0; --c) {
      if (!fits(c) || clusters * c > 2 * int64_t(sms)) continue;
      const size_t smem = fused_smem(D, G, R, bins, c, n_max, &tmax, &slice_bins);
      const int fit =
          dispatch_dgs(D, G, shared, [&]<int DD, int GG, bool SH>() { return max_clusters_t<DD, GG, SH>(c, smem); });
      if (fit >= clusters) C = c;
    }
    if (C == 0) {  // large batches: several waves whatever the size; v2's rule
      C = 1;
      while (C < 16 && clusters * C < sms) C *= 2;
      while (C < 16 && !fits(C)) C *= 2;
    }
  }
  for (;;) {
    if (!fits(C)) return false;
    FusedParams p{};
    fill_row_params(p, bd, q, kvh, n_heads, units, config, qthr, hscale, bins, tmax, vec, idx, cap, counts);
    p.slice_bins = slice_bins;
    const size_t smem = fused_smem(D, G, R, bins, C, n_max, &tmax, &slice_bins);
    const dim3 grid(unsigned(C), unsigned(kvh), unsigned(bd.batch));
    const bool ok = dispatch_dgs(
        D, G, shared, [&]<int DD, int GG, bool SH>() { return launch_fused_t<DD, GG, SH>(p, C, smem, grid, stream); });
    if (ok) return true;
    if (C <= 8) return false;
    C = 8;  // 16-block clusters not resident here
  }
}

}  // namespace
}  // namespace detail

void l1_distances(const uint8_t* query_code, const CodesView& keys, int64_t head, uint16_t* out,
                  cudaStream_t stream) {
  detail::check_supported_dim(keys.dim, "cuda::l1_distances");
  CUDA_REQUIRE(0 <= head && head < keys.heads, ErrorKind::invalid_argument, "cuda::l1_distances: head ", head, " of ", keys.heads);
  if (keys.tokens == 0) return;
  CUDA_REQUIRE(query_code && keys.data && out, ErrorKind::invalid_argument, "cuda::l1_distances: null pointer");
  const unsigned blocks = unsigned((keys.tokens + 255) / 256);
  const uint8_t* base = keys.data + head * keys.head_stride;
  switch (keys.dim) {
    case 64: detail::l1_kernel<64><<<blocks, 256, 0, stream>>>(query_code, base, keys.token_stride, keys.tokens, out); break;
    case 128: detail::l1_kernel<128><<<blocks, 256, 0, stream>>>(query_code, base, keys.token_stride, keys.tokens, out); break;
    case 256: detail::l1_kernel<256><<<blocks, 256, 0, stream>>>(query_code, base, keys.token_stride, keys.tokens, out); break;
  }
  detail::launch_check("l1 kernel launch");
}

SelectionView select(const BatchInputs& in, const AttentionConfig& config, Workspace& ws, cudaStream_t stream) {
  using namespace detail;
  validate_config(config);
  CUDA_REQUIRE(config.method == Method::adamas, ErrorKind::invalid_argument, "cuda::select: method ", method_name(config.method), " (only adamas selects on the GPU)");
  CUDA_REQUIRE(config.group != GroupSelection::shared_union, ErrorKind::unsupported, "cuda::select: group selection shared-union is not implemented on CUDA");
  CUDA_REQUIRE(config.budget < (int64_t(1) << 23), ErrorKind::unsupported, "cuda::select: budget ", config.budget, " too large");
  const auto chunks = make_batches(in, true, "cuda::select");
  if (cluster_selected(in, config, false)) {  // v9: one cluster per (sequence, KV head), selection only
    cluster_attention(in, config, ws, nullptr, stream);
    return ws.state().last;
  }
  if (stream_selected(in, config)) {  // v8: the persistent kernel, selection only
    stream_attention(in, config, ws, nullptr, stream);
    return ws.state().last;
  }
  const HeadsView& k0 = in.seqs[0].k;
  const int D = int(k0.dim), kvh = int(k0.heads), n_heads = int(in.n_heads), G = n_heads / kvh;
  const bool shared = config.group == GroupSelection::shared_sum;
  const int units = shared ? kvh : n_heads;
  const int64_t batch = int64_t(in.seqs.size());
  int64_t n_max = 0;
  for (const auto& s : in.seqs) n_max = std::max(n_max, s.k.tokens);
  CUDA_REQUIRE(n_max < (int64_t(1) << 23), ErrorKind::unsupported, "cuda::select: ", n_max, " tokens exceed 2^23");
  auto& S = ws.state();
  const int64_t cap = std::min<int64_t>(config.budget, n_max);
  const int64_t ld = (n_max + kCompactTile - 1) / kCompactTile * kCompactTile;
  const int64_t status_ld = ld / kCompactTile;
  const int bins = 3 * D * (shared ? G : 1) + 1;
  ensure(&S.idx, &S.idx_bytes, size_t(batch * units * cap) * 4, false);
  ensure(&S.counts, &S.counts_bytes, size_t(batch * units) * 4, false);

  const float hscale = 1.0f / std::sqrt(float(D));
  for (size_t c = 0; c < chunks.size(); ++c) {
    const BatchDesc& bd = chunks[c];
    const int64_t b0 = int64_t(c) * kMaxBatch;
    if (try_grid(bd, in.q + b0 * n_heads * D, D, kvh, n_heads, shared, units, config,
                 reinterpret_cast<const Thr*>(in.query_thresholds), hscale, S, S.idx + b0 * units * cap, cap,
                 S.counts + b0 * units, stream))
      continue;
    if (try_fused(bd, in.q + b0 * n_heads * D, D, kvh, n_heads, shared, units, config,
                  reinterpret_cast<const Thr*>(in.query_thresholds), hscale, S.sms, S.idx + b0 * units * cap, cap,
                  S.counts + b0 * units, stream))
      continue;
    // v1: two launches through scratch (rows longer than the fused kernel's shared memory allows).
    ensure(&S.dist, &S.dist_bytes, size_t(batch * units * ld) * 2, false);
    ensure(&S.hist, &S.hist_bytes, size_t(batch * units * bins) * 4, true);
    ensure(&S.row_done, &S.row_done_bytes, size_t(batch * kvh) * 4, true);
    ensure(&S.info, &S.info_bytes, size_t(batch * units) * sizeof(RowInfo), false);
    ensure(&S.tile_ctr, &S.tile_ctr_bytes, 4, true);
    ensure(&S.status, &S.status_bytes, size_t(batch * units * status_ld) * 8, true);
    SelectParams p{};
    p.bd = bd;
    p.q = in.q + b0 * n_heads * D;
    p.n_heads = n_heads, p.kv_heads = kvh, p.group = G, p.units = units, p.shared = shared;
    p.qthr = reinterpret_cast<const Thr*>(in.query_thresholds);
    p.cfg_thr = {config.thresholds.t0, config.thresholds.t1, config.thresholds.t2};
    p.hscale = hscale;
    p.budget = int(config.budget), p.sink = int(config.sink), p.window = int(config.window);
    p.dist = S.dist + b0 * units * ld, p.ld = ld;
    p.hist = S.hist + b0 * units * bins, p.bins = bins;
    p.row_done = S.row_done + b0 * kvh;
    p.info = S.info + b0 * units;
    bool vec = true;
    int64_t work = 0, n_chunk_max = 0;
    for (int i = 0; i < bd.batch; ++i) {
      const SeqDesc& s = bd.seq[i];
      vec = vec && (reinterpret_cast<uintptr_t>(s.codes) % 16 == 0) && s.c_tok % 16 == 0 && s.c_head % 16 == 0;
      if (s.n > config.budget) work += s.n * kvh;
      n_chunk_max = std::max(n_chunk_max, s.n);
    }
    p.vec_codes = vec;
    // Tile: enough blocks to fill the GPU a few times over, at most 4096 tokens.
    int tile = 4096;
    while (tile > 256 && work / tile < 4 * S.sms) tile /= 2;
    p.tile = tile;
    const size_t smem = size_t(2 * G * (D / 16) + (shared ? 1 : G) * bins) * 4;
    const dim3 grid1(unsigned((n_chunk_max + tile - 1) / tile), unsigned(kvh), unsigned(bd.batch));
    if (work > 0) {
      switch (D) {
        case 64: launch_estimate<64>(p, grid1, smem, stream); break;
        case 128: launch_estimate<128>(p, grid1, smem, stream); break;
        case 256: launch_estimate<256>(p, grid1, smem, stream); break;
      }
    }
    CompactParams cp{};
    cp.bd = bd;
    cp.units = units, cp.budget = int(config.budget), cp.sink = int(config.sink), cp.window = int(config.window);
    cp.dist = p.dist, cp.ld = ld, cp.info = p.info;
    cp.status = S.status + b0 * units * status_ld, cp.status_ld = status_ld;
    if (S.epoch >= 0xfffeu) {  // 16-bit tags wrap: clear the states so no old tag can match
      check_cuda(cudaMemsetAsync(S.status, 0, S.status_bytes, stream), "cuda::select: status reset");
      S.epoch = 0;
    }
    ++S.epoch;
    cp.epoch = S.epoch;
    cp.tile_ctr = S.tile_ctr;
    int base = 0;
    for (int i = 0; i < bd.batch; ++i) {
      cp.tile_base[i] = base;
      base += int((bd.seq[i].n + kCompactTile - 1) / kCompactTile) * units;
    }
    for (int i = bd.batch; i <= kMaxBatch; ++i) cp.tile_base[i] = base;
    cp.total_tiles = base;
    cp.idx = S.idx + b0 * units * cap, cp.cap = cap;
    cp.counts = S.counts + b0 * units;
    compact_kernel<<<unsigned(base), kThreads, 0, stream>>>(cp);
    launch_check("compact kernel launch");
  }
  S.last = SelectionView{S.idx, S.counts, batch, units, cap, shared};
  return S.last;
}

}  // namespace adamas::cuda
