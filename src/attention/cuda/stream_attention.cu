// v8: persistent select + attend (NOTES.md, "v8"). One launch of occupancy x SMs blocks takes work items from a
// global counter: item = (row, chunk of tokens), rows = (sequence, query head) in row-major order. Per item a block
// streams the chunk's codes (cp.async, the next item's in flight while this one is computed), encodes the row's
// query, writes exact u16 L1 distances to L2-resident scratch and adds a shared histogram of the middle into the row's
// global histogram. The block that completes a row's last chunk (arrival counter) does the row's tail at once: the
// cut-off from the row histogram (the CPU's rule), a one-block ordered compaction of the distances into the
// workspace's indices, then (decode) the attention over the selected K/V rows. Rows finish one after another while
// later rows still stream, so only the last rows' tails are exposed. No block waits for another (no co-residency
// needed); counters, histograms and arrival counts are left at zero by each launch, so nothing is cleared between
// launches.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "attention/cuda/common.cuh"
#include "attention/cuda/launch.h"
#include "attention/cuda/stream_attention.h"

namespace adamas::cuda::detail {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kPieceRows = 32;          // attention: selected rows per cp.async stage
constexpr int kMaxCap = 4096;           // budget bound (the selected indices live in shared memory)
constexpr int kDefaultChunkBytes = 32768;  // codes per item (1024 tokens at d = 128)
constexpr int kCompactRound = kThreads * 8;  // tokens per compaction round (16 bytes of distances per thread)
constexpr int kCompactRounds = 8;            // rounds per batch of loads in flight

struct StreamParams {
  BatchDesc bd;
  const float* q;  // [batch][n_heads][D]
  int n_heads, group;
  const Thr* qthr;  // n_heads entries, or null
  Thr cfg_thr;
  float hscale;  // 1 / sqrt(D), the Hadamard scale
  float qscale;  // attention scale * log2(e)
  int budget, sink, window, bins;
  int chunk;  // tokens per item: a multiple of 256
  int item_base[kMaxBatch + 1];  // first item of each sequence (total for the unused entries)
  int total_items;
  int prefetch;  // L2 prefetch of the selected K/V rows during the compaction
  int compact_warp;  // one-warp compaction (ADAMAS_CUDA_STREAM_COMPACT=warp)
  int fence_all;     // every thread fences before a chunk's arrival (1), or thread 0 after the block barrier (0:
                     // the cooperative-groups grid-sync pattern; ADAMAS_CUDA_STREAM_FENCE=one|all)
  uint16_t* dist;  // [batch][n_heads][ld]
  int64_t ld;
  uint32_t* hist;      // [batch][n_heads][bins], zero between launches
  uint32_t* row_done;  // [batch][n_heads], zero between launches
  uint32_t* ctr;       // [2]: items handed out, blocks exited; zero between launches
  int32_t* idx;  // [batch][n_heads][cap]
  int64_t cap;
  int32_t* counts;  // [batch][n_heads]
  float* out;  // [batch][n_heads][D] (decode) or null
  int32_t* debug;  // tests (ADAMAS_CUDA_STREAM_DEBUG): per row cut, skip, need, s0, tail, middle count, kept, ties
};

struct Item {
  int id, b, h, c;  // id < 0: none left
};

__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

template <int D>
constexpr int code_bytes() { return D / 4; }

// Dynamic shared memory: [2][chunk][D/4] code stages, [2][D] query stages, (decode) [2][kPieceRows][D] K and V
// stages and [cap] selected indices, then [bins] histogram.
template <int D, class T, bool ATTEND>
struct Layout {
  __host__ __device__ static size_t codes(int chunk) { return size_t(2) * chunk * code_bytes<D>(); }
  __host__ __device__ static size_t qst() { return size_t(2) * D * 4; }
  __host__ __device__ static size_t kv() { return ATTEND ? size_t(2) * 2 * kPieceRows * D * sizeof(T) : 0; }
  __host__ __device__ static size_t idx(int64_t cap) { return ATTEND ? size_t(cap) * 4 : 0; }
  __host__ __device__ static size_t total(int chunk, int64_t cap, int bins) {
    return codes(chunk) + qst() + kv() + (idx(cap) + 15) / 16 * 16 + size_t(bins) * 4;
  }
};

// Tokens [0, s0) and [tail, n) are forced; the middle [s0, tail) competes (the CPU's rule).
__device__ __forceinline__ void forced_range(int64_t n, int sink, int window, int64_t& s0, int64_t& tail) {
  s0 = min(int64_t(sink), n);
  tail = max(s0, n - int64_t(max(window, 1)));
}

// ---- attention of one query head over rows sel[0..cnt) of its KV head (one block) ------------------------------
// 2-stage cp.async pipeline of kPieceRows K and V rows; scores by D/8 lanes per row, online softmax by warp 0, V
// accumulated per thread over 8 columns, row groups reduced through shared memory at the end.
template <int D, class T>
__device__ void attend_rows(const StreamParams& p, int b, int h, int cnt, const int32_t* sel, T* kv_s) {
  constexpr int LPR = D / 8, RPW = 32 / LPR, U = kPieceRows / (kWarps * RPW), NRG = kThreads / LPR;
  constexpr int VR = kPieceRows / NRG, PPR = D / 8;
  static_assert(U >= 1 && VR >= 1, "piece shape");
  static_assert(size_t(NRG) * D * 4 <= size_t(2) * 2 * kPieceRows * D * sizeof(T), "reduction aliases the stages");
  __shared__ float s_p[kPieceRows];
  __shared__ float s_m, s_l, s_alpha;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const SeqDesc& sq = p.bd.seq[b];
  const int kvh = h / p.group;
  const T* K = static_cast<const T*>(sq.k) + kvh * sq.k_head;
  const T* V = static_cast<const T*>(sq.v) + kvh * sq.v_head;
  T* Ks = kv_s;                                  // [2][kPieceRows][D]
  T* Vs = kv_s + size_t(2) * kPieceRows * D;     // [2][kPieceRows][D]
  const int pieces = (cnt + kPieceRows - 1) / kPieceRows;
  auto issue = [&](int pc) {
    const int st = pc & 1;
    for (int i = tid; i < kPieceRows * PPR; i += kThreads) {
      const int lr = i / PPR, part = i % PPR, r = pc * kPieceRows + lr;
      const bool valid = r < cnt;
      const int64_t row = valid && uint32_t(sel[r]) < uint32_t(sq.n) ? int64_t(sel[r]) : 0;  // memory-safe
      cp_async16(Ks + (size_t(st) * kPieceRows + lr) * D + part * 8, K + row * sq.k_tok + part * 8, valid);
      cp_async16(Vs + (size_t(st) * kPieceRows + lr) * D + part * 8, V + row * sq.v_tok + part * 8, valid);
    }
  };
  const int cl = lane % LPR, sub = lane / LPR, rg = tid / LPR;
  float qf[8];
  {
    const float* qr = p.q + (int64_t(b) * p.n_heads + h) * D + cl * 8;
    const float4 a = *reinterpret_cast<const float4*>(qr), c = *reinterpret_cast<const float4*>(qr + 4);
    qf[0] = a.x, qf[1] = a.y, qf[2] = a.z, qf[3] = a.w, qf[4] = c.x, qf[5] = c.y, qf[6] = c.z, qf[7] = c.w;
#pragma unroll
    for (int i = 0; i < 8; ++i) qf[i] *= p.qscale;
  }
  if (tid == 0) s_m = -INFINITY, s_l = 0.0f;
  float acc[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = 0.0f;
  issue(0);
  cp_async_commit();
  for (int pc = 0; pc < pieces; ++pc) {
    if (pc + 1 < pieces) issue(pc + 1);
    cp_async_commit();
    cp_async_wait<1>();
    cta_sync();
    const int st = pc & 1;
    const T* kt = Ks + size_t(st) * kPieceRows * D;
    const T* vt = Vs + size_t(st) * kPieceRows * D;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int lr = u * (kWarps * RPW) + warp * RPW + sub;
      float kf[8];
      cvt8<T>(*reinterpret_cast<const uint4*>(kt + lr * D + cl * 8), kf);
      float d = 0.0f;
#pragma unroll
      for (int i = 0; i < 8; ++i) d = fmaf(qf[i], kf[i], d);
#pragma unroll
      for (int o = LPR / 2; o > 0; o /= 2) d += __shfl_xor_sync(0xffffffffu, d, o);
      if (cl == 0) s_p[lr] = pc * kPieceRows + lr < cnt ? d : -INFINITY;
    }
    cta_sync();
    if (warp == 0) {  // online softmax over the piece (kPieceRows == 32: one score per lane)
      const float v = s_p[lane];
      float mx = v;
#pragma unroll
      for (int o = 16; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_old = s_m, m_new = fmaxf(m_old, mx);  // the piece holds at least one row: m_new is finite
      const float alpha = exp2f(m_old - m_new), e = exp2f(v - m_new);
      float sum = e;
#pragma unroll
      for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      s_p[lane] = e;
      __syncwarp();
      if (lane == 0) s_l = s_l * alpha + sum, s_m = m_new, s_alpha = alpha;
    }
    cta_sync();
    const float a = s_alpha;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] *= a;
#pragma unroll
    for (int k = 0; k < VR; ++k) {
      const int lr = rg + k * NRG;
      float vf[8];
      cvt8<T>(*reinterpret_cast<const uint4*>(vt + lr * D + cl * 8), vf);
      const float w = s_p[lr];
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] = fmaf(w, vf[i], acc[i]);
    }
    cta_sync();
  }
  cp_async_wait<0>();
  cta_sync();
  float* red = reinterpret_cast<float*>(kv_s);  // [NRG][D]
#pragma unroll
  for (int i = 0; i < 8; ++i) red[rg * D + cl * 8 + i] = acc[i];
  cta_sync();
  if (tid < D) {
    float v = 0.0f;
#pragma unroll 8
    for (int i = 0; i < NRG; ++i) v += red[i * D + tid];
    p.out[(int64_t(b) * p.n_heads + h) * D + tid] = v / s_l;
  }
  cta_sync();
}

