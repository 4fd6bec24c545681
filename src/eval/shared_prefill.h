// One retrieval prompt answered under several attention variants with as few dense prefills as their caches
// allow: the prefill is dense for every method, so variants whose caches hold the same bytes (full, StreamingLLM
// and Adamas with fixed thresholds; Adamas with calibrated thresholds) continue one prefill, truncated back to the
// prompt's prefix before each. Quest's page bounds cannot be truncated: each Quest variant prefills on its own.
// The answers are those of a fresh session per variant (tests/eval checks it).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "eval/prompt.h"
#include "eval/variant.h"

namespace adamas {

// Calls `done(i, answer)` as variant i is answered (in an order that groups the variants sharing a prefill);
// prefill_s is the shared prefill's time for the first variant of a group and 0 for the others.
void answer_variants(const LlamaModel& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                     std::span<const Variant> variants, int64_t sparse_tail, int64_t max_new_tokens,
                     const std::function<void(size_t, const Answer&)>& done);

}  // namespace adamas
