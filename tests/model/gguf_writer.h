// Test helper: builds GGUF files byte by byte (valid ones, and broken ones by editing the bytes).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace adamas::test {

class GgufWriter {
 public:
  std::vector<uint8_t> bytes;

  template <class T>
  GgufWriter& raw(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(T));
    return *this;
  }
  GgufWriter& str(std::string_view s) {
    raw<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  GgufWriter& header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    return raw<uint32_t>(0x46554747).raw(version).raw(n_tensors).raw(n_kv);
  }
  // A key and its type; the caller appends the value.
  GgufWriter& key(std::string_view k, uint32_t type) { return str(k).raw(type); }
  GgufWriter& kv_u32(std::string_view k, uint32_t v) { return key(k, 4).raw(v); }
  GgufWriter& kv_str(std::string_view k, std::string_view v) { return key(k, 8).str(v); }
  GgufWriter& kv_bool(std::string_view k, bool v) { return key(k, 7).raw<uint8_t>(v); }
  GgufWriter& kv_strings(std::string_view k, const std::vector<std::string>& v) {
    key(k, 9).raw<uint32_t>(8).raw<uint64_t>(v.size());
    for (const auto& s : v) str(s);
    return *this;
  }
  GgufWriter& kv_i32s(std::string_view k, const std::vector<int32_t>& v) {
    key(k, 9).raw<uint32_t>(5).raw<uint64_t>(v.size());
    for (int32_t x : v) raw(x);
    return *this;
  }
  GgufWriter& tensor_info(std::string_view name, const std::vector<uint64_t>& dims, uint32_t type,
                          uint64_t offset) {
    str(name).raw<uint32_t>(uint32_t(dims.size()));
    for (uint64_t d : dims) raw(d);
    return raw(type).raw(offset);
  }
  GgufWriter& pad(uint64_t alignment) {
    while (bytes.size() % alignment != 0) bytes.push_back(0);
    return *this;
  }
  GgufWriter& data(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    bytes.insert(bytes.end(), b, b + n);
    return *this;
  }
};

}  // namespace adamas::test
