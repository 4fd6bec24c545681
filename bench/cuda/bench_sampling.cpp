// Cost of a decode step's token choice on the GPU: argmax_rows (greedy) against sample_rows (temperature, top-k,
// top-p) over random logits, rows 1 and 16, vocabularies of Llama-2 (32000) and Llama-3 (128256). Median of 9
// timings of 50 back-to-back launches each (CUDA events). Usage: bench_sampling.
#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "adamas/cuda_attention.h"
#include "engine/cuda/gpu_ops.h"
#include "engine/cuda/gpu_sampling.h"

using namespace adamas;

namespace {

template <class F>
double median_us(F&& launch) {
  cudaEvent_t a, b;
  cudaEventCreate(&a), cudaEventCreate(&b);
  launch();  // warm-up
  std::vector<double> t;
  for (int rep = 0; rep < 9; ++rep) {
    cudaEventRecord(a);
    for (int i = 0; i < 50; ++i) launch();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(1e3 * ms / 50);
  }
  cudaEventDestroy(a), cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main() {
  if (!cuda::device_available()) {
    fmt::print("no CUDA device: sampling benchmark skipped\n");
    return 0;
  }
  fmt::print("device: {}; us per launch (median of 9 x 50)\n\n| vocab | rows | argmax | top-k 40, top-p 0.95 | top-k "
             "4096, top-p 0.95 |\n| ---: | ---: | ---: | ---: | ---: |\n", cuda::device_name());
  for (int64_t vocab : {int64_t(32000), int64_t(128256)})
    for (int64_t rows : {int64_t(1), int64_t(16)}) {
      float* logits = nullptr;
      double* u = nullptr;
      int32_t* out = nullptr;
      cudaMalloc(&logits, size_t(rows * vocab) * 4);
      cudaMalloc(&u, size_t(rows) * 8);
      cudaMalloc(&out, size_t(rows) * 4);
      gpu::fill_random_f32(logits, rows * vocab, 7, 8.0f, 0.0f, nullptr);
      std::vector<double> draws(static_cast<size_t>(rows), 0.37);
      cudaMemcpy(u, draws.data(), draws.size() * 8, cudaMemcpyHostToDevice);
      const double greedy = median_us([&] { gpu::argmax_rows(logits, rows, vocab, out, nullptr); });
      const double k40 = median_us([&] { gpu::sample_rows(logits, rows, vocab, {0.8f, 40, 0.95f, 1}, u, out, nullptr); });
      const double k4096 =
          median_us([&] { gpu::sample_rows(logits, rows, vocab, {0.8f, 4096, 0.95f, 1}, u, out, nullptr); });
      fmt::print("| {} | {} | {:.1f} | {:.1f} | {:.1f} |\n", vocab, rows, greedy, k40, k4096);
      cudaFree(logits), cudaFree(u), cudaFree(out);
    }
  return cudaGetLastError() == cudaSuccess ? 0 : 1;
}
