#include "engine/cuda/gpu_session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/check.h"

namespace adamas::gpu {

namespace {
bool kernels_have_group(int64_t g) { return g == 1 || g == 2 || g == 4 || g == 8; }
constexpr int64_t kSkinnyMax = 4;  // token rows up to which the f32-activation kernel runs (gpu_linear.cu)
}  // namespace

GpuEngine::GpuEngine(const GpuModel& model, const GpuEngineOptions& o) : model_(model), opt_(o) {
  const ModelConfig& c = model.config();
  validate_config(o.attention);
  ADAMAS_CHECK(c.head_dim == 64 || c.head_dim == 128 || c.head_dim == 256, ErrorKind::unsupported,
               "head_dim {} is not supported on cuda (64, 128, 256)", c.head_dim);
  ADAMAS_CHECK(c.n_heads % c.n_kv_heads == 0, ErrorKind::unsupported, "{} query heads over {} KV heads", c.n_heads,
               c.n_kv_heads);
  ADAMAS_CHECK(c.dim % 8 == 0 && c.ffn_dim % 8 == 0 && c.q_dim() % 8 == 0, ErrorKind::unsupported,
               "model widths must be multiples of 8 on cuda (dim {}, ffn {})", c.dim, c.ffn_dim);
  ADAMAS_CHECK(o.context > 0 && o.max_batch > 0 && o.prefill_chunk > 0 && o.dense_layers >= 0,
               ErrorKind::invalid_argument, "GPU engine: context {}, batch {}, prefill chunk {}, dense layers {} "
               "(expected > 0, > 0, > 0, >= 0)", o.context, o.max_batch, o.prefill_chunk, o.dense_layers);
  ADAMAS_CHECK(o.attention.dense_below == 0 || o.attention.method == Method::full ||
                   o.attention.method == Method::adamas,
               ErrorKind::unsupported, "dense_below is not implemented for {} on cuda (full, adamas)",
               method_name(o.attention.method));
  ADAMAS_CHECK(o.context <= c.context_length || c.context_length == 0, ErrorKind::invalid_argument,
               "context = {} tokens exceeds the model's trained context length of {}", o.context, c.context_length);

  const int64_t hd = c.head_dim, kvh = c.n_kv_heads, cap = o.context;
  cache_.kv_heads = kvh, cache_.head_dim = hd, cache_.capacity = cap;
  cache_.has_codes = o.attention.method == Method::adamas && o.dense_layers < c.n_layers;
  const int64_t kv_bytes = kvh * cap * hd * 2;
  cache_.k_off = 0, cache_.v_off = kv_bytes, cache_.codes_off = 2 * kv_bytes;
  cache_.layer_bytes = 2 * kv_bytes + (cache_.has_codes ? kvh * cap * hd / 4 : 0);
  cache_.layer_bytes = (cache_.layer_bytes + 255) / 256 * 256;
  cache_.slot_bytes = c.n_layers * cache_.layer_bytes;
  if (o.paged) {
    paged_ = std::make_unique<PagedCache>(cache_, c.n_layers, o.max_batch, o.cache_budget_bytes);  // pages come with the tokens
  } else {
    int64_t free_b = 0, total_b = 0;
    device_memory(&free_b, &total_b);
    const int64_t need = o.max_batch * cache_.slot_bytes;
    ADAMAS_CHECK(need < free_b, ErrorKind::unsupported,
                 "GPU out of memory: the KV cache of {} sequence(s) x {} tokens needs {:.2f} GiB, {:.2f} GiB free "
                 "(lower the context or the batch)", o.max_batch, cap, double(need) / (1 << 30),
                 double(free_b) / (1 << 30));
    cache_.base = static_cast<uint8_t*>(cache_mem_.alloc(need, "the KV cache"));
  }
  len_.assign(size_t(o.max_batch), -1);

  const int64_t R = std::max(o.max_batch, o.prefill_chunk), qd = c.q_dim(), kvd = c.kv_dim();
  x_ = buf_.alloc_n<float>(R * c.dim, "activations");
  hn_ = buf_.alloc_n<float>(R * c.dim, "activations");
  qkv_ = buf_.alloc_n<float>(R * (qd + 2 * kvd), "activations");
  q_ = buf_.alloc_n<float>(R * qd, "activations");
  att_ = buf_.alloc_n<float>(R * qd, "activations");
  gu_ = buf_.alloc_n<float>(R * 2 * c.ffn_dim, "activations");
  act_ = buf_.alloc_n<float>(R * c.ffn_dim, "activations");
  qpart_ = buf_.alloc_n<float>(R * kvd, "activations");
  attpart_ = buf_.alloc_n<float>(R * kvd, "activations");
  logits_ = buf_.alloc_n<float>(o.max_batch * c.vocab, "logits");
  xh_ = buf_.alloc_n<__half>(R * std::max({c.dim, c.ffn_dim, qd}), "activations");
  knew_ = buf_.alloc_n<__half>(R * kvd, "activations");
  codes_new_ = buf_.alloc_n<uint8_t>(R * kvd / 4, "codes");
  d_tok_ = buf_.alloc_n<int32_t>(R, "tokens");
  d_pos_ = buf_.alloc_n<int32_t>(R, "positions");
  d_slot_ = buf_.alloc_n<int32_t>(R, "slots");
  d_thr_ = buf_.alloc_n<Thresholds>(1, "thresholds");
  ss_ = buf_.alloc_n<double>((2 * c.n_layers + 1) * R, "norm sums");
  rope_counters_ = buf_.alloc_n<int>(kSkinnyMax * c.n_kv_heads, "rope counters");
  check(cudaMemset(rope_counters_, 0, size_t(kSkinnyMax * c.n_kv_heads) * sizeof(int)), "rope counters");
  check(cudaMemcpy(d_thr_, &o.attention.thresholds, sizeof(Thresholds), cudaMemcpyHostToDevice), "thresholds");
  constexpr int64_t kBlasWorkspace = int64_t(32) << 20;  // set explicitly so cuBLAS never allocates in a capture
  blas_ws_ = buf_.alloc(kBlasWorkspace, "cuBLAS workspace");

  check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  check(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking), "cudaStreamCreate");
  check(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming), "cudaEventCreate");
  check(cudaEventCreateWithFlags(&join_, cudaEventDisableTiming), "cudaEventCreate");
  ADAMAS_CHECK(cublasCreate(&blas_) == CUBLAS_STATUS_SUCCESS, ErrorKind::unsupported, "cublasCreate failed");
  cublasSetStream(blas_, stream_);
  cublasSetWorkspace(blas_, blas_ws_, size_t(kBlasWorkspace));
  cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH);
  lt_ = std::make_unique<LtGemm>(blas_ws_, kBlasWorkspace);
  for (auto& e : done_) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
  ws_ = std::make_unique<cuda::Workspace>();
  setup_sparse();
  if (opt_.cublas_lt && opt_.tune_gemm && opt_.max_batch > kSkinnyMax) tune_gemms();
}

