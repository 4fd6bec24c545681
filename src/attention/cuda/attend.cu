// Decode attention on the GPU: one kernel for dense (all tokens, flash-decoding split-K) and sparse (the selected
// rows) attention. A block takes a chunk of rows of one unit (a query head, or a GQA group sharing its rows) in
// sub-chunks of S rows: scores (16-byte K loads, lanes of a row reduce by shuffles), online softmax, V
// accumulation (16-byte V loads), then a partial (max, sum, acc) per chunk; the last block of a unit merges them,
// so every call is one launch.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <cooperative_groups.h>

#include "attention/cuda/common.cuh"
#include "attention/cuda/dense_group.h"
#include "attention/cuda/launch.h"
#include "attention/cuda/cluster_attention.h"
#include "attention/cuda/stream_attention.h"

namespace adamas::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kStages = 3;          // cp.async pipeline depth (row tiles in flight per block)
constexpr int kMaxSparseChunk = 2048;  // selected rows per block (their indices are staged in shared memory)

template <int D>
constexpr int tile_rows() { return D == 256 ? 32 : 64; }
template <int D, class T>
constexpr size_t stage_bytes() { return size_t(tile_rows<D>()) * D * sizeof(T) * 2; }  // K and V tiles

struct AttendParams {
  BatchDesc bd;
  const float* q;  // [batch][n_heads][D]
  int n_heads, kv_heads, group;
  float qscale;  // scale * log2(e): scores in base-2 exponent units
  const int32_t* idx;  // selection rows, or null (dense)
  int64_t cap;
  int shared_sel, budget;
  int chunk, max_chunks, units;
  int cluster;  // v4: the chunks of a unit are one thread-block cluster and merge through distributed shared memory
  float* part;  // [batch][n_heads][max_chunks][D] weighted V sums of the chunks (v6: split from max and sum)
  float* part_ml;  // [batch][n_heads][max_chunks][2] max and sum of weights
  uint32_t* done;  // [batch][units]
  float* out;  // [batch][n_heads][D]
  unsigned long long* stamps;  // phase stamps (profiling builds), or null
};

