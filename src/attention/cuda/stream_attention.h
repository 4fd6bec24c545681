// v8, the stream path: Adamas selection and (optionally) the attention over it in one persistent launch, each row's
// tail (cut-off, compaction, attention) overlapping the other rows' code stream. stream_attention.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "adamas/cuda_attention.h"

namespace adamas::cuda::detail {

// True when this call goes through the stream kernel: ADAMAS_CUDA_SELECT=stream forces it where it is supported
// (per-head selection, head_dim 64 or 128, budget <= 4096, 16-byte aligned codes and queries); other values of
// ADAMAS_CUDA_SELECT force the older paths; unset: the stream kernel where it is the measured default.
bool stream_selected(const BatchInputs& in, const AttentionConfig& config);

// The selection of every (sequence, query head) into the workspace (SelectionView as select() returns it) and, when
// out is not null, the attention over it into out [batch][n_heads][dim] (sequences with n <= budget: all tokens).
void stream_attention(const BatchInputs& in, const AttentionConfig& config, Workspace& ws, float* out,
                      cudaStream_t stream);

// Tests: the u16 distances of the last stream launch on `ws` (device, [sequence][query head][ld], rows of sequences
// with n <= budget not written), to check the distance pass against the CPU on its own.
struct StreamScratch {
  const uint16_t* dist;
  int64_t ld;
  const int32_t* debug;  // ADAMAS_CUDA_STREAM_DEBUG set: per row (12) cut, skip, need, s0, tail, middle, kept, ties, sum of distances
};
StreamScratch stream_scratch(const Workspace& ws);

}  // namespace adamas::cuda::detail
