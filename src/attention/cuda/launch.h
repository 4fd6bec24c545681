// Host-side internals of the CUDA backend: argument checks, batch descriptors, the workspace state.
#pragma once

#include <cstdint>
#include <vector>

#include "adamas/cuda_attention.h"
#include "attention/cuda/common.cuh"

namespace adamas::cuda::detail {

inline void check_supported_dim(int64_t dim, const char* where) {
  CUDA_REQUIRE(dim == 64 || dim == 128 || dim == 256, ErrorKind::unsupported, where, ": head_dim ", dim, " is not supported on CUDA (64, 128 or 256)");
}

struct RowInfo {
  int cut;   // distances < cut are kept
  int skip;  // the oldest `skip` ties (distance == cut) of the middle are dropped
  int ties;  // number of middle tokens at distance == cut
  int pad;
};

// Checks a batch and returns its descriptor chunks (kMaxBatch sequences each).
std::vector<BatchDesc> make_batches(const BatchInputs& in, bool need_codes, const char* where);

// Launch configuration of `grid` (blocks of `threads`) in clusters of C blocks along x; attr: room for one.
// Every launch with a cluster attribute goes through note_cluster_launch(cfg) just before it (take_cluster_launch_key).
void note_cluster_launch(const cudaLaunchConfig_t& cfg);
cudaLaunchConfig_t cluster_launch_config(dim3 grid, int threads, int C, size_t smem, cudaStream_t stream,
                                         cudaLaunchAttribute* attr);
// Most clusters of C blocks of `kernel` (its attributes already set) resident at once at `smem` bytes of dynamic
// shared memory, 0 when none fits; cached per (kernel, C, smem).
int max_active_clusters(const void* kernel, int threads, int C, size_t smem);

}  // namespace adamas::cuda::detail

namespace adamas::cuda {

struct Workspace::State {
  int sms = 0;
  // selection
  uint16_t* dist = nullptr;
  size_t dist_bytes = 0;
  uint32_t* hist = nullptr;  // zero between launches (the last block of a row clears it)
  size_t hist_bytes = 0;
  uint32_t* row_done = nullptr;  // zero between launches
  size_t row_done_bytes = 0;
  detail::RowInfo* info = nullptr;
  size_t info_bytes = 0;
  unsigned long long* status = nullptr;  // look-back tile states, tagged with `epoch`
  size_t status_bytes = 0;
  uint32_t* tile_ctr = nullptr;  // zero between launches
  size_t tile_ctr_bytes = 0;
  uint32_t epoch = 0;
  // grid select (v4): cumulative counts per block, row histograms by barrier parity, barriers (arrivals, generation)
  uint32_t* gcum = nullptr;
  size_t gcum_bytes = 0;
  uint32_t* gtotal = nullptr;  // the half the next launch of a row uses is zero
  size_t gtotal_bytes = 0;
  uint32_t* gbar = nullptr;
  size_t gbar_bytes = 0;
  int64_t grid_key[3] = {-1, -1, -1};  // (units, bins, kv_heads) of the last grid launch: a change resets the two above
  // stream path (v8, stream_attention.cu): row histograms, row arrival counts, hand-out counters (zero between launches)
  uint32_t* stream_hist = nullptr;
  size_t stream_hist_bytes = 0;
  uint32_t* stream_done = nullptr;
  size_t stream_done_bytes = 0;
  uint32_t* stream_ctr = nullptr;
  size_t stream_ctr_bytes = 0;
  int64_t stream_ld = 0;  // distance row stride of the last stream launch (tests)
  int32_t* stream_debug = nullptr;  // tests: per row tail values (ADAMAS_CUDA_STREAM_DEBUG)
  size_t stream_debug_bytes = 0;
  int32_t* idx = nullptr;
  size_t idx_bytes = 0;
  int32_t* counts = nullptr;
  size_t counts_bytes = 0;
  SelectionView last{};
  // a batch split by AttentionConfig::dense_below: its queries and outputs, the dense sequences' rows first
  float* split_q = nullptr;
  size_t split_q_bytes = 0;
  float* split_out = nullptr;
  size_t split_out_bytes = 0;
  // attention
  float* part = nullptr;
  size_t part_bytes = 0;
  uint32_t* done = nullptr;  // zero between launches
  size_t done_bytes = 0;
};

namespace detail {
// Grows a device buffer to at least `bytes` (contents lost); zero-fills when asked.
void ensure(void** ptr, size_t* have, size_t bytes, bool zero);
template <class T>
void ensure(T** ptr, size_t* have, size_t bytes, bool zero) {
  ensure(reinterpret_cast<void**>(ptr), have, bytes, zero);
}
}  // namespace detail

}  // namespace adamas::cuda
