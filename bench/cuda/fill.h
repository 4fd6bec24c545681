#pragma once
#include <cstddef>
#include <cstdint>
void bench_fill_half(void* p, size_t n, uint32_t seed, float amp);
void bench_fill_f32(float* p, size_t n, uint32_t seed);