// v2: K and V row tiles stream into shared memory through a kStages-deep cp.async pipeline (both tensors of a
// tile in flight together, the next tiles in flight while one is computed); selected row indices are staged in
// shared memory once per block. Compute per tile as in v1: scores, online softmax by one warp per head, V.
template <int D, int G, class T>
__global__ void __launch_bounds__(kThreads, G >= 8 ? 1 : 2) attend_kernel(const __grid_constant__ AttendParams p) {
  constexpr int SR = tile_rows<D>();
  constexpr int LPR = D / 8;  // lanes per row: 8 elements (16 bytes) each
  constexpr int RPW = 32 / LPR;  // rows per warp per pass
  constexpr int U = SR / (kWarps * RPW);  // K rows per lane per tile
  constexpr int NRG = kThreads / LPR;  // row groups of the V pass
  constexpr int VR = SR / NRG;  // V rows per thread per tile
  constexpr int PPR = D / 8;  // 16-byte pieces per row
  static_assert(U >= 1 && VR >= 1, "tile shape");
  static_assert(size_t(NRG) * D * 4 <= stage_bytes<D, T>() * kStages, "reduction buffer aliases the stages");
  static_assert(size_t(G) * 257 * 4 <= stage_bytes<D, T>() * kStages, "merge weights alias the stages");
  static_assert(size_t(NRG + G) * D * 4 <= stage_bytes<D, T>() * kStages, "cluster partials alias the stages");

  extern __shared__ __align__(16) unsigned char dsm[];
  T* Ks = reinterpret_cast<T*>(dsm);                      // [kStages][SR][D]
  T* Vs = Ks + size_t(kStages) * SR * D;                   // [kStages][SR][D]
  int32_t* s_idx = reinterpret_cast<int32_t*>(Vs + size_t(kStages) * SR * D);  // [chunk] (sparse)
  float* red = reinterpret_cast<float*>(dsm);              // [NRG][D], after the pipeline has drained
  float* cpart = red + NRG * D;                             // [G][D] this chunk's accumulators (cluster merge)
  __shared__ float s_p[G][SR];
  __shared__ float s_m[G], s_l[G], s_alpha[G];
  __shared__ int s_last;

  wait_primary();  // launched after the selection with programmatic serialization: its indices are complete
  const int b = blockIdx.z, unit = blockIdx.y, chunk = blockIdx.x;
  const SeqDesc& sq = p.bd.seq[b];
  const int64_t n = sq.n;
  int kvh, qh0;
  if constexpr (G > 1) {
    kvh = unit, qh0 = unit * G;
  } else {
    qh0 = unit, kvh = unit / p.group;
  }
  const int32_t* sel = nullptr;
  int64_t nrows = n;
  if (p.idx) {
    sel = p.idx + (int64_t(b) * (p.shared_sel ? p.kv_heads : p.n_heads) + (p.shared_sel ? kvh : qh0)) * p.cap;
    nrows = min(int64_t(p.budget), n);
  }
  const int nchunks = int((nrows + p.chunk - 1) / p.chunk);
  if (chunk >= nchunks && !p.cluster) return;  // (in a cluster, every block takes part in the merge)
  const int64_t r_begin = min(nrows, int64_t(chunk) * p.chunk), r_end = min(nrows, r_begin + p.chunk);
  const int rows = int(r_end - r_begin);
  const int ntiles = (rows + SR - 1) / SR;
  const T* K = static_cast<const T*>(sq.k) + kvh * sq.k_head;
  const T* V = static_cast<const T*>(sq.v) + kvh * sq.v_head;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  ADAMAS_STAMP(p.stamps, 0);

  if (sel) {
    for (int i = tid; i < rows; i += kThreads) s_idx[i] = __ldg(sel + r_begin + i);
    __syncthreads();
  }
  ADAMAS_STAMP(p.stamps, 1);
  auto issue = [&](int tile) {
    const int buf = tile % kStages;
    T* kd = Ks + size_t(buf) * SR * D;
    T* vd = Vs + size_t(buf) * SR * D;
    static_assert(SR * PPR % kThreads == 0, "copy shape");
#pragma unroll
    for (int j = 0; j < SR * PPR / kThreads; ++j) {
      const int i = tid + j * kThreads;
      const int lr = i / PPR, pc = i % PPR;
      const int r = tile * SR + lr;
      const bool valid = r < rows;
      const int64_t row = valid ? (sel ? int64_t(s_idx[r]) : r_begin + r) : 0;
      cp_async16(kd + lr * D + pc * 8, K + row * sq.k_tok + pc * 8, valid);
      cp_async16(vd + lr * D + pc * 8, V + row * sq.v_tok + pc * 8, valid);
    }
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ntiles) issue(s);
    cp_async_commit();
  }

  const int cl = lane % LPR, sub = lane / LPR;
  const int rg = tid / LPR;  // V pass: row group; its columns are cl * 8 .. cl * 8 + 8 as well (tid % LPR == cl)
  float qf[G][8];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const float* qr = p.q + (int64_t(b) * p.n_heads + qh0 + g) * D + cl * 8;
    const float4 a = *reinterpret_cast<const float4*>(qr);
    const float4 c = *reinterpret_cast<const float4*>(qr + 4);
    qf[g][0] = a.x * p.qscale, qf[g][1] = a.y * p.qscale, qf[g][2] = a.z * p.qscale, qf[g][3] = a.w * p.qscale;
    qf[g][4] = c.x * p.qscale, qf[g][5] = c.y * p.qscale, qf[g][6] = c.z * p.qscale, qf[g][7] = c.w * p.qscale;
  }
  if (tid < G) s_m[tid] = -INFINITY, s_l[tid] = 0.0f;
  float acc[G][8];
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int c = 0; c < 8; ++c) acc[g][c] = 0.0f;

  for (int tile = 0; tile < ntiles; ++tile) {
    if (tile + kStages - 1 < ntiles) issue(tile + kStages - 1);
    cp_async_commit();
    cp_async_wait<kStages - 1>();
    __syncthreads();
#ifdef ADAMAS_CUDA_STAMPS
    if (tile == 0) ADAMAS_STAMP(p.stamps, 2);
#endif
    const int buf = tile % kStages;
    const T* kt = Ks + size_t(buf) * SR * D;
    const T* vt = Vs + size_t(buf) * SR * D;
    const int valid_rows = min(SR, rows - tile * SR);
    // Scores of the tile's rows.
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int lr = u * (kWarps * RPW) + warp * RPW + sub;
      float kf[8];
      cvt8<T>(*reinterpret_cast<const uint4*>(kt + lr * D + cl * 8), kf);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float d = 0.0f;
#pragma unroll
        for (int c = 0; c < 8; ++c) d = fmaf(qf[g][c], kf[c], d);
#pragma unroll
        for (int o = LPR / 2; o > 0; o /= 2) d += __shfl_xor_sync(0xffffffffu, d, o);
        if (cl == 0) s_p[g][lr] = lr < valid_rows ? d : -INFINITY;
      }
    }
    __syncthreads();
    // Online softmax: warp g updates head g's running max and sum, turns scores into weights.
    if (warp < G) {
      constexpr int PL = SR / 32;
      float v[PL];
      float mx = -INFINITY;
#pragma unroll
      for (int i = 0; i < PL; ++i) v[i] = s_p[warp][lane + 32 * i], mx = fmaxf(mx, v[i]);
#pragma unroll
      for (int o = 16; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_old = s_m[warp];
      const float m_new = fmaxf(m_old, mx);
      const float alpha = exp2f(m_old - m_new);
      float sum = 0.0f;
#pragma unroll
      for (int i = 0; i < PL; ++i) {
        const float e = exp2f(v[i] - m_new);
        s_p[warp][lane + 32 * i] = e;
        sum += e;
      }
#pragma unroll
      for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      __syncwarp();  // every lane has read s_m before lane 0 rewrites it
      if (lane == 0) s_l[warp] = s_l[warp] * alpha + sum, s_m[warp] = m_new, s_alpha[warp] = alpha;
    }
    __syncthreads();
    // V accumulation (rows past the end are zero-filled, their weights 0).
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float a = s_alpha[g];
#pragma unroll
      for (int c = 0; c < 8; ++c) acc[g][c] *= a;
    }
