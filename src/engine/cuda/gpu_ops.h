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
void embed_rows(const __half* table, const int32_t* tokens, int64_t rows, int64_t dim, float* x, cudaStream_t s);

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w (the CPU's order: sum of squares in double).
void rms_norm_rows(const float* x, const float* w, int64_t rows, int64_t dim, float eps, float* out,
                   cudaStream_t s);

// qkv rows [q | k | v] (f32): q rotated -> q_out [rows][n_heads][hd]; k rotated and v -> f16 into the cache at
// (slot[r], pos[r]) of `layer`, k also to k_new [rows][kv_heads][hd] f16 (for the code encoder). Rope pairs
// (2i, 2i+1) for i < n_pairs by angle pos * inv_freq[i], sin/cos in double as on the CPU.
void rope_and_append(const float* qkv, int64_t rows, int64_t n_heads, const float* inv_freq, int64_t n_pairs,
                     const int32_t* pos, const int32_t* slot, const CacheLayout& cache, int64_t layer, float* q_out,
                     __half* k_new, cudaStream_t s);

// Copies the codes of k_new ([rows][kv_heads] codes of hd/4 bytes) into the cache at (slot[r], pos[r]).
void append_codes(const uint8_t* codes, int64_t rows, const int32_t* pos, const int32_t* slot,
                  const CacheLayout& cache, int64_t layer, cudaStream_t s);

// act[r][i] = silu(gu[r][i]) * gu[r][ffn + i].
void swiglu_rows(const float* gu, int64_t rows, int64_t ffn, float* act, cudaStream_t s);

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
// dst = f16(src), n elements (activations for the cuBLAS path).
void to_half(const float* src, int64_t n, __half* dst, cudaStream_t s);

// Random fills (benchmarks: random weights, random caches): values uniform in [-amp, amp] from a hash of
// (seed, index), so runs are reproducible without host memory.
void fill_random_half(__half* p, int64_t n, uint64_t seed, float amp, cudaStream_t s);
void fill_random_f32(float* p, int64_t n, uint64_t seed, float amp, float offset, cudaStream_t s);
void fill_random_bytes(uint8_t* p, int64_t n, uint64_t seed, cudaStream_t s);

}  // namespace adamas::gpu
