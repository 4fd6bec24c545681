#include "eval/passkey.h"

#include <random>

#include "core/check.h"
#include "eval/prompt.h"

namespace adamas {

namespace {

HaystackSpec passkey_spec(const std::string& key, double depth, bool chat) {
  HaystackSpec s;
  s.intro =
      "There is an important pass key hidden inside a lot of irrelevant text. Find it and memorize it. "
      "I will quiz you about the pass key.\n\n";
  s.needles = {{depth, "\nThe pass key is " + key + ". Remember it. " + key + " is the pass key.\n"}};
  s.question = "\n\nWhat is the pass key?";
  s.answer_prefix = "The pass key is";
  s.chat = chat;
  return s;
}

}  // namespace

std::string random_key(uint64_t seed, int digits) {
  std::mt19937_64 rng(seed);
  std::string key(1, char('1' + rng() % 9));
  while (int(key.size()) < digits) key += char('0' + rng() % 10);
  return key;
}

PasskeyPrompt make_passkey_prompt(const Tokenizer& tokenizer, std::string_view text, int64_t filler_tokens,
                                  double depth, std::string key, uint64_t seed, bool chat) {
  ADAMAS_CHECK(filler_tokens > 0, ErrorKind::invalid_argument, "passkey: filler of {} tokens", filler_tokens);
  ADAMAS_CHECK(depth >= 0 && depth <= 1, ErrorKind::invalid_argument, "passkey: depth {} not in [0, 1]", depth);
  HaystackPrompt h = make_haystack_prompt(tokenizer, text, filler_tokens, seed, passkey_spec(key, depth, chat));
  PasskeyPrompt p;
  p.tokens = std::move(h.tokens);
  p.key = std::move(key);
  p.needle_token = h.needle_tokens[0];
  return p;
}

int64_t passkey_filler_for_length(const Tokenizer& tokenizer, int64_t prompt_tokens, bool chat) {
  const int64_t overhead = haystack_overhead(tokenizer, passkey_spec("12345", 0.5, chat));
  ADAMAS_CHECK(prompt_tokens > overhead, ErrorKind::invalid_argument,
               "passkey: a prompt of {} tokens has no room for filler (the question alone takes {})", prompt_tokens,
               overhead);
  return prompt_tokens - overhead;
}

PasskeyResult run_passkey(Session& session, const Tokenizer& tokenizer, const PasskeyPrompt& prompt,
                          int64_t sparse_tail, int64_t max_new_tokens) {
  const Answer a = answer_prompt(session, tokenizer, prompt.tokens, sparse_tail, max_new_tokens);
  PasskeyResult r;
  r.answer = a.text;
  r.found = a.text.find(prompt.key) != std::string::npos;
  r.decode_steps = a.decode_steps;
  r.prefill_s = a.prefill_s;
  r.decode_s = a.decode_s;
  return r;
}

}  // namespace adamas