#pragma unroll
    for (int k = 0; k < VR; ++k) {
      const int lr = rg + k * NRG;
      float vf[8];
      cvt8<T>(*reinterpret_cast<const uint4*>(vt + lr * D + cl * 8), vf);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float w = s_p[g][lr];
#pragma unroll
        for (int c = 0; c < 8; ++c) acc[g][c] = fmaf(w, vf[c], acc[g][c]);
      }
    }
    __syncthreads();
  }
  cp_async_wait<0>();  // only empty groups remain; the stages become the reduction buffer
  __syncthreads();
  ADAMAS_STAMP(p.stamps, 3);

  // Reduce the row groups; write the output (one chunk) or this chunk's partial.
  const int64_t hbase = (int64_t(b) * p.n_heads + qh0) * p.max_chunks;
  float* acc_base = p.part + hbase * D;
  float* ml_base = p.part_ml + hbase * 2;
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int c = 0; c < 8; ++c) red[rg * D + cl * 8 + c] = acc[g][c];
    __syncthreads();
    if (tid < D) {
      float v = 0.0f;
#pragma unroll 8
      for (int i = 0; i < NRG; ++i) v += red[i * D + tid];
      if (p.cluster) {
        cpart[g * D + tid] = v;
      } else if (nchunks == 1) {
        p.out[(int64_t(b) * p.n_heads + qh0 + g) * D + tid] = v / s_l[g];
      } else {
        const int64_t pc = int64_t(g) * p.max_chunks + chunk;
        acc_base[pc * D + tid] = v;
        if (tid == 0) ml_base[pc * 2] = s_m[g], ml_base[pc * 2 + 1] = s_l[g];
      }
    }
    __syncthreads();
  }
  ADAMAS_STAMP(p.stamps, 4);
  if (p.cluster) {
    // v4: the C blocks of the unit (C = gridDim.x) merge through distributed shared memory: block k folds columns
    // [k S, k S + S) of the G heads over the C partials (max, sum, accumulators); empty chunks hold (-inf, 0, 0).
    namespace cg = cooperative_groups;
    cg::cluster_group cl = cg::this_cluster();
    cl.sync();
    ADAMAS_STAMP(p.stamps, 5);
    const int C = int(cl.num_blocks()), rank = int(cl.block_rank());
    const int S = (G * D + C - 1) / C;
    for (int i = rank * S + tid; i < min(G * D, rank * S + S); i += kThreads) {
      const int g = i / D;
      float M = -INFINITY;
      for (int c = 0; c < C; ++c) M = fmaxf(M, cl.map_shared_rank(s_m, c)[g]);
      float L = 0.0f, A = 0.0f;
      for (int c = 0; c < C; ++c) {
        const float m = cl.map_shared_rank(s_m, c)[g];
        const float w = m == -INFINITY ? 0.0f : exp2f(m - M);
        L += cl.map_shared_rank(s_l, c)[g] * w;
        A += cl.map_shared_rank(cpart, c)[i] * w;
      }
      p.out[(int64_t(b) * p.n_heads + qh0 + g) * D + i % D] = A / L;
    }
    cl.sync();  // the other blocks' shared memory is read
    ADAMAS_STAMP(p.stamps, 6);
    return;
  }
  if (nchunks == 1) return;
  __threadfence();
  __syncthreads();
  uint32_t* done = p.done + int64_t(b) * p.units + unit;
  if (tid == 0) s_last = atomicAdd(done, 1u) == uint32_t(nchunks - 1);
  __syncthreads();
  ADAMAS_STAMP(p.stamps, 5);
  if (!s_last) return;
  __threadfence();
  // Merge (v6, merge_partials: shared max and sums, then 4 columns per thread with independent loads; v3 folded the
  // chunks online per column, ceil(chunks / 8) dependent round trips: ~5 us for dense GQA's 33 chunks of 4 heads).
  merge_partials<D, G>(ml_base, acc_base, nchunks, p.max_chunks, p.out + (int64_t(b) * p.n_heads + qh0) * D);
  if (tid == 0) *done = 0;
  ADAMAS_STAMP(p.stamps, 6);
}

