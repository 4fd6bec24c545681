// `adamas bench attention --device cpu`: one layer's decode attention, dense vs Adamas (estimate / select / attend),
// on a synthetic cache at a real model's shape, with the machine's copy bandwidth measured in the same run.
// `--device cuda` runs the CUDA benchmark (bench/cuda/bench_attention_cuda, built with the CUDA backend) with the
// same contexts, budgets, iterations and JSON file.
#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "adamas/attention.h"
#include "apps.h"
#include "bench_util.h"
#include "synthetic_cache.h"

namespace adamas::app {

namespace {

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (int64_t x : v) {
    if (!s.empty()) s += ',';
    s += std::to_string(x);
  }
  return s;
}

// The CUDA benchmark binary: $ADAMAS_BENCH_CUDA, else bench/cuda/bench_attention_cuda of this binary's build tree.
std::filesystem::path cuda_bench_path() {
  if (const char* e = std::getenv("ADAMAS_BENCH_CUDA")) return e;
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  return self.parent_path().parent_path() / "bench" / "cuda" / "bench_attention_cuda";
}

// Replaces this process by bench_attention_cuda (returns only on errors, which it raises).
int bench_attention_cuda(const BenchAttentionArgs& a) {
  ADAMAS_CHECK_ARG(a.dim == 128 && a.dtype == "f16", "--device cuda benchmarks head_dim 128 with f16 K/V (got --dim {} --dtype {})", a.dim, a.dtype);
  ADAMAS_CHECK_ARG(a.heads == 32 && (a.kv_heads == 32 || a.kv_heads == 8),
                   "--device cuda benchmarks the Llama-2-7B (--heads 32 --kv-heads 32) and Llama-3-8B (--heads 32 "
                   "--kv-heads 8) shapes (got --heads {} --kv-heads {})", a.heads, a.kv_heads);
  ADAMAS_CHECK_ARG(a.iters > 0, "--iters {} (expected > 0)", a.iters);
  const std::filesystem::path exe = cuda_bench_path();
  ADAMAS_CHECK(!exe.empty() && ::access(exe.c_str(), X_OK) == 0, ErrorKind::unsupported,
               "--device cuda: this build has no CUDA benchmark ({} not found; configure on a machine with nvcc so "
               "that the CUDA backend and bench_attention_cuda are built, or set ADAMAS_BENCH_CUDA)", exe.string());
  std::vector<std::string> args{exe.string(), "--shapes", a.kv_heads == 32 ? "mha" : "gqa", "--ctx", join(a.contexts),
                                "--budgets", join(a.budgets), "--iters", std::to_string(a.iters)};
  if (!a.json.empty()) args.insert(args.end(), {"--json", a.json});
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  ::execv(exe.c_str(), argv.data());
  ADAMAS_CHECK(false, ErrorKind::unsupported, "--device cuda: cannot run {}", exe.string());
  return 1;
}

}  // namespace

