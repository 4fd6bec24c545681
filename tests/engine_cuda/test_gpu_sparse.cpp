// Quest and StreamingLLM on the GPU engine's cache layout (src/engine/cuda/gpu_sparse_baselines.cu) against the
// CPU functions on the same fresh random keys and queries: page bounds bit-identical to quest_update_pages (folded
// in uneven chunks), selections identical to quest_select (and to the StreamingLLM rule), and attention within
// f32 rounding of attend_rows over the CPU's selection. Outputs and selections are poisoned before each launch.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "adamas/attention.h"
#include "adamas/cuda_attention.h"
#include "core/dtype.h"
#include "engine/cuda/gpu_sparse_baselines.h"
#include "gpu_test_util.h"

namespace adamas {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device: GPU Quest/StreamingLLM test skipped"

struct Shape {
  int64_t head_dim, n_heads, kv_heads;
};

// Three sequences (slots 0-2) of different lengths in layer 1 of a 2-layer cache; one decode row each.
void check_shape(const Shape& s) {
  SCOPED_SEED(seed);
  SCOPED_TRACE(::testing::Message() << "head_dim " << s.head_dim << ", heads " << s.n_heads << "/" << s.kv_heads);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t hd = s.head_dim, kvh = s.kv_heads, H = s.n_heads, g = H / kvh, cap = 1024, layers = 2, layer = 1;
  const std::vector<int32_t> pos{700, 333, 40}, slot{2, 0, 1};  // row r: sequence slot[r] holds pos[r] + 1 tokens
  const int64_t rows = int64_t(pos.size()), slots = 3, budget = 64;

  gpu::CacheLayout cache;
  cache.capacity = cap, cache.kv_heads = kvh, cache.head_dim = hd;
  const int64_t plane = kvh * cap * hd * 2;
  cache.k_off = 0, cache.v_off = plane, cache.layer_bytes = 2 * plane, cache.slot_bytes = layers * 2 * plane;
  std::vector<uint16_t> host(size_t(slots * cache.slot_bytes / 2), f32_to_f16(std::numeric_limits<float>::quiet_NaN()));
  auto k_at = [&](int64_t sl, int64_t h, int64_t t) { return (sl * cache.slot_bytes + layer * cache.layer_bytes) / 2 + (h * cap + t) * hd; };
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < kvh; ++h)
      for (int64_t t = 0; t <= pos[size_t(r)]; ++t)
        for (int64_t i = 0; i < hd; ++i) {
          host[size_t(k_at(slot[size_t(r)], h, t) + i)] = f32_to_f16(normal(rng) * (1.0f + float(i % 7)));
          host[size_t(k_at(slot[size_t(r)], h, t) + plane / 2 + i)] = f32_to_f16(normal(rng));
        }
  uint16_t* dcache = test::to_device(host);
  cache.base = reinterpret_cast<uint8_t*>(dcache);

