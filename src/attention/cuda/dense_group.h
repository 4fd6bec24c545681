// Dense decode attention of whole GQA groups on tensor cores (v7, dense_group.cu): internal to the CUDA backend.
#pragma once

#include <cstdint>

#include "adamas/cuda_attention.h"

namespace adamas::cuda::detail {

// True when the group kernel covers this shape: head_dim 64 or 128, 1 to 8 query heads per KV head.
bool dense_group_supports(int64_t dim, int64_t group);
// ADAMAS_CUDA_DENSE=v6 forces the v6 kernel (attend.cu) for dense attention (A/B in tests and the benchmark).
bool dense_group_disabled();
// Dense attention of every query head over all rows of its sequence (as cuda::attend_dense).
void attend_dense_group(const BatchInputs& in, float scale, Workspace& ws, float* out, cudaStream_t stream,
                        const char* where);

}  // namespace adamas::cuda::detail
