// The GpuEngine's Quest, StreamingLLM, calibrated-threshold and sampling paths (declared in gpu_session.h), kept
// apart from the dense/Adamas decode step: kernels in gpu_sparse_baselines.cu and gpu_sampling.cu.
#include <algorithm>

#include "core/check.h"
#include "engine/cuda/gpu_session.h"

namespace adamas::gpu {

void GpuEngine::setup_sparse() {
  const ModelConfig& c = model_.config();
  const AttentionConfig& a = opt_.attention;
  const int64_t slots = opt_.max_batch, L = c.n_layers, H = c.n_heads, kvh = c.n_kv_heads, hd = c.head_dim;
  validate_gpu_sampler(opt_.sampler, c.vocab);
  draws_ = std::make_unique<SamplingDraws>(opt_.sampler, slots);
  if (!draws_->greedy()) d_uniform_ = sparse_mem_.alloc_n<double>(slots, "sampling draws");
  calibrated_.assign(size_t(slots), 0);
  const bool sparse_layers = opt_.dense_layers < L;
  if (a.method == Method::quest && sparse_layers) {
    quest_.layers = L, quest_.kv_heads = kvh, quest_.head_dim = hd;
    quest_.pages = (opt_.context + quest_.page_size - 1) / quest_.page_size;
    const int64_t bounds = slots * L * kvh * quest_.pages * hd;
    quest_.min = sparse_mem_.alloc_n<float>(bounds, "Quest page bounds (min)");
    quest_.max = sparse_mem_.alloc_n<float>(bounds, "Quest page bounds (max)");
    selected_.capacity = quest_capacity(a.budget, quest_.page_size);
    selected_.max_pages = quest_.pages;
    selected_.indices = sparse_mem_.alloc_n<int32_t>(slots * H * selected_.capacity, "Quest selections");
    selected_.counts = sparse_mem_.alloc_n<int32_t>(slots * H, "Quest selections");
    selected_.scores = sparse_mem_.alloc_n<float>(slots * H * quest_.pages, "Quest page scores");
  }
  if (opt_.calibrate_thresholds && cache_.has_codes) {
    thr_keys_ = sparse_mem_.alloc_n<Thresholds>(slots * L * kvh, "calibrated thresholds");
    thr_queries_ = sparse_mem_.alloc_n<Thresholds>(slots * L * 2 * H, "calibrated thresholds");
    thr_rows_ = sparse_mem_.alloc_n<Thresholds>(std::max(slots, opt_.prefill_chunk) * kvh, "calibrated thresholds");
    inv_freq_host_.resize(size_t(model_.rope_pairs()));
    check(cudaMemcpy(inv_freq_host_.data(), model_.rope_inv_freq(), inv_freq_host_.size() * 4, cudaMemcpyDeviceToHost),
          "rope frequencies");
  }
}

void GpuEngine::reset_sparse(int seq) {
  draws_->restart(seq);
  calibrated_[size_t(seq)] = 0;
}

void GpuEngine::append_sparse(int64_t layer, int64_t n, bool decode, int seq, int64_t p0) {
  if (quest_.min && layer >= opt_.dense_layers) quest_fold_pages(knew_, n, d_pos_, d_slot_, quest_, layer, stream_);
  if (!thr_keys_ || decode || p0 != 0) return;
  // Calibration, as Session::calibrate: the first chunk's post-RoPE f32 queries and keys, quartiles of each head's
  // rotated vectors. The keys' RoPE is redone here from the f32 projections (the cache holds them in f16).
  const ModelConfig& c = model_.config();
  const int64_t qd = c.q_dim(), kvd = c.kv_dim(), hd = c.head_dim, H = c.n_heads, kvh = c.n_kv_heads;
  const int64_t L = c.n_layers, g = H / kvh, width = qd + 2 * kvd;
  std::vector<float> q(size_t(n * qd)), qkv(size_t(n * width)), k(size_t(n * kvd));
  check(cudaStreamSynchronize(stream_), "calibration");
  check(cudaMemcpy(q.data(), q_, q.size() * 4, cudaMemcpyDeviceToHost), "calibration: queries");
  check(cudaMemcpy(qkv.data(), qkv_, qkv.size() * 4, cudaMemcpyDeviceToHost), "calibration: keys");
  for (int64_t t = 0; t < n; ++t) {
    std::copy_n(qkv.data() + t * width + qd, kvd, k.data() + t * kvd);
    apply_rope(k.data() + t * kvd, kvh, hd, t, inv_freq_host_, c.rope_type);
  }
  auto per_head = [&](const float* rows, int64_t heads, int64_t stride) {
    const HeadsView view{rows, DType::f32, heads, n, hd, hd, stride};
    std::vector<Thresholds> t(static_cast<size_t>(heads));
    for (int64_t h = 0; h < heads; ++h) t[size_t(h)] = calibrate_head(view, h, 0, n);
    return t;
  };
  const std::vector<Thresholds> kt = per_head(k.data(), kvh, kvd), qt = per_head(q.data(), H, qd);
  // Query thresholds twice: in head order, and in the order of the group parts (part j = heads j, g + j, ...)
  // that decode uses for groups the kernels lack.
  std::vector<Thresholds> queries(qt);
  for (int64_t j = 0; j < g; ++j)
    for (int64_t kh = 0; kh < kvh; ++kh) queries.push_back(qt[size_t(kh * g + j)]);
  const int64_t at = int64_t(seq) * L + layer;
  check(cudaMemcpyAsync(thr_keys_ + at * kvh, kt.data(), kt.size() * sizeof(Thresholds), cudaMemcpyHostToDevice,
                        stream_), "calibrated thresholds");
  check(cudaMemcpyAsync(thr_queries_ + at * 2 * H, queries.data(), queries.size() * sizeof(Thresholds),
                        cudaMemcpyHostToDevice, stream_), "calibrated thresholds");
  check(cudaStreamSynchronize(stream_), "calibrated thresholds");  // the host vectors go out of scope
  if (layer == L - 1) calibrated_[size_t(seq)] = 1;
}

std::pair<const Thresholds*, int64_t> GpuEngine::key_thresholds(int64_t layer, int64_t n) {
  if (!thr_keys_) return {d_thr_, 1};
  const int64_t kvh = model_.config().n_kv_heads, L = model_.config().n_layers;
  gather_thresholds(thr_keys_, L * kvh, layer * kvh, kvh, d_slot_, n, thr_rows_, stream_);
  return {thr_rows_, n * kvh};
}

bool GpuEngine::sparse_decode_layer(int64_t layer, int64_t n) {
  const AttentionConfig& a = opt_.attention;
  if (layer < opt_.dense_layers) return false;
  const ModelConfig& c = model_.config();
  const int64_t H = c.n_heads, kvh = c.n_kv_heads, hd = c.head_dim, qd = c.q_dim(), g = H / kvh;
  if (a.method == Method::quest || a.method == Method::streaming) {
    RowSelection sel;
    sel.method = a.method, sel.budget = a.budget, sel.sink = a.streaming_sink;
    if (a.method == Method::quest) {
      quest_select_rows(q_, n, H, d_pos_, d_slot_, quest_, layer, a.budget, selected_, stream_);
      sel.quest = selected_;
    }
    attend_selected_rows(q_, n, H, d_pos_, d_slot_, cache_, layer, sel, att_, stream_);
    return true;
  }
  if (a.method != Method::adamas || !thr_queries_) return false;
  // Calibrated Adamas: the attention operator takes one set of query thresholds per call, so each row (sequence)
  // is its own call.
  const std::vector<SequenceCache> seqs = views(layer, cur_pos_, row_slot_.data(), n);
  const int64_t L = c.n_layers;
  for (int64_t r = 0; r < n; ++r) {
    const Thresholds* qt = thr_queries_ + (int64_t(row_slot_[size_t(r)]) * L + layer) * 2 * H;
    cuda::BatchInputs in;
    in.seqs = std::span<const SequenceCache>(&seqs[size_t(r)], 1);
    if (g == 1 || g == 2 || g == 4 || g == 8) {  // the groups the kernels have
      in.q = q_ + r * qd, in.n_heads = H, in.query_thresholds = qt;
      cuda::decode_attention(in, a, *ws_, att_ + r * qd, stream_);
      continue;
    }
    for (int64_t j = 0; j < g; ++j) {
      gather_group_part(q_ + r * qd, 1, kvh, g, j, hd, qpart_, stream_);
      in.q = qpart_, in.n_heads = kvh, in.query_thresholds = qt + H + j * kvh;
      cuda::decode_attention(in, a, *ws_, attpart_, stream_);
      scatter_group_part(attpart_, 1, kvh, g, j, hd, att_ + r * qd, stream_);
    }
  }
  return true;
}

void GpuEngine::prepare_steps(std::span<const int> seqs, int64_t steps) {
  for (int s : seqs)
    ADAMAS_CHECK(!thr_queries_ || calibrated_[size_t(s)], ErrorKind::invalid_argument,
                 "decode: sequence {} has no calibrated thresholds (they come from its first prefill)", s);
  if (!draws_->greedy()) draws_->draw(seqs, steps);
}

void GpuEngine::pick_tokens(int64_t rows) {
  const int64_t vocab = model_.config().vocab;
  if (!cur_draws_) return argmax_rows(logits_, rows, vocab, d_tok_, stream_);
  check(cudaMemcpyAsync(d_uniform_, cur_draws_, size_t(rows) * sizeof(double), cudaMemcpyHostToDevice, stream_),
        "sampling draws");
  sample_rows(logits_, rows, vocab, opt_.sampler, d_uniform_, d_tok_, stream_);
}

}  // namespace adamas::gpu
