// The eval tasks besides passkey: variant grids, the recall and perplexity arithmetic against direct formulas, the
// RULER-style samples, and reduced runs on the real model (skipped when it is absent): perplexity finite and
// identical for full attention and a budget covering the context; recall 1 at such a budget and growing with it.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "eval/perplexity.h"
#include "eval/prompt.h"
#include "eval/recall.h"
#include "eval/ruler.h"
#include "eval/shared_prefill.h"
#include "eval/variant.h"
#include "eval_fixture.h"

namespace adamas {
namespace {

TEST(Variants, GridExpandsFullOnceAndAdamasOverThresholdsAndGroups) {
  const auto v = expand_variants({{"full", "adamas", "quest"}, {32, 64}, {"fixed", "calibrated"}, {"per-head", "shared"}});
  std::vector<std::string> names;
  for (const Variant& x : v) names.push_back(variant_name(x));
  const std::vector<std::string> want{"full",
                                      "adamas-32",
                                      "adamas-shared-sum-32",
                                      "adamas-cal-32",
                                      "adamas-cal-shared-sum-32",
                                      "adamas-64",
                                      "adamas-shared-sum-64",
                                      "adamas-cal-64",
                                      "adamas-cal-shared-sum-64",
                                      "quest-32",
                                      "quest-64"};
  EXPECT_EQ(names, want);
  const EngineOptions o = engine_options(v[3], 500);
  EXPECT_EQ(o.attention.method, Method::adamas);
  EXPECT_EQ(o.attention.budget, 32);
  EXPECT_TRUE(o.calibrate_thresholds);
  EXPECT_EQ(o.context, 500);
}

TEST(Variants, KeepPairsNameTheVariantAndReachTheEngine) {
  const auto v = expand_variants({{"full", "adamas", "streaming"}, {64}, {"calibrated"}, {"per-head"}, {"0:0", "4:16"}});
  std::vector<std::string> names;
  for (const Variant& x : v) names.push_back(variant_name(x));
  // Streaming has its own sink/window: the pairs multiply Adamas alone.
  EXPECT_EQ(names, (std::vector<std::string>{"full", "adamas-cal-64", "adamas-cal-s4w16-64", "streaming-64"}));
  const EngineOptions o = engine_options(v[2], 300);
  EXPECT_EQ(o.attention.sink, 4);
  EXPECT_EQ(o.attention.window, 16);
  EXPECT_EQ(engine_options(v[1], 300).attention.sink, 0);
  EXPECT_NO_THROW(validate_config(o.attention));
}

TEST(Variants, BadGridsAreErrors) {
  EXPECT_THROW(expand_variants({{"adamas"}, {64}, {"fixed"}, {"per-head"}, {"4-16"}}), Error);
  EXPECT_THROW(expand_variants({{"adamas"}, {64}, {"fixed"}, {"per-head"}, {"4:x"}}), Error);
  EXPECT_THROW(expand_variants({{"adamas"}, {64}, {"fixed"}, {"per-head"}, {"-1:4"}}), Error);
  EXPECT_THROW(expand_variants({{"adamas"}, {64}, {"fixed"}, {"per-head"}, {"4:16 "}}), Error);
  EXPECT_THROW(expand_variants({{"adamas"}, {16}, {"fixed"}, {"per-head"}, {"8:9"}}), Error);  // 17 > 16
  EXPECT_NO_THROW(expand_variants({{"adamas"}, {16}, {"fixed"}, {"per-head"}, {"8:8"}}));
  EXPECT_THROW(expand_variants({{"adamas"}, {16}, {"fixed"}, {"per-head"}, {}}), Error);
  EXPECT_THROW(expand_variants({{"adamas"}, {0}, {"fixed"}, {"per-head"}}), Error);
  EXPECT_THROW(expand_variants({{"adamas"}, {-4}, {"fixed"}, {"per-head"}}), Error);
  EXPECT_THROW(expand_variants({{"dense"}, {64}, {"fixed"}, {"per-head"}}), Error);
  EXPECT_THROW(expand_variants({{"adamas"}, {64}, {"learned"}, {"per-head"}}), Error);
  EXPECT_THROW(expand_variants({{"adamas"}, {64}, {"fixed"}, {"per-token"}}), Error);
  EXPECT_THROW(expand_variants({{}, {64}, {"fixed"}, {"per-head"}}), Error);
}

TEST(Perplexity, NegativeLogLikelihoodIsTheLogSoftmax) {
  const std::vector<float> logits{1.0f, 3.0f, -2.0f, 0.5f};
  double z = 0;
  for (float x : logits) z += std::exp(double(x));
  for (int32_t t = 0; t < 4; ++t) EXPECT_NEAR(negative_log_likelihood(logits, t), std::log(z) - logits[t], 1e-12);
  EXPECT_THROW(negative_log_likelihood(logits, 4), Error);
}

// Scores of n keys with a few large ones; the reference mass and top-k come from sorting in double precision.
TEST(Recall, SelectionRecallAgainstSortedReference) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0, 1);
  const int n = 300;
  std::vector<float> s(n);
  for (float& x : s) x = nd(rng) * 4;
  const float scale = 0.3f;
  std::vector<double> p(n);
  double z = 0;
  for (int j = 0; j < n; ++j) z += p[j] = std::exp(double(scale) * s[j]);
  std::vector<int32_t> by_score(n);
  for (int j = 0; j < n; ++j) by_score[j] = j;
  std::sort(by_score.begin(), by_score.end(), [&](int a, int b) { return s[a] > s[b]; });