// ---- the tail of a row: cut-off, compaction (one block) ----------------------------------------------------------
// Cut-off from the row histogram (global, complete): the first bin where the middle's cumulative count reaches `need`
// (need == 0: bin 0, none of its ties); the oldest `skip` ties at the cut are dropped. Clears the row histogram and
// arrival count for the next launch. hs: the block's (zero) shared histogram, zero again on return.
__device__ void row_cut(uint32_t* gh, uint32_t* done, int bins, int64_t need, uint32_t* hs, int* cut, int* skip,
                        int32_t* dbg) {
  __shared__ uint32_t s_wsum[kWarps];
  __shared__ int s_cut, s_skip;
  const int tid = threadIdx.x;
  for (int i = tid; i < bins; i += kThreads) {
    hs[i] = __ldcg(gh + i);
    gh[i] = 0;
  }
  if (tid == 0) *done = 0;
  if (dbg && tid == 0) dbg[3] = 0;  // tests: slot 8 of the row, the compaction's sum of distances
  cta_sync();
  const int seg = (bins + kThreads - 1) / kThreads, lo = min(bins, tid * seg), hi = min(bins, lo + seg);
  uint32_t mine = 0;
  for (int i = lo; i < hi; ++i) mine += hs[i];
  uint32_t total;  // the middle's size (tests)
  const uint32_t before = block_exclusive_scan<kThreads>(mine, s_wsum, total);
  if ((int64_t(before) < need && int64_t(before) + mine >= need) || (need == 0 && tid == 0)) {
    int64_t c = before;
    int found = -1, fskip = 0;
    for (int i = lo; i < hi; ++i) {
      const uint32_t v = hs[i];
      if (found < 0 && c + v >= need) found = i, fskip = int(v) - int(need - c);
      c += v;
    }
    s_cut = found, s_skip = fskip;
  }
  cta_sync();
  *cut = s_cut, *skip = s_skip;
  if (dbg && tid == 0) *dbg = int32_t(total);
  for (int i = tid; i < bins; i += kThreads) hs[i] = 0;
  cta_sync();
}