void GpuEngine::tune_gemms() {
  const ModelConfig& c = model_.config();
  const int64_t n = opt_.max_batch, qd = c.q_dim(), kvd = c.kv_dim(), nl = std::min<int64_t>(c.n_layers, 4);
  check(cudaMemsetAsync(xh_, 0, size_t(n * std::max({c.dim, c.ffn_dim, qd})) * sizeof(__half), stream_), "tune");
  struct Shape {
    const char* name;
    const __half* GpuLayer::*w;
    int64_t rows, cols;
    float* y;
    float beta;
  };
  const Shape shapes[] = {{"qkv", &GpuLayer::wqkv, qd + 2 * kvd, c.dim, qkv_, 0.0f},
                          {"wo", &GpuLayer::wo, c.dim, qd, x_, 1.0f},
                          {"gate/up", &GpuLayer::wgu, 2 * c.ffn_dim, c.dim, gu_, 0.0f},
                          {"down", &GpuLayer::wdown, c.dim, c.ffn_dim, x_, 1.0f}};
  for (const Shape& s : shapes) {
    std::vector<const __half*> ws;
    for (int64_t l = 0; l < nl; ++l) ws.push_back(model_.layer(l).*s.w);
    const auto [best, first] = lt_->tune(ws.data(), int(ws.size()), s.rows, s.cols, xh_, n, s.y, s.beta, stream_);
    gemm_tuning_ += fmt::format("{}{} {:.1f}/{:.1f}", gemm_tuning_.empty() ? "" : ", ", s.name, best, first);
  }
  const __half* out = model_.output();
  const auto [best, first] = lt_->tune(&out, 1, c.vocab, c.dim, xh_, n, logits_, 0.0f, stream_);
  gemm_tuning_ += fmt::format(", lm_head {:.1f}/{:.1f} us (tuned/heuristic)", best, first);
  check(cudaStreamSynchronize(stream_), "tune");
}

