// Test helper: a tiny random Llama or Qwen2 model written as a GGUF file in memory, and an fp64 reference forward
// pass (Qwen2: q/k/v biases and RoPE over the halves (x[i], x[i + d/2]) instead of adjacent pairs).
#pragma once

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gguf_writer.h"

namespace adamas::test {

struct TinySpec {
  std::string arch = "llama";         // "qwen2": NeoX rope, q/k/v biases
  int64_t layers = 2, dim = 64, ffn = 96, heads = 4, kv_heads = 2, vocab = 40, context = 64;
  float rope_base = 10000.0f;
  float eps = 1e-5f;
  bool tied = false;
  std::string skip_tensor;            // leave this tensor out
  std::string bad_shape_tensor;       // give this tensor a wrong row count
  std::string rope_scaling = "none";  // written when not "none"
  float rope_factor = 1.0f;
  bool qkv_bias = false;              // write blk.N.attn_{q,k,v}.bias (always for qwen2)
  uint32_t seed = 1;
  bool biased() const { return qkv_bias || arch == "qwen2"; }
  bool neox() const { return arch == "qwen2"; }
};

struct TinyModel {
  TinySpec spec;
  std::map<std::string, std::vector<float>> w;  // row-major [rows][cols]
  std::vector<uint8_t> bytes;
  int64_t head_dim() const { return spec.dim / spec.heads; }
};

inline TinyModel make_tiny_model(const TinySpec& s) {
  TinyModel m;
  m.spec = s;
  std::mt19937 rng(s.seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t hd = s.dim / s.heads, qd = s.heads * hd, kvd = s.kv_heads * hd;
  struct T {
    std::string name;
    int64_t cols, rows;
    float scale, offset;
  };
  std::vector<T> ts;
  ts.push_back({"token_embd.weight", s.dim, s.vocab, 1.0f, 0.0f});
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    ts.push_back({p + "attn_norm.weight", s.dim, 1, 0.2f, 1.0f});
    // Large enough Q/K that the attention is far from uniform.
    ts.push_back({p + "attn_q.weight", s.dim, qd, 0.4f, 0.0f});
    ts.push_back({p + "attn_k.weight", s.dim, kvd, 0.4f, 0.0f});
    ts.push_back({p + "attn_v.weight", s.dim, kvd, 0.3f, 0.0f});
    if (s.biased()) {  // large enough to move the scores and values visibly
      ts.push_back({p + "attn_q.bias", qd, 1, 0.5f, 0.0f});
      ts.push_back({p + "attn_k.bias", kvd, 1, 0.5f, 0.0f});
      ts.push_back({p + "attn_v.bias", kvd, 1, 0.5f, 0.0f});
    }
    ts.push_back({p + "attn_output.weight", qd, s.dim, 0.1f, 0.0f});
    ts.push_back({p + "ffn_norm.weight", s.dim, 1, 0.2f, 1.0f});
    ts.push_back({p + "ffn_gate.weight", s.dim, s.ffn, 0.2f, 0.0f});
    ts.push_back({p + "ffn_up.weight", s.dim, s.ffn, 0.2f, 0.0f});
    ts.push_back({p + "ffn_down.weight", s.ffn, s.dim, 0.1f, 0.0f});
  }
  ts.push_back({"output_norm.weight", s.dim, 1, 0.2f, 1.0f});
  if (!s.tied) ts.push_back({"output.weight", s.dim, s.vocab, 0.3f, 0.0f});
  std::vector<T> kept;
  for (const T& t : ts) {
    std::vector<float> v(size_t(t.cols * t.rows));
    for (float& x : v) x = t.offset + t.scale * nd(rng);
    m.w[t.name] = v;
    if (t.name != s.skip_tensor) kept.push_back(t);
  }

  GgufWriter g;
  std::vector<std::string> vocab;
  for (int64_t i = 0; i < s.vocab; ++i) vocab.push_back("t" + std::to_string(i));
  const bool scaled = s.rope_scaling != "none";
  g.header(3, kept.size(), 12 + (scaled ? 2 : 0));
  g.kv_str("general.architecture", s.arch);
  const std::string& a = s.arch;
  g.kv_u32(a + ".block_count", uint32_t(s.layers));
  g.kv_u32(a + ".embedding_length", uint32_t(s.dim));
  g.kv_u32(a + ".feed_forward_length", uint32_t(s.ffn));
  g.kv_u32(a + ".attention.head_count", uint32_t(s.heads));
  g.kv_u32(a + ".attention.head_count_kv", uint32_t(s.kv_heads));
  g.kv_u32(a + ".context_length", uint32_t(s.context));
  g.key(a + ".rope.freq_base", 6).raw<float>(s.rope_base);
  g.key(a + ".attention.layer_norm_rms_epsilon", 6).raw<float>(s.eps);
  g.kv_u32(a + ".vocab_size", uint32_t(s.vocab));
  g.kv_str("tokenizer.ggml.model", "gpt2");
  g.kv_strings("tokenizer.ggml.tokens", vocab);
  if (scaled) {
    g.kv_str(a + ".rope.scaling.type", s.rope_scaling);
    g.key(a + ".rope.scaling.factor", 6).raw<float>(s.rope_factor);
  }
  uint64_t offset = 0;
  for (const T& t : kept) {
    const int64_t rows = t.name == s.bad_shape_tensor ? t.rows + 1 : t.rows;
    if (t.rows == 1) g.tensor_info(t.name, {uint64_t(t.cols)}, 0, offset);
    else g.tensor_info(t.name, {uint64_t(t.cols), uint64_t(rows)}, 0, offset);
    offset += (uint64_t(t.cols * rows * 4) + 31) / 32 * 32;
  }
  g.pad(32);
  for (const T& t : kept) {
    std::vector<float> v = m.w[t.name];
    if (t.name == s.bad_shape_tensor) v.resize(v.size() + size_t(t.cols));
    g.data(v.data(), v.size() * 4).pad(32);
  }
  m.bytes = g.bytes;
  return m;
}

// The logits after each token of `tokens` (causal), in fp64, straight from the definitions.
inline std::vector<std::vector<double>> reference_logits(const TinyModel& m, const std::vector<int32_t>& tokens) {
  const TinySpec& s = m.spec;
  const int64_t hd = m.head_dim(), qd = s.heads * hd, kvd = s.kv_heads * hd, n = int64_t(tokens.size());
  auto W = [&](const std::string& name) -> const std::vector<float>& { return m.w.at(name); };
  auto matvec = [](const std::vector<float>& w, const std::vector<double>& x, int64_t rows) {
    const int64_t cols = int64_t(x.size());
    std::vector<double> y(size_t(rows), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) y[size_t(r)] += double(w[size_t(r * cols + c)]) * x[size_t(c)];
    return y;
  };
  auto norm = [&](const std::vector<double>& x, const std::vector<float>& w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double r = 1.0 / std::sqrt(ss / double(x.size()) + double(s.eps));
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * w[i];
    return y;
  };
  double scale_pos = 1.0;
  if (s.rope_scaling == "linear") scale_pos = 1.0 / s.rope_factor;
  auto rope = [&](std::vector<double>& v, int64_t heads, int64_t pos) {
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double theta = double(pos) * scale_pos * std::pow(double(s.rope_base), -2.0 * double(i) / double(hd));
        // Pair i: (2i, 2i + 1) for llama, (i, i + hd/2) for qwen2.
        double& a = v[size_t(h * hd + (s.neox() ? i : 2 * i))];
        double& b = v[size_t(h * hd + (s.neox() ? i + hd / 2 : 2 * i + 1))];
        const double a0 = a, b0 = b;
        a = a0 * std::cos(theta) - b0 * std::sin(theta);
        b = a0 * std::sin(theta) + b0 * std::cos(theta);
      }
  };
  std::vector<std::vector<std::vector<double>>> K(size_t(s.layers)), V(size_t(s.layers));
  std::vector<std::vector<double>> out;
  for (int64_t t = 0; t < n; ++t) {
    std::vector<double> x(size_t(s.dim));
    for (int64_t i = 0; i < s.dim; ++i) x[size_t(i)] = W("token_embd.weight")[size_t(tokens[size_t(t)] * s.dim + i)];
    for (int64_t l = 0; l < s.layers; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      auto h = norm(x, W(p + "attn_norm.weight"));
      auto q = matvec(W(p + "attn_q.weight"), h, qd);
      auto k = matvec(W(p + "attn_k.weight"), h, kvd);
      auto v = matvec(W(p + "attn_v.weight"), h, kvd);
      if (s.biased()) {
        for (int64_t i = 0; i < qd; ++i) q[size_t(i)] += W(p + "attn_q.bias")[size_t(i)];
        for (int64_t i = 0; i < kvd; ++i) k[size_t(i)] += W(p + "attn_k.bias")[size_t(i)];
        for (int64_t i = 0; i < kvd; ++i) v[size_t(i)] += W(p + "attn_v.bias")[size_t(i)];
      }
      rope(q, s.heads, t);
      rope(k, s.kv_heads, t);
      K[size_t(l)].push_back(k);
      V[size_t(l)].push_back(v);
      std::vector<double> att(size_t(qd), 0.0);
      for (int64_t head = 0; head < s.heads; ++head) {
        const int64_t kvh = head / (s.heads / s.kv_heads);
        std::vector<double> sc(size_t(t + 1));
        double mx = -1e300;
        for (int64_t j = 0; j <= t; ++j) {
          double d = 0;
          for (int64_t i = 0; i < hd; ++i) d += q[size_t(head * hd + i)] * K[size_t(l)][size_t(j)][size_t(kvh * hd + i)];
          sc[size_t(j)] = d / std::sqrt(double(hd));
          mx = std::max(mx, sc[size_t(j)]);
        }
        double sum = 0;
        for (double& e : sc) sum += e = std::exp(e - mx);
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t i = 0; i < hd; ++i)
            att[size_t(head * hd + i)] += sc[size_t(j)] / sum * V[size_t(l)][size_t(j)][size_t(kvh * hd + i)];
      }
      auto o = matvec(W(p + "attn_output.weight"), att, s.dim);
      for (int64_t i = 0; i < s.dim; ++i) x[size_t(i)] += o[size_t(i)];
      h = norm(x, W(p + "ffn_norm.weight"));
      auto g = matvec(W(p + "ffn_gate.weight"), h, s.ffn);
      auto u = matvec(W(p + "ffn_up.weight"), h, s.ffn);
      for (int64_t i = 0; i < s.ffn; ++i) g[size_t(i)] = g[size_t(i)] / (1.0 + std::exp(-g[size_t(i)])) * u[size_t(i)];
      auto d = matvec(W(p + "ffn_down.weight"), g, s.dim);
      for (int64_t i = 0; i < s.dim; ++i) x[size_t(i)] += d[size_t(i)];
    }
    auto h = norm(x, W("output_norm.weight"));
    out.push_back(matvec(W(s.tied ? "token_embd.weight" : "output.weight"), h, s.vocab));
  }
  return out;
}

}  // namespace adamas::test
