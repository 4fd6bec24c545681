// Kernels of the GPU Llama forward (src/engine/cuda/*.cu), as plain launch functions on a stream. Activations are
// f32 row-major [rows][width]; weights f16; the KV + code cache is laid out as described by CacheLayout.
// Every function enqueues and returns; launch errors surface at the next check (GpuEngine checks once per call).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace adamas::gpu {

// Where token `pos` of KV head h of layer l of cache slot s lives:
//   K: base + s * slot_bytes + l * layer_bytes + k_off + (h * capacity + pos) * head_dim * 2
//   V: ... + v_off (same shape), codes: ... + codes_off + (h * capacity + pos) * head_dim / 4 (when has_codes).
struct CacheLayout {
  uint8_t* base = nullptr;
  int64_t slot_bytes = 0, layer_bytes = 0, k_off = 0, v_off = 0, codes_off = 0;
  int64_t capacity = 0, kv_heads = 0, head_dim = 0;
  bool has_codes = false;
};

// x[r] = f16 embedding row of tokens[r] (f32 out). Token ids are checked on the host before they get here.
// With `ss` (the fused decode path): also ss[r] = sum of x[r]^2 in double, the first RMSNorm's input.
void embed_rows(const __half* table, const int32_t* tokens, int64_t rows, int64_t dim, float* x, cudaStream_t s,
                double* ss = nullptr);

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w (the CPU's order: sum of squares in double).
void rms_norm_rows(const float* x, const float* w, int64_t rows, int64_t dim, float eps, float* out,
                   cudaStream_t s);
// The same rounded to f16 (= rms_norm_rows then to_half, in one kernel): the input of a cuBLAS product.
void rms_norm_rows_half(const float* x, const float* w, int64_t rows, int64_t dim, float eps, __half* out,
                        cudaStream_t s);

// qkv rows [q | k | v] (f32): q rotated -> q_out [rows][n_heads][hd]; k rotated and v -> f16 into the cache at
// (slot[r], pos[r]) of `layer`, k also to k_new [rows][kv_heads][hd] f16 (for the code encoder). Rope pairs
// (2i, 2i+1) for i < n_pairs by angle pos * inv_freq[i], sin/cos in double as on the CPU.
void rope_and_append(const float* qkv, int64_t rows, int64_t n_heads, const float* inv_freq, int64_t n_pairs,
                     const int32_t* pos, const int32_t* slot, const CacheLayout& cache, int64_t layer, float* q_out,
                     __half* k_new, cudaStream_t s);

// rope_and_append and, when the cache has codes, the key codes (adamas::encode_vector of the f16 key as stored,
// thresholds[0]) written into the cache, in one kernel: one warp per (row, head), the Hadamard + bucketize of the
// CUDA encoder (attention/cuda/common.cuh), so the codes are bit-identical to cuda::encode_vectors'. `pdl`: launched
// with programmatic serialization after a kernel that may still run.
void rope_append_encode(const float* qkv, int64_t rows, int64_t n_heads, const float* inv_freq, int64_t n_pairs,
                        const int32_t* pos, const int32_t* slot, const CacheLayout& cache, int64_t layer,
                        const void* thresholds, float* q_out, bool pdl, cudaStream_t s);

// Copies the codes of k_new ([rows][kv_heads] codes of hd/4 bytes) into the cache at (slot[r], pos[r]).
void append_codes(const uint8_t* codes, int64_t rows, const int32_t* pos, const int32_t* slot,
                  const CacheLayout& cache, int64_t layer, cudaStream_t s);

// act[r][i] = silu(gu[r][2i]) * gu[r][2i + 1] (gate and up rows interleaved, as GpuModel stores them).
void swiglu_rows(const float* gu, int64_t rows, int64_t ffn, float* act, cudaStream_t s);
void swiglu_rows_half(const float* gu, int64_t rows, int64_t ffn, __half* act, cudaStream_t s);  // then to_half

// out[r] = argmax of logits[r] (first index of the maximum, as std::max_element).
void argmax_rows(const float* logits, int64_t rows, int64_t vocab, int32_t* out, cudaStream_t s);

// Causal attention of n consecutive queries of one sequence (positions p0 .. p0 + n - 1, q [n][n_heads][hd] f32)
// over its cached tokens [0, position]: out [n][n_heads][hd] f32. A simple one-block-per-(query, head) kernel with
// an online softmax over tiles of keys: O(n * position) work, meant for prompts, not for 100K-token prefills.
void prefill_attention(const float* q, int64_t n, int64_t p0, int64_t n_heads, const CacheLayout& cache,
                       int64_t layer, int32_t slot, float* out, cudaStream_t s);

// Gathers/scatters query heads for GQA groups the attention kernels lack (e.g. 3): part j holds query heads
// {j, G + j, 2G + j, ...} so that each part has group 1. q [rows][kv_heads * G][hd] <-> part [rows][kv_heads][hd].
void gather_group_part(const float* q, int64_t rows, int64_t kv_heads, int64_t group, int64_t j, int64_t hd,
                       float* part, cudaStream_t s);
void scatter_group_part(const float* part, int64_t rows, int64_t kv_heads, int64_t group, int64_t j, int64_t hd,
                        float* out, cudaStream_t s);

// y[t][r] = beta * y[t][r] + sum_c W[r][c] * x[t][c], W f16 [rows][cols] (cols % 8 == 0), x f32, f32 accumulation,
// for t < n <= 4: one warp per pair of rows, x staged in shared memory. The decode path at small batch.
void skinny_matmul(const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y, float beta,
                   cudaStream_t s);
// Fusions of the skinny GEMV (n <= 4 token rows), each optional. With norm_ss the input is RMSNorm(x): x[t][c] *
// s_t * norm_w[c], s_t = 1 / sqrt(norm_ss[t] / cols + eps), rms_norm_rows' arithmetic. With out_ss each stored
// y[t][r] (after beta) adds y^2 (double) into out_ss[t] (atomics: the next RMSNorm's sum, zeroed before the step).
// With swiglu the rows are (gate i, up i) pairs and y[t][i] = silu(gate) * up, rows / 2 columns (beta ignored).
// With pdl the kernel is launched with programmatic stream serialization: its blocks start while the previous kernel
// ends and wait for it before any load (and trigger their own dependents at once).
// With rope.q_out (the qkv GEMV, two rows per warp = one rope pair): rows are [q | k | v] of n_heads / kv_heads
// heads; RoPE on q and k (rope_and_append's arithmetic), q to q_out [rows][n_heads][hd] f32, k and v in f16 into the
// cache at (slot[t], pos[t]) of `layer`, y not written; with codes, the warp that writes a head's last pair (counted
// in counters [rows][kv_heads], zero between calls and reset by that warp) encodes the head's key from the cache
// (cuda::encode_vectors' arithmetic, thresholds[0], scale = 1 / sqrt(head_dim) as the host computes it).
struct GemvRope {
  float* q_out = nullptr;
  const float* inv_freq = nullptr;
  int64_t n_pairs = 0, n_heads = 0, layer = 0;
  const int32_t* pos = nullptr;
  const int32_t* slot = nullptr;
  CacheLayout cache{};
  const void* thresholds = nullptr;
  float scale = 0.0f;
  int* counters = nullptr;
};

struct GemvFusion {
  const double* norm_ss = nullptr;
  const float* norm_w = nullptr;
  float eps = 0.0f;
  double* out_ss = nullptr;
  bool swiglu = false;
  bool pdl = false;
  GemvRope rope{};
};
void skinny_matmul_fused(const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y,
                         float beta, const GemvFusion& f, cudaStream_t s);

// dst = f16(src), n elements (activations for the cuBLAS path).
void to_half(const float* src, int64_t n, __half* dst, cudaStream_t s);

// Asks the L2 cache to fetch [p, p + bytes) (16-byte aligned, bytes % 16 == 0) without waiting for it: bulk
// prefetches (cp.async.bulk.prefetch.L2, sm_90) spread over `bytes / 8 KiB` threads in 32-thread blocks, so many
// SMs' copy engines issue them and the kernel ends as soon as they are issued. evict_last: the lines get the L2's
// evict-last priority (else the normal one). Used while a latency-bound kernel leaves the memory bus idle, for
// the weights the next kernel reads.
void l2_prefetch(const void* p, int64_t bytes, bool evict_last, cudaStream_t s);

// Random fills (benchmarks: random weights, random caches): values uniform in [-amp, amp] from a hash of
// (seed, index), so runs are reproducible without host memory.
void fill_random_half(__half* p, int64_t n, uint64_t seed, float amp, cudaStream_t s);
void fill_random_f32(float* p, int64_t n, uint64_t seed, float amp, float offset, cudaStream_t s);
void fill_random_bytes(uint8_t* p, int64_t n, uint64_t seed, cudaStream_t s);

}  // namespace adamas::gpu
