// Dense causal prefill attention on tensor cores (sm_90a, mma.sync f16 -> f32), flash-attention style: the CUDA
// counterpart of adamas::attend_dense_causal (attention.h), with the same arguments in device memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "adamas/attention.h"

namespace adamas::cuda {

// True when attend_dense_causal below takes these K/V: f16, head_dim 64 or 128, token and head strides that keep
// every row 16-byte aligned (multiples of 8 elements).
bool prefill_supported(const HeadsView& k, const HeadsView& v);

// q [n_queries][n_heads][dim] f32 (row stride q_stride floats, a multiple of 4); query i sits at position
// k.tokens - n_queries + i and attends to tokens [0, that position] of KV head h / (n_heads / kv_heads); out
// [n_queries][n_heads][dim] f32 (row stride out_stride, a multiple of 4). Blocks of 64 queries of one head (4 warps
// of 16 rows) stream tiles of 64 keys through shared memory (cp.async, double-buffered), with an online softmax in
// registers. Q (times scale) and the softmax weights are rounded to f16 for the products, accumulation is f32: the
// result is within about 1e-3 of the f32 one, relative to max |V|. Error(invalid_argument/unsupported) otherwise.
void attend_dense_causal(const float* q, int64_t n_queries, int64_t n_heads, int64_t q_stride, const HeadsView& k,
                         const HeadsView& v, float scale, float* out, int64_t out_stride, cudaStream_t stream);

}  // namespace adamas::cuda
