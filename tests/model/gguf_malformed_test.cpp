// Every malformed GGUF file must raise adamas::Error(format) naming the problem: never a crash, never a huge
// allocation.
#include <gtest/gtest.h>

#include <limits>
#include <random>

#include "gguf_writer.h"
#include "model/gguf.h"

namespace adamas {
namespace {

using test::GgufWriter;

void expect_malformed(const std::vector<uint8_t>& bytes, std::string_view needle) {
  try {
    (void)GgufFile::from_bytes(bytes, "bad.gguf");
    ADD_FAILURE() << "parsed without error; expected '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.gguf"), std::string::npos) << e.what();
  }
}

// A valid file: two keys, one F32 tensor [8] at the end (every strict prefix is therefore invalid).
std::vector<uint8_t> valid_file() {
  GgufWriter w;
  w.header(3, 1, 2).kv_str("general.architecture", "llama").kv_strings("tokens", {"a", "bc"});
  w.tensor_info("w", {8}, 0, 0).pad(32);
  const float data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  w.data(data, sizeof data);
  return w.bytes;
}

// A file with one tensor whose info is written by `info` (offsets of later fields do not matter).
template <class F>
std::vector<uint8_t> one_tensor(F&& info, size_t data_bytes = 64) {
  GgufWriter w;
  w.header(3, 1, 0);
  info(w);
  w.pad(32);
  w.bytes.resize(w.bytes.size() + data_bytes, 0);
  return w.bytes;
}

TEST(gguf_malformed, valid_base_file_parses) { EXPECT_NO_THROW((void)GgufFile::from_bytes(valid_file())); }

TEST(gguf_malformed, every_truncation) {
  const auto bytes = valid_file();
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + std::ptrdiff_t(n));
    try {
      (void)GgufFile::from_bytes(cut, "bad.gguf");
      ADD_FAILURE() << "prefix of " << n << " bytes parsed";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::format) << e.what();
    }
  }
}

TEST(gguf_malformed, header) {
  expect_malformed({}, "too short for the magic");
  expect_malformed({'G', 'G'}, "too short");
  auto b = valid_file();
  b[0] = 'X';
  expect_malformed(b, "bad magic");
  for (uint32_t v : {0u, 1u, 4u, 0x03000000u}) {
    b = valid_file();
    std::memcpy(&b[4], &v, 4);
    expect_malformed(b, "unsupported GGUF version");
  }
  b = valid_file();
  b.resize(12);
  expect_malformed(b, "truncated: tensor count");
}

TEST(gguf_malformed, absurd_counts) {
  GgufWriter w;
  w.header(3, 0, std::numeric_limits<uint64_t>::max());
  expect_malformed(w.bytes, "metadata count");
  GgufWriter t;
  t.header(3, uint64_t(1) << 60, 0);
  expect_malformed(t.bytes, "tensor count");
  GgufWriter s;  // a key whose length is 2^63
  s.header(3, 0, 1).raw<uint64_t>(uint64_t(1) << 63).raw<uint32_t>(0).raw<uint64_t>(0);
  expect_malformed(s.bytes, "metadata key length");
  GgufWriter v;  // a string value longer than the file
  v.header(3, 0, 1).key("k", 8).raw<uint64_t>(1000).raw<uint64_t>(0);
  expect_malformed(v.bytes, "string value length 1000");
  GgufWriter a;  // an array of 2^62 uint32
  a.header(3, 0, 1).key("k", 9).raw<uint32_t>(4).raw<uint64_t>(uint64_t(1) << 62).raw<uint64_t>(0);
  expect_malformed(a.bytes, "claims 4611686018427387904 elements");
  GgufWriter as;  // an array of strings whose count exceeds what the bytes can hold
  as.header(3, 0, 1).key("k", 9).raw<uint32_t>(8).raw<uint64_t>(5).str("x");
  expect_malformed(as.bytes, "claims 5 elements");
  GgufWriter ov;  // count * element size overflows 64 bits
  ov.header(3, 0, 1).key("k", 9).raw<uint32_t>(12).raw<uint64_t>(uint64_t(1) << 61).raw<uint64_t>(0);
  expect_malformed(ov.bytes, "elements");
}

TEST(gguf_malformed, metadata_values) {
  GgufWriter w;
  w.header(3, 0, 1).key("k", 13).raw<uint64_t>(0);
  expect_malformed(w.bytes, "unknown value type 13");
  GgufWriter e;
  e.header(3, 0, 1).key("k", 9).raw<uint32_t>(99).raw<uint64_t>(0);
  expect_malformed(e.bytes, "unknown element type 99");
  GgufWriter b;
  b.header(3, 0, 1).key("flag", 7).raw<uint8_t>(2);
  expect_malformed(b.bytes, "bool value 2");
  GgufWriter d;
  d.header(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2);
  expect_malformed(d.bytes, "duplicate metadata key 'k'");
  GgufWriter n;  // arrays nested 9 deep
  n.header(3, 0, 1).key("deep", 9);
  for (int i = 0; i < 9; ++i) n.raw<uint32_t>(9).raw<uint64_t>(1);
  n.raw<uint32_t>(0).raw<uint64_t>(0);
  n.bytes.resize(n.bytes.size() + 64, 0);
  expect_malformed(n.bytes, "nest deeper");
}

