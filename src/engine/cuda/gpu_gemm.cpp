#include "engine/cuda/gpu_gemm.h"

#include "core/check.h"

namespace adamas::gpu {
namespace {
void lt_check(cublasStatus_t st, const char* what) {
  ADAMAS_CHECK(st == CUBLAS_STATUS_SUCCESS, ErrorKind::unsupported, "cuBLASLt: {} failed (status {})", what, int(st));
}
}  // namespace

LtGemm::LtGemm(void* workspace, int64_t bytes) : ws_(workspace), ws_bytes_(bytes) {
  lt_check(cublasLtCreate(&lt_), "cublasLtCreate");
}

LtGemm::~LtGemm() {
  for (auto& [key, p] : plans_) {
    if (p.desc) cublasLtMatmulDescDestroy(p.desc);
    for (cublasLtMatrixLayout_t l : {p.a, p.b, p.c})
      if (l) cublasLtMatrixLayoutDestroy(l);
  }
  if (lt_) cublasLtDestroy(lt_);
}

// Column-major view, as cublasGemmEx was called before: y^T [rows][n] = W^T^T x^T, W stored [rows][cols] row-major
// = [cols][rows] column-major, taken transposed.
LtGemm::Plan& LtGemm::plan(int64_t rows, int64_t cols, int64_t n, bool accumulate) {
  const auto key = std::make_tuple(rows, cols, n, accumulate);
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  Plan& p = plans_[key];
  lt_check(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul descriptor");
  const cublasOperation_t t = CUBLAS_OP_T;
  lt_check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t), "transpose A");
  lt_check(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16F, uint64_t(cols), uint64_t(rows), cols), "layout A");
  lt_check(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16F, uint64_t(cols), uint64_t(n), cols), "layout B");
  lt_check(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, uint64_t(rows), uint64_t(n), rows), "layout C");
  cublasLtMatmulPreference_t pref = nullptr;
  lt_check(cublasLtMatmulPreferenceCreate(&pref), "preference");
  const uint64_t ws = uint64_t(ws_bytes_);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  cublasLtMatmulHeuristicResult_t r{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt_, p.desc, p.a, p.b, p.c, p.c, pref, 1, &r, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  p.ok = st == CUBLAS_STATUS_SUCCESS && found > 0;
  if (p.ok) p.algo = r.algo;
  (void)accumulate;  // beta 0 and 1 get separate plans: the heuristic may differ when C is read
  return p;
}

bool LtGemm::run(const __half* w, int64_t rows, int64_t cols, const __half* x, int64_t n, float* y, float beta,
                 cudaStream_t s) {
  Plan& p = plan(rows, cols, n, beta != 0.0f);
  if (!p.ok) return false;
  const float alpha = 1.0f;
  lt_check(cublasLtMatmul(lt_, p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo, ws_, size_t(ws_bytes_),
                          s),
           "cublasLtMatmul");
  ++calls_;
  return true;
}

}  // namespace adamas::gpu
