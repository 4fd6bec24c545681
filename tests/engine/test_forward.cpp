// The forward pass on a tiny random model against the fp64 reference, config and weight checks, cache behaviour.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/session.h"
#include "model/llama.h"
#include "tiny_model.h"

namespace adamas {
namespace {

using test::make_tiny_model;
using test::reference_logits;
using test::TinySpec;

LlamaModel load(const test::TinyModel& m) { return LlamaModel::from_gguf(GgufFile::from_bytes(m.bytes, "tiny.gguf")); }

double max_abs_diff(std::span<const float> a, const std::vector<double>& b) {
  double d = 0;
  for (size_t i = 0; i < b.size(); ++i) d = std::max(d, std::abs(double(a[i]) - b[i]));
  return d;
}

const std::vector<int32_t> kTokens{3, 17, 5, 39, 0, 22, 8, 8, 30, 1, 12, 25};

TEST(forward, config_from_metadata) {
  const auto m = make_tiny_model({});
  const LlamaModel model = load(m);
  const ModelConfig& c = model.config();
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.ffn_dim, 96);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.n_rot, 16);
  EXPECT_EQ(c.vocab, 40);
  EXPECT_EQ(c.context_length, 64);
  EXPECT_EQ(c.rope_scaling, RopeScaling::none);
  EXPECT_FALSE(model.tied_embeddings());
  ASSERT_EQ(model.rope_inv_freq().size(), 8u);
  EXPECT_FLOAT_EQ(model.rope_inv_freq()[1], float(std::pow(10000.0, -2.0 / 16)));
}

// Prefill in chunks of 5, then decode steps: every step's logits match the fp64 reference (f32 cache).
TEST(forward, prefill_and_decode_match_fp64_reference) {
  for (bool tied : {false, true}) {
    TinySpec s;
    s.tied = tied;
    const auto m = make_tiny_model(s);
    const auto ref = reference_logits(m, kTokens);
    const LlamaModel model = load(m);
    EXPECT_EQ(model.tied_embeddings(), tied);
    EngineOptions o;
    o.kv_dtype = DType::f32;
    o.prefill_chunk = 5;
    o.attention.method = Method::full;
    Session session(model, o);
    const int64_t n_prefill = 7;
    auto logits = session.prefill(std::span(kTokens).first(n_prefill));
    EXPECT_LT(max_abs_diff(logits, ref[n_prefill - 1]), 2e-4);
    for (size_t t = n_prefill; t < kTokens.size(); ++t) {
      logits = session.decode(kTokens[t]);
      EXPECT_LT(max_abs_diff(logits, ref[t]), 2e-4) << "token " << t;
    }
    EXPECT_EQ(session.position(), int64_t(kTokens.size()));
  }
}

// Token-by-token prefill (chunk 1) equals a single chunk, and f16 K/V stays close to the reference.
TEST(forward, chunking_and_f16_cache) {
  const auto m = make_tiny_model({});
  const auto ref = reference_logits(m, kTokens);
  const LlamaModel model = load(m);
  EngineOptions o;
  Session f16(model, o);
  const auto l16 = f16.prefill(kTokens);
  EXPECT_LT(max_abs_diff(l16, ref.back()), 2e-2);
  o.kv_dtype = DType::f32;
  o.prefill_chunk = 1;
  Session one(model, o);
  one.prefill(kTokens);
  EXPECT_EQ(one.position(), int64_t(kTokens.size()));
  one.reset();
  EXPECT_EQ(one.position(), 0);
  const auto l1 = one.prefill(kTokens);
  EXPECT_LT(max_abs_diff(l1, ref.back()), 2e-4);
}

