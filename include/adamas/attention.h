// The Adamas attention operator: public C++ API over plain memory.
//
// One decode step of one layer, for each query head (Yan et al., "Adamas", arXiv 2510.18413):
//   1. rotate q and every key by the orthonormal Walsh-Hadamard matrix H/sqrt(d)   (hadamard_transform)
//   2. bucketize each rotated coordinate to a 2-bit code with thresholds t0<t1<t2  (encode_*)
//   3. score every key by the L1 distance between the query code and its code      (l1_distances)
//   4. keep the `budget` keys of smallest distance, the newest always               (select_topk)
//   5. exact softmax attention of the original q over the kept K/V rows            (attend_rows)
// decode_attention() runs all five for all heads of a step, for every method (full | adamas | quest | streaming).
//
// All functions validate their inputs and throw adamas::Error (error.h) with a message naming the bad input.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "adamas/error.h"
#include "adamas/tensor_view.h"

namespace adamas {

// ---------------------------------------------------------------------------------------------------------------
// 1. Hadamard transform
// ---------------------------------------------------------------------------------------------------------------

// True when dim is a power of two in [16, 512], the head dims the operator supports.
bool is_supported_dim(int64_t dim);

// x <- x * H_d / sqrt(d) in place, H_d the Sylvester (natural order) Hadamard matrix, O(d log d), f32 arithmetic.
// The transform is symmetric and orthonormal: applying it twice returns x, and it preserves dot products.
void hadamard_transform(float* x, int64_t dim);
// The same on `rows` vectors of a storage dtype (f16 / bf16 are converted to f32, rotated, rounded back).
void hadamard_rows(void* data, DType dtype, int64_t rows, int64_t dim, int64_t row_stride);

// ---------------------------------------------------------------------------------------------------------------
// 2. Codes
// ---------------------------------------------------------------------------------------------------------------

// A rotated coordinate x becomes the code c = [x > t0] + [x > t1] + [x > t2] in {0, 1, 2, 3}.
struct Thresholds {
  float t0 = -10.0f;  // the paper's fixed thresholds, for Llama-2-7B-scale activations
  float t1 = 0.0f;
  float t2 = 10.0f;
};
// Throws unless t0 < t1 < t2 and all are finite.
void validate_thresholds(const Thresholds& t);

// Packed code layout: dim / 4 bytes per vector; coordinate i lives in byte i / 4 at bits 2*(i%4) and 2*(i%4)+1
// (coordinate 0 in the two lowest bits of byte 0). The largest L1 distance between two codes is 3 * dim.
constexpr int64_t code_bytes(int64_t dim) { return dim / 4; }
constexpr int max_l1_distance(int64_t dim) { return int(3 * dim); }

// Bucketize an already rotated f32 vector.
void encode_rotated(const float* rotated, int64_t dim, const Thresholds& t, uint8_t* code);
// Rotate a copy of x (any dtype) and bucketize it: the code of a query or of one key.
void encode_vector(const void* x, DType dtype, int64_t dim, const Thresholds& t, uint8_t* code);
// Codes of tokens [begin, end) of every head of `keys`, written to `codes` (same heads and dim).
// `thresholds` holds one entry (shared) or one per head (calibrated).
void encode_keys(const HeadsView& keys, int64_t begin, int64_t end, std::span<const Thresholds> thresholds,
                 const MutCodesView& codes);

// Calibrated thresholds from sample rotated vectors (e.g. the keys seen at prefill), pooled over coordinates.
// Percentiles interpolate linearly between order statistics (numpy's default). Thresholds that come out equal
// (degenerate samples) are separated by one float ulp, so the result is always strictly increasing.
enum class Calibration {
  quartiles,  // t = the 25th, 50th and 75th percentiles: each code value equally likely
  sigma,      // t = mean - c*sigma, mean, mean + c*sigma (population sigma)
};
struct CalibrationOptions {
  Calibration kind = Calibration::quartiles;
  float sigma_scale = 1.0f;  // c, for Calibration::sigma
};
// `rotated` holds `rows` rotated vectors of `dim` f32 with the given row stride. Throws when rows == 0.
Thresholds calibrate_thresholds(const float* rotated, int64_t rows, int64_t dim, int64_t row_stride,
                                const CalibrationOptions& options = {});
// Rotates (a copy of) tokens [begin, end) of one head of `keys` and calibrates on them.
Thresholds calibrate_head(const HeadsView& keys, int64_t head, int64_t begin, int64_t end,
                          const CalibrationOptions& options = {});

// ---------------------------------------------------------------------------------------------------------------
// 3. Estimate
// ---------------------------------------------------------------------------------------------------------------

// out[j] = sum_i |cq_i - ck_i| between `query_code` and the code of key j (head `head` of `keys`), for j < tokens.
// Exact L1 (not the XOR-popcount proxy of the reference kernel), SIMD, bit-exact with a scalar loop.
void l1_distances(const uint8_t* query_code, const CodesView& keys, int64_t head, uint16_t* out);
// The same for `n_queries` query codes (a GQA group) at once, reading each key code once: out is
// [n_queries][out_stride], query q's distances at out + q * out_stride. Keys [begin, end) only.
void l1_distances_group(const uint8_t* query_codes, int64_t n_queries, const CodesView& keys, int64_t head,
                        int64_t begin, int64_t end, uint16_t* out, int64_t out_stride);

// ---------------------------------------------------------------------------------------------------------------
// 4. Select
// ---------------------------------------------------------------------------------------------------------------

struct SelectOptions {
  int64_t budget = 256;  // tokens kept (> 0)
  int64_t sink = 0;      // first tokens always kept
  int64_t window = 0;    // most recent tokens always kept (the newest token is always kept, window or not)
};
// Throws unless budget > 0, sink >= 0, window >= 0 and sink + max(window, 1) <= budget.
void validate_select(const SelectOptions& options);

// Writes to `out` the indices of the min(budget, n) kept tokens in increasing order and returns their number.
// Kept: tokens [0, sink), the last max(window, 1) tokens, and among the rest those of smallest distance.
// Ties at the cut-off distance go to the most recent tokens (larger index), so the rule is deterministic.
// O(n + max_distance): a histogram over the small integer range, then one compaction pass; no sort.
// `out` must hold min(budget, n) entries. max_distance bounds every distance (3 * dim, or more when summed).
int64_t select_topk(const uint16_t* distances, int64_t n, int max_distance, const SelectOptions& options,
                    int32_t* out);

// ---------------------------------------------------------------------------------------------------------------
// 5, 6. Attend
// ---------------------------------------------------------------------------------------------------------------

// out = softmax(scale * q K[rows]^T) V[rows] over the given token rows of KV head `head`, f32 accumulation.
// q and out are `dim` floats; rows must be in range (checked).
void attend_rows(const float* q, const HeadsView& k, const HeadsView& v, int64_t head, const int32_t* rows,
                 int64_t n_rows, float scale, float* out);

// Dense attention over all tokens for one decode step: q is [n_heads][dim], out is [n_heads][dim]; query head h
// reads KV head h / (n_heads / kv_heads). Split over tokens and heads on all threads (flash-decoding).
void attend_dense_decode(const float* q, int64_t n_heads, const HeadsView& k, const HeadsView& v, float scale,
                         float* out);

// Causal dense attention for `n_queries` consecutive positions ending at the last cached token (prefill):
// q is [n_queries][n_heads][dim] with row stride q_stride (floats); query i sits at position
// k.tokens - n_queries + i and attends to tokens [0, that position]. Flash-style tiles, no n x n matrix.
void attend_dense_causal(const float* q, int64_t n_queries, int64_t n_heads, int64_t q_stride, const HeadsView& k,
                         const HeadsView& v, float scale, float* out, int64_t out_stride);

// ---------------------------------------------------------------------------------------------------------------
// 8. Quest metadata: per page of `page_size` tokens, the element-wise min and max of its keys (f32).
// ---------------------------------------------------------------------------------------------------------------

struct QuestPagesView {
  float* min = nullptr;  // [heads][pages][dim]
  float* max = nullptr;  // [heads][pages][dim]
  int64_t heads = 0;
  int64_t pages = 0;     // capacity in pages
  int64_t dim = 0;
  int64_t page_size = 16;
  float* page_min(int64_t head, int64_t page) const { return min + (head * pages + page) * dim; }
  float* page_max(int64_t head, int64_t page) const { return max + (head * pages + page) * dim; }
};
// Fold keys [begin, end) into their pages (a page's first token resets it), so appends stay O(new tokens).
void quest_update_pages(const HeadsView& keys, int64_t begin, int64_t end, const QuestPagesView& pages);
// Token indices (increasing) of the top pages by the upper bound sum_i max(q_i*max_i, q_i*min_i), up to
// budget / page_size pages (at least one); the newest token's page is always kept. Returns the count.
int64_t quest_select(const float* q, const QuestPagesView& pages, int64_t head, int64_t n_tokens, int64_t budget,
                     std::vector<int32_t>& out);

// ---------------------------------------------------------------------------------------------------------------
// 7, 9. One decode step of one layer, any method, GQA
// ---------------------------------------------------------------------------------------------------------------

enum class Method { full, adamas, quest, streaming };
const char* method_name(Method method);
Method parse_method(const char* name);  // throws on an unknown name

enum class GroupSelection {
  per_head,      // each query head selects its own tokens (the paper)
  shared_sum,    // one selection per KV group, on the distances summed over its query heads
  shared_union,  // each head selects `budget` tokens, the group attends over the union
};
const char* group_selection_name(GroupSelection g);

struct AttentionConfig {
  Method method = Method::adamas;
  int64_t budget = 256;
  int64_t sink = 0;           // adamas: first tokens always kept
  int64_t window = 0;         // adamas: recent tokens always kept
  int64_t streaming_sink = 4; // streaming: attention sinks; the rest of the budget is the recent window
  GroupSelection group = GroupSelection::per_head;
  Thresholds thresholds;      // fixed thresholds, used where DecodeInputs carries none
  // A sequence of fewer tokens attends to all of them, as one of at most `budget` tokens does: below some length
  // reading every K/V row costs less than the selection's fixed costs (measured per shape, docs/results.md; e.g.
  // ~16K tokens for 8 KV heads of 128 on an H100 at batch 1, lower in larger batches). 0: the method at every
  // length.
  int64_t dense_below = 0;
};
// Whether a decode step over `tokens` cached tokens attends to every one of them under `c` (full attention, a budget
// that covers the context, or a sequence shorter than dense_below): the one rule of the CPU and CUDA operators.
inline bool attends_every_token(const AttentionConfig& c, int64_t tokens) {
  return c.method == Method::full || tokens <= c.budget || tokens < c.dense_below;
}
// Whether such a sequence is also longer than the budget (under a sparse method: shorter than dense_below only). A
// CUDA batch holding one beside selecting sequences is split into a dense and a selecting call.
inline bool attends_every_token_past_budget(const AttentionConfig& c, int64_t tokens) {
  return tokens > c.budget && attends_every_token(c, tokens);
}
// Throws on a config no step could run (budget <= 0, bad thresholds, sink + window > budget, ...).
void validate_config(const AttentionConfig& config);

struct DecodeInputs {
  const float* q = nullptr;  // [n_heads][dim], post-RoPE
  int64_t n_heads = 0;
  HeadsView k, v;            // [kv_heads][tokens][dim]; the newest token is the last
  CodesView codes;           // adamas: codes of the same tokens
  QuestPagesView pages;      // quest: pages covering the same tokens
  // adamas, calibrated mode: thresholds for each query head's code (n_heads entries); empty = config's.
  std::span<const Thresholds> query_thresholds;
};

struct DecodeTimings {
  double estimate_s = 0, select_s = 0, attend_s = 0;
  int64_t attended_rows = 0;  // sum over query heads of the tokens attended
};

// Scratch memory reused across steps (distances, selections); one per thread that calls decode_attention.
class DecodeWorkspace {
 public:
  DecodeWorkspace();
  ~DecodeWorkspace();
  DecodeWorkspace(DecodeWorkspace&&) noexcept;
  DecodeWorkspace& operator=(DecodeWorkspace&&) noexcept;
  struct State;
  State& state() { return *state_; }

 private:
  std::unique_ptr<State> state_;
};

// out[n_heads][dim] = attention of q over the cache with the config's method. The context is dense (identical to
// Method::full) whenever it is no longer than the budget.
void decode_attention(const DecodeInputs& in, const AttentionConfig& config, DecodeWorkspace& workspace, float* out,
                      DecodeTimings* timings = nullptr);

// The token rows each query head attended in the last decode_attention call on this workspace (for recall studies
// and tests): head h's rows, increasing.
std::span<const int32_t> last_selection(const DecodeWorkspace& workspace, int64_t head);

}  // namespace adamas
