// Weight types: hand-built blocks with known values, blocks dequantized by gguf-py (fixture), vec_dot against
// dot(dequantize), and every tensor of the real model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "core/dtype.h"
#include "model/gguf.h"
#include "model/quant.h"
#include "model_paths.h"

namespace adamas {
namespace {

void put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

std::vector<float> dequant(GgmlType type, const std::vector<uint8_t>& raw, int64_t n) {
  std::vector<float> out(size_t(n), NAN);
  dequantize_row(type, raw.data(), out.data(), n);
  return out;
}

TEST(quant, q4_1_hand_built_block) {
  std::vector<uint8_t> b(20);
  put_f16(&b[0], 0.5f);
  put_f16(&b[2], -1.0f);
  for (int j = 0; j < 16; ++j) b[4 + j] = uint8_t(j | ((15 - j) << 4));
  const auto y = dequant(GgmlType::Q4_1, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.5f * float(j) - 1.0f) << j;
    EXPECT_EQ(y[j + 16], 0.5f * float(15 - j) - 1.0f) << j;
  }
}

TEST(quant, q4_0_and_q8_0_hand_built_blocks) {
  std::vector<uint8_t> b(18);
  put_f16(&b[0], 2.0f);
  for (int j = 0; j < 16; ++j) b[2 + j] = uint8_t(j | ((15 - j) << 4));
  auto y = dequant(GgmlType::Q4_0, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 2.0f * float(j - 8));
    EXPECT_EQ(y[j + 16], 2.0f * float(7 - j));
  }
  std::vector<uint8_t> c(34);
  put_f16(&c[0], 0.25f);
  for (int j = 0; j < 32; ++j) c[2 + j] = uint8_t(int8_t(j - 16));
  y = dequant(GgmlType::Q8_0, c, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 0.25f * float(j - 16));
}

TEST(quant, k_quants_hand_built_blocks) {
  // Q4_K: sub-block 0 has scale 1 / min 3; sub-block 4 uses the packed high bits: scale 37, min 19.
  std::vector<uint8_t> k4(144, 0);
  put_f16(&k4[0], 1.0f);
  put_f16(&k4[2], 0.5f);
  uint8_t* sc = &k4[4];
  sc[0] = 1 | (2 << 6);    // scale 0 = 1; high bits of scale 4 = 2
  sc[4] = 3 | (1 << 6);    // min 0 = 3; high bits of min 4 = 1
  sc[8] = 5 | (3 << 4);    // scale 4 low = 5, min 4 low = 3
  for (int i = 0; i < 128; ++i) k4[16 + i] = 0x7A;  // low nibble 10, high nibble 7
  auto y = dequant(GgmlType::Q4_K, k4, 256);
  EXPECT_EQ(y[0], 1.0f * 10 - 0.5f * 3);
  EXPECT_EQ(y[31], 1.0f * 10 - 0.5f * 3);
  EXPECT_EQ(y[32], 0.0f);  // sub-block 1: scale 0, min 0
  EXPECT_EQ(y[128], 37.0f * 10 - 0.5f * 19);

  // Q5_K: sub-block 0 scale 3, min 0; element 0 has nibble 15 and its fifth bit set -> 31.
  std::vector<uint8_t> k5(176, 0);
  put_f16(&k5[0], 1.0f);
  put_f16(&k5[2], 0.0f);
  k5[4] = 3;
  k5[16] = 0x01;       // qh[0] bit 0: fifth bit of element 0
  k5[48] = 0x0F;       // qs[0] low nibble
  y = dequant(GgmlType::Q5_K, k5, 256);
  EXPECT_EQ(y[0], 93.0f);
  EXPECT_EQ(y[1], 0.0f);

  // Q6_K: element 0 = d * scales[0] * (q - 32) with q = 5 | (2 << 4) = 37.
  std::vector<uint8_t> k6(210, 0);
  k6[0] = 0x05;        // ql[0]
  k6[128] = 0x02;      // qh[0] bits 0-1
  k6[192] = 2;         // scales[0]
  put_f16(&k6[208], 1.0f);
  y = dequant(GgmlType::Q6_K, k6, 256);
  EXPECT_EQ(y[0], 10.0f);
  EXPECT_EQ(y[1], -64.0f);  // q = 0 -> -32, scale 2
}

