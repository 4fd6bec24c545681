// Llama-family configuration and weights from GGUF, and the layer operations of the forward pass.
#include "model/llama.h"

#include <omp.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "model/quant_blocks.h"

namespace adamas {

const char* rope_scaling_name(RopeScaling s) {
  switch (s) {
    case RopeScaling::none: return "none";
    case RopeScaling::linear: return "linear";
    case RopeScaling::freq_factors: return "freq_factors (rope_freqs.weight)";
  }
  return "?";
}

const char* rope_type_name(RopeType t) { return t == RopeType::neox ? "neox (halves)" : "normal (adjacent pairs)"; }

namespace {

// An integer metadata value of the architecture, checked to lie in [lo, hi].
int64_t arch_int(const GgufFile& f, const std::string& arch, const char* key, int64_t lo, int64_t hi,
                 const int64_t* fallback = nullptr) {
  const std::string k = arch + "." + key;
  const int64_t v = (fallback != nullptr && !f.has(k)) ? *fallback : f.get_int(k);
  ADAMAS_CHECK(lo <= v && v <= hi, ErrorKind::format, "{}: {} = {} (expected {}..{})", f.source(), k, v, lo, hi);
  return v;
}

}  // namespace

ModelConfig read_model_config(const GgufFile& f) {
  ModelConfig c;
  c.architecture = std::string(f.get_string("general.architecture"));
  ADAMAS_CHECK(c.architecture == "llama" || c.architecture == "qwen2", ErrorKind::unsupported,
               "{}: architecture '{}' is not supported (supported: llama, e.g. Llama 2/3, Mistral, SmolLM2; qwen2)",
               f.source(), c.architecture);
  // llama.cpp's llama_model_rope_type: LLM_ARCH_QWEN2 is NeoX, LLM_ARCH_LLAMA normal.
  c.rope_type = c.architecture == "qwen2" ? RopeType::neox : RopeType::normal;
  const std::string& a = c.architecture;
  c.name = std::string(f.get_string_or("general.name", ""));
  c.n_layers = arch_int(f, a, "block_count", 1, 4096);
  c.dim = arch_int(f, a, "embedding_length", 1, 1 << 17);
  c.ffn_dim = arch_int(f, a, "feed_forward_length", 1, 1 << 20);
  c.n_heads = arch_int(f, a, "attention.head_count", 1, 4096);
  c.n_kv_heads = arch_int(f, a, "attention.head_count_kv", 1, c.n_heads, &c.n_heads);
  ADAMAS_CHECK(c.n_heads % c.n_kv_heads == 0, ErrorKind::format, "{}: {} attention heads is not a multiple of {} KV heads",
               f.source(), c.n_heads, c.n_kv_heads);
  ADAMAS_CHECK(c.dim % c.n_heads == 0 || f.has(a + ".attention.key_length"), ErrorKind::format,
               "{}: embedding_length {} is not a multiple of head_count {}", f.source(), c.dim, c.n_heads);
  const int64_t default_head_dim = c.dim / c.n_heads;
  c.head_dim = arch_int(f, a, "attention.key_length", 1, 4096, &default_head_dim);
  const int64_t value_dim = arch_int(f, a, "attention.value_length", 1, 4096, &c.head_dim);
  ADAMAS_CHECK(value_dim == c.head_dim, ErrorKind::unsupported, "{}: key_length {} != value_length {}", f.source(),
               c.head_dim, value_dim);
  c.n_rot = arch_int(f, a, "rope.dimension_count", 2, c.head_dim, &c.head_dim);
  ADAMAS_CHECK(c.n_rot % 2 == 0, ErrorKind::format, "{}: rope.dimension_count {} is odd", f.source(), c.n_rot);
  const int64_t ctx_fallback = 4096;
  c.context_length = arch_int(f, a, "context_length", 1, int64_t(1) << 24, &ctx_fallback);
  c.rope_base = f.get_float_or(a + ".rope.freq_base", 10000.0);
  ADAMAS_CHECK(std::isfinite(c.rope_base) && c.rope_base > 1.0, ErrorKind::format, "{}: rope.freq_base = {}",
               f.source(), c.rope_base);
  c.norm_eps = float(f.get_float_or(a + ".attention.layer_norm_rms_epsilon", 1e-5));
  ADAMAS_CHECK(std::isfinite(c.norm_eps) && c.norm_eps > 0 && c.norm_eps < 1, ErrorKind::format,
               "{}: layer_norm_rms_epsilon = {}", f.source(), c.norm_eps);

  const std::string scaling(f.get_string_or(a + ".rope.scaling.type", "none"));
  double factor = f.get_float_or(a + ".rope.scaling.factor", f.get_float_or(a + ".rope.scale_linear", 1.0));
  if (scaling == "linear" || (scaling == "none" && f.has(a + ".rope.scale_linear"))) {
    ADAMAS_CHECK(std::isfinite(factor) && factor > 0, ErrorKind::format, "{}: rope scaling factor = {}", f.source(),
                 factor);
    if (factor != 1.0) {
      c.rope_scaling = RopeScaling::linear;
      c.rope_scale_factor = factor;
    }
  } else if (scaling != "none") {
    fail(ErrorKind::unsupported, "{}: rope scaling '{}' is not supported (supported: none, linear, rope_freqs)",
         f.source(), scaling);
  }
  if (f.find_tensor("rope_freqs.weight") != nullptr) c.rope_scaling = RopeScaling::freq_factors;

  const GgufTensor* embd = f.find_tensor("token_embd.weight");
  int64_t vocab = embd != nullptr && embd->shape.size() == 2 ? embd->shape[1] : 0;
  if (const GgufValue* tokens = f.find("tokenizer.ggml.tokens"); tokens != nullptr && vocab == 0)
    vocab = int64_t(tokens->array_size());
  c.vocab = arch_int(f, a, "vocab_size", 1, int64_t(1) << 24, &vocab);
  return c;
}

// ---------------------------------------------------------------------------------------------------------------

LlamaModel LlamaModel::load(const std::string& path) { return from_gguf(GgufFile::open(path)); }

LlamaModel LlamaModel::from_gguf(GgufFile file) {
  LlamaModel m;
  m.file_ = std::make_unique<GgufFile>(std::move(file));
  m.config_ = read_model_config(*m.file_);
  m.bind(*m.file_);
  return m;
}

namespace {

const GgufTensor& need(const GgufFile& f, const std::string& name) {
  const GgufTensor* t = f.find_tensor(name);
  ADAMAS_CHECK(t != nullptr, ErrorKind::format, "{}: missing tensor '{}'", f.source(), name);
  return *t;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// A matrix stored as ggml shape [cols, rows].
WeightMatrix matrix(const GgufFile& f, const std::string& name, int64_t cols, int64_t rows) {
  const GgufTensor& t = need(f, name);
  ADAMAS_CHECK(t.shape.size() == 2 && t.shape[0] == cols && t.shape[1] == rows, ErrorKind::format,
               "{}: tensor '{}' has shape {} (expected [{}, {}])", f.source(), name, shape_str(t.shape), cols, rows);
  const GgmlTypeInfo* info = ggml_type_info(uint32_t(t.type));
  ADAMAS_CHECK(info != nullptr && info->dequantizable, ErrorKind::unsupported,
               "{}: tensor '{}' has type {} (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)",
               f.source(), name, info ? std::string(info->name) : std::to_string(uint32_t(t.type)));
  WeightMatrix w;
  w.name = name;
  w.type = t.type;
  w.data = t.data;
  w.rows = rows;
  w.cols = cols;
  w.row_bytes = ggml_row_bytes(t.type, cols);
  ADAMAS_CHECK(w.row_bytes * rows == t.n_bytes, ErrorKind::format, "{}: tensor '{}' holds {} bytes (expected {})",
               f.source(), name, t.n_bytes, w.row_bytes * rows);
  return w;
}

// A vector of n elements in any dequantizable type, as f32.
std::vector<float> vector_f32(const GgufFile& f, const std::string& name, int64_t n) {
  const GgufTensor& t = need(f, name);
  ADAMAS_CHECK(t.n_elements == n && (t.shape.size() == 1 || (t.shape.size() == 2 && t.shape[1] == 1)),
               ErrorKind::format, "{}: tensor '{}' has shape {} (expected [{}])", f.source(), name, shape_str(t.shape),
               n);
  const GgmlTypeInfo* info = ggml_type_info(uint32_t(t.type));
  ADAMAS_CHECK(info != nullptr && info->dequantizable, ErrorKind::unsupported, "{}: tensor '{}' has type {}",
               f.source(), name, info ? std::string(info->name) : std::to_string(uint32_t(t.type)));
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_row(t.type, t.data, out.data(), n);
  for (float x : out)
    ADAMAS_CHECK(std::isfinite(x), ErrorKind::format, "{}: tensor '{}' holds a non-finite value", f.source(), name);
  return out;
}

}  // namespace

void LlamaModel::bind(const GgufFile& f) {
  const ModelConfig& c = config_;
  token_embd_ = matrix(f, "token_embd.weight", c.dim, c.vocab);
  tied_ = f.find_tensor("output.weight") == nullptr;
  output_ = tied_ ? token_embd_ : matrix(f, "output.weight", c.dim, c.vocab);
  output_norm_ = vector_f32(f, "output_norm.weight", c.dim);
  layers_.resize(size_t(c.n_layers));
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    LayerWeights& l = layers_[size_t(i)];
    l.attn_norm = vector_f32(f, p + "attn_norm.weight", c.dim);
    l.ffn_norm = vector_f32(f, p + "ffn_norm.weight", c.dim);
    l.wq = matrix(f, p + "attn_q.weight", c.dim, c.q_dim());
    l.wk = matrix(f, p + "attn_k.weight", c.dim, c.kv_dim());
    l.wv = matrix(f, p + "attn_v.weight", c.dim, c.kv_dim());
    l.wo = matrix(f, p + "attn_output.weight", c.q_dim(), c.dim);
    l.gate = matrix(f, p + "ffn_gate.weight", c.dim, c.ffn_dim);
    l.up = matrix(f, p + "ffn_up.weight", c.dim, c.ffn_dim);
    l.down = matrix(f, p + "ffn_down.weight", c.ffn_dim, c.dim);
    // q/k/v biases: required by qwen2 (as in llama.cpp), optional for llama (HF attention_bias); all or none.
    const bool biased = c.architecture == "qwen2" || f.find_tensor(p + "attn_q.bias") != nullptr ||
                        f.find_tensor(p + "attn_k.bias") != nullptr || f.find_tensor(p + "attn_v.bias") != nullptr;
    if (biased) {
      l.bq = vector_f32(f, p + "attn_q.bias", c.q_dim());
      l.bk = vector_f32(f, p + "attn_k.bias", c.kv_dim());
      l.bv = vector_f32(f, p + "attn_v.bias", c.kv_dim());
    }
    ADAMAS_CHECK(f.find_tensor(p + "attn_output.bias") == nullptr, ErrorKind::unsupported,
                 "{}: tensor '{}attn_output.bias': an output projection bias is not supported", f.source(), p);
  }
  const int64_t pairs = c.n_rot / 2;
  std::vector<float> factors;
  if (c.rope_scaling == RopeScaling::freq_factors) {
    factors = vector_f32(f, "rope_freqs.weight", pairs);
    for (float x : factors)
      ADAMAS_CHECK(x > 0, ErrorKind::format, "{}: rope_freqs.weight holds a factor {} <= 0", f.source(), x);
  }
  inv_freq_.resize(size_t(pairs));
  for (int64_t i = 0; i < pairs; ++i) {
    double w = std::pow(c.rope_base, -2.0 * double(i) / double(c.n_rot));
    if (c.rope_scaling == RopeScaling::linear) w /= c.rope_scale_factor;
    if (!factors.empty()) w /= factors[size_t(i)];
    inv_freq_[size_t(i)] = float(w);
  }
}

void LlamaModel::embed(int32_t token, float* out) const {
  ADAMAS_CHECK(0 <= token && token < config_.vocab, ErrorKind::invalid_argument, "token id {} not in [0, {})", token,
               config_.vocab);
  dequantize_row(token_embd_.type, token_embd_.row(token), out, config_.dim);
}

int64_t LlamaModel::weight_bytes() const {
  int64_t total = 0;
  for (const GgufTensor& t : file_->tensors()) total += t.n_bytes;
  return total;
}

// ---------------------------------------------------------------------------------------------------------------

void rms_norm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  const float s = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * s * weight[i];
}

