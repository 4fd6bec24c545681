// A Llama-family model's weights in GPU memory: f16 matrices (any GGUF type is dequantized at load with
// dequantize_row, then rounded to f16), f32 norms and RoPE frequencies. Q/K/V are concatenated ([q | k | v] rows)
// and gate/up interleaved row by row, so that a layer runs two input projections instead of five.
// Or random weights at a given shape (benchmarks), generated on the GPU.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/cuda/device_buffer.h"
#include "model/llama.h"

namespace adamas::gpu {

struct GpuLayer {
  const float* attn_norm = nullptr;  // [dim]
  const float* ffn_norm = nullptr;   // [dim]
  const __half* wqkv = nullptr;      // [q_dim + 2 kv_dim][dim]
  const __half* wo = nullptr;        // [dim][q_dim]
  const __half* wgu = nullptr;       // [2 ffn][dim]: rows gate 0, up 0, gate 1, up 1, ...
  const __half* wdown = nullptr;     // [dim][ffn]
};

class GpuModel {
 public:
  // Uploads the model's weights. Error(unsupported) for an unusable GPU, Error(out_of_memory-like: unsupported)
  // naming the bytes needed and free when the weights do not fit.
  static GpuModel upload(const LlamaModel& model);
  // Random f16 weights at `config`'s shape (uniform, scaled by 1/sqrt(cols) so activations stay O(1)).
  static GpuModel random(const ModelConfig& config, uint64_t seed);

  const ModelConfig& config() const { return config_; }
  const GpuLayer& layer(int64_t l) const { return layers_[size_t(l)]; }
  const __half* embedding() const { return embd_; }  // [vocab][dim]
  const __half* output() const { return out_; }      // [vocab][dim] (the embedding when tied)
  const float* output_norm() const { return out_norm_; }
  const float* rope_inv_freq() const { return inv_freq_; }  // [n_pairs]
  int64_t rope_pairs() const { return n_pairs_; }
  int64_t bytes() const { return mem_.bytes(); }
  const std::string& origin() const { return origin_; }  // the file, or "random f16 weights"

 private:
  GpuModel() = default;
  void allocate(const ModelConfig& c, bool tied, int64_t n_pairs);

  ModelConfig config_;
  std::string origin_;
  DeviceArena mem_;
  std::vector<GpuLayer> layers_;
  const __half* embd_ = nullptr;
  const __half* out_ = nullptr;
  const float* out_norm_ = nullptr;
  const float* inv_freq_ = nullptr;
  int64_t n_pairs_ = 0;
};

// Throws Error(unsupported) unless a CUDA device of compute capability 9.0 (the sm_90a kernels) is present, naming
// what was found.
void require_supported_gpu();

}  // namespace adamas::gpu
