// GGUF reader (versions 2 and 3, little-endian) over a read-only mmap of the file or over bytes in memory.
//
// Layout: "GGUF", u32 version, u64 tensor_count, u64 kv_count, kv_count x (string key, u32 type, value),
// tensor_count x (string name, u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset), padding to
// general.alignment (default 32), tensor data. A string is u64 length + bytes; an array is u32 element type,
// u64 count, elements.
//
// Every malformed input raises adamas::Error(ErrorKind::format) naming the source and the problem; nothing is
// allocated beyond what the file's own size can justify. Values, names and tensor data point into the file's bytes:
// they stay valid while the GgufFile lives (moving it keeps them valid).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/quant.h"

#include "adamas/error.h"  // the functions here throw adamas::Error
#include "core/file_bytes.h"

namespace adamas {

enum class GgufType : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8, array = 9,
  u64 = 10, i64 = 11, f64 = 12,
};
std::string_view gguf_type_name(GgufType type);

// One metadata value. Scalars, strings, arrays of scalars, of strings, and of arrays.
class GgufValue {
 public:
  GgufType type() const { return type_; }
  bool is_integer() const;  // u8..i64 (not bool)
  bool is_float() const { return type_ == GgufType::f32 || type_ == GgufType::f64; }

  // Typed reads; each throws Error(format) naming `what` (usually the key) when the type does not fit.
  int64_t as_int(std::string_view what = "value") const;    // any integer type whose value fits in int64
  uint64_t as_uint(std::string_view what = "value") const;  // any integer type with a non-negative value
  double as_float(std::string_view what = "value") const;   // f32 or f64
  bool as_bool(std::string_view what = "value") const;
  std::string_view as_string(std::string_view what = "value") const;

  // Arrays.
  GgufType array_type() const { return elem_type_; }  // meaningful when type() == array
  uint64_t array_size() const { return count_; }
  std::vector<int64_t> as_int_array(std::string_view what = "value") const;    // integer elements
  std::vector<double> as_float_array(std::string_view what = "value") const;   // f32/f64 elements
  const std::vector<std::string_view>& as_string_array(std::string_view what = "value") const;
  const std::vector<GgufValue>& as_array_array(std::string_view what = "value") const;  // arrays of arrays
  // Raw little-endian element bytes of an array of scalars (count * element size bytes).
  const uint8_t* array_data() const { return raw_; }

 private:
  friend class GgufParser;
  GgufType type_ = GgufType::u8;
  GgufType elem_type_ = GgufType::u8;
  uint64_t bits_ = 0;          // scalar payload, little-endian, zero-extended
  std::string_view str_;       // string payload
  const uint8_t* raw_ = nullptr;  // arrays of scalars: the elements in the file
  uint64_t count_ = 0;
  std::vector<std::string_view> strings_;  // arrays of strings
  std::vector<GgufValue> values_;          // arrays of arrays
};

struct GgufTensor {
  std::string_view name;
  GgmlType type;
  std::vector<int64_t> shape;  // ggml order: shape[0] is the contiguous (row) dimension
  uint64_t offset = 0;         // from the start of the data section
  int64_t n_elements = 0;
  int64_t n_bytes = 0;
  const uint8_t* data = nullptr;  // into the file's bytes

  int64_t row_length() const { return shape[0]; }
  int64_t n_rows() const { return n_elements / shape[0]; }
  int64_t row_bytes() const { return n_bytes / n_rows(); }
  const uint8_t* row(int64_t i) const { return data + i * row_bytes(); }
};

class GgufFile {
 public:
  // Map and parse a file. io errors when it cannot be opened or mapped, format errors when malformed.
  static GgufFile open(const std::string& path);
  // Parse bytes held in memory (copied in); `source` names them in error messages.
  static GgufFile from_bytes(std::span<const uint8_t> bytes, std::string source = "<memory>");

  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;
  ~GgufFile();

  const std::string& source() const { return source_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the tensor data section
  uint64_t file_size() const { return bytes_.size(); }

  // Metadata, in file order.
  const std::vector<std::pair<std::string_view, GgufValue>>& metadata() const { return kv_; }
  bool has(std::string_view key) const;
  const GgufValue* find(std::string_view key) const;  // nullptr when missing
  const GgufValue& get(std::string_view key) const;   // Error(format) "missing key" when missing

  std::string_view get_string(std::string_view key) const { return get(key).as_string(key); }
  int64_t get_int(std::string_view key) const { return get(key).as_int(key); }
  uint64_t get_uint(std::string_view key) const { return get(key).as_uint(key); }
  double get_float(std::string_view key) const { return get(key).as_float(key); }
  bool get_bool(std::string_view key) const { return get(key).as_bool(key); }
  const std::vector<std::string_view>& get_string_array(std::string_view key) const {
    return get(key).as_string_array(key);
  }
  std::vector<int64_t> get_int_array(std::string_view key) const { return get(key).as_int_array(key); }
  std::vector<double> get_float_array(std::string_view key) const { return get(key).as_float_array(key); }
  // With a default when the key is missing (a present key of the wrong type still throws).
  std::string_view get_string_or(std::string_view key, std::string_view fallback) const;
  int64_t get_int_or(std::string_view key, int64_t fallback) const;
  double get_float_or(std::string_view key, double fallback) const;
  bool get_bool_or(std::string_view key, bool fallback) const;

  // Tensors, in file order.
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(std::string_view name) const;  // nullptr when missing
  const GgufTensor& tensor(std::string_view name) const;       // Error(format) when missing

 private:
  friend class GgufParser;
  GgufFile() = default;
  void parse();

  std::string source_;
  FileBytes bytes_;  // the mapped file, or the copy of the bytes given to from_bytes
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string_view, GgufValue>> kv_;
  std::map<std::string_view, size_t, std::less<>> kv_index_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string_view, size_t, std::less<>> tensor_index_;
};

}  // namespace adamas
