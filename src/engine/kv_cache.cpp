#include "engine/kv_cache.h"

#include "core/check.h"
#include "core/dtype.h"

namespace adamas {

KvCache::KvCache(const KvCacheOptions& o) : opt_(o) {
  ADAMAS_CHECK(o.layers > 0 && o.kv_heads > 0 && o.head_dim > 0, ErrorKind::invalid_argument,
               "KV cache: layers {}, kv_heads {}, head_dim {} (expected > 0)", o.layers, o.kv_heads, o.head_dim);
  ADAMAS_CHECK(o.capacity > 0, ErrorKind::invalid_argument, "KV cache: capacity {} tokens (expected > 0)", o.capacity);
  ADAMAS_CHECK(o.page_size > 0, ErrorKind::invalid_argument, "KV cache: page size {} (expected > 0)", o.page_size);
  layer_elems_ = o.kv_heads * o.capacity * o.head_dim;
  const size_t es = dtype_size(o.dtype);
  k_.resize(size_t(o.layers * layer_elems_) * es);
  v_.resize(k_.size());
  if (o.codes) {
    ADAMAS_CHECK(o.head_dim % 4 == 0, ErrorKind::unsupported, "KV cache: head_dim {} has no 2-bit code layout",
                 o.head_dim);
    codes_.resize(size_t(o.layers * o.kv_heads * o.capacity * code_bytes(o.head_dim)));
  }
  if (o.pages) {
    pages_per_layer_ = (o.capacity + o.page_size - 1) / o.page_size;
    page_min_.resize(size_t(o.layers * o.kv_heads * pages_per_layer_ * o.head_dim));
    page_max_.resize(page_min_.size());
  }
}

int64_t KvCache::bytes() const {
  return int64_t(k_.size() + v_.size() + codes_.size() + (page_min_.size() + page_max_.size()) * sizeof(float));
}

void* KvCache::kv_base(const Buffer<uint8_t>& b, int64_t layer) const {
  return const_cast<uint8_t*>(b.data()) + size_t(layer * layer_elems_) * dtype_size(opt_.dtype);
}

HeadsView KvCache::keys(int64_t layer, int64_t tokens) const {
  return {kv_base(k_, layer), opt_.dtype, opt_.kv_heads, tokens, opt_.head_dim, opt_.capacity * opt_.head_dim,
          opt_.head_dim};
}
HeadsView KvCache::values(int64_t layer, int64_t tokens) const {
  return {kv_base(v_, layer), opt_.dtype, opt_.kv_heads, tokens, opt_.head_dim, opt_.capacity * opt_.head_dim,
          opt_.head_dim};
}
CodesView KvCache::codes(int64_t layer, int64_t tokens) const {
  if (codes_.empty()) return {};
  const int64_t cb = code_bytes(opt_.head_dim);
  return {codes_.data() + layer * opt_.kv_heads * opt_.capacity * cb, opt_.kv_heads, tokens, opt_.head_dim,
          opt_.capacity * cb, cb};
}
QuestPagesView KvCache::pages(int64_t layer) const {
  if (page_min_.empty()) return {};
  const size_t off = size_t(layer * opt_.kv_heads * pages_per_layer_ * opt_.head_dim);
  return {const_cast<float*>(page_min_.data()) + off, const_cast<float*>(page_max_.data()) + off, opt_.kv_heads,
          pages_per_layer_, opt_.head_dim, opt_.page_size};
}

void KvCache::write(int64_t layer, const float* k, const float* v, int64_t n, int64_t stride,
                    std::span<const Thresholds> thresholds) {
  ADAMAS_CHECK(0 <= layer && layer < opt_.layers, ErrorKind::invalid_argument, "KV cache: layer {} not in [0, {})",
               layer, opt_.layers);
  ADAMAS_CHECK(n >= 0 && size_ + n <= opt_.capacity, ErrorKind::invalid_argument,
               "KV cache: {} tokens + {} new exceed the capacity of {} tokens", size_, n, opt_.capacity);
  const int64_t hd = opt_.head_dim, end = size_ + n;
  const HeadsView kv = keys(layer, end), vv = values(layer, end);
  void* kd = const_cast<void*>(kv.data);
  void* vd = const_cast<void*>(vv.data);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < opt_.kv_heads; ++h) {
      const int64_t dst = h * kv.head_stride + (size_ + t) * hd;
      const float* ks = k + t * stride + h * hd;
      const float* vs = v + t * stride + h * hd;
      if (opt_.dtype == DType::f32) {
        std::copy(ks, ks + hd, static_cast<float*>(kd) + dst);
        std::copy(vs, vs + hd, static_cast<float*>(vd) + dst);
      } else {
        for (int64_t i = 0; i < hd; ++i) {
          store_f32(kd, opt_.dtype, dst + i, ks[i]);
          store_f32(vd, opt_.dtype, dst + i, vs[i]);
        }
      }
    }
  if (n == 0) return;
  if (!codes_.empty()) {
    const CodesView c = codes(layer, end);
    const MutCodesView mc{const_cast<uint8_t*>(c.data), c.heads, c.tokens, c.dim, c.head_stride, c.token_stride};
    encode_keys(kv, size_, end, thresholds, mc);
  }
  if (!page_min_.empty()) quest_update_pages(kv, size_, end, pages(layer));
}

void KvCache::commit(int64_t n) {
  ADAMAS_CHECK(n >= 0 && size_ + n <= opt_.capacity, ErrorKind::invalid_argument,
               "KV cache: commit of {} tokens beyond the capacity ({} + {} > {})", n, size_, n, opt_.capacity);
  size_ += n;
}

}  // namespace adamas