TEST(quant, plain_types) {
  std::vector<uint8_t> h(8), bf(8), f(16);
  const float v[4] = {1.0f, -2.5f, 0.125f, 65504.0f};
  for (int i = 0; i < 4; ++i) {
    put_f16(&h[2 * i], v[i]);
    const uint16_t b = f32_to_bf16(v[i]);
    std::memcpy(&bf[2 * i], &b, 2);
  }
  std::memcpy(f.data(), v, 16);
  EXPECT_EQ(dequant(GgmlType::F16, h, 4), std::vector<float>(v, v + 4));
  EXPECT_EQ(dequant(GgmlType::F32, f, 4), std::vector<float>(v, v + 4));
  const auto b = dequant(GgmlType::BF16, bf, 4);
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], -2.5f);
  EXPECT_EQ(b[3], 65536.0f);  // bf16 rounds 65504 up
}

TEST(quant, blocks_match_gguf_py) {
  std::ifstream in(test::fixture_path("quant_blocks.json"));
  ASSERT_TRUE(in) << "missing fixture quant_blocks.json (scripts/make-tokenizer-fixtures)";
  const auto doc = nlohmann::json::parse(in);
  const std::map<std::string, GgmlType> types = {{"Q4_0", GgmlType::Q4_0}, {"Q4_1", GgmlType::Q4_1},
                                                 {"Q8_0", GgmlType::Q8_0}, {"Q4_K", GgmlType::Q4_K},
                                                 {"Q5_K", GgmlType::Q5_K}, {"Q6_K", GgmlType::Q6_K}};
  int checked = 0;
  for (const auto& c : doc["cases"]) {
    const GgmlType type = types.at(c["type"].get<std::string>());
    const std::string hex = c["hex"];
    std::vector<uint8_t> raw(hex.size() / 2);
    for (size_t i = 0; i < raw.size(); ++i) raw[i] = uint8_t(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
    const auto expected = c["values"].get<std::vector<float>>();
    const auto y = dequant(type, raw, int64_t(expected.size()));
    for (size_t i = 0; i < y.size(); ++i)
      ASSERT_NEAR(y[i], expected[i], 1e-6f * std::max(1.0f, std::fabs(expected[i]))) << c["type"] << " " << i;
    ++checked;
  }
  EXPECT_EQ(checked, 6);
}

// Random blocks with sane f16 scale fields (offsets per type), for the vec_dot checks.
std::vector<uint8_t> random_row(GgmlType type, int64_t n, std::mt19937& rng) {
  const GgmlTypeInfo& info = ggml_type_info(type);
  std::vector<uint8_t> raw(size_t(ggml_row_bytes(type, n)));
  for (auto& b : raw) b = uint8_t(rng());
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<int> f16_fields;
  switch (type) {
    case GgmlType::F32:
      for (int64_t i = 0; i < n; ++i) { const float v = u(rng); std::memcpy(&raw[4 * i], &v, 4); }
      return raw;
    case GgmlType::F16:
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = type == GgmlType::F16 ? f32_to_f16(u(rng)) : f32_to_bf16(u(rng));
        std::memcpy(&raw[2 * i], &h, 2);
      }
      return raw;
    case GgmlType::Q4_0: case GgmlType::Q8_0: f16_fields = {0}; break;
    case GgmlType::Q4_1: case GgmlType::Q4_K: case GgmlType::Q5_K: f16_fields = {0, 2}; break;
    case GgmlType::Q6_K: f16_fields = {208}; break;
    default: break;
  }
  for (int64_t b = 0; b < n / info.block_size; ++b)
    for (int off : f16_fields) put_f16(&raw[size_t(b * info.type_size + off)], 0.05f * u(rng));
  return raw;
}

