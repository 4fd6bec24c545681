// Host side of the CUDA backend: device queries, error checks, the workspace, batch descriptors.
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "attention/cuda/launch.h"

namespace adamas::cuda {

bool device_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  return n > 0;
}

const char* device_name() {
  static std::string name;
  if (name.empty() && device_available()) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) name = prop.name;
  }
  return name.c_str();
}

namespace {
thread_local uint64_t cluster_key = 0;  // detail::note_cluster_launch, take_cluster_launch_key
}

uint64_t take_cluster_launch_key() {
  const uint64_t k = cluster_key;
  cluster_key = 0;
  return k;
}

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    ::adamas::cuda::detail::raise(ErrorKind::unsupported, what, ": CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
}

Workspace::Workspace() : state_(std::make_unique<State>()) {
  int dev = 0;
  check_cuda(cudaGetDevice(&dev), "cuda::Workspace: cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&state_->sms, cudaDevAttrMultiProcessorCount, dev),
             "cuda::Workspace: multiprocessor count");
}

Workspace::~Workspace() {
  auto& s = *state_;
  for (void* p : {static_cast<void*>(s.dist), static_cast<void*>(s.hist), static_cast<void*>(s.row_done),
                  static_cast<void*>(s.info), static_cast<void*>(s.status), static_cast<void*>(s.tile_ctr),
                  static_cast<void*>(s.idx), static_cast<void*>(s.counts), static_cast<void*>(s.part),
                  static_cast<void*>(s.done), static_cast<void*>(s.gcum), static_cast<void*>(s.gtotal),
                  static_cast<void*>(s.gbar), static_cast<void*>(s.stream_hist), static_cast<void*>(s.stream_done),
                  static_cast<void*>(s.stream_ctr), static_cast<void*>(s.stream_debug), static_cast<void*>(s.split_q),
                  static_cast<void*>(s.split_out)})
    if (p) cudaFree(p);
}

SelectionView last_selection(const Workspace& ws) { return ws.state().last; }

namespace {
unsigned long long* g_stamps[2] = {nullptr, nullptr};
}

bool set_phase_stamps(unsigned long long* select_buf, unsigned long long* attend_buf) {
#ifdef ADAMAS_CUDA_STAMPS
  g_stamps[0] = select_buf, g_stamps[1] = attend_buf;
  return true;
#else
  (void)select_buf, (void)attend_buf;
  return false;
#endif
}

namespace detail {

unsigned long long* stamp_buffer(int which) { return g_stamps[which]; }

bool launch_verbose() {
  static const bool v = std::getenv("ADAMAS_CUDA_VERBOSE") != nullptr;
  return v;
}

void verbose_print(const std::string& line) {
  static std::string last[4];
  for (const auto& l : last)
    if (l == line) return;
  static int next = 0;
  last[next++ % 4] = line;
  std::fputs(line.c_str(), stderr);
}

void ensure(void** ptr, size_t* have, size_t bytes, bool zero) {
  if (bytes <= *have && *ptr) return;
  bytes = std::max<size_t>(bytes, 256);
  if (*ptr) {
    check_cuda(cudaDeviceSynchronize(), "workspace grow: synchronize");  // in-flight work may still use it
    check_cuda(cudaFree(*ptr), "workspace grow: cudaFree");
    *ptr = nullptr;
    *have = 0;
  }
  check_cuda(cudaMalloc(ptr, bytes), "workspace: cudaMalloc");
  if (zero) check_cuda(cudaMemset(*ptr, 0, bytes), "workspace: cudaMemset");
  *have = bytes;
}

void note_cluster_launch(const cudaLaunchConfig_t& cfg) {
  for (unsigned i = 0; i < cfg.numAttrs; ++i) {
    if (cfg.attrs[i].id != cudaLaunchAttributeClusterDimension) continue;
    const auto& d = cfg.attrs[i].val.clusterDim;
    for (uint64_t v : {uint64_t(d.x), uint64_t(d.y), uint64_t(d.z)})  // FNV-1a over the sizes, in launch order
      cluster_key = (cluster_key ^ (v + 1)) * 0x100000001b3ull;
  }
}

cudaLaunchConfig_t cluster_launch_config(dim3 grid, int threads, int C, size_t smem, cudaStream_t stream,
                                         cudaLaunchAttribute* attr) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(unsigned(threads));
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(C), attr[0].val.clusterDim.y = 1, attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}