GpuEngine::~GpuEngine() {
  if (stream_) cudaStreamSynchronize(stream_);
  for (auto& e : exec_)
    if (e) cudaGraphExecDestroy(e);
  for (auto& e : done_)
    if (e) cudaEventDestroy(e);
  for (cudaEvent_t e : {fork_, join_})
    if (e) cudaEventDestroy(e);
  for (cudaEvent_t e : mark_pool_) cudaEventDestroy(e);
  if (side_) cudaStreamDestroy(side_);
  if (h_pos_) cudaFreeHost(h_pos_);
  if (h_out_) cudaFreeHost(h_out_);
  if (blas_) cublasDestroy(blas_);
  if (stream_) cudaStreamDestroy(stream_);
}

int GpuEngine::add_sequence() {
  for (size_t i = 0; i < len_.size(); ++i)
    if (len_[i] < 0) {
      len_[i] = 0;
      reset_sparse(int(i));
      return int(i);
    }
  fail(ErrorKind::invalid_argument, "GPU engine: all {} sequence slots are in use (finish one first)", len_.size());
}

void GpuEngine::finish(int seq) {
  (void)length(seq);
  if (paged_) {
    check(cudaStreamSynchronize(stream_), "finish");  // its pages may still be read by an enqueued step
    paged_->release(seq);
  }
  len_[size_t(seq)] = -1;
}

int64_t GpuEngine::cache_bytes() const { return paged_ ? paged_->mapped_bytes() : cache_mem_.bytes(); }
int64_t GpuEngine::cache_pages_created() const { return paged_ ? paged_->physical_pages() : 0; }

void GpuEngine::reserve_tokens(int seq, int64_t tokens) {
  // Kernels may read a tile past the last token (masked): map a margin beyond it too.
  constexpr int64_t kMargin = 128;
  if (paged_) paged_->ensure(seq, tokens + kMargin);
}

int64_t GpuEngine::length(int seq) const {
  ADAMAS_CHECK(seq >= 0 && seq < int(len_.size()) && len_[size_t(seq)] >= 0, ErrorKind::invalid_argument,
               "GPU engine: sequence {} is not active", seq);
  return len_[size_t(seq)];
}

