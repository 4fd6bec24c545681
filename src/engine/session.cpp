#include "engine/session.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace adamas {

void validate_engine_options(const EngineOptions& o, const ModelConfig& c) {
  ADAMAS_CHECK(o.context >= 0, ErrorKind::invalid_argument, "context = {} tokens (expected > 0, or 0 for the model's {})",
               o.context, c.context_length);
  ADAMAS_CHECK(o.context <= c.context_length, ErrorKind::invalid_argument,
               "context = {} tokens exceeds the model's trained context length of {}", o.context, c.context_length);
  ADAMAS_CHECK(o.dense_layers >= 0, ErrorKind::invalid_argument, "dense layers = {} (expected >= 0)", o.dense_layers);
  ADAMAS_CHECK(o.prefill_chunk > 0, ErrorKind::invalid_argument, "prefill chunk = {} tokens (expected > 0)",
               o.prefill_chunk);
  validate_config(o.attention);
  ADAMAS_CHECK(is_supported_dim(c.head_dim), ErrorKind::unsupported,
               "head_dim {} is not supported by the attention operator (powers of two in [16, 512])", c.head_dim);
}

namespace {

KvCacheOptions cache_options(const ModelConfig& c, const EngineOptions& o) {
  validate_engine_options(o, c);
  KvCacheOptions k;
  k.layers = c.n_layers;
  k.kv_heads = c.n_kv_heads;
  k.head_dim = c.head_dim;
  k.capacity = o.context > 0 ? o.context : c.context_length;
  k.dtype = o.kv_dtype;
  const bool sparse_layers = o.dense_layers < c.n_layers;
  k.codes = sparse_layers && o.attention.method == Method::adamas;
  k.pages = sparse_layers && o.attention.method == Method::quest;
  return k;
}

}  // namespace

Session::Session(const LlamaModel& model, const EngineOptions& options)
    : model_(model), opt_(options), cache_(cache_options(model.config(), options)) {
  logits_.resize(size_t(model.config().vocab));
}

void Session::reset() {
  cache_.clear();
  timings_ = {};
  key_thresholds_.clear();
  query_thresholds_.clear();
}

void Session::truncate(int64_t n) {
  ADAMAS_CHECK(n >= 0, ErrorKind::invalid_argument, "truncate to {} tokens (expected >= 0)", n);
  ADAMAS_CHECK(n >= position() || !cache_.options().pages, ErrorKind::unsupported,
               "truncate: Quest's page bounds cannot drop tokens (start a new sequence instead)");
  cache_.truncate(n);
}

void Session::set_attention(const AttentionConfig& a) {
  validate_config(a);
  const bool sparse_layers = opt_.dense_layers < model_.config().n_layers;
  ADAMAS_CHECK(!sparse_layers || a.method != Method::adamas || cache_.options().codes, ErrorKind::invalid_argument,
               "set_attention: Adamas needs key codes, and this session's cache was made without them");
  ADAMAS_CHECK(!sparse_layers || a.method != Method::quest || cache_.options().pages, ErrorKind::invalid_argument,
               "set_attention: Quest needs page bounds, and this session's cache was made without them");
  opt_.attention = a;
}

void Session::calibrate(int64_t layer, const float* q, const float* k, int64_t n) {
  const ModelConfig& c = model_.config();
  if (key_thresholds_.empty()) {
    key_thresholds_.resize(size_t(c.n_layers));
    query_thresholds_.resize(size_t(c.n_layers));
  }
  auto per_head = [&](const float* rows, int64_t heads, int64_t stride) {
    const HeadsView view{rows, DType::f32, heads, n, c.head_dim, c.head_dim, stride};
    std::vector<Thresholds> t(static_cast<size_t>(heads));
    for (int64_t h = 0; h < heads; ++h) t[size_t(h)] = calibrate_head(view, h, 0, n);
    return t;
  };
  key_thresholds_[size_t(layer)] = per_head(k, c.n_kv_heads, c.kv_dim());
  query_thresholds_[size_t(layer)] = per_head(q, c.n_heads, c.q_dim());
}

void Session::reserve(int64_t n) {
  if (n <= n_alloc_) return;
  const ModelConfig& c = model_.config();
  x_.resize(size_t(n * c.dim));
  h_.resize(size_t(n * std::max(c.dim, c.q_dim())));
  q_.resize(size_t(n * c.q_dim()));
  k_.resize(size_t(n * c.kv_dim()));
  v_.resize(size_t(n * c.kv_dim()));
  att_.resize(size_t(n * c.q_dim()));
  gate_.resize(size_t(n * c.ffn_dim));
  up_.resize(size_t(n * c.ffn_dim));
  n_alloc_ = n;
}