int max_active_clusters(const void* kernel, int threads, int C, size_t smem) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, size_t>, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_tuple(kernel, C, smem);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  cudaLaunchAttribute attr[1];
  const cudaLaunchConfig_t cfg = cluster_launch_config(dim3(unsigned(C)), threads, C, smem, nullptr, attr);
  int n = 0;
  if (cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) != cudaSuccess) {
    (void)cudaGetLastError();
    n = 0;
  }
  cache[key] = n;
  return n;
}

std::vector<BatchDesc> make_batches(const BatchInputs& in, bool need_codes, const char* where) {
  CUDA_REQUIRE(!in.seqs.empty(), ErrorKind::invalid_argument, where, ": empty batch");
  CUDA_REQUIRE(in.q != nullptr, ErrorKind::invalid_argument, where, ": q is null");
  const HeadsView& k0 = in.seqs[0].k;
  check_supported_dim(k0.dim, where);
  CUDA_REQUIRE(k0.dtype == DType::f16 || k0.dtype == DType::bf16, ErrorKind::unsupported, where, ": K/V dtype ", dtype_name(k0.dtype), " (f16 or bf16 on CUDA)");
  CUDA_REQUIRE(k0.heads > 0 && in.n_heads > 0 && in.n_heads % k0.heads == 0, ErrorKind::shape_mismatch, where, ": ", in.n_heads, " query heads is not a positive multiple of ", k0.heads, " KV heads");
  const int64_t g = in.n_heads / k0.heads;
  // Selection needs 1, 2, 4 or 8; attention checks its own kernels' groups (the dense group kernel takes 1 to 8).
  CUDA_REQUIRE(g == 1 || g == 2 || g == 4 || g == 8 || (!need_codes && g <= 8), ErrorKind::unsupported, where, ": GQA group of ", g, " query heads (1, 2, 4 or 8 on CUDA; dense attention at head_dim 64 or 128 takes 1 to 8)");
  std::vector<BatchDesc> out;
  for (size_t i = 0; i < in.seqs.size(); ++i) {
    const SequenceCache& s = in.seqs[i];
    for (const HeadsView* v : {&s.k, &s.v}) {
      CUDA_REQUIRE(v->dtype == k0.dtype && v->heads == k0.heads && v->dim == k0.dim, ErrorKind::shape_mismatch, where, ": sequence ", i, " K/V [", v->heads, " heads, dim ", v->dim, ", ", dtype_name(v->dtype), "] differ from sequence 0's");
      CUDA_REQUIRE(v->tokens == s.k.tokens, ErrorKind::shape_mismatch, where, ": sequence ", i, ": K has ", s.k.tokens, " tokens, V ", v->tokens);
      CUDA_REQUIRE(v->data != nullptr, ErrorKind::invalid_argument, where, ": sequence ", i, ": null K/V");
      const uintptr_t a = reinterpret_cast<uintptr_t>(v->data);
      CUDA_REQUIRE(a % 16 == 0 && v->token_stride % 8 == 0 && v->head_stride % 8 == 0, ErrorKind::unsupported, where, ": sequence ", i, ": K/V rows must be 16-byte aligned (strides multiples of 8 elements)");
    }
    CUDA_REQUIRE(s.k.tokens > 0, ErrorKind::invalid_argument, where, ": sequence ", i, " has an empty cache");
    if (need_codes) {
      CUDA_REQUIRE(s.codes.data != nullptr && s.codes.dim == k0.dim && s.codes.heads == k0.heads &&
                       s.codes.tokens >= s.k.tokens, ErrorKind::shape_mismatch, where, ": sequence ", i, ": codes [", s.codes.heads, ", ", s.codes.tokens, ", ", s.codes.dim, "] do not cover K [", k0.heads, ", ", s.k.tokens, ", ", k0.dim, "]");
      const uintptr_t a = reinterpret_cast<uintptr_t>(s.codes.data);
      CUDA_REQUIRE(a % 4 == 0 && s.codes.token_stride % 4 == 0 && s.codes.head_stride % 4 == 0, ErrorKind::unsupported, where, ": sequence ", i, ": code rows must be 4-byte aligned");
    }
    if (i % kMaxBatch == 0) out.emplace_back(), out.back().batch = 0;
    BatchDesc& bd = out.back();
    bd.seq[bd.batch++] = SeqDesc{s.k.data, s.v.data, s.codes.data, s.k.tokens, s.k.head_stride,
                                 s.k.token_stride, s.v.head_stride, s.v.token_stride, s.codes.head_stride,
                                 s.codes.token_stride};
  }
  return out;
}

}  // namespace detail
}  // namespace adamas::cuda
