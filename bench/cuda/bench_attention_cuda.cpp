// One layer's decode attention on the GPU: our dense kernel, PyTorch SDPA (sdpa_baseline.py, same run), and
// Adamas split into select / attend, for Llama-2-7B (32 heads MHA) and Llama-3-8B (32 q / 8 KV heads), d = 128,
// f16. Medians of CUDA-event timings with L2 flushed before each call (default: by reading 256 MB, which leaves
// clean lines; --flush write: a 256 MB memset, whose dirty lines cost every timed call up to ~17 us of write-backs); GB/s against a device-to-device copy
// measured in the same run. Prints a table and writes JSON lines (--json FILE).
//
// bench_attention_cuda [--quick] [--sdpa PATH|none] [--json FILE] [--iters N] [--flush read|write] [--allocs R]
//   [--ctx N,N..] [--budgets N,N..] [--batches N,N..] [--shapes mha|gqa|all[,..]] [--no-dense] [--dense-only]
//   [--touch] [--probe] [--warm-code]
// --allocs R (default 3): every (shape, batch, context) is measured in R rounds, each on K/V allocated afresh behind
// a spacer of (round x 98 MB), so each round's buffers sit on other physical pages; every number printed is the
// median of the rounds' medians, the lowest-highest round beside it with --dense-only (SDPA: the same rounds in
// sdpa_baseline.py); NOTES v8-dense measured < 1 us between rounds at GQA 32K batch 1 once the GPU had settled.
// --shapes takes a list in order, repeats allowed (e.g. gqa,mha,gqa: the GQA rows again after the MHA batch-16 shapes).
// --settle S (default 2 seconds): idle time before each (shape, batch, context), so that each starts from the same
// GPU state (NOTES v8-dense: for a fraction of a second after the MHA batch-16 shapes freed their 34 GB, every kernel
// at GQA 32K batch 1, a plain read of its bytes too, ran ~9 us slower); SDPA gets the same pause.
// --dense-only prints a `read` row per shape: one kernel reading the same K and V bytes and nothing else, the floor a
// dense kernel can approach under this timer. --touch (with --dense-only): one more row, our kernel with one word per
// 64 KB of K and V loaded between the flush and the timed launch (a diagnostic of the pages' address translation
// cost; not a fair number). stderr: each round's medians, wall time and SM clock.
// --dense-only: dense rows only, our default dense kernel (v7: the tensor-core group kernel) beside v6's kernel
// (ADAMAS_CUDA_DENSE=v6) and PyTorch SDPA, each with GB/s and % of the copy bandwidth of the same run;
// --dense-variants "A=1,B=2;C=3": one more row per variant (environment settings of the dense kernel, e.g. the
// ADAMAS_CUDA_DENSE_* launch knobs of dense_group.cu), timed in the same run.
// The `stream` column: decode_attention through the v8-stream persistent kernel (ADAMAS_CUDA_SELECT=stream, per-head
// rows); --stream-variants "A=1;B=2": one more row per variant of its knobs (e.g. ADAMAS_CUDA_STREAM_COMPACT=warp).
// --adamas-variants "A=1;B=2": one more row per variant of decode_attention's path (e.g. ADAMAS_CUDA_SELECT=grid: the
// pre-v9 automatic choice of select and attend launches), timed in the same run, per-head and shared rows.
// --warm-code: one more Adamas row, the default call timed with its kernels' instructions warm (the same call on a
// separate 4096-token input between the L2 flush and the timed call): what fetching cold code from DRAM costs.
// --probe: launch-floor probes (empty kernels with the backend's parameter size, clusters, cluster barriers) and,
// in builds with ADAMAS_CUDA_STAMPS, per-phase %globaltimer breakdowns of one select and one attend launch (with
// --dense-only: of one dense launch of the default and of each --dense-variants entry, first round only).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "adamas/cuda_attention.h"
#include "attention/cuda/scoped_env.h"
#include "bench_timer.h"
#include "fill.h"

using namespace adamas;

namespace {

using bench::ck;
using bench::Timer;

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    v.push_back(std::atoll(s.substr(i, j - i).c_str()));
    i = j + 1;
  }
  return v;
}

