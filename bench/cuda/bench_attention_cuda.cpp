// One layer's decode attention on the GPU: our dense kernel, PyTorch SDPA (sdpa_baseline.py, same run), and
// Adamas split into select / attend, for Llama-2-7B (32 heads MHA) and Llama-3-8B (32 q / 8 KV heads), d = 128,
// f16. Medians of CUDA-event timings with L2 flushed before each call (default: by reading 256 MB, which leaves
// clean lines; --flush write: a 256 MB memset, whose dirty lines cost every timed call up to ~17 us of write-backs); GB/s against a device-to-device copy
// measured in the same run. Prints a table and writes JSON lines (--json FILE).
//
// bench_attention_cuda [--quick] [--sdpa PATH|none] [--json FILE] [--iters N]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "adamas/cuda_attention.h"
#include "fill.h"

using namespace adamas;

namespace {

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

struct Timer {
  cudaEvent_t a, b;
  void* flush = nullptr;
  size_t flush_bytes = 256u << 20;
  unsigned* sink = nullptr;
  bool write_flush = false;  // --flush write: a memset (leaves L2 full of dirty lines that cost write-backs)
  Timer() {
    ck(cudaEventCreate(&a), "event");
    ck(cudaEventCreate(&b), "event");
    ck(cudaMalloc(&flush, flush_bytes), "flush buffer");
    ck(cudaMemset(flush, 0x5a, flush_bytes), "flush init");
    ck(cudaMalloc(&sink, 4), "flush sink");
  }
  void flush_l2(int i) {
    if (write_flush) ck(cudaMemsetAsync(flush, i & 0xff, flush_bytes), "flush");
    else bench_flush_read(flush, flush_bytes, sink);
  }
  // Median (us) of `iters` timed calls of f, each after an L2 flush.
  template <class F>
  double median_us(F&& f, int iters) {
    for (int i = 0; i < 3; ++i) f();
    ck(cudaDeviceSynchronize(), "warm-up");
    std::vector<double> t;
    for (int i = 0; i < iters; ++i) {
      flush_l2(i);
      ck(cudaEventRecord(a), "record");
      f();
      ck(cudaEventRecord(b), "record");
      ck(cudaEventSynchronize(b), "sync");
      float ms = 0;
      ck(cudaEventElapsedTime(&ms, a, b), "elapsed");
      t.push_back(ms * 1000.0);
    }
    ck(cudaGetLastError(), "timed launches");
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

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
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    else if (a == "--sdpa" && i + 1 < argc) sdpa = argv[++i];
    else if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--iters" && i + 1 < argc) iters = std::atoi(argv[++i]);
    else if (a == "--flush" && i + 1 < argc) flush_mode = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--quick] [--sdpa PATH|none] [--json FILE] [--iters N] [--flush read|write]\n", argv[0]);
      return 2;
    }
  }
  if (!cuda::device_available()) {
    std::printf("no CUDA device: benchmark skipped\n");
    return 0;
  }
  const int D = 128;
  const std::vector<Shape> shapes = {{"llama2-7b-mha", 32, 32}, {"llama3-8b-gqa", 32, 8}};
  struct Cfg {
    int batch;
    int64_t ctx;
  };
  std::vector<Cfg> cfgs;
  const std::vector<int64_t> ctx1 = quick ? std::vector<int64_t>{4096, 32768} :
                                            std::vector<int64_t>{4096, 8192, 16384, 32768, 65536, 131072};
  const std::vector<int64_t> ctx16 = quick ? std::vector<int64_t>{32768} : std::vector<int64_t>{4096, 32768, 131072};
  for (auto c : ctx1) cfgs.push_back({1, c});
  for (auto c : ctx16) cfgs.push_back({16, c});
  const std::vector<int64_t> budgets = quick ? std::vector<int64_t>{256} : std::vector<int64_t>{64, 256, 1024, 4096};

  // PyTorch SDPA first (its own process, before our buffers take the memory).
  std::map<std::string, double> sdpa_us;
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
        for (const auto& r : j["results"])
          sdpa_us[std::to_string(r["heads"].get<int>()) + ":" + std::to_string(r["kv_heads"].get<int>()) + ":" +
                  std::to_string(r["batch"].get<int>()) + ":" + std::to_string(r["context"].get<int64_t>())] =
              r["median_us"].get<double>();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "SDPA baseline failed (rc %d): %s\n", rc, e.what());
      }
    }
  }

  Timer timer;
  timer.write_flush = flush_mode == "write";
  // Copy bandwidth: 1 GiB device to device, bytes read + written.
  double copy_gbs = 0;
  {
    const size_t bytes = size_t(1) << 30;
    void *src, *dst;
    ck(cudaMalloc(&src, bytes), "copy src");
    ck(cudaMalloc(&dst, bytes), "copy dst");
    ck(cudaMemset(src, 1, bytes), "memset");
    const double us = timer.median_us([&] { ck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice), "copy"); }, 20);
    copy_gbs = 2.0 * double(bytes) / (us * 1e3);
    cudaFree(src);
    cudaFree(dst);
  }
  const double empty_us = timer.median_us([&] { bench_empty_kernel(); }, iters);
  std::printf("device: %s; copy bandwidth %.0f GB/s (read + write); SDPA: %s\n", cuda::device_name(), copy_gbs,
              torch_info.c_str());

  FILE* jf = json_path.empty() ? nullptr : std::fopen(json_path.c_str(), "w");
  std::vector<std::string> table;
  char line[512];
  std::snprintf(line, sizeof line, "%-14s %5s %7s %6s | %9s %7s %6s | %9s | %8s %8s %8s | %7s %7s", "shape", "batch",
                "context", "budget", "dense_us", "GB/s", "%copy", "sdpa_us", "select", "attend", "adamas", "x_sdpa",
                "x_dense");
  table.push_back(line);
  for (const auto& s : shapes) {
    for (const auto& c : cfgs) {
      const int64_t n = c.ctx, B = c.batch, KVH = s.kv_heads, H = s.heads;
      const size_t kv_elems = size_t(B * KVH * n * D);
      void *k, *v;
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
      const Thresholds th{-0.6f, 0.0f, 0.6f};
      ck(cudaMemcpy(thr, &th, sizeof th, cudaMemcpyHostToDevice), "thr");
      std::vector<cuda::SequenceCache> seqs;
      for (int64_t b = 0; b < B; ++b) {
        const size_t off = size_t(b * KVH * n * D);
        seqs.push_back({HeadsView::contiguous(static_cast<uint16_t*>(k) + off, DType::f16, KVH, n, D),
                        HeadsView::contiguous(static_cast<uint16_t*>(v) + off, DType::f16, KVH, n, D),
                        CodesView::contiguous(codes + off / 4, KVH, n, D)});
        cuda::encode_keys(seqs.back().k, 0, n, thr, 1,
                          MutCodesView::contiguous(codes + off / 4, KVH, n, D), nullptr);
      }
      ck(cudaDeviceSynchronize(), "setup");
      cuda::Workspace ws;
      const cuda::BatchInputs in{q, H, seqs, nullptr};
      const float scale = 1.0f / std::sqrt(float(D));
      const double dense = timer.median_us([&] { cuda::attend_dense(in, scale, ws, out, nullptr); }, iters);
      const double kv_bytes = double(kv_elems) * 2 * 2;
      const double gbs = kv_bytes / (dense * 1e3);
      const std::string key = std::to_string(H) + ":" + std::to_string(KVH) + ":" + std::to_string(B) + ":" +
                              std::to_string(n);
      const double sd = sdpa_us.count(key) ? sdpa_us[key] : NAN;
      for (int64_t budget : budgets) {
        if (budget >= n) continue;
        AttentionConfig cfg;
        cfg.budget = budget;
        cfg.thresholds = th;
        const double sel = timer.median_us([&] { cuda::select(in, cfg, ws, nullptr); }, iters);
        const double att = timer.median_us([&] { cuda::attend_selected(in, cfg, ws, scale, out, nullptr); }, iters);
        const double tot = timer.median_us([&] { cuda::decode_attention(in, cfg, ws, out, nullptr); }, iters);
        std::snprintf(line, sizeof line,
                      "%-14s %5lld %7lld %6lld | %9.1f %7.0f %5.1f%% | %9.1f | %8.1f %8.1f %8.1f | %7.2f %7.2f",
                      s.name, (long long)B, (long long)n, (long long)budget, dense, gbs, 100.0 * gbs / copy_gbs, sd,
                      sel, att, tot, sd / tot, dense / tot);
        table.push_back(line);
        std::printf("%s\n", line);
        std::fflush(stdout);
        if (jf)
          std::fprintf(jf,
                       "{\"shape\":\"%s\",\"heads\":%d,\"kv_heads\":%d,\"dim\":%d,\"batch\":%lld,\"context\":%lld,"
                       "\"budget\":%lld,\"dense_us\":%.2f,\"dense_gbs\":%.1f,\"copy_gbs\":%.1f,\"sdpa_us\":%.2f,"
                       "\"select_us\":%.2f,\"attend_us\":%.2f,\"adamas_us\":%.2f,\"flush\":\"%s\"}\n",
                       s.name, s.heads, s.kv_heads, D, (long long)B, (long long)n, (long long)budget, dense, gbs,
                       copy_gbs, std::isnan(sd) ? -1.0 : sd, sel, att, tot, flush_mode.c_str());
      }
      cudaFree(k), cudaFree(v), cudaFree(codes), cudaFree(q), cudaFree(out), cudaFree(thr);
    }
  }
  if (jf) std::fclose(jf);
  std::printf("\n== decode attention, one layer, d=128 f16, %s, copy %.0f GB/s, L2 flushed by %s 256 MB, "
              "empty kernel %.1f us ==\n",
              cuda::device_name(), copy_gbs, flush_mode == "write" ? "writing" : "reading", empty_us);
  for (const auto& l : table) std::printf("%s\n", l.c_str());
  return 0;
}