TEST(gguf_malformed, alignment) {
  GgufWriter w;
  w.header(3, 0, 1).kv_u32("general.alignment", 24);
  expect_malformed(w.bytes, "not a power of two");
  GgufWriter z;
  z.header(3, 0, 1).kv_u32("general.alignment", 0);
  expect_malformed(z.bytes, "not a power of two");
  GgufWriter t;
  t.header(3, 0, 1).kv_str("general.alignment", "32");
  expect_malformed(t.bytes, "general.alignment must be a uint32");
}

TEST(gguf_malformed, tensor_infos) {
  expect_malformed(one_tensor([](GgufWriter& w) { w.tensor_info("w", {}, 0, 0); }), "has 0 dimensions");
  expect_malformed(one_tensor([](GgufWriter& w) { w.tensor_info("w", {1, 1, 1, 1, 1}, 0, 0); }),
                   "has 5 dimensions");
  expect_malformed(one_tensor([](GgufWriter& w) { w.tensor_info("w", {4, 0}, 0, 0); }), "dimension 1 is 0");
  expect_malformed(one_tensor([](GgufWriter& w) { w.tensor_info("w", {uint64_t(1) << 63}, 0, 0); }),
                   "dimension 0 is");
  expect_malformed(one_tensor([](GgufWriter& w) { w.tensor_info("w", {1u << 31, 1u << 31, 1u << 31}, 0, 0); }),
                   "element count overflows");
  expect_malformed(one_tensor([](GgufWriter& w) { w.tensor_info("w", {uint64_t(1) << 62, 2}, 0, 0); }),
                   "element count overflows");
  expect_malformed(one_tensor([](GgufWriter& w) { w.tensor_info("w", {uint64_t(1) << 62}, 0, 0); }),
                   "byte size overflows");
  expect_malformed(one_tensor([](GgufWriter& w) { w.tensor_info("w", {8}, 4, 0); }), "unknown ggml type 4");
  expect_malformed(one_tensor([](GgufWriter& w) { w.tensor_info("w", {8}, 1000, 0); }), "unknown ggml type 1000");
  expect_malformed(one_tensor([](GgufWriter& w) { w.tensor_info("w", {16}, 2, 0); }),
                   "not a multiple of the Q4_0 block size 32");
  expect_malformed(one_tensor([](GgufWriter& w) { w.tensor_info("", {8}, 0, 0); }), "empty name");
  expect_malformed(one_tensor([](GgufWriter& w) { w.tensor_info("w", {8}, 0, 16); }), "not a multiple of the alignment");
  expect_malformed(one_tensor([](GgufWriter& w) { w.tensor_info("w", {32}, 0, 0); }, 64), "outside the data section");
  expect_malformed(one_tensor([](GgufWriter& w) { w.tensor_info("w", {8}, 0, 64); }, 64), "outside the data section");
  expect_malformed(one_tensor([](GgufWriter& w) { w.tensor_info("w", {8}, 0, ~uint64_t(31)); }),
                   "outside the data section");
  GgufWriter d;
  d.header(3, 2, 0).tensor_info("w", {8}, 0, 0).tensor_info("w", {8}, 0, 32).pad(32);
  d.bytes.resize(d.bytes.size() + 64, 0);
  expect_malformed(d.bytes, "duplicate tensor name 'w'");
}

// Random byte edits of a valid file: either a clean parse or a format error, nothing else.
TEST(gguf_malformed, random_mutations) {
  const auto base = valid_file();
  std::mt19937 rng(42);
  int errors = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    auto b = base;
    const int edits = 1 + int(rng() % 4);
    for (int k = 0; k < edits; ++k) {
      const size_t at = rng() % b.size();
      switch (rng() % 3) {
        case 0: b[at] = uint8_t(rng()); break;
        case 1: b[at] ^= uint8_t(1u << (rng() % 8)); break;
        default: b[at] = (rng() % 2) ? 0xFF : 0x00; break;
      }
    }
    if (rng() % 4 == 0) b.resize(rng() % b.size());
    try {
      const GgufFile f = GgufFile::from_bytes(b);
      for (const auto& [key, value] : f.metadata()) (void)key, (void)value.type();
    } catch (const Error& e) {
      ASSERT_EQ(e.kind(), ErrorKind::format) << e.what();
      ++errors;
    }
  }
  EXPECT_GT(errors, 100);
}

}  // namespace
}  // namespace adamas
