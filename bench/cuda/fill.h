#pragma once
#include <cstddef>
#include <cstdint>
void bench_fill_half(void* p, size_t n, uint32_t seed, float amp);
void bench_fill_f32(float* p, size_t n, uint32_t seed);
// Reads `bytes` of p (L2 left holding clean lines of it).
void bench_flush_read(const void* p, size_t bytes, unsigned* sink);
// Reads both buffers (bytes_each each) in one launch: what a kernel that only moves a K/V pair's bytes takes.
void bench_read_two(const void* a, const void* b, size_t bytes_each, unsigned* sink);
// The SM clock now, in MHz (a 1-thread kernel spinning ~2 M cycles against %globaltimer; synchronizes).
double bench_sm_mhz();
// Loads one word per `stride` bytes of p (diagnostic: address translations of p's pages, ~no data).
void bench_touch_pages(const void* p, size_t bytes, size_t stride, unsigned* sink);
// An empty launch (the timer's floor: launch + event overhead after a flush).
void bench_empty_kernel();
// Launch-floor probes: an empty kernel with a 5.6 KB parameter (the backend's batch descriptor size); `blocks`
// blocks in clusters of `cluster` with that parameter doing `syncs` cluster barriers; the most co-resident clusters
// of that kernel; a 1-thread kernel writing %globaltimer to `out`.
void bench_empty_big_param();
void bench_cluster_kernel(int blocks, int cluster, int syncs, int smem);
int bench_max_clusters(int cluster, int smem);
void bench_coop_kernel(int blocks);
void bench_stamp(unsigned long long* out);
