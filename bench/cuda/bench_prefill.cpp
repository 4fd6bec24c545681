// Prefill speed of the GPU engine, the simple f32 prefill attention kernel (ADAMAS_PREFILL=simple) against the
// tensor-core one (src/attention/cuda/prefill.cu), side by side in one process: Llama-2-7B shape, random f16
// weights, random prompts of 4K-32K tokens prefilled in chunks.
// Usage: bench_prefill [--reps N] [--simple-up-to L] [lengths...] (default 1 rep, lengths 4096 8192 16384 32768):
// the median of N runs per cell. The simple kernel's attention grows with the square of the length: it runs up to
// length L (default all), and is skipped where the last measured time, scaled by that square, predicts over 100 s.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "adamas/cuda_attention.h"
#include "engine/cuda/gpu_session.h"

using namespace adamas;

namespace {

ModelConfig llama2_7b() {
  ModelConfig c;
  c.architecture = "llama", c.name = "Llama-2-7B shape";
  c.n_layers = 32, c.dim = 4096, c.n_heads = 32, c.n_kv_heads = 32, c.head_dim = 128, c.n_rot = 128;
  c.ffn_dim = 11008, c.vocab = 32000, c.rope_base = 10000.0, c.norm_eps = 1e-5f;
  c.context_length = int64_t(1) << 20;  // random weights: no trained context
  return c;
}

double prefill_seconds(gpu::GpuEngine& e, int64_t tokens, bool simple) {
  if (simple) setenv("ADAMAS_PREFILL", "simple", 1);
  else unsetenv("ADAMAS_PREFILL");
  std::mt19937 rng(static_cast<uint32_t>(tokens));
  std::vector<int32_t> prompt(static_cast<size_t>(tokens));
  for (int32_t& t : prompt) t = int32_t(rng() % 32000);
  const int seq = e.add_sequence();
  const auto t0 = std::chrono::steady_clock::now();
  e.prefill(seq, prompt);  // synchronizes
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  e.finish(seq);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (!cuda::device_available()) {
    fmt::print("no CUDA device: prefill benchmark skipped\n");
    return 0;
  }
  std::vector<int64_t> lengths;
  int reps = 1;
  int64_t simple_up_to = INT64_MAX;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::stoi(argv[++i]));
    else if (a == "--simple-up-to" && i + 1 < argc) simple_up_to = std::stoll(argv[++i]);
    else lengths.push_back(std::stoll(a));
  }
  if (lengths.empty()) lengths = {4096, 8192, 16384, 32768};
  int64_t longest = 0;
  for (int64_t l : lengths) longest = std::max(longest, l);
  const gpu::GpuModel model = gpu::GpuModel::random(llama2_7b(), 1);
  fmt::print("device: {}; model: Llama-2-7B shape, random f16 weights; prompt tokens/s (median of {} run(s))\n\n",
             cuda::device_name(), reps);
  auto median_s = [&](gpu::GpuEngine& e, int64_t tokens, bool simple) {
    std::vector<double> t;
    for (int r = 0; r < reps; ++r) t.push_back(prefill_seconds(e, tokens, simple));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  fmt::print("| tokens | simple kernel, chunk 256 | tensor cores, chunk 256 | tensor cores, chunk 1024 | speedup (1024 vs "
             "simple) |\n| --- | --- | --- | --- | --- |\n");
  std::vector<double> simple(lengths.size(), 0), tc256(lengths.size(), 0), tc1024(lengths.size(), 0);
  for (int64_t chunk : {int64_t(256), int64_t(1024)}) {
    gpu::GpuEngineOptions o;
    o.context = longest, o.max_batch = 1, o.prefill_chunk = chunk, o.attention.method = Method::full;
    gpu::GpuEngine e(model, o);
    prefill_seconds(e, 512, false);  // warm-up: cuBLAS, kernel attributes
    double last_s = 0, last_len = 1;
    for (size_t i = 0; i < lengths.size(); ++i) {
      const double ratio = double(lengths[i]) / last_len;
      if (chunk == 256 && lengths[i] <= simple_up_to && last_s * ratio * ratio < 100.0) {
        simple[i] = median_s(e, lengths[i], true);
        last_s = simple[i], last_len = double(lengths[i]);
      }
      (chunk == 256 ? tc256 : tc1024)[i] = median_s(e, lengths[i], false);
    }
  }
  for (size_t i = 0; i < lengths.size(); ++i) {
    const double l = double(lengths[i]);
    const std::string before = simple[i] > 0 ? fmt::format("{:.0f}", l / simple[i]) : "skipped";
    const std::string gain = simple[i] > 0 ? fmt::format("{:.2f}x", simple[i] / tc1024[i]) : "";
    fmt::print("| {} | {} | {:.0f} | {:.0f} | {} |\n", lengths[i], before, l / tc256[i], l / tc1024[i], gain);
  }
  return 0;
}
