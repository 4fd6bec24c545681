// The passkey retrieval task (Mohtashami & Jaggi 2023, as used by the Adamas paper): a random number hidden at a
// chosen depth of long prose, asked for at the end. Protocol as in the paper: the prompt is prefilled densely
// except its last `sparse_tail` tokens, which are decoded one at a time with the method under test, then the
// answer is generated greedily.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/session.h"
#include "model/tokenizer.h"

namespace adamas {

struct PasskeyPrompt {
  std::vector<int32_t> tokens;
  std::string key;           // the digits to retrieve
  int64_t needle_token = 0;  // where the needle sentence starts (token index)
};

// `filler_tokens` tokens of `text` (from a seeded offset) with the needle inserted at `depth` in [0, 1] of the
// filler; wrapped in the model's chat template when `chat`, the assistant's answer primed with "The pass key is".
PasskeyPrompt make_passkey_prompt(const Tokenizer& tokenizer, std::string_view text, int64_t filler_tokens,
                                  double depth, std::string key, uint64_t seed, bool chat = true);

// The filler that makes a prompt of `prompt_tokens` tokens in all (intro, needle, question and template included).
int64_t passkey_filler_for_length(const Tokenizer& tokenizer, int64_t prompt_tokens, bool chat = true);

struct PasskeyResult {
  std::string answer;    // the generated text
  bool found = false;    // the key's digits appear in the answer
  int64_t decode_steps = 0;
  double prefill_s = 0, decode_s = 0;  // decode_s: the sparse tail and the generated tokens
};

// Runs one prompt on a fresh sequence of `session` (which it resets).
PasskeyResult run_passkey(Session& session, const Tokenizer& tokenizer, const PasskeyPrompt& prompt,
                          int64_t sparse_tail = 100, int64_t max_new_tokens = 10);

// A random key of `digits` digits (no leading zero).
std::string random_key(uint64_t seed, int digits = 5);

}  // namespace adamas
