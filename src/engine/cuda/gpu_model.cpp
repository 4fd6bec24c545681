#include "engine/cuda/gpu_model.h"

#include <cmath>

#include "core/check.h"
#include "engine/cuda/gpu_ops.h"

namespace adamas::gpu {

void require_supported_gpu() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess || n == 0) {
    (void)cudaGetLastError();
    fail(ErrorKind::unsupported, "--device cuda: no usable CUDA device ({})",
         err != cudaSuccess ? cudaGetErrorString(err) : "none found");
  }
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, 0), "cudaGetDeviceProperties");
  ADAMAS_CHECK(p.major == 9 && p.minor == 0, ErrorKind::unsupported,
               "GPU {} has compute capability {}.{}; this build's kernels are for 9.0 (Hopper: H100/H200) only",
               p.name, p.major, p.minor);
}

void GpuModel::allocate(const ModelConfig& c, bool tied, int64_t n_pairs) {
  config_ = c;
  n_pairs_ = n_pairs;
  const int64_t d = c.dim, qkv = c.q_dim() + 2 * c.kv_dim();
  // One check up front, so a model that cannot fit fails before anything is uploaded.
  int64_t per_layer = 2 * (qkv * d + d * c.q_dim() + 2 * c.ffn_dim * d + d * c.ffn_dim) + 8 * d;
  int64_t need = c.n_layers * per_layer + 2 * c.vocab * d * (tied ? 1 : 2) + 4 * d;
  int64_t free_b = 0, total_b = 0;
  device_memory(&free_b, &total_b);
  ADAMAS_CHECK(need < free_b, ErrorKind::unsupported,
               "GPU out of memory: the weights need {:.2f} GiB, {:.2f} GiB of {:.2f} GiB free", double(need) / (1 << 30),
               double(free_b) / (1 << 30), double(total_b) / (1 << 30));
  layers_.resize(size_t(c.n_layers));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    GpuLayer& L = layers_[size_t(l)];
    L.attn_norm = mem_.alloc_n<float>(d, "attn_norm");
    L.ffn_norm = mem_.alloc_n<float>(d, "ffn_norm");
    L.wqkv = mem_.alloc_n<__half>(qkv * d, "wqkv");
    L.wo = mem_.alloc_n<__half>(d * c.q_dim(), "wo");
    L.wgu = mem_.alloc_n<__half>(2 * c.ffn_dim * d, "wgu");
    L.wdown = mem_.alloc_n<__half>(d * c.ffn_dim, "wdown");
  }
  embd_ = mem_.alloc_n<__half>(c.vocab * d, "token embedding");
  out_ = tied ? embd_ : mem_.alloc_n<__half>(c.vocab * d, "output");
  out_norm_ = mem_.alloc_n<float>(d, "output_norm");
  inv_freq_ = mem_.alloc_n<float>(std::max<int64_t>(n_pairs, 1), "rope_freqs");
}

namespace {

// Rows of `w` dequantized and rounded to f16 into dst (device), a slab of rows at a time; row r goes to row
// r * row_step of dst (2: gate and up interleaved).
void upload_matrix(const WeightMatrix& w, __half* dst, int64_t row_step = 1) {
  constexpr int64_t kSlab = 256;
  std::vector<float> row(size_t(w.cols));
  std::vector<__half> slab(size_t(kSlab * w.cols));
  for (int64_t r0 = 0; r0 < w.rows; r0 += kSlab) {
    const int64_t n = std::min(kSlab, w.rows - r0);
    for (int64_t r = 0; r < n; ++r) {
      dequantize_row(w.type, w.row(r0 + r), row.data(), w.cols);
      for (int64_t i = 0; i < w.cols; ++i) slab[size_t(r * w.cols + i)] = __float2half_rn(row[size_t(i)]);
    }
    check(cudaMemcpy2D(dst + r0 * row_step * w.cols, size_t(row_step * w.cols) * 2, slab.data(), size_t(w.cols) * 2,
                       size_t(w.cols) * 2, size_t(n), cudaMemcpyHostToDevice),
          "weight upload");
  }
}

void upload_floats(const std::vector<float>& v, const float* dst) {
  check(cudaMemcpy(const_cast<float*>(dst), v.data(), v.size() * 4, cudaMemcpyHostToDevice), "weight upload");
}

__half* mut(const __half* p) { return const_cast<__half*>(p); }

}  // namespace