  gpu::QuestPages pages;
  pages.layers = layers, pages.kv_heads = kvh, pages.pages = cap / 16, pages.head_dim = hd;
  const int64_t bounds = slots * layers * kvh * pages.pages * hd;
  pages.min = test::to_device(std::vector<float>(size_t(bounds), std::numeric_limits<float>::quiet_NaN()));
  pages.max = test::to_device(std::vector<float>(size_t(bounds), std::numeric_limits<float>::quiet_NaN()));
  // Fold every sequence's keys in chunks of 37 rows ([rows][kv_heads][hd] f16, as the engine's k_new).
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t0 = 0; t0 <= pos[size_t(r)]; t0 += 37) {
      const int64_t m = std::min<int64_t>(37, pos[size_t(r)] + 1 - t0);
      std::vector<uint16_t> knew(size_t(m * kvh * hd));
      std::vector<int32_t> p(static_cast<size_t>(m)), sl(size_t(m), slot[size_t(r)]);
      for (int64_t j = 0; j < m; ++j) {
        p[size_t(j)] = int32_t(t0 + j);
        for (int64_t h = 0; h < kvh; ++h)
          std::memcpy(&knew[size_t((j * kvh + h) * hd)], &host[size_t(k_at(slot[size_t(r)], h, t0 + j))], size_t(hd) * 2);
      }
      uint16_t* dk = test::to_device(knew);
      int32_t* dp = test::to_device(p);
      int32_t* ds = test::to_device(sl);
      gpu::quest_fold_pages(reinterpret_cast<const __half*>(dk), m, dp, ds, pages, layer, nullptr);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      cudaFree(dk), cudaFree(dp), cudaFree(ds);
    }
  }
  std::vector<float> q(size_t(rows * H * hd));
  for (float& x : q) x = normal(rng);
  float* dq = test::to_device(q);
  int32_t* dpos = test::to_device(pos);
  int32_t* dslot = test::to_device(slot);
  gpu::SelectedRows sel;
  sel.capacity = gpu::quest_capacity(budget, 16), sel.max_pages = pages.pages;
  sel.indices = test::to_device(std::vector<int32_t>(size_t(rows * H * sel.capacity), -7));
  sel.counts = test::to_device(std::vector<int32_t>(size_t(rows * H), -7));
  sel.scores = test::to_device(std::vector<float>(size_t(rows * H * sel.max_pages), 0.0f));
  gpu::quest_select_rows(dq, rows, H, dpos, dslot, pages, layer, budget, sel, nullptr);
  float* dout = test::to_device(std::vector<float>(size_t(rows * H * hd), std::numeric_limits<float>::quiet_NaN()));
  gpu::RowSelection quest;
  quest.method = Method::quest, quest.quest = sel, quest.budget = budget;
  gpu::attend_selected_rows(dq, rows, H, dpos, dslot, cache, layer, quest, dout, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> gmin = test::to_host(pages.min, size_t(bounds)), gmax = test::to_host(pages.max, size_t(bounds));
  const std::vector<int32_t> gidx = test::to_host(sel.indices, size_t(rows * H * sel.capacity));
  const std::vector<int32_t> gcount = test::to_host(sel.counts, size_t(rows * H));
  const std::vector<float> gquest = test::to_host(dout, size_t(rows * H * hd));
  // StreamingLLM (sink 4) over the same rows.
  gpu::RowSelection stream;
  stream.method = Method::streaming, stream.budget = budget, stream.sink = 4;
  cudaMemset(dout, 0xFF, size_t(rows * H * hd) * 4);
  gpu::attend_selected_rows(dq, rows, H, dpos, dslot, cache, layer, stream, dout, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> gstream = test::to_host(dout, size_t(rows * H * hd));

  const float scale = 1.0f / std::sqrt(float(hd));
  double worst = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = pos[size_t(r)] + 1, sl = slot[size_t(r)];
    const HeadsView k{host.data() + k_at(sl, 0, 0), DType::f16, kvh, n, hd, cap * hd, hd};
    const HeadsView v{host.data() + k_at(sl, 0, 0) + plane / 2, DType::f16, kvh, n, hd, cap * hd, hd};
    std::vector<float> pmin(size_t(kvh * pages.pages * hd)), pmax(pmin.size());
    const QuestPagesView cpu_pages{pmin.data(), pmax.data(), kvh, pages.pages, hd, 16};
    quest_update_pages(k, 0, n, cpu_pages);
    const int64_t used = (n + 15) / 16;
    for (int64_t h = 0; h < kvh; ++h)
      for (int64_t pg = 0; pg < used; ++pg) {
        const int64_t at = pages.offset(sl, layer, h, pg);
        ASSERT_EQ(0, std::memcmp(&gmin[size_t(at)], cpu_pages.page_min(h, pg), size_t(hd) * 4)) << "row " << r << " page " << pg;
        ASSERT_EQ(0, std::memcmp(&gmax[size_t(at)], cpu_pages.page_max(h, pg), size_t(hd) * 4)) << "row " << r << " page " << pg;
      }
    for (int64_t h = 0; h < H; ++h) {
      const float* qh = q.data() + (r * H + h) * hd;
      std::vector<int32_t> want;
      quest_select(qh, cpu_pages, h / g, n, budget, want);
      const int64_t unit = r * H + h;
      const std::vector<int32_t> got(gidx.begin() + unit * sel.capacity,
                                     gidx.begin() + unit * sel.capacity + std::max(0, gcount[size_t(unit)]));
      ASSERT_EQ(got, want) << "Quest selection of row " << r << ", head " << h;
      std::vector<float> ref(static_cast<size_t>(hd));
      attend_rows(qh, k, v, h / g, want.data(), int64_t(want.size()), scale, ref.data());
      std::vector<int32_t> window;
      const int64_t keep = std::min(n, budget);
      for (int64_t t = 0; t < keep; ++t) window.push_back(int32_t(n <= budget || t < 4 ? t : n - (budget - 4) + (t - 4)));
      std::vector<float> ref_stream(static_cast<size_t>(hd));
      attend_rows(qh, k, v, h / g, window.data(), int64_t(window.size()), scale, ref_stream.data());
      for (int64_t i = 0; i < hd; ++i) {
        const double e1 = std::abs(double(gquest[size_t(unit * hd + i)]) - ref[size_t(i)]);
        const double e2 = std::abs(double(gstream[size_t(unit * hd + i)]) - ref_stream[size_t(i)]);
        worst = std::max({worst, std::isnan(e1) ? INFINITY : e1, std::isnan(e2) ? INFINITY : e2});
      }
    }
  }
  std::printf("head_dim %lld, heads %lld/%lld: selections equal; max |GPU - CPU| attention %.3g\n", (long long)hd,
              (long long)H, (long long)kvh, worst);
  EXPECT_LT(worst, 2e-5);  // f32 both sides, different summation orders; |out| ~ 1
  for (void* p : {static_cast<void*>(dcache), static_cast<void*>(pages.min), static_cast<void*>(pages.max),
                  static_cast<void*>(dq), static_cast<void*>(dpos), static_cast<void*>(dslot),
                  static_cast<void*>(sel.indices), static_cast<void*>(sel.counts), static_cast<void*>(sel.scores),
                  static_cast<void*>(dout)})
    cudaFree(p);
}

TEST(GpuSparseBaselines, QuestAndStreamingMatchCpuHeadDim128Gqa) {
  SKIP_WITHOUT_GPU();
  check_shape({128, 8, 2});
}

TEST(GpuSparseBaselines, QuestAndStreamingMatchCpuHeadDim64Group3) {
  SKIP_WITHOUT_GPU();
  check_shape({64, 9, 3});
}

}  // namespace
}  // namespace adamas