namespace {

// y[t][r] = W[r] . x[t] for T tokens x R rows of f32 weights (n a multiple of 8): T*R independent accumulators that,
// with the T inputs, fit the 16 AVX registers (3 x 4: 12 + 3), so each loaded vector is used several times.
#if defined(__AVX2__) && defined(__FMA__)
using quant::hsum;

template <int T, int R>
void kernel(const float* w, int64_t w_stride, const float* x, int64_t x_stride, int64_t n, float* y,
            int64_t y_stride) {
  __m256 acc[T][R];
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) acc[t][r] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) {
    __m256 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm256_loadu_ps(x + t * x_stride + i);
    for (int r = 0; r < R; ++r) {
      const __m256 wv = _mm256_loadu_ps(w + r * w_stride + i);
      for (int t = 0; t < T; ++t) acc[t][r] = _mm256_fmadd_ps(wv, xv[t], acc[t][r]);
    }
  }
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) y[t * y_stride + r] = hsum(acc[t][r]);
}
constexpr bool kHaveKernel = true;
#else
template <int T, int R>
void kernel(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t) {}
constexpr bool kHaveKernel = false;
#endif

}  // namespace

namespace {

// Weights with an integer kernel: the inputs rounded to 8 bits once (Q8 blocks) for all the targets, then one
// parallel loop over the chunks of rows of every target (one fork/join for Q, K and V together: at decode a step
// has ~200 matrix products of a few microseconds each, where every join costs), each chunk multiplied with all
// the tokens by gemm_q8's register tiles (its rows stay in L1 while the tokens stream past).
void matmul_q8(std::span<const MatmulTarget> targets, const float* x, int64_t n_tokens, int64_t x_stride) {
  constexpr int64_t kRows = 16;
  const int64_t cols = targets[0].w->cols, nb = cols / 32;
  int64_t starts[8], chunks = 0;  // first chunk of each target
  for (size_t i = 0; i < targets.size(); ++i) {
    starts[i] = chunks;
    chunks += (targets[i].w->rows + kRows - 1) / kRows;
  }
  thread_local std::vector<BlockQ8> xq;
  if (xq.size() < size_t(n_tokens * nb)) xq.resize(size_t(n_tokens * nb));
  BlockQ8* q = xq.data();
#pragma omp parallel for schedule(static) if (n_tokens > 4)
  for (int64_t t = 0; t < n_tokens; ++t) quantize_row_q8(x + t * x_stride, q + t * nb, cols);
#pragma omp parallel for schedule(static) if (chunks * n_tokens * cols > 32768)
  for (int64_t c = 0; c < chunks; ++c) {
    size_t i = targets.size() - 1;
    while (starts[i] > c) --i;
    const MatmulTarget& tg = targets[i];
    const int64_t r0 = (c - starts[i]) * kRows, nr = std::min(tg.w->rows, r0 + kRows) - r0;
    gemm_q8(tg.w->type, tg.w->row(r0), tg.w->row_bytes, nr, q, nb, n_tokens, cols, tg.y + r0, tg.y_stride);
  }
}

}  // namespace

