// The generation loop: prefill the prompt, then sample and decode one token at a time until an end-of-generation
// token, n_predict tokens, or a full context.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/sampler.h"
#include "engine/session.h"
#include "model/tokenizer.h"

namespace adamas {

struct GenerateOptions {
  int64_t n_predict = 128;  // tokens to generate at most (> 0)
  SamplerConfig sampler;
};

enum class StopReason { end_of_generation, n_predict, context_full };
const char* stop_reason_name(StopReason r);

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (without the end-of-generation token)
  StopReason stop = StopReason::n_predict;
  int64_t prompt_tokens = 0;
  double prefill_s = 0, decode_s = 0;  // decode_s covers the decode steps of the generated tokens after the first
  int64_t decode_steps = 0;
};

struct GenerateCallbacks {
  std::function<void(int32_t id, std::string_view bytes)> on_token;  // each generated token, as it is made
  Session::Progress on_prefill;                                       // prefill progress
};

// Appends the prompt to the session's cache (which may already hold a conversation) and generates.
GenerateResult generate(Session& session, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                        const GenerateOptions& options, const GenerateCallbacks& callbacks = {});

// The prompt's token ids: `text` as is, or wrapped in the model's chat template (ChatML) as one user message;
// a BOS token first when the tokenizer asks for one. Special-token texts in the prompt are parsed as such.
std::vector<int32_t> tokenize_prompt(const Tokenizer& tokenizer, std::string_view text, bool chat);

}  // namespace adamas
