// bench_distance: the selection's distance pass alone (v8 study). For one sequence of n tokens and `kv` KV heads
// of random 2-bit codes, every block runs the pass of select.cu's kernels on its tokens (exact u16 L1 of every key
// against the G query codes of its KV head, or their sum for shared_sum, into shared memory, plus a shared histogram),
// then merges its histogram into the row's in global memory. Candidates, each checked against the CPU's
// adamas::l1_distances_group (exact integers) on fresh random codes before it is timed:
//   int : the v4-v7 pass on the integer units (distance_pass_int; thermometer XOR, carry-save adders, POPC)
//   hs  : one lane per key, the 12 difference words of a row through a Harley-Seal carry-save tree, 4 POPC (d = 128,
//         per head; studied only)
//   mma : the v8 pass on the 1-bit tensor cores (distance_pass_mma; mma.sync .b1 .and.popc), G = 2 and 4
//   bmma: throughput of the BMMA instruction alone (m16n8k256 .and.popc, independent accumulators)
// Timings are medians of event-timed launches after a 256 MB L2 flush (the same method as bench_attention_cuda), with
// GB/s of codes and % of a device-to-device copy (read + write) measured in the same run.
// Usage: bench_distance [--n TOKENS] [--iters N] [--seed S]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "adamas/attention.h"
#include "attention/cuda/distance.cuh"
#include "bench_timer.h"
#include "fill.h"

using namespace adamas;
using namespace adamas::cuda::detail;

namespace {

using bench::ck;
using bench::Timer;

// The fields distance_pass reads, plus the bench's outputs.
struct Params {
  BatchDesc bd;
  const float* q;
  int n_heads;
  float hscale;
  const Thr* qthr;
  Thr cfg_thr;
  int tmax, bins, vec_codes;
  unsigned long long* stamps;
  int T;                // tokens per block
  uint32_t* hist_out;   // [rows][bins], added into
  uint16_t* dist_out;   // [rows][n] or null (timed runs)
  uint32_t* qw_out;     // [n_heads][D / 16] query code words or null
};

// Harley-Seal variant (d = 128, per head): lane = key; 12 thermometer words per key (LaneCodes of both halves).
template <int G, class P>
__device__ __forceinline__ void distance_pass_hs(const P& p, int kvh, int64_t t_begin, int len, uint32_t* qw_s,
                                                 uint16_t* dist, uint32_t* hist) {
  constexpr int D = 128, W = D / 16, U = 4, TPI = kDistThreads;
  const SeqDesc& sq = p.bd.seq[0];
  const int tid = threadIdx.x, warp = tid >> 5;
  const uint8_t* cblock = sq.codes + kvh * sq.c_head + t_begin * sq.c_tok;
  float xq[D / 32];
  if (warp < G) load_query<D>(p, 0, kvh * G + warp, xq);
  uint4 buf[U][2];
  auto load = [&](int it) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int local = (it * U + u) * TPI + tid;
      buf[u][0] = buf[u][1] = make_uint4(0, 0, 0, 0);
      if (local < len) {
        const uint4* ptr = reinterpret_cast<const uint4*>(cblock + int64_t(local) * sq.c_tok);
        buf[u][0] = __ldg(ptr), buf[u][1] = __ldg(ptr + 1);
      }
    }
  };
  load(0);
  for (int i = tid; i < G * p.bins; i += kDistThreads) hist[i] = 0;
  if (warp < G) finish_query<D>(p, kvh * G + warp, xq, qw_s + warp * W);
  __syncthreads();
  LaneCodes qa[G], qb[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const uint32_t* w = qw_s + g * W;
    qa[g] = lane_codes(w[0], w[1], w[2], w[3]), qb[g] = lane_codes(w[4], w[5], w[6], w[7]);
  }
  auto csa = [](uint32_t& h, uint32_t& l, uint32_t a, uint32_t b, uint32_t c) {
    const uint32_t u = a ^ b;
    h = (a & b) | (u & c), l = u ^ c;
  };
  const int iters = (len + U * TPI - 1) / (U * TPI);
  for (int it = 0; it < iters; ++it) {
    if (it > 0) load(it);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const LaneCodes ka = lane_codes(buf[u][0].x, buf[u][0].y, buf[u][0].z, buf[u][0].w);
      const LaneCodes kb = lane_codes(buf[u][1].x, buf[u][1].y, buf[u][1].z, buf[u][1].w);
      const int local = (it * U + u) * TPI + tid;
#pragma unroll
      for (int g = 0; g < G; ++g) {
        uint32_t x[12];
#pragma unroll
        for (int i = 0; i < 4; ++i) x[i] = qa[g].p[i] ^ ka.p[i], x[4 + i] = qb[g].p[i] ^ kb.p[i];
        x[8] = qa[g].y[0] ^ ka.y[0], x[9] = qa[g].y[1] ^ ka.y[1], x[10] = qb[g].y[0] ^ kb.y[0];
        x[11] = qb[g].y[1] ^ kb.y[1];
        uint32_t t0, o0, t1, o1, t2, o2, t3, o3;  // 12 ones -> 4 ones + 4 twos
        csa(t0, o0, x[0], x[1], x[2]), csa(t1, o1, x[3], x[4], x[5]);
        csa(t2, o2, x[6], x[7], x[8]), csa(t3, o3, x[9], x[10], x[11]);
        uint32_t t4, ones;  // 4 ones -> 1 one + carries
        csa(t4, ones, o0, o1, o2);
        const uint32_t t5 = ones & o3;
        ones ^= o3;
        uint32_t f0, w0, f1, w1;  // twos: t0..t5 -> 2 twos + 2 fours
        csa(f0, w0, t0, t1, t2), csa(f1, w1, t3, t4, t5);
        const uint32_t f2 = w0 & w1, twos = w0 ^ w1;
        uint32_t eights, fours;
        csa(eights, fours, f0, f1, f2);
        const int d = __popc(ones) + 2 * __popc(twos) + 4 * __popc(fours) + 8 * __popc(eights);
        if (local < len) {
          dist[g * p.tmax + local] = uint16_t(d);
          atomicAdd(&hist[g * p.bins + d], 1u);
        }
      }
    }
  }
}