void matmul(std::span<const MatmulTarget> targets, const float* x, int64_t n_tokens, int64_t x_stride) {
  ADAMAS_CHECK(!targets.empty() && targets.size() <= 8, ErrorKind::invalid_argument,
               "matmul: {} targets (expected 1..8)", targets.size());
  bool integer = true;
  for (const MatmulTarget& t : targets) {
    ADAMAS_CHECK(t.w->cols == targets[0].w->cols, ErrorKind::invalid_argument,
                 "matmul: '{}' has {} columns, '{}' {}", t.w->name, t.w->cols, targets[0].w->name,
                 targets[0].w->cols);
    integer = integer && has_q8_dot(t.w->type);
  }
  if (integer) return matmul_q8(targets, x, n_tokens, x_stride);
  for (const MatmulTarget& t : targets) matmul(*t.w, x, n_tokens, x_stride, t.y, t.y_stride);
}

void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t x_stride, float* y, int64_t y_stride) {
  if (has_q8_dot(w.type)) {
    const MatmulTarget t{&w, y, y_stride};
    return matmul_q8(std::span(&t, 1), x, n_tokens, x_stride);
  }
  constexpr int64_t kRows = 16;
  const int64_t blocks = (w.rows + kRows - 1) / kRows;
  const GgmlType type = w.type;
  const int64_t cols = w.cols;
  if (n_tokens < 8 || !kHaveKernel || cols % 8 != 0) {
    // Matrix-vector: blocks of rows stay in L1 while every token's input streams past them; no dequantization.
#pragma omp parallel for schedule(static) if (blocks * n_tokens * cols > 32768)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t r0 = b * kRows, r1 = std::min(w.rows, r0 + kRows);
      for (int64_t t = 0; t < n_tokens; ++t) {
        const float* xt = x + t * x_stride;
        float* yt = y + t * y_stride;
        for (int64_t r = r0; r < r1; ++r) yt[r] = vec_dot(type, w.row(r), xt, cols);
      }
    }
    return;
  }
  // Matrix-matrix (prefill): each block of rows is dequantized once to f32 (L1/L2-resident) and multiplied with
  // every token by register-blocked kernels (3 tokens x 4 rows, and the edges).