void GpuEngine::linear(const __half* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y,
                       float beta, const GemvFusion& f, const __half* xh) {
  const bool fused = f.norm_ss || f.out_ss || f.swiglu || f.pdl || f.rope.q_out;
  if (n <= kSkinnyMax) {
    if (fused) return skinny_matmul_fused(w, rows, cols, x, n, y, beta, f, stream_);
    return skinny_matmul(w, rows, cols, x, n, y, beta, stream_);
  }
  ADAMAS_CHECK(!fused, ErrorKind::invalid_argument, "GPU engine: GEMV fusions need <= {} rows", kSkinnyMax);
  if (!xh) to_half(x, n * cols, xh_, stream_);
  if (opt_.cublas_lt && lt_->run(w, rows, cols, xh_, n, y, beta, stream_)) return;
  const float alpha = 1.0f;
  // Column-major view: y^T [rows][n] = W (stored [rows][cols] row-major = [cols][rows] column-major)^T x^T.
  const cublasStatus_t st = cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(n), int(cols), &alpha, w,
                                         CUDA_R_16F, int(cols), xh_, CUDA_R_16F, int(cols), &beta, y, CUDA_R_32F,
                                         int(rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  ADAMAS_CHECK(st == CUBLAS_STATUS_SUCCESS, ErrorKind::unsupported, "cublasGemmEx failed (status {})", int(st));
}

std::vector<SequenceCache> GpuEngine::views(int64_t layer, const int32_t* pos, const int32_t* slot,
                                            int64_t n) const {
  const int64_t hd = cache_.head_dim, kvh = cache_.kv_heads, cap = cache_.capacity;
  std::vector<SequenceCache> v(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    const uint8_t* base = cache_.base + slot[r] * cache_.slot_bytes + layer * cache_.layer_bytes;
    const int64_t tokens = pos[r] + 1;
    v[size_t(r)].k = HeadsView{base + cache_.k_off, DType::f16, kvh, tokens, hd, cap * hd, hd};
    v[size_t(r)].v = HeadsView{base + cache_.v_off, DType::f16, kvh, tokens, hd, cap * hd, hd};
    if (cache_.has_codes) v[size_t(r)].codes = CodesView{base + cache_.codes_off, kvh, tokens, hd, cap * hd / 4, hd / 4};
  }
  return v;
}

void GpuEngine::decode_attention_layer(int64_t layer, int64_t n) {
  const ModelConfig& c = model_.config();
  AttentionConfig ac = opt_.attention;
  if (layer < opt_.dense_layers) ac.method = Method::full;
  const int64_t g = c.n_heads / c.n_kv_heads;
  // kFuseL2Late: the prefetch goes between the selection and the attention (cuda::decode_attention's two parts).
  const bool late = (opt_.fuse & kFuseL2Late) && ac.method == Method::adamas && kernels_have_group(g) &&
                    !thr_queries_;
  if (!late) issue_prefetch();
  if (sparse_decode_layer(layer, n)) return issue_prefetch();
  const std::vector<SequenceCache> seqs = views(layer, cur_pos_, row_slot_.data(), n);
  if (kernels_have_group(g)) {
    cuda::BatchInputs in;
    in.q = q_, in.n_heads = c.n_heads, in.seqs = seqs;
    // cuda::decode_attention's tests: every sequence attends to all its tokens, or some sequence past the budget
    // does (dense_below: the operator splits the batch, which the late prefetch's two calls do not).
    const bool dense = std::all_of(seqs.begin(), seqs.end(), [&](const SequenceCache& s) {
      return attends_every_token(ac, s.k.tokens);
    });
    const bool below = std::any_of(seqs.begin(), seqs.end(), [&](const SequenceCache& s) {
      return attends_every_token_past_budget(ac, s.k.tokens);
    });
    if (late && !dense && !below) {
      cuda::select(in, ac, *ws_, stream_);
      issue_prefetch();
      return cuda::attend_selected(in, ac, *ws_, 1.0f / std::sqrt(float(c.head_dim)), att_, stream_);
    }
    issue_prefetch();
    return cuda::decode_attention(in, ac, *ws_, att_, stream_);
  }
  issue_prefetch();
  // Groups the kernels lack (SmolLM2: 3): one call per position j in the group, each of group 1.
  for (int64_t j = 0; j < g; ++j) {
    gather_group_part(q_, n, c.n_kv_heads, g, j, c.head_dim, qpart_, stream_);
    cuda::BatchInputs in;
    in.q = qpart_, in.n_heads = c.n_kv_heads, in.seqs = seqs;
    cuda::decode_attention(in, ac, *ws_, attpart_, stream_);
    scatter_group_part(attpart_, n, c.n_kv_heads, g, j, c.head_dim, att_, stream_);
  }
}

void GpuEngine::forward(int64_t n, bool decode, int seq, int64_t p0) {
  const ModelConfig& c = model_.config();
  const int64_t dim = c.dim, qd = c.q_dim(), kvd = c.kv_dim(), ffn = c.ffn_dim, L = c.n_layers;
  const bool skinny = n <= kSkinnyMax;
  const bool fnorm = skinny && (opt_.fuse & kFuseNorm), fswiglu = skinny && (opt_.fuse & kFuseSwiglu);
  // Quest pages and calibrated thresholds take the new keys (k_new) and per-row thresholds: the unfused path.
  const bool frope = (opt_.fuse & kFuseRope) && !quest_.min && !thr_keys_, pdl = skinny && (opt_.fuse & kFusePdl);
  const bool frope_gemv = frope && skinny && (opt_.fuse & kFuseRopeGemv);
  // Fused norms: the GEMV reads the residual x_ with the sum of squares in ss_ (2l: attention, 2l + 1: FFN, 2L: out).
  // kFuseHalf, more than kSkinnyMax rows: the norm writes the f16 input of the cuBLAS product into xh_ (*xh set).
  const bool fhalf = opt_.fuse & kFuseHalf;
  auto norm_in = [&](const float* norm_w, int64_t k, int64_t first, int64_t rows, GemvFusion& f,
                     const __half** xh) -> const float* {
    *xh = nullptr;
    if (fhalf && rows > kSkinnyMax) {
      rms_norm_rows_half(x_ + first * dim, norm_w, rows, dim, c.norm_eps, xh_, stream_);
      *xh = xh_;
      return hn_;  // not read
    }
    if (!fnorm) {
      rms_norm_rows(x_ + first * dim, norm_w, rows, dim, c.norm_eps, hn_, stream_);
      return hn_;
    }
    f.norm_ss = ss_ + k * n + first, f.norm_w = norm_w, f.eps = c.norm_eps;
    return x_ + first * dim;
  };
  auto sums = [&](int64_t k) { return fnorm ? ss_ + k * n : nullptr; };
  if (fnorm) check(cudaMemsetAsync(ss_, 0, size_t((2 * L + 1) * n) * 8, stream_), "norm sums");
  embed_rows(model_.embedding(), d_tok_, n, dim, x_, stream_, sums(0));
  phase("embed");
  // Sparse layers leave the memory bus mostly idle during selection and attention: wo's weights go to L2 then.
  const bool l2 = decode && (opt_.fuse & kFuseL2) && opt_.attention.method != Method::full;
  for (int64_t l = 0; l < L; ++l) {
    const GpuLayer& w = model_.layer(l);
    GemvFusion fq{.pdl = pdl};
    if (frope_gemv)
      fq.rope = GemvRope{.q_out = q_, .inv_freq = model_.rope_inv_freq(), .n_pairs = model_.rope_pairs(),
                         .n_heads = c.n_heads, .layer = l, .pos = d_pos_, .slot = d_slot_, .cache = cache_,
                         .thresholds = d_thr_, .scale = 1.0f / std::sqrt(float(c.head_dim)),
                         .counters = rope_counters_};
    const __half* xh = nullptr;
    const float* hq = norm_in(w.attn_norm, 2 * l, 0, n, fq, &xh);
    linear(w.wqkv, qd + 2 * kvd, dim, hq, n, qkv_, 0.0f, fq, xh);
    phase("qkv");
    if (frope_gemv) {
      // done by the qkv GEMV
    } else if (frope) {
      rope_append_encode(qkv_, n, c.n_heads, model_.rope_inv_freq(), model_.rope_pairs(), d_pos_, d_slot_, cache_, l,
                         d_thr_, q_, pdl, stream_);
    } else {
      rope_and_append(qkv_, n, c.n_heads, model_.rope_inv_freq(), model_.rope_pairs(), d_pos_, d_slot_, cache_, l,
                      q_, knew_, stream_);
      append_sparse(l, n, decode, seq, p0);
      if (cache_.has_codes) {
        const auto [thr, n_thr] = key_thresholds(l, n);
        cuda::encode_vectors(knew_, DType::f16, n * c.n_kv_heads, c.head_dim, c.head_dim, thr, n_thr, codes_new_,
                             stream_);
        append_codes(codes_new_, n, d_pos_, d_slot_, cache_, l, stream_);
      }
    }
    phase("rope/append");
    if (l2 && l >= opt_.dense_layers) prefetch_ = {w.wo, dim * qd * int64_t(sizeof(__half))};
    if (decode) decode_attention_layer(l, n);
    else prefill_attention(q_, n, p0, c.n_heads, cache_, l, seq, att_, stream_);
    phase(l < opt_.dense_layers || opt_.attention.method == Method::full ? "attention (dense)" : "attention (sparse)");
    linear(w.wo, dim, qd, att_, n, x_, 1.0f, GemvFusion{.out_ss = sums(2 * l + 1), .pdl = pdl});
    phase("wo");
    GemvFusion fg{.swiglu = fswiglu, .pdl = pdl};
    const float* h = norm_in(w.ffn_norm, 2 * l + 1, 0, n, fg, &xh);
    const __half* acth = nullptr;
    if (fswiglu) {
      linear(w.wgu, 2 * ffn, dim, h, n, act_, 0.0f, fg);
    } else {
      linear(w.wgu, 2 * ffn, dim, h, n, gu_, 0.0f, fg, xh);
      if (fhalf && n > kSkinnyMax) swiglu_rows_half(gu_, n, ffn, xh_, stream_), acth = xh_;
      else swiglu_rows(gu_, n, ffn, act_, stream_);
    }
    phase("gate/up");
    linear(w.wdown, dim, ffn, act_, n, x_, 1.0f, GemvFusion{.out_ss = sums(2 * l + 2), .pdl = pdl}, acth);
    phase("down");
  }
  // Logits of every row of a step, of the last row of a prefill chunk; next tokens into d_tok_ (the next input).
  const int64_t first = decode ? 0 : n - 1, rows = n - first;
  GemvFusion fl{.pdl = pdl};
  const __half* xh = nullptr;
  const float* hl = norm_in(model_.output_norm(), 2 * L, first, rows, fl, &xh);
  linear(model_.output(), c.vocab, dim, hl, rows, logits_, 0.0f, fl, xh);
  phase("lm_head");
  join_side();
  pick_tokens(rows);
  phase("sampling");
  last_rows_ = rows;
}

void GpuEngine::prefetch_to_l2(const void* p, int64_t bytes) {
  check(cudaEventRecord(fork_, stream_), "prefetch fork");
  check(cudaStreamWaitEvent(side_, fork_), "prefetch fork");
  l2_prefetch(p, bytes, opt_.fuse & kFuseL2Last, side_);
  side_pending_ = true;
}

void GpuEngine::issue_prefetch() {
  if (prefetch_.p) prefetch_to_l2(prefetch_.p, prefetch_.bytes);
  prefetch_ = {};
}

void GpuEngine::join_side(bool checked) {
  if (!side_pending_) return;
  side_pending_ = false;
  const cudaError_t a = cudaEventRecord(join_, side_), b = cudaStreamWaitEvent(stream_, join_);
  if (checked) check(a, "prefetch join"), check(b, "prefetch join");
}

void GpuEngine::phase(const char* name) {
  if (!opt_.profile) return;
  if (marks_.size() == mark_pool_.size()) {
    cudaEvent_t e = nullptr;
    check(cudaEventCreate(&e), "cudaEventCreate");
    mark_pool_.push_back(e);
  }
  cudaEvent_t e = mark_pool_[marks_.size()];
  check(cudaEventRecord(e, stream_), "profile event");
  marks_.emplace_back(name, e);
}

void GpuEngine::collect_profile() {
  check(cudaStreamSynchronize(stream_), "profile");
  for (size_t i = 1; i < marks_.size(); ++i) {
    float ms = 0;
    check(cudaEventElapsedTime(&ms, marks_[i - 1].second, marks_[i].second), "profile");
    auto it = std::find_if(profile_.ms.begin(), profile_.ms.end(), [&](const auto& p) { return p.first == marks_[i].first; });
    if (it == profile_.ms.end()) profile_.ms.emplace_back(marks_[i].first, double(ms));
    else it->second += ms;
  }
  marks_.clear();
  ++profile_.steps;
}

int32_t GpuEngine::prefill(int seq, std::span<const int32_t> tokens) {
  const ModelConfig& c = model_.config();
  const int64_t n = int64_t(tokens.size()), p0 = length(seq);
  ADAMAS_CHECK(n > 0, ErrorKind::invalid_argument, "prefill: no tokens");
  ADAMAS_CHECK(p0 + n <= opt_.context, ErrorKind::invalid_argument,
               "{} tokens do not fit the context: {} cached + {} > {} (raise -c)", n, p0, n, opt_.context);
  for (int32_t t : tokens)
    ADAMAS_CHECK(0 <= t && t < c.vocab, ErrorKind::invalid_argument, "token id {} not in [0, {})", t, c.vocab);
  reserve_tokens(seq, p0 + n);
  std::vector<int32_t> pos(size_t(opt_.prefill_chunk)), slot(size_t(opt_.prefill_chunk), seq);
  for (int64_t done = 0; done < n;) {
    const int64_t m = std::min(opt_.prefill_chunk, n - done);
    for (int64_t i = 0; i < m; ++i) pos[size_t(i)] = int32_t(p0 + done + i);
    check(cudaMemcpyAsync(d_tok_, tokens.data() + done, size_t(m) * 4, cudaMemcpyHostToDevice, stream_), "upload");
    check(cudaMemcpyAsync(d_pos_, pos.data(), size_t(m) * 4, cudaMemcpyHostToDevice, stream_), "upload");
    check(cudaMemcpyAsync(d_slot_, slot.data(), size_t(m) * 4, cudaMemcpyHostToDevice, stream_), "upload");
    use_draws(nullptr);
    if (done + m == n && !draws_->greedy()) {  // the prompt's last chunk samples the first new token
      const int one[1] = {seq};
      draws_->draw(one, 1);
      use_draws(draws_->step(0));
    }
    forward(m, false, seq, p0 + done);
    check(cudaStreamSynchronize(stream_), "prefill");  // the host arrays above are reused by the next chunk
    done += m;
  }
  len_[size_t(seq)] = p0 + n;
  int32_t next = 0;
  check(cudaMemcpy(&next, d_tok_, 4, cudaMemcpyDeviceToHost), "prefill: next token");
  return next;
}

void GpuEngine::enqueue_step(int64_t step, int64_t batch) {
  cur_pos_ = h_pos_ + step * batch;
  use_draws(draws_->greedy() ? nullptr : draws_->step(step));
  check(cudaMemcpyAsync(d_pos_, cur_pos_, size_t(batch) * 4, cudaMemcpyHostToDevice, stream_), "step positions");
  marks_.clear();  // a prefill's marks are not counted
  phase("start");
  forward(batch, true, -1, 0);
  check(cudaMemcpyAsync(h_out_ + step * batch, d_tok_, size_t(batch) * 4, cudaMemcpyDeviceToHost, stream_),
        "step tokens");
}

void GpuEngine::run_step(int64_t step, int64_t batch) {
  if (!opt_.cuda_graph || opt_.profile) {
    enqueue_step(step, batch);
    ++eager_steps_;
    if (opt_.profile) collect_profile();
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  cudaGraph_t graph = nullptr;
  (void)cuda::take_cluster_launch_key();  // from here: this step's cluster launches
  check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal), "graph capture");
  try {
    enqueue_step(step, batch);
  } catch (const Error&) {
    // A workspace that had to grow (allocation, synchronisation) cannot be captured: run this step directly.
    join_side(false);  // the capture may be invalid already: errors ignored, the side stream rejoined regardless
    prefetch_ = {};
    cudaStreamEndCapture(stream_, &graph);
    if (graph) cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    enqueue_step(step, batch);
    ++eager_steps_;
    return;
  }
  check(cudaStreamEndCapture(stream_, &graph), "graph capture");
  const int k = int(graph_steps_ % 2);
  const uint64_t cluster_key = cuda::take_cluster_launch_key();
  if (exec_[k]) {
    const auto w0 = std::chrono::steady_clock::now();
    check(cudaEventSynchronize(done_[k]), "graph reuse");  // its previous launch has finished
    host_us_ -= std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - w0).count();
    // An update keeps the instantiated cluster sizes (cuda_attention.h): a step whose attention launches clusters of
    // other sizes (the selection's cluster size follows the batch and the longest sequence) is instantiated anew.
    const bool same_clusters = exec_cluster_key_[k] == cluster_key;
    graph_rebuilds_ += !same_clusters;
    cudaGraphExecUpdateResultInfo info{};
    if (!same_clusters || cudaGraphExecUpdate(exec_[k], graph, &info) != cudaSuccess) {
      (void)cudaGetLastError();
      cudaGraphExecDestroy(exec_[k]);
      exec_[k] = nullptr;
    }
  }
  if (!exec_[k]) check(cudaGraphInstantiate(&exec_[k], graph, 0), "graph instantiate");
  exec_cluster_key_[k] = cluster_key;
  cudaGraphDestroy(graph);
  check(cudaGraphLaunch(exec_[k], stream_), "graph launch");
  check(cudaEventRecord(done_[k], stream_), "graph event");
  ++graph_steps_;
  host_us_ += std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<std::vector<int32_t>> GpuEngine::generate(std::span<const int> seqs, std::span<const int32_t> tokens,
                                                      int64_t steps) {
  const ModelConfig& c = model_.config();
  const int64_t batch = int64_t(seqs.size());
  ADAMAS_CHECK(batch > 0 && batch == int64_t(tokens.size()) && batch <= opt_.max_batch, ErrorKind::invalid_argument,
               "decode: {} sequences and {} tokens (expected the same number, 1 to {})", batch, tokens.size(),
               opt_.max_batch);
  ADAMAS_CHECK(steps > 0, ErrorKind::invalid_argument, "decode: {} steps (expected > 0)", steps);
  row_slot_.assign(seqs.begin(), seqs.end());
  for (int64_t b = 0; b < batch; ++b) {
    ADAMAS_CHECK(std::count(seqs.begin(), seqs.end(), seqs[size_t(b)]) == 1, ErrorKind::invalid_argument,
                 "decode: sequence {} appears twice in one step", seqs[size_t(b)]);
    ADAMAS_CHECK(length(seqs[size_t(b)]) + steps <= opt_.context, ErrorKind::invalid_argument,
                 "decode: sequence {} holds {} tokens; {} more do not fit the context of {}", seqs[size_t(b)],
                 length(seqs[size_t(b)]), steps, opt_.context);
    ADAMAS_CHECK(0 <= tokens[size_t(b)] && tokens[size_t(b)] < c.vocab, ErrorKind::invalid_argument,
                 "token id {} not in [0, {})", tokens[size_t(b)], c.vocab);
  }
  check(cudaStreamSynchronize(stream_), "decode");  // the pinned rings below may still be read by earlier steps
  prepare_steps(seqs, steps);
  for (int s : seqs) reserve_tokens(s, length(s) + steps);
  if (steps * batch > h_cap_) {
    if (h_pos_) cudaFreeHost(h_pos_), cudaFreeHost(h_out_);
    h_cap_ = steps * batch;
    check(cudaMallocHost(&h_pos_, size_t(h_cap_) * 4), "pinned memory");
    check(cudaMallocHost(&h_out_, size_t(h_cap_) * 4), "pinned memory");
  }
  for (int64_t s = 0; s < steps; ++s)
    for (int64_t b = 0; b < batch; ++b) h_pos_[s * batch + b] = int32_t(len_[size_t(seqs[size_t(b)])] + s);
  check(cudaMemcpyAsync(d_tok_, tokens.data(), size_t(batch) * 4, cudaMemcpyHostToDevice, stream_), "upload");
  check(cudaMemcpyAsync(d_slot_, row_slot_.data(), size_t(batch) * 4, cudaMemcpyHostToDevice, stream_), "upload");
  check(cudaStreamSynchronize(stream_), "upload");  // tokens and row_slot_ are host memory that may change
  for (int64_t s = 0; s < steps; ++s) run_step(s, batch);
  check(cudaStreamSynchronize(stream_), "decode");
  check(cudaGetLastError(), "decode kernels");
  for (int64_t b = 0; b < batch; ++b) len_[size_t(seqs[size_t(b)])] += steps;
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(steps));
  for (int64_t s = 0; s < steps; ++s) out[size_t(s)].assign(h_out_ + s * batch, h_out_ + (s + 1) * batch);
  return out;
}

