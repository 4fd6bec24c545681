// The distance pass of the selection (internal; select.cu's kernels, and any kernel that selects in-block): exact L1
// between the packed 2-bit codes of a block's keys and the codes of its query head(s), into shared memory, with a
// shared histogram of the free middle. Two implementations of the same function:
//  - integer units: per head the XOR form of xor_l1.h (v10; v4-v9 packed thermometer words), the group sum over
//    thermometer bit planes (v6); used for MHA (G = 1) and G = 8;
//  - v8, 1-bit tensor cores (G = 2 and 4): the thermometer AND-popcount on mma.sync .b1 (below).
// Both give the same u16 distances (exact integers), so the selection does not depend on the path.
#pragma once

#include "attention/cuda/common.cuh"
#include "attention/cuda/xor_l1.h"

namespace adamas::cuda::detail {

constexpr int kDistThreads = 256;  // threads of a block running distance_pass

// ---- query codes ---------------------------------------------------------------------------------------------

// One warp encodes query head qh of sequence b: load, rotate, bucketize with its thresholds, store D / 4 code
// bytes at dst. P is any kernel's parameter block with q, n_heads, hscale, qthr and cfg_thr.
// In two steps (v5): load_query issues the loads, finish_query (after other loads are issued) rotates and stores.
template <int D, class P>
__device__ __forceinline__ void load_query(const P& p, int b, int qh, float (&x)[D / 32]) {
  load_lane<D, float>(p.q + (int64_t(b) * p.n_heads + qh) * D, x);
}
template <int D, class P>
__device__ __forceinline__ void finish_query(const P& p, int qh, float (&x)[D / 32], uint32_t* dst) {
  warp_hadamard<D>(x, p.hscale);
  const Thr th = p.qthr ? p.qthr[qh] : p.cfg_thr;
  warp_encode_store<D>(x, th, reinterpret_cast<uint8_t*>(dst));
}
template <int D, class P>
__device__ __forceinline__ void encode_query(const P& p, int b, int qh, uint32_t* dst) {
  float x[D / 32];
  load_query<D>(p, b, qh, x);
  finish_query<D>(p, qh, x, dst);
}


// The pass's main loop over `iters` batches of code loads held in NB (1 or 2) register buffers, batch 0 (and 1 when
// NB = 2) already requested: compute(it, buffer) after each batch lands; with one buffer the next batch is requested
// after the previous one is computed (v4-v7), with two (v8) batch it + 2 as soon as batch it is computed, so one batch
// is always in flight while another is computed.
template <int NB, class Buf, class Load, class Compute>
__device__ __forceinline__ void stream_batches(int iters, Buf (&buf)[NB], Load&& load, Compute&& compute) {
  static_assert(NB == 1 || NB == 2, "one or two buffers");
  if constexpr (NB == 2) {
    for (int it = 0; it < iters; it += 2) {
      compute(it, buf[0]);
      if (it + 2 < iters) load(it + 2, buf[0]);
      if (it + 1 < iters) {
        compute(it + 1, buf[1]);
        if (it + 3 < iters) load(it + 3, buf[1]);
      }
    }
  } else {
    for (int it = 0; it < iters; ++it) {
      if (it > 0) load(it, buf[0]);
      compute(it, buf[0]);
    }
  }
}

// ---- integer units (v4-v7) ------------------------------------------------------------------------------------

// One lane's share of a key (4 code words, 64 codes) for the L1 against a query's words, both sides prepared once:
// p = thermometer-packed words (bits c>=1, c>=3), y = the middle bits (c>=2) of two words merged into one word
// (word 0's odd bits, word 1's shifted to the even ones). The 6 words' bit counts sum to the L1 (v4; v3 counted 8).
struct LaneCodes {
  uint32_t p[4], y[2];
};
__device__ __forceinline__ uint32_t merge_mid(uint32_t w0, uint32_t w1) {
  return (w0 & 0xAAAAAAAAu) | ((w1 & 0xAAAAAAAAu) >> 1);
}
__device__ __forceinline__ LaneCodes lane_codes(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3) {
  LaneCodes c;
  c.p[0] = therm_pack(w0), c.p[1] = therm_pack(w1), c.p[2] = therm_pack(w2), c.p[3] = therm_pack(w3);
  c.y[0] = merge_mid(w0, w1), c.y[1] = merge_mid(w2, w3);
  return c;
}
// L1 over the lane's 64 codes: the 6 difference words go through two carry-save adders (xor3 and majority: one
// LOP3 each) into two words of weight 1 and two of weight 2, so 4 POPC instead of v3's 8. POPC issues at 16/clk/SM
// and bounded the distance pass of GQA (4 query heads per key).
__device__ __forceinline__ int lane_l1(const LaneCodes& q, const LaneCodes& k) {
  const uint32_t x0 = q.p[0] ^ k.p[0], x1 = q.p[1] ^ k.p[1], x2 = q.p[2] ^ k.p[2], x3 = q.p[3] ^ k.p[3];
  const uint32_t y0 = q.y[0] ^ k.y[0], y1 = q.y[1] ^ k.y[1];
  const uint32_t s1 = x0 ^ x1 ^ x2, c1 = (x0 & x1) | (x2 & (x0 ^ x1));
  const uint32_t s2 = x3 ^ y0 ^ y1, c2 = (x3 & y0) | (y1 & (x3 ^ y0));
  return __popc(s1) + __popc(s2) + 2 * (__popc(c1) + __popc(c2));
}

// v6, shared_sum: the group's summed L1 in one pass over bit planes instead of G per-head L1s. Per thermometer bit of
// the lane's 6 words (the layout of LaneCodes), the G query heads differ from the key's bit in m heads (key bit 1:
// the heads whose bit is 0) or n heads (key bit 0: the heads whose bit is 1). n and m (0..G) are kept as NB bit planes
// per word, made once per block; per key and plane: 6 selects (one LOP3 each), two carry-save adders, 4 POPC. G = 4:
// 3 planes, ~53 instructions per lane and key instead of ~79 (4 x lane_l1 + 4 shuffles); G = 8: 4 planes vs 8 heads.
template <int G>
struct GroupPlanes {
  static constexpr int NB = G == 2 ? 2 : G == 4 ? 3 : 4;  // bits of 0..G
  uint32_t n[6][NB], m[6][NB];
};
__device__ __forceinline__ uint32_t lane_word(const LaneCodes& c, int w) { return w < 4 ? c.p[w] : c.y[w - 4]; }
template <int G>
__device__ __forceinline__ GroupPlanes<G> group_planes(const LaneCodes (&qc)[G]) {
  constexpr int NB = GroupPlanes<G>::NB;
  GroupPlanes<G> gp;
#pragma unroll
  for (int w = 0; w < 6; ++w) {
#pragma unroll
    for (int b = 0; b < NB; ++b) gp.n[w][b] = 0, gp.m[w][b] = 0;
#pragma unroll
    for (int g = 0; g < G; ++g) {  // bit-sliced increments: n += bit, m += !bit
      uint32_t x = lane_word(qc[g], w), y = ~x;
#pragma unroll
      for (int b = 0; b < NB; ++b) {
        const uint32_t cx = gp.n[w][b] & x, cy = gp.m[w][b] & y;
        gp.n[w][b] ^= x, gp.m[w][b] ^= y;
        x = cx, y = cy;
      }
    }
  }
  return gp;
}
template <int G>
__device__ __forceinline__ int lane_group_l1(const GroupPlanes<G>& gp, const LaneCodes& k) {
  constexpr int NB = GroupPlanes<G>::NB;
  int d = 0;
#pragma unroll
  for (int b = 0; b < NB; ++b) {
    uint32_t x[6];
#pragma unroll
    for (int w = 0; w < 6; ++w) {
      const uint32_t kw = lane_word(k, w);
      x[w] = (kw & gp.m[w][b]) | (~kw & gp.n[w][b]);
    }
    const uint32_t s1 = x[0] ^ x[1] ^ x[2], c1 = (x[0] & x[1]) | (x[2] & (x[0] ^ x[1]));
    const uint32_t s2 = x[3] ^ x[4] ^ x[5], c2 = (x[3] & x[4]) | (x[5] & (x[3] ^ x[4]));
    d += (__popc(s1) + __popc(s2) + 2 * (__popc(c1) + __popc(c2))) << b;
  }
  return d;
}

// Distance pass of one block (NT threads) of sequence b (integer units; v4-v7): the G query heads' codes are made (into qw_s, [G][D/16] words) and
// hist[R][bins] cleared while the first code loads are in flight; then every token of [t_begin, t_begin + len) of
// KV head `kvh` gets its u16 distance per row in dist[R][tmax] (the sum over the group when SHARED) and middle
// tokens ([s0, tail)) are counted in hist. Each lane loads 16 bytes of a key (D / 64 lanes per token), U loads in
// flight per thread; a warp covers 512 contiguous code bytes.
template <int D, int G, bool SHARED, bool DB = false, int NT = kDistThreads, class Params>
__device__ __forceinline__ void distance_pass_int(const Params& p, int b, int kvh, int64_t t_begin, int len, int64_t s0,
                                              int64_t tail, uint32_t* qw_s, uint16_t* dist, uint32_t* hist) {
  constexpr int R = SHARED ? 1 : G;
  const SeqDesc& sq = p.bd.seq[b];
  const int tmax = p.tmax, bins = p.bins, vec_codes = p.vec_codes;
  constexpr int W = D / 16;
  constexpr int LPT = D / 64;
  constexpr int U = D <= 128 ? 8 : 4;
  constexpr int TPI = NT / LPT;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int part = lane % LPT;
  const uint8_t* cbase = sq.codes + kvh * sq.c_head;
  const uint8_t* cblock = cbase + t_begin * sq.c_tok + part * 16;
  auto load = [&](int it, int u, uint4& v) {
    const int local = (it * U + u) * TPI + (warp * 32 + lane) / LPT;
    v = make_uint4(0, 0, 0, 0);
    if (local < len) {
      const uint8_t* ptr = cblock + int64_t(local) * sq.c_tok;
      if (vec_codes) {
        v = __ldg(reinterpret_cast<const uint4*>(ptr));
      } else {
        const uint32_t* w = reinterpret_cast<const uint32_t*>(ptr);
        v = make_uint4(__ldg(w), __ldg(w + 1), __ldg(w + 2), __ldg(w + 3));
      }
    }
  };
  // v5: the query's loads go out before the first code loads (v4 issued them after 8 x 16 bytes per thread of codes
  // from every block, and they queued behind those megabytes: query codes made at 3.5 us at 32K, 5 us at GQA 128K).
  float xq[D / 32];
  if (warp < G) load_query<D>(p, b, kvh * G + warp, xq);
  uint4 buf[DB ? 2 : 1][U];
  auto load_batch = [&](int it, uint4 (&bb)[U]) {
#pragma unroll
    for (int u = 0; u < U; ++u) load(it, u, bb[u]);
  };
  load_batch(0, buf[0]);  // in flight while the query codes are made
  if constexpr (DB) load_batch(1, buf[DB ? 1 : 0]);
  for (int i = tid; i < R * bins; i += NT) hist[i] = 0;
  if (warp < G) finish_query<D>(p, kvh * G + warp, xq, qw_s + warp * W);
  __syncthreads();
  ADAMAS_STAMP(p.stamps, 1);
  // Per head (v10): the XOR-form L1 (xor_l1.h), prepared on the query's side; shared: the group's bit planes.
  [[maybe_unused]] XorQuery<4> qx[SHARED ? 1 : G];
  [[maybe_unused]] GroupPlanes<SHARED ? G : 2> gp;
  if constexpr (SHARED) {
    LaneCodes qc[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const uint32_t* w = qw_s + g * W + part * 4;
      qc[g] = lane_codes(w[0], w[1], w[2], w[3]);
    }
    gp = group_planes<G>(qc);
  } else {
#pragma unroll
    for (int g = 0; g < G; ++g) qx[g] = xor_query<4>(qw_s + g * W + part * 4);
  }
  // middle tokens of this block: local indices [mid_lo, mid_hi)
  const int mid_lo = int(max(int64_t(0), min(int64_t(len), s0 - t_begin)));
  const int mid_hi = int(max(int64_t(0), min(int64_t(len), tail - t_begin)));
  const int iters = (len + U * TPI - 1) / (U * TPI);
  auto compute = [&](int it, const uint4 (&bb)[U]) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      constexpr int ND = SHARED ? 1 : G;  // shared: the group's sum in d[0]
      int d[ND];
#pragma unroll
      for (int g = 0; g < ND; ++g) {
        if constexpr (SHARED) {
          d[g] = lane_group_l1<G>(gp, lane_codes(bb[u].x, bb[u].y, bb[u].z, bb[u].w));
        } else {
          const uint32_t kw[4] = {bb[u].x, bb[u].y, bb[u].z, bb[u].w};
          d[g] = xor_l1<4>(qx[g], kw);
        }
#pragma unroll
        for (int o = 1; o < LPT; o *= 2) d[g] += __shfl_xor_sync(0xffffffffu, d[g], o);
      }
      const int local = (it * U + u) * TPI + (warp * 32 + lane) / LPT;
      if (part == 0 && local < len) {
        const bool mid = local >= mid_lo && local < mid_hi;
        if constexpr (SHARED) {
          const int sum = d[0];
          dist[local] = uint16_t(sum);
          if (mid) atomicAdd(&hist[sum], 1u);
        } else {
#pragma unroll
          for (int g = 0; g < G; ++g) {
            dist[g * tmax + local] = uint16_t(d[g]);
            if (mid) atomicAdd(&hist[g * bins + d[g]], 1u);
          }
        }
      }
    }
  };
  stream_batches(iters, buf, load_batch, compute);
}


