// What the retrieval tasks (passkey, RULER-style needles) share: a prompt of prose "haystack" with needle sentences
// at chosen depths, and the paper's answering protocol (dense prefill except the last `sparse_tail` prompt tokens,
// which are decoded one at a time with the method under test, then greedy generation).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/session.h"
#include "model/tokenizer.h"

namespace adamas {

struct Needle {
  double depth = 0.5;  // in [0, 1] of the filler
  std::string text;
};

struct HaystackSpec {
  std::string intro;          // before the filler
  std::vector<Needle> needles;
  std::string question;       // after the filler
  std::string answer_prefix;  // the start of the assistant's answer, primed
  bool chat = true;           // ChatML user/assistant turns (SmolLM2's template)
};

struct HaystackPrompt {
  std::vector<int32_t> tokens;
  std::vector<int64_t> needle_tokens;  // where each needle starts (token index), in the spec's order
};

// `filler_tokens` tokens of `text` (whole lines from a seeded offset) with the needles inserted at their depths.
HaystackPrompt make_haystack_prompt(const Tokenizer& tokenizer, std::string_view text, int64_t filler_tokens,
                                    uint64_t seed, const HaystackSpec& spec);
// Tokens of the prompt around the filler (intro, needles, question, template): total = filler + this.
int64_t haystack_overhead(const Tokenizer& tokenizer, const HaystackSpec& spec);

struct Answer {
  std::string text;  // the generated text (special tokens skipped)
  int64_t decode_steps = 0;
  double prefill_s = 0, decode_s = 0;  // decode_s: the sparse tail and the generated tokens
};

// Runs `prompt` on a fresh sequence of `session` (which it resets): prefill all but the last `sparse_tail` tokens,
// decode those, then generate greedily up to `max_new_tokens` or an end-of-generation token.
Answer answer_prompt(Session& session, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                     int64_t sparse_tail, int64_t max_new_tokens);
// The same after the prefill: `session` holds exactly prompt[0, n - sparse_tail) (prefill_s is left 0).
Answer answer_after_prefill(Session& session, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                            int64_t sparse_tail, int64_t max_new_tokens);

}  // namespace adamas