#pragma omp parallel
  {
    std::vector<float> wbuf(static_cast<size_t>(kRows * cols));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t r0 = b * kRows, nr = std::min(w.rows, r0 + kRows) - r0;
      for (int64_t r = 0; r < nr; ++r) dequantize_row(type, w.row(r0 + r), wbuf.data() + r * cols, cols);
      const int64_t t3 = n_tokens / 3 * 3, r4 = nr / 4 * 4;
      const float* wb = wbuf.data();
      float* yb = y + r0;
      for (int64_t t = 0; t < t3; t += 3) {
        for (int64_t r = 0; r < r4; r += 4)
          kernel<3, 4>(wb + r * cols, cols, x + t * x_stride, x_stride, cols, yb + t * y_stride + r, y_stride);
        for (int64_t r = r4; r < nr; ++r)
          kernel<3, 1>(wb + r * cols, cols, x + t * x_stride, x_stride, cols, yb + t * y_stride + r, y_stride);
      }
      for (int64_t t = t3; t < n_tokens; ++t) {
        for (int64_t r = 0; r < r4; r += 4)
          kernel<1, 4>(wb + r * cols, cols, x + t * x_stride, x_stride, cols, yb + t * y_stride + r, y_stride);
        for (int64_t r = r4; r < nr; ++r)
          kernel<1, 1>(wb + r * cols, cols, x + t * x_stride, x_stride, cols, yb + t * y_stride + r, y_stride);
      }
    }
  }
}