// Ordered compaction of a row of n tokens (distances drow, 16-byte aligned, readable up to a multiple of 8): kept
// tokens (forced, or middle below the cut) and the ties past the oldest `skip` go to their ranks, increasing. Rounds
// of 8 tokens per thread (2048 per block), kCompactRounds rounds of loads in flight, one pair of block barriers per
// batch of rounds: warp scans of each round's counts, then each thread adds the earlier rounds' and warps' totals.
template <int D, class T, bool ATTEND>
__device__ void compact_row(const StreamParams& p, const uint16_t* drow, int64_t n, int64_t s0, int64_t tail, int cut,
                            uint32_t skip, int32_t* out, int32_t* s_idx, const T* K, int64_t k_tok, const T* V,
                            int64_t v_tok, int64_t dbg_row) {
  __shared__ uint32_t s_ws[kCompactRounds][kWarps];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  uint32_t a_run = 0, e_run = 0;
  auto place = [&](uint32_t pos, int64_t t) {
    if (pos >= uint32_t(p.budget)) return;  // cannot happen with a consistent histogram; guards shared memory
    out[pos] = int32_t(t);
    if constexpr (ATTEND) {
      s_idx[pos] = int32_t(t);
      if (p.prefetch) {  // the row's K and V lines into L2 while the compaction goes on (the attention gathers them)
        const char* kr = reinterpret_cast<const char*>(K + t * k_tok);
        const char* vr = reinterpret_cast<const char*>(V + t * v_tok);
#pragma unroll
        for (int o = 0; o < int(D * sizeof(T)); o += 128) prefetch_l2(kr + o), prefetch_l2(vr + o);
      }
    }
  };
  for (int64_t base = 0; base < n; base += int64_t(kCompactRound) * kCompactRounds) {
    uint4 v[kCompactRounds];
#pragma unroll
    for (int j = 0; j < kCompactRounds; ++j) {
      const int64_t t = base + int64_t(j) * kCompactRound + tid * 8;
      v[j] = t < n ? __ldcg(reinterpret_cast<const uint4*>(drow + t)) : make_uint4(0, 0, 0, 0);
    }
    if (p.debug) {  // tests: the distances as this pass sees them (their sum, against the CPU's)
      uint32_t sum = 0;
#pragma unroll
      for (int j = 0; j < kCompactRounds; ++j) {
        const int64_t t = base + int64_t(j) * kCompactRound + tid * 8;
        const uint32_t w[4] = {v[j].x, v[j].y, v[j].z, v[j].w};
        for (int k = 0; k < 8; ++k) sum += t + k < n ? (w[k / 2] >> (16 * (k & 1))) & 0xffffu : 0u;
      }
      atomicAdd(reinterpret_cast<uint32_t*>(p.debug + dbg_row * 12 + 8), sum);
    }
    uint32_t kinds[kCompactRounds], cnt[kCompactRounds], incl[kCompactRounds];
#pragma unroll
    for (int j = 0; j < kCompactRounds; ++j) {
      const int64_t t = base + int64_t(j) * kCompactRound + tid * 8;
      const uint32_t w[4] = {v[j].x, v[j].y, v[j].z, v[j].w};
      uint32_t km, tm;
      token_kinds(w, t, n, s0, tail, cut, km, tm);
      kinds[j] = km | (tm << 8);
      cnt[j] = uint32_t(__popc(km)) | (uint32_t(__popc(tm)) << 16);
      uint32_t x = cnt[j];
#pragma unroll
      for (int o = 1; o < 32; o *= 2) {
        const uint32_t y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
      }
      incl[j] = x;
    }
    if (lane == 31) {
#pragma unroll
      for (int j = 0; j < kCompactRounds; ++j) s_ws[j][warp] = incl[j];
    }
    cta_sync();
    uint32_t run = 0;  // (kept | ties << 16) of the batch's earlier rounds: <= 16384 each, no carry between halves
#pragma unroll
    for (int j = 0; j < kCompactRounds; ++j) {
      uint32_t before = 0, tot = 0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const uint32_t s = s_ws[j][w];
        tot += s;
        before += w < warp ? s : 0u;
      }
      const uint32_t ex = run + before + incl[j] - cnt[j];
      run += tot;
      uint32_t a = a_run + (ex & 0xffffu), e = e_run + (ex >> 16);
      const int64_t t = base + int64_t(j) * kCompactRound + tid * 8;
      for (uint32_t m = kinds[j]; m != 0;) {  // kept/tie tokens in order (bit k: kept, bit 8 + k: tie)
        const int k = __ffs(int((m | (m >> 8)) & 0xffu)) - 1;
        if (m >> k & 1u) {
          place(a + (e > skip ? e - skip : 0u), t + k);
          ++a;
        } else {
          if (e >= skip) place(a + e - skip, t + k);
          ++e;
        }
        m &= ~((1u << k) | (1u << (8 + k)));
      }
    }
    a_run += run & 0xffffu, e_run += run >> 16;
    cta_sync();
  }
  if (p.debug && tid == 0) {
    p.debug[dbg_row * 12 + 6] = int32_t(a_run), p.debug[dbg_row * 12 + 7] = int32_t(e_run);
  }
}

