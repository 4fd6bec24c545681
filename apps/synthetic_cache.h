// A synthetic KV cache for one layer (random keys/values at a real model's shape) shared by the attention
// benchmark and the synthetic demo.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "adamas/attention.h"
#include "core/huge_pages.h"

namespace adamas::app {

struct SyntheticCache {
  int64_t kv_heads = 0, tokens = 0, dim = 0;
  DType dtype = DType::f16;
  template <class T>
  using Buffer = std::vector<T, HugePageAllocator<T>>;
  Buffer<uint16_t> k16, v16;  // f16 / bf16 storage
  Buffer<float> k32, v32;     // f32 storage
  Buffer<uint8_t> codes;      // [kv_heads][tokens][dim / 4]

  HeadsView k() const { return view(k32, k16); }
  HeadsView v() const { return view(v32, v16); }
  CodesView code_view() const { return CodesView::contiguous(codes.data(), kv_heads, tokens, dim); }

 private:
  HeadsView view(const Buffer<float>& f, const Buffer<uint16_t>& h) const {
    const void* data = dtype == DType::f32 ? static_cast<const void*>(f.data()) : h.data();
    return HeadsView::contiguous(data, dtype, kv_heads, tokens, dim);
  }
};

// Keys ~ N(0, key_std^2) per channel with a few outlier channels (as in real LLM keys), values ~ N(0, 1).
// Codes are computed with `thresholds`.
SyntheticCache make_cache(int64_t kv_heads, int64_t tokens, int64_t dim, DType dtype, float key_std,
                          const Thresholds& thresholds, std::mt19937_64& rng);

// Overwrite key (head, token) with the given f32 values (converted to the cache dtype) and re-encode its code.
void set_key(SyntheticCache& cache, int64_t head, int64_t token, const float* key, const Thresholds& thresholds);

}  // namespace adamas::app
