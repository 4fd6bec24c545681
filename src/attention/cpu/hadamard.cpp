// Orthonormal fast Walsh-Hadamard transform (Sylvester order): d log d butterflies, then one scale by 1/sqrt(d).
#include <cmath>
#include <vector>

#include "adamas/attention.h"
#include "attention/cpu/validate.h"
#include "core/dtype.h"

namespace adamas {

bool is_supported_dim(int64_t dim) { return dim >= 16 && dim <= 512 && (dim & (dim - 1)) == 0; }

void hadamard_transform(float* x, int64_t dim) {
  check_dim(dim, "hadamard_transform");
  check_not_null(x, "hadamard_transform: x");
  // Butterflies on pairs (i, i + h). The inner loop over contiguous j vectorizes for h >= 8.
  for (int64_t h = 1; h < dim; h *= 2) {
    for (int64_t i = 0; i < dim; i += 2 * h) {
      for (int64_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
  const float scale = 1.0f / std::sqrt(float(dim));
  for (int64_t i = 0; i < dim; ++i) x[i] *= scale;
}

void hadamard_rows(void* data, DType dtype, int64_t rows, int64_t dim, int64_t row_stride) {
  check_dim(dim, "hadamard_rows");
  ADAMAS_CHECK(rows >= 0, ErrorKind::invalid_argument, "hadamard_rows: rows = {} is negative", rows);
  ADAMAS_CHECK(row_stride >= dim, ErrorKind::shape_mismatch, "hadamard_rows: row_stride {} < dim {}", row_stride,
               dim);
  if (rows == 0) return;
  check_not_null(data, "hadamard_rows: data");
  if (dtype == DType::f32) {
#pragma omp parallel for if (rows > 64)
    for (int64_t r = 0; r < rows; ++r) hadamard_transform(static_cast<float*>(data) + r * row_stride, dim);
    return;
  }
#pragma omp parallel if (rows > 64)
  {
    std::vector<float> buf(dim);
#pragma omp for
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t base = r * row_stride;
      for (int64_t i = 0; i < dim; ++i) buf[i] = load_f32(data, dtype, base + i);
      hadamard_transform(buf.data(), dim);
      for (int64_t i = 0; i < dim; ++i) store_f32(data, dtype, base + i, buf[i]);
    }
  }
}

}  // namespace adamas