template <int D, int G, class T>
size_t kernel_smem(int chunk, bool sparse) {
  return stage_bytes<D, T>() * kStages + (sparse ? size_t(chunk) * 4 : 0);
}

// Blocks of this instantiation resident per multiprocessor at the largest shared memory (sparse, full chunk).
template <int D, int G, class T>
int blocks_per_sm() {
  static std::atomic<int> cached{0};
  int v = cached.load();
  if (v == 0) {
    const size_t smem = kernel_smem<D, G, T>(kMaxSparseChunk, true);
    check_cuda(cudaFuncSetAttribute(attend_kernel<D, G, T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
               "attend smem attribute");
    check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v, attend_kernel<D, G, T>, kThreads,
                                                             kernel_smem<D, G, T>(0, false)),
               "attend occupancy");
    v = std::max(v, 1);
    cached = v;
  }
  return v;
}

// Clusters of C blocks of attend_kernel<D, G, T> (smem bytes each) resident at once.
template <int D, int G, class T>
int attend_clusters(int C, size_t smem) {
  blocks_per_sm<D, G, T>();  // sets the shared-memory attribute
  return max_active_clusters(reinterpret_cast<const void*>(attend_kernel<D, G, T>), kThreads, C, smem);
}

template <int D, int G, class T>
size_t launch_smem(const AttendParams& p) {
  return p.idx ? kernel_smem<D, G, T>(p.chunk, true) : kernel_smem<D, G, T>(0, false);
}

