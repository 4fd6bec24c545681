// One sequence running through a Llama model on the CPU: the KV + code cache and the forward pass.
//
// prefill(): chunks of tokens, dense causal attention (attend_dense_causal) over the cache after appending the
// chunk's K/V, writing the key codes (Adamas) or page bounds (Quest) on the way.
// decode(): one token; attention by decode_attention() with the configured method in every layer from
// `dense_layers` on, full attention before.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "adamas/attention.h"
#include "engine/kv_cache.h"
#include "model/llama.h"

namespace adamas {

struct EngineOptions {
  int64_t context = 0;          // cache capacity in tokens; 0 = the model's trained context length
  AttentionConfig attention;    // the decode attention (method, budget, thresholds, ...)
  int64_t dense_layers = 2;     // the first layers decode with full attention (the paper keeps 2)
  int64_t prefill_chunk = 256;  // tokens per prefill pass (bounds the activation memory)
  DType kv_dtype = DType::f16;  // K/V storage
  // Adamas thresholds: false = attention.thresholds for every layer and head (the paper's fixed (-10, 0, 10));
  // true = calibrated per (layer, KV head) from the quartiles of the rotated keys of the sequence's first prefill
  // chunk, and per (layer, query head) from its queries. Codes already cached never change thresholds.
  bool calibrate_thresholds = false;
};
// Throws Error(invalid_argument) on options no session could run with (budget <= 0, context < 0, ...).
void validate_engine_options(const EngineOptions& options, const ModelConfig& config);

class Session {
 public:
  using Progress = std::function<void(int64_t done, int64_t total)>;

  // The model must outlive the session.
  Session(const LlamaModel& model, const EngineOptions& options);

  const EngineOptions& options() const { return opt_; }
  const LlamaModel& model() const { return model_; }
  int64_t position() const { return cache_.size(); }  // tokens in the cache
  int64_t context() const { return cache_.capacity(); }
  const KvCache& cache() const { return cache_; }

  // Appends `tokens` with dense causal attention and returns the logits after the last one (vocab floats, valid
  // until the next call). Error(invalid_argument) when empty, when an id is outside the vocabulary, or when the
  // tokens do not fit the context. `progress` is called after each chunk.
  std::span<const float> prefill(std::span<const int32_t> tokens, const Progress& progress = {});
  // Appends one token with the configured decode attention and returns its logits.
  std::span<const float> decode(int32_t token);
  // Empties the cache (a new sequence).
  void reset();
  // Keeps only the first n cached tokens, so one prefill can be continued under several attention configs (the
  // evaluation's shared prompt prefix). Error(unsupported) when the cache holds Quest pages (bounds cannot shrink).
  void truncate(int64_t n);
  // The decode attention of the next steps; the cache must hold what the method reads (codes for Adamas), and the
  // thresholds mode stays the session's. Error(invalid_argument) otherwise.
  void set_attention(const AttentionConfig& attention);

  // Attention time and rows of all decode steps so far (summed over layers).
  const DecodeTimings& decode_timings() const { return timings_; }

  // Called in decode() after each layer's attention, for recall studies (src/eval/recall.*): the layer, its
  // post-RoPE queries [n_heads][head_dim], and the workspace whose last_selection() holds the rows attended. The
  // layer's keys then span position() + 1 tokens (the new token is written, not yet committed).
  using DecodeObserver = std::function<void(int64_t layer, const float* q, const DecodeWorkspace& workspace)>;
  void set_decode_observer(DecodeObserver observer) { observer_ = std::move(observer); }

 private:
  void forward(const int32_t* tokens, int64_t n, bool decode);
  void reserve(int64_t n);

  // The thresholds of layer l: keys per KV head, queries per query head (empty until calibrated, or when fixed).
  void calibrate(int64_t layer, const float* q, const float* k, int64_t n);

  const LlamaModel& model_;
  EngineOptions opt_;
  std::vector<std::vector<Thresholds>> key_thresholds_, query_thresholds_;
  KvCache cache_;
  DecodeWorkspace workspace_;
  DecodeTimings timings_;
  DecodeObserver observer_;
  int64_t n_alloc_ = 0;
  std::vector<float> x_, h_, q_, k_, v_, att_, gate_, up_, logits_;
};

}  // namespace adamas