void apply_rope(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, const std::vector<float>& inv_freq,
                RopeType type) {
  const int64_t pairs = int64_t(inv_freq.size());
  // Pair i is (v[i * step], v[i * step + other]): adjacent (step 2, other 1) or halves (step 1, other pairs).
  const int64_t step = type == RopeType::neox ? 1 : 2, other = type == RopeType::neox ? pairs : 1;
  float cs[512], sn[512];
  for (int64_t i0 = 0; i0 < pairs; i0 += 512) {
    const int64_t i1 = std::min(pairs, i0 + 512);
    for (int64_t i = i0; i < i1; ++i) {
      const double a = double(pos) * double(inv_freq[size_t(i)]);
      cs[i - i0] = float(std::cos(a));
      sn[i - i0] = float(std::sin(a));
    }
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x + h * head_dim;
      for (int64_t i = i0; i < i1; ++i) {
        float& a = v[i * step];
        float& b = v[i * step + other];
        const float a0 = a, b0 = b;
        a = a0 * cs[i - i0] - b0 * sn[i - i0];
        b = a0 * sn[i - i0] + b0 * cs[i - i0];
      }
    }
  }
}

void add_bias(float* y, const std::vector<float>& bias, int64_t n_tokens, int64_t stride) {
  for (int64_t t = 0; t < n_tokens; ++t)
    for (size_t i = 0; i < bias.size(); ++i) y[t * stride + int64_t(i)] += bias[i];
}

void swiglu(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace adamas
