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
      s_(size_t(n_rows * kBlock)),
      p_(size_t(n_rows * kBlock)),
      corr_(size_t(n_rows)) {}

namespace {

// s[j] = q . kt[j] for j < n (kt rows of `dim` floats). Eight keys at a time with independent accumulators, so the
// FMA latency chain does not bound the loop, then one transposing horizontal add.
void scores(const float* q, const float* kt, int64_t n, int64_t dim, float* s) {
  int64_t j = 0;
#if ADAMAS_AVX2
  for (; j + 8 <= n; j += 8) {
    __m256 a[8];
    for (int r = 0; r < 8; ++r) a[r] = _mm256_setzero_ps();
    for (int64_t i = 0; i < dim; i += 8) {
      const __m256 qv = _mm256_loadu_ps(q + i);
      for (int r = 0; r < 8; ++r) a[r] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kt + (j + r) * dim + i), a[r]);
    }
    const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    _mm256_storeu_ps(s + j, _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31)));
  }
#endif
  for (; j < n; ++j) s[j] = simd::dot(q, kt + j * dim, dim);
}

// acc[r] = acc[r] * corr[r] + sum_j p[r][j] * vt[j] for rows r < rows (p rows of stride kBlock). Each 8-float
// slice of the accumulators stays in registers while the block's value rows stream through.
void accumulate(float* acc, const float* corr, const float* p, int64_t p_stride, const float* vt, int64_t n,
                int64_t rows, int64_t dim) {
  int64_t r0 = 0;
#if ADAMAS_AVX2
  for (; r0 + 4 <= rows; r0 += 4) {
    for (int64_t i = 0; i < dim; i += 8) {
      __m256 a[4];
      for (int r = 0; r < 4; ++r)
        a[r] = _mm256_mul_ps(_mm256_loadu_ps(acc + (r0 + r) * dim + i), _mm256_set1_ps(corr[r0 + r]));
      for (int64_t j = 0; j < n; ++j) {
        const __m256 v = _mm256_loadu_ps(vt + j * dim + i);
        for (int r = 0; r < 4; ++r) a[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + (r0 + r) * p_stride + j), v, a[r]);
      }
      for (int r = 0; r < 4; ++r) _mm256_storeu_ps(acc + (r0 + r) * dim + i, a[r]);
    }
  }
#endif
  for (; r0 < rows; ++r0) {
    float* a = acc + r0 * dim;
    simd::scale(a, corr[r0], dim);
    for (int64_t j = 0; j < n; ++j)
      if (p[r0 * p_stride + j] != 0.0f) simd::scale_axpy(a, 1.0f, p[r0 * p_stride + j], vt + j * dim, dim);
  }
}

// Asks for the K and V rows of the next block while this one computes: cold rows (a new step, or gathered
// sparse rows) otherwise stall every conversion.
void prefetch_rows(const HeadsView& k, const HeadsView& v, int64_t head, const int32_t* idx, int64_t n) {
  const int64_t bytes = k.dim * int64_t(dtype_size(k.dtype));
  for (int64_t j = 0; j < n; ++j) {
    const char* kr = static_cast<const char*>(k.row(head, idx[j]));
    const char* vr = static_cast<const char*>(v.row(head, idx[j]));
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(kr + b), __builtin_prefetch(vr + b);
  }
}

}  // namespace

void RowsAttention::add_block(const HeadsView& k, const HeadsView& v, int64_t head, const int32_t* idx, int64_t n) {
  for (int64_t j = 0; j < n; ++j) simd::to_f32(k.row(head, idx[j]), k.dtype, dim_, kt_.data() + j * dim_);
  int64_t live = 0;  // rows that see at least one key of this block
  for (int64_t r = 0; r < n_rows_; ++r) {
    float* s = s_.data() + r * kBlock;
    float* p = p_.data() + r * kBlock;
    scores(q_ + r * q_stride_, kt_.data(), n, dim_, s);
    float block_max = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      s[j] = (!limits_ || idx[j] <= limits_[r]) ? s[j] * scale_ : -std::numeric_limits<float>::infinity();
      block_max = std::max(block_max, s[j]);
    }
    if (block_max == -std::numeric_limits<float>::infinity()) {  // nothing visible: keep the state as it is
      corr_[r] = 1.0f;
      std::fill(p, p + n, 0.0f);
      continue;
    }
    ++live;
    const float m_new = std::max(m_[r], block_max);
    corr_[r] = std::exp(m_[r] - m_new);  // exp(-inf) = 0 on the first block
    l_[r] = l_[r] * corr_[r] + simd::exp_shifted(p, s, m_new, n);
    m_[r] = m_new;
  }
  if (live == 0) return;
  for (int64_t j = 0; j < n; ++j) simd::to_f32(v.row(head, idx[j]), v.dtype, dim_, vt_.data() + j * dim_);
  accumulate(acc_.data(), corr_.data(), p_.data(), kBlock, vt_.data(), n, n_rows_, dim_);
}

void RowsAttention::add_range(const HeadsView& k, const HeadsView& v, int64_t head, int64_t begin, int64_t end) {
  int32_t idx[kBlock + kPrefetchBlocks * kBlock];
  for (int64_t t = begin; t < end; t += kBlock) {
    const int64_t n = std::min<int64_t>(kBlock, end - t);
    const int64_t ahead = std::min<int64_t>(kPrefetchBlocks * kBlock, std::max<int64_t>(0, end - t - n));
    for (int64_t j = 0; j < n + ahead; ++j) idx[j] = int32_t(t + j);
    prefetch_rows(k, v, head, idx + n + ahead - std::min<int64_t>(ahead, kBlock), std::min<int64_t>(ahead, kBlock));
    add_block(k, v, head, idx, n);
  }
}

void RowsAttention::add_indices(const HeadsView& k, const HeadsView& v, int64_t head, const int32_t* idx,
                                int64_t n) {
  for (int64_t j = 0; j < n; j += kBlock) {
    const int64_t m = std::min<int64_t>(kBlock, n - j);
    // Gathered rows defeat the hardware prefetcher: ask for the next block's rows now.
    prefetch_rows(k, v, head, idx + j + m, std::max<int64_t>(0, std::min<int64_t>(kBlock, n - j - m)));
    add_block(k, v, head, idx + j, m);
  }
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
