#pragma once
#include <cstddef>
#include <cstdint>
void bench_fill_half(void* p, size_t n, uint32_t seed, float amp);
void bench_fill_f32(float* p, size_t n, uint32_t seed);
// Reads `bytes` of p (L2 left holding clean lines of it).
void bench_flush_read(const void* p, size_t bytes, unsigned* sink);
// An empty launch (the timer's floor: launch + event overhead after a flush).
void bench_empty_kernel();