enum Method { kInt, kHs, kMma, kIntDb, kMma1 };  // Db / mma: two batches of loads in flight; mma1: one

template <int D, int G, bool SHARED, int M>
__global__ void __launch_bounds__(kDistThreads, 2) pass_kernel(const __grid_constant__ Params p) {
  constexpr int R = SHARED ? 1 : G, W = D / 16;
  extern __shared__ __align__(16) uint32_t smem[];
  uint32_t* hist = smem;
  uint32_t* qw_s = hist + R * p.bins;
  uint16_t* dist = reinterpret_cast<uint16_t*>(smem + (R * p.bins + G * W + 3) / 4 * 4);
  const int kvh = blockIdx.y;
  const int64_t n = p.bd.seq[0].n, t_begin = int64_t(blockIdx.x) * p.T;
  const int len = int(n - t_begin < p.T ? n - t_begin : int64_t(p.T));
  if constexpr (M == kInt || M == kIntDb)
    distance_pass_int<D, G, SHARED, M == kIntDb>(p, 0, kvh, t_begin, len, 0, n, qw_s, dist, hist);
  else if constexpr (M == kMma || M == kMma1)
    distance_pass_mma<D, G, SHARED, M == kMma>(p, 0, kvh, t_begin, len, 0, n, qw_s, dist, hist);
  else distance_pass_hs<G>(p, kvh, t_begin, len, qw_s, dist, hist);
  __syncthreads();
  uint32_t* ho = p.hist_out + int64_t(kvh) * R * p.bins;
  for (int i = threadIdx.x; i < R * p.bins; i += kDistThreads)
    if (hist[i]) atomicAdd(ho + i, hist[i]);
  if (p.dist_out)
    for (int r = 0; r < R; ++r)
      for (int i = threadIdx.x; i < len; i += kDistThreads)
        p.dist_out[(int64_t(kvh) * R + r) * n + t_begin + i] = dist[r * p.tmax + i];
  if (p.qw_out && blockIdx.x == 0)
    for (int i = threadIdx.x; i < G * W; i += kDistThreads) p.qw_out[int64_t(kvh) * G * W + i] = qw_s[i];
}

