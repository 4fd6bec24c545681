// v9, the cluster path: Adamas selection and (optionally) the attention over it in one launch, one thread-block
// cluster per (sequence, KV head), everything between the code stream and the output in distributed shared memory.
// cluster_attention.cu; NOTES.md "v9".
#pragma once

#include <cuda_runtime.h>

#include "adamas/cuda_attention.h"

namespace adamas::cuda::detail {

// True when this call goes through the cluster kernel: ADAMAS_CUDA_SELECT=cluster forces it where it is supported;
// any other value of ADAMAS_CUDA_SELECT forces an older path; unset: the cluster kernel where it is supported and every
// cluster of the launch is resident at once (head_dim 64 or 128, groups of 1, 2 or 4 query heads, at most 64
// sequences, at least 2 blocks per cluster with one block per SM).
bool cluster_selected(const BatchInputs& in, const AttentionConfig& config, bool attend);

// The selection of every (sequence, unit) into the workspace (SelectionView as select() returns it) and, when out is
// not null, the attention over it into out [batch][n_heads][dim]. Requires cluster_selected(in, config, out != null).
void cluster_attention(const BatchInputs& in, const AttentionConfig& config, Workspace& ws, float* out,
                       cudaStream_t stream);

}  // namespace adamas::cuda::detail
