// The per-sequence cache of every layer: K and V ([kv_heads][capacity][head_dim], f16 by default), the packed 2-bit
// key codes of Adamas ([kv_heads][capacity][head_dim / 4]) and Quest's page min/max ([kv_heads][pages][head_dim]).
// Codes and pages are allocated only when the method needs them. Large buffers use HugePageAllocator.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "adamas/attention.h"
#include "core/huge_pages.h"

namespace adamas {

struct KvCacheOptions {
  int64_t layers = 0, kv_heads = 0, head_dim = 0;
  int64_t capacity = 0;      // tokens
  DType dtype = DType::f16;  // K/V storage
  bool codes = false;        // Adamas key codes
  bool pages = false;        // Quest page min/max
  int64_t page_size = 16;
};

class KvCache {
 public:
  explicit KvCache(const KvCacheOptions& options);

  const KvCacheOptions& options() const { return opt_; }
  int64_t capacity() const { return opt_.capacity; }
  int64_t size() const { return size_; }  // tokens committed (all layers)
  int64_t bytes() const;                  // allocated bytes

  // Writes n tokens of one layer at positions [size(), size() + n): k and v are [n][kv_heads * head_dim] f32 rows
  // at the given stride (floats). Then encodes their key codes and folds them into the Quest pages, when present.
  // Error(invalid_argument) when they do not fit.
  // `thresholds`: one entry for every head, or one per KV head.
  void write(int64_t layer, const float* k, const float* v, int64_t n, int64_t stride,
             std::span<const Thresholds> thresholds);
  // After every layer has been written: the n tokens become part of the cache.
  void commit(int64_t n);
  void clear() { size_ = 0; }
  // Forgets the tokens after the first n (their rows are overwritten by the next writes). Quest's page bounds
  // cannot forget a token, so the caller must not truncate a cache with pages (Session::truncate checks).
  void truncate(int64_t n) { size_ = n < size_ ? n : size_; }

  // Views of one layer over its first `tokens` tokens.
  HeadsView keys(int64_t layer, int64_t tokens) const;
  HeadsView values(int64_t layer, int64_t tokens) const;
  CodesView codes(int64_t layer, int64_t tokens) const;  // empty view without codes
  QuestPagesView pages(int64_t layer) const;             // empty view without pages

 private:
  template <class T>
  using Buffer = std::vector<T, HugePageAllocator<T>>;
  void* kv_base(const Buffer<uint8_t>& b, int64_t layer) const;

  KvCacheOptions opt_;
  int64_t size_ = 0;
  int64_t layer_elems_ = 0;  // kv_heads * capacity * head_dim
  int64_t pages_per_layer_ = 0;
  Buffer<uint8_t> k_, v_, codes_;
  Buffer<float> page_min_, page_max_;
};

}  // namespace adamas