// BMMA throughput: each warp runs `reps` x 8 independent m16n8k256 .and.popc.
__global__ void bmma_kernel(int reps, uint32_t seed, int* out) {
  uint32_t a0 = seed ^ threadIdx.x, a1 = a0 * 3u, a2 = a0 * 5u, a3 = a0 * 7u, b0 = a0 * 11u, b1 = a0 * 13u;
  int c[8][4] = {};
  for (int r = 0; r < reps; ++r) {
#pragma unroll
    for (int j = 0; j < 8; ++j)
      asm volatile("mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                   "{%0,%1,%2,%3};"
                   : "+r"(c[j][0]), "+r"(c[j][1]), "+r"(c[j][2]), "+r"(c[j][3])
                   : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    a0 += 1u;
  }
  int s = 0;
  for (int j = 0; j < 8; ++j) s += c[j][0] + c[j][1] + c[j][2] + c[j][3];
  if (s == 0x7fffffff) *out = s;
}

struct Case {
  int D, G;
  bool shared;
  int method;
  int vec = 1;  // 0: 4-byte code loads (the path for codes that are not 16-byte aligned)
};
const char* method_name(int m) {
  return m == kInt ? "int" : m == kHs ? "hs" : m == kMma ? "mma" : m == kIntDb ? "int-db" : "mma-1";
}

template <class F>
void dispatch(const Case& c, F&& f) {
  auto pick = [&]<int D>() {
    if (c.method == kHs) {
      if constexpr (D == 128) {
        if (c.G == 4 && !c.shared) return f.template operator()<D, 4, false, kHs>();
        if (c.G == 2 && !c.shared) return f.template operator()<D, 2, false, kHs>();
      }
      std::fprintf(stderr, "hs: d = 128 per head only\n");
      std::exit(2);
    }
    if (c.method == kMma) {
      if (c.G == 2) return c.shared ? f.template operator()<D, 2, true, kMma>() : f.template operator()<D, 2, false, kMma>();
      if (c.G == 4) return c.shared ? f.template operator()<D, 4, true, kMma>() : f.template operator()<D, 4, false, kMma>();
      std::fprintf(stderr, "mma: G = 2 or 4 only\n");
      std::exit(2);
    }
    if (c.method == kMma1) {
      if (c.G == 4) return c.shared ? f.template operator()<D, 4, true, kMma1>() : f.template operator()<D, 4, false, kMma1>();
      std::fprintf(stderr, "mma-1: G = 4 only\n");
      std::exit(2);
    }
    if (c.method == kIntDb) {
      if (c.G == 1) return f.template operator()<D, 1, false, kIntDb>();
      std::fprintf(stderr, "int-db: G = 1 only\n");
      std::exit(2);
    }
    switch (c.G) {
      case 1: return f.template operator()<D, 1, false, kInt>();
      case 2: return c.shared ? f.template operator()<D, 2, true, kInt>() : f.template operator()<D, 2, false, kInt>();
      default: return c.shared ? f.template operator()<D, 4, true, kInt>() : f.template operator()<D, 4, false, kInt>();
    }
  };
  switch (c.D) {
    case 64: return pick.template operator()<64>();
    case 128: return pick.template operator()<128>();
    default: return pick.template operator()<256>();
  }
}

}  // namespace