// The same compaction by one warp, 8 tokens per lane per step, no shared memory and no block barrier (simple and
// slow: ADAMAS_CUDA_STREAM_COMPACT=warp, a cross-check of compact_row). Returns kept and tie totals.
template <int D, class T, bool ATTEND>
__device__ void compact_row_warp(const StreamParams& p, const uint16_t* drow, int64_t n, int64_t s0, int64_t tail,
                                 int cut, uint32_t skip, int32_t* out, int32_t* s_idx, int64_t dbg_row) {
  if (threadIdx.x >= 32) return;
  const int lane = threadIdx.x;
  uint32_t a_run = 0, e_run = 0;
  for (int64_t base = 0; base < n; base += 256) {
    const int64_t t = base + lane * 8;
    const uint4 v = t < n ? __ldcg(reinterpret_cast<const uint4*>(drow + t)) : make_uint4(0, 0, 0, 0);
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
    if (p.debug) {
      uint32_t sum = 0;
      for (int k = 0; k < 8; ++k) sum += t + k < n ? (w[k / 2] >> (16 * (k & 1))) & 0xffffu : 0u;
      atomicAdd(reinterpret_cast<uint32_t*>(p.debug + dbg_row * 12 + 8), sum);
    }
    uint32_t km, tm;
    token_kinds(w, t, n, s0, tail, cut, km, tm);
    const uint32_t c = uint32_t(__popc(km)) | (uint32_t(__popc(tm)) << 16);
    uint32_t x = c;
#pragma unroll
    for (int o = 1; o < 32; o *= 2) {
      const uint32_t y = __shfl_up_sync(0xffffffffu, x, o);
      if (lane >= o) x += y;
    }
    const uint32_t tot = __shfl_sync(0xffffffffu, x, 31), ex = x - c;
    uint32_t a = a_run + (ex & 0xffffu), e = e_run + (ex >> 16);
    for (int k = 0; k < 8; ++k) {
      if (km >> k & 1u) {
        const uint32_t pos = a + (e > skip ? e - skip : 0u);
        if (pos < uint32_t(p.budget)) {
          out[pos] = int32_t(t + k);
          if constexpr (ATTEND) s_idx[pos] = int32_t(t + k);
        }
        ++a;
      } else if (tm >> k & 1u) {
        if (e >= skip && a + e - skip < uint32_t(p.budget)) {
          out[a + e - skip] = int32_t(t + k);
          if constexpr (ATTEND) s_idx[a + e - skip] = int32_t(t + k);
        }
        ++e;
      }
    }
    a_run += tot & 0xffffu, e_run += tot >> 16;
  }
  if (p.debug && lane == 0) p.debug[dbg_row * 12 + 6] = int32_t(a_run), p.debug[dbg_row * 12 + 7] = int32_t(e_run);
}

