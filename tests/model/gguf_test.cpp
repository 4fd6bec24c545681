// GGUF reader on synthetic files (every metadata type, accessors, tensors, alignment) and on the real model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gguf_writer.h"
#include "model/gguf.h"
#include "model_paths.h"

namespace adamas {
namespace {

using test::GgufWriter;

// A file with one key of every type, arrays of several kinds, and two tensors.
std::vector<uint8_t> every_type_file(uint32_t version, uint32_t alignment) {
  GgufWriter w;
  w.header(version, 2, 21);
  w.key("u8", 0).raw<uint8_t>(200);
  w.key("i8", 1).raw<int8_t>(-100);
  w.key("u16", 2).raw<uint16_t>(60000);
  w.key("i16", 3).raw<int16_t>(-30000);
  w.key("u32", 4).raw<uint32_t>(4000000000u);
  w.key("i32", 5).raw<int32_t>(-2000000000);
  w.key("f32", 6).raw<float>(1.5f);
  w.key("bool", 7).raw<uint8_t>(1);
  w.key("string", 8).str("héllo");
  w.key("u64", 10).raw<uint64_t>(18000000000000000000ull);
  w.key("i64", 11).raw<int64_t>(-9000000000000000000ll);
  w.key("f64", 12).raw<double>(-2.25);
  w.key("empty_string", 8).str("");
  w.key("arr_u8", 9).raw<uint32_t>(0).raw<uint64_t>(3).raw<uint8_t>(1).raw<uint8_t>(2).raw<uint8_t>(255);
  w.key("arr_i16", 9).raw<uint32_t>(3).raw<uint64_t>(2).raw<int16_t>(-5).raw<int16_t>(7);
  w.key("arr_f32", 9).raw<uint32_t>(6).raw<uint64_t>(2).raw<float>(0.5f).raw<float>(-4.0f);
  w.key("arr_f64", 9).raw<uint32_t>(12).raw<uint64_t>(1).raw<double>(3.25);
  w.kv_strings("arr_str", {"a", "", "ccc"});
  w.key("arr_empty", 9).raw<uint32_t>(4).raw<uint64_t>(0);
  // An array of two arrays: [[1, 2], ["x"]].
  w.key("arr_arr", 9).raw<uint32_t>(9).raw<uint64_t>(2);
  w.raw<uint32_t>(5).raw<uint64_t>(2).raw<int32_t>(1).raw<int32_t>(2);
  w.raw<uint32_t>(8).raw<uint64_t>(1).str("x");
  w.kv_u32("general.alignment", alignment);
  // Tensors: an F32 [4, 2] and a Q8_0 [32] (one block).
  w.tensor_info("t.f32", {4, 2}, 0, 0);
  w.tensor_info("t.q8", {32}, 8, alignment);
  w.pad(alignment);
  float f[8];
  for (int i = 0; i < 8; ++i) f[i] = float(i) - 3.0f;
  w.data(f, sizeof f).pad(alignment);
  uint8_t block[34] = {};
  block[0] = 0x00, block[1] = 0x3c;  // d = 1.0 in f16
  for (int i = 0; i < 32; ++i) block[2 + i] = uint8_t(int8_t(i - 16));
  w.data(block, sizeof block);
  return w.bytes;
}

TEST(gguf, every_metadata_type_v2_and_v3) {
  for (uint32_t version : {2u, 3u}) {
    const auto bytes = every_type_file(version, 64);
    const GgufFile f = GgufFile::from_bytes(bytes);
    EXPECT_EQ(f.version(), version);
    EXPECT_EQ(f.metadata().size(), 21u);
    EXPECT_EQ(f.get_uint("u8"), 200u);
    EXPECT_EQ(f.get_int("i8"), -100);
    EXPECT_EQ(f.get_int("u16"), 60000);
    EXPECT_EQ(f.get_int("i16"), -30000);
    EXPECT_EQ(f.get_uint("u32"), 4000000000u);
    EXPECT_EQ(f.get_int("i32"), -2000000000);
    EXPECT_FLOAT_EQ(float(f.get_float("f32")), 1.5f);
    EXPECT_TRUE(f.get_bool("bool"));
    EXPECT_EQ(f.get_string("string"), "héllo");
    EXPECT_EQ(f.get_uint("u64"), 18000000000000000000ull);
    EXPECT_EQ(f.get_int("i64"), -9000000000000000000ll);
    EXPECT_DOUBLE_EQ(f.get_float("f64"), -2.25);
    EXPECT_EQ(f.get_string("empty_string"), "");
    EXPECT_EQ(f.get_int_array("arr_u8"), (std::vector<int64_t>{1, 2, 255}));
    EXPECT_EQ(f.get_int_array("arr_i16"), (std::vector<int64_t>{-5, 7}));
    EXPECT_EQ(f.get_float_array("arr_f32"), (std::vector<double>{0.5, -4.0}));
    EXPECT_EQ(f.get_float_array("arr_f64"), (std::vector<double>{3.25}));
    EXPECT_EQ(f.get_string_array("arr_str"), (std::vector<std::string_view>{"a", "", "ccc"}));
    EXPECT_TRUE(f.get_int_array("arr_empty").empty());
    const auto& nested = f.get("arr_arr").as_array_array("arr_arr");
    ASSERT_EQ(nested.size(), 2u);
    EXPECT_EQ(nested[0].as_int_array(), (std::vector<int64_t>{1, 2}));
    EXPECT_EQ(nested[1].as_string_array(), (std::vector<std::string_view>{"x"}));
    EXPECT_EQ(f.get("arr_str").array_type(), GgufType::string);
    EXPECT_EQ(f.get("arr_u8").array_size(), 3u);

    EXPECT_EQ(f.alignment(), 64u);
    EXPECT_EQ(f.data_offset() % 64, 0u);
    ASSERT_EQ(f.tensors().size(), 2u);
    const GgufTensor& a = f.tensor("t.f32");
    EXPECT_EQ(a.type, GgmlType::F32);
    EXPECT_EQ(a.shape, (std::vector<int64_t>{4, 2}));
    EXPECT_EQ(a.n_elements, 8);
    EXPECT_EQ(a.n_bytes, 32);
    EXPECT_EQ(a.n_rows(), 2);
    EXPECT_EQ(a.row_bytes(), 16);
    float row1[4];
    std::memcpy(row1, a.row(1), sizeof row1);
    EXPECT_EQ(row1[0], 1.0f);
    EXPECT_EQ(row1[3], 4.0f);
    const GgufTensor& q = f.tensor("t.q8");
    EXPECT_EQ(q.type, GgmlType::Q8_0);
    EXPECT_EQ(q.n_bytes, 34);
    EXPECT_EQ(q.offset, 64u);
    EXPECT_EQ(q.data, a.data + 64);
    EXPECT_EQ(f.find_tensor("nope"), nullptr);
  }
}

template <class F>
void expect_format_error(F&& f, std::string_view needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected a format error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(gguf, typed_accessors_name_the_key_on_errors) {
  const auto bytes = every_type_file(3, 32);
  const GgufFile f = GgufFile::from_bytes(bytes);
  expect_format_error([&] { (void)f.get_string("no.such.key"); }, "missing metadata key 'no.such.key'");
  expect_format_error([&] { (void)f.get_string("u32"); }, "u32: expected a string, found uint32");
  expect_format_error([&] { (void)f.get_int("string"); }, "string: expected an integer, found string");
  expect_format_error([&] { (void)f.get_float("i32"); }, "expected a float");
  expect_format_error([&] { (void)f.get_bool("u8"); }, "expected a bool");
  expect_format_error([&] { (void)f.get_uint("i8"); }, "non-negative");
  expect_format_error([&] { (void)f.get_int("u64"); }, "does not fit in int64");
  expect_format_error([&] { (void)f.get_string_array("arr_u8"); }, "expected an array of strings, found array of uint8");
  expect_format_error([&] { (void)f.get_int_array("arr_f32"); }, "expected an array of integers");
  expect_format_error([&] { (void)f.get_float_array("u8"); }, "expected an array");
  expect_format_error([&] { (void)f.tensor("missing.weight"); }, "missing tensor 'missing.weight'");
  EXPECT_EQ(f.get_int_or("no.such.key", 7), 7);
  EXPECT_EQ(f.get_string_or("string", "x"), "héllo");
  expect_format_error([&] { (void)f.get_int_or("string", 1); }, "expected an integer");
}

TEST(gguf, default_alignment_and_no_tensors) {
  GgufWriter w;
  w.header(3, 0, 1).kv_str("general.architecture", "llama");
  const GgufFile f = GgufFile::from_bytes(w.bytes);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
}

TEST(gguf, file_on_disk_and_move) {
  const auto bytes = every_type_file(3, 32);
  const auto path = std::filesystem::temp_directory_path() / "adamas_gguf_test.gguf";
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  GgufFile f = GgufFile::open(path.string());
  GgufFile g = std::move(f);
  EXPECT_EQ(g.get_string("string"), "héllo");
  EXPECT_EQ(g.tensor("t.q8").data[2], uint8_t(int8_t(-16)));
  EXPECT_EQ(g.file_size(), bytes.size());
  std::filesystem::remove(path);
  try {
    (void)GgufFile::open("/nonexistent/dir/model.gguf");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/model.gguf"), std::string::npos);
  }
}

TEST(gguf, real_model_metadata_and_tensors) {
  const std::string path = test::model_path();
  if (path.empty()) GTEST_SKIP() << test::kNoModelMessage;
  const GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("llama.block_count"), 30);
  EXPECT_EQ(f.get_int("llama.embedding_length"), 576);
  EXPECT_EQ(f.get_int("llama.attention.head_count"), 9);
  EXPECT_EQ(f.get_int("llama.attention.head_count_kv"), 3);
  EXPECT_NEAR(f.get_float("llama.rope.freq_base"), 100000.0, 1e-3);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens").size(), 49152u);
  EXPECT_EQ(f.tensors().size(), 272u);
  const GgufTensor& emb = f.tensor("token_embd.weight");
  EXPECT_EQ(emb.type, GgmlType::Q8_0);
  EXPECT_EQ(emb.shape, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(f.tensor("blk.0.attn_q.weight").type, GgmlType::Q4_1);
  EXPECT_EQ(f.tensor("blk.29.ffn_norm.weight").type, GgmlType::F32);
  for (const GgufTensor& t : f.tensors()) {
    EXPECT_LE(f.data_offset() + t.offset + uint64_t(t.n_bytes), f.file_size()) << t.name;
  }
}

}  // namespace
}  // namespace adamas