int main(int argc, char** argv) {
  int64_t n = 131072;
  int iters = 30, kv = 8;
  uint32_t seed = uint32_t(std::random_device{}());
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--n" && i + 1 < argc) n = std::atoll(argv[++i]);
    else if (a == "--iters" && i + 1 < argc) iters = std::atoi(argv[++i]);
    else if (a == "--seed" && i + 1 < argc) seed = uint32_t(std::strtoul(argv[++i], nullptr, 10));
    else {
      std::fprintf(stderr, "usage: %s [--n TOKENS] [--iters N] [--seed S]\n", argv[0]);
      return 2;
    }
  }
  if (n < 1 || n > (int64_t(1) << 22) || iters < 1) {
    std::fprintf(stderr, "bench_distance: --n must be in [1, 2^22] and --iters >= 1\n");
    return 2;
  }
  cudaDeviceProp prop{};
  ck(cudaGetDeviceProperties(&prop, 0), "device properties");
  int clock_khz = 0;
  ck(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0), "clock rate");
  int driver = 0;
  cudaDriverGetVersion(&driver);
  std::printf("bench_distance: %s, %d SMs, driver API %d, n = %lld tokens, %d KV heads, seed %u, %d iterations\n",
              prop.name, prop.multiProcessorCount, driver, (long long)n, kv, seed, iters);
  Timer timer;
  const double copy_gbs = bench::copy_bandwidth_gbs(timer);
  std::printf("copy bandwidth (device-to-device, read + write): %.0f GB/s\n", copy_gbs);
  {
    int* out = nullptr;
    ck(cudaMalloc(&out, 4), "bmma out");
    const int blocks = prop.multiProcessorCount * 4, reps = 2048;
    const double us = timer.median_us([&] { bmma_kernel<<<blocks, 256>>>(reps, seed, out); }, 5);
    const double per_sm_clk = double(blocks) * 8 * 8 * reps / prop.multiProcessorCount /
                              (us * 1e-6 * double(double(clock_khz)) * 1e3);
    std::printf("BMMA m16n8k256 .and.popc: %.1f us for %d x 8 x %d per warp: %.3f per SM per clock at the %.0f MHz "
                "boost clock (%.0f Tbit-op/s)\n", us, blocks * 8, 8 * reps, per_sm_clk, double(clock_khz) / 1e3,
                double(blocks) * 8 * 8 * reps * 16.0 * 8 * 256 * 2 / (us * 1e-6) / 1e12);
    ck(cudaFree(out), "free");
  }

  // Codes and queries: fresh random bytes (every code value equally likely) and f32 queries.
  std::mt19937 rng(seed);
  const std::vector<Case> cases = {
      {128, 1, false, kInt},  {128, 1, false, kIntDb}, {128, 4, false, kInt},  {128, 4, false, kHs},
      {128, 4, false, kMma1}, {128, 4, false, kMma},   {128, 4, true, kInt},   {128, 4, true, kMma1},
      {128, 4, true, kMma},   {128, 2, false, kInt},   {128, 2, false, kMma},  {128, 2, true, kInt},
      {128, 2, true, kMma},   {64, 1, false, kInt},    {64, 1, false, kIntDb}, {64, 4, false, kInt},
      {64, 4, false, kMma},   {64, 4, true, kInt},     {64, 4, true, kMma},    {256, 1, false, kInt},
      {256, 1, false, kIntDb}, {256, 4, false, kInt},  {256, 4, false, kMma},  {256, 2, true, kInt},
      {256, 2, true, kMma},   {128, 4, false, kMma, 0}, {64, 2, false, kMma, 0}, {256, 4, true, kMma, 0}};
  std::printf("\n%-5s %-2s %-12s %-6s %9s %9s %7s %s\n", "d", "G", "rows", "pass", "us", "GB/s", "%copy", "check");
  int failures = 0;
  for (const Case& c : cases) {
    const int D = c.D, G = c.G, R = c.shared ? 1 : G, W = D / 16, cb = D / 4, heads = kv * G;
    const int bins = 3 * D * (c.shared ? G : 1) + 1;
    std::vector<uint8_t> codes(size_t(kv) * n * cb);
    for (auto& x : codes) x = uint8_t(rng());
    std::vector<float> q(size_t(heads) * D);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    for (auto& x : q) x = uni(rng);
    uint8_t* dcodes = nullptr;
    float* dq = nullptr;
    uint32_t *dhist = nullptr, *dqw = nullptr;
    uint16_t* ddist = nullptr;
    ck(cudaMalloc(&dcodes, codes.size()), "codes");
    ck(cudaMemcpy(dcodes, codes.data(), codes.size(), cudaMemcpyHostToDevice), "codes up");
    ck(cudaMalloc(&dq, q.size() * 4), "q");
    ck(cudaMemcpy(dq, q.data(), q.size() * 4, cudaMemcpyHostToDevice), "q up");
    ck(cudaMalloc(&dhist, size_t(kv) * R * bins * 4), "hist");
    ck(cudaMalloc(&ddist, size_t(kv) * R * n * 2), "dist");
    ck(cudaMalloc(&dqw, size_t(heads) * W * 4), "qw");
    Params p{};
    p.bd.batch = 1;
    p.bd.seq[0] = SeqDesc{nullptr, nullptr, dcodes, n, 0, 0, 0, 0, n * cb, cb};
    p.q = dq, p.n_heads = heads, p.hscale = 1.0f / std::sqrt(float(D)), p.qthr = nullptr;
    p.cfg_thr = Thr{-0.4f, 0.0f, 0.4f};
    const int P = std::max(1, int(2 * prop.multiProcessorCount / kv));  // blocks per KV head: 2 per SM, as the grid path
    p.T = int(((n + P - 1) / P + 127) / 128 * 128);
    const int blocks = int((n + p.T - 1) / p.T);
    p.tmax = p.T, p.bins = bins, p.vec_codes = c.vec, p.stamps = nullptr;
    const size_t smem = size_t((R * bins + G * W + 3) / 4 * 4) * 4 + size_t(R) * p.T * 2;
    auto launch = [&] {
      dispatch(c, [&]<int DD, int GG, bool SH, int M>() {
        static bool attr = false;
        if (!attr) {
          ck(cudaFuncSetAttribute(pass_kernel<DD, GG, SH, M>, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024),
             "smem attribute");
          attr = true;
        }
        pass_kernel<DD, GG, SH, M><<<dim3(blocks, kv), kDistThreads, smem>>>(p);
      });
    };
    // Check: distances, histograms and query codes against the CPU (outputs poisoned first).
    ck(cudaMemset(dhist, 0, size_t(kv) * R * bins * 4), "hist clear");
    ck(cudaMemset(ddist, 0xff, size_t(kv) * R * n * 2), "dist poison");
    ck(cudaMemset(dqw, 0xff, size_t(heads) * W * 4), "qw poison");
    p.hist_out = dhist, p.dist_out = ddist, p.qw_out = dqw;
    launch();
    ck(cudaDeviceSynchronize(), "checked launch");
    std::vector<uint16_t> got(size_t(kv) * R * n);
    std::vector<uint32_t> ghist(size_t(kv) * R * bins), qw(size_t(heads) * W);
    ck(cudaMemcpy(got.data(), ddist, got.size() * 2, cudaMemcpyDeviceToHost), "dist down");
    ck(cudaMemcpy(ghist.data(), dhist, ghist.size() * 4, cudaMemcpyDeviceToHost), "hist down");
    ck(cudaMemcpy(qw.data(), dqw, qw.size() * 4, cudaMemcpyDeviceToHost), "qw down");
    int64_t bad = 0, bad_hist = 0;
    {
      const CodesView cv = CodesView::contiguous(codes.data(), kv, n, D);
      std::vector<uint16_t> ref(size_t(G) * n);
      for (int h = 0; h < kv; ++h) {
        l1_distances_group(reinterpret_cast<const uint8_t*>(qw.data() + size_t(h) * G * W), G, cv, h, 0, n, ref.data(), n);
        std::vector<uint32_t> rh(size_t(R) * bins, 0);
        for (int r = 0; r < R; ++r)
          for (int64_t t = 0; t < n; ++t) {
            int d = 0;
            if (c.shared) for (int g = 0; g < G; ++g) d += ref[size_t(g) * n + t];
            else d = ref[size_t(r) * n + t];
            bad += got[(size_t(h) * R + r) * n + t] != d;
            ++rh[size_t(r) * bins + d];
          }
        for (int i = 0; i < R * bins; ++i) bad_hist += ghist[size_t(h) * R * bins + i] != rh[i];
      }
    }
    const bool ok = bad == 0 && bad_hist == 0;
    failures += !ok;
    p.dist_out = nullptr, p.qw_out = nullptr;
    const double us = timer.median_us(launch, iters);
    const double gbs = double(codes.size()) / (us * 1e3);
    char rows[16];
    std::snprintf(rows, sizeof rows, "%s%s", c.shared ? "shared" : G == 1 ? "mha" : "per-head", c.vec ? "" : ",u32");
    std::printf("%-5d %-2d %-12s %-6s %9.2f %9.0f %6.1f%% %s", D, G, rows, method_name(c.method), us, gbs,
                100.0 * gbs / copy_gbs, ok ? "ok" : "FAIL");
    if (!ok) std::printf(" (%lld distances, %lld histogram bins differ)", (long long)bad, (long long)bad_hist);
    std::printf("\n");
    ck(cudaFree(dcodes), "free"), ck(cudaFree(dq), "free"), ck(cudaFree(dhist), "free");
    ck(cudaFree(ddist), "free"), ck(cudaFree(dqw), "free");
  }
  std::printf("\n%s\n", failures ? "bench_distance: FAILED checks" : "bench_distance: all checks passed");
  return failures ? 1 : 0;
}
