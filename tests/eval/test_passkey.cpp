// The passkey task: how the prompt is built, and a reduced run on the real model (skipped when it is absent):
// full attention finds the key in a 1K-token prompt of Austen, and Adamas with a budget covering the context
// answers exactly as full attention does.
#include <gtest/gtest.h>

#include "eval/passkey.h"
#include "eval/shared_prefill.h"
#include "eval_fixture.h"

namespace adamas {
namespace {

TEST(Passkey, RandomKeyHasTheDigitsAsked) {
  for (uint64_t seed = 0; seed < 50; ++seed) {
    const std::string k = random_key(seed, 5);
    ASSERT_EQ(k.size(), 5u);
    EXPECT_NE(k[0], '0');
    for (char c : k) EXPECT_TRUE(c >= '0' && c <= '9');
  }
  EXPECT_NE(random_key(1), random_key(2));
}

TEST(Passkey, PromptHoldsTheNeedleAtItsDepth) {
  NEED_MODEL();
  for (double depth : {0.0, 0.3, 1.0}) {
    const PasskeyPrompt p = make_passkey_prompt(L->tokenizer, L->text, 400, depth, "48151", 7);
    const std::string all = L->tokenizer.decode(p.tokens);
    EXPECT_NE(all.find("The pass key is 48151. Remember it. 48151 is the pass key."), std::string::npos);
    // The needle starts at needle_token: what follows it begins with the needle sentence.
    const std::string after = L->tokenizer.decode(std::span(p.tokens).subspan(size_t(p.needle_token)));
    EXPECT_EQ(after.rfind("\nThe pass key is 48151", 0), 0u) << "depth " << depth;
    // Before the needle: the intro plus depth * 400 filler tokens (the intro is ~30 tokens).
    EXPECT_NEAR(double(p.needle_token), 30 + depth * 400, 15) << "depth " << depth;
    EXPECT_NE(all.rfind("What is the pass key?"), std::string::npos);
  }
}

TEST(Passkey, BadInputsAreErrors) {
  NEED_MODEL();
  EXPECT_THROW(make_passkey_prompt(L->tokenizer, L->text, 0, 0.5, "1", 1), Error);
  EXPECT_THROW(make_passkey_prompt(L->tokenizer, L->text, 100, 1.5, "1", 1), Error);
  EXPECT_THROW(make_passkey_prompt(L->tokenizer, "too short", 100, 0.5, "1", 1), Error);
}

TEST(Passkey, FullAttentionFindsTheKeyAndABudgetOverTheContextAnswersTheSame) {
  NEED_MODEL();
  const int64_t filler = passkey_filler_for_length(L->tokenizer, 1024);
  const PasskeyPrompt p = make_passkey_prompt(L->tokenizer, L->text, filler, 0.5, random_key(3), 3);
  ASSERT_EQ(p.tokens.size(), 1024u);  // the length the eval command asks for is the prompt's length
  // Adamas with a budget covering every token must answer as full attention. One prefill serves both (the shared
  // prefill answers as fresh sessions do: tests/eval/test_tasks.cpp).
  const int64_t n = int64_t(p.tokens.size());
  const std::vector<Variant> variants{{Method::full, 0, false, GroupSelection::per_head},
                                      {Method::adamas, n + 16, false, GroupSelection::per_head}};
  std::string answers[2];
  answer_variants(L->model, L->tokenizer, p.tokens, variants, 50, 8,
                  [&](size_t i, const Answer& a) { answers[i] = a.text; });
  EXPECT_NE(answers[0].find(p.key), std::string::npos) << "full attention answered \"" << answers[0] << "\" for "
                                                       << p.key;
  EXPECT_EQ(answers[0], answers[1]);
}

}  // namespace
}  // namespace adamas