// ---- v8: distances on the 1-bit tensor cores -------------------------------------------------------------------
// sum_i |a_i - b_i| = |q| + |k| - 2 sum_i min(a_i, b_i) (|x| = sum of the codes), and min(a, b) = sum over t = 1..3 of
// [a >= t][b >= t]: the AND-popcount of the two thermometer bit strings, which mma.sync .b1 .and.popc sums over 256
// (or 128) bits per instruction for a 16 x 8 tile (keys x query columns). On sm_90 the .and.popc form is one BMMA
// instruction; .xor.popc (the L1 directly) is emulated by ptxas (a call of ~29 instructions), so it is not used.
// The integer path spends ~17 ALU instructions per key word and query row (4 rows per key at GQA: issue-bound, ~14 of
// the ~19 us of GQA 128K's pass); here the per-row work is on the tensor core and the ALU only builds the key's
// thermometer words once (7 instructions per two code words) and writes the outputs.
//
// Thermometer words of a code word w (16 codes; bit 2i = l, bit 2i + 1 = h of code i; c >= 1 = h | l, c >= 2 = h,
// c >= 3 = h & l): A1(w) = w | ((w >> 1) & 0x5555...) holds c >= 1 at the even bits and c >= 2 at the odd ones;
// A2(w0, w1) = (w0 & w0 >> 1 & 0x5555...) | (w1 & w1 >> 1 & 0x5555...) << 1 holds c >= 3 of two words. Keys and
// queries use the same words, so the bit order (a permutation of the K dimension) does not matter.
__device__ __forceinline__ uint32_t therm_a1(uint32_t w) { return w | ((w >> 1) & 0x55555555u); }
__device__ __forceinline__ uint32_t therm_a2(uint32_t w0, uint32_t w1) {
  return (w0 & (w0 >> 1) & 0x55555555u) | ((w1 & (w1 >> 1) & 0x55555555u) << 1);
}
// A lane of an MMA owns CW = D / 64 consecutive code words of its keys: NA thermometer words.
template <int CW>
struct MmaWords {
  static constexpr int NA = CW + (CW + 1) / 2;
  uint32_t a[NA];
};
template <int CW>
__device__ __forceinline__ MmaWords<CW> mma_words(const uint32_t (&w)[CW]) {
  MmaWords<CW> m;
#pragma unroll
  for (int i = 0; i < CW; ++i) m.a[i] = therm_a1(w[i]);
#pragma unroll
  for (int i = 0; i < CW; i += 2) m.a[CW + i / 2] = therm_a2(w[i], i + 1 < CW ? w[i + 1] : 0u);
  return m;
}
// Sum of the codes of `words` code words (the thermometer popcount): popc(low bits) + 2 popc(high bits).
__device__ __forceinline__ int code_sum(const uint32_t* w, int words) {
  int s = 0;
  for (int i = 0; i < words; ++i) s += __popc(w[i] & 0x55555555u) + 2 * __popc(w[i] & 0xAAAAAAAAu);
  return s;
}
// c[0..3] += AND-popcounts of the 16 x 8 tile: fragment rows (keys) g and g + 8 of this lane (lo, hi), column g (q).
// Fragment layout (PTX ISA, mma.m16n8k256 .b1): a0 = (row g, bits [32 t, 32 t + 32)), a1 = (row g + 8, same bits),
// a2 / a3 = the same rows at bits 128 + 32 t; b0 / b1 = column g at those bits; c0, c1 = (row g, columns 2t, 2t + 1),
// c2, c3 = (row g + 8, ...), with g = lane / 4, t = lane % 4. m16n8k128 takes a0, a1, b0 only.
template <int CW>
__device__ __forceinline__ void mma_dots(const MmaWords<CW>& lo, const MmaWords<CW>& hi, const MmaWords<CW>& q,
                                         int (&c)[4]) {
  constexpr int NA = MmaWords<CW>::NA;
  c[0] = c[1] = c[2] = c[3] = 0;
#pragma unroll
  for (int j = 0; j + 1 < NA; j += 2)
    asm("mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(lo.a[j]), "r"(hi.a[j]), "r"(lo.a[j + 1]), "r"(hi.a[j + 1]), "r"(q.a[j]), "r"(q.a[j + 1]));
  if constexpr (NA % 2 == 1)
    asm("mma.sync.aligned.m16n8k128.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(lo.a[NA - 1]), "r"(hi.a[NA - 1]), "r"(q.a[NA - 1]));
}

// The B operand of a group of G <= 4 query heads (codes qw, [G][D / 16] words) for this lane: columns 0..G-1 are
// the queries, columns 4 and 6 all ones (their dot product with a key is |k|), the others zero.
template <int D, int G>
__device__ __forceinline__ MmaWords<D / 64> mma_query(const uint32_t* qw) {
  constexpr int CW = D / 64;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  MmaWords<CW> q;
  if (g < G) {
    uint32_t w[CW];
#pragma unroll
    for (int i = 0; i < CW; ++i) w[i] = qw[g * (D / 16) + t * CW + i];
    q = mma_words<CW>(w);
  } else {
#pragma unroll
    for (int i = 0; i < MmaWords<CW>::NA; ++i) q.a[i] = (g == 4 || g == 6) ? 0xFFFFFFFFu : 0u;
  }
  return q;
}

// One warp's 16 keys against G (2 or 4) query heads: this lane's key (fragment row g for t < 2, g + 8 for t >= 2) and
// its distances to query rows r0 = 2 (t % 2) and r0 + 1 (per head; rows >= G are not valid), or (SHARED, valid where
// t is even) the group's summed distance in d0. qs0 / qs1: |q| of rows r0 / r0 + 1 (SHARED: the group's sum in qs0).
struct MmaOut {
  int key, d0, d1;
};
template <int G, bool SHARED>
__device__ __forceinline__ MmaOut mma_outputs(const int (&c)[4], int qs0, int qs1) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const bool low = t < 2;  // columns 2t, 2t + 1 are queries; t >= 2: columns 4..7 (|k| in the even one)
  MmaOut o;
  o.key = low ? g : g + 8;
  if constexpr (SHARED) {
    uint32_t s = uint32_t(c[0] + c[1]) | (uint32_t(c[2] + c[3]) << 16);  // rows g, g + 8: two of the G dots
    s += __shfl_xor_sync(0xffffffffu, s, 1);                              // + the other two (lanes t ^ 1)
    const uint32_t r = __shfl_xor_sync(0xffffffffu, low ? s >> 16 : uint32_t(c[0]), 2);
    const int kk = low ? int(r) : c[2], dots = low ? int(s & 0xffffu) : int(r);
    o.d0 = qs0 + G * kk - 2 * dots;
    o.d1 = 0;
  } else {
    const uint32_t r = __shfl_xor_sync(0xffffffffu, low ? uint32_t(c[2]) | (uint32_t(c[3]) << 16) : uint32_t(c[0]), 2);
    const int kk = low ? int(r) : c[2];
    const int e0 = low ? c[0] : int(r & 0xffffu), e1 = low ? c[1] : int(r >> 16);
    o.d0 = qs0 + kk - 2 * e0;
    o.d1 = qs1 + kk - 2 * e1;
  }
  return o;
}

// |q| (code sums) of this lane's query rows for mma_outputs: rows r0 = 2 (t % 2) and r0 + 1 (0 where >= G), or (SHARED)
// the group's sum in qs0.
template <int D, int G, bool SHARED>
__device__ __forceinline__ void mma_query_sums(const uint32_t* qw_s, int& qs0, int& qs1) {
  constexpr int W = D / 16;
  const int r0 = 2 * (threadIdx.x & 1);
  qs0 = 0, qs1 = 0;
  if constexpr (SHARED) {
    for (int q = 0; q < G; ++q) qs0 += code_sum(qw_s + q * W, W);
  } else {
    if (r0 < G) qs0 = code_sum(qw_s + r0 * W, W), qs1 = code_sum(qw_s + (r0 + 1) * W, W);
  }
}

// A key's distances from mma_outputs into dist[R][tmax] at `local` and, for a middle token, into the rows' histograms
// (hist[R][bins]); the lanes that hold no valid output write nothing.
template <int G, bool SHARED>
__device__ __forceinline__ void record_mma_output(const MmaOut& o, int local, bool mid, uint16_t* dist, uint32_t* hist,
                                                  int tmax, int bins) {
  const int t = threadIdx.x & 3, r0 = 2 * (t & 1);
  if constexpr (SHARED) {
    if ((t & 1) == 0) {
      dist[local] = uint16_t(o.d0);
      if (mid) atomicAdd(&hist[o.d0], 1u);
    }
  } else if (r0 < G) {
    dist[r0 * tmax + local] = uint16_t(o.d0);
    dist[(r0 + 1) * tmax + local] = uint16_t(o.d1);
    if (mid) {
      atomicAdd(&hist[r0 * bins + o.d0], 1u);
      atomicAdd(&hist[(r0 + 1) * bins + o.d1], 1u);
    }
  }
}

// v8 distance pass, G = 2 or 4: the same contract as distance_pass_int. Warp w takes 16 consecutive keys per step
// (the block 128); lane (g, t) loads code words [t CW, t CW + CW) of keys g and g + 8 (each load instruction of the
// warp covers 256 contiguous bytes at d = 128); U steps of loads in flight per thread (32 registers, as v4-v7).
template <int D, int G, bool SHARED, bool DB = true, int NT = kDistThreads, class Params>
__device__ __forceinline__ void distance_pass_mma(const Params& p, int b, int kvh, int64_t t_begin, int len,
                                                  int64_t s0, int64_t tail, uint32_t* qw_s, uint16_t* dist,
                                                  uint32_t* hist) {
  static_assert(G == 2 || G == 4, "the MMA pass takes groups of 2 or 4 query heads");
  constexpr int W = D / 16, CW = D / 64, U = 16 / CW, TPI = NT / 32 * 16;
  const SeqDesc& sq = p.bd.seq[b];
  const int tmax = p.tmax, bins = p.bins, vec_codes = p.vec_codes;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const uint8_t* cblock = sq.codes + kvh * sq.c_head + t_begin * sq.c_tok + t * CW * 4;
  auto load_key = [&](int local, uint32_t (&w)[CW]) {
#pragma unroll
    for (int i = 0; i < CW; ++i) w[i] = 0;
    if (local < len) {
      const uint8_t* ptr = cblock + int64_t(local) * sq.c_tok;
      if constexpr (CW == 4) {
        if (vec_codes) {
          const uint4 v = __ldg(reinterpret_cast<const uint4*>(ptr));
          w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
          return;
        }
      } else if constexpr (CW == 2) {
        if (vec_codes) {
          const uint2 v = __ldg(reinterpret_cast<const uint2*>(ptr));
          w[0] = v.x, w[1] = v.y;
          return;
        }
      }
#pragma unroll
      for (int i = 0; i < CW; ++i) w[i] = __ldg(reinterpret_cast<const uint32_t*>(ptr) + i);
    }
  };
  struct Batch {
    uint32_t lo[U][CW], hi[U][CW];
  };
  Batch buf[DB ? 2 : 1];
  auto load = [&](int it, Batch& bb) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int base = (it * U + u) * TPI + warp * 16;
      load_key(base + g, bb.lo[u]);
      load_key(base + g + 8, bb.hi[u]);
    }
  };
  float xq[D / 32];
  if (warp < G) load_query<D>(p, b, kvh * G + warp, xq);
  load(0, buf[0]);  // in flight while the query codes are made
  if constexpr (DB) load(1, buf[DB ? 1 : 0]);
  for (int i = tid; i < (SHARED ? 1 : G) * bins; i += NT) hist[i] = 0;
  if (warp < G) finish_query<D>(p, kvh * G + warp, xq, qw_s + warp * W);
  __syncthreads();
  ADAMAS_STAMP(p.stamps, 1);
  const MmaWords<CW> bq = mma_query<D, G>(qw_s);
  int qs0, qs1;
  mma_query_sums<D, G, SHARED>(qw_s, qs0, qs1);
  const int mid_lo = int(max(int64_t(0), min(int64_t(len), s0 - t_begin)));
  const int mid_hi = int(max(int64_t(0), min(int64_t(len), tail - t_begin)));
  const int iters = (len + U * TPI - 1) / (U * TPI);
  auto compute = [&](int it, const Batch& bb) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      int c[4];
      mma_dots<CW>(mma_words<CW>(bb.lo[u]), mma_words<CW>(bb.hi[u]), bq, c);
      const MmaOut o = mma_outputs<G, SHARED>(c, qs0, qs1);
      const int local = (it * U + u) * TPI + warp * 16 + o.key;
      if (local < len) record_mma_output<G, SHARED>(o, local, local >= mid_lo && local < mid_hi, dist, hist, tmax, bins);
    }
  };
  stream_batches(iters, buf, load, compute);
}

// The distance pass of the selection kernels: the tensor-core pass where it applies (G = 2, 4), else the integer one.
template <int G>
constexpr bool kMmaDistances = G == 2 || G == 4;
template <int D, int G, bool SHARED, class Params>
__device__ __forceinline__ void distance_pass(const Params& p, int b, int kvh, int64_t t_begin, int len, int64_t s0,
                                              int64_t tail, uint32_t* qw_s, uint16_t* dist, uint32_t* hist) {
  if constexpr (kMmaDistances<G>) distance_pass_mma<D, G, SHARED>(p, b, kvh, t_begin, len, s0, tail, qw_s, dist, hist);
  else distance_pass_int<D, G, SHARED>(p, b, kvh, t_begin, len, s0, tail, qw_s, dist, hist);
}

}  // namespace adamas::cuda::detail
