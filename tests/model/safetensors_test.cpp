// safetensors reader: synthetic files in each dtype, a sharded checkpoint with its index, every malformed case.
#include "model/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/quant.h"

namespace adamas {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Builds a safetensors file: tensors appended to the data buffer in order, header padded to 8 bytes with spaces.
struct StWriter {
  json header = json::object();
  std::vector<uint8_t> data;

  StWriter& add(const std::string& name, const std::string& dtype, std::vector<int64_t> shape, const void* p,
                size_t n) {
    const size_t begin = data.size();
    const auto* b = static_cast<const uint8_t*>(p);
    data.insert(data.end(), b, b + n);
    header[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, data.size()}}};
    return *this;
  }
  static std::vector<uint8_t> raw(const std::string& header_text, const std::vector<uint8_t>& data,
                                  std::optional<uint64_t> length = std::nullopt) {
    std::vector<uint8_t> out(8);
    const uint64_t n = length.value_or(header_text.size());
    std::memcpy(out.data(), &n, 8);
    out.insert(out.end(), header_text.begin(), header_text.end());
    out.insert(out.end(), data.begin(), data.end());
    return out;
  }
  std::vector<uint8_t> bytes() const {
    std::string h = header.dump();
    while ((8 + h.size()) % 8 != 0) h += ' ';
    return raw(h, data);
  }
};

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t(u >> 16);  // exact for the values used here
}

// Exact F16 bits of small values used in the tests.
uint16_t f16(float f) {
  if (f == 0.0f) return 0;
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000;
  const int32_t exp = int32_t((u >> 23) & 0xFF) - 127 + 15;
  const uint32_t mant = (u >> 13) & 0x3FF;
  return uint16_t(sign | (uint32_t(exp) << 10) | mant);
}

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("adamas_st_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  std::string write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    const fs::path p = path_ / name;
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return p.string();
  }
  std::string write(const std::string& name, const std::string& text) const {
    return write(name, std::vector<uint8_t>(text.begin(), text.end()));
  }

 private:
  fs::path path_;
  static inline int counter_ = 0;
};

// The error of parsing `bytes`: kind and message.
std::pair<ErrorKind, std::string> error_of(const std::vector<uint8_t>& bytes) {
  try {
    SafetensorsFile::from_bytes(bytes, "bad.safetensors");
  } catch (const Error& e) {
    return {e.kind(), e.what()};
  }
  return {ErrorKind::invalid_argument, "no error"};
}

#define EXPECT_FORMAT_ERROR(bytes, fragment)                                       \
  do {                                                                             \
    const auto [kind, msg] = error_of(bytes);                                      \
    EXPECT_EQ(kind, ErrorKind::format) << msg;                                     \
    EXPECT_NE(msg.find("bad.safetensors"), std::string::npos) << msg;              \
    EXPECT_NE(msg.find(fragment), std::string::npos) << "expected '" << fragment << "' in: " << msg; \
  } while (0)

StWriter three_dtypes() {
  StWriter w;
  const float a[6] = {1.0f, -2.0f, 3.5f, 0.25f, -0.125f, 100.0f};  // [2, 3]
  w.add("model.layers.0.self_attn.q_proj.weight", "F32", {2, 3}, a, sizeof a);
  const uint16_t h[4] = {f16(1.0f), f16(-0.5f), f16(2.0f), f16(65504.0f)};  // [4]
  w.add("half", "F16", {4}, h, sizeof h);
  const uint16_t b[6] = {f32_to_bf16(1.0f), f32_to_bf16(2.0f), f32_to_bf16(-3.0f),
                         f32_to_bf16(0.5f), f32_to_bf16(1024.0f), f32_to_bf16(-0.0625f)};  // [3, 2]
  w.add("brain", "BF16", {3, 2}, b, sizeof b);
  w.header["__metadata__"] = {{"format", "pt"}};
  return w;
}