TEST(quant, vec_dot_matches_dequantized_dot) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (GgmlType type : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0,
                        GgmlType::Q4_1, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    for (int64_t n : {256, 768, 1536}) {
      const auto raw = random_row(type, n, rng);
      std::vector<float> x(static_cast<size_t>(n));
      for (auto& v : x) v = u(rng);
      const auto y = dequant(type, raw, n);
      double dot = 0, mag = 0;
      for (int64_t i = 0; i < n; ++i) {
        dot += double(y[size_t(i)]) * x[size_t(i)];
        mag += std::fabs(double(y[size_t(i)]) * x[size_t(i)]);
      }
      const double tol = 1e-5 * mag + 1e-6;
      EXPECT_NEAR(vec_dot(type, raw.data(), x.data(), n), dot, tol) << ggml_type_name(type) << " n=" << n;
      EXPECT_NEAR(vec_dot_ref(type, raw.data(), x.data(), n), dot, tol) << ggml_type_name(type) << " n=" << n;
    }
  }
}

// Random activations with a few outliers, as the real ones have (the quantizer's scale follows the block's max).
std::vector<float> random_activations(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = nd(rng);
  for (int64_t i = 0; i < n; i += 97) x[size_t(i)] *= 20.0f;
  return x;
}

constexpr GgmlType kIntegerTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0,
                                      GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

TEST(quant, q8_activations_round_to_nearest) {
  std::mt19937 rng(11);
  const int64_t n = 1536;
  const auto x = random_activations(n, rng);
  std::vector<BlockQ8> fast(size_t(n / 32)), ref(size_t(n / 32));
  quantize_row_q8(x.data(), fast.data(), n);
  quantize_row_q8_ref(x.data(), ref.data(), n);
  for (int64_t b = 0; b < n / 32; ++b) {
    const BlockQ8& q = fast[size_t(b)];
    // The SIMD and the scalar quantizer give the same blocks.
    ASSERT_EQ(q.d, ref[size_t(b)].d) << b;
    ASSERT_EQ(q.s, ref[size_t(b)].s) << b;
    ASSERT_EQ(0, std::memcmp(q.qs, ref[size_t(b)].qs, 32)) << b;
    // d = max|x| / 127 rounded to f16; every element within half a step (plus the f16 rounding of d, 2^-11).
    float amax = 0;
    int sum = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[size_t(b * 32 + i)])), sum += q.qs[i];
    EXPECT_NEAR(q.d, amax / 127.0f, amax / 127.0f * 1e-3f);
    EXPECT_FLOAT_EQ(q.s, q.d * float(sum));
    for (int i = 0; i < 32; ++i) ASSERT_LE(std::fabs(x[size_t(b * 32 + i)] - q.d * q.qs[i]), 0.57f * q.d) << i;
  }
  // An all-zero block has d = 0 and zero codes (no division by zero).
  std::vector<float> zero(32, 0.0f);
  BlockQ8 z;
  quantize_row_q8(zero.data(), &z, 32);
  EXPECT_EQ(z.d, 0.0f);
  EXPECT_EQ(z.s, 0.0f);
  for (int8_t v : z.qs) EXPECT_EQ(v, 0);
}

