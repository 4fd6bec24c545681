// One prompt run under several attention variants with as few dense prefills as their caches allow: the prefill
// is dense for every method, so variants whose caches hold the same bytes (full, StreamingLLM and Adamas with
// fixed thresholds; Adamas with calibrated thresholds) continue one prefill, truncated back to the prompt's prefix
// before each. Quest's page bounds cannot be truncated: each Quest variant prefills on its own. What each variant
// then computes is what a fresh session would (tests/eval checks it).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "eval/prompt.h"
#include "eval/variant.h"

namespace adamas {

// Calls `run(i, session, prefill_s)` for each variant i (in an order that groups the variants sharing a prefill),
// `session` holding exactly `prefix` and set to the variant's attention, on a cache of `context` tokens.
// prefill_s is the shared prefill's time for the first variant of a group and 0 for the others.
void with_shared_prefill(const LlamaModel& model, std::span<const Variant> variants, int64_t context,
                         std::span<const int32_t> prefix,
                         const std::function<void(size_t, Session&, double)>& run);

// The retrieval protocol (answer_prompt) for every variant: `done(i, answer)` as variant i is answered.
void answer_variants(const LlamaModel& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                     std::span<const Variant> variants, int64_t sparse_tail, int64_t max_new_tokens,
                     const std::function<void(size_t, const Answer&)>& done);

}  // namespace adamas
