// CUDA kernels vs the CPU implementation of the same functions, on fresh random inputs (seed printed on failure;
// ADAMAS_TEST_SEED=<n> reruns one). Output buffers are poisoned (0xFF bytes) before every launch. Codes and
// selections must be identical; attention within 2e-5 relative (f32 accumulation in a different order).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "adamas/attention.h"
#include "adamas/cuda_attention.h"
#include "attention/cuda/cluster_attention.h"
#include "attention/cuda/scoped_env.h"
#include "attention/cuda/stream_attention.h"

namespace {

using namespace adamas;

#define SKIP_WITHOUT_GPU()                                                          \
  do {                                                                              \
    if (!adamas::cuda::device_available()) GTEST_SKIP() << "no CUDA device: CUDA test skipped"; \
  } while (0)

uint32_t fresh_seed() {
  if (const char* s = std::getenv("ADAMAS_TEST_SEED")) return uint32_t(std::strtoul(s, nullptr, 10));
  return std::random_device{}();
}
#define SEEDED_RNG(rng)                                                                                \
  const uint32_t rng##_seed = fresh_seed();                                                            \
  SCOPED_TRACE(::testing::Message() << "seed=" << rng##_seed << " (rerun: ADAMAS_TEST_SEED=" << rng##_seed << ")"); \
  std::mt19937 rng(rng##_seed)

void ck(cudaError_t e, const char* what) { ASSERT_EQ(e, cudaSuccess) << what << ": " << cudaGetErrorString(e); }

template <class T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) {
    if (cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)) != cudaSuccess) throw std::runtime_error("cudaMalloc");
  }
  Dev(const std::vector<T>& h) : Dev(h.size()) { upload(h); }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  void upload(const std::vector<T>& h) { cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice); }
  void poison() { cudaMemset(p, 0xFF, std::max<size_t>(n, 1) * sizeof(T)); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
  }
};

void sync_ok() {
  ck(cudaGetLastError(), "launch");
  ck(cudaDeviceSynchronize(), "synchronize");
}

uint16_t f32_to_half_bits(float f, DType dt) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (dt == DType::bf16) {
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
  }
  // f16, round to nearest even (values here are normal and in range)
  const uint32_t sign = (u >> 16) & 0x8000u, au = u & 0x7fffffffu;
  if (au < 0x38800000u) return uint16_t(sign);  // tiny: flush (not produced by the generators)
  uint32_t r = au + 0xfffu + ((au >> 13) & 1u) - (112u << 23);
  return uint16_t(sign | (r >> 13));
}

// Random K or V storage [heads][tokens][dim] of a 16-bit dtype, N(0, sigma) plus an outlier channel.
std::vector<uint16_t> random_kv(std::mt19937& rng, DType dt, int64_t heads, int64_t tokens, int64_t dim,
                                double sigma) {
  std::normal_distribution<double> nd(0.0, sigma);
  std::vector<uint16_t> out(size_t(heads * tokens * dim));
  for (size_t i = 0; i < out.size(); ++i) {
    double x = nd(rng);
    if (i % dim == 3) x *= 6;  // an outlier channel, as in real keys
    out[i] = f32_to_half_bits(float(x), dt);
  }
  return out;
}

