#include "eval/shared_prefill.h"

#include <map>
#include <optional>

namespace adamas {

namespace {

// Variants with the same key can share a cache: codes with fixed thresholds serve full, StreamingLLM and Adamas
// (full and StreamingLLM do not read them); calibrated codes depend on the sequence; Quest's pages never shrink.
int64_t cache_family(const Variant& v, size_t index) {
  if (v.method == Method::quest) return 2 + int64_t(index);
  return v.method == Method::adamas && v.calibrated ? 1 : 0;
}

}  // namespace

void answer_variants(const LlamaModel& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                     std::span<const Variant> variants, int64_t sparse_tail, int64_t max_new_tokens,
                     const std::function<void(size_t, const Answer&)>& done) {
  const int64_t context = int64_t(prompt.size()) + max_new_tokens;
  std::map<int64_t, std::vector<size_t>> families;
  for (size_t i = 0; i < variants.size(); ++i) families[cache_family(variants[i], i)].push_back(i);
  for (const auto& [family, members] : families) {
    // The session is made for a member that needs the most (Adamas: codes), then switched per member.
    size_t maker = members[0];
    for (size_t i : members)
      if (variants[i].method == Method::adamas) maker = i;
    Session session(model, engine_options(variants[maker], context));
    bool first = true;
    for (size_t i : members) {
      Answer a;
      session.set_attention(engine_options(variants[i], context).attention);
      if (first) {
        a = answer_prompt(session, tokenizer, prompt, sparse_tail, max_new_tokens);
        first = false;
      } else {
        session.truncate(int64_t(prompt.size()) - sparse_tail);
        a = answer_after_prefill(session, tokenizer, prompt, sparse_tail, max_new_tokens);
      }
      done(i, a);
    }
  }
}

}  // namespace adamas