// ---- the kernel -------------------------------------------------------------------------------------------------

template <int D, class T, bool ATTEND>
__global__ void __launch_bounds__(kThreads, 2) stream_kernel(const __grid_constant__ StreamParams p) {
  constexpr int CB = code_bytes<D>();  // code bytes per token
  constexpr int PPT = CB / 16;         // 16-byte pieces per token
  constexpr int LPT = D / 64;          // lanes per token in the distance pass (16 bytes each)
  constexpr int TPI = kThreads / LPT;  // tokens per pass
  constexpr int W = D / 16;            // code words per query
  using L = Layout<D, T, ATTEND>;
  extern __shared__ __align__(16) unsigned char dsm[];
  const int chunk = p.chunk;
  uint8_t* codes_s = dsm;
  float* q_s = reinterpret_cast<float*>(dsm + L::codes(chunk));
  T* kv_s = reinterpret_cast<T*>(dsm + L::codes(chunk) + L::qst());
  int32_t* sidx = reinterpret_cast<int32_t*>(dsm + L::codes(chunk) + L::qst() + L::kv());
  uint32_t* hs = reinterpret_cast<uint32_t*>(dsm + L::codes(chunk) + L::qst() + L::kv() + (L::idx(p.cap) + 15) / 16 * 16);
  __shared__ Item s_item[2];
  __shared__ uint32_t s_qw[W];
  __shared__ int s_last;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  auto claim = [&](int st) {  // thread 0
    const int id = int(atomicAdd(p.ctr, 1u));
    Item it{-1, 0, 0, 0};
    if (id < p.total_items) {
      int b = 0;
      while (id >= p.item_base[b + 1]) ++b;
      const int64_t n = p.bd.seq[b].n;
      const int per = n <= p.budget ? 1 : int((n + chunk - 1) / chunk);
      const int rel = id - p.item_base[b];
      it = Item{id, b, rel / per, rel % per};
    }
    s_item[st] = it;
  };
  auto issue = [&](int st) {  // every thread: its share of the item's codes and (warp 0) the query row
    const Item it = s_item[st];
    if (it.id < 0) return;
    const SeqDesc& sq = p.bd.seq[it.b];
    if (sq.n <= p.budget) return;  // keep-all row: nothing to stream
    const int64_t t0 = int64_t(it.c) * chunk;
    const uint8_t* src = sq.codes + (it.h / p.group) * sq.c_head + t0 * sq.c_tok;
    uint8_t* dst = codes_s + size_t(st) * chunk * CB;
    for (int i = tid; i < chunk * PPT; i += kThreads) {
      const int tok = i / PPT, part = i % PPT;
      const bool valid = t0 + tok < sq.n;
      cp_async16(dst + tok * CB + part * 16, valid ? src + tok * sq.c_tok + part * 16 : src, valid);
    }
    if (warp == 0 && lane < D / 4)
      cp_async16(q_s + st * D + lane * 4, p.q + (int64_t(it.b) * p.n_heads + it.h) * D + lane * 4, true);
  };

  for (int i = tid; i < p.bins; i += kThreads) hs[i] = 0;
  if (tid == 0) claim(0);
  cta_sync();
  issue(0);
  cp_async_commit();
  for (int k = 0;; ++k) {
    const int st = k & 1;
    if (tid == 0) claim(st ^ 1);
    cta_sync();  // the claim is visible; every thread is done with stage st ^ 1 (item k - 1)
    issue(st ^ 1);
    cp_async_commit();
    const Item it = s_item[st];
    if (it.id < 0) break;  // claims come in order: none left for this block
    cp_async_wait<1>();
    cta_sync();  // item k's codes and query have landed for every thread
    const SeqDesc& sq = p.bd.seq[it.b];
    const int64_t n = sq.n;
    const int64_t row = int64_t(it.b) * p.n_heads + it.h;
    int32_t* out_idx = p.idx + row * p.cap;
    if (n <= p.budget) {  // keep-all row (one item): indices 0..n-1, attention over all of them
      for (int i = tid; i < n; i += kThreads) {
        out_idx[i] = i;
        if constexpr (ATTEND) sidx[i] = i;
      }
      if (tid == 0) p.counts[row] = int32_t(n);
      if constexpr (ATTEND) {
        cta_sync();
        attend_rows<D, T>(p, it.b, it.h, int(n), sidx, kv_s);
      }
      continue;
    }
    // Distance item: the row's query code (warp 0), then the chunk's distances and middle histogram.
    if (warp == 0) {
      float x[D / 32];
      load_lane<D, float>(q_s + st * D, x);
      const Thr th = p.qthr ? p.qthr[it.h] : p.cfg_thr;
      warp_hadamard<D>(x, p.hscale);
      warp_encode_store<D>(x, th, reinterpret_cast<uint8_t*>(s_qw));
    }
    cta_sync();
    const int part = tid % LPT;
    uint32_t wq[4], pq[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) wq[i] = s_qw[part * 4 + i], pq[i] = therm_pack(wq[i]);
    int64_t s0, tail;
    forced_range(n, p.sink, p.window, s0, tail);
    const int64_t t0 = int64_t(it.c) * chunk;
    const int len = int(min(int64_t(chunk), n - t0));
    const int mid_lo = int(max(int64_t(0), min(int64_t(len), s0 - t0)));
    const int mid_hi = int(max(int64_t(0), min(int64_t(len), tail - t0)));
    uint16_t* drow = p.dist + row * p.ld;
    const uint8_t* cs = codes_s + size_t(st) * chunk * CB;
    for (int j = 0; j < chunk / TPI; ++j) {
      const int lt = j * TPI + tid / LPT;
      const uint4 v = *reinterpret_cast<const uint4*>(cs + lt * CB + part * 16);
      int d = word_l1(pq[0], wq[0], therm_pack(v.x), v.x) + word_l1(pq[1], wq[1], therm_pack(v.y), v.y) +
              word_l1(pq[2], wq[2], therm_pack(v.z), v.z) + word_l1(pq[3], wq[3], therm_pack(v.w), v.w);
#pragma unroll
      for (int o = 1; o < LPT; o *= 2) d += __shfl_xor_sync(0xffffffffu, d, o);
      if (part == 0 && lt < len) {
        drow[t0 + lt] = uint16_t(d);
        if (lt >= mid_lo && lt < mid_hi) atomicAdd(&hs[d], 1u);
      }
    }
    cta_sync();
    uint32_t* gh = p.hist + row * p.bins;
    for (int i = tid; i < p.bins; i += kThreads) {
      const uint32_t v = hs[i];
      if (v) {
        atomicAdd(gh + i, v);
        hs[i] = 0;
      }
    }
    // Arrival: every thread's distances and histogram adds visible GPU-wide before the count (a fence by thread 0
    // alone after the barrier let the tail read stale distances: run 1).
    if (p.fence_all) __threadfence();
    cta_sync();
    if (tid == 0) {
      if (!p.fence_all) __threadfence();  // after the barrier: cumulative over the block's writes
      const int per = int((n + chunk - 1) / chunk);
      s_last = atomicAdd(p.row_done + row, 1u) == uint32_t(per - 1);
      if (s_last) __threadfence();
    }
    cta_sync();
    if (!s_last) continue;
    // The row's tail (this block completed its last chunk).
    int cut, skip;
    const int64_t need = int64_t(p.budget) - s0 - (n - tail);  // >= 0, < the middle's size
    row_cut(gh, p.row_done + row, p.bins, need, hs, &cut, &skip, p.debug ? p.debug + row * 12 + 5 : nullptr);
    if (p.debug && tid == 0) {
      int32_t* dg = p.debug + row * 12;
      dg[0] = cut, dg[1] = skip, dg[2] = int32_t(need), dg[3] = int32_t(s0), dg[4] = int32_t(tail);
    }
    const int kvh = it.h / p.group;
    if (p.compact_warp) {
      compact_row_warp<D, T, ATTEND>(p, drow, n, s0, tail, cut, uint32_t(skip), out_idx, sidx, row);
      cta_sync();
    } else {
      compact_row<D, T, ATTEND>(p, drow, n, s0, tail, cut, uint32_t(skip), out_idx, sidx,
                                static_cast<const T*>(sq.k) + kvh * sq.k_head, sq.k_tok,
                                static_cast<const T*>(sq.v) + kvh * sq.v_head, sq.v_tok, row);
    }
    if (tid == 0) p.counts[row] = p.budget;
    if constexpr (ATTEND) {
      cta_sync();
      attend_rows<D, T>(p, it.b, it.h, p.budget, sidx, kv_s);
    }
  }
  cp_async_wait<0>();
  if (tid == 0) {  // the last block to leave resets the hand-out counters for the next launch
    __threadfence();
    if (atomicAdd(p.ctr + 1, 1u) == gridDim.x - 1) {
      atomicExch(p.ctr, 0u);
      atomicExch(p.ctr + 1, 0u);
    }
  }
}

