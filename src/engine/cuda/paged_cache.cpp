#include "engine/cuda/paged_cache.h"

#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "core/check.h"
#include "engine/cuda/device_buffer.h"

namespace adamas::gpu {
namespace {

// The driver's virtual memory functions, looked up once through the runtime (no link-time libcuda dependency).
struct Vmm {
  decltype(&cuMemGetAllocationGranularity) granularity = nullptr;
  decltype(&cuMemAddressReserve) reserve = nullptr;
  decltype(&cuMemAddressFree) address_free = nullptr;
  decltype(&cuMemCreate) create = nullptr;
  decltype(&cuMemRelease) release = nullptr;
  decltype(&cuMemMap) map = nullptr;
  decltype(&cuMemUnmap) unmap = nullptr;
  decltype(&cuMemSetAccess) set_access = nullptr;
};

template <class F>
void lookup(const char* name, F& fn) {
  void* p = nullptr;
  cudaDriverEntryPointQueryResult q{};
  check(cudaGetDriverEntryPointByVersion(name, &p, 12000, cudaEnableDefault, &q), name);
  ADAMAS_CHECK(p && q == cudaDriverEntryPointSuccess, ErrorKind::unsupported,
               "the CUDA driver lacks {} (virtual memory management, needed by the paged KV cache)", name);
  fn = reinterpret_cast<F>(p);
}

const Vmm& vmm() {
  static const Vmm v = [] {
    Vmm x;
    lookup("cuMemGetAllocationGranularity", x.granularity);
    lookup("cuMemAddressReserve", x.reserve);
    lookup("cuMemAddressFree", x.address_free);
    lookup("cuMemCreate", x.create);
    lookup("cuMemRelease", x.release);
    lookup("cuMemMap", x.map);
    lookup("cuMemUnmap", x.unmap);
    lookup("cuMemSetAccess", x.set_access);
    return x;
  }();
  return v;
}

void drv(CUresult r, const char* what) {
  ADAMAS_CHECK(r == CUDA_SUCCESS, ErrorKind::unsupported, "paged KV cache: {} failed (CUresult {})", what, int(r));
}

CUmemAllocationProp page_props() {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  CUmemAllocationProp p{};
  p.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  p.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  p.location.id = dev;
  return p;
}

}  // namespace

PagedCache::PagedCache(CacheLayout& layout, int64_t n_layers, int64_t max_slots, int64_t max_bytes)
    : layout_(layout), n_layers_(n_layers), max_bytes_(max_bytes) {
  const Vmm& v = vmm();
  const CUmemAllocationProp prop = page_props();
  size_t g = 0;
  drv(v.granularity(&g, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM), "cuMemGetAllocationGranularity");
  gran_ = int64_t(g);
  layout.slot_bytes = (layout.slot_bytes + gran_ - 1) / gran_ * gran_;
  pages_per_slot_ = layout.slot_bytes / gran_;
  CUdeviceptr va = 0;
  const CUresult r = v.reserve(&va, size_t(max_slots * layout.slot_bytes), size_t(gran_), 0, 0);
  ADAMAS_CHECK(r == CUDA_SUCCESS, ErrorKind::unsupported,
               "GPU out of memory: cannot reserve {:.1f} TiB of address space for the KV cache of {} sequence(s) "
               "(CUresult {}; lower the context or the batch)", double(max_slots * layout.slot_bytes) / double(1ll << 40),
               max_slots, int(r));
  va_ = uint64_t(va);
  layout.base = reinterpret_cast<uint8_t*>(va);
  map_.assign(size_t(max_slots), std::vector<int32_t>(size_t(pages_per_slot_), -1));
}

PagedCache::~PagedCache() {
  const Vmm& v = vmm();
  for (size_t s = 0; s < map_.size(); ++s)
    for (int64_t p = 0; p < pages_per_slot_; ++p)
      if (map_[s][size_t(p)] >= 0) v.unmap(CUdeviceptr(va_ + s * layout_.slot_bytes + p * gran_), size_t(gran_));
  for (unsigned long long h : handles_) v.release(CUmemGenericAllocationHandle(h));
  if (va_) v.address_free(CUdeviceptr(va_), size_t(int64_t(map_.size()) * layout_.slot_bytes));
}

void PagedCache::map_page(int slot, int64_t page) {
  const Vmm& v = vmm();
  if (free_.empty()) {
    const CUmemAllocationProp prop = page_props();
    CUmemGenericAllocationHandle h{};
    const bool over_budget = max_bytes_ > 0 && (physical_pages() + 1) * gran_ > max_bytes_;
    const CUresult r = over_budget ? CUDA_ERROR_OUT_OF_MEMORY : v.create(&h, size_t(gran_), &prop, 0);
    if (r == CUDA_ERROR_OUT_OF_MEMORY) {
      int64_t free_b = 0, total_b = 0;
      device_memory(&free_b, &total_b);
      fail(ErrorKind::unsupported,
           "GPU out of memory: the paged KV cache holds {:.2f} GiB in {} pages and needs another {:.0f} MiB page; "
           "{:.2f} GiB free on the GPU, cache budget {:.2f} GiB (0: none) (finish sequences or lower the batch or "
           "context)", double(mapped_bytes()) / (1 << 30), mapped_pages(), double(gran_) / (1 << 20),
           double(free_b) / (1 << 30), double(max_bytes_) / (1 << 30));
    }
    drv(r, "cuMemCreate");
    handles_.push_back((unsigned long long)h);
    free_.push_back(int32_t(handles_.size() - 1));
  }
  const int32_t k = free_.back();
  const CUdeviceptr at = CUdeviceptr(va_ + uint64_t(slot) * layout_.slot_bytes + uint64_t(page * gran_));
  drv(v.map(at, size_t(gran_), 0, CUmemGenericAllocationHandle(handles_[size_t(k)]), 0), "cuMemMap");
  CUmemAccessDesc access{};
  access.location = page_props().location;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  drv(v.set_access(at, size_t(gran_), &access, 1), "cuMemSetAccess");
  free_.pop_back();
  map_[size_t(slot)][size_t(page)] = k;
}

void PagedCache::ensure(int slot, int64_t tokens) {
  const CacheLayout& c = layout_;
  tokens = std::min(tokens, c.capacity);
  if (tokens <= 0) return;
  const int64_t kv_row = c.head_dim * 2, code_row = c.head_dim / 4;
  std::vector<int32_t>& m = map_[size_t(slot)];
  auto cover = [&](int64_t offset, int64_t bytes) {
    for (int64_t p = offset / gran_; p <= (offset + bytes - 1) / gran_; ++p)
      if (m[size_t(p)] < 0) map_page(slot, p);
  };
  for (int64_t l = 0; l < n_layers_; ++l)
    for (int64_t h = 0; h < c.kv_heads; ++h) {
      const int64_t base = l * c.layer_bytes;
      cover(base + c.k_off + h * c.capacity * kv_row, tokens * kv_row);
      cover(base + c.v_off + h * c.capacity * kv_row, tokens * kv_row);
      if (c.has_codes) cover(base + c.codes_off + h * c.capacity * code_row, tokens * code_row);
    }
}

void PagedCache::release(int slot) {
  const Vmm& v = vmm();
  std::vector<int32_t>& m = map_[size_t(slot)];
  for (int64_t p = 0; p < pages_per_slot_; ++p)
    if (m[size_t(p)] >= 0) {
      drv(v.unmap(CUdeviceptr(va_ + uint64_t(slot) * layout_.slot_bytes + uint64_t(p * gran_)), size_t(gran_)),
          "cuMemUnmap");
      free_.push_back(m[size_t(p)]);
      m[size_t(p)] = -1;
    }
}

int64_t PagedCache::mapped_pages() const {
  int64_t n = 0;
  for (const auto& m : map_) n += std::count_if(m.begin(), m.end(), [](int32_t k) { return k >= 0; });
  return n;
}

}  // namespace adamas::gpu
