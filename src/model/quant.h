// Weight storage types of ggml/GGUF (F32, F16, BF16 and the block-quantized formats) and the two operations the
// engine needs on a row of them: dequantize to f32, and the dot product with an f32 vector.
//
// Block layouts follow ggml (little-endian, packed): a row of n elements is n / block_size blocks of type_size bytes.
//   Q4_0 (32): f16 d, u8 qs[16]                       x = d * (nibble - 8)
//   Q4_1 (32): f16 d, f16 m, u8 qs[16]                x = d * nibble + m
//   Q8_0 (32): f16 d, i8 qs[32]                       x = d * q
//   Q4_K (256): f16 d, f16 dmin, u8 scales[12], u8 qs[128]             8 sub-blocks of 32, 6-bit scale and min
//   Q5_K (256): f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]  as Q4_K with a fifth bit from qh
//   Q6_K (256): u8 ql[128], u8 qh[64], i8 scales[16], f16 d            16 sub-blocks of 16, x = d * scale * (q - 32)
// Nibble order in Q4_0/Q4_1: byte j holds element j (low nibble) and element j + 16 (high nibble).
#pragma once

#include <cstdint>
#include <string_view>

#include "adamas/error.h"  // the functions here throw adamas::Error

namespace adamas {

// ggml's type ids as stored in GGUF tensor infos (values are the file format's, do not renumber).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
};

struct GgmlTypeInfo {
  std::string_view name;
  int64_t block_size;  // elements per block (1 for plain types)
  int64_t type_size;   // bytes per block
  bool dequantizable;  // dequantize_row / vec_dot support it
};

// The traits of a raw type id read from a file, or nullptr when the id is not a ggml type this build knows.
const GgmlTypeInfo* ggml_type_info(uint32_t type);
// Same for a typed id; throws adamas::Error(unsupported) for an unknown id.
const GgmlTypeInfo& ggml_type_info(GgmlType type);
std::string_view ggml_type_name(GgmlType type);

// Bytes of a row of n elements (n must be a multiple of the block size: else invalid_argument).
int64_t ggml_row_bytes(GgmlType type, int64_t n);

// Dequantize one row of n elements at src into dst[0..n). Throws unsupported for a type without dequantizable,
// invalid_argument when n is not a multiple of the block size.
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);

// sum_i row[i] * x[i] over one row of n elements, without materializing the row (AVX2 paths where built).
float vec_dot(GgmlType type, const void* row, const float* x, int64_t n);
// The scalar reference of vec_dot (same contract); the fast paths are tested against it.
float vec_dot_ref(GgmlType type, const void* row, const float* x, int64_t n);

// ---------------------------------------------------------------------------------------------------------------
// Integer products, as llama.cpp computes them: the activations are rounded to 8 bits per block of 32 once per
// matrix product, and each weight block is multiplied with them in integers (AVX2 maddubs/madd), one float
// multiply-add per 32 elements. Only for the block-quantized weight types (has_q8_dot); F32/F16/BF16 weights keep
// f32 activations.
// ---------------------------------------------------------------------------------------------------------------

// 32 activations x[i] ~ d * qs[i]; s = d * sum(qs) serves the weight types with an offset (Q4_0's -8, Q4_1's min,
// the K-quants' mins). d is rounded to f16 like ggml's Q8_0/Q8_1 scales, so the products round as llama.cpp's.
struct BlockQ8 {
  float d, s;
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8) == 40);

// Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K.
bool has_q8_dot(GgmlType type);

// x[0..n) -> n / 32 blocks (n a multiple of 32: else invalid_argument). q = round-to-nearest-even(x / d) with
// d = max|x| / 127; the AVX2 and the scalar build give identical blocks.
void quantize_row_q8(const float* x, BlockQ8* y, int64_t n);
// The scalar quantizer (what builds without AVX2 run); same contract and the same blocks.
void quantize_row_q8_ref(const float* x, BlockQ8* y, int64_t n);

// y[t * y_stride + r] = row r . activations of token t, for r < n_rows weight rows (row r at w + r * row_bytes, n
// elements each) and t < n_tokens quantized inputs (token t's blocks at x + t * x_stride). AVX2 builds multiply a
// tile of rows by a tile of tokens in registers, so each weight block is unpacked once for several tokens.
// Error(unsupported) for a type without has_q8_dot, invalid_argument when n is not a multiple of its block size.
void gemm_q8(GgmlType type, const void* w, int64_t row_bytes, int64_t n_rows, const BlockQ8* x, int64_t x_stride,
             int64_t n_tokens, int64_t n, float* y, int64_t y_stride);
// One row times one quantized input (a 1 x 1 gemm_q8).
float vec_dot_q8(GgmlType type, const void* row, const BlockQ8* x, int64_t n);
// The portable scalar integer dot (what builds without AVX2 run); same contract as vec_dot_q8.
float vec_dot_q8_ref(GgmlType type, const void* row, const BlockQ8* x, int64_t n);

}  // namespace adamas