std::vector<float> random_f32(std::mt19937& rng, size_t n, double sigma) {
  std::normal_distribution<double> nd(0.0, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = float(nd(rng));
  return v;
}

Thresholds random_thresholds(std::mt19937& rng) {
  std::uniform_real_distribution<float> u(0.2f, 1.5f);
  const float mid = std::uniform_real_distribution<float>(-0.3f, 0.3f)(rng);
  return {mid - u(rng), mid, mid + u(rng)};
}

// ---------------------------------------------------------------------------------------------------------------

class CudaDims : public ::testing::TestWithParam<std::tuple<int, DType>> {};

TEST_P(CudaDims, EncodeKeysBitIdentical) {
  SKIP_WITHOUT_GPU();
  SEEDED_RNG(rng);
  const auto [dim, dt] = GetParam();
  const int64_t heads = 5, tokens = 777, begin = 100, end = 700;
  auto k = random_kv(rng, dt, heads, tokens, dim, 1.0);
  std::vector<Thresholds> thr(heads);
  for (auto& t : thr) t = random_thresholds(rng);
  // CPU reference over [begin, end) (other rows stay 0xFF on both sides)
  std::vector<uint8_t> ref(size_t(heads * tokens * dim / 4), 0xFF);
  const HeadsView kh = HeadsView::contiguous(k.data(), dt, heads, tokens, dim);
  encode_keys(kh, begin, end, thr, MutCodesView::contiguous(ref.data(), heads, tokens, dim));
  Dev<uint16_t> dk(k);
  Dev<Thresholds> dthr(thr);
  Dev<uint8_t> dcodes(ref.size());
  dcodes.poison();
  cuda::encode_keys(HeadsView::contiguous(dk.p, dt, heads, tokens, dim), begin, end, dthr.p, heads,
                    MutCodesView::contiguous(dcodes.p, heads, tokens, dim), nullptr);
  sync_ok();
  const auto got = dcodes.download();
  size_t diff = 0;
  for (size_t i = 0; i < ref.size(); ++i) diff += got[i] != ref[i];
  EXPECT_EQ(diff, 0u) << "code bytes differ from the CPU's";
  // and with one shared threshold set (the paper's defaults, on scaled keys so all buckets occur)
  auto k2 = random_kv(rng, dt, heads, tokens, dim, 12.0);
  dk.upload(k2);
  const std::vector<Thresholds> one{Thresholds{}};
  Dev<Thresholds> done(one);
  std::fill(ref.begin(), ref.end(), 0xFF);
  encode_keys(HeadsView::contiguous(k2.data(), dt, heads, tokens, dim), 0, tokens, one,
              MutCodesView::contiguous(ref.data(), heads, tokens, dim));
  dcodes.poison();
  cuda::encode_keys(HeadsView::contiguous(dk.p, dt, heads, tokens, dim), 0, tokens, done.p, 1,
                    MutCodesView::contiguous(dcodes.p, heads, tokens, dim), nullptr);
  sync_ok();
  EXPECT_EQ(dcodes.download(), ref);
}

TEST_P(CudaDims, EncodeQueriesBitIdentical) {
  SKIP_WITHOUT_GPU();
  SEEDED_RNG(rng);
  const int dim = std::get<0>(GetParam());
  const int64_t n = 300;
  auto q = random_f32(rng, size_t(n * dim), 1.0);
  std::vector<Thresholds> thr(n);
  for (auto& t : thr) t = random_thresholds(rng);
  std::vector<uint8_t> ref(size_t(n * dim / 4));
  for (int64_t i = 0; i < n; ++i) encode_vector(q.data() + i * dim, DType::f32, dim, thr[i], ref.data() + i * dim / 4);
  Dev<float> dq(q);
  Dev<Thresholds> dthr(thr);
  Dev<uint8_t> dc(ref.size());
  dc.poison();
  cuda::encode_vectors(dq.p, DType::f32, n, dim, dim, dthr.p, n, dc.p, nullptr);
  sync_ok();
  EXPECT_EQ(dc.download(), ref);
}

TEST_P(CudaDims, L1DistancesExact) {
  SKIP_WITHOUT_GPU();
  SEEDED_RNG(rng);
  const int dim = std::get<0>(GetParam());
  const int64_t heads = 3, tokens = 5000;
  std::vector<uint8_t> codes(size_t(heads * tokens * dim / 4)), qc(size_t(dim / 4));
  for (auto& c : codes) c = uint8_t(rng());
  for (auto& c : qc) c = uint8_t(rng());
  const CodesView cv = CodesView::contiguous(codes.data(), heads, tokens, dim);
  std::vector<uint16_t> ref(tokens);
  l1_distances(qc.data(), cv, 1, ref.data());
  Dev<uint8_t> dcodes(codes), dq(qc);
  Dev<uint16_t> dout{size_t(tokens)};
  dout.poison();
  cuda::l1_distances(dq.p, CodesView::contiguous(dcodes.p, heads, tokens, dim), 1, dout.p, nullptr);
  sync_ok();
  EXPECT_EQ(dout.download(), ref);
}

INSTANTIATE_TEST_SUITE_P(All, CudaDims,
                         ::testing::Combine(::testing::Values(64, 128, 256),
                                            ::testing::Values(DType::f16, DType::bf16)),
                         [](const auto& info) {
                           return "d" + std::to_string(std::get<0>(info.param)) + "_" +
                                  dtype_name(std::get<1>(info.param));
                         });

// ---------------------------------------------------------------------------------------------------------------
// A batch on the device: K, V, codes per sequence (CPU-encoded: the encoder test shows the GPU's are the same).

struct Case {
  int dim = 128;
  int n_heads = 8, kv_heads = 8;
  DType dt = DType::f16;
  std::vector<int64_t> lens;
  double key_sigma = 1.0;
  int code_mode = 0;  // 0: codes of K; 1: random bytes; 2: all one value (all ties); 3: 4 distinct code rows
};

struct Batch {
  Case c;
  std::vector<std::vector<uint16_t>> k, v;
  std::vector<std::vector<uint8_t>> codes;
  std::vector<float> q;  // [batch][n_heads][dim]
  std::vector<std::unique_ptr<Dev<uint16_t>>> dk, dv;
  std::vector<std::unique_ptr<Dev<uint8_t>>> dcodes;
  std::unique_ptr<Dev<float>> dq;
  std::vector<cuda::SequenceCache> seqs;

  Batch(const Case& cs, std::mt19937& rng, const Thresholds& thr) : c(cs) {
    const int64_t D = c.dim;
    for (int64_t n : c.lens) {
      k.push_back(random_kv(rng, c.dt, c.kv_heads, n, D, c.key_sigma));
      v.push_back(random_kv(rng, c.dt, c.kv_heads, n, D, 1.0));
      std::vector<uint8_t> cd(size_t(c.kv_heads * n * D / 4));
      if (c.code_mode == 0) {
        const std::vector<Thresholds> one{thr};
        encode_keys(HeadsView::contiguous(k.back().data(), c.dt, c.kv_heads, n, D), 0, n, one,
                    MutCodesView::contiguous(cd.data(), c.kv_heads, n, D));
      } else if (c.code_mode == 1) {
        for (auto& x : cd) x = uint8_t(rng());
      } else if (c.code_mode == 2) {
        std::fill(cd.begin(), cd.end(), uint8_t(0x5A));
      } else {
        std::vector<uint8_t> rows(size_t(4 * D / 4));
        for (auto& x : rows) x = uint8_t(rng());
        for (int64_t r = 0; r < c.kv_heads * n; ++r) {
          const int pick = int(rng() % 4);
          std::memcpy(cd.data() + r * D / 4, rows.data() + pick * D / 4, size_t(D / 4));
        }
      }
      codes.push_back(std::move(cd));
    }
    q = random_f32(rng, size_t(c.lens.size() * c.n_heads * D), 1.0);
    for (size_t b = 0; b < c.lens.size(); ++b) {
      dk.push_back(std::make_unique<Dev<uint16_t>>(k[b]));
      dv.push_back(std::make_unique<Dev<uint16_t>>(v[b]));
      dcodes.push_back(std::make_unique<Dev<uint8_t>>(codes[b]));
      const int64_t n = c.lens[b];
      seqs.push_back({HeadsView::contiguous(dk[b]->p, c.dt, c.kv_heads, n, D),
                      HeadsView::contiguous(dv[b]->p, c.dt, c.kv_heads, n, D),
                      CodesView::contiguous(dcodes[b]->p, c.kv_heads, n, D)});
    }
    dq = std::make_unique<Dev<float>>(q);
  }
  cuda::BatchInputs inputs() const { return {dq->p, c.n_heads, seqs, nullptr}; }
  DecodeInputs cpu_inputs(size_t b) const {
    DecodeInputs in;
    in.q = q.data() + b * c.n_heads * c.dim;
    in.n_heads = c.n_heads;
    const int64_t n = c.lens[b];
    in.k = HeadsView::contiguous(k[b].data(), c.dt, c.kv_heads, n, c.dim);
    in.v = HeadsView::contiguous(v[b].data(), c.dt, c.kv_heads, n, c.dim);
    in.codes = CodesView::contiguous(codes[b].data(), c.kv_heads, n, c.dim);
    return in;
  }
};

// The CPU's selection for (sequence b, unit u): its own query codes, l1 distances, (sum), select_topk.
std::vector<int32_t> cpu_selection(const Batch& bt, size_t b, int64_t unit, const AttentionConfig& cfg) {
  const DecodeInputs in = bt.cpu_inputs(b);
  const int64_t D = bt.c.dim, n = in.k.tokens, g = bt.c.n_heads / bt.c.kv_heads;
  const bool shared = cfg.group == GroupSelection::shared_sum;
  std::vector<uint32_t> acc(size_t(n), 0);
  const int64_t h0 = shared ? unit * g : unit, h1 = shared ? h0 + g : h0 + 1;
  std::vector<uint16_t> d(static_cast<size_t>(n));
  for (int64_t h = h0; h < h1; ++h) {
    std::vector<uint8_t> qc(size_t(D / 4));
    encode_vector(in.q + h * D, DType::f32, D, cfg.thresholds, qc.data());
    l1_distances(qc.data(), in.codes, h / g, d.data());
    for (int64_t j = 0; j < n; ++j) acc[j] += d[j];
  }
  for (int64_t j = 0; j < n; ++j) d[j] = uint16_t(acc[j]);
  std::vector<int32_t> out(size_t(std::min(cfg.budget, n)));
  const int64_t m = select_topk(d.data(), n, int(3 * D * (shared ? g : 1)),
                                {cfg.budget, cfg.sink, cfg.window}, out.data());
  out.resize(size_t(m));
  return out;
}

// A selection on the device (sel) against the CPU's, every (sequence, unit).
void expect_view_matches(const Batch& bt, const AttentionConfig& cfg, const cuda::SelectionView& sel) {
  std::vector<int32_t> idx(size_t(sel.batch * sel.units * sel.capacity)), cnt(size_t(sel.batch * sel.units));
  ck(cudaMemcpy(idx.data(), sel.indices, idx.size() * 4, cudaMemcpyDeviceToHost), "copy idx");
  ck(cudaMemcpy(cnt.data(), sel.counts, cnt.size() * 4, cudaMemcpyDeviceToHost), "copy counts");
  for (size_t b = 0; b < bt.c.lens.size(); ++b)
    for (int64_t u = 0; u < sel.units; ++u) {
      const auto ref = cpu_selection(bt, b, u, cfg);
      const int64_t row = int64_t(b) * sel.units + u;
      ASSERT_EQ(cnt[row], int32_t(ref.size())) << "sequence " << b << " unit " << u;
      const std::vector<int32_t> got(idx.begin() + row * sel.capacity, idx.begin() + row * sel.capacity + cnt[row]);
      if (got != ref) {  // the first differing slot and its neighbourhood (the gtest print stops at 32 entries)
        size_t i = 0;
        while (i < got.size() && got[i] == ref[i]) ++i;
        std::string near;
        for (size_t k = i >= 3 ? i - 3 : 0; k < std::min(got.size(), i + 6); ++k)
          near += " [" + std::to_string(k) + "] " + std::to_string(got[k]) + "/" + std::to_string(ref[k]);
        ADD_FAILURE() << "first difference at slot " << i << " (got/ref):" << near;
      }
      ASSERT_EQ(got, ref) << "sequence " << b << " (n = " << bt.c.lens[b] << ") unit " << u;
    }
}

void expect_selection_matches(const Batch& bt, const AttentionConfig& cfg, cuda::Workspace& ws) {
  const cuda::SelectionView sel = cuda::select(bt.inputs(), cfg, ws, nullptr);
  sync_ok();
  expect_view_matches(bt, cfg, sel);
}

struct SelectCase {
  const char* name;
  Case c;
  int64_t budget, sink, window;
  GroupSelection group;
};

std::vector<SelectCase> select_cases() {
  std::vector<SelectCase> v;
  v.push_back({"mha_d128", {128, 8, 8, DType::f16, {20000}, 1.0, 0}, 256, 0, 0, GroupSelection::per_head});
  v.push_back({"mha_d128_sink_window", {128, 4, 4, DType::f16, {9000}, 1.0, 0}, 300, 4, 32, GroupSelection::per_head});
  v.push_back({"gqa4_d128_batch", {128, 8, 2, DType::bf16, {5000, 70, 13000, 4096, 4097}, 1.0, 0}, 1000, 2, 8,
               GroupSelection::per_head});
  v.push_back({"gqa4_shared_sum", {128, 8, 2, DType::f16, {12000, 3000}, 1.0, 0}, 512, 1, 1,
               GroupSelection::shared_sum});
  v.push_back({"gqa8_d64_random_codes", {64, 16, 2, DType::f16, {30000}, 1.0, 1}, 4096, 0, 0, GroupSelection::per_head});
  v.push_back({"d256_random_codes", {256, 2, 2, DType::f16, {17000, 500}, 1.0, 1}, 128, 3, 3, GroupSelection::per_head});
  v.push_back({"all_ties", {128, 2, 2, DType::f16, {10000}, 1.0, 2}, 700, 5, 10, GroupSelection::per_head});
  v.push_back({"few_distances", {128, 4, 2, DType::f16, {40000, 9999}, 1.0, 3}, 2000, 0, 1, GroupSelection::per_head});
  v.push_back({"few_distances_shared", {64, 8, 1, DType::f16, {25000}, 1.0, 3}, 64, 0, 0, GroupSelection::shared_sum});
  v.push_back({"budget_covers_all", {128, 4, 4, DType::f16, {300, 256, 4000}, 1.0, 0}, 512, 0, 0, GroupSelection::per_head});
  v.push_back({"budget_one", {128, 2, 2, DType::f16, {5000}, 1.0, 0}, 1, 0, 0, GroupSelection::per_head});
  // v8: the tensor-core distance pass (G = 2 and 4) at every head dimension, per head and shared
  v.push_back({"gqa4_d64", {64, 8, 2, DType::f16, {9000, 33}, 1.0, 0}, 300, 2, 4, GroupSelection::per_head});
  v.push_back({"gqa4_d256_bf16", {256, 8, 2, DType::bf16, {5000, 17}, 1.0, 0}, 128, 0, 3, GroupSelection::per_head});
  v.push_back({"gqa2_d256_shared_random_codes", {256, 4, 2, DType::f16, {7000}, 1.0, 1}, 200, 1, 2,
               GroupSelection::shared_sum});
  v.push_back({"gqa2_d64_shared_few_distances", {64, 4, 2, DType::f16, {6000}, 1.0, 3}, 100, 0, 0,
               GroupSelection::shared_sum});
  v.push_back({"gqa4_d128_shared_random_codes", {128, 16, 4, DType::f16, {11000}, 1.0, 1}, 256, 3, 5,
               GroupSelection::shared_sum});
  return v;
}

// Select paths (ADAMAS_CUDA_SELECT): "" = automatic (grid kernel where its blocks are all resident, else the fused
// cluster kernel where it fits), v1 = the two-launch path, fused:C = the fused kernel with clusters of C blocks,
// grid:P = the grid kernel with P blocks per (sequence, KV head) (both fall back when the rows do not fit).
class SelectPathEnv {
 public:
  explicit SelectPathEnv(const char* v) {
    if (v[0]) setenv("ADAMAS_CUDA_SELECT", v, 1);
    else unsetenv("ADAMAS_CUDA_SELECT");
  }
  ~SelectPathEnv() { unsetenv("ADAMAS_CUDA_SELECT"); }
};

TEST(CudaSelect, IdenticalToCpu) {
  SKIP_WITHOUT_GPU();
  SEEDED_RNG(rng);
  cuda::Workspace ws;
  for (const auto& sc : select_cases()) {
    SCOPED_TRACE(sc.name);
    AttentionConfig cfg;
    cfg.budget = sc.budget, cfg.sink = sc.sink, cfg.window = sc.window, cfg.group = sc.group;
    cfg.thresholds = {-0.6f, 0.0f, 0.6f};
    Batch bt(sc.c, rng, cfg.thresholds);
    expect_selection_matches(bt, cfg, ws);
    // twice on the same workspace: the kernels leave their scratch clean
    expect_selection_matches(bt, cfg, ws);
  }
}

TEST(CudaSelect, EveryPathAndClusterSizeIdenticalToCpu) {
  SKIP_WITHOUT_GPU();
  SEEDED_RNG(rng);
  cuda::Workspace ws;
  for (const char* path :
       {"v1", "fused:1", "fused:2", "fused:4", "fused:8", "fused:16", "grid:1", "grid:2", "grid:5", "grid:16", "stream"}) {
    const SelectPathEnv env(path);
    for (const auto& sc : select_cases()) {
      SCOPED_TRACE(std::string(path) + " " + sc.name);
      AttentionConfig cfg;
      cfg.budget = sc.budget, cfg.sink = sc.sink, cfg.window = sc.window, cfg.group = sc.group;
      cfg.thresholds = {-0.6f, 0.0f, 0.6f};
      Batch bt(sc.c, rng, cfg.thresholds);
      expect_selection_matches(bt, cfg, ws);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------

double rel_err(const std::vector<float>& got, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

constexpr double kTol = 2e-5;

struct AttnCase {
  const char* name;
  Case c;
};

std::vector<AttnCase> attn_cases() {
  return {{"mha_d128_f16", {128, 8, 8, DType::f16, {5000}}},
          {"mha_d128_bf16_batch", {128, 4, 4, DType::bf16, {3000, 17, 1, 9000}}},
          {"gqa4_d128", {128, 16, 4, DType::f16, {20000, 64}}},
          {"gqa8_d64", {64, 16, 2, DType::bf16, {7000}}},
          {"gqa2_d256", {256, 4, 2, DType::f16, {4000, 333}}}};
}

// Dense attention adds the group kernel's shapes (v7, dense_group.cu: head_dim 64/128, groups 1 to 8, SmolLM2's 3):
// sequences shorter than, equal to and just past a warp's tile and a block's 4 tiles, and long ones split in chunks.
std::vector<AttnCase> dense_cases() {
  auto v = attn_cases();
  v.push_back({"gqa3_d64_f16_smollm2", {64, 9, 3, DType::f16, {6000, 31, 33, 129}}});
  v.push_back({"gqa3_d128_bf16_batch", {128, 6, 2, DType::bf16, {1, 4500, 16, 65}}});
  v.push_back({"gqa4_d128_bf16_batch", {128, 32, 8, DType::bf16, {12000, 63, 64, 2}}});
  v.push_back({"gqa8_d128_f16", {128, 16, 2, DType::f16, {9000, 300}}});
  v.push_back({"mha_d64_bf16", {64, 4, 4, DType::bf16, {7000, 5}}});
  v.push_back({"gqa5_d128_f16", {128, 10, 2, DType::f16, {3333}}});
  return v;
}

// Dense paths: "" = the group kernel where it covers the shape, else v6; "ADAMAS_CUDA_DENSE=v6" = v6's kernel; the
// others are the group kernel's launch knobs (dense_group.cu), settings "NAME=VALUE" separated by commas: both row
// layouts, one and two blocks per SM, 2 to 4 pipeline stages, splits from 2 to 40 blocks per (sequence, KV head).
// v9: the default merges a unit's blocks in a cluster where they are 2 to 8 and all clusters fit (the paths of 3 to
// 8 blocks per unit, as far as they fit; the default's 8 blocks of 4 stages where 8 to 14 units would get more than
// 8 blocks each: 5 of the cases here), MERGE=cluster requires it (2 and 4 blocks: they fit in every case here),
// MERGE=global and ADAMAS_CUDA_DENSE=v8 (v8's parameter, fences and merge) never.

// The env variable `var`, when set ("default;NAME=VALUE,...;..."), replaces a test's list of paths (for the slow
// sanitizer runs); "default" is the empty setting.
std::vector<std::string> paths_from_env(const char* var, std::vector<std::string> v) {
  if (const char* only = std::getenv(var)) {
    v.clear();
    const std::string list = only;
    for (size_t b = 0; b <= list.size();) {
      const size_t e = std::min(list.find(';', b), list.size());
      const std::string item = list.substr(b, e - b);
      if (!item.empty()) v.push_back(item == "default" ? "" : item);
      b = e + 1;
    }
  }
  return v;
}

// Whether the env variable `var` is unset or lists `name` among its ';'-separated entries.
bool case_listed(const char* var, const std::string& name) {
  const char* list = std::getenv(var);
  if (list == nullptr) return true;
  const std::string l = std::string(";") + list + ";";
  return l.find(";" + name + ";") != std::string::npos;
}

// ADAMAS_TEST_DENSE_PATHS="default;NAME=VALUE,...;..." runs only the listed paths (for the slow sanitizer runs).
std::vector<std::string> dense_paths() {
  std::vector<std::string> v = {
      "", "ADAMAS_CUDA_DENSE=v6", "ADAMAS_CUDA_DENSE_LAYOUT=chunks,ADAMAS_CUDA_DENSE_SPLIT=5",
      "ADAMAS_CUDA_DENSE_SPLIT=3,ADAMAS_CUDA_DENSE_OCC=2", "ADAMAS_CUDA_DENSE_SPLIT=40", "ADAMAS_CUDA_DENSE_STAGES=3",
      "ADAMAS_CUDA_DENSE_STAGES=4,ADAMAS_CUDA_DENSE_SPLIT=7", "ADAMAS_CUDA_DENSE_STAGES=3,ADAMAS_CUDA_DENSE_OCC=2",
      "ADAMAS_CUDA_DENSE=v8", "ADAMAS_CUDA_DENSE_MERGE=cluster,ADAMAS_CUDA_DENSE_SPLIT=2",
      "ADAMAS_CUDA_DENSE_MERGE=cluster,ADAMAS_CUDA_DENSE_SPLIT=4,ADAMAS_CUDA_DENSE_OCC=2,ADAMAS_CUDA_DENSE_PARAM=full",
      "ADAMAS_CUDA_DENSE_MERGE=global,ADAMAS_CUDA_DENSE_STAGES=3,ADAMAS_CUDA_DENSE_PARAM=full",
      "ADAMAS_CUDA_DENSE_FENCE=all,ADAMAS_CUDA_DENSE_SPLIT=12"};
  return paths_from_env("ADAMAS_TEST_DENSE_PATHS", std::move(v));
}

TEST(CudaAttend, DenseMatchesCpu) {
  SKIP_WITHOUT_GPU();
  SEEDED_RNG(rng);
  cuda::Workspace ws;
  for (const std::string& path : dense_paths()) {
    const cuda::ScopedEnvSettings env(path);
    const bool v6 = path == "ADAMAS_CUDA_DENSE=v6";
    for (const auto& ac : dense_cases()) {
      const int g = ac.c.n_heads / ac.c.kv_heads;
      if (v6 && g != 1 && g != 2 && g != 4 && g != 8) continue;  // v6 takes groups 1, 2, 4, 8
      SCOPED_TRACE(std::string(ac.name) + " " + path);
      Batch bt(ac.c, rng, Thresholds{});
      const int64_t D = ac.c.dim, H = ac.c.n_heads, B = int64_t(ac.c.lens.size());
      const float scale = 1.0f / std::sqrt(float(D));
      std::vector<float> ref(size_t(B * H * D));
      for (int64_t b = 0; b < B; ++b) {
        const DecodeInputs in = bt.cpu_inputs(size_t(b));
        attend_dense_decode(in.q, H, in.k, in.v, scale, ref.data() + b * H * D);
      }
      // twice on the same workspace: the merge's arrival counters are left at zero
      for (int rep = 0; rep < 2; ++rep) {
        Dev<float> dout(size_t(B * H * D));
        dout.poison();
        cuda::attend_dense(bt.inputs(), scale, ws, dout.p, nullptr);
        sync_ok();
        EXPECT_LT(rel_err(dout.download(), ref), kTol) << "call " << rep;
      }
    }
  }
}

TEST(CudaAttend, DenseKnobsRejectBadValues) {
  SKIP_WITHOUT_GPU();
  SEEDED_RNG(rng);
  cuda::Workspace ws;
  const Batch bt(Case{128, 8, 2, DType::f16, {3000}}, rng, Thresholds{});
  Dev<float> dout(size_t(8 * 128));
  for (const std::string bad : {"ADAMAS_CUDA_DENSE_STAGES=5", "ADAMAS_CUDA_DENSE_STAGES=4,ADAMAS_CUDA_DENSE_OCC=2",
                                "ADAMAS_CUDA_DENSE=v9", "ADAMAS_CUDA_DENSE_MERGE=dsmem", "ADAMAS_CUDA_DENSE_FENCE=some",
                                "ADAMAS_CUDA_DENSE_PARAM=small",
                                "ADAMAS_CUDA_DENSE_MERGE=cluster,ADAMAS_CUDA_DENSE_SPLIT=40"}) {  // 40 > 8 blocks
    const cuda::ScopedEnvSettings env(bad);
    try {
      cuda::attend_dense(bt.inputs(), 0.088f, ws, dout.p, nullptr);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad.substr(0, bad.find('='))), std::string::npos) << e.what();
    }
  }
}

TEST(CudaAttend, GroupOfThreeOnlyForDenseAt64And128) {
  SKIP_WITHOUT_GPU();
  SEEDED_RNG(rng);
  cuda::Workspace ws;
  AttentionConfig cfg;
  cfg.budget = 64, cfg.thresholds = {-0.6f, 0.0f, 0.6f};
  const Batch d256(Case{256, 6, 2, DType::f16, {100}}, rng, cfg.thresholds);
  Dev<float> dout(size_t(6 * 256));
  const auto is_group_error = [](const Error& e) { return std::string(e.what()).find("GQA group of 3") != std::string::npos; };
  try {
    cuda::attend_dense(d256.inputs(), 0.0625f, ws, dout.p, nullptr);
    ADD_FAILURE() << "head_dim 256 with a group of 3 was accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(is_group_error(e)) << e.what();
  }
  const Batch d128(Case{128, 6, 2, DType::f16, {100}}, rng, cfg.thresholds);
  try {
    cuda::select(d128.inputs(), cfg, ws, nullptr);
    ADD_FAILURE() << "selection with a group of 3 was accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(is_group_error(e)) << e.what();
  }
}

// Sparse attend merges (ADAMAS_CUDA_ATTEND_NO_CLUSTER): unset = chunks of a unit merge in a cluster where all
// clusters fit; set = the last block merges the partials from global memory (the path of large batches).
class AttendMergeEnv {
 public:
  explicit AttendMergeEnv(bool no_cluster) {
    if (no_cluster) setenv("ADAMAS_CUDA_ATTEND_NO_CLUSTER", "1", 1);
    else unsetenv("ADAMAS_CUDA_ATTEND_NO_CLUSTER");
  }
  ~AttendMergeEnv() { unsetenv("ADAMAS_CUDA_ATTEND_NO_CLUSTER"); }
};

TEST(CudaAttend, SelectedRowsMatchCpu) {
  SKIP_WITHOUT_GPU();
  SEEDED_RNG(rng);
  cuda::Workspace ws;
  for (const auto& ac : attn_cases()) {
    for (GroupSelection gs : {GroupSelection::per_head, GroupSelection::shared_sum}) {
      for (int64_t budget : {64, 1000, 4096}) {
        for (bool no_cluster : {false, true}) {
          const AttendMergeEnv env(no_cluster);
          SCOPED_TRACE(std::string(ac.name) + " " + group_selection_name(gs) + " budget " + std::to_string(budget) +
                       (no_cluster ? " (global merge)" : ""));
          AttentionConfig cfg;
          cfg.budget = budget, cfg.group = gs, cfg.thresholds = {-0.6f, 0.0f, 0.6f};
          Batch bt(ac.c, rng, cfg.thresholds);
          const int64_t D = ac.c.dim, H = ac.c.n_heads, B = int64_t(ac.c.lens.size()), g = H / ac.c.kv_heads;
          const float scale = 1.0f / std::sqrt(float(D));
          const cuda::SelectionView sel = cuda::select(bt.inputs(), cfg, ws, nullptr);
          Dev<float> dout(size_t(B * H * D));
          dout.poison();
          cuda::attend_selected(bt.inputs(), cfg, ws, scale, dout.p, nullptr);
          sync_ok();
          const auto got = dout.download();
          std::vector<int32_t> idx(size_t(sel.batch * sel.units * sel.capacity)), cnt(size_t(sel.batch * sel.units));
          ck(cudaMemcpy(idx.data(), sel.indices, idx.size() * 4, cudaMemcpyDeviceToHost), "idx");
          ck(cudaMemcpy(cnt.data(), sel.counts, cnt.size() * 4, cudaMemcpyDeviceToHost), "cnt");
          std::vector<float> ref(size_t(B * H * D));
          for (int64_t b = 0; b < B; ++b) {
            const DecodeInputs in = bt.cpu_inputs(size_t(b));
            for (int64_t h = 0; h < H; ++h) {
              const int64_t row = b * sel.units + (sel.shared ? h / g : h);
              attend_rows(in.q + h * D, in.k, in.v, h / g, idx.data() + row * sel.capacity, cnt[row], scale,
                          ref.data() + (b * H + h) * D);
            }
          }
          EXPECT_LT(rel_err(got, ref), kTol);
        }
      }
    }
  }
}

// cuda::decode_attention of a batch into a poisoned output, and the CPU's decode_attention of each sequence.
std::vector<float> gpu_decode(const Batch& bt, const AttentionConfig& cfg, cuda::Workspace& ws) {
  Dev<float> dout(size_t(int64_t(bt.c.lens.size()) * bt.c.n_heads * bt.c.dim));
  dout.poison();
  cuda::decode_attention(bt.inputs(), cfg, ws, dout.p, nullptr);
  sync_ok();
  return dout.download();
}
std::vector<float> cpu_decode(const Batch& bt, const AttentionConfig& cfg) {
  const int64_t per_seq = int64_t(bt.c.n_heads) * bt.c.dim;
  std::vector<float> ref(bt.c.lens.size() * size_t(per_seq));
  DecodeWorkspace cws;
  for (size_t b = 0; b < bt.c.lens.size(); ++b) decode_attention(bt.cpu_inputs(b), cfg, cws, ref.data() + b * per_seq);
  return ref;
}

TEST(CudaDecode, MatchesCpuDecodeAttention) {
  SKIP_WITHOUT_GPU();
  SEEDED_RNG(rng);
  cuda::Workspace ws;
  for (const auto& ac : attn_cases()) {
    for (Method m : {Method::full, Method::adamas}) {
      for (GroupSelection gs : {GroupSelection::per_head, GroupSelection::shared_sum}) {
        if (m == Method::full && gs != GroupSelection::per_head) continue;
        SCOPED_TRACE(std::string(ac.name) + " " + method_name(m) + " " + group_selection_name(gs));
        AttentionConfig cfg;
        cfg.method = m, cfg.budget = 256, cfg.sink = 2, cfg.window = 16, cfg.group = gs;
        cfg.thresholds = {-0.6f, 0.0f, 0.6f};
        Batch bt(ac.c, rng, cfg.thresholds);
        EXPECT_LT(rel_err(gpu_decode(bt, cfg, ws), cpu_decode(bt, cfg)), kTol);
      }
    }
  }
}

// AttentionConfig::dense_below: sequences shorter than it attend densely, the others select, in one batch (the
// operator splits it) and in every order; each row against the CPU's decode_attention of its sequence with the same
// config, and the sequences below dense_below against full attention (the rule must have taken effect).
TEST(CudaDecode, DenseBelowSplitsMixedBatches) {
  SKIP_WITHOUT_GPU();
  SEEDED_RNG(rng);
  cuda::Workspace ws;
  const std::vector<std::vector<int64_t>> batches = {
      {3000, 700, 5000, 1500}, {900, 4100}, {2500, 2600, 300}, {1200, 1800}, {6000, 200, 999, 1000, 1001}};
  for (const auto& lens : batches) {
    for (int kvh : {8, 2}) {
      Case c;
      c.dim = 128, c.n_heads = 8, c.kv_heads = kvh, c.lens = lens;
      AttentionConfig cfg;
      cfg.method = Method::adamas, cfg.budget = 256, cfg.dense_below = 1000;
      cfg.thresholds = {-0.6f, 0.0f, 0.6f};
      cfg.group = kvh == 2 ? GroupSelection::shared_sum : GroupSelection::per_head;
      SCOPED_TRACE(testing::Message() << "kv_heads " << kvh << ", " << lens.size() << " sequences from " << lens[0]);
      Batch bt(c, rng, cfg.thresholds);
      const std::vector<float> got = gpu_decode(bt, cfg, ws), want = cpu_decode(bt, cfg);
      EXPECT_LT(rel_err(got, want), kTol);
      AttentionConfig full = cfg;
      full.method = Method::full;
      const std::vector<float> dense = cpu_decode(bt, full);
      const size_t row = size_t(c.n_heads) * c.dim;
      for (size_t b = 0; b < lens.size(); ++b) {
        const std::vector<float> g(got.begin() + b * row, got.begin() + (b + 1) * row);
        const std::vector<float> d(dense.begin() + b * row, dense.begin() + (b + 1) * row);
        if (lens[b] < cfg.dense_below) EXPECT_LT(rel_err(g, d), kTol) << "sequence " << b << " (" << lens[b] << ")";
        else EXPECT_GT(rel_err(g, d), 10 * kTol) << "sequence " << b << " (" << lens[b] << "): selected nothing?";
      }
    }
  }
}

// v8, the stream kernel (ADAMAS_CUDA_SELECT=stream: selection and attention in one persistent launch): the output
// against the CPU's decode_attention and the selection it leaves in the workspace against the CPU's, on one workspace
// for every case and twice per case (its counters and histograms must be left at zero), with the default chunk and
// with 256-token chunks (many chunks per row, rows finishing in every order).
TEST(CudaDecode, StreamPathMatchesCpu) {
  SKIP_WITHOUT_GPU();
  SEEDED_RNG(rng);
  struct StreamCase {
    const char* name;
    Case c;
    int64_t budget, sink, window;
  };
  const std::vector<StreamCase> cases = {
      {"mha_d128_f16", {128, 8, 8, DType::f16, {20000}, 1.0, 0}, 256, 0, 0},
      {"mha_d128_bf16_mixed", {128, 4, 4, DType::bf16, {3000, 17, 1, 9000, 4097}, 1.0, 0}, 256, 2, 16},
      {"mha_d64_f16_sink_window", {64, 4, 4, DType::f16, {30000, 5000}, 1.0, 0}, 1000, 4, 32},
      {"gqa4_d128_per_head", {128, 8, 2, DType::f16, {12000, 64}, 1.0, 0}, 512, 1, 1},
      {"gqa2_d64_bf16", {64, 4, 2, DType::bf16, {7000}, 1.0, 0}, 64, 0, 3},
      {"all_ties", {128, 2, 2, DType::f16, {10000}, 1.0, 2}, 700, 5, 10},
      {"few_distances", {128, 4, 4, DType::f16, {40000, 9999}, 1.0, 3}, 2000, 0, 1},
      {"budget_4096_covers_some", {128, 2, 2, DType::bf16, {5000, 4096, 300}, 1.0, 0}, 4096, 0, 0},
      {"budget_one", {128, 2, 2, DType::f16, {5000}, 1.0, 0}, 1, 0, 0},
  };
  cuda::Workspace ws;
  for (const std::string path : {"ADAMAS_CUDA_SELECT=stream", "ADAMAS_CUDA_SELECT=stream,ADAMAS_CUDA_STREAM_CHUNK=256",
                                 "ADAMAS_CUDA_SELECT=stream,ADAMAS_CUDA_STREAM_COMPACT=warp",
                                 "ADAMAS_CUDA_SELECT=stream,ADAMAS_CUDA_STREAM_CHUNK=256,ADAMAS_CUDA_STREAM_FENCE=one"}) {
    const cuda::ScopedEnvSettings env(path);
    for (const auto& sc : cases) {
      SCOPED_TRACE(std::string(sc.name) + " " + path);
      AttentionConfig cfg;
      cfg.method = Method::adamas, cfg.budget = sc.budget, cfg.sink = sc.sink, cfg.window = sc.window;
      cfg.thresholds = {-0.6f, 0.0f, 0.6f};
      Batch bt(sc.c, rng, cfg.thresholds);
      const auto ref = cpu_decode(bt, cfg);
      for (int rep = 0; rep < 2; ++rep) {
        EXPECT_LT(rel_err(gpu_decode(bt, cfg, ws), ref), kTol) << "call " << rep;
        expect_view_matches(bt, cfg, cuda::last_selection(ws));
      }
      expect_selection_matches(bt, cfg, ws);  // the selection-only instantiation (cuda::select)
    }
  }
}

// v9, the cluster kernel (one thread-block cluster per (sequence, KV head), select + attend in one launch): the
// output against the CPU's decode_attention and the selection it leaves in the workspace against the CPU's (indices
// poisoned before every call after the first), then the selection-only instantiation (cuda::select). Every case must
// take the cluster path (asserted), with the automatic cluster size and with forced sizes of 2, 3 and 7 blocks (odd
// token splits, blocks holding only forced tokens or none at all).
TEST(CudaDecode, ClusterPathMatchesCpu) {
  SKIP_WITHOUT_GPU();
  SEEDED_RNG(rng);
  struct ClusterCase {
    const char* name;
    Case c;
    int64_t budget, sink, window;
    GroupSelection group;
  };
  const auto per_head = GroupSelection::per_head, shared = GroupSelection::shared_sum;
  const std::vector<ClusterCase> cases = {
      {"mha_d128_f16", {128, 8, 8, DType::f16, {20000}, 1.0, 0}, 256, 0, 0, per_head},
      {"mha_d128_bf16_mixed", {128, 4, 4, DType::bf16, {3000, 17, 1, 9000, 4097}, 1.0, 0}, 256, 2, 16, per_head},
      {"mha_d64_f16_sink_window", {64, 4, 4, DType::f16, {30000, 5000}, 1.0, 0}, 1000, 4, 32, per_head},
      {"mha_d128_shared_is_per_head", {128, 4, 4, DType::f16, {6000}, 1.0, 0}, 128, 1, 4, shared},
      {"gqa4_d128_per_head", {128, 8, 2, DType::f16, {12000, 64}, 1.0, 0}, 512, 1, 1, per_head},
      {"gqa4_d128_shared", {128, 16, 4, DType::bf16, {11000, 300}, 1.0, 0}, 256, 3, 5, shared},
      {"gqa2_d64_bf16", {64, 4, 2, DType::bf16, {7000}, 1.0, 0}, 64, 0, 3, per_head},
      {"gqa2_d64_shared_random_codes", {64, 4, 2, DType::f16, {6000}, 1.0, 1}, 100, 0, 0, shared},
      {"all_ties", {128, 2, 2, DType::f16, {10000}, 1.0, 2}, 700, 5, 10, per_head},
      {"few_distances", {128, 4, 4, DType::f16, {40000, 9999}, 1.0, 3}, 2000, 0, 1, per_head},
      {"few_distances_gqa4", {128, 8, 2, DType::f16, {9000}, 1.0, 3}, 300, 0, 0, per_head},
      {"budget_4096_covers_some", {128, 2, 2, DType::bf16, {5000, 4096, 300}, 1.0, 0}, 4096, 0, 0, per_head},
      {"budget_one", {128, 2, 2, DType::f16, {5000}, 1.0, 0}, 1, 0, 0, per_head},
  };
  cuda::Workspace ws;
  // RING=cp.async: the ring fed by per-thread cp.async (the others take bulk copies: contiguous codes); LPT=2: two
  // lanes per token in the MHA pass at d = 128 (v9's layout; one lane by default).
  // ADAMAS_TEST_CLUSTER_PATHS="default;..." runs only the listed ones, ADAMAS_TEST_CLUSTER_CASES="name;name" only
  // the listed cases (racecheck: ~10x slower than memcheck here).
  const auto paths = paths_from_env("ADAMAS_TEST_CLUSTER_PATHS",
                                    {"", "ADAMAS_CUDA_CLUSTER_SIZE=2", "ADAMAS_CUDA_CLUSTER_SIZE=3",
                                     "ADAMAS_CUDA_CLUSTER_SIZE=7", "ADAMAS_CUDA_CLUSTER_RING=cp.async",
                                     "ADAMAS_CUDA_CLUSTER_LPT=2"});
  for (const std::string& size : paths) {
    const cuda::ScopedEnvSettings env("ADAMAS_CUDA_SELECT=cluster" + (size.empty() ? "" : "," + size));
    for (const auto& sc : cases) {
      if (!case_listed("ADAMAS_TEST_CLUSTER_CASES", sc.name)) continue;
      SCOPED_TRACE(std::string(sc.name) + " " + size);
      AttentionConfig cfg;
      cfg.method = Method::adamas, cfg.budget = sc.budget, cfg.sink = sc.sink, cfg.window = sc.window;
      cfg.group = sc.group;
      cfg.thresholds = {-0.6f, 0.0f, 0.6f};
      Batch bt(sc.c, rng, cfg.thresholds);
      // A forced size may leave clusters unresident when there are many (the H100 holds 16-18 blocks per GPC); up to
      // 64 blocks in all, and with the automatic size, the path must be taken.
      const size_t at = size.find("CLUSTER_SIZE=");
      const int forced = at == std::string::npos ? 0 : std::atoi(size.c_str() + at + 13);
      const int64_t blocks = int64_t(sc.c.lens.size()) * sc.c.kv_heads * forced;
      if (forced > 0 && blocks > 64 && !cuda::detail::cluster_selected(bt.inputs(), cfg, true)) {
        std::printf("[ note ] %s with clusters of %d: not all resident, case skipped\n", sc.name, forced);
        continue;
      }
      ASSERT_TRUE(cuda::detail::cluster_selected(bt.inputs(), cfg, true)) << "the cluster path does not take this case";
      ASSERT_TRUE(cuda::detail::cluster_selected(bt.inputs(), cfg, false)) << "the cluster path does not take this case";
      const auto ref = cpu_decode(bt, cfg);
      for (int rep = 0; rep < 2; ++rep) {
        if (rep > 0) {
          const cuda::SelectionView last = cuda::last_selection(ws);
          ck(cudaMemset(const_cast<int32_t*>(last.indices), 0xFF, size_t(last.batch * last.units * last.capacity) * 4), "poison idx");
          ck(cudaMemset(const_cast<int32_t*>(last.counts), 0xFF, size_t(last.batch * last.units) * 4), "poison counts");
        }
        EXPECT_LT(rel_err(gpu_decode(bt, cfg, ws), ref), kTol) << "call " << rep;
        expect_view_matches(bt, cfg, cuda::last_selection(ws));
      }
      const cuda::SelectionView last = cuda::last_selection(ws);
      ck(cudaMemset(const_cast<int32_t*>(last.indices), 0xFF, size_t(last.batch * last.units * last.capacity) * 4), "poison idx");
      expect_selection_matches(bt, cfg, ws);  // the selection-only instantiation (cuda::select)
    }
  }
}

// take_cluster_launch_key: the same call gives the same nonzero key, a batch whose selection runs in clusters of
// another size (the size follows the number of (sequence, KV head) clusters) another. The GPU engine instantiates its
// step graph anew on that change, since cudaGraphExecUpdate would keep the old cluster size (the kernel would hang).
TEST(CudaDecode, ClusterLaunchKeyFollowsTheClusterSize) {
  SKIP_WITHOUT_GPU();
  SEEDED_RNG(rng);
  AttentionConfig cfg;
  cfg.method = Method::adamas, cfg.budget = 256;
  cfg.thresholds = {-0.6f, 0.0f, 0.6f};
  const Batch one({128, 8, 8, DType::f16, {20000}, 1.0, 0}, rng, cfg.thresholds);
  const Batch three({128, 8, 8, DType::f16, {20000, 9000, 15000}, 1.0, 0}, rng, cfg.thresholds);
  ASSERT_TRUE(cuda::detail::cluster_selected(one.inputs(), cfg, true));
  ASSERT_TRUE(cuda::detail::cluster_selected(three.inputs(), cfg, true));
  cuda::Workspace ws;
  auto key_of = [&](const Batch& bt) {
    (void)cuda::take_cluster_launch_key();
    (void)gpu_decode(bt, cfg, ws);
    return cuda::take_cluster_launch_key();
  };
  const uint64_t k1 = key_of(one), k3 = key_of(three);
  EXPECT_NE(k1, 0u);
  EXPECT_EQ(key_of(one), k1);
  EXPECT_NE(k3, k1) << "8 clusters (at most 16 blocks each) and 24 (at most 5) gave the same key";
  EXPECT_EQ(cuda::take_cluster_launch_key(), 0u) << "the key was not reset";
}

// The stream kernel's distance pass on its own (its u16 scratch against the CPU's l1_distances), then its selection,
// with the default grid and with 1 and 3 blocks (rows done by one block, or a few blocks in every interleaving).
TEST(CudaDecode, StreamDistancesMatchCpu) {
  SKIP_WITHOUT_GPU();
  SEEDED_RNG(rng);
  const std::vector<std::pair<const char*, Case>> cases = {
      {"mha_d128_f16_batch", {128, 4, 4, DType::f16, {5000, 3001}, 1.0, 0}},
      {"gqa2_d64_bf16", {64, 4, 2, DType::bf16, {7000}, 1.0, 0}},
  };
  cuda::Workspace ws;
  for (const std::string grid : {"", "ADAMAS_CUDA_STREAM_GRID=1", "ADAMAS_CUDA_STREAM_GRID=3",
                                 "ADAMAS_CUDA_STREAM_COMPACT=warp", "ADAMAS_CUDA_STREAM_GRID=1,ADAMAS_CUDA_STREAM_COMPACT=warp",
                                 "ADAMAS_CUDA_STREAM_FENCE=one", "ADAMAS_CUDA_STREAM_GRID=3,ADAMAS_CUDA_STREAM_FENCE=one"}) {
    const cuda::ScopedEnvSettings env("ADAMAS_CUDA_SELECT=stream,ADAMAS_CUDA_STREAM_DEBUG=1" + (grid.empty() ? "" : "," + grid));
    for (const auto& [name, c] : cases) {
      SCOPED_TRACE(std::string(name) + " " + grid);
      AttentionConfig cfg;
      cfg.budget = 256, cfg.sink = 1, cfg.window = 8, cfg.thresholds = {-0.6f, 0.0f, 0.6f};
      Batch bt(c, rng, cfg.thresholds);
      cuda::select(bt.inputs(), cfg, ws, nullptr);
      sync_ok();
      const auto scratch = cuda::detail::stream_scratch(ws);
      const int64_t H = c.n_heads, D = c.dim, g = c.n_heads / c.kv_heads;
      std::vector<uint16_t> got(size_t(int64_t(c.lens.size()) * H * scratch.ld));
      ck(cudaMemcpy(got.data(), scratch.dist, got.size() * 2, cudaMemcpyDeviceToHost), "copy dist");
      for (size_t b = 0; b < c.lens.size(); ++b) {
        const DecodeInputs in = bt.cpu_inputs(b);
        for (int64_t h = 0; h < H; ++h) {
          std::vector<uint8_t> qc(size_t(D / 4));
          encode_vector(in.q + h * D, DType::f32, D, cfg.thresholds, qc.data());
          std::vector<uint16_t> ref(size_t(c.lens[b]));
          l1_distances(qc.data(), in.codes, h / g, ref.data());
          const uint16_t* row = got.data() + (int64_t(b) * H + h) * scratch.ld;
          int64_t bad = 0, first = -1;
          for (int64_t t = 0; t < c.lens[b]; ++t)
            if (row[t] != ref[size_t(t)] && bad++ == 0) first = t;
          EXPECT_EQ(bad, 0) << "sequence " << b << " head " << h << ": first at token " << first << " got "
                            << (first >= 0 ? row[first] : 0) << " ref " << (first >= 0 ? ref[size_t(first)] : 0);
        }
      }
      // The tail's values against the CPU's (debug buffer): cut, skip, middle count.
      std::vector<int32_t> dbg(size_t(int64_t(c.lens.size()) * H * 12));
      ck(cudaMemcpy(dbg.data(), scratch.debug, dbg.size() * 4, cudaMemcpyDeviceToHost), "copy debug");
      for (size_t b = 0; b < c.lens.size(); ++b) {
        const DecodeInputs in = bt.cpu_inputs(b);
        const int64_t n = c.lens[b];
        for (int64_t h = 0; h < H; ++h) {
          std::vector<uint8_t> qc(size_t(D / 4));
          encode_vector(in.q + h * D, DType::f32, D, cfg.thresholds, qc.data());
          std::vector<uint16_t> dd(static_cast<size_t>(n));
          l1_distances(qc.data(), in.codes, h / g, dd.data());
          const int64_t s0 = std::min<int64_t>(cfg.sink, n), tail = std::max(s0, n - std::max<int64_t>(cfg.window, 1));
          const int64_t need = cfg.budget - s0 - (n - tail);
          std::vector<int64_t> hist(size_t(3 * D + 1), 0);
          for (int64_t t = s0; t < tail; ++t) ++hist[dd[size_t(t)]];
          int64_t cum = 0, cut = -1, skip = -1;
          for (size_t i = 0; i < hist.size(); ++i) {
            if (cum + hist[i] >= need) { cut = int64_t(i), skip = hist[i] - (need - cum); break; }
            cum += hist[i];
          }
          int64_t below = 0;
          for (int64_t t = s0; t < tail; ++t) below += dd[size_t(t)] < cut;
          const int64_t kept = s0 + (n - tail) + below, ties = hist[size_t(cut)];
          uint32_t dsum = 0;
          for (int64_t t = 0; t < n; ++t) dsum += dd[size_t(t)];
          const int32_t* gd = dbg.data() + (int64_t(b) * H + h) * 12;
          EXPECT_TRUE(gd[0] == cut && gd[1] == skip && gd[2] == need && gd[3] == s0 && gd[4] == tail &&
                      gd[5] == tail - s0 && gd[6] == kept && gd[7] == ties && uint32_t(gd[8]) == dsum)
              << "sequence " << b << " head " << h << " gpu cut " << gd[0] << " skip " << gd[1] << " need " << gd[2]
              << " s0 " << gd[3] << " tail " << gd[4] << " middle " << gd[5] << " kept " << gd[6] << " ties " << gd[7] << " dsum " << uint32_t(gd[8])
              << " | cpu cut " << cut << " skip " << skip << " need " << need << " s0 " << s0 << " tail " << tail
              << " middle " << tail - s0 << " kept " << kept << " ties " << ties << " dsum " << dsum;
        }
      }
      expect_view_matches(bt, cfg, cuda::last_selection(ws));
    }
  }
}

TEST(CudaApi, RejectsBadInputs) {
  SKIP_WITHOUT_GPU();
  cuda::Workspace ws;
  AttentionConfig cfg;
  cuda::BatchInputs in;
  EXPECT_THROW(cuda::decode_attention(in, cfg, ws, nullptr, nullptr), Error);
  cfg.group = GroupSelection::shared_union;
  EXPECT_THROW(cuda::select(in, cfg, ws, nullptr), Error);
}

}  // namespace