GpuModel GpuModel::upload(const LlamaModel& model) {
  require_supported_gpu();
  const ModelConfig& c = model.config();
  // Other architectures (qwen2: q/k/v biases, NeoX rope) need kernels this engine does not have yet.
  ADAMAS_CHECK(c.architecture == "llama", ErrorKind::unsupported,
               "model architecture {} is not supported on cuda yet (llama)", c.architecture);
  GpuModel g;
  g.origin_ = c.name.empty() ? "GGUF model" : c.name;
  g.allocate(c, model.tied_embeddings(), int64_t(model.rope_inv_freq().size()));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model.layer(l);
    const GpuLayer& L = g.layers_[size_t(l)];
    upload_floats(w.attn_norm, L.attn_norm);
    upload_floats(w.ffn_norm, L.ffn_norm);
    upload_matrix(w.wq, mut(L.wqkv));
    upload_matrix(w.wk, mut(L.wqkv) + c.q_dim() * c.dim);
    upload_matrix(w.wv, mut(L.wqkv) + (c.q_dim() + c.kv_dim()) * c.dim);
    upload_matrix(w.wo, mut(L.wo));
    upload_matrix(w.gate, mut(L.wgu), 2);  // rows (gate i, up i): the fused SwiGLU GEMV takes both in one warp
    upload_matrix(w.up, mut(L.wgu) + c.dim, 2);
    upload_matrix(w.down, mut(L.wdown));
  }
  upload_matrix(model.token_embedding(), mut(g.embd_));
  if (!model.tied_embeddings()) upload_matrix(model.output(), mut(g.out_));
  upload_floats(model.output_norm(), g.out_norm_);
  if (g.n_pairs_ > 0) upload_floats(model.rope_inv_freq(), g.inv_freq_);
  return g;
}

GpuModel GpuModel::random(const ModelConfig& c, uint64_t seed) {
  require_supported_gpu();
  GpuModel g;
  g.origin_ = "random f16 weights";
  const int64_t n_pairs = c.n_rot / 2;
  g.allocate(c, false, n_pairs);
  const int64_t d = c.dim;
  auto mat = [&](const __half* p, int64_t rows, int64_t cols) {
    fill_random_half(mut(p), rows * cols, seed++, std::sqrt(3.0f / float(cols)), nullptr);
  };
  auto norm = [&](const float* p) { fill_random_f32(const_cast<float*>(p), d, seed++, 0.1f, 1.0f, nullptr); };
  for (const GpuLayer& L : g.layers_) {
    norm(L.attn_norm);
    norm(L.ffn_norm);
    mat(L.wqkv, c.q_dim() + 2 * c.kv_dim(), d);
    mat(L.wo, d, c.q_dim());
    mat(L.wgu, 2 * c.ffn_dim, d);
    mat(L.wdown, d, c.ffn_dim);
  }
  fill_random_half(mut(g.embd_), c.vocab * d, seed++, 1.0f, nullptr);
  mat(g.out_, c.vocab, d);
  norm(g.out_norm_);
  std::vector<float> inv(static_cast<size_t>(n_pairs));
  for (int64_t i = 0; i < n_pairs; ++i)
    inv[size_t(i)] = float(std::pow(c.rope_base, -2.0 * double(i) / double(c.n_rot)));
  if (n_pairs > 0) upload_floats(inv, g.inv_freq_);
  check(cudaDeviceSynchronize(), "random weights");
  return g;
}

}  // namespace adamas::gpu