// Launches attend_kernel<D, G, T>; or, when p.cluster, answers whether clusters of grid.x blocks would all be
// resident (probe) or launches them so.
template <int D, int G, class T>
bool launch_dgt(const AttendParams& p, dim3 grid, cudaStream_t stream, bool probe) {
  const size_t smem = launch_smem<D, G, T>(p);
  blocks_per_sm<D, G, T>();  // sets the shared-memory attribute
  if (p.cluster && attend_clusters<D, G, T>(int(grid.x), smem) < int(grid.y * grid.z)) return false;
  if (probe) return true;
  // Clusters (p.cluster) and, after a selection (p.idx), programmatic stream serialization: this launch overlaps
  // the selection's last blocks and waits for its results in the kernel (v5).
  cudaLaunchAttribute attr[2];
  cudaLaunchConfig_t cfg = cluster_launch_config(grid, kThreads, int(grid.x), smem, stream, attr);
  cfg.numAttrs = p.cluster ? 1 : 0;
  if (p.idx) {
    attr[cfg.numAttrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[cfg.numAttrs].val.programmaticStreamSerializationAllowed = 1;
    ++cfg.numAttrs;
  }
  note_cluster_launch(cfg);
  check_cuda(cudaLaunchKernelEx(&cfg, attend_kernel<D, G, T>, p), "attend kernel launch");
  return true;
}

template <int D, int G>
bool launch_dg(const AttendParams& p, DType dtype, dim3 grid, cudaStream_t stream, bool probe) {
  return dtype == DType::f16 ? launch_dgt<D, G, __half>(p, grid, stream, probe)
                             : launch_dgt<D, G, __nv_bfloat16>(p, grid, stream, probe);
}

template <int D>
bool launch_d(const AttendParams& p, int G, DType dtype, dim3 grid, cudaStream_t stream, bool probe) {
  switch (G) {
    case 1: return launch_dg<D, 1>(p, dtype, grid, stream, probe);
    case 2: return launch_dg<D, 2>(p, dtype, grid, stream, probe);
    case 4: return launch_dg<D, 4>(p, dtype, grid, stream, probe);
    default: return launch_dg<D, 8>(p, dtype, grid, stream, probe);
  }
}
bool launch_any(const AttendParams& p, int D, int G, DType dtype, dim3 grid, cudaStream_t stream, bool probe) {
  switch (D) {
    case 64: return launch_d<64>(p, G, dtype, grid, stream, probe);
    case 128: return launch_d<128>(p, G, dtype, grid, stream, probe);
    default: return launch_d<256>(p, G, dtype, grid, stream, probe);
  }
}

template <int D>
int occupancy_d(int G, DType dtype) {
  const bool h = dtype == DType::f16;
  switch (G) {
    case 1: return h ? blocks_per_sm<D, 1, __half>() : blocks_per_sm<D, 1, __nv_bfloat16>();
    case 2: return h ? blocks_per_sm<D, 2, __half>() : blocks_per_sm<D, 2, __nv_bfloat16>();
    case 4: return h ? blocks_per_sm<D, 4, __half>() : blocks_per_sm<D, 4, __nv_bfloat16>();
    default: return h ? blocks_per_sm<D, 8, __half>() : blocks_per_sm<D, 8, __nv_bfloat16>();
  }
}

// sel == null: dense. Otherwise rows from the selection (`budget` bounds a unit's rows).
void run_attention(const BatchInputs& in, const SelectionView* sel, int64_t budget, float scale, Workspace& ws,
                   float* out, cudaStream_t stream, const char* where) {
  CUDA_REQUIRE(out != nullptr, ErrorKind::invalid_argument, where, ": out is null");
  const auto chunks = make_batches(in, false, where);
  const HeadsView& k0 = in.seqs[0].k;
  const int D = int(k0.dim), kvh = int(k0.heads), n_heads = int(in.n_heads), group = n_heads / kvh;
  CUDA_REQUIRE(group == 1 || group == 2 || group == 4 || group == 8, ErrorKind::unsupported, where, ": GQA group of ",
               group, " query heads (1, 2, 4 or 8 on CUDA; dense attention at head_dim 64 or 128 takes 1 to 8)");
  // Heads per block: the whole group when its heads share rows (dense, shared selection), else one.
  const int G = (!sel || sel->shared) ? group : 1;
  const int units = G > 1 ? kvh : n_heads;
  const int64_t batch = int64_t(in.seqs.size());
  auto& Sx = ws.state();
  int64_t rows_max = 0;
  for (const auto& s : in.seqs) rows_max = std::max(rows_max, sel ? std::min(budget, s.k.tokens) : s.k.tokens);
  // Split over rows so that every block of the launch is resident at once (one wave: no tail), chunks of whole
  // 16-row groups; selected rows at most kMaxSparseChunk per block.
  int occ = 1;
  switch (D) {
    case 64: occ = occupancy_d<64>(G, k0.dtype); break;
    case 128: occ = occupancy_d<128>(G, k0.dtype); break;
    case 256: occ = occupancy_d<256>(G, k0.dtype); break;
  }
  const int64_t slots = int64_t(occ) * Sx.sms;
  const int64_t per_unit = std::clamp<int64_t>(slots / std::min<int64_t>(batch, kMaxBatch) / units, 1, 256);
  auto chunk_of = [&](int64_t parts) { return std::max<int64_t>(16, ((rows_max + parts - 1) / parts + 15) / 16 * 16); };
  int64_t chunk = chunk_of(per_unit);
  if (sel) chunk = std::min<int64_t>(chunk, kMaxSparseChunk);
  int max_chunks = int((rows_max + chunk - 1) / chunk);
  // v4, selected rows: the chunks of a unit form a cluster of C blocks that merges through distributed shared memory
  // (v3: fence, arrival counter, and the last block reloading every partial from L2: ~3 us of the ~7 us kernel).
  // C = the fewest of 2 or 4 blocks that hold at most 64 rows each, halved until every cluster of a launch is
  // resident; none when one block takes all the rows, above 256 rows (measured v4: a gain of ~0.3 us up to 256 rows,
  // a loss above, where 8-block clusters are not all resident and 4 blocks get too many rows), or no size fits.
  int cluster = 0;
  const int64_t batch_chunk = std::min<int64_t>(batch, kMaxBatch);
  if (sel && rows_max > 16 && rows_max <= 256 && std::getenv("ADAMAS_CUDA_ATTEND_NO_CLUSTER") == nullptr) {
    int C = 2;
    while (C < 4 && chunk_of(C) > 64) C *= 2;
    for (; C >= 2 && cluster == 0; C /= 2) {
      if (chunk_of(C) > kMaxSparseChunk) break;
      AttendParams probe{};
      probe.idx = sel->indices, probe.chunk = int(chunk_of(C)), probe.cluster = 1;
      if (launch_any(probe, D, G, k0.dtype, dim3(unsigned(C), unsigned(units), unsigned(batch_chunk)), nullptr, true))
        cluster = C;
    }
    if (cluster) chunk = chunk_of(cluster), max_chunks = cluster;
  }
  CUDA_REQUIRE(max_chunks <= 256, ErrorKind::unsupported, where, ": ", rows_max, " rows per head exceed 256 chunks of ", chunk);
  ensure(&Sx.part, &Sx.part_bytes, size_t(batch * n_heads * max_chunks * (D + 2)) * 4, false);
  float* part_ml = Sx.part + batch * n_heads * max_chunks * D;  // after every chunk's accumulators
  ensure(&Sx.done, &Sx.done_bytes, size_t(batch * units) * 4, true);
  for (size_t c = 0; c < chunks.size(); ++c) {
    const int64_t b0 = int64_t(c) * kMaxBatch;
    AttendParams p{};
    p.bd = chunks[c];
    p.q = in.q + b0 * n_heads * D;
    p.n_heads = n_heads, p.kv_heads = kvh, p.group = group;
    p.qscale = scale * 1.4426950408889634f;
    if (sel) {
      p.idx = sel->indices + b0 * sel->units * sel->capacity;
      p.cap = sel->capacity;
      p.shared_sel = sel->shared;
      p.budget = int(budget);
    }
    p.chunk = int(chunk), p.max_chunks = max_chunks, p.units = units, p.cluster = cluster > 0;
    p.part = Sx.part + b0 * n_heads * max_chunks * D;
    p.part_ml = part_ml + b0 * n_heads * max_chunks * 2;
    p.done = Sx.done + b0 * units;
    p.out = out + b0 * n_heads * D;
    p.stamps = stamp_buffer(1);
    const dim3 grid(unsigned(max_chunks), unsigned(units), unsigned(p.bd.batch));
    if (launch_verbose()) {
      char line[256];
      std::snprintf(line, sizeof line, "[adamas] attend %s D=%d G=%d: grid %ux%ux%u, chunk %lld rows, occupancy "
                    "%d/SM, cluster %d\n", sel ? "sparse" : "dense", D, G, grid.x, grid.y, grid.z, (long long)chunk,
                    occ, cluster);
      verbose_print(line);
    }
    launch_any(p, D, G, k0.dtype, grid, stream, false);
  }
}

}  // namespace
}  // namespace detail

