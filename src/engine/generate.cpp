#include "engine/generate.h"

#include <chrono>

#include "core/check.h"

namespace adamas {

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::end_of_generation: return "end of generation";
    case StopReason::n_predict: return "token limit";
    case StopReason::context_full: return "context full";
  }
  return "?";
}

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

GenerateResult generate(Session& session, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                        const GenerateOptions& options, const GenerateCallbacks& cb) {
  ADAMAS_CHECK(options.n_predict > 0, ErrorKind::invalid_argument, "tokens to predict = {} (expected > 0)",
               options.n_predict);
  ADAMAS_CHECK(!prompt.empty(), ErrorKind::invalid_argument, "the prompt is empty");
  ADAMAS_CHECK(session.position() + int64_t(prompt.size()) < session.context(), ErrorKind::invalid_argument,
               "the prompt ({} tokens) does not fit the context of {} tokens with room to generate (raise -c)",
               session.position() + int64_t(prompt.size()), session.context());
  Sampler sampler(options.sampler);
  GenerateResult r;
  r.prompt_tokens = int64_t(prompt.size());
  auto t0 = std::chrono::steady_clock::now();
  std::span<const float> logits = session.prefill(prompt, cb.on_prefill);
  r.prefill_s = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  for (;;) {
    const int32_t id = sampler.sample(logits);
    if (tokenizer.is_end_of_generation(id)) {
      r.stop = StopReason::end_of_generation;
      break;
    }
    r.tokens.push_back(id);
    if (cb.on_token) cb.on_token(id, tokenizer.token_bytes(id));
    if (int64_t(r.tokens.size()) >= options.n_predict) {
      r.stop = StopReason::n_predict;
      break;
    }
    if (session.position() >= session.context()) {
      r.stop = StopReason::context_full;
      break;
    }
    logits = session.decode(id);
    ++r.decode_steps;
  }
  r.decode_s = seconds_since(t0);
  return r;
}

std::vector<int32_t> tokenize_prompt(const Tokenizer& tokenizer, std::string_view text, bool chat) {
  std::vector<int32_t> ids;
  if (tokenizer.add_bos() && tokenizer.bos_id() >= 0) ids.push_back(tokenizer.bos_id());
  std::vector<int32_t> body;
  if (chat) {
    const ChatMessage m{"user", std::string(text)};
    body = tokenizer.encode(apply_chatml(std::span<const ChatMessage>(&m, 1)), true);
  } else {
    body = tokenizer.encode(text, true);
  }
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

}  // namespace adamas
