#include "eval/shared_prefill.h"

#include <chrono>
#include <map>

#include "core/check.h"

namespace adamas {

namespace {

// Variants with the same key can share a cache: codes with fixed thresholds serve full, StreamingLLM and Adamas
// (full and StreamingLLM do not read them); calibrated codes depend on the sequence; Quest's pages never shrink.
int64_t cache_family(const Variant& v, size_t index) {
  if (v.method == Method::quest) return 2 + int64_t(index);
  return v.method == Method::adamas && v.calibrated ? 1 : 0;
}

}  // namespace

void with_shared_prefill(const LlamaModel& model, std::span<const Variant> variants, int64_t context,
                         std::span<const int32_t> prefix,
                         const std::function<void(size_t, Session&, double)>& run) {
  ADAMAS_CHECK(!prefix.empty(), ErrorKind::invalid_argument, "shared prefill: empty prefix");
  std::map<int64_t, std::vector<size_t>> families;
  for (size_t i = 0; i < variants.size(); ++i) families[cache_family(variants[i], i)].push_back(i);
  for (const auto& [family, members] : families) {
    // The session is made for a member that needs the most (Adamas: codes), then switched per member.
    size_t maker = members[0];
    for (size_t i : members)
      if (variants[i].method == Method::adamas) maker = i;
    Session session(model, engine_options(variants[maker], context));
    const auto t0 = std::chrono::steady_clock::now();
    session.prefill(prefix);
    double prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (size_t i : members) {
      session.truncate(int64_t(prefix.size()));
      session.set_attention(engine_options(variants[i], context).attention);
      run(i, session, prefill_s);
      prefill_s = 0;
    }
  }
}

void answer_variants(const LlamaModel& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                     std::span<const Variant> variants, int64_t sparse_tail, int64_t max_new_tokens,
                     const std::function<void(size_t, const Answer&)>& done) {
  const int64_t n = int64_t(prompt.size());
  ADAMAS_CHECK(sparse_tail >= 1 && sparse_tail < n, ErrorKind::invalid_argument,
               "sparse tail of {} tokens for a prompt of {}", sparse_tail, n);
  with_shared_prefill(model, variants, n + max_new_tokens, prompt.first(size_t(n - sparse_tail)),
                      [&](size_t i, Session& session, double prefill_s) {
                        Answer a = answer_after_prefill(session, tokenizer, prompt, sparse_tail, max_new_tokens);
                        a.prefill_s = prefill_s;
                        done(i, a);
                      });
}

}  // namespace adamas