// With a budget covering the whole context, every sparse method gives the full-attention logits exactly; with a
// small budget the sparse methods run and differ only where they must.
TEST(forward, sparse_methods_with_budget_over_context_equal_full) {
  const auto m = make_tiny_model({});
  const LlamaModel model = load(m);
  auto run = [&](Method method, int64_t budget, int64_t dense_layers) {
    EngineOptions o;
    o.attention.method = method;
    o.attention.budget = budget;
    o.dense_layers = dense_layers;
    Session s(model, o);
    s.prefill(std::span(kTokens).first(4));
    std::vector<float> all;
    for (size_t t = 4; t < kTokens.size(); ++t) {
      auto l = s.decode(kTokens[t]);
      all.insert(all.end(), l.begin(), l.end());
    }
    return all;
  };
  const auto full = run(Method::full, 64, 0);
  for (Method method : {Method::adamas, Method::quest, Method::streaming}) {
    EXPECT_EQ(run(method, 64, 0), full) << method_name(method);
    const auto sparse = run(method, 5, 0);
    ASSERT_EQ(sparse.size(), full.size());
    for (float x : sparse) ASSERT_TRUE(std::isfinite(x));
  }
  // All layers dense: the method does not matter.
  EXPECT_EQ(run(Method::adamas, 5, 2), full);
}

// Qwen2 (NeoX rope over halves, q/k/v biases) and Llama with q/k/v biases: prefill and decode against fp64.
TEST(forward, qwen2_and_llama_biases_match_fp64_reference) {
  for (const char* arch : {"qwen2", "llama"}) {
    TinySpec s;
    s.arch = arch;
    s.qkv_bias = true;
    const auto m = make_tiny_model(s);
    const auto ref = reference_logits(m, kTokens);
    const LlamaModel model = load(m);
    EXPECT_EQ(model.config().architecture, arch);
    EXPECT_EQ(model.config().rope_type, std::string(arch) == "qwen2" ? RopeType::neox : RopeType::normal);
    EXPECT_EQ(model.layer(1).bk.size(), 32u);
    EngineOptions o;
    o.kv_dtype = DType::f32;
    o.prefill_chunk = 4;
    o.attention.method = Method::full;
    Session session(model, o);
    auto logits = session.prefill(std::span(kTokens).first(6));
    EXPECT_LT(max_abs_diff(logits, ref[5]), 2e-4) << arch;
    for (size_t t = 6; t < kTokens.size(); ++t) {
      logits = session.decode(kTokens[t]);
      EXPECT_LT(max_abs_diff(logits, ref[t]), 2e-4) << arch << " token " << t;
    }
  }
}

TEST(forward, linear_rope_scaling) {
  TinySpec s;
  s.rope_scaling = "linear";
  s.rope_factor = 4.0f;
  const auto m = make_tiny_model(s);
  const LlamaModel model = load(m);
  EXPECT_EQ(model.config().rope_scaling, RopeScaling::linear);
  EXPECT_FLOAT_EQ(model.rope_inv_freq()[0], 0.25f);
  EngineOptions o;
  o.kv_dtype = DType::f32;
  Session session(model, o);
  EXPECT_LT(max_abs_diff(session.prefill(kTokens), reference_logits(m, kTokens).back()), 2e-4);
}

