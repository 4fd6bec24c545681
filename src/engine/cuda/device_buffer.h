// Device memory for the GPU engine: an arena of cudaMalloc'd blocks freed together, whose allocation failures
// raise a clear out-of-memory error (what was being allocated, bytes asked, bytes free on the device).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace adamas::gpu {

class DeviceArena {
 public:
  DeviceArena() = default;
  DeviceArena(DeviceArena&& o) noexcept : blocks_(std::move(o.blocks_)), bytes_(o.bytes_) { o.bytes_ = 0; }
  DeviceArena& operator=(DeviceArena&& o) noexcept;
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;
  ~DeviceArena() { release(); }

  // 256-byte aligned device memory (uninitialized). `what` names it in the error.
  void* alloc(int64_t bytes, const std::string& what);
  template <class T>
  T* alloc_n(int64_t n, const std::string& what) {
    return static_cast<T*>(alloc(n * int64_t(sizeof(T)), what));
  }
  int64_t bytes() const { return bytes_; }
  void release();

 private:
  std::vector<void*> blocks_;
  int64_t bytes_ = 0;
};

// Free and total device memory (bytes).
void device_memory(int64_t* free_bytes, int64_t* total_bytes);
// Throws Error(unsupported) for a CUDA error, naming `what`.
void check(cudaError_t err, const char* what);

}  // namespace adamas::gpu
