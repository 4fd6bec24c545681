// Non-owning views over plain memory: what the public API takes instead of a tensor class, so that any engine can
// pass its own buffers. Strides are in elements (bytes for codes) and may be anything >= the row length, so a view
// can address one layer of a larger paged or interleaved cache.
#pragma once

#include <cstddef>
#include <cstdint>

namespace adamas {

enum class DType : uint8_t { f32, f16, bf16 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

// [heads][tokens][dim] vectors of one dtype (keys or values of one sequence and one layer).
// Element (h, t, i) lives at data + h * head_stride + t * token_stride + i (in elements).
struct HeadsView {
  const void* data = nullptr;
  DType dtype = DType::f32;
  int64_t heads = 0;
  int64_t tokens = 0;
  int64_t dim = 0;
  int64_t head_stride = 0;
  int64_t token_stride = 0;

  // Dense layout [heads][tokens][dim].
  static HeadsView contiguous(const void* data, DType dtype, int64_t heads, int64_t tokens, int64_t dim) {
    return {data, dtype, heads, tokens, dim, tokens * dim, dim};
  }
  const void* row(int64_t head, int64_t token) const {
    return static_cast<const char*>(data) + (head * head_stride + token * token_stride) * int64_t(dtype_size(dtype));
  }
};

// [heads][tokens] packed 2-bit codes, dim / 4 bytes per vector (layout in attention.h).
// Code (h, t) starts at data + h * head_stride + t * token_stride (in bytes).
template <class Byte>
struct BasicCodesView {
  Byte* data = nullptr;
  int64_t heads = 0;
  int64_t tokens = 0;
  int64_t dim = 0;
  int64_t head_stride = 0;
  int64_t token_stride = 0;

  static BasicCodesView contiguous(Byte* data, int64_t heads, int64_t tokens, int64_t dim) {
    return {data, heads, tokens, dim, tokens * (dim / 4), dim / 4};
  }
  Byte* row(int64_t head, int64_t token) const { return data + head * head_stride + token * token_stride; }
};
using CodesView = BasicCodesView<const uint8_t>;
using MutCodesView = BasicCodesView<uint8_t>;

}  // namespace adamas