void attend_selected(const BatchInputs& in, const AttentionConfig& config, Workspace& ws, float scale, float* out,
                     cudaStream_t stream) {
  const SelectionView& sel = ws.state().last;
  CUDA_REQUIRE(sel.indices != nullptr && sel.batch == int64_t(in.seqs.size()), ErrorKind::invalid_argument, "cuda::attend_selected: the workspace holds no selection for this batch (call select first)");
  detail::run_attention(in, &sel, config.budget, scale, ws, out, stream, "cuda::attend_selected");
}

void attend_dense(const BatchInputs& in, float scale, Workspace& ws, float* out, cudaStream_t stream) {
  // v7: the tensor-core group kernel (dense_group.cu) where it covers the shape; v6's kernel for head_dim 256.
  const char* where = "cuda::attend_dense";
  if (!in.seqs.empty() && in.seqs[0].k.heads > 0 &&
      detail::dense_group_supports(in.seqs[0].k.dim, in.n_heads / in.seqs[0].k.heads) &&
      !detail::dense_group_disabled())
    return detail::attend_dense_group(in, scale, ws, out, stream, where);
  detail::run_attention(in, nullptr, 0, scale, ws, out, stream, where);
}

namespace {

// A batch whose sequences below dense_below (and above the budget) must attend densely while the others select: the
// two groups' query rows are packed into workspace rows (dense first), each group runs as its own batch, and the
// outputs go back to their rows. Device-to-device copies of n_heads * dim floats per sequence.
void split_by_length(const BatchInputs& in, const AttentionConfig& config, float scale, Workspace& ws, float* out,
                     cudaStream_t stream) {
  const size_t row = size_t(in.n_heads) * size_t(in.seqs[0].k.dim), bytes = row * sizeof(float);
  const size_t batch = in.seqs.size();
  std::vector<SequenceCache> dense, sparse;
  std::vector<size_t> order;  // packed row -> batch row
  for (size_t i = 0; i < batch; ++i)
    if (attends_every_token(config, in.seqs[i].k.tokens)) dense.push_back(in.seqs[i]), order.push_back(i);
  for (size_t i = 0; i < batch; ++i)
    if (!attends_every_token(config, in.seqs[i].k.tokens)) sparse.push_back(in.seqs[i]), order.push_back(i);
  auto& st = ws.state();
  detail::ensure(&st.split_q, &st.split_q_bytes, batch * bytes, false);
  detail::ensure(&st.split_out, &st.split_out_bytes, batch * bytes, false);
  for (size_t j = 0; j < batch; ++j)
    check_cuda(cudaMemcpyAsync(st.split_q + j * row, in.q + order[j] * row, bytes, cudaMemcpyDeviceToDevice, stream),
               "cuda::decode_attention: pack queries");
  BatchInputs d = in, s = in;
  d.q = st.split_q, d.seqs = dense;
  s.q = st.split_q + dense.size() * row, s.seqs = sparse;
  attend_dense(d, scale, ws, st.split_out, stream);
  AttentionConfig sc = config;
  sc.dense_below = 0;  // every sequence left selects
  decode_attention(s, sc, ws, st.split_out + dense.size() * row, stream);
  for (size_t j = 0; j < batch; ++j)
    check_cuda(cudaMemcpyAsync(out + order[j] * row, st.split_out + j * row, bytes, cudaMemcpyDeviceToDevice, stream),
               "cuda::decode_attention: unpack outputs");
}

}  // namespace