  // Every row: all the mass, full overlap.
  const SelectionRecall all = selection_recall(s, scale, by_score);
  EXPECT_NEAR(all.mass, 1.0, 1e-12);
  EXPECT_EQ(all.overlap, 1.0);
  EXPECT_NEAR(all.oracle_mass, 1.0, 1e-12);
  // The exact top 20: overlap 1, mass = their probabilities.
  std::vector<int32_t> top(by_score.begin(), by_score.begin() + 20);
  double want = 0;
  for (int32_t j : top) want += p[j] / z;
  const SelectionRecall best = selection_recall(s, scale, top);
  EXPECT_NEAR(best.mass, want, 1e-7);  // the scores are f32
  EXPECT_EQ(best.overlap, 1.0);
  EXPECT_NEAR(best.oracle_mass, want, 1e-7);
  // Half of the top 20 swapped for the bottom 10: overlap 1/2, mass drops.
  std::vector<int32_t> mixed(by_score.begin(), by_score.begin() + 10);
  mixed.insert(mixed.end(), by_score.end() - 10, by_score.end());
  const SelectionRecall mix = selection_recall(s, scale, mixed);
  EXPECT_EQ(mix.overlap, 0.5);
  EXPECT_LT(mix.mass, best.mass);
  EXPECT_NEAR(mix.oracle_mass, want, 1e-7);  // the same size: the same best
  EXPECT_THROW(selection_recall(s, scale, std::vector<int32_t>{n}), Error);
}

