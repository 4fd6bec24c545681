// 2-bit codes of Hadamard-rotated vectors: bucketize, pack, and calibrate the thresholds.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "adamas/attention.h"
#include "attention/cpu/validate.h"
#include "core/dtype.h"

namespace adamas {

void validate_thresholds(const Thresholds& t) {
  ADAMAS_CHECK(std::isfinite(t.t0) && std::isfinite(t.t1) && std::isfinite(t.t2), ErrorKind::invalid_argument,
               "thresholds ({}, {}, {}) must be finite", t.t0, t.t1, t.t2);
  ADAMAS_CHECK(t.t0 < t.t1 && t.t1 < t.t2, ErrorKind::invalid_argument,
               "thresholds ({}, {}, {}) must be strictly increasing (t0 < t1 < t2)", t.t0, t.t1, t.t2);
}

void encode_rotated(const float* rotated, int64_t dim, const Thresholds& t, uint8_t* code) {
  check_dim(dim, "encode_rotated");
  check_not_null(rotated, "encode_rotated: rotated");
  check_not_null(code, "encode_rotated: code");
  validate_thresholds(t);
  for (int64_t b = 0; b < dim / 4; ++b) {
    unsigned byte = 0;
    for (int j = 0; j < 4; ++j) {
      const float x = rotated[4 * b + j];
      const unsigned c = unsigned(x > t.t0) + unsigned(x > t.t1) + unsigned(x > t.t2);
      byte |= c << (2 * j);
    }
    code[b] = uint8_t(byte);
  }
}

namespace {

// Rotated f32 copy of `dim` elements of any dtype.
void rotate_copy(const void* x, DType dtype, int64_t dim, float* out) {
  for (int64_t i = 0; i < dim; ++i) out[i] = load_f32(x, dtype, i);
  hadamard_transform(out, dim);
}

}  // namespace

void encode_vector(const void* x, DType dtype, int64_t dim, const Thresholds& t, uint8_t* code) {
  check_dim(dim, "encode_vector");
  check_not_null(x, "encode_vector: x");
  float buf[512];
  rotate_copy(x, dtype, dim, buf);
  encode_rotated(buf, dim, t, code);
}

void encode_keys(const HeadsView& keys, int64_t begin, int64_t end, std::span<const Thresholds> thresholds,
                 const MutCodesView& codes) {
  check_heads(keys, "encode_keys: keys");
  ADAMAS_CHECK(0 <= begin && begin <= end && end <= keys.tokens, ErrorKind::invalid_argument,
               "encode_keys: token range [{}, {}) is outside the {} keys", begin, end, keys.tokens);
  check_codes(CodesView{codes.data, codes.heads, codes.tokens, codes.dim, codes.head_stride, codes.token_stride},
              keys.heads, end, keys.dim, "encode_keys: codes");
  ADAMAS_CHECK(thresholds.size() == 1 || int64_t(thresholds.size()) == keys.heads, ErrorKind::shape_mismatch,
               "encode_keys: {} thresholds given for {} heads (expected 1 or one per head)", thresholds.size(),
               keys.heads);
  for (const Thresholds& t : thresholds) validate_thresholds(t);
  const int64_t n = end - begin;
#pragma omp parallel for collapse(2) if (n * keys.heads > 64)
  for (int64_t h = 0; h < keys.heads; ++h) {
    for (int64_t tok = begin; tok < end; ++tok) {
      const Thresholds& t = thresholds[thresholds.size() == 1 ? 0 : h];
      float buf[512];
      rotate_copy(keys.row(h, tok), keys.dtype, keys.dim, buf);
      encode_rotated(buf, keys.dim, t, codes.row(h, tok));
    }
  }
}

namespace {

// Linear interpolation between order statistics (numpy's default percentile). Reorders `v`.
float percentile(std::vector<float>& v, double p) {
  const double pos = p * double(v.size() - 1);
  const size_t lo = size_t(pos);
  std::nth_element(v.begin(), v.begin() + lo, v.end());
  const float a = v[lo];
  if (lo + 1 >= v.size()) return a;
  const float b = *std::min_element(v.begin() + lo + 1, v.end());  // the next order statistic
  return float(a + (pos - double(lo)) * (double(b) - a));
}

// Degenerate samples (many equal values) can give equal thresholds: separate them by the smallest step, so the
// result always passes validate_thresholds.
Thresholds make_increasing(float t0, float t1, float t2) {
  const float inf = std::numeric_limits<float>::infinity();
  if (!(t1 > t0)) t1 = std::nextafter(t0, inf);
  if (!(t2 > t1)) t2 = std::nextafter(t1, inf);
  return {t0, t1, t2};
}

}  // namespace

Thresholds calibrate_thresholds(const float* rotated, int64_t rows, int64_t dim, int64_t row_stride,
                                const CalibrationOptions& options) {
  check_dim(dim, "calibrate_thresholds");
  ADAMAS_CHECK(rows > 0, ErrorKind::invalid_argument, "calibrate_thresholds: no sample rows (rows = {})", rows);
  check_not_null(rotated, "calibrate_thresholds: rotated");
  ADAMAS_CHECK(row_stride >= dim, ErrorKind::shape_mismatch, "calibrate_thresholds: row_stride {} < dim {}",
               row_stride, dim);
  std::vector<float> v;
  v.reserve(size_t(rows * dim));
  for (int64_t r = 0; r < rows; ++r) v.insert(v.end(), rotated + r * row_stride, rotated + r * row_stride + dim);
  for (float x : v)
    ADAMAS_CHECK(std::isfinite(x), ErrorKind::invalid_argument, "calibrate_thresholds: sample holds {}", x);
  if (options.kind == Calibration::quartiles) {
    const float q1 = percentile(v, 0.25), q2 = percentile(v, 0.5), q3 = percentile(v, 0.75);
    return make_increasing(q1, q2, q3);
  }
  ADAMAS_CHECK(options.sigma_scale > 0 && std::isfinite(options.sigma_scale), ErrorKind::invalid_argument,
               "calibrate_thresholds: sigma_scale {} must be positive", options.sigma_scale);
  double sum = 0, sum2 = 0;
  for (float x : v) sum += x, sum2 += double(x) * x;
  const double mean = sum / double(v.size());
  const double sigma = std::sqrt(std::max(0.0, sum2 / double(v.size()) - mean * mean));
  const double c = options.sigma_scale * sigma;
  return make_increasing(float(mean - c), float(mean), float(mean + c));
}

Thresholds calibrate_head(const HeadsView& keys, int64_t head, int64_t begin, int64_t end,
                          const CalibrationOptions& options) {
  check_heads(keys, "calibrate_head: keys");
  ADAMAS_CHECK(0 <= head && head < keys.heads, ErrorKind::invalid_argument, "calibrate_head: head {} not in [0, {})",
               head, keys.heads);
  ADAMAS_CHECK(0 <= begin && begin < end && end <= keys.tokens, ErrorKind::invalid_argument,
               "calibrate_head: token range [{}, {}) is empty or outside the {} keys", begin, end, keys.tokens);
  std::vector<float> rotated(size_t((end - begin) * keys.dim));
  for (int64_t t = begin; t < end; ++t)
    rotate_copy(keys.row(head, t), keys.dtype, keys.dim, rotated.data() + (t - begin) * keys.dim);
  return calibrate_thresholds(rotated.data(), end - begin, keys.dim, keys.dim, options);
}

}  // namespace adamas