// ---- host -------------------------------------------------------------------------------------------------------

int env_int(const char* name, int fallback) {
  const char* e = std::getenv(name);
  return e && *e ? std::atoi(e) : fallback;
}

template <int D, class T, bool ATTEND>
int occupancy(size_t smem) {
  static std::mutex mu;
  static std::map<size_t, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  void (*kernel)(StreamParams) = stream_kernel<D, T, ATTEND>;
  // Set for every launch: the attribute is the kernel's, and a smaller size set by another call would make this
  // launch fail (run 5: cudaErrorInvalidValue after a launch with a smaller budget).
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
             "stream kernel shared memory attribute");
  if (auto it = cache.find(smem); it != cache.end()) return it->second;
  int occ = 0;
  check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kernel, kThreads, smem), "stream kernel occupancy");
  cache[smem] = occ;
  return occ;
}

template <int D, class T, bool ATTEND>
void launch(const StreamParams& p, int sms, cudaStream_t stream) {
  const size_t smem = Layout<D, T, ATTEND>::total(p.chunk, p.cap, p.bins);
  const int occ = occupancy<D, T, ATTEND>(smem);
  CUDA_REQUIRE(occ >= 1, ErrorKind::unsupported, "cuda stream attention: ", smem, " bytes of shared memory per block do not fit");
  int grid = int(std::min<int64_t>(int64_t(occ) * sms, p.total_items));
  if (const int g = env_int("ADAMAS_CUDA_STREAM_GRID", 0); g > 0) grid = std::min(grid, g);  // tests: fewer blocks
  if (launch_verbose()) {
    char line[256];
    std::snprintf(line, sizeof line, "[adamas] stream %s D=%d: grid %d (%d/SM), %d items of %d tokens, smem %zu B\n",
                  ATTEND ? "decode" : "select", D, grid, occ, p.total_items, p.chunk, smem);
    verbose_print(line);
  }
  stream_kernel<D, T, ATTEND><<<grid, kThreads, smem, stream>>>(p);
  launch_check("stream kernel launch");
}

