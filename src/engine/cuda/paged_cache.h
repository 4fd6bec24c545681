// The GPU engine's KV + code cache, paged with CUDA virtual memory management (as vAttention does): each sequence
// slot owns a reserved, virtually contiguous address range laid out as before (CacheLayout), so the attention
// kernels keep taking one contiguous cache per sequence; physical pages (the driver's allocation granularity, 2 MiB
// on the H100) are mapped into it on demand as the sequence grows, and unmapped and put back in a free pool when
// the sequence finishes, for the next sequence to reuse. Memory follows the tokens actually held, not
// max_batch x context.
//
// A page holds `granularity / (head_dim * 2)` tokens of one (layer, KV head) K or V plane (8192 at head_dim 128), so
// a sequence grows in steps of that many tokens in every plane (4 GiB at the Llama-2-7B shape; codes planes are 8x
// denser). The driver functions are looked up at run time through the CUDA runtime, so the binaries do not link
// libcuda (CI machines without a driver load them and skip the GPU tests).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/cuda/gpu_ops.h"

namespace adamas::gpu {

class PagedCache {
 public:
  // Reserves max_slots ranges of layout.slot_bytes (rounded up to the granularity; `layout.slot_bytes` is updated)
  // and sets layout.base. `max_bytes` caps the physical pages (0: as many as the GPU has). Error(unsupported) when
  // the device lacks virtual memory management or the address space cannot be reserved.
  PagedCache(CacheLayout& layout, int64_t n_layers, int64_t max_slots, int64_t max_bytes = 0);
  ~PagedCache();
  PagedCache(const PagedCache&) = delete;
  PagedCache& operator=(const PagedCache&) = delete;

  // Maps every page that tokens [0, tokens) of `slot` touch (K, V and codes planes of every layer). Error naming
  // the bytes when the GPU has no memory left for them. Host call between steps (the caller's stream is idle or
  // only reads mapped pages).
  void ensure(int slot, int64_t tokens);
  // Unmaps the slot's pages into the free pool. The caller has synchronised the stream that used them.
  void release(int slot);

  int64_t granularity() const { return gran_; }
  int64_t mapped_pages() const;                     // over all slots
  int64_t physical_pages() const { return int64_t(handles_.size()); }  // created so far (mapped + free)
  int64_t mapped_bytes() const { return mapped_pages() * gran_; }

 private:
  void map_page(int slot, int64_t page);

  const CacheLayout& layout_;
  int64_t n_layers_ = 0, gran_ = 0, pages_per_slot_ = 0, max_bytes_ = 0;
  uint64_t va_ = 0;                          // CUdeviceptr of the reservation
  std::vector<unsigned long long> handles_;  // CUmemGenericAllocationHandle of every physical page created
  std::vector<int32_t> free_;                // indices into handles_
  std::vector<std::vector<int32_t>> map_;    // [slot][page] -> handle index, -1 unmapped
};

}  // namespace adamas::gpu