TEST(safetensors, three_dtypes_values_and_shapes) {
  const auto f = SafetensorsFile::from_bytes(three_dtypes().bytes(), "t.safetensors");
  EXPECT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.metadata().at("format"), "pt");

  const auto& q = f.tensor("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(q.type, GgmlType::F32);
  EXPECT_EQ(q.dtype, "F32");
  EXPECT_EQ(q.hf_shape, (std::vector<int64_t>{2, 3}));  // [out, in]
  EXPECT_EQ(q.shape, (std::vector<int64_t>{3, 2}));     // ggml order: {in, out}
  EXPECT_EQ(q.row_length(), 3);
  EXPECT_EQ(q.n_rows(), 2);
  EXPECT_EQ(q.row_bytes(), 12);
  EXPECT_EQ(q.n_bytes, 24);
  EXPECT_EQ(q.to_f32(), (std::vector<float>{1.0f, -2.0f, 3.5f, 0.25f, -0.125f, 100.0f}));
  // Rows work with the weight-type kernels: row 1 . (1, 2, 4) = 0.25 - 0.25 + 400.
  const float x[3] = {1.0f, 2.0f, 4.0f};
  EXPECT_FLOAT_EQ(vec_dot(q.type, q.row(1), x, q.row_length()), 400.0f);

  const auto& h = f.tensor("half");
  EXPECT_EQ(h.type, GgmlType::F16);
  EXPECT_EQ(h.shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(h.to_f32(), (std::vector<float>{1.0f, -0.5f, 2.0f, 65504.0f}));
  float row[4];
  dequantize_row(h.type, h.row(0), row, 4);
  EXPECT_EQ(std::vector<float>(row, row + 4), h.to_f32());

  const auto& b = f.tensor("brain");
  EXPECT_EQ(b.type, GgmlType::BF16);
  EXPECT_EQ(b.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(b.n_rows(), 3);
  EXPECT_EQ(b.to_f32(), (std::vector<float>{1.0f, 2.0f, -3.0f, 0.5f, 1024.0f, -0.0625f}));
  EXPECT_EQ(b.at(4), 1024.0f);
  float brow[2];
  dequantize_row(b.type, b.row(2), brow, 2);
  EXPECT_EQ(brow[0], 1024.0f);
  EXPECT_EQ(brow[1], -0.0625f);

  EXPECT_EQ(f.find_tensor("nope"), nullptr);
  try {
    f.tensor("nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format);
    EXPECT_NE(std::string(e.what()).find("nope"), std::string::npos);
  }
}

TEST(safetensors, f16_conversion_special_values) {
  EXPECT_EQ(f16_bits_to_f32(0x0000), 0.0f);
  EXPECT_TRUE(std::signbit(f16_bits_to_f32(0x8000)));
  EXPECT_EQ(f16_bits_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(f16_bits_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f16_bits_to_f32(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::isinf(f16_bits_to_f32(0x7C00)));
  EXPECT_TRUE(std::isnan(f16_bits_to_f32(0x7E00)));
  // Agrees with the ggml kernels on every half value that is finite.
  for (uint32_t u = 0; u < 0x10000; u += 7) {
    const uint16_t h = uint16_t(u);
    if ((h & 0x7C00) == 0x7C00) continue;
    float y;
    dequantize_row(GgmlType::F16, &h, &y, 1);
    ASSERT_EQ(f16_bits_to_f32(h), y) << std::hex << u;
  }
}

TEST(safetensors, open_file_and_scalar_and_empty_tensors) {
  TempDir dir;
  StWriter w = three_dtypes();
  const float s = 7.0f;
  w.add("scalar", "F32", {}, &s, 4);
  w.add("empty", "F16", {0, 5}, nullptr, 0);
  const std::string path = dir.write("model.safetensors", w.bytes());
  const auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f.source(), path);
  const auto& sc = f.tensor("scalar");
  EXPECT_TRUE(sc.hf_shape.empty());
  EXPECT_EQ(sc.shape, (std::vector<int64_t>{1}));
  EXPECT_EQ(sc.at(0), 7.0f);
  const auto& e = f.tensor("empty");
  EXPECT_EQ(e.n_elements, 0);
  EXPECT_EQ(e.shape, (std::vector<int64_t>{5, 0}));
  EXPECT_EQ(e.n_rows(), 0);

  // The directory form of SafetensorsCheckpoint finds model.safetensors.
  const auto c = SafetensorsCheckpoint::open(dir.path().string());
  EXPECT_EQ(c.shards().size(), 1u);
  EXPECT_EQ(c.tensors().size(), 5u);
  EXPECT_EQ(c.tensor("brain").at(1), 2.0f);
  // Moving keeps the views valid.
  SafetensorsFile g = SafetensorsFile::open(path);
  const uint8_t* before = g.tensor("half").data;
  SafetensorsFile moved = std::move(g);
  EXPECT_EQ(moved.tensor("half").data, before);
  EXPECT_EQ(moved.tensor("half").at(3), 65504.0f);
}

TEST(safetensors, sharded_checkpoint_with_index) {
  TempDir dir;
  StWriter a, b;
  const float x[4] = {1, 2, 3, 4};
  const float y[2] = {5, 6};
  const uint16_t z[2] = {f32_to_bf16(7.0f), f32_to_bf16(8.0f)};
  a.add("model.embed_tokens.weight", "F32", {2, 2}, x, sizeof x);
  a.add("model.norm.weight", "F32", {2}, y, sizeof y);
  b.add("lm_head.weight", "BF16", {1, 2}, z, sizeof z);
  dir.write("model-00001-of-00002.safetensors", a.bytes());
  dir.write("model-00002-of-00002.safetensors", b.bytes());
  const json index = {{"metadata", {{"total_size", 28}}},
                      {"weight_map",
                       {{"model.embed_tokens.weight", "model-00001-of-00002.safetensors"},
                        {"model.norm.weight", "model-00001-of-00002.safetensors"},
                        {"lm_head.weight", "model-00002-of-00002.safetensors"}}}};
  const std::string index_path = dir.write("model.safetensors.index.json", index.dump());

  for (const std::string& p : {dir.path().string(), index_path}) {
    const auto c = SafetensorsCheckpoint::open(p);
    EXPECT_EQ(c.source(), index_path);
    ASSERT_EQ(c.shards().size(), 2u);  // each shard opened once
    EXPECT_EQ(c.tensors().size(), 3u);
    EXPECT_EQ(c.tensor("model.embed_tokens.weight").to_f32(), (std::vector<float>{1, 2, 3, 4}));
    EXPECT_EQ(c.tensor("lm_head.weight").to_f32(), (std::vector<float>{7, 8}));
    EXPECT_EQ(std::string(c.tensor("lm_head.weight").source),
              (dir.path() / "model-00002-of-00002.safetensors").string());
    EXPECT_EQ(c.total_bytes(), 16 + 8 + 4);
    EXPECT_EQ(c.find_tensor("missing"), nullptr);
  }
}

// The error of opening a checkpoint.
std::pair<ErrorKind, std::string> checkpoint_error(const std::string& path) {
  try {
    SafetensorsCheckpoint::open(path);
  } catch (const Error& e) {
    return {e.kind(), e.what()};
  }
  return {ErrorKind::invalid_argument, "no error"};
}

TEST(safetensors, malformed_index) {
  TempDir dir;
  StWriter a;
  const float x[2] = {1, 2};
  a.add("w", "F32", {2}, x, sizeof x);
  dir.write("s1.safetensors", a.bytes());
  dir.write("s2.safetensors", a.bytes());  // the same tensor again
  auto expect = [&](const std::string& index_text, ErrorKind kind, const std::string& fragment) {
    const std::string p = dir.write("model.safetensors.index.json", index_text);
    const auto [k, msg] = checkpoint_error(p);
    EXPECT_EQ(k, kind) << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << "expected '" << fragment << "' in: " << msg;
    EXPECT_NE(msg.find("model.safetensors.index.json"), std::string::npos) << msg;
  };
  expect("{\"weight_map\": {", ErrorKind::format, "malformed index JSON");
  expect("[]", ErrorKind::format, "not a JSON object");
  expect("{\"metadata\": {}}", ErrorKind::format, "weight_map");
  expect("{\"weight_map\": {}}", ErrorKind::format, "empty");
  expect("{\"weight_map\": {\"w\": 3}}", ErrorKind::format, "must be a file name");
  expect("{\"weight_map\": {\"w\": \"../s1.safetensors\"}}", ErrorKind::format, "not a plain file name");
  expect("{\"weight_map\": {\"v\": \"s1.safetensors\"}}", ErrorKind::format, "does not contain it");
  expect("{\"weight_map\": {\"w\": \"s1.safetensors\", \"x\": \"s2.safetensors\"}}", ErrorKind::format,
         "in two shards");
  {
    const std::string p = dir.write("model.safetensors.index.json", "{\"weight_map\": {\"w\": \"gone.safetensors\"}}");
    const auto [k, msg] = checkpoint_error(p);
    EXPECT_EQ(k, ErrorKind::io) << msg;
    EXPECT_NE(msg.find("gone.safetensors"), std::string::npos) << msg;
  }
  {
    TempDir empty;
    const auto [k, msg] = checkpoint_error(empty.path().string());
    EXPECT_EQ(k, ErrorKind::io) << msg;
    EXPECT_NE(msg.find("no model.safetensors"), std::string::npos) << msg;
  }
}

TEST(safetensors, unsupported_dtype_names_tensor_and_dtype) {
  StWriter w;
  const int64_t v[2] = {1, 2};
  w.add("position_ids", "I64", {2}, v, sizeof v);
  try {
    SafetensorsFile::from_bytes(w.bytes(), "bad.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::unsupported);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("position_ids"), std::string::npos) << msg;
    EXPECT_NE(msg.find("I64"), std::string::npos) << msg;
    EXPECT_NE(msg.find("bad.safetensors"), std::string::npos) << msg;
  }
  StWriter u;
  u.add("q", "Q4_Z", {2}, v, 2);
  EXPECT_FORMAT_ERROR(u.bytes(), "unknown dtype 'Q4_Z'");
}

TEST(safetensors, malformed_files) {
  const std::vector<uint8_t> data(64, 0);
  auto hdr = [&](const std::string& h) { return StWriter::raw(h, data); };
  auto tensor = [](const std::string& fields) { return "{\"t\": {" + fields + "}}"; };

  EXPECT_FORMAT_ERROR(std::vector<uint8_t>{}, "too short");
  EXPECT_FORMAT_ERROR((std::vector<uint8_t>{1, 0, 0}), "too short");
  EXPECT_FORMAT_ERROR(StWriter::raw("{}", {}, uint64_t(1) << 40), "absurd safetensors header length");
  EXPECT_FORMAT_ERROR(StWriter::raw("{}", {}, ~uint64_t(0)), "absurd");
  EXPECT_FORMAT_ERROR(StWriter::raw("{\"a\": 1}", {}, 1000), "truncated");
  EXPECT_FORMAT_ERROR(StWriter::raw("", {}), "too short for a JSON object");
  EXPECT_FORMAT_ERROR(hdr("{\"t\": "), "malformed safetensors header JSON");
  EXPECT_FORMAT_ERROR(hdr("not json at all"), "malformed");
  EXPECT_FORMAT_ERROR(hdr("[1, 2]"), "not an object");
  EXPECT_FORMAT_ERROR(hdr("{\"__metadata__\": [1]}"), "__metadata__");
  EXPECT_FORMAT_ERROR(hdr("{\"__metadata__\": {\"a\": 1}}"), "__metadata__['a']");
  EXPECT_FORMAT_ERROR(hdr("{\"t\": 5}"), "tensor 't'");
  EXPECT_FORMAT_ERROR(hdr("{\"\": {}}"), "empty name");
  EXPECT_FORMAT_ERROR(hdr(tensor("\"shape\": [2], \"data_offsets\": [0, 8]")), "dtype");
  EXPECT_FORMAT_ERROR(hdr(tensor("\"dtype\": 3, \"shape\": [2], \"data_offsets\": [0, 8]")), "dtype");
  EXPECT_FORMAT_ERROR(hdr(tensor("\"dtype\": \"F32\", \"data_offsets\": [0, 8]")), "shape");
  EXPECT_FORMAT_ERROR(hdr(tensor("\"dtype\": \"F32\", \"shape\": 2, \"data_offsets\": [0, 8]")), "shape");
  EXPECT_FORMAT_ERROR(hdr(tensor("\"dtype\": \"F32\", \"shape\": [2]")), "data_offsets");
  EXPECT_FORMAT_ERROR(hdr(tensor("\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0]")), "data_offsets");
  EXPECT_FORMAT_ERROR(hdr(tensor("\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]")), "non-negative");
  EXPECT_FORMAT_ERROR(hdr(tensor("\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 8]")), "non-negative");
  EXPECT_FORMAT_ERROR(hdr(tensor("\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]")),
                      "dimensions");
  EXPECT_FORMAT_ERROR(hdr(tensor("\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, -8]")), "non-negative");
  EXPECT_FORMAT_ERROR(hdr(tensor("\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 0]")), "end before begin");
  // Out of the data buffer (64 bytes) / truncated.
  EXPECT_FORMAT_ERROR(hdr(tensor("\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [60, 68]")),
                      "out of the data buffer");
  EXPECT_FORMAT_ERROR(hdr(tensor("\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 18446744073709551615]")),
                      "too large");
  // Byte count that does not match the shape.
  EXPECT_FORMAT_ERROR(hdr(tensor("\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]")), "needs 12");
  EXPECT_FORMAT_ERROR(hdr(tensor("\"dtype\": \"BF16\", \"shape\": [2, 2], \"data_offsets\": [0, 16]")), "needs 8");
  // Absurd dimensions whose product overflows.
  EXPECT_FORMAT_ERROR(
      hdr(tensor("\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 16], \"data_offsets\": [0, 0]")),
      "absurd shape");
  EXPECT_FORMAT_ERROR(hdr(tensor("\"dtype\": \"F16\", \"shape\": [9223372036854775807, 2], \"data_offsets\": [0, 8]")),
                      "absurd shape");
  // Overlapping tensors.
  EXPECT_FORMAT_ERROR(hdr("{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
                          " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}"),
                      "overlap");
  EXPECT_FORMAT_ERROR(hdr("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                          " \"b\": {\"dtype\": \"F16\", \"shape\": [4], \"data_offsets\": [0, 8]}}"),
                      "overlap");
  // Adjacent tensors and a hole are fine.
  EXPECT_NO_THROW(SafetensorsFile::from_bytes(
      hdr("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
          " \"b\": {\"dtype\": \"F16\", \"shape\": [4], \"data_offsets\": [8, 16]},"
          " \"c\": {\"dtype\": \"BF16\", \"shape\": [1], \"data_offsets\": [20, 22]}}"),
      "ok"));
}

TEST(safetensors, io_errors) {
  try {
    SafetensorsFile::open("/nonexistent/dir/model.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/model.safetensors"), std::string::npos);
  }
  TempDir dir;
  try {
    SafetensorsFile::open(dir.path().string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
  }
}

// Every truncation of a valid file is rejected with a format error, never a crash.
TEST(safetensors, every_truncation_rejected) {
  const auto bytes = three_dtypes().bytes();
  for (size_t n = 0; n < bytes.size(); ++n) {
    const std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + std::ptrdiff_t(n));
    const auto [kind, msg] = error_of(cut);
    ASSERT_EQ(kind, ErrorKind::format) << n << ": " << msg;
  }
  // Random byte flips in the header: an error of some kind or a valid parse, never a crash.
  auto flipped = bytes;
  uint32_t seed = 12345;
  for (int trial = 0; trial < 2000; ++trial) {
    flipped = bytes;
    for (int k = 0; k < 3; ++k) {
      seed = seed * 1664525u + 1013904223u;
      flipped[(seed >> 8) % std::min<size_t>(bytes.size(), 300)] ^= uint8_t(seed >> 24);
    }
    try {
      const auto f = SafetensorsFile::from_bytes(flipped, "fuzz");
      for (const auto& t : f.tensors())
        for (int64_t i = 0; i < t.n_elements; ++i) (void)t.at(i);
    } catch (const Error&) {
    }
  }
}

}  // namespace
}  // namespace adamas
