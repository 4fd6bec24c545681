#include "attention/cpu/rows_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "attention/cpu/simd.h"

namespace adamas {

RowsAttention::RowsAttention(const float* q, int64_t q_stride, int64_t n_rows, int64_t dim, float scale,
                             const int64_t* limits)
    : q_(q),
      q_stride_(q_stride),
      n_rows_(n_rows),
      dim_(dim),
      scale_(scale),
      limits_(limits),
      m_(size_t(n_rows), -std::numeric_limits<float>::infinity()),
      l_(size_t(n_rows), 0.0f),
      acc_(size_t(n_rows * dim), 0.0f),
      kt_(size_t(kBlock * dim)),
      vt_(size_t(kBlock * dim)),
      s_(kBlock),
      p_(kBlock) {}

void RowsAttention::add_block(const HeadsView& k, const HeadsView& v, int64_t head, const int32_t* idx, int64_t n) {
  const float* kt = kt_.data();
  if (k.dtype == DType::f32 && n == 1) {
    kt = static_cast<const float*>(k.row(head, idx[0]));
  } else {
    for (int64_t j = 0; j < n; ++j) simd::to_f32(k.row(head, idx[j]), k.dtype, dim_, kt_.data() + j * dim_);
  }
  bool values_ready = false;
  for (int64_t r = 0; r < n_rows_; ++r) {
    const float* q = q_ + r * q_stride_;
    float block_max = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      const bool visible = !limits_ || idx[j] <= limits_[r];
      s_[j] = visible ? simd::dot(q, kt + j * dim_, dim_) * scale_ : -std::numeric_limits<float>::infinity();
      block_max = std::max(block_max, s_[j]);
    }
    if (block_max == -std::numeric_limits<float>::infinity()) continue;  // nothing visible to this row
    if (!values_ready) {
      for (int64_t j = 0; j < n; ++j) simd::to_f32(v.row(head, idx[j]), v.dtype, dim_, vt_.data() + j * dim_);
      values_ready = true;
    }
    const float m_new = std::max(m_[r], block_max);
    const float correction = std::exp(m_[r] - m_new);  // exp(-inf) = 0 on the first block
    l_[r] = l_[r] * correction + simd::exp_shifted(p_.data(), s_.data(), m_new, n);
    m_[r] = m_new;
    float* acc = acc_.data() + r * dim_;
    simd::scale(acc, correction, dim_);
    for (int64_t j = 0; j < n; ++j)
      if (p_[j] != 0.0f) simd::scale_axpy(acc, 1.0f, p_[j], vt_.data() + j * dim_, dim_);
  }
}

void RowsAttention::add_range(const HeadsView& k, const HeadsView& v, int64_t head, int64_t begin, int64_t end) {
  int32_t idx[kBlock];
  for (int64_t t = begin; t < end; t += kBlock) {
    const int64_t n = std::min<int64_t>(kBlock, end - t);
    for (int64_t j = 0; j < n; ++j) idx[j] = int32_t(t + j);
    add_block(k, v, head, idx, n);
  }
}

void RowsAttention::add_indices(const HeadsView& k, const HeadsView& v, int64_t head, const int32_t* idx,
                                int64_t n) {
  for (int64_t j = 0; j < n; j += kBlock) add_block(k, v, head, idx + j, std::min<int64_t>(kBlock, n - j));
}

void RowsAttention::finish(float* out, int64_t out_stride) const {
  for (int64_t r = 0; r < n_rows_; ++r) {
    const float inv = l_[r] > 0 ? 1.0f / l_[r] : 0.0f;
    for (int64_t i = 0; i < dim_; ++i) out[r * out_stride + i] = acc_[r * dim_ + i] * inv;
  }
}

void merge_partials(int64_t parts, const float* m, const float* l, const float* acc, int64_t acc_stride,
                    int64_t dim, float* out) {
  float m_all = -std::numeric_limits<float>::infinity();
  for (int64_t p = 0; p < parts; ++p) m_all = std::max(m_all, m[p]);
  std::fill(out, out + dim, 0.0f);
  float l_all = 0.0f;
  for (int64_t p = 0; p < parts; ++p) {
    if (l[p] == 0.0f) continue;  // a split with no visible token
    const float w = std::exp(m[p] - m_all);
    l_all += l[p] * w;
    simd::scale_axpy(out, 1.0f, w, acc + p * acc_stride, dim);
  }
  const float inv = l_all > 0 ? 1.0f / l_all : 0.0f;
  for (int64_t i = 0; i < dim; ++i) out[i] *= inv;
}

}  // namespace adamas
