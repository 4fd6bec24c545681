// The GPU engine: a Llama forward on one GPU over a pool of per-sequence KV + code caches, for batches of
// sequences of different lengths (the base of a server: sequences are added and finished between steps).
//
// prefill(): one sequence, chunks of tokens, dense causal attention (gpu_prefill_attention.cu).
// generate()/decode(): steps over a batch, one token per sequence, attention through the Adamas CUDA operator
// (adamas::cuda::decode_attention: full, or Adamas in the layers from `dense_layers` on). Each step is enqueued
// without host synchronisation; with `cuda_graph` it is captured into a CUDA graph and replayed (the attention
// kernels take token counts as launch parameters, so each step is re-captured and the executable graph updated in
// place, while the GPU runs the previous step). Greedy tokens stay on the device between steps.
//
// Matrix products: f16 weights; up to 4 token rows a skinny f32-activation kernel (gpu_linear.cu), more rows
// cuBLASLt (gpu_gemm.h; f16 activations, f32 accumulation). Cache: f16 K/V [kv_heads][context][head_dim] per layer and slot, each
// slot virtually contiguous with physical pages mapped on demand (paged_cache.h). Quest, StreamingLLM, calibrated
// Adamas thresholds and sampling: gpu_session_sparse.cpp (the CPU engine's semantics).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "adamas/cuda_attention.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/gpu_gemm.h"
#include "engine/cuda/gpu_model.h"
#include "engine/cuda/gpu_ops.h"
#include "engine/cuda/paged_cache.h"
#include "engine/cuda/gpu_sampling.h"
#include "engine/cuda/gpu_sparse_baselines.h"
#include "engine/sampler.h"

namespace adamas::gpu {

using cuda::SequenceCache;

// Fusions of the decode path at <= 4 token rows (bits of GpuEngineOptions::fuse; benchmarks switch them off one at a
// time to measure each): RMSNorm folded into the next GEMV (its sum of squares accumulated by the GEMV that wrote
// the residual), SwiGLU in the gate/up GEMV's epilogue, RoPE + cache append + key codes in one kernel (any row
// count), programmatic dependent launch of the GEMVs (weights loaded while the previous kernel ends), and (with
// kFuseRope) RoPE + append + codes moved into the qkv GEMV's epilogue (kFuseRopeGemv).
// kFuseL2: in decode steps of sparse layers, the output projection's weights are prefetched into L2 on a side stream
// while the (latency-bound) selection and attention run, so the wo GEMV reads them from L2; kFuseL2Late starts the
// prefetch after the selection instead of with it, kFuseL2Last gives the lines L2's evict-last priority (variants
// for A/B runs; kFuseL2 measured slower, so not in kFuseAll). kFuseHalf (more than 4 rows: cuBLAS products with f16 inputs): RMSNorm and
// SwiGLU write f16 directly instead of f32 then a to_half kernel.
enum : unsigned {
  kFuseNorm = 1, kFuseSwiglu = 2, kFuseRope = 4, kFusePdl = 8, kFuseRopeGemv = 16, kFuseL2 = 32, kFuseHalf = 64,
  kFuseAll = 95, kFuseL2Late = 128, kFuseL2Last = 256, kFuseBits = 511
};

struct GpuEngineOptions {
  int64_t context = 4096;   // tokens per sequence slot
  int64_t max_batch = 1;    // sequence slots (the cache holds max_batch x context tokens)
  AttentionConfig attention;  // method full, adamas, quest or streaming
  int64_t dense_layers = 2;   // the first layers decode with full attention (as the CPU engine)
  int64_t prefill_chunk = 256;
  bool cuda_graph = true;
  // Paged cache (paged_cache.h): each slot a reserved virtual range, physical pages mapped as sequences grow and
  // reused after they finish. false: one cudaMalloc of max_batch x context up front.
  bool paged = true;
  bool cublas_lt = true;  // > 4 rows through cuBLASLt (false: cublasGemmEx; also its fallback for shapes Lt lacks)
  // max_batch > 4: the decode step's cuBLASLt products at n = max_batch timed at construction over the heuristic's
  // candidates, the fastest kept (LtGemm::tune).
  bool tune_gemm = true;
  int64_t cache_budget_bytes = 0;  // paged: cap on the cache's physical memory (0: whatever the GPU has)
  unsigned fuse = kFuseAll;
  // Adamas: per sequence, per (layer, KV head) key and (layer, query head) query thresholds from the quartiles of the
  // first prefill chunk's rotated keys/queries, as EngineOptions::calibrate_thresholds (a sequence must prefill first).
  bool calibrate_thresholds = false;
  SamplerConfig sampler;  // temperature 0: greedy; else the CPU Sampler's algorithm, one generator per sequence
  // Benchmarks: steps run eagerly with a CUDA event after each phase of the forward (GEMVs, attention, ...), and
  // profile() sums the GPU time per phase. The events break PDL overlap: the sum exceeds a graph step's time.
  bool profile = false;
};

// GPU milliseconds per phase of the decode steps run so far (GpuEngineOptions::profile), and the steps counted.
struct PhaseProfile {
  std::vector<std::pair<std::string, double>> ms;  // in the order the phases first ran
  int64_t steps = 0;
};

class GpuEngine {
 public:
  // Error(unsupported) for an unsupported head_dim or sampler, or a cache that does not fit
  // (naming the bytes); Error(invalid_argument) for bad sizes.
  GpuEngine(const GpuModel& model, const GpuEngineOptions& options);
  ~GpuEngine();
  GpuEngine(const GpuEngine&) = delete;
  GpuEngine& operator=(const GpuEngine&) = delete;

