// The passkey task: how the prompt is built, and a reduced run on the real model (skipped when it is absent):
// full attention finds the key in a 1K-token prompt of Austen, and Adamas with a budget covering the context
// answers exactly as full attention does.
#include <gtest/gtest.h>

#include "eval/passkey.h"
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
  std::string answers[2];
  int i = 0;
  for (Method m : {Method::full, Method::adamas}) {
    EngineOptions o;
    o.context = int64_t(p.tokens.size()) + 16;
    o.attention.method = m;
    o.attention.budget = o.context;  // covers every token: Adamas must equal full attention
    Session s(L->model, o);
    const PasskeyResult r = run_passkey(s, L->tokenizer, p, 50, 8);
    answers[i++] = r.answer;
    if (m == Method::full) {
      EXPECT_TRUE(r.found) << "full attention answered \"" << r.answer << "\" for " << p.key;
    }
  }
  EXPECT_EQ(answers[0], answers[1]);
}

}  // namespace
}  // namespace adamas