int bench_attention(const BenchAttentionArgs& a) {
  if (a.device == "cuda") return bench_attention_cuda(a);
  ADAMAS_CHECK_ARG(a.device == "cpu", "--device {} is not available in this command (expected cpu or cuda)", a.device);
  ADAMAS_CHECK_ARG(a.heads > 0 && a.kv_heads > 0 && a.heads % a.kv_heads == 0,
                   "--heads {} must be a positive multiple of --kv-heads {}", a.heads, a.kv_heads);
  ADAMAS_CHECK_ARG(is_supported_dim(a.dim), "--dim {} is not a power of two in [16, 512]", a.dim);
  ADAMAS_CHECK_ARG(a.iters > 0, "--iters {} (expected > 0)", a.iters);
  for (int64_t b : a.budgets) ADAMAS_CHECK_ARG(b > 0, "--budget {} (expected > 0)", b);
  for (int64_t c : a.contexts) ADAMAS_CHECK_ARG(c > 0, "--ctx {} (expected > 0)", c);
  const DType dtype = parse_dtype(a.dtype);
  const double elem = double(dtype_size(dtype));

  std::mt19937_64 rng(a.seed);
  CacheFlusher flush;
  const double copy_bw = copy_bandwidth();
  const double read_bw = read_bandwidth();
  fmt::print("# decode attention, one layer, CPU, {} threads: {} query / {} KV heads, head_dim {}, K/V {}, "
             "median of {} cold-cache steps\n",
             omp_get_max_threads(), a.heads, a.kv_heads, a.dim, dtype_name(dtype), a.iters);
  fmt::print("# copy bandwidth {:.1f} GB/s counting read + write (memcpy moves {:.1f} GB/s); read-only bandwidth {:.1f} "
             "GB/s\n# below, GB/s = bytes read / time; %copy = that / the read + write copy bandwidth\n",
             copy_bw / 1e9, copy_bw / 2e9, read_bw / 1e9);
  fmt::print("{:>7} {:>6} | {:>9} {:>7} {:>5} | {:>9} {:>9} {:>9} {:>9} {:>7} | {:>6}\n", "ctx", "budget",
             "dense_ms", "GB/s", "%copy", "est_ms", "select_ms", "attend_ms", "adamas_ms", "GB/s", "speedup");
  nlohmann::json rows = nlohmann::json::array();
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t ctx : a.contexts) {
    const Thresholds th{};
    SyntheticCache cache = make_cache(a.kv_heads, ctx, a.dim, dtype, a.key_std, th, rng);
    std::vector<float> q(size_t(a.heads * a.dim)), out(q.size());
    for (float& x : q) x = normal(rng) * a.key_std;
    DecodeInputs in;
    in.q = q.data(), in.n_heads = a.heads, in.k = cache.k(), in.v = cache.v(), in.codes = cache.code_view();
    DecodeWorkspace ws;
    // Dense
    std::vector<double> dense_t;
    AttentionConfig full;
    full.method = Method::full;
    for (int i = 0; i < a.iters + 1; ++i) {
      flush();
      DecodeTimings t;
      decode_attention(in, full, ws, out.data(), &t);
      if (i > 0) dense_t.push_back(t.attend_s);  // the first step warms up threads and pages
    }
    const double dense_s = median(dense_t);
    const double dense_bytes = 2.0 * double(a.kv_heads * ctx * a.dim) * elem;
    for (int64_t budget : a.budgets) {
      AttentionConfig cfg;
      cfg.method = Method::adamas, cfg.budget = budget;
      std::vector<double> est, sel, att, tot;
      int64_t rows_attended = 0;
      for (int i = 0; i < a.iters + 1; ++i) {
        flush();
        DecodeTimings t;
        decode_attention(in, cfg, ws, out.data(), &t);
        if (i == 0) continue;
        est.push_back(t.estimate_s), sel.push_back(t.select_s), att.push_back(t.attend_s);
        tot.push_back(t.estimate_s + t.select_s + t.attend_s);
        rows_attended = t.attended_rows;
      }
      const double adamas_s = median(tot);
      const double adamas_bytes = double(a.kv_heads * ctx * code_bytes(a.dim)) +
                                  2.0 * double(std::min(rows_attended, a.heads * ctx)) * double(a.dim) * elem;
      const double speedup = dense_s / adamas_s;
      fmt::print("{:>7} {:>6} | {:>9.3f} {:>7.1f} {:>5.0f} | {:>9.3f} {:>9.3f} {:>9.3f} {:>9.3f} {:>7.1f} | {:>5.1f}x\n",
                 ctx, budget, dense_s * 1e3, dense_bytes / dense_s / 1e9, 100.0 * dense_bytes / dense_s / copy_bw,
                 median(est) * 1e3, median(sel) * 1e3, median(att) * 1e3, adamas_s * 1e3,
                 adamas_bytes / adamas_s / 1e9, speedup);
      rows.push_back({{"ctx", ctx}, {"budget", budget}, {"heads", a.heads}, {"kv_heads", a.kv_heads},
                      {"dim", a.dim}, {"dtype", dtype_name(dtype)}, {"threads", omp_get_max_threads()},
                      {"dense_s", dense_s}, {"dense_gbps", dense_bytes / dense_s / 1e9},
                      {"copy_gbps", copy_bw / 1e9}, {"read_gbps", read_bw / 1e9}, {"estimate_s", median(est)}, {"select_s", median(sel)},
                      {"attend_s", median(att)}, {"adamas_s", adamas_s},
                      {"adamas_gbps", adamas_bytes / adamas_s / 1e9}, {"speedup", speedup}});
    }
  }
  if (!a.json.empty()) write_json(a.json, nlohmann::json{{"command", "bench attention"}, {"rows", rows}});
  return 0;
}

}  // namespace adamas::app
