#include "engine/cuda/device_buffer.h"

#include "core/check.h"

namespace adamas::gpu {

void check(cudaError_t err, const char* what) {
  ADAMAS_CHECK(err == cudaSuccess, ErrorKind::unsupported, "{}: CUDA error {} ({})", what, cudaGetErrorName(err),
               cudaGetErrorString(err));
}

void device_memory(int64_t* free_bytes, int64_t* total_bytes) {
  size_t f = 0, t = 0;
  check(cudaMemGetInfo(&f, &t), "cudaMemGetInfo");
  *free_bytes = int64_t(f), *total_bytes = int64_t(t);
}

DeviceArena& DeviceArena::operator=(DeviceArena&& o) noexcept {
  if (this != &o) {
    release();
    blocks_ = std::move(o.blocks_);
    bytes_ = o.bytes_;
    o.bytes_ = 0;
  }
  return *this;
}

void* DeviceArena::alloc(int64_t bytes, const std::string& what) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, size_t(std::max<int64_t>(bytes, 256)));
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    int64_t free_b = 0, total_b = 0;
    device_memory(&free_b, &total_b);
    fail(ErrorKind::unsupported, "GPU out of memory: {} needs {:.2f} GiB, {:.2f} GiB of {:.2f} GiB free", what,
         double(bytes) / (1 << 30), double(free_b) / (1 << 30), double(total_b) / (1 << 30));
  }
  check(err, "cudaMalloc");
  blocks_.push_back(p);
  bytes_ += bytes;
  return p;
}

void DeviceArena::release() {
  for (void* p : blocks_) cudaFree(p);
  blocks_.clear();
  bytes_ = 0;
}

}  // namespace adamas::gpu
