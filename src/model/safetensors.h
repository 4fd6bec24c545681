// Hugging Face safetensors reader over a read-only mmap (or bytes in memory), single files and sharded checkpoints.
//
// Layout of a .safetensors file: u64 little-endian header length N, N bytes of UTF-8 JSON, then the data buffer.
// The JSON is an object: "__metadata__" (optional, string -> string) and, per tensor,
//   "name": {"dtype": "F32"|"F16"|"BF16"|..., "shape": [d0, d1, ...], "data_offsets": [begin, end]}
// with offsets relative to the start of the data buffer (8 + N), little-endian row-major (C order) elements.
// F32, F16 and BF16 are supported (they map onto GgmlType, so dequantize_row / vec_dot work on the rows); any other
// dtype raises Error(unsupported) naming the tensor and the dtype. Every malformed input (short file, absurd header
// length, malformed JSON, missing/mistyped fields, offsets out of the buffer or overlapping, a byte count that does
// not match the shape) raises Error(format) naming the file and the problem.
//
// Shape convention (mirrors GgufTensor): `shape` is in ggml order, shape[0] the contiguous dimension, i.e. the
// header's shape reversed. A Hugging Face nn.Linear weight stored as [out_features, in_features] row-major therefore
// has shape = {in, out}: row_length() == in, n_rows() == out, row(r) the weights of output r -- exactly the layout of
// the same weight in a GGUF file converted by llama.cpp (before llama.cpp's Q/K row permutation for RoPE, see
// hf_config.h). `hf_shape` keeps the header's order. A 0-d tensor has hf_shape {} and shape {1}.
//
// Data pointers point into the mapped file: they stay valid while the SafetensorsFile / SafetensorsCheckpoint lives
// (moving it keeps them valid). Tensor data are not necessarily aligned to their element size (the format does not
// require it; the usual writers pad the header to 8 bytes): read them with unaligned loads or memcpy.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/file_bytes.h"
#include "model/quant.h"

#include "adamas/error.h"  // the functions here throw adamas::Error

namespace adamas {

struct SafetensorsTensor {
  std::string name;
  GgmlType type = GgmlType::F32;  // F32, F16 or BF16
  std::string dtype;              // as in the header: "F32", "F16", "BF16"
  std::vector<int64_t> hf_shape;  // as in the header, outermost first
  std::vector<int64_t> shape;     // ggml order: shape[0] is the contiguous (row) dimension
  uint64_t offset = 0;            // data_offsets[0], from the start of the data buffer
  int64_t n_elements = 0;
  int64_t n_bytes = 0;
  const uint8_t* data = nullptr;  // into the file's bytes
  std::string_view source;        // the file it lives in (for messages)

  int64_t row_length() const { return shape[0]; }
  int64_t n_rows() const { return shape[0] == 0 ? 0 : n_elements / shape[0]; }
  int64_t row_bytes() const { return row_length() * element_size(); }
  int64_t element_size() const { return type == GgmlType::F32 ? 4 : 2; }
  const uint8_t* row(int64_t i) const { return data + i * row_bytes(); }
  // Element i (flat, row-major) converted to f32.
  float at(int64_t i) const;
  // All elements converted to f32 (for norms, biases and tests).
  std::vector<float> to_f32() const;
};

// One .safetensors file.
class SafetensorsFile {
 public:
  // Header lengths above this are rejected as absurd (the reference implementation's limit is 100 MB).
  static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

  // Map and parse a file. io errors when it cannot be opened or mapped, format errors when malformed.
  static SafetensorsFile open(const std::string& path);
  // Parse bytes held in memory (copied in); `source` names them in error messages.
  static SafetensorsFile from_bytes(std::span<const uint8_t> bytes, std::string source = "<memory>");

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::string& source() const { return *source_; }
  uint64_t file_size() const { return bytes_.size(); }
  uint64_t data_offset() const { return data_offset_; }  // 8 + header length
  const std::map<std::string, std::string>& metadata() const { return metadata_; }  // "__metadata__"

  // Tensors sorted by data offset.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* find_tensor(std::string_view name) const;  // nullptr when missing
  const SafetensorsTensor& tensor(std::string_view name) const;       // Error(format) when missing

 private:
  SafetensorsFile() = default;
  void parse();

  std::unique_ptr<std::string> source_;  // stable address: tensors' `source` views it
  FileBytes bytes_;  // the mapped file, or the copy of the bytes given to from_bytes
  uint64_t data_offset_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
};

// A checkpoint: one model.safetensors, or shards listed by model.safetensors.index.json ("weight_map": tensor name
// -> shard file name, relative to the index's directory). Each shard is opened (mapped) once; every tensor the
// weight map names must be in the shard it names, and no tensor may appear in two shards.
class SafetensorsCheckpoint {
 public:
  // `path`: a directory (uses model.safetensors.index.json when present, else model.safetensors), an index .json
  // file, or a single .safetensors file.
  static SafetensorsCheckpoint open(const std::string& path);

  SafetensorsCheckpoint(SafetensorsCheckpoint&&) noexcept = default;
  SafetensorsCheckpoint& operator=(SafetensorsCheckpoint&&) noexcept = default;

  const std::string& source() const { return source_; }  // the index or the single file
  const std::vector<SafetensorsFile>& shards() const { return shards_; }
  // All tensors by name.
  const std::map<std::string, const SafetensorsTensor*, std::less<>>& tensors() const { return tensors_; }
  const SafetensorsTensor* find_tensor(std::string_view name) const;  // nullptr when missing
  const SafetensorsTensor& tensor(std::string_view name) const;       // Error(format) naming the checkpoint
  int64_t total_bytes() const;                                       // sum of the tensors' bytes

 private:
  SafetensorsCheckpoint() = default;
  void add_shard(SafetensorsFile file);

  std::string source_;
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, const SafetensorsTensor*, std::less<>> tensors_;
};

// IEEE half / bfloat16 bits to f32.
float f16_bits_to_f32(uint16_t h);
inline float bf16_bits_to_f32(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

}  // namespace adamas