  const GpuEngineOptions& options() const { return opt_; }
  // A free cache slot for a new sequence (Error when all max_batch are taken); finish() returns it.
  int add_sequence();
  void finish(int seq);
  int64_t length(int seq) const;

  // Appends the tokens to sequence `seq` and returns the next token (greedy, or sampled: see options().sampler).
  int32_t prefill(int seq, std::span<const int32_t> tokens);
  // One step: sequence seqs[i] appends tokens[i]; returns the next token of each.
  std::vector<int32_t> decode(std::span<const int> seqs, std::span<const int32_t> tokens);
  // `steps` steps: the first appends `tokens`, each later one the previous step's outputs (which stay on the
  // device). Returns [steps][batch]. The host waits once, at the end.
  std::vector<std::vector<int32_t>> generate(std::span<const int> seqs, std::span<const int32_t> tokens,
                                             int64_t steps);
  // Logits of row `row` of the last prefill (row 0) or step (row = batch index).
  std::vector<float> logits(int64_t row) const;

  // Benchmarks: sequence `seq` gets `tokens` random K/V (and their codes), as if prefilled.
  void fill_random(int seq, int64_t tokens, uint64_t seed, float key_scale = 8.0f);
  // Device bytes the cache holds now (paged: the mapped pages), and physical pages created so far (paged: mapped +
  // free for reuse; 0 unpaged).
  int64_t cache_bytes() const;
  int64_t cache_pages_created() const;
  int64_t graph_steps() const { return graph_steps_; }
  int64_t eager_steps() const { return eager_steps_; }
  // Executable graphs instantiated anew because a step's cluster sizes changed (an update would keep the old ones).
  int64_t graph_rebuilds() const { return graph_rebuilds_; }
  int64_t gemm_lt_calls() const { return lt_->calls(); }  // products of > 4 rows that ran through cuBLASLt
  // Host time spent enqueuing (capturing, updating and launching) graph steps, per step, in microseconds.
  double host_us_per_step() const { return graph_steps_ ? host_us_ / double(graph_steps_) : 0.0; }
  const PhaseProfile& profile() const { return profile_; }
  // "name chosen/heuristic us, ..." (tune_gemm); 0.0/0.0 for a shape tuned earlier in the process.
  const std::string& gemm_tuning() const { return gemm_tuning_; }

 private:
  // More than kSkinnyMax rows: x is rounded to f16 first, unless `xh` holds it already (kFuseHalf).
  void linear(const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y, float beta,
              const GemvFusion& f = {}, const __half* xh = nullptr);
  void forward(int64_t n, bool decode, int seq, int64_t p0);  // rows' tokens/pos/slot already in d_tok_/d_pos_/d_slot_
  void decode_attention_layer(int64_t layer, int64_t n);
  void enqueue_step(int64_t step, int64_t batch);
  void run_step(int64_t step, int64_t batch);  // graph or eager
  void reserve_tokens(int seq, int64_t tokens);  // paged: maps the pages of tokens [0, tokens) and a margin
  std::vector<SequenceCache> views(int64_t layer, const int32_t* pos, const int32_t* slot, int64_t n) const;
  // gpu_session_sparse.cpp: Quest pages, StreamingLLM, calibrated thresholds, sampling.
  void setup_sparse();
  void reset_sparse(int seq);
  void append_sparse(int64_t layer, int64_t n, bool decode, int seq, int64_t p0);  // after RoPE + append
  std::pair<const Thresholds*, int64_t> key_thresholds(int64_t layer, int64_t n);  // for encode_vectors
  bool sparse_decode_layer(int64_t layer, int64_t n);  // false: decode_attention_layer's own path
  void prepare_steps(std::span<const int> seqs, int64_t steps);  // generate(): checks, sampling draws
  void use_draws(const double* host_draws) { cur_draws_ = host_draws; }  // null: greedy
  void pick_tokens(int64_t rows);  // logits_ -> d_tok_
  void prefetch_to_l2(const void* p, int64_t bytes);  // on side_, after the work enqueued so far on stream_
  void issue_prefetch();  // the layer's pending prefetch (prefetch_), if any
  void join_side(bool checked = true);  // stream_ waits for side_'s prefetches (before a step ends)
  void phase(const char* name);                      // profile: an event closing phase `name`
  void collect_profile();                            // profile: after the step's events, adds their times

