// Writing GGUF metadata (internal header): key/value records in the reader's format (gguf.h), used where the
// engine builds a GGUF in memory (a Hugging Face checkpoint converted, a tokenizer.json turned into GGUF keys).
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <string_view>
#include <vector>

#include "model/gguf.h"

namespace adamas {

class GgufMetaWriter {
 public:
  std::vector<uint8_t> bytes;  // the records written so far
  uint64_t n_kv = 0;           // their number

  template <class T>
  void raw(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(T));
  }
  void str(std::string_view s) {
    raw<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
  void key(std::string_view k, GgufType t) {
    ++n_kv;
    str(k);
    raw(uint32_t(t));
  }
  void kv_str(std::string_view k, std::string_view v) { key(k, GgufType::string), str(v); }
  void kv_u32(std::string_view k, uint32_t v) { key(k, GgufType::u32), raw(v); }
  void kv_f32(std::string_view k, float v) { key(k, GgufType::f32), raw(v); }
  void kv_bool(std::string_view k, bool v) { key(k, GgufType::boolean), raw<uint8_t>(v ? 1 : 0); }
  template <class T>
  void kv_array(std::string_view k, GgufType element, const std::vector<T>& v) {
    key(k, GgufType::array);
    raw(uint32_t(element));
    raw<uint64_t>(v.size());
    for (const T& x : v) {
      if constexpr (std::is_same_v<T, std::string>) str(x);
      else raw(x);
    }
  }
  void kv_strings(std::string_view k, const std::vector<std::string>& v) { kv_array(k, GgufType::string, v); }
  void kv_i32s(std::string_view k, const std::vector<int32_t>& v) { kv_array(k, GgufType::i32, v); }
  void kv_f32s(std::string_view k, const std::vector<float>& v) { kv_array(k, GgufType::f32, v); }

  // A whole GGUF v3 file of these records and no tensors, padded to 32 bytes.
  std::vector<uint8_t> finish() const {
    GgufMetaWriter out;
    out.raw(uint32_t(0x46554747));  // "GGUF"
    out.raw(uint32_t(3));
    out.raw(uint64_t(0));
    out.raw(n_kv);
    out.bytes.insert(out.bytes.end(), bytes.begin(), bytes.end());
    while (out.bytes.size() % 32 != 0) out.bytes.push_back(0);
    return std::move(out.bytes);
  }
};

}  // namespace adamas
