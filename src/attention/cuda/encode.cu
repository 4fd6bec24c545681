// Key and query codes on the GPU: one warp per vector, Hadamard by warp shuffles, bucketize, pack 4 codes a byte.
#include <cmath>

#include "attention/cuda/common.cuh"
#include "attention/cuda/launch.h"

namespace adamas::cuda {
namespace detail {
namespace {

constexpr int kWarps = 8;

// Row r of the launch is (head r / per_head, token begin + r % per_head).
template <int D, class T>
__global__ void __launch_bounds__(kWarps * 32) encode_rows_kernel(const T* __restrict__ x, int64_t rows,
                                                                  int64_t per_head, int64_t begin,
                                                                  int64_t head_stride, int64_t tok_stride,
                                                                  uint8_t* __restrict__ codes, int64_t c_head,
                                                                  int64_t c_tok, const Thr* __restrict__ thr,
                                                                  int shared_thr, float scale) {
  const int64_t r = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int64_t h = r / per_head, t = begin + r % per_head;
  float v[D / 32];
  load_lane<D, T>(x + h * head_stride + t * tok_stride, v);
  warp_hadamard<D>(v, scale);
  const Thr th = thr[shared_thr ? 0 : h];
  warp_encode_store<D>(v, th, codes + h * c_head + t * c_tok);
}

template <int D>
void launch_encode(const void* x, DType dtype, int64_t rows, int64_t per_head, int64_t begin, int64_t hs,
                   int64_t ts, uint8_t* codes, int64_t ch, int64_t ct, const Thresholds* thr, bool shared,
                   cudaStream_t stream) {
  const float scale = 1.0f / std::sqrt(float(D));  // the CPU's expression: identical f32 value
  const unsigned blocks = unsigned((rows + kWarps - 1) / kWarps);
  const Thr* t = reinterpret_cast<const Thr*>(thr);
  switch (dtype) {
    case DType::f32:
      encode_rows_kernel<D, float><<<blocks, kWarps * 32, 0, stream>>>(static_cast<const float*>(x), rows,
                                                                       per_head, begin, hs, ts, codes, ch, ct, t,
                                                                       shared, scale);
      break;
    case DType::f16:
      encode_rows_kernel<D, __half><<<blocks, kWarps * 32, 0, stream>>>(static_cast<const __half*>(x), rows,
                                                                        per_head, begin, hs, ts, codes, ch, ct, t,
                                                                        shared, scale);
      break;
    case DType::bf16:
      encode_rows_kernel<D, __nv_bfloat16><<<blocks, kWarps * 32, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(x), rows, per_head, begin, hs, ts, codes, ch, ct, t, shared, scale);
      break;
  }
  launch_check("encode kernel launch");
}

void encode_dispatch(const void* x, DType dtype, int64_t dim, int64_t rows, int64_t per_head, int64_t begin,
                     int64_t hs, int64_t ts, uint8_t* codes, int64_t ch, int64_t ct, const Thresholds* thr,
                     bool shared, cudaStream_t stream) {
  if (rows == 0) return;
  switch (dim) {
    case 64: launch_encode<64>(x, dtype, rows, per_head, begin, hs, ts, codes, ch, ct, thr, shared, stream); break;
    case 128: launch_encode<128>(x, dtype, rows, per_head, begin, hs, ts, codes, ch, ct, thr, shared, stream); break;
    case 256: launch_encode<256>(x, dtype, rows, per_head, begin, hs, ts, codes, ch, ct, thr, shared, stream); break;
    default: ::adamas::cuda::detail::raise(ErrorKind::unsupported, "cuda encode: head_dim ", dim, " (supported: 64, 128, 256)");
  }
}

}  // namespace
}  // namespace detail

void encode_keys(const HeadsView& keys, int64_t begin, int64_t end, const Thresholds* thresholds,
                 int64_t n_thresholds, const MutCodesView& codes, cudaStream_t stream) {
  detail::check_supported_dim(keys.dim, "cuda::encode_keys");
  CUDA_REQUIRE(0 <= begin && begin <= end && end <= keys.tokens, ErrorKind::invalid_argument, "cuda::encode_keys: token range [", begin, ", ", end, ") is outside the ", keys.tokens, " keys");
  CUDA_REQUIRE(codes.dim == keys.dim && codes.heads == keys.heads && codes.tokens >= end, ErrorKind::shape_mismatch, "cuda::encode_keys: codes [", codes.heads, ", ", codes.tokens, ", ", codes.dim, "] do not cover keys [", keys.heads, ", ", end, ", ", keys.dim, "]");
  CUDA_REQUIRE(n_thresholds == 1 || n_thresholds == keys.heads, ErrorKind::shape_mismatch, "cuda::encode_keys: ", n_thresholds, " thresholds for ", keys.heads, " heads (expected 1 or one per head)");
  if (end == begin) return;
  CUDA_REQUIRE(keys.data && codes.data && thresholds, ErrorKind::invalid_argument, "cuda::encode_keys: null pointer");
  const int64_t n = end - begin;
  detail::encode_dispatch(keys.data, keys.dtype, keys.dim, keys.heads * n, n, begin, keys.head_stride,
                          keys.token_stride, codes.data, codes.head_stride, codes.token_stride, thresholds,
                          n_thresholds == 1, stream);
}

void encode_vectors(const void* x, DType dtype, int64_t n, int64_t dim, int64_t x_stride,
                    const Thresholds* thresholds, int64_t n_thresholds, uint8_t* codes, cudaStream_t stream) {
  detail::check_supported_dim(dim, "cuda::encode_vectors");
  CUDA_REQUIRE(n >= 0 && x_stride >= dim, ErrorKind::invalid_argument, "cuda::encode_vectors: n = ", n, ", stride ", x_stride, " < dim ", dim);
  CUDA_REQUIRE(n_thresholds == 1 || n_thresholds == n, ErrorKind::shape_mismatch, "cuda::encode_vectors: ", n_thresholds, " thresholds for ", n, " vectors");
  if (n == 0) return;
  CUDA_REQUIRE(x && codes && thresholds, ErrorKind::invalid_argument, "cuda::encode_vectors: null pointer");
  // Each vector is its own "head" with one token.
  detail::encode_dispatch(x, dtype, dim, n, 1, 0, x_stride, 0, codes, code_bytes(dim), 0, thresholds,
                          n_thresholds == 1, stream);
}

}  // namespace adamas::cuda
