// Llama-family models from GGUF: the configuration (from metadata), the weights (views into the mapped file, checked
// for names, shapes and types) and the per-layer operations of the forward pass (RMSNorm, quantized matrix products,
// RoPE, SwiGLU). The forward over a KV cache lives in src/engine/session.h.
//
// Conventions are llama.cpp's. LLM_ARCH_LLAMA: the GGUF converter permutes the rows of attn_q / attn_k so that RoPE
// rotates adjacent pairs (x[2i], x[2i+1]) by pos * base^(-2i/n_rot) ("normal" rope). LLM_ARCH_QWEN2: the same
// layer with q/k/v biases (blk.N.attn_{q,k,v}.bias) and unpermuted rows, so RoPE rotates the halves
// (x[i], x[i + n_rot/2]) by the same angles ("NeoX" rope). The output projection is `output.weight`, or
// `token_embd.weight` when absent (tied embeddings).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/gguf.h"
#include "model/quant.h"

namespace adamas {

enum class RopeScaling {
  none,
  linear,       // positions multiplied by 1 / factor (llama.rope.scaling.type = linear)
  freq_factors  // per-pair frequency divisors from the rope_freqs.weight tensor (Llama 3.1+ "llama3" scaling)
};
const char* rope_scaling_name(RopeScaling s);

// Which coordinates RoPE rotates together (llama.cpp's LLAMA_ROPE_TYPE_NORM / _NEOX).
enum class RopeType {
  normal,  // (x[2i], x[2i+1]): llama (rows permuted by the converter)
  neox     // (x[i], x[i + n_rot/2]): qwen2
};
const char* rope_type_name(RopeType t);

struct ModelConfig {
  std::string architecture;  // "llama" or "qwen2"
  std::string name;          // general.name, may be empty
  int64_t n_layers = 0;
  int64_t dim = 0;         // embedding_length
  int64_t ffn_dim = 0;     // feed_forward_length
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;    // dim / n_heads (attention.key_length where given)
  int64_t n_rot = 0;       // rope.dimension_count (rotated dims per head, default head_dim)
  int64_t vocab = 0;
  int64_t context_length = 0;  // trained context
  double rope_base = 10000.0;
  RopeType rope_type = RopeType::normal;
  RopeScaling rope_scaling = RopeScaling::none;
  double rope_scale_factor = 1.0;  // linear scaling factor
  float norm_eps = 1e-5f;

  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
};

// Reads and validates the configuration; Error(unsupported) for an architecture other than llama / qwen2 (naming it),
// Error(format) for missing or absurd values.
ModelConfig read_model_config(const GgufFile& file);

// A 2-D weight [rows][cols] in a ggml type, rows contiguous (cols = ggml shape[0]).
struct WeightMatrix {
  std::string name;
  GgmlType type = GgmlType::F32;
  const uint8_t* data = nullptr;
  int64_t rows = 0, cols = 0, row_bytes = 0;
  const uint8_t* row(int64_t r) const { return data + r * row_bytes; }
};

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;  // [dim]
  WeightMatrix wq, wk, wv, wo;             // [q_dim][dim], [kv_dim][dim] x2, [dim][q_dim]
  std::vector<float> bq, bk, bv;           // [q_dim], [kv_dim] x2 biases (qwen2); empty when the model has none
  WeightMatrix gate, up, down;             // [ffn][dim] x2, [dim][ffn]
};

class LlamaModel {
 public:
  // Opens (mmap) and checks a GGUF model file.
  static LlamaModel load(const std::string& path);
  // Takes a parsed file (for tests: GgufFile::from_bytes).
  static LlamaModel from_gguf(GgufFile file);

  LlamaModel(LlamaModel&&) noexcept = default;
  LlamaModel& operator=(LlamaModel&&) noexcept = default;

  const ModelConfig& config() const { return config_; }
  const GgufFile& file() const { return *file_; }
  const LayerWeights& layer(int64_t i) const { return layers_[size_t(i)]; }
  const WeightMatrix& token_embedding() const { return token_embd_; }
  const WeightMatrix& output() const { return output_; }  // token_embd when tied
  bool tied_embeddings() const { return tied_; }
  const std::vector<float>& output_norm() const { return output_norm_; }
  // Per rotated pair i: the angle per position, base^(-2i/n_rot) / (linear factor) / (freq factor i).
  const std::vector<float>& rope_inv_freq() const { return inv_freq_; }

  // out[dim] = the embedding row of `token` (Error(invalid_argument) when out of the vocabulary).
  void embed(int32_t token, float* out) const;
  // Bytes of all weights.
  int64_t weight_bytes() const;

 private:
  LlamaModel() = default;
  void bind(const GgufFile& f);

  std::unique_ptr<GgufFile> file_;  // weights point into its bytes
  ModelConfig config_;
  std::vector<LayerWeights> layers_;
  WeightMatrix token_embd_, output_;
  bool tied_ = false;
  std::vector<float> output_norm_;
  std::vector<float> inv_freq_;
};

// ---------------------------------------------------------------------------------------------------------------
// Layer operations (f32 activations). Token-batched forms take row-major [n_tokens][...] buffers with strides.
// ---------------------------------------------------------------------------------------------------------------

// out = x / sqrt(mean(x^2) + eps) * weight, n elements (out may alias x).
void rms_norm(const float* x, const float* weight, int64_t n, float eps, float* out);

// y[t][r] = sum_c W[r][c] * x[t][c] for t < n_tokens, every row r of W (threads over rows; each weight row is read
// once for all the tokens). x rows are W.cols floats at x_stride; y rows W.rows floats at y_stride.
// Block-quantized weights (has_q8_dot): x rounded to 8-bit blocks once, integer tiles of rows x tokens (gemm_q8),
// as llama.cpp. Other types: few tokens, vec_dot per row; eight or more, blocks of rows dequantized to f32 and
// register-blocked FMA.
void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t x_stride, float* y, int64_t y_stride);

// Several matrices with the same input (Q, K, V; gate, up): y_i = W_i x for each target, with one quantization of
// x and one parallel loop over all their rows when every W_i has an integer kernel, else one matmul each. All W_i
// must have the same number of columns (else invalid_argument); at most 8 targets.
struct MatmulTarget {
  const WeightMatrix* w;
  float* y;
  int64_t y_stride;
};
void matmul(std::span<const MatmulTarget> targets, const float* x, int64_t n_tokens, int64_t x_stride);

// Rotates each of n_heads vectors of head_dim (contiguous) at position pos: pair i < inv_freq.size() by angle
// pos * inv_freq[i], the pair being (x[2i], x[2i+1]) (normal) or (x[i], x[i + inv_freq.size()]) (neox); the
// coordinates past 2 * inv_freq.size() are unchanged.
void apply_rope(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, const std::vector<float>& inv_freq,
                RopeType type = RopeType::normal);

// y[t * stride + i] += bias[i] for t < n_tokens, i < bias.size() (nothing when bias is empty).
void add_bias(float* y, const std::vector<float>& bias, int64_t n_tokens, int64_t stride);

// gate[i] = silu(gate[i]) * up[i].
void swiglu(float* gate, const float* up, int64_t n);

}  // namespace adamas
