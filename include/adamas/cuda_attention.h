// The Adamas attention operator on NVIDIA GPUs (sm_90a): the same functions as attention.h over device memory.
//
// Every pointer (and every view's data) given to these functions is device memory; host-side arguments are the
// view structs themselves, spans of them, and the config. Work is enqueued on `stream` and returns at once; the
// caller synchronizes. Invalid arguments raise adamas::Error before anything is enqueued; CUDA failures raise
// adamas::Error (kind unsupported) with the CUDA error string.
//
// Semantics are those of the CPU functions: bit-identical codes (same Hadamard butterfly order, same scale),
// exact L1 distances, the same selection (tie rule: among equal distances at the cut-off the more recent tokens
// win; [0, sink) and the last max(window, 1) tokens are forced; budget >= n keeps all; indices increasing), and
// attention with f32 accumulation (equal to the CPU's up to rounding).
//
// Supported: head_dim 64, 128, 256; K/V in f16 or bf16 (f32 accepted by the encoders); any number of heads with
// n_heads a multiple of kv_heads (GQA group size 1, 2, 4 or 8; dense attention at head_dim 64 or 128 also 3, 5, 6 or 7);
// batches of sequences of different lengths.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <span>

#include "adamas/attention.h"

namespace adamas::cuda {

// True when a CUDA device is present and usable (the tests skip themselves otherwise).
bool device_available();
// Human-readable name of device 0 ("" when none).
const char* device_name();

// The thread-block cluster sizes of the kernels this thread launched since the last call, in launch order, as a hash
// (0: no cluster launch). For owners of CUDA graphs: cudaGraphExecUpdate takes a captured kernel's new grid but keeps
// the cluster size the executable graph was instantiated with, and a cluster kernel run with a cluster size other than
// the one it was launched for computes garbage or waits forever (session 12: the engine's batch test hung when a
// step's selection moved from clusters of 16 to 9). A step whose key differs from the executable graph's must be
// instantiated anew instead of updated.
uint64_t take_cluster_launch_key();

// Throws adamas::Error (kind unsupported) naming `what` when err != cudaSuccess.
void check_cuda(cudaError_t err, const char* what);

// ---------------------------------------------------------------------------------------------------------------
// Codes
// ---------------------------------------------------------------------------------------------------------------

// Codes of tokens [begin, end) of every head of `keys` (any dtype) into `codes`, bit-identical to
// adamas::encode_keys. `thresholds` is device memory holding `n_thresholds` entries: 1 (shared) or keys.heads.
void encode_keys(const HeadsView& keys, int64_t begin, int64_t end, const Thresholds* thresholds,
                 int64_t n_thresholds, const MutCodesView& codes, cudaStream_t stream);

// Codes of `n` vectors x + i * x_stride (elements), each `dim` long: codes + i * code_bytes(dim). Bit-identical to
// adamas::encode_vector. `thresholds`: device memory, 1 (shared) or n entries.
void encode_vectors(const void* x, DType dtype, int64_t n, int64_t dim, int64_t x_stride,
                    const Thresholds* thresholds, int64_t n_thresholds, uint8_t* codes, cudaStream_t stream);

// out[j] = exact L1 distance between `query_code` and the code of key j of head `head`, j < keys.tokens
// (adamas::l1_distances; the fused selection below does not write distances, this is for tests and studies).
void l1_distances(const uint8_t* query_code, const CodesView& keys, int64_t head, uint16_t* out,
                  cudaStream_t stream);

// ---------------------------------------------------------------------------------------------------------------
// One decode step of one layer over a batch of sequences
// ---------------------------------------------------------------------------------------------------------------

// One sequence's cache (device memory): K and V [kv_heads][tokens][dim], and (adamas) the codes of the same
// tokens. All sequences of a batch share dtype, kv_heads and dim; their token counts differ freely.
struct SequenceCache {
  HeadsView k, v;
  CodesView codes;
};

struct BatchInputs {
  const float* q = nullptr;  // device, [batch][n_heads][dim] f32, post-RoPE
  int64_t n_heads = 0;
  std::span<const SequenceCache> seqs;  // host array of device views, one per batch entry
  // adamas: device array of n_heads thresholds for the query codes; null = the config's thresholds.
  const Thresholds* query_thresholds = nullptr;
};

// Device scratch reused across steps (selection state, split-K partials). Grows on demand; one per stream.
class Workspace {
 public:
  Workspace();
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  struct State;
  State& state() { return *state_; }
  const State& state() const { return *state_; }

 private:
  std::unique_ptr<State> state_;
};

// The selection of the last select() on a workspace (device memory):
// indices [batch][units][capacity] int32 (a unit's first `count` entries are valid, increasing),
// counts [batch][units] int32. units = n_heads (per_head) or kv_heads (shared_sum).
struct SelectionView {
  const int32_t* indices = nullptr;
  const int32_t* counts = nullptr;
  int64_t batch = 0, units = 0, capacity = 0;
  bool shared = false;  // one selection per KV group
};

// Adamas estimate + select for every (sequence, query head or group): query codes, exact L1 over all codes, top-k
// with the CPU's tie rule, in two launches: (1) distances + per-row histograms (the last block of a row finds the
// cut-off), (2) compaction with a decoupled look-back scan. Distances (2 B per token and head) pass between the two
// through L2-sized scratch; codes are read once.
// GroupSelection::per_head and shared_sum are supported (shared_union throws unsupported).
SelectionView select(const BatchInputs& in, const AttentionConfig& config, Workspace& ws, cudaStream_t stream);

// The selection left on `ws` by the last select(), or by the last decode_attention() that selected (tests).
SelectionView last_selection(const Workspace& ws);

// Attention of every query head over the rows of the last select() on `ws` (split over rows, partial softmax
// merged in the same launch). out: device [batch][n_heads][dim] f32.
void attend_selected(const BatchInputs& in, const AttentionConfig& config, Workspace& ws, float scale, float* out,
                     cudaStream_t stream);

// Dense decode attention (flash-decoding split-K, one launch): out = softmax(scale q K^T) V over all tokens.
void attend_dense(const BatchInputs& in, float scale, Workspace& ws, float* out, cudaStream_t stream);

// adamas::decode_attention on the GPU for Method::full and Method::adamas: dense when full, or when every sequence
// fits the budget; otherwise select + attend_selected (sequences that fit the budget get all their tokens).
void decode_attention(const BatchInputs& in, const AttentionConfig& config, Workspace& ws, float* out,
                      cudaStream_t stream);

// Profiling hook. In builds with ADAMAS_CUDA_STAMPS (CMake option of the same name) the fused select kernel and
// the attend kernel write, per block, 8 %globaltimer stamps (ns) at phase boundaries into [block][8] of the given
// device buffers (null: off; block = x + gridDim.x * (y + gridDim.y * z); unreached slots keep their contents).
// Returns false (and does nothing) in builds without stamps. Slots: select 0 entry, 1 query codes made, 2 distances
// done, 3 after cluster barrier 1, 4 after barrier 2 (histogram slices), 5 cut-off found, 6 after barrier 3
// (counts), 7 end; attend 0 entry, 1 indices staged, 2 first tile landed, 3 tiles done, 4 partial/output written,
// 5 arrival counted, 6 merge done (last block only).
bool set_phase_stamps(unsigned long long* select_buf, unsigned long long* attend_buf);

}  // namespace adamas::cuda
