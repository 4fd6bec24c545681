#include "eval/prompt.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>

#include "core/check.h"
#include "engine/sampler.h"

namespace adamas {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Whole lines of `text` from a seeded start, tokenized and cut to `n` tokens.
std::vector<int32_t> filler_tokens_of(const Tokenizer& tokenizer, std::string_view text, int64_t n, uint64_t seed) {
  ADAMAS_CHECK(n > 0, ErrorKind::invalid_argument, "haystack: filler of {} tokens", n);
  std::mt19937_64 rng(seed);
  const size_t approx_bytes = size_t(n) * 6 + 1024;  // prose runs ~4-5 bytes per token
  ADAMAS_CHECK(text.size() > approx_bytes, ErrorKind::invalid_argument,
               "haystack: the text ({} bytes) is too short for {} filler tokens", text.size(), n);
  size_t start = rng() % (text.size() - approx_bytes);
  start = text.find('\n', start) + 1;
  std::vector<int32_t> filler = tokenizer.encode(text.substr(start, approx_bytes));
  ADAMAS_CHECK(int64_t(filler.size()) >= n, ErrorKind::invalid_argument, "haystack: only {} filler tokens available",
               filler.size());
  filler.resize(size_t(n));
  return filler;
}

void head_and_tail(const HaystackSpec& spec, std::string& head, std::string& tail) {
  if (spec.chat) {
    head = "<|im_start|>user\n" + spec.intro;
    tail = spec.question + "<|im_end|>\n<|im_start|>assistant\n" + spec.answer_prefix;
  } else {
    head = spec.intro;
    tail = spec.question + " " + spec.answer_prefix;
  }
}

}  // namespace

HaystackPrompt make_haystack_prompt(const Tokenizer& tokenizer, std::string_view text, int64_t filler_tokens,
                                    uint64_t seed, const HaystackSpec& spec) {
  for (const Needle& nd : spec.needles)
    ADAMAS_CHECK(nd.depth >= 0 && nd.depth <= 1, ErrorKind::invalid_argument, "haystack: depth {} not in [0, 1]",
                 nd.depth);
  const std::vector<int32_t> filler = filler_tokens_of(tokenizer, text, filler_tokens, seed);
  std::string head, tail;
  head_and_tail(spec, head, tail);
  HaystackPrompt p;
  auto append = [&](const std::vector<int32_t>& ids) { p.tokens.insert(p.tokens.end(), ids.begin(), ids.end()); };
  if (tokenizer.add_bos() && tokenizer.bos_id() >= 0) p.tokens.push_back(tokenizer.bos_id());
  append(tokenizer.encode(head, true));
  // Needles in depth order (stable for equal depths), each reported in the spec's order.
  std::vector<size_t> order(spec.needles.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return spec.needles[a].depth < spec.needles[b].depth; });
  p.needle_tokens.resize(spec.needles.size());
  size_t done = 0;
  for (size_t i : order) {
    const size_t cut = size_t(double(filler.size()) * spec.needles[i].depth);
    p.tokens.insert(p.tokens.end(), filler.begin() + done, filler.begin() + cut);
    done = cut;
    p.needle_tokens[i] = int64_t(p.tokens.size());
    append(tokenizer.encode(spec.needles[i].text));
  }
  p.tokens.insert(p.tokens.end(), filler.begin() + done, filler.end());
  append(tokenizer.encode(tail, true));
  return p;
}

int64_t haystack_overhead(const Tokenizer& tokenizer, const HaystackSpec& spec) {
  std::string head, tail;
  head_and_tail(spec, head, tail);
  int64_t n = int64_t(tokenizer.encode(head, true).size() + tokenizer.encode(tail, true).size());
  for (const Needle& nd : spec.needles) n += int64_t(tokenizer.encode(nd.text).size());
  return n + (tokenizer.add_bos() && tokenizer.bos_id() >= 0 ? 1 : 0);
}

Answer answer_prompt(Session& session, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                     int64_t sparse_tail, int64_t max_new_tokens) {
  const int64_t n = int64_t(prompt.size());
  ADAMAS_CHECK(sparse_tail >= 1 && sparse_tail < n, ErrorKind::invalid_argument,
               "sparse tail of {} tokens for a prompt of {}", sparse_tail, n);
  ADAMAS_CHECK(n + max_new_tokens <= session.context(), ErrorKind::invalid_argument,
               "{} prompt + {} new tokens exceed the context of {}", n, max_new_tokens, session.context());
  session.reset();
  const auto t0 = std::chrono::steady_clock::now();
  session.prefill(prompt.first(size_t(n - sparse_tail)));
  const double prefill_s = seconds_since(t0);
  Answer r = answer_after_prefill(session, tokenizer, prompt, sparse_tail, max_new_tokens);
  r.prefill_s = prefill_s;
  return r;
}

Answer answer_after_prefill(Session& session, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                            int64_t sparse_tail, int64_t max_new_tokens) {
  const int64_t n = int64_t(prompt.size());
  ADAMAS_CHECK(sparse_tail >= 1 && sparse_tail < n, ErrorKind::invalid_argument,
               "sparse tail of {} tokens for a prompt of {}", sparse_tail, n);
  ADAMAS_CHECK(session.position() == n - sparse_tail, ErrorKind::invalid_argument,
               "the session holds {} tokens, not the {}-token prefix of the prompt", session.position(),
               n - sparse_tail);
  Answer r;
  const auto t0 = std::chrono::steady_clock::now();
  std::span<const float> logits;
  for (int64_t i = n - sparse_tail; i < n; ++i) logits = session.decode(prompt[size_t(i)]);
  std::vector<int32_t> out;
  for (int64_t i = 0; i < max_new_tokens; ++i) {
    const int32_t id = argmax(logits);
    if (tokenizer.is_end_of_generation(id)) break;
    out.push_back(id);
    if (i + 1 < max_new_tokens) logits = session.decode(id);
  }
  r.decode_s = seconds_since(t0);
  r.decode_steps = sparse_tail + std::max<int64_t>(0, int64_t(out.size()) - 1);
  r.text = tokenizer.decode(out, true);
  return r;
}

}  // namespace adamas