// Per-phase breakdown of one launch from its stamps: [blocks][8] globaltimer values (0 = not written).
void print_stamps(const char* what, const std::vector<unsigned long long>& st, unsigned long long before,
                  unsigned long long after, int slots_used) {
  unsigned long long t0 = ~0ull, tend = 0;
  int blocks = 0;
  for (size_t b = 0; b * 8 < st.size(); ++b) {
    if (st[b * 8] == 0) continue;
    ++blocks;
    t0 = std::min(t0, st[b * 8]);
    for (int k = 0; k < 8; ++k) tend = std::max(tend, st[b * 8 + k]);
  }
  if (blocks == 0) {
    std::printf("  %s: no stamps\n", what);
    return;
  }
  std::printf("  %s: %d blocks; marker->first entry %.2f us, last stamp->marker %.2f us, first entry->last stamp "
              "%.2f us\n", what, blocks, (double(t0) - double(before)) / 1e3, (double(after) - double(tend)) / 1e3,
              double(tend - t0) / 1e3);
  std::printf("    slot:   ");
  for (int k = 0; k < slots_used; ++k) std::printf(" %8d", k);
  std::printf("\n");
  for (const char* stat : {"min", "median", "max"}) {
    std::printf("    %-7s ", stat);
    for (int k = 0; k < slots_used; ++k) {
      std::vector<double> v;
      for (size_t b = 0; b * 8 < st.size(); ++b)
        if (st[b * 8] != 0 && st[b * 8 + k] != 0) v.push_back(double(st[b * 8 + k] - t0) / 1e3);
      std::sort(v.begin(), v.end());
      double x = NAN;
      if (!v.empty()) x = stat[1] == 'i' ? v.front() : stat[1] == 'e' ? v[v.size() / 2] : v.back();
      std::printf(" %8.2f", x);
    }
    std::printf("   (us since first entry)\n");
  }
}

