#include "attention/cpu/rows_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "attention/cpu/simd.h"

namespace adamas {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

#if ADAMAS_AVX2
// 8 elements of a K/V row as f32, converted in registers (no staging copy, so loads overlap the math).
template <DType DT>
inline __m256 load8(const void* row, int64_t i) {
  if constexpr (DT == DType::f32) {
    return _mm256_loadu_ps(static_cast<const float*>(row) + i);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + i));
    if constexpr (DT == DType::f16) return _mm256_cvtph_ps(h);
    else return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

// 8 vectors -> their 8 horizontal sums, in order.
inline __m256 hsum8(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
}

// s[r * kBlock + j] = q_r . k_j for R query rows (R <= 4) and n keys, KJ keys per step: R x KJ (<= 8) independent
// accumulators hide the FMA latency, and each key slice is loaded (and converted) once for all R rows.
template <DType DT, int R, int KJ>
void scores_rows(const float* q, int64_t q_stride, const void* const* krow, int64_t n, int64_t dim, float* s) {
  static_assert(R * KJ <= 8);
  for (int64_t j = 0; j < n; j += KJ) {
    const void* kr[KJ];
    for (int x = 0; x < KJ; ++x) kr[x] = krow[j + x < n ? j + x : j];  // past the end: repeat a valid row
    __m256 a[8];
    for (int x = 0; x < 8; ++x) a[x] = _mm256_setzero_ps();
    for (int64_t i = 0; i < dim; i += 8) {
      __m256 kv[KJ];
      for (int x = 0; x < KJ; ++x) kv[x] = load8<DT>(kr[x], i);
      for (int r = 0; r < R; ++r) {
        const __m256 qv = _mm256_loadu_ps(q + r * q_stride + i);
        for (int x = 0; x < KJ; ++x) a[r * KJ + x] = _mm256_fmadd_ps(qv, kv[x], a[r * KJ + x]);
      }
    }
    alignas(32) float out[8];
    _mm256_store_ps(out, hsum8(a));
    for (int r = 0; r < R; ++r)
      for (int x = 0; x < KJ && j + x < n; ++x) s[r * RowsAttention::kBlock + j + x] = out[r * KJ + x];
  }
}

// acc_r = acc_r * corr_r + sum_j p[r][j] * v_j for R rows (R <= 4), S 8-float slices per pass: R x S accumulators
// stay in registers as independent FMA chains while the block's value rows stream through.
template <DType DT, int R, int S>
void accumulate_rows(float* acc, int64_t dim, const float* corr, const float* p, const void* const* vrow,
                     int64_t n) {
  for (int64_t i = 0; i < dim; i += 8 * S) {
    __m256 a[R][S];
    for (int r = 0; r < R; ++r)
      for (int x = 0; x < S; ++x)
        a[r][x] = _mm256_mul_ps(_mm256_loadu_ps(acc + r * dim + i + 8 * x), _mm256_set1_ps(corr[r]));
    for (int64_t j = 0; j < n; ++j) {
      __m256 v[S];
      for (int x = 0; x < S; ++x) v[x] = load8<DT>(vrow[j], i + 8 * x);
      for (int r = 0; r < R; ++r) {
        const __m256 pr = _mm256_broadcast_ss(p + r * RowsAttention::kBlock + j);
        for (int x = 0; x < S; ++x) a[r][x] = _mm256_fmadd_ps(pr, v[x], a[r][x]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int x = 0; x < S; ++x) _mm256_storeu_ps(acc + r * dim + i + 8 * x, a[r][x]);
  }
}

template <DType DT>
struct BlockKernels {
  // Rows are taken 4 at a time; each group re-reads the block's K/V rows, which are in L1 after the first.
  static void scores(const float* q, int64_t q_stride, int64_t rows, const void* const* krow, int64_t n,
                     int64_t dim, float* s) {
    for (int64_t r = 0; r < rows; r += 4) {
      const float* qr = q + r * q_stride;
      float* sr = s + r * RowsAttention::kBlock;
      switch (std::min<int64_t>(4, rows - r)) {
        case 1: scores_rows<DT, 1, 8>(qr, q_stride, krow, n, dim, sr); break;
        case 2: scores_rows<DT, 2, 4>(qr, q_stride, krow, n, dim, sr); break;
        case 3: scores_rows<DT, 3, 2>(qr, q_stride, krow, n, dim, sr); break;
        default: scores_rows<DT, 4, 2>(qr, q_stride, krow, n, dim, sr); break;
      }
    }
  }
  static void accumulate(float* acc, int64_t dim, int64_t rows, const float* corr, const float* p,
                         const void* const* vrow, int64_t n) {
    for (int64_t r = 0; r < rows; r += 4) {
      float* ar = acc + r * dim;
      const float* pr = p + r * RowsAttention::kBlock;
      // dim >= 16 always; 4 slices (32 floats) per pass need dim >= 32.
      const bool wide = dim >= 32;
      switch (std::min<int64_t>(4, rows - r)) {
        case 1:
          wide ? accumulate_rows<DT, 1, 4>(ar, dim, corr + r, pr, vrow, n)
               : accumulate_rows<DT, 1, 2>(ar, dim, corr + r, pr, vrow, n);
          break;
        case 2:
          wide ? accumulate_rows<DT, 2, 4>(ar, dim, corr + r, pr, vrow, n)
               : accumulate_rows<DT, 2, 2>(ar, dim, corr + r, pr, vrow, n);
          break;
        case 3: accumulate_rows<DT, 3, 2>(ar, dim, corr + r, pr, vrow, n); break;
        default: accumulate_rows<DT, 4, 2>(ar, dim, corr + r, pr, vrow, n); break;
      }
    }
  }
};

void block_scores(DType dt, const float* q, int64_t q_stride, int64_t rows, const void* const* krow, int64_t n,
                  int64_t dim, float* s, float*) {
  switch (dt) {
    case DType::f32: return BlockKernels<DType::f32>::scores(q, q_stride, rows, krow, n, dim, s);
    case DType::f16: return BlockKernels<DType::f16>::scores(q, q_stride, rows, krow, n, dim, s);
    case DType::bf16: return BlockKernels<DType::bf16>::scores(q, q_stride, rows, krow, n, dim, s);
  }
}

void block_accumulate(DType dt, float* acc, int64_t dim, int64_t rows, const float* corr, const float* p,
                      const void* const* vrow, int64_t n, float*) {
  switch (dt) {
    case DType::f32: return BlockKernels<DType::f32>::accumulate(acc, dim, rows, corr, p, vrow, n);
    case DType::f16: return BlockKernels<DType::f16>::accumulate(acc, dim, rows, corr, p, vrow, n);
    case DType::bf16: return BlockKernels<DType::bf16>::accumulate(acc, dim, rows, corr, p, vrow, n);
  }
}
#else
// Portable path: stage the block's rows in f32 (`scratch`, kBlock x dim), then plain loops.
void block_scores(DType dt, const float* q, int64_t q_stride, int64_t rows, const void* const* krow, int64_t n,
                  int64_t dim, float* s, float* scratch) {
  for (int64_t j = 0; j < n; ++j) simd::to_f32(krow[j], dt, dim, scratch + j * dim);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) s[r * RowsAttention::kBlock + j] = simd::dot(q + r * q_stride, scratch + j * dim, dim);
}

void block_accumulate(DType dt, float* acc, int64_t dim, int64_t rows, const float* corr, const float* p,
                      const void* const* vrow, int64_t n, float* scratch) {
  for (int64_t j = 0; j < n; ++j) simd::to_f32(vrow[j], dt, dim, scratch + j * dim);
  for (int64_t r = 0; r < rows; ++r) {
    simd::scale(acc + r * dim, corr[r], dim);
    for (int64_t j = 0; j < n; ++j)
      simd::scale_axpy(acc + r * dim, 1.0f, p[r * RowsAttention::kBlock + j], scratch + j * dim, dim);
  }
}
#endif

// Asks for rows before they are needed. The value rows are read slice by slice across the block (not row by row),
// a pattern the hardware prefetcher does not follow, and gathered (sparse) rows defeat it entirely.
void prefetch_rows(const void* const* rows, int64_t n, int64_t bytes) {
  for (int64_t j = 0; j < n; ++j)
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(static_cast<const char*>(rows[j]) + b, 0, 2);
}

void prefetch_rows(const HeadsView& k, const HeadsView& v, int64_t head, const int32_t* idx, int64_t n) {
  const int64_t bytes = k.dim * int64_t(dtype_size(k.dtype));
  for (int64_t j = 0; j < n; ++j) {
    const char* kr = static_cast<const char*>(k.row(head, idx[j]));
    const char* vr = static_cast<const char*>(v.row(head, idx[j]));
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(kr + b), __builtin_prefetch(vr + b);
  }
}

}  // namespace

RowsAttention::RowsAttention(const float* q, int64_t q_stride, int64_t n_rows, int64_t dim, float scale,
                             const int64_t* limits)
    : q_(q),
      q_stride_(q_stride),
      n_rows_(n_rows),
      dim_(dim),
      scale_(scale),
      limits_(limits),
      m_(static_cast<size_t>(n_rows), kNegInf),
      l_(static_cast<size_t>(n_rows), 0.0f),
      acc_(static_cast<size_t>(n_rows * dim), 0.0f),
      scratch_(static_cast<size_t>(kBlock * dim)),
      s_(static_cast<size_t>(n_rows * kBlock)),
      p_(static_cast<size_t>(n_rows * kBlock)),
      corr_(static_cast<size_t>(n_rows)) {}

void RowsAttention::add_block(const HeadsView& k, const HeadsView& v, int64_t head, const int32_t* idx, int64_t n) {
  const void* krow[kBlock];
  const void* vrow[kBlock];
  for (int64_t j = 0; j < n; ++j) krow[j] = k.row(head, idx[j]), vrow[j] = v.row(head, idx[j]);
  prefetch_rows(vrow, n, dim_ * int64_t(dtype_size(v.dtype)));  // in flight while the scores compute
  block_scores(k.dtype, q_, q_stride_, n_rows_, krow, n, dim_, s_.data(), scratch_.data());
  int64_t live = 0;  // rows that see at least one key of this block
  for (int64_t r = 0; r < n_rows_; ++r) {
    float* s = s_.data() + r * kBlock;
    float* p = p_.data() + r * kBlock;
    float block_max = kNegInf;
    for (int64_t j = 0; j < n; ++j) {
      s[j] = (!limits_ || idx[j] <= limits_[r]) ? s[j] * scale_ : kNegInf;
      block_max = std::max(block_max, s[j]);
    }
    if (block_max == kNegInf) {  // nothing visible: the row's state stays as it is
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
  if (live > 0) block_accumulate(v.dtype, acc_.data(), dim_, n_rows_, corr_.data(), p_.data(), vrow, n,
                                 scratch_.data());
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
  // Gathered rows defeat the hardware prefetcher: keep the rows of the next two blocks in flight.
  auto ahead = [&](int64_t from) {
    if (from < n) prefetch_rows(k, v, head, idx + from, std::min<int64_t>(kBlock, n - from));
  };
  ahead(0);
  ahead(kBlock);
  for (int64_t j = 0; j < n; j += kBlock) {
    ahead(j + 2 * kBlock);
    add_block(k, v, head, idx + j, std::min<int64_t>(kBlock, n - j));
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
  float m_all = kNegInf;
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