// Every integer kernel (the AVX2 tiles where built, and the portable scalar one) against the fp64 dot of the
// dequantized weights with the dequantized 8-bit activations: only float rounding may differ.
TEST(quant, integer_dots_match_fp64_of_dequantized_blocks) {
  std::mt19937 rng(5);
  for (GgmlType type : kIntegerTypes) {
    for (int64_t n : {256, 768, 1536}) {
      const int64_t rows = 7, tokens = 13, nb = n / 32, row_bytes = ggml_row_bytes(type, n);
      std::vector<uint8_t> w;
      for (int64_t r = 0; r < rows; ++r) {
        const auto row = random_row(type, n, rng);
        w.insert(w.end(), row.begin(), row.end());
      }
      // 13 tokens: the 8-, 4- and 1-token tiles. Tokens at a stride of nb + 3 blocks, outputs at rows + 2.
      std::vector<BlockQ8> xq(size_t(tokens * (nb + 3)));
      std::vector<std::vector<double>> xd(static_cast<size_t>(tokens));
      for (int64_t t = 0; t < tokens; ++t) {
        const auto x = random_activations(n, rng);
        BlockQ8* q = xq.data() + t * (nb + 3);
        quantize_row_q8(x.data(), q, n);
        for (int64_t i = 0; i < n; ++i) xd[size_t(t)].push_back(double(q[i / 32].d) * q[i / 32].qs[i % 32]);
      }
      std::vector<float> y(size_t(tokens * (rows + 2)), NAN);
      gemm_q8(type, w.data(), row_bytes, rows, xq.data(), nb + 3, tokens, n, y.data(), rows + 2);
      for (int64_t r = 0; r < rows; ++r) {
        const auto wd = dequant(type, std::vector<uint8_t>(w.begin() + r * row_bytes, w.begin() + (r + 1) * row_bytes), n);
        for (int64_t t = 0; t < tokens; ++t) {
          double dot = 0, mag = 0;
          for (int64_t i = 0; i < n; ++i) {
            dot += double(wd[size_t(i)]) * xd[size_t(t)][size_t(i)];
            mag += std::fabs(double(wd[size_t(i)]) * xd[size_t(t)][size_t(i)]);
          }
          const double tol = 2e-6 * mag + 1e-6;
          const void* row = w.data() + r * row_bytes;
          const BlockQ8* x = xq.data() + t * (nb + 3);
          const auto where = ::testing::Message() << ggml_type_name(type) << " n=" << n << " row " << r << " token " << t;
          ASSERT_NEAR(y[size_t(t * (rows + 2) + r)], dot, tol) << where;
          ASSERT_NEAR(vec_dot_q8(type, row, x, n), dot, tol) << where;
          ASSERT_NEAR(vec_dot_q8_ref(type, row, x, n), dot, tol) << where;
        }
      }
    }
  }
}

TEST(quant, integer_dot_errors) {
  std::vector<uint8_t> raw(1024);
  std::vector<BlockQ8> x(8);
  for (GgmlType type : kIntegerTypes) EXPECT_TRUE(has_q8_dot(type));
  for (GgmlType type : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q5_0}) {
    EXPECT_FALSE(has_q8_dot(type));
    try {
      (void)vec_dot_q8(type, raw.data(), x.data(), 64);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::unsupported);
      EXPECT_NE(std::string(e.what()).find(ggml_type_name(type)), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW((void)vec_dot_q8(GgmlType::Q4_K, raw.data(), x.data(), 128), Error);  // not a multiple of 256
  std::vector<float> f(48, 1.0f);
  EXPECT_THROW(quantize_row_q8(f.data(), x.data(), 48), Error);
}

TEST(quant, errors) {
  std::vector<uint8_t> raw(64);
  std::vector<float> out(64), x(64);
  try {
    dequantize_row(GgmlType::Q5_0, raw.data(), out.data(), 32);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::unsupported);
    EXPECT_NE(std::string(e.what()).find("Q5_0"), std::string::npos);
  }
  try {
    (void)vec_dot(GgmlType::Q4_1, raw.data(), x.data(), 48);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
  }
  EXPECT_THROW((void)ggml_type_info(GgmlType(5)), Error);
  EXPECT_EQ(ggml_type_info(uint32_t(31)), nullptr);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q4_1, 576), 18 * 20);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q6_K, 512), 420);
}

TEST(quant, real_model_every_tensor_dequantizes_to_finite_values) {
  const std::string path = test::model_path();
  if (path.empty()) GTEST_SKIP() << test::kNoModelMessage;
  const GgufFile f = GgufFile::open(path);
  std::vector<float> row, x;
  int64_t total = 0;
  for (const GgufTensor& t : f.tensors()) {
    row.resize(size_t(t.row_length()));
    x.assign(size_t(t.row_length()), 0.01f);
    for (int64_t r = 0; r < t.n_rows(); ++r) {
      dequantize_row(t.type, t.row(r), row.data(), t.row_length());
      for (float v : row) ASSERT_TRUE(std::isfinite(v)) << t.name << " row " << r;
      if (r % 997 == 0) {
        double dot = 0, mag = 0;
        for (size_t i = 0; i < row.size(); ++i) dot += double(row[i]) * x[i], mag += std::fabs(double(row[i]) * x[i]);
        ASSERT_NEAR(vec_dot(t.type, t.row(r), x.data(), t.row_length()), dot, 1e-5 * mag + 1e-6) << t.name;
      }
    }
    total += t.n_elements;
  }
  EXPECT_GT(total, 100'000'000);
}

}  // namespace
}  // namespace adamas