std::span<const float> Session::prefill(std::span<const int32_t> tokens, const Progress& progress) {
  const int64_t n = int64_t(tokens.size());
  ADAMAS_CHECK(n > 0, ErrorKind::invalid_argument, "prefill: no tokens");
  ADAMAS_CHECK(position() + n <= context(), ErrorKind::invalid_argument,
               "{} tokens do not fit the context: {} cached + {} > {} (raise -c)", n, position(), n, context());
  for (int32_t t : tokens)
    ADAMAS_CHECK(0 <= t && t < model_.config().vocab, ErrorKind::invalid_argument, "token id {} not in [0, {})", t,
                 model_.config().vocab);
  for (int64_t done = 0; done < n;) {
    const int64_t m = std::min(opt_.prefill_chunk, n - done);
    forward(tokens.data() + done, m, false);
    done += m;
    if (progress) progress(done, n);
  }
  return logits_;
}

std::span<const float> Session::decode(int32_t token) {
  ADAMAS_CHECK(position() < context(), ErrorKind::invalid_argument, "decode: the context of {} tokens is full",
               context());
  ADAMAS_CHECK(0 <= token && token < model_.config().vocab, ErrorKind::invalid_argument, "token id {} not in [0, {})",
               token, model_.config().vocab);
  forward(&token, 1, true);
  return logits_;
}

void Session::forward(const int32_t* tokens, int64_t n, bool decode) {
  const ModelConfig& c = model_.config();
  reserve(n);
  const int64_t dim = c.dim, qd = c.q_dim(), kvd = c.kv_dim(), ffn = c.ffn_dim, hd = c.head_dim;
  const int64_t p0 = position(), end = p0 + n;
  const float scale = 1.0f / std::sqrt(float(hd));
  const std::vector<float>& inv_freq = model_.rope_inv_freq();
  float *x = x_.data(), *h = h_.data(), *q = q_.data(), *k = k_.data(), *v = v_.data(), *att = att_.data(),
        *gate = gate_.data(), *up = up_.data();

  for (int64_t t = 0; t < n; ++t) model_.embed(tokens[t], x + t * dim);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model_.layer(l);
#pragma omp parallel for if (n > 1)
    for (int64_t t = 0; t < n; ++t) rms_norm(x + t * dim, w.attn_norm.data(), dim, c.norm_eps, h + t * dim);
    const MatmulTarget qkv[] = {{&w.wq, q, qd}, {&w.wk, k, kvd}, {&w.wv, v, kvd}};
    matmul(qkv, h, n, dim);
    add_bias(q, w.bq, n, qd);
    add_bias(k, w.bk, n, kvd);
    add_bias(v, w.bv, n, kvd);
#pragma omp parallel for if (n > 1)
    for (int64_t t = 0; t < n; ++t) {
      apply_rope(q + t * qd, c.n_heads, hd, p0 + t, inv_freq, c.rope_type);
      apply_rope(k + t * kvd, c.n_kv_heads, hd, p0 + t, inv_freq, c.rope_type);
    }
    // Calibrated thresholds come from the first tokens of the sequence, before any code is written.
    const bool calibrating = opt_.calibrate_thresholds && p0 == 0;
    if (calibrating) calibrate(l, q, k, n);
    const std::span<const Thresholds> key_th =
        opt_.calibrate_thresholds ? std::span<const Thresholds>(key_thresholds_[size_t(l)])
                                  : std::span<const Thresholds>(&opt_.attention.thresholds, 1);
    cache_.write(l, k, v, n, kvd, key_th);
    const HeadsView kv = cache_.keys(l, end), vv = cache_.values(l, end);
    if (!decode) {
      attend_dense_causal(q, n, c.n_heads, qd, kv, vv, scale, att, qd);
    } else {
      DecodeInputs in;
      in.q = q;
      in.n_heads = c.n_heads;
      in.k = kv;
      in.v = vv;
      in.codes = cache_.codes(l, end);
      in.pages = cache_.pages(l);
      if (opt_.calibrate_thresholds) in.query_thresholds = query_thresholds_[size_t(l)];
      AttentionConfig ac = opt_.attention;
      if (l < opt_.dense_layers) ac.method = Method::full;
      decode_attention(in, ac, workspace_, att, &timings_);
      if (observer_) observer_(l, q, workspace_);
    }
    matmul(w.wo, att, n, qd, h, dim);
    for (int64_t i = 0; i < n * dim; ++i) x[i] += h[i];
#pragma omp parallel for if (n > 1)
    for (int64_t t = 0; t < n; ++t) rms_norm(x + t * dim, w.ffn_norm.data(), dim, c.norm_eps, h + t * dim);
    const MatmulTarget gate_up[] = {{&w.gate, gate, ffn}, {&w.up, up, ffn}};
    matmul(gate_up, h, n, dim);
    swiglu(gate, up, n * ffn);
    matmul(w.down, gate, n, ffn, h, dim);
    for (int64_t i = 0; i < n * dim; ++i) x[i] += h[i];
  }
  cache_.commit(n);
  // Logits of the last token only.
  float* last = x + (n - 1) * dim;
  rms_norm(last, model_.output_norm().data(), dim, c.norm_eps, h);
  matmul(model_.output(), h, 1, dim, logits_.data(), c.vocab);
}

}  // namespace adamas