TEST(Ruler, SamplesHoldTheirNeedlesAndScoresCountThem) {
  NEED_MODEL();
  for (RulerTask task : all_ruler_tasks()) {
    const RulerSample r = make_ruler_sample(task, L->tokenizer, L->text, 600, 11);
    EXPECT_NEAR(double(r.tokens.size()), 600.0, 2.0) << ruler_task_name(task);
    const std::string all = L->tokenizer.decode(r.tokens);
    ASSERT_FALSE(r.expected.empty());
    for (const std::string& e : r.expected) EXPECT_NE(all.find(e), std::string::npos) << e;
    // The samples differ with the seed.
    EXPECT_NE(make_ruler_sample(task, L->tokenizer, L->text, 600, 12).expected, r.expected);
  }
  // Variable tracking: the chain is laid out in order, each hop naming the previous variable.
  const RulerSample v = make_ruler_sample(RulerTask::vartrack, L->tokenizer, L->text, 600, 3);
  const std::string all = L->tokenizer.decode(v.tokens);
  for (size_t i = 1; i < v.expected.size(); ++i) {
    const size_t at = all.find("VAR " + v.expected[i] + " = VAR " + v.expected[i - 1] + ".");
    EXPECT_NE(at, std::string::npos);
    EXPECT_LT(all.find("VAR " + v.expected[i - 1] + " ="), at);
  }
  EXPECT_EQ(ruler_score("12 and 34", {"12", "34", "56", "78"}), 0.5);
  EXPECT_EQ(ruler_score("none", {"12"}), 0.0);
  EXPECT_THROW(parse_ruler_task("niah"), Error);
  EXPECT_THROW(make_ruler_sample(RulerTask::multikey, L->tokenizer, L->text, 40, 1), Error);
}

TEST(Haystack, NeedlesLandAtTheirDepthsInTheSpecOrder) {
  NEED_MODEL();
  HaystackSpec spec;
  spec.intro = "Read this.\n";
  spec.needles = {{0.75, "\nNEEDLE-B\n"}, {0.25, "\nNEEDLE-A\n"}};
  spec.question = "\nWhat?";
  spec.answer_prefix = "It is";
  const HaystackPrompt p = make_haystack_prompt(L->tokenizer, L->text, 400, 9, spec);
  EXPECT_EQ(int64_t(p.tokens.size()), 400 + haystack_overhead(L->tokenizer, spec));
  ASSERT_EQ(p.needle_tokens.size(), 2u);
  EXPECT_LT(p.needle_tokens[1], p.needle_tokens[0]);
  for (size_t i = 0; i < 2; ++i) {
    const std::string after = L->tokenizer.decode(std::span(p.tokens).subspan(size_t(p.needle_tokens[i])));
    EXPECT_EQ(after.rfind(spec.needles[i].text, 0), 0u);
  }
}

// Token-by-token perplexity on 128 tokens of Emma: finite, in a sane range for a 135M model on prose, and with a
// budget covering the context Adamas (and Quest, StreamingLLM) equal full attention bit for bit.
TEST(Perplexity, FiniteAndIdenticalForFullAndABudgetOverTheContext) {
  NEED_MODEL();
  const int64_t n = 128;
  std::vector<int32_t> tokens = L->tokenizer.encode(std::string_view(L->text).substr(20000, 4000));
  tokens.resize(size_t(n) + 1);
  const std::vector<int64_t> at{64, n};
  std::vector<std::vector<PerplexityPoint>> runs;
  for (Method m : {Method::full, Method::adamas, Method::streaming}) {
    Session s(L->model, engine_options({m, n, false, GroupSelection::per_head}, n));
    runs.push_back(run_perplexity(s, tokens, at));
  }
  ASSERT_EQ(runs[0].size(), 2u);
  for (const PerplexityPoint& p : runs[0]) {
    EXPECT_TRUE(std::isfinite(p.perplexity));
    EXPECT_GT(p.perplexity, 2.0);
    EXPECT_LT(p.perplexity, 200.0);
  }
  for (size_t r = 1; r < runs.size(); ++r)
    for (size_t i = 0; i < at.size(); ++i) EXPECT_EQ(runs[r][i].nll_sum, runs[0][i].nll_sum) << r << " " << i;
  // A budget well below the context changes the predictions (the sparse path is really taken).
  Session s(L->model, engine_options({Method::adamas, 16, false, GroupSelection::per_head}, n));
  EXPECT_NE(run_perplexity(s, tokens, at)[1].nll_sum, runs[0][1].nll_sum);
  EXPECT_THROW(run_perplexity(s, tokens, std::vector<int64_t>{n + 1}), Error);
  EXPECT_THROW(run_perplexity(s, tokens, std::vector<int64_t>{0}), Error);
}

