// Argument checks shared by the attention operator's entry points (internal header).
#pragma once

#include "adamas/attention.h"
#include "core/check.h"

namespace adamas {

// A head_dim that is not a power of two is invalid (the Hadamard transform needs one); a power of two outside
// [16, 512] is valid but not supported by this build.
inline void check_dim(int64_t dim, const char* where) {
  ADAMAS_CHECK(dim > 0 && (dim & (dim - 1)) == 0, ErrorKind::invalid_argument,
               "{}: head_dim {} is not a power of two", where, dim);
  ADAMAS_CHECK(is_supported_dim(dim), ErrorKind::unsupported,
               "{}: head_dim {} is not supported (expected a power of two in [16, 512])", where, dim);
}

inline void check_not_null(const void* p, const char* what) {
  ADAMAS_CHECK(p != nullptr, ErrorKind::invalid_argument, "{} is a null pointer", what);
}

// A K or V view: non-null, supported dim, strides that keep rows apart.
inline void check_heads(const HeadsView& v, const char* what) {
  check_dim(v.dim, what);
  ADAMAS_CHECK(v.heads > 0, ErrorKind::shape_mismatch, "{}: heads = {} (expected > 0)", what, v.heads);
  ADAMAS_CHECK(v.tokens >= 0, ErrorKind::shape_mismatch, "{}: tokens = {} is negative", what, v.tokens);
  if (v.tokens == 0) return;
  check_not_null(v.data, what);
  ADAMAS_CHECK(v.token_stride >= v.dim || v.tokens == 1, ErrorKind::shape_mismatch,
               "{}: token_stride {} < dim {}", what, v.token_stride, v.dim);
}

inline void check_codes(const CodesView& c, int64_t heads, int64_t tokens, int64_t dim, const char* what) {
  ADAMAS_CHECK(c.dim == dim, ErrorKind::shape_mismatch, "{}: code dim {} != head_dim {}", what, c.dim, dim);
  ADAMAS_CHECK(c.heads == heads, ErrorKind::shape_mismatch, "{}: code heads {} != kv heads {}", what, c.heads,
               heads);
  ADAMAS_CHECK(c.tokens >= tokens, ErrorKind::shape_mismatch, "{}: codes cover {} tokens, need {}", what, c.tokens,
               tokens);
  if (tokens > 0) check_not_null(c.data, what);
  ADAMAS_CHECK(c.token_stride >= code_bytes(dim) || tokens <= 1, ErrorKind::shape_mismatch,
               "{}: code token_stride {} < {} bytes", what, c.token_stride, code_bytes(dim));
}

}  // namespace adamas