  const GpuModel& model_;
  GpuEngineOptions opt_;
  CacheLayout cache_{};
  DeviceArena cache_mem_, buf_;
  std::unique_ptr<PagedCache> paged_;
  std::vector<int64_t> len_;  // tokens per slot, -1 when free
  cudaStream_t stream_ = nullptr;
  cudaStream_t side_ = nullptr;  // L2 prefetches (kFuseL2), forked from and joined to stream_ within a step
  cudaEvent_t fork_ = nullptr, join_ = nullptr;
  bool side_pending_ = false;
  struct {
    const void* p = nullptr;
    int64_t bytes = 0;
  } prefetch_;  // set by forward() for decode_attention_layer, which issues it with or after the selection
  std::vector<std::pair<const char*, cudaEvent_t>> marks_;  // profile: this step's phase events, in order
  std::vector<cudaEvent_t> mark_pool_;
  PhaseProfile profile_;
  std::string gemm_tuning_;
  void tune_gemms();
  cublasHandle_t blas_ = nullptr;
  std::unique_ptr<LtGemm> lt_;
  std::unique_ptr<cuda::Workspace> ws_;
  // device buffers, rows = max(max_batch, prefill_chunk)
  float *x_ = nullptr, *hn_ = nullptr, *qkv_ = nullptr, *q_ = nullptr, *att_ = nullptr, *gu_ = nullptr,
        *act_ = nullptr, *qpart_ = nullptr, *attpart_ = nullptr, *logits_ = nullptr;
  __half *xh_ = nullptr, *knew_ = nullptr;
  uint8_t* codes_new_ = nullptr;
  int32_t *d_tok_ = nullptr, *d_pos_ = nullptr, *d_slot_ = nullptr;
  Thresholds* d_thr_ = nullptr;
  int* rope_counters_ = nullptr;  // the qkv epilogue's pairs-done counts per (row, KV head), zero between steps
  double* ss_ = nullptr;  // fused RMSNorm sums: [2 n_layers + 1][rows], zeroed at the start of each forward
  void* blas_ws_ = nullptr;
  // host: the current step's rows (pinned rings written before the step is enqueued)
  int32_t *h_pos_ = nullptr, *h_out_ = nullptr;
  const int32_t* cur_pos_ = nullptr;  // positions of the step being enqueued
  int64_t h_cap_ = 0;
  std::vector<int32_t> row_slot_;
  int64_t last_rows_ = 0;
  // graphs: two executables, alternated so one is updated while the other may still run
  cudaGraphExec_t exec_[2] = {nullptr, nullptr};
  uint64_t exec_cluster_key_[2] = {0, 0};  // cuda::take_cluster_launch_key() of the step each was instantiated from
  cudaEvent_t done_[2] = {nullptr, nullptr};
  int64_t graph_steps_ = 0, eager_steps_ = 0, graph_rebuilds_ = 0;
  double host_us_ = 0;
  // Quest / StreamingLLM / calibrated thresholds / sampling state (gpu_session_sparse.cpp)
  DeviceArena sparse_mem_;
  QuestPages quest_{};
  SelectedRows selected_{};
  Thresholds *thr_keys_ = nullptr, *thr_queries_ = nullptr, *thr_rows_ = nullptr;  // [slot][layer][...] tables
  std::vector<char> calibrated_;  // per slot
  std::vector<float> inv_freq_host_;
  std::unique_ptr<SamplingDraws> draws_;
  double* d_uniform_ = nullptr;
  const double* cur_draws_ = nullptr;
};

}  // namespace adamas::gpu