void decode_attention(const BatchInputs& in, const AttentionConfig& config, Workspace& ws, float* out,
                      cudaStream_t stream) {
  validate_config(config);
  CUDA_REQUIRE(config.method == Method::full || config.method == Method::adamas, ErrorKind::unsupported, "cuda::decode_attention: method ", method_name(config.method), " is not implemented on CUDA (full, adamas)");
  CUDA_REQUIRE(!in.seqs.empty(), ErrorKind::invalid_argument, "cuda::decode_attention: empty batch");
  const float scale = 1.0f / std::sqrt(float(in.seqs[0].k.dim));
  bool dense = true, below = false;  // below: a sequence longer than the budget attends densely (dense_below)
  for (const auto& s : in.seqs) {
    dense = dense && attends_every_token(config, s.k.tokens);
    below = below || attends_every_token_past_budget(config, s.k.tokens);
  }
  if (dense) return attend_dense(in, scale, ws, out, stream);
  if (below) return split_by_length(in, config, scale, ws, out, stream);
  if (detail::cluster_selected(in, config, true)) return detail::cluster_attention(in, config, ws, out, stream);  // v9
  if (detail::stream_selected(in, config)) return detail::stream_attention(in, config, ws, out, stream);  // v8
  select(in, config, ws, stream);
  attend_selected(in, config, ws, scale, out, stream);
}

}  // namespace adamas::cuda