// Recall on a real prompt: 1 at a budget covering the context, and growing with the budget below it.
TEST(Recall, OneAtABudgetOverTheContextAndGrowingWithTheBudget) {
  NEED_MODEL();
  const HaystackPrompt p = make_haystack_prompt(L->tokenizer, L->text, 300, 4, HaystackSpec{});
  const int64_t n = int64_t(p.tokens.size());
  std::vector<double> mass;
  for (int64_t budget : {int64_t(8), int64_t(32), int64_t(128), n}) {
    Session s(L->model, engine_options({Method::adamas, budget, false, GroupSelection::per_head}, n));
    const RecallResult r = run_recall(s, p.tokens, 4);
    ASSERT_EQ(int64_t(r.layers.size()), L->model.config().n_layers);
    EXPECT_EQ(r.layers[0].mass, 1.0);  // the dense layers attend everything
    if (budget >= n) {
      EXPECT_NEAR(r.mass, 1.0, 1e-9);
      EXPECT_EQ(r.overlap, 1.0);
    } else {
      EXPECT_LE(r.mass, r.oracle_mass + 1e-9);  // no selection beats the exact top-k
      EXPECT_LT(r.mass, 1.0);
      EXPECT_GT(r.mass, 0.0);
    }
    mass.push_back(r.mass);
  }
  for (size_t i = 1; i < mass.size(); ++i) EXPECT_GT(mass[i], mass[i - 1]) << "budget step " << i;
  Session s(L->model, engine_options({Method::adamas, 8, false, GroupSelection::per_head}, n));
  EXPECT_THROW(run_recall(s, p.tokens, 0), Error);
  EXPECT_THROW(run_recall(s, p.tokens, n), Error);
}

// One prefill continued (truncated back to the prefix) under several variants answers exactly as a fresh session
// per variant does; a Quest cache refuses to be truncated.
TEST(SharedPrefill, AnswersAsFreshSessions) {
  NEED_MODEL();
  HaystackSpec spec;
  spec.intro = "Read the text, then answer.\n";
  spec.needles = {{0.4, "\nThe magic word is bluebell.\n"}};
  spec.question = "\nWhat is the magic word?";
  spec.answer_prefix = "The magic word is";
  const std::vector<int32_t> prompt = make_haystack_prompt(L->tokenizer, L->text, 260, 2, spec).tokens;
  const std::vector<Variant> variants{{Method::adamas, 16, false, GroupSelection::per_head},
                                      {Method::full, 0, false, GroupSelection::per_head}};
  const int64_t tail = 40, max_new = 6;
  std::vector<std::string> shared(variants.size());
  std::vector<double> prefill_s(variants.size());
  answer_variants(L->model, L->tokenizer, prompt, variants, tail, max_new, [&](size_t i, const Answer& a) {
    shared[i] = a.text;
    prefill_s[i] = a.prefill_s;
  });
  EXPECT_EQ((prefill_s[0] > 0) + (prefill_s[1] > 0), 1) << "one prefill for both";
  for (size_t i = 0; i < variants.size(); ++i) {
    Session s(L->model, engine_options(variants[i], int64_t(prompt.size()) + max_new));
    EXPECT_EQ(answer_prompt(s, L->tokenizer, prompt, tail, max_new).text, shared[i]) << variant_name(variants[i]);
  }
  Session quest(L->model, engine_options({Method::quest, 16, false, GroupSelection::per_head}, 64));
  quest.prefill(std::span(prompt).first(20));
  EXPECT_THROW(quest.truncate(10), Error);
  Session full(L->model, engine_options(variants[1], 64));
  EXPECT_THROW(full.set_attention(engine_options(variants[0], 64).attention), Error);  // no codes in its cache
}

}  // namespace
}  // namespace adamas
