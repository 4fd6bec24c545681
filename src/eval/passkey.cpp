#include "eval/passkey.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <span>

#include "core/check.h"
#include "engine/sampler.h"

namespace adamas {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
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
  // Filler: whole lines of the text from a seeded start, tokenized, cut to the length.
  std::mt19937_64 rng(seed);
  const size_t approx_bytes = size_t(filler_tokens) * 6 + 1024;
  ADAMAS_CHECK(text.size() > approx_bytes, ErrorKind::invalid_argument,
               "passkey: the text ({} bytes) is too short for {} filler tokens", text.size(), filler_tokens);
  size_t start = rng() % (text.size() - approx_bytes);
  start = text.find('\n', start) + 1;
  std::vector<int32_t> filler = tokenizer.encode(text.substr(start, approx_bytes));
  ADAMAS_CHECK(int64_t(filler.size()) >= filler_tokens, ErrorKind::invalid_argument,
               "passkey: only {} filler tokens available", filler.size());
  filler.resize(size_t(filler_tokens));

  const std::string intro =
      "There is an important pass key hidden inside a lot of irrelevant text. Find it and memorize it. "
      "I will quiz you about the pass key.\n\n";
  const std::string needle = "\nThe pass key is " + key + ". Remember it. " + key + " is the pass key.\n";
  const std::string question = "\n\nWhat is the pass key?";
  const std::string answer_prefix = "The pass key is";
  std::string head, tail;
  if (chat) {
    // The ChatML turn around the user's message, the assistant's turn primed with the answer's start.
    head = "<|im_start|>user\n" + intro;
    tail = question + "<|im_end|>\n<|im_start|>assistant\n" + answer_prefix;
  } else {
    head = intro;
    tail = question + " " + answer_prefix;
  }
  PasskeyPrompt p;
  p.key = std::move(key);
  auto append = [&](const std::vector<int32_t>& ids) { p.tokens.insert(p.tokens.end(), ids.begin(), ids.end()); };
  if (tokenizer.add_bos() && tokenizer.bos_id() >= 0) p.tokens.push_back(tokenizer.bos_id());
  append(tokenizer.encode(head, true));
  const size_t cut = size_t(double(filler.size()) * depth);
  p.tokens.insert(p.tokens.end(), filler.begin(), filler.begin() + cut);
  p.needle_token = int64_t(p.tokens.size());
  append(tokenizer.encode(needle));
  p.tokens.insert(p.tokens.end(), filler.begin() + cut, filler.end());
  append(tokenizer.encode(tail, true));
  return p;
}

PasskeyResult run_passkey(Session& session, const Tokenizer& tokenizer, const PasskeyPrompt& prompt,
                          int64_t sparse_tail, int64_t max_new_tokens) {
  const int64_t n = int64_t(prompt.tokens.size());
  ADAMAS_CHECK(sparse_tail >= 1 && sparse_tail < n, ErrorKind::invalid_argument,
               "passkey: sparse tail of {} tokens for a prompt of {}", sparse_tail, n);
  ADAMAS_CHECK(n + max_new_tokens <= session.context(), ErrorKind::invalid_argument,
               "passkey: {} prompt + {} new tokens exceed the context of {}", n, max_new_tokens, session.context());
  session.reset();
  PasskeyResult r;
  auto t0 = std::chrono::steady_clock::now();
  session.prefill(std::span(prompt.tokens).first(size_t(n - sparse_tail)));
  r.prefill_s = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  std::span<const float> logits;
  for (int64_t i = n - sparse_tail; i < n; ++i) logits = session.decode(prompt.tokens[size_t(i)]);
  std::vector<int32_t> out;
  for (int64_t i = 0; i < max_new_tokens; ++i) {
    const int32_t id = argmax(logits);
    if (tokenizer.is_end_of_generation(id)) break;
    out.push_back(id);
    if (i + 1 < max_new_tokens) logits = session.decode(id);
  }
  r.decode_s = seconds_since(t0);
  r.decode_steps = sparse_tail + std::max<int64_t>(0, int64_t(out.size()) - 1);
  r.answer = tokenizer.decode(out, true);
  r.found = r.answer.find(prompt.key) != std::string::npos;
  return r;
}

}  // namespace adamas
