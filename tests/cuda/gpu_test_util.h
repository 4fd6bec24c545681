// Small helpers of the GPU tests (tests/cuda, tests/engine_cuda): fresh seeds that a failure names, device copies,
// and the message of an expected error.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "adamas/error.h"

namespace adamas::test {

// A fresh seed per run (ADAMAS_TEST_SEED=N repeats one); SCOPED_SEED names it in every failure of the scope.
inline uint32_t fresh_seed() {
  if (const char* s = std::getenv("ADAMAS_TEST_SEED")) return uint32_t(std::strtoul(s, nullptr, 10));
  return std::random_device{}();
}
#define SCOPED_SEED(seed)        \
  const uint32_t seed = ::adamas::test::fresh_seed(); \
  SCOPED_TRACE(::testing::Message() << "seed=" << seed << " (rerun: ADAMAS_TEST_SEED=" << seed << ")")

template <class T>
T* to_device(const std::vector<T>& h) {
  T* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, std::max<size_t>(h.size(), 1) * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}
template <class T>
std::vector<T> to_host(const T* d, size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

// The message of the adamas::Error that f() throws, or "no error".
template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace adamas::test
