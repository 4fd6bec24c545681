#include "synthetic_cache.h"

#include "core/dtype.h"

namespace adamas::app {

namespace {

void store(SyntheticCache& c, bool is_key, int64_t i, float x) {
  if (c.dtype == DType::f32) (is_key ? c.k32 : c.v32)[i] = x;
  else store_f32((is_key ? c.k16 : c.v16).data(), c.dtype, i, x);
}

}  // namespace

SyntheticCache make_cache(int64_t kv_heads, int64_t tokens, int64_t dim, DType dtype, float key_std,
                          const Thresholds& thresholds, std::mt19937_64& rng) {
  SyntheticCache c;
  c.kv_heads = kv_heads, c.tokens = tokens, c.dim = dim, c.dtype = dtype;
  const size_t n = size_t(kv_heads * tokens * dim);
  if (dtype == DType::f32) c.k32.resize(n), c.v32.resize(n);
  else c.k16.resize(n), c.v16.resize(n);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> channel_scale(size_t(kv_heads * dim));
  for (auto& s : channel_scale) s = key_std * (normal(rng) > 2.0f ? 4.0f : 1.0f);  // ~2% outlier channels
  for (int64_t h = 0; h < kv_heads; ++h)
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t i = 0; i < dim; ++i) {
        const int64_t at = (h * tokens + t) * dim + i;
        store(c, true, at, normal(rng) * channel_scale[h * dim + i]);
        store(c, false, at, normal(rng));
      }
  c.codes.resize(size_t(kv_heads * tokens * code_bytes(dim)));
  encode_keys(c.k(), 0, tokens, std::span(&thresholds, 1),
              MutCodesView::contiguous(c.codes.data(), kv_heads, tokens, dim));
  return c;
}

void set_key(SyntheticCache& c, int64_t head, int64_t token, const float* key, const Thresholds& thresholds) {
  for (int64_t i = 0; i < c.dim; ++i) store(c, true, (head * c.tokens + token) * c.dim + i, key[i]);
  encode_vector(c.k().row(head, token), c.dtype, c.dim, thresholds,
                c.codes.data() + (head * c.tokens + token) * code_bytes(c.dim));
}

}  // namespace adamas::app