template <int D>
void launch_d(const StreamParams& p, DType dt, bool attend, int sms, cudaStream_t stream) {
  if (!attend) return launch<D, __half, false>(p, sms, stream);
  if (dt == DType::f16) return launch<D, __half, true>(p, sms, stream);
  launch<D, __nv_bfloat16, true>(p, sms, stream);
}

bool supported(const BatchInputs& in, const AttentionConfig& config) {
  if (in.seqs.empty() || in.q == nullptr || config.method != Method::adamas) return false;
  if (config.group != GroupSelection::per_head || config.budget > kMaxCap) return false;
  const HeadsView& k0 = in.seqs[0].k;
  if (k0.dim != 64 && k0.dim != 128) return false;
  if (reinterpret_cast<uintptr_t>(in.q) % 16 != 0) return false;
  for (const auto& s : in.seqs) {
    if (s.codes.data == nullptr || reinterpret_cast<uintptr_t>(s.codes.data) % 16 != 0 ||
        s.codes.token_stride % 16 != 0 || s.codes.head_stride % 16 != 0)
      return false;
    if (s.k.tokens >= (int64_t(1) << 23)) return false;
  }
  return true;
}

}  // namespace

bool stream_selected(const BatchInputs& in, const AttentionConfig& config) {
  const char* e = std::getenv("ADAMAS_CUDA_SELECT");
  if (e == nullptr || std::strcmp(e, "stream") != 0) return false;  // default: not yet (NOTES.md, v8)
  return supported(in, config);
}

