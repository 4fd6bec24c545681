// Online-softmax attention of several query rows over blocks of key/value rows of one KV head (internal).
// The one inner loop behind sparse attention (selected rows), dense decode (split over tokens) and causal prefill.
#pragma once

#include <cstdint>
#include <vector>

#include "adamas/tensor_view.h"

namespace adamas {

class RowsAttention {
 public:
  static constexpr int kBlock = 32;  // keys converted to f32 and scored together

  // `n_rows` queries of `dim` floats at q + r * q_stride. limits[r] (optional): the last key index row r may see.
  RowsAttention(const float* q, int64_t q_stride, int64_t n_rows, int64_t dim, float scale,
                const int64_t* limits = nullptr);

  // Fold in the keys/values of KV head `head` at the token indices idx[0..n), n <= kBlock.
  void add_block(const HeadsView& k, const HeadsView& v, int64_t head, const int32_t* idx, int64_t n);
  // Fold in tokens [begin, end) (any length).
  void add_range(const HeadsView& k, const HeadsView& v, int64_t head, int64_t begin, int64_t end);
  // Fold in the tokens idx[0..n) (any length).
  void add_indices(const HeadsView& k, const HeadsView& v, int64_t head, const int32_t* idx, int64_t n);

  // Normalized outputs: row r to out + r * out_stride.
  void finish(float* out, int64_t out_stride) const;

  // Partial state, for merging splits over tokens: running max, running sum, unnormalized accumulator.
  float max(int64_t r) const { return m_[r]; }
  float sum(int64_t r) const { return l_[r]; }
  const float* acc(int64_t r) const { return acc_.data() + r * dim_; }

 private:
  const float* q_;
  int64_t q_stride_, n_rows_, dim_;
  float scale_;
  const int64_t* limits_;
  std::vector<float> m_, l_, acc_;
  std::vector<float> scratch_;       // the portable path's f32 copy of a block's rows
  std::vector<float> s_, p_, corr_;  // per row: the block's scores and probabilities, the accumulator's rescale
};

// Merge `parts` partial states (max m, sum l, accumulator acc[dim]) of one query row into out[dim].
void merge_partials(int64_t parts, const float* m, const float* l, const float* acc, int64_t acc_stride,
                    int64_t dim, float* out);

}  // namespace adamas
