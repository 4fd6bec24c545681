// Matrix products of more than 4 token rows (prefill chunks, large batches) through cuBLASLt:
// y [n][rows] f32 = beta * y + x [n][cols] f16 . W^T, W f16 [rows][cols] row-major, f32 accumulation. One plan
// (descriptors + the heuristic's algorithm) per shape, made once and reused, so a captured step does no host search.
#pragma once

#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>
#include <utility>

namespace adamas::gpu {

class LtGemm {
 public:
  // `workspace` (device, `bytes`) is shared with the caller's other cuBLAS work on the same stream.
  LtGemm(void* workspace, int64_t bytes);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // Enqueues the product; false (nothing enqueued) when cuBLASLt has no algorithm for the shape.
  bool run(const __half* w, int64_t rows, int64_t cols, const __half* x, int64_t n, float* y, float beta,
           cudaStream_t s);
  int64_t calls() const { return calls_; }  // products enqueued so far
  // Times up to 16 of the heuristic's algorithms for this shape on the given weights (cycled, so that most calls miss
  // L2; x and y are scratch of the shape's size) and keeps the fastest for run(). Not while a stream captures. The
  // choice is kept per process and shape, so that every engine of a process computes the same sums. Returns the
  // chosen algorithm's time and the heuristic's first choice's (us per call).
  std::pair<double, double> tune(const __half* const* ws, int n_ws, int64_t rows, int64_t cols, const __half* x,
                                 int64_t n, float* y, float beta, cudaStream_t s);

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool ok = false, tuned = false;
  };
  Plan& plan(int64_t rows, int64_t cols, int64_t n, bool accumulate);

  cublasLtHandle_t lt_ = nullptr;
  void* ws_ = nullptr;
  int64_t ws_bytes_ = 0, calls_ = 0;
  std::map<std::tuple<int64_t, int64_t, int64_t, bool>, Plan> plans_;
};

}  // namespace adamas::gpu