void stream_attention(const BatchInputs& in, const AttentionConfig& config, Workspace& ws, float* out,
                      cudaStream_t stream) {
  const char* where = "cuda stream attention";
  validate_config(config);
  const auto chunks = make_batches(in, true, where);
  CUDA_REQUIRE(supported(in, config), ErrorKind::unsupported, where, ": this call is not supported by the stream kernel");
  const HeadsView& k0 = in.seqs[0].k;
  const int D = int(k0.dim), n_heads = int(in.n_heads), kvh = int(k0.heads);
  const int64_t batch = int64_t(in.seqs.size());
  int64_t n_max = 0;
  for (const auto& s : in.seqs) n_max = std::max(n_max, s.k.tokens);
  auto& S = ws.state();
  const int64_t cap = std::min<int64_t>(config.budget, n_max);
  const int64_t ld = (n_max + 7) / 8 * 8;
  const int bins = 3 * D + 1;
  const int64_t rows_chunk = std::min<int64_t>(batch, kMaxBatch) * n_heads;
  ensure(&S.idx, &S.idx_bytes, size_t(batch * n_heads * cap) * 4, false);
  ensure(&S.counts, &S.counts_bytes, size_t(batch * n_heads) * 4, false);
  ensure(&S.dist, &S.dist_bytes, size_t(rows_chunk * ld) * 2, false);
  ensure(&S.stream_hist, &S.stream_hist_bytes, size_t(rows_chunk * bins) * 4, true);
  ensure(&S.stream_done, &S.stream_done_bytes, size_t(rows_chunk) * 4, true);
  ensure(&S.stream_ctr, &S.stream_ctr_bytes, 8, true);
  int chunk = env_int("ADAMAS_CUDA_STREAM_CHUNK", kDefaultChunkBytes / (D / 4));
  CUDA_REQUIRE(chunk >= 256 && chunk % 256 == 0 && chunk <= 8192, ErrorKind::invalid_argument, where, ": ADAMAS_CUDA_STREAM_CHUNK=", chunk, " (a multiple of 256 tokens, at most 8192)");
  const float scale = 1.0f / std::sqrt(float(D));
  for (size_t c = 0; c < chunks.size(); ++c) {
    const int64_t b0 = int64_t(c) * kMaxBatch;
    StreamParams p{};
    p.bd = chunks[c];
    p.q = in.q + b0 * n_heads * D;
    p.n_heads = n_heads, p.group = n_heads / kvh;
    p.qthr = reinterpret_cast<const Thr*>(in.query_thresholds);
    p.cfg_thr = {config.thresholds.t0, config.thresholds.t1, config.thresholds.t2};
    p.hscale = scale;
    p.qscale = scale * 1.4426950408889634f;
    p.budget = int(config.budget), p.sink = int(config.sink), p.window = int(config.window), p.bins = bins;
    p.chunk = chunk;
    int64_t items = 0;
    for (int i = 0; i < p.bd.batch; ++i) {
      p.item_base[i] = int(items);
      const int64_t n = p.bd.seq[i].n;
      items += int64_t(n_heads) * (n <= config.budget ? 1 : (n + chunk - 1) / chunk);
    }
    CUDA_REQUIRE(items < (int64_t(1) << 30), ErrorKind::unsupported, where, ": ", items, " work items");
    for (int i = p.bd.batch; i <= kMaxBatch; ++i) p.item_base[i] = int(items);
    p.total_items = int(items);
    p.prefetch = env_int("ADAMAS_CUDA_STREAM_PREFETCH", 1);
    {
      const char* f = std::getenv("ADAMAS_CUDA_STREAM_FENCE");
      CUDA_REQUIRE(!f || !*f || std::strcmp(f, "one") == 0 || std::strcmp(f, "all") == 0, ErrorKind::invalid_argument,
                   "ADAMAS_CUDA_STREAM_FENCE must be one or all, got '", f, "'");
      p.fence_all = !(f && std::strcmp(f, "one") == 0);
    }
    p.compact_warp = std::getenv("ADAMAS_CUDA_STREAM_COMPACT") && std::strcmp(std::getenv("ADAMAS_CUDA_STREAM_COMPACT"), "warp") == 0;
    p.dist = S.dist, p.ld = ld;
    p.hist = S.stream_hist, p.row_done = S.stream_done, p.ctr = S.stream_ctr;
    p.idx = S.idx + b0 * n_heads * cap, p.cap = cap;
    p.counts = S.counts + b0 * n_heads;
    p.out = out ? out + b0 * n_heads * D : nullptr;
    if (std::getenv("ADAMAS_CUDA_STREAM_DEBUG")) {
      ensure(&S.stream_debug, &S.stream_debug_bytes, size_t(rows_chunk) * 48, false);
      p.debug = S.stream_debug;
    }
    if (D == 64) launch_d<64>(p, k0.dtype, out != nullptr, S.sms, stream);
    else launch_d<128>(p, k0.dtype, out != nullptr, S.sms, stream);
  }
  S.last = SelectionView{S.idx, S.counts, batch, n_heads, cap, false};
  S.stream_ld = ld;
}

StreamScratch stream_scratch(const Workspace& ws) {
  return {ws.state().dist, ws.state().stream_ld, ws.state().stream_debug};
}

}  // namespace adamas::cuda::detail
