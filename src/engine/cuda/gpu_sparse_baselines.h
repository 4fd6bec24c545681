// Quest and StreamingLLM decode attention on the GPU engine's cache (the CPU's semantics, src/attention/cpu/quest.cpp
// and decode.cpp), and the per-sequence calibrated Adamas thresholds' device tables.
//
// Quest: per (cache slot, layer, KV head, page of 16 tokens) the element-wise f32 min and max of the page's keys,
// folded in as keys are appended (a page's first token resets it); at decode, every query head scores the pages
// before the newest by sum_i max(q_i max_i, q_i min_i) (sequential f32 sums, as the CPU), keeps the best
// min(pages, max(1, budget / 16)) - 1 of them (ties to the more recent page) and the newest token's page, and
// attends over their tokens. StreamingLLM: tokens [0, sink) and the last budget - sink. Both attend densely when
// the sequence fits the budget, as on the CPU.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "adamas/attention.h"
#include "engine/cuda/gpu_ops.h"

namespace adamas::gpu {

// Quest page bounds of every (slot, layer, KV head): [slots][layers][kv_heads][pages][head_dim] f32, min and max.
struct QuestPages {
  float* min = nullptr;
  float* max = nullptr;
  int64_t layers = 0, kv_heads = 0, pages = 0, head_dim = 0;
  int64_t page_size = 16;
  __host__ __device__ int64_t offset(int64_t slot, int64_t layer, int64_t head, int64_t page) const {
    return (((slot * layers + layer) * kv_heads + head) * pages + page) * head_dim;
  }
};

// Folds the new keys k_new ([rows][kv_heads][head_dim] f16, row r at (slot[r], pos[r])) into the pages of `layer`.
// Rows are folded in order, so one call may hold several tokens of one page (a prefill chunk).
void quest_fold_pages(const __half* k_new, int64_t rows, const int32_t* pos, const int32_t* slot,
                      const QuestPages& pages, int64_t layer, cudaStream_t s);

// Selected token rows per (row, query head): indices [rows][n_heads][capacity] (the first counts[r][h] valid,
// increasing); scores is scratch of [rows][n_heads][max_pages] f32.
struct SelectedRows {
  int32_t* indices = nullptr;
  int32_t* counts = nullptr;
  float* scores = nullptr;
  int64_t capacity = 0, max_pages = 0;
};
// Capacity of a Quest selection at `budget`: whole pages, at least one.
int64_t quest_capacity(int64_t budget, int64_t page_size);

// Quest's selection for every row's query heads (q [rows][n_heads][head_dim] f32; the row's sequence holds
// pos[r] + 1 tokens, its newest key already folded in).
void quest_select_rows(const float* q, int64_t rows, int64_t n_heads, const int32_t* pos, const int32_t* slot,
                       const QuestPages& pages, int64_t layer, int64_t budget, const SelectedRows& out,
                       cudaStream_t s);

// What attend_selected_rows reads: Quest's selection, or StreamingLLM's sink + window.
struct RowSelection {
  Method method = Method::quest;     // quest or streaming
  SelectedRows quest;                // quest
  int64_t budget = 0, sink = 0;      // streaming (sink < budget); also the dense limit of both
};
// out [rows][n_heads][head_dim] f32 = softmax(q K[sel]^T / sqrt(head_dim)) V[sel] of every row's query heads over
// its sequence's selected tokens in `layer` of the cache (head_dim 64, 128 or 256; any GQA group).
void attend_selected_rows(const float* q, int64_t rows, int64_t n_heads, const int32_t* pos, const int32_t* slot,
                          const CacheLayout& cache, int64_t layer, const RowSelection& sel, float* out,
                          cudaStream_t s);

// out[r * per_row + i] = table[slot[r] * slot_stride + offset + i], i < per_row: a step's rows' calibrated
// thresholds gathered from the per-slot tables.
void gather_thresholds(const Thresholds* table, int64_t slot_stride, int64_t offset, int64_t per_row,
                       const int32_t* slot, int64_t rows, Thresholds* out, cudaStream_t s);

}  // namespace adamas::gpu