std::vector<int32_t> GpuEngine::decode(std::span<const int> seqs, std::span<const int32_t> tokens) {
  return generate(seqs, tokens, 1)[0];
}

std::vector<float> GpuEngine::logits(int64_t row) const {
  ADAMAS_CHECK(row >= 0 && row < last_rows_, ErrorKind::invalid_argument, "logits: row {} of {}", row, last_rows_);
  const int64_t v = model_.config().vocab;
  std::vector<float> out(static_cast<size_t>(v));
  check(cudaStreamSynchronize(stream_), "logits");
  check(cudaMemcpy(out.data(), logits_ + row * v, size_t(v) * 4, cudaMemcpyDeviceToHost), "logits");
  return out;
}

void GpuEngine::fill_random(int seq, int64_t tokens, uint64_t seed, float key_scale) {
  ADAMAS_CHECK(tokens > 0 && tokens <= opt_.context && length(seq) == 0, ErrorKind::invalid_argument,
               "fill_random: {} tokens into sequence {} (expected an empty sequence and 1 to {} tokens)", tokens, seq,
               opt_.context);
  reserve_tokens(seq, tokens);
  const ModelConfig& c = model_.config();
  const int64_t hd = c.head_dim, kvh = c.n_kv_heads, cap = opt_.context;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    uint8_t* base = cache_.base + seq * cache_.slot_bytes + l * cache_.layer_bytes;
    auto* k = reinterpret_cast<__half*>(base + cache_.k_off);
    auto* v = reinterpret_cast<__half*>(base + cache_.v_off);
    // The first `tokens` rows of each head (a paged cache maps no more).
    for (int64_t h = 0; h < kvh; ++h) {
      const uint64_t s = seed + 2 * uint64_t(l * kvh + h);
      fill_random_half(k + h * cap * hd, tokens * hd, s, key_scale * 1.7320508f, stream_);
      fill_random_half(v + h * cap * hd, tokens * hd, s + 1, 1.0f, stream_);
    }
    if (cache_.has_codes) {
      const HeadsView kv{k, DType::f16, kvh, tokens, hd, cap * hd, hd};
      const MutCodesView codes{base + cache_.codes_off, kvh, tokens, hd, cap * hd / 4, hd / 4};
      cuda::encode_keys(kv, 0, tokens, d_thr_, 1, codes, stream_);
    }
  }
  check(cudaStreamSynchronize(stream_), "fill_random");
  len_[size_t(seq)] = tokens;
}

}  // namespace adamas::gpu