struct Shape {
  const char* name;
  int heads, kv_heads;
};

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string sdpa = "bench/cuda/sdpa_baseline.py", json_path;
  int iters = 50;
  std::string flush_mode = "read";
  std::string shapes_sel = "all";
  std::vector<int64_t> ctx_sel, budget_sel, batch_sel;
  std::vector<std::string> dense_variants, stream_variants, adamas_variants;
  auto split_variants = [](const std::string& list, std::vector<std::string>& out) {  // "A=1,B=2;C=3" -> items
    for (size_t b = 0; b <= list.size();) {
      const size_t e = std::min(list.find(';', b), list.size());
      if (e > b) out.push_back(list.substr(b, e - b));
      b = e + 1;
    }
  };
  bool no_dense = false, probe = false, dense_only = false, touch = false, warm_code = false;
  int allocs = 3;
  double settle = 2.0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    else if (a == "--sdpa" && i + 1 < argc) sdpa = argv[++i];
    else if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--iters" && i + 1 < argc) iters = std::atoi(argv[++i]);
    else if (a == "--flush" && i + 1 < argc) flush_mode = argv[++i];
    else if (a == "--ctx" && i + 1 < argc) ctx_sel = parse_list(argv[++i]);
    else if (a == "--budgets" && i + 1 < argc) budget_sel = parse_list(argv[++i]);
    else if (a == "--batches" && i + 1 < argc) batch_sel = parse_list(argv[++i]);
    else if (a == "--shapes" && i + 1 < argc) shapes_sel = argv[++i];
    else if (a == "--no-dense") no_dense = true;
    else if (a == "--dense-only") dense_only = true;
    else if (a == "--touch") touch = true;
    else if (a == "--allocs" && i + 1 < argc) allocs = std::atoi(argv[++i]);
    else if (a == "--settle" && i + 1 < argc) settle = std::atof(argv[++i]);
    else if (a == "--dense-variants" && i + 1 < argc) split_variants(argv[++i], dense_variants);
    else if (a == "--stream-variants" && i + 1 < argc) split_variants(argv[++i], stream_variants);
    else if (a == "--adamas-variants" && i + 1 < argc) split_variants(argv[++i], adamas_variants);
    else if (a == "--probe") probe = true;
    else if (a == "--warm-code") warm_code = true;
    else {
      std::fprintf(stderr, "usage: %s [--quick] [--sdpa PATH|none] [--json FILE] [--iters N] [--flush read|write]\n", argv[0]);
      return 2;
    }
  }
  if (allocs < 1 || iters < 1 || !(settle >= 0)) {
    std::fprintf(stderr, "--allocs and --iters must be at least 1, --settle at least 0\n");
    return 2;
  }
  if (!cuda::device_available()) {
    std::printf("no CUDA device: benchmark skipped\n");
    return 0;
  }
  const int D = 128;
  std::vector<Shape> shapes;
  for (size_t b = 0; b <= shapes_sel.size();) {
    const size_t e = std::min(shapes_sel.find(',', b), shapes_sel.size());
    const std::string t = shapes_sel.substr(b, e - b);
    if (t == "mha" || t == "all") shapes.push_back({"llama2-7b-mha", 32, 32});
    if (t == "gqa" || t == "all") shapes.push_back({"llama3-8b-gqa", 32, 8});
    if (t != "mha" && t != "gqa" && t != "all") {
      std::fprintf(stderr, "--shapes: unknown shape '%s' (mha, gqa or all, comma-separated)\n", t.c_str());
      return 2;
    }
    b = e + 1;
  }
  struct Cfg {
    int batch;
    int64_t ctx;
  };
  std::vector<Cfg> cfgs;
  const std::vector<int64_t> ctx1 = quick ? std::vector<int64_t>{4096, 32768} :
                                            std::vector<int64_t>{4096, 8192, 16384, 32768, 65536, 131072};
  const std::vector<int64_t> ctx16 = quick ? std::vector<int64_t>{32768} : std::vector<int64_t>{4096, 32768, 131072};
  auto want = [](const std::vector<int64_t>& sel, int64_t v) {
    return sel.empty() || std::find(sel.begin(), sel.end(), v) != sel.end();
  };
  if (!ctx_sel.empty()) {  // explicit contexts: every selected batch size at each
    for (int64_t b : batch_sel.empty() ? std::vector<int64_t>{1} : batch_sel)
      for (auto c : ctx_sel) cfgs.push_back({int(b), c});
  } else {
    for (auto c : ctx1)
      if (want(batch_sel, 1)) cfgs.push_back({1, c});
    for (auto c : ctx16)
      if (want(batch_sel, 16)) cfgs.push_back({16, c});
  }
  const std::vector<int64_t> budgets = !budget_sel.empty() ? budget_sel :
                                       quick ? std::vector<int64_t>{256} : std::vector<int64_t>{64, 256, 1024, 4096};

  // PyTorch SDPA first (its own process, before our buffers take the memory).
  std::map<std::string, double> sdpa_us, sdpa_lo, sdpa_hi;  // median of the rounds' medians; lowest and highest round
  std::string torch_info = "not run";
  if (sdpa != "none") {
    std::string list;
    for (const auto& s : shapes)
      for (const auto& c : cfgs) {
        if (!list.empty()) list += ",";
        list += std::to_string(s.heads) + ":" + std::to_string(s.kv_heads) + ":" + std::to_string(D) + ":" +
                std::to_string(c.batch) + ":" + std::to_string(c.ctx);
      }
    const std::string cmd = "python3 " + sdpa + " --iters " + std::to_string(iters) + " --flush " + flush_mode +
                            " --allocs " + std::to_string(allocs) + " --settle " + std::to_string(settle) +
                            " --configs " + list;
    std::fprintf(stderr, "running %s\n", cmd.c_str());
    if (FILE* p = popen(cmd.c_str(), "r")) {
      std::string text;
      char buf[4096];
      while (size_t r = fread(buf, 1, sizeof buf, p)) text.append(buf, r);
      const int rc = pclose(p);
      try {
        const auto j = nlohmann::json::parse(text.substr(text.find('{')));
        torch_info = j["torch"].get<std::string>() + " on " + j["device"].get<std::string>();
        for (const auto& r : j["results"]) {
          const std::string key = std::to_string(r["heads"].get<int>()) + ":" + std::to_string(r["kv_heads"].get<int>()) +
                                  ":" + std::to_string(r["batch"].get<int>()) + ":" +
                                  std::to_string(r["context"].get<int64_t>());
          sdpa_us[key] = r["median_us"].get<double>();
          sdpa_lo[key] = r.value("round_min_us", NAN), sdpa_hi[key] = r.value("round_max_us", NAN);
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "SDPA baseline failed (rc %d): %s\n", rc, e.what());
      }
    }
  }

  Timer timer;
  timer.write_flush = flush_mode == "write";
  const double copy_gbs = bench::copy_bandwidth_gbs(timer);
  const double empty_us = timer.median_us([&] { bench_empty_kernel(); }, iters);
  unsigned long long* marks = nullptr;  // probe: globaltimer before / after the probed launch
  unsigned long long *sel_st = nullptr, *att_st = nullptr;
  const size_t st_blocks = 65536;
  bool stamps = false;
  if (probe) {
    std::printf("probe: launch floor under the same timer (L2 flushed by reading before each):\n");
    std::printf("  empty kernel, no parameters            %7.2f us\n", empty_us);
    std::printf("  empty kernel, 5.6 KB parameter         %7.2f us\n",
                timer.median_us([&] { bench_empty_big_param(); }, iters));
    for (int blocks : {1, 256})
      std::printf("  empty kernel, 5.6 KB parameter, cooperative launch of %3d blocks %7.2f us\n", blocks,
                  timer.median_us([&] { bench_coop_kernel(blocks); }, iters));
    for (int C : {1, 8, 16})
      for (int syncs : {0, 3}) {
        const int blocks = C == 16 ? 128 : 256;
        std::printf("  %3d blocks, clusters of %2d, %d cluster barriers, 5.6 KB parameter  %7.2f us\n", blocks, C,
                    syncs, timer.median_us([&] { bench_cluster_kernel(blocks, C, syncs, 0); }, iters));
      }
    for (int C : {2, 4, 8, 16})  // 120 KB: one block per SM (the dense kernel's launch shape)
      for (int smem : {0, 70 * 1024, 120 * 1024})
        std::printf("  max co-resident clusters of %2d at %6d B shared: %d\n", C, smem, bench_max_clusters(C, smem));
    ck(cudaMalloc(&marks, 16), "marks");
    ck(cudaMalloc(&sel_st, st_blocks * 64), "stamps");
    ck(cudaMalloc(&att_st, st_blocks * 64), "stamps");
    stamps = cuda::set_phase_stamps(nullptr, nullptr);
    if (!stamps) std::printf("probe: this build has no phase stamps (configure with -DADAMAS_CUDA_STAMPS=ON)\n");
  }
  std::printf("device: %s; copy bandwidth %.0f GB/s (read + write); SDPA: %s\n", cuda::device_name(), copy_gbs,
              torch_info.c_str());

  FILE* jf = json_path.empty() ? nullptr : std::fopen(json_path.c_str(), "w");
  std::vector<std::string> table;
  char line[512];
  // GQA rows come twice: per-head selection and "-sh" = shared_sum (one selection per KV group).
  std::snprintf(line, sizeof line, "%-16s %5s %7s %6s | %9s %7s %6s | %9s | %8s %8s %8s | %7s %7s | %8s %7s",
                "shape", "batch", "context", "budget", "dense_us", "GB/s", "%copy", "sdpa_us", "select", "attend",
                "adamas", "x_sdpa", "x_dense", "stream", "x_str");
  table.push_back(line);
  if (dense_only) {
    table.clear();
    std::snprintf(line, sizeof line, "%-16s %5s %7s | %9s %7s %6s %13s | %9s %6s | %9s %6s %13s | %7s %7s", "shape",
                  "batch", "context", "dense_us", "GB/s", "%copy", "rounds", "v6_us", "%copy", "sdpa_us", "%copy",
                  "rounds", "x_v6", "x_sdpa");
    table.push_back(line);
  }
  const auto t_start = std::chrono::steady_clock::now();
  auto emit = [&] {  // the row in `line`: into the final table, and printed now
    table.push_back(line);
    std::printf("%s\n", line);
    std::fflush(stdout);
  };
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? NAN : v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  };
  auto spread = [](const std::vector<double>& v) {  // "lowest-highest" of the rounds
    char b[48];
    std::snprintf(b, sizeof b, "%.1f-%.1f", *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end()));
    return std::string(b);
  };
  for (const auto& s : shapes) {
    for (const auto& c : cfgs) {
      const int64_t n = c.ctx, B = c.batch, KVH = s.kv_heads, H = s.heads;
      const size_t kv_elems = size_t(B * KVH * n * D);
      const double kv_bytes = double(kv_elems) * 2 * 2;
      const Thresholds th{-0.6f, 0.0f, 0.6f};
      const float scale = 1.0f / std::sqrt(float(D));
      std::map<std::string, std::vector<double>> res;  // per row: the rounds' medians
      std::this_thread::sleep_for(std::chrono::duration<double>(settle));
      for (int round = 0; round < allocs; ++round) {
        std::fprintf(stderr, "round %d of %s batch %lld context %lld: t=%.2f s, SM %.0f MHz\n", round, s.name,
                     (long long)B, (long long)n,
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count(), bench_sm_mhz());
        void *spacer = nullptr, *k, *v;
        if (round > 0) ck(cudaMalloc(&spacer, size_t(round) * (98u << 20)), "spacer");
        uint8_t* codes;
        float *q, *out;
        Thresholds* thr;
        ck(cudaMalloc(&k, kv_elems * 2), "K");
        ck(cudaMalloc(&v, kv_elems * 2), "V");
        ck(cudaMalloc(&codes, kv_elems / 4), "codes");
        ck(cudaMalloc(&q, size_t(B * H * D) * 4), "q");
        ck(cudaMalloc(&out, size_t(B * H * D) * 4), "out");
        ck(cudaMalloc(&thr, sizeof(Thresholds)), "thr");
        // Keys of spread ~N(0, 1) per rotated coordinate (amplitude 2.4 triangular); thresholds -0.6 / 0 / 0.6.
        bench_fill_half(k, kv_elems, 1234u + unsigned(n), 2.4f);
        bench_fill_half(v, kv_elems, 999u + unsigned(n), 1.0f);
        bench_fill_f32(q, size_t(B * H * D), 77u);
        ck(cudaMemcpy(thr, &th, sizeof th, cudaMemcpyHostToDevice), "thr");
        std::vector<cuda::SequenceCache> seqs;
        for (int64_t b = 0; b < B; ++b) {
          const size_t off = size_t(b * KVH * n * D);
          seqs.push_back({HeadsView::contiguous(static_cast<uint16_t*>(k) + off, DType::f16, KVH, n, D),
                          HeadsView::contiguous(static_cast<uint16_t*>(v) + off, DType::f16, KVH, n, D),
                          CodesView::contiguous(codes + off / 4, KVH, n, D)});
          if (!dense_only)
            cuda::encode_keys(seqs.back().k, 0, n, thr, 1, MutCodesView::contiguous(codes + off / 4, KVH, n, D), nullptr);
        }
        // --warm-code: the same call on a separate 4096-token input of this shape between the flush and the timed
        // call, so that the kernels' instructions (and only they) are in L2 and the SMs' instruction caches.
        const int64_t nw = 4096;
        void *kw = nullptr, *vw = nullptr;
        uint8_t* cw = nullptr;
        std::vector<cuda::SequenceCache> wseqs;
        if (warm_code && !dense_only) {
          const size_t we = size_t(B * KVH * nw * D);
          ck(cudaMalloc(&kw, we * 2), "K warm"), ck(cudaMalloc(&vw, we * 2), "V warm"), ck(cudaMalloc(&cw, we / 4), "codes warm");
          bench_fill_half(kw, we, 4321u, 2.4f), bench_fill_half(vw, we, 4322u, 1.0f);
          for (int64_t b = 0; b < B; ++b) {
            const size_t off = size_t(b * KVH * nw * D);
            wseqs.push_back({HeadsView::contiguous(static_cast<uint16_t*>(kw) + off, DType::f16, KVH, nw, D),
                             HeadsView::contiguous(static_cast<uint16_t*>(vw) + off, DType::f16, KVH, nw, D),
                             CodesView::contiguous(cw + off / 4, KVH, nw, D)});
            cuda::encode_keys(wseqs.back().k, 0, nw, thr, 1, MutCodesView::contiguous(cw + off / 4, KVH, nw, D), nullptr);
          }
        }
        ck(cudaDeviceSynchronize(), "setup");
        cuda::Workspace ws, ws_warm;
        const cuda::BatchInputs in{q, H, seqs, nullptr}, in_warm{q, H, wseqs, nullptr};
        auto dense_call = [&] { cuda::attend_dense(in, scale, ws, out, nullptr); };
        res["dense"].push_back(no_dense ? NAN : timer.median_us(dense_call, iters));
        if (dense_only) {
          {
            const cuda::ScopedEnvSettings env("ADAMAS_CUDA_DENSE=v6");
            res["v6"].push_back(timer.median_us(dense_call, iters));
          }
          for (const std::string& var : dense_variants) {  // "A=1,B=2": set, time, unset
            const cuda::ScopedEnvSettings env(var);
            res["var " + var].push_back(timer.median_us(dense_call, iters));
          }
          res["read"].push_back(timer.median_us([&] { bench_read_two(k, v, kv_elems * 2, timer.sink); }, iters));
          if (touch)
            res["touch"].push_back(timer.median_us(dense_call, iters, [&] {
              bench_touch_pages(k, kv_elems * 2, 64 << 10, timer.sink);
              bench_touch_pages(v, kv_elems * 2, 64 << 10, timer.sink);
            }));
          if (stamps && round == 0) {  // v9-dense: phases of one flushed launch per variant (the third of three)
            std::vector<std::string> vars = {""};
            vars.insert(vars.end(), dense_variants.begin(), dense_variants.end());
            for (const std::string& var : vars) {
              const cuda::ScopedEnvSettings env(var);
              for (int rep = 0; rep < 3; ++rep) {
                ck(cudaMemset(att_st, 0, st_blocks * 64), "stamps clear");
                cuda::set_phase_stamps(nullptr, att_st);
                timer.flush_l2(rep);
                bench_stamp(marks);
                dense_call();
                bench_stamp(marks + 1);
                ck(cudaDeviceSynchronize(), "probe");
                cuda::set_phase_stamps(nullptr, nullptr);
              }
              std::vector<unsigned long long> st(st_blocks * 8), mk(2);
              ck(cudaMemcpy(st.data(), att_st, st_blocks * 64, cudaMemcpyDeviceToHost), "st");
              ck(cudaMemcpy(mk.data(), marks, 16, cudaMemcpyDeviceToHost), "marks");
              std::printf("probe %s batch %lld context %lld, dense %s:\n", s.name, (long long)B, (long long)n,
                          var.empty() ? "default" : var.c_str());
              print_stamps("dense", st, mk[0], mk[1], 8);
            }
          }
        } else {
          for (int64_t budget : budgets)
            for (GroupSelection group : {GroupSelection::per_head, GroupSelection::shared_sum}) {
              if (budget >= n || (group == GroupSelection::shared_sum && H == KVH)) continue;
              AttentionConfig cfg;
              cfg.budget = budget;
              cfg.thresholds = th;
              cfg.group = group;
              const std::string key = std::to_string(budget) + ":" + group_selection_name(group);
              const double sel = timer.median_us([&] { cuda::select(in, cfg, ws, nullptr); }, iters);
              const double att = timer.median_us([&] { cuda::attend_selected(in, cfg, ws, scale, out, nullptr); }, iters);
              const double tot = timer.median_us([&] { cuda::decode_attention(in, cfg, ws, out, nullptr); }, iters);
              res["sel " + key].push_back(sel), res["att " + key].push_back(att), res["tot " + key].push_back(tot);
              if (warm_code)  // the default call with its code warm (above)
                res["avar warm-code " + key].push_back(timer.median_us(
                    [&] { cuda::decode_attention(in, cfg, ws, out, nullptr); }, iters,
                    [&] { cuda::decode_attention(in_warm, cfg, ws_warm, out, nullptr); }));
              for (const std::string& var : adamas_variants) {  // other paths of the same call
                const cuda::ScopedEnvSettings env(var);
                res["avar " + var + " " + key].push_back(
                    timer.median_us([&] { cuda::decode_attention(in, cfg, ws, out, nullptr); }, iters));
              }
              // v8-stream: the same call through the persistent kernel (per-head rows) and its knob variants.
              if (group == GroupSelection::per_head)
                for (const std::string& var : [&] { auto v = stream_variants; v.insert(v.begin(), ""); return v; }()) {
                  const cuda::ScopedEnvSettings env("ADAMAS_CUDA_SELECT=stream" + (var.empty() ? "" : "," + var));
                  res["str " + var + " " + key].push_back(
                      timer.median_us([&] { cuda::decode_attention(in, cfg, ws, out, nullptr); }, iters));
                }
              if (probe && round == 0) {
                std::printf("probe %s batch %lld context %lld budget %lld: select %.2f us, attend %.2f us (event timer)\n",
                            s.name, (long long)B, (long long)n, (long long)budget, sel, att);
                if (stamps) {
                  // One flushed launch of each, bracketed by 1-thread globaltimer kernels. `decode`: the whole
                  // decode_attention call; its stamps are those of the v9 cluster kernel (select + attend in one
                  // launch; slots 6 and 7: the block's partials, the cluster's merge) where that path is taken.
                  for (int which = 0; which < 3; ++which) {
                    for (int rep = 0; rep < 3; ++rep) {
                      ck(cudaMemset(which != 1 ? sel_st : att_st, 0, st_blocks * 64), "stamps clear");
                      cuda::set_phase_stamps(which != 1 ? sel_st : nullptr, which == 1 ? att_st : nullptr);
                      timer.flush_l2(rep);
                      bench_stamp(marks);
                      if (which == 0) cuda::select(in, cfg, ws, nullptr);
                      else if (which == 1) cuda::attend_selected(in, cfg, ws, scale, out, nullptr);
                      else cuda::decode_attention(in, cfg, ws, out, nullptr);
                      bench_stamp(marks + 1);
                      ck(cudaDeviceSynchronize(), "probe");
                      cuda::set_phase_stamps(nullptr, nullptr);
                    }
                    std::vector<unsigned long long> st(st_blocks * 8), mk(2);
                    ck(cudaMemcpy(st.data(), which != 1 ? sel_st : att_st, st_blocks * 64, cudaMemcpyDeviceToHost), "st");
                    ck(cudaMemcpy(mk.data(), marks, 16, cudaMemcpyDeviceToHost), "marks");
                    print_stamps(which == 0 ? "select" : which == 1 ? "attend" : "decode", st, mk[0], mk[1],
                                 which == 1 ? 7 : 8);
                  }
                }
              }
            }
        }
        cudaFree(k), cudaFree(v), cudaFree(codes), cudaFree(q), cudaFree(out), cudaFree(thr);
        if (kw) cudaFree(kw), cudaFree(vw), cudaFree(cw);
        if (spacer) cudaFree(spacer);
      }

      for (const auto& [row, vals] : res) {  // every round's median, for the spread (stderr)
        std::fprintf(stderr, "rounds %s batch %lld context %lld %s:", s.name, (long long)B, (long long)n, row.c_str());
        for (double x : vals) std::fprintf(stderr, " %.1f", x);
        std::fprintf(stderr, "\n");
      }
      const double dense = median(res["dense"]);
      const double gbs = kv_bytes / (dense * 1e3);
      const std::string skey = std::to_string(H) + ":" + std::to_string(KVH) + ":" + std::to_string(B) + ":" +
                               std::to_string(n);
      const double sd = sdpa_us.count(skey) ? sdpa_us[skey] : NAN;
      std::string rounds_json = "[";
      for (size_t i = 0; i < res["dense"].size(); ++i) {
        char b[32];
        std::snprintf(b, sizeof b, "%s%.2f", i ? "," : "", res["dense"][i]);
        rounds_json += b;
      }
      rounds_json += "]";
      if (dense_only) {
        const double v6 = median(res["v6"]);
        auto pct = [&](double us) { return 100.0 * kv_bytes / (us * 1e3) / copy_gbs; };
        char sd_rounds[48] = "-";
        if (sdpa_lo.count(skey) && !std::isnan(sdpa_lo[skey]))
          std::snprintf(sd_rounds, sizeof sd_rounds, "%.1f-%.1f", sdpa_lo[skey], sdpa_hi[skey]);
        std::snprintf(line, sizeof line,
                      "%-16s %5lld %7lld | %9.1f %7.0f %5.1f%% %13s | %9.1f %5.1f%% | %9.1f %5.1f%% %13s | %7.2f %7.2f",
                      s.name, (long long)B, (long long)n, dense, gbs, pct(dense), spread(res["dense"]).c_str(), v6,
                      pct(v6), sd, pct(sd), sd_rounds, v6 / dense, sd / dense);
        emit();
        std::vector<std::string> extra = {"read"};
        for (const std::string& var : dense_variants) extra.push_back("var " + var);
        if (touch) extra.push_back("touch");
        for (const std::string& key : extra) {
          const double us = median(res[key]);
          std::snprintf(line, sizeof line, "%-16s %5lld %7lld | %9.1f %7.0f %5.1f%% %13s | %s", s.name, (long long)B,
                        (long long)n, us, kv_bytes / (us * 1e3), pct(us), spread(res[key]).c_str(),
                        key == "touch" ? "diagnostic: K/V pages touched after the flush" :
                        key == "read"  ? "read floor: one kernel reading the same K/V bytes" :
                                         ("variant " + key.substr(4)).c_str());
          emit();
        }
        if (jf)
          std::fprintf(jf,
                       "{\"shape\":\"%s\",\"heads\":%d,\"kv_heads\":%d,\"dim\":%d,\"batch\":%lld,\"context\":%lld,"
                       "\"dense_us\":%.2f,\"dense_round_us\":%s,\"dense_v6_us\":%.2f,\"copy_gbs\":%.1f,\"sdpa_us\":%.2f,"
                       "\"allocs\":%d,\"flush\":\"%s\"}\n",
                       s.name, s.heads, s.kv_heads, D, (long long)B, (long long)n, dense, rounds_json.c_str(), v6,
                       copy_gbs, std::isnan(sd) ? -1.0 : sd, allocs, flush_mode.c_str());
        continue;
      }
      for (int64_t budget : budgets)
        for (GroupSelection group : {GroupSelection::per_head, GroupSelection::shared_sum}) {
          if (budget >= n || (group == GroupSelection::shared_sum && H == KVH)) continue;
          const std::string key = std::to_string(budget) + ":" + group_selection_name(group);
          const double sel = median(res["sel " + key]), att = median(res["att " + key]), tot = median(res["tot " + key]);
          const std::string name = std::string(s.name) + (group == GroupSelection::shared_sum ? "-sh" : "");
          const bool ph = group == GroupSelection::per_head;
          const double str = ph ? median(res["str  " + key]) : NAN;
          std::snprintf(line, sizeof line,
                        "%-16s %5lld %7lld %6lld | %9.1f %7.0f %5.1f%% | %9.1f | %8.1f %8.1f %8.1f | %7.2f %7.2f | %8.1f %7.2f",
                        name.c_str(), (long long)B, (long long)n, (long long)budget, dense, gbs, 100.0 * gbs / copy_gbs,
                        sd, sel, att, tot, sd / tot, dense / tot, str, sd / str);
          emit();
          for (const std::string& var : [&] {
                 auto v = adamas_variants;
                 if (warm_code) v.insert(v.begin(), "warm-code");
                 return v;
               }()) {
            const double us = median(res["avar " + var + " " + key]);
            std::snprintf(line, sizeof line, "%-16s %5lld %7lld %6lld | adamas %8.1f us, x_sdpa %5.2f | variant %s",
                          name.c_str(), (long long)B, (long long)n, (long long)budget, us, sd / us, var.c_str());
            emit();
          }
          for (const std::string& var : ph ? stream_variants : std::vector<std::string>{}) {
            const double us = median(res["str " + var + " " + key]);
            std::snprintf(line, sizeof line, "%-16s %5lld %7lld %6lld | stream %8.1f us, x_sdpa %5.2f | variant %s",
                          name.c_str(), (long long)B, (long long)n, (long long)budget, us, sd / us, var.c_str());
            emit();
          }
          if (jf)
            std::fprintf(jf,
                         "{\"shape\":\"%s\",\"group\":\"%s\",\"heads\":%d,\"kv_heads\":%d,\"dim\":%d,\"batch\":%lld,"
                         "\"context\":%lld,\"budget\":%lld,\"dense_us\":%.2f,\"dense_round_us\":%s,\"dense_gbs\":%.1f,"
                         "\"copy_gbs\":%.1f,\"sdpa_us\":%.2f,\"select_us\":%.2f,\"attend_us\":%.2f,\"adamas_us\":%.2f,"
                         "\"allocs\":%d,\"flush\":\"%s\"}\n",
                         s.name, group_selection_name(group), s.heads, s.kv_heads, D, (long long)B, (long long)n,
                         (long long)budget, dense, rounds_json.c_str(), gbs, copy_gbs, std::isnan(sd) ? -1.0 : sd, sel,
                         att, tot, allocs, flush_mode.c_str());
        }
    }
  }
  if (jf) std::fclose(jf);
  std::printf("\n== decode attention%s, one layer, d=128 f16, %s, copy %.0f GB/s, L2 flushed by %s 256 MB, "
              "empty kernel %.1f us, medians of %d allocation rounds ==\n", dense_only ? " (dense only)" : "",
              cuda::device_name(), copy_gbs, flush_mode == "write" ? "writing" : "reading", empty_us, allocs);
  for (const auto& l : table) std::printf("%s\n", l.c_str());
  return 0;
}