TEST(forward, layer_ops) {
  // RMSNorm.
  const float x[4] = {1, -2, 3, -4}, w[4] = {1, 0.5f, 2, 1};
  float y[4];
  rms_norm(x, w, 4, 0.0f, y);
  const double r = 1.0 / std::sqrt((1 + 4 + 9 + 16) / 4.0);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[i], x[i] * r * w[i], 1e-6);
  // RoPE rotates adjacent pairs; position 0 is the identity; a partial rotation leaves the tail alone.
  float v[8] = {1, 0, 0, 1, 2, 3, 4, 5};
  apply_rope(v, 1, 8, 0, {1.0f, 0.5f});
  EXPECT_EQ(v[0], 1);
  EXPECT_EQ(v[3], 1);
  apply_rope(v, 1, 8, 1, {1.0f, 0.5f});
  EXPECT_NEAR(v[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(v[1], std::sin(1.0), 1e-6);
  EXPECT_NEAR(v[2], -std::sin(0.5), 1e-6);
  EXPECT_NEAR(v[3], std::cos(0.5), 1e-6);
  EXPECT_EQ(v[4], 2);
  EXPECT_EQ(v[7], 5);
  // NeoX rope rotates (x[i], x[i + pairs]): here (v0, v2) by 1 rad and (v1, v3) by 0.5 rad.
  float h[6] = {1, 0, 0, 1, 7, 9};
  apply_rope(h, 1, 6, 1, {1.0f, 0.5f}, RopeType::neox);
  EXPECT_NEAR(h[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(h[2], std::sin(1.0), 1e-6);
  EXPECT_NEAR(h[1], -std::sin(0.5), 1e-6);
  EXPECT_NEAR(h[3], std::cos(0.5), 1e-6);
  EXPECT_EQ(h[4], 7);
  EXPECT_EQ(h[5], 9);
  // SwiGLU.
  float g[2] = {0.0f, 2.0f};
  const float u[2] = {3.0f, 0.5f};
  swiglu(g, u, 2);
  EXPECT_NEAR(g[0], 0.0, 1e-7);
  EXPECT_NEAR(g[1], 2.0 / (1 + std::exp(-2.0)) * 0.5, 1e-6);
}

// matmul on Q8_0 weights (the integer path: 8-bit activations, rows x tokens tiles) for 1..13 tokens, odd sizes
// and strides, against fp64 with the activations as the quantizer rounded them.
TEST(forward, matmul_paths_match_fp64) {
  const int64_t rows = 37, cols = 96, blocks = cols / 32;
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> q(-127, 127);
  std::vector<uint8_t> data(size_t(rows * blocks * 34));
  for (int64_t b = 0; b < rows * blocks; ++b) {
    data[size_t(b * 34)] = 0x00, data[size_t(b * 34 + 1)] = 0x20;  // d = 2^-7 in f16
    for (int i = 0; i < 32; ++i) data[size_t(b * 34 + 2 + i)] = uint8_t(int8_t(q(rng)));
  }
  WeightMatrix w{"w", GgmlType::Q8_0, data.data(), rows, cols, blocks * 34};
  std::normal_distribution<float> nd;
  for (int64_t n : {1, 3, 8, 13}) {
    std::vector<float> x(size_t(n * (cols + 5))), y(size_t(n * (rows + 3)), -1.0f);
    for (float& v : x) v = nd(rng);
    matmul(w, x.data(), n, cols + 5, y.data(), rows + 3);
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_row(GgmlType::Q8_0, w.row(r), row.data(), cols);
      for (int64_t t = 0; t < n; ++t) {
        std::vector<BlockQ8> xq(static_cast<size_t>(blocks));
        quantize_row_q8_ref(x.data() + t * (cols + 5), xq.data(), cols);
        double ref = 0;
        for (int64_t c = 0; c < cols; ++c) ref += double(row[size_t(c)]) * xq[size_t(c / 32)].d * xq[size_t(c / 32)].qs[c % 32];
        EXPECT_NEAR(y[size_t(t * (rows + 3) + r)], ref, 1e-4) << "n " << n << " t " << t << " r " << r;
      }
    }
  }
}

// Several targets sharing one input (Q/K/V, gate/up): the same numbers as one matmul per target, for integer
// targets (one quantization, one loop over all rows) and for a mix with f32 weights (one matmul each).
TEST(forward, matmul_targets_equal_separate_matmuls) {
  const int64_t cols = 64, n = 5;
  std::mt19937 rng(9);
  std::normal_distribution<float> nd;
  std::vector<uint8_t> q8(size_t(21 * 2 * 34));
  for (size_t i = 0; i < q8.size(); ++i) q8[i] = uint8_t(i % 34 == 1 ? 0x20 : rng());  // f16 d in [2^-7, 2^-6)
  std::vector<float> f32(size_t(9 * cols));
  for (float& v : f32) v = nd(rng);
  const WeightMatrix a{"a", GgmlType::Q8_0, q8.data(), 21, cols, 2 * 34};
  const WeightMatrix b{"b", GgmlType::Q8_0, q8.data() + 5 * 68, 16, cols, 2 * 34};
  const WeightMatrix c{"c", GgmlType::F32, reinterpret_cast<const uint8_t*>(f32.data()), 9, cols, cols * 4};
  std::vector<float> x(size_t(n * cols));
  for (float& v : x) v = nd(rng);
  for (const WeightMatrix* second : {&b, &c}) {
    std::vector<float> ya(size_t(n * 21)), yb(size_t(n * second->rows)), ra(ya.size()), rb(yb.size());
    const MatmulTarget targets[] = {{&a, ya.data(), 21}, {second, yb.data(), second->rows}};
    matmul(targets, x.data(), n, cols);
    matmul(a, x.data(), n, cols, ra.data(), 21);
    matmul(*second, x.data(), n, cols, rb.data(), second->rows);
    EXPECT_EQ(ya, ra);
    EXPECT_EQ(yb, rb) << second->name;
  }
  const WeightMatrix narrow{"narrow", GgmlType::F32, reinterpret_cast<const uint8_t*>(f32.data()), 9, 32, 128};
  std::vector<float> y(size_t(n * 21));
  const MatmulTarget bad[] = {{&a, y.data(), 21}, {&narrow, y.data(), 9}};
  EXPECT_THROW(matmul(bad, x.data(), n, cols), Error);
}

template <class F>
void expect_error(F&& f, ErrorKind kind, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(forward, bad_models) {
  TinySpec s;
  s.arch = "gpt2";
  expect_error([&] { load(make_tiny_model(s)); }, ErrorKind::unsupported, "gpt2");
  s = {};
  s.arch = "qwen2";  // qwen2 requires the q/k/v biases
  s.skip_tensor = "blk.0.attn_k.bias";
  expect_error([&] { load(make_tiny_model(s)); }, ErrorKind::format, "blk.0.attn_k.bias");
  s = {};
  s.skip_tensor = "blk.1.ffn_up.weight";
  expect_error([&] { load(make_tiny_model(s)); }, ErrorKind::format, "blk.1.ffn_up.weight");
  s = {};
  s.bad_shape_tensor = "blk.0.attn_k.weight";
  expect_error([&] { load(make_tiny_model(s)); }, ErrorKind::format, "blk.0.attn_k.weight");
  s = {};
  s.rope_scaling = "yarn";
  expect_error([&] { load(make_tiny_model(s)); }, ErrorKind::unsupported, "yarn");
  s = {};
  s.heads = 3;  // 64 is not a multiple of 3
  s.kv_heads = 3;
  expect_error([&] { load(make_tiny_model(s)); }, ErrorKind::format, "head_count");
}

TEST(forward, bad_inputs) {
  const auto m = make_tiny_model({});
  const LlamaModel model = load(m);
  EngineOptions o;
  o.attention.budget = 0;
  expect_error([&] { Session(model, o); }, ErrorKind::invalid_argument, "budget");
  o = {};
  o.context = 65;
  expect_error([&] { Session(model, o); }, ErrorKind::invalid_argument, "context");
  o = {};
  o.dense_layers = -1;
  expect_error([&] { Session(model, o); }, ErrorKind::invalid_argument, "dense");
  o = {};
  o.context = 8;
  Session s(model, o);
  expect_error([&] { s.prefill(kTokens); }, ErrorKind::invalid_argument, "context");
  EXPECT_EQ(s.position(), 0);
  expect_error([&] { s.prefill({}); }, ErrorKind::invalid_argument, "no tokens");
  const std::vector<int32_t> bad{1, 40};
  expect_error([&] { s.prefill(bad); }, ErrorKind::invalid_argument, "token id 40");
  expect_error([&] { s.decode(-1); }, ErrorKind::invalid_argument, "token id -1");
  s.prefill(std::span(kTokens).first(8));
  expect_error([&] { s.decode(1); }, ErrorKind::invalid_argument, "full");
}

}  // namespace
}  // namespace adamas
