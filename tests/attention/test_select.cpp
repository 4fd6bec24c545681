// Select: select_topk against a full-sort reference with the documented tie rule, plus the invariants every
// selection must satisfy (count, increasing, distinct, in range, newest / sinks / window kept).
#include "reference.h"

namespace {

using adamas::SelectOptions;

// Runs select_topk with a poisoned output buffer (plus guard entries) and returns the selection.
std::vector<int32_t> run_select(const std::vector<uint16_t>& dist, int max_distance, const SelectOptions& o) {
  const int64_t n = int64_t(dist.size()), k = std::min(o.budget, n);
  std::vector<int32_t> out(size_t(k) + 4, -777);
  const int64_t count = adamas::select_topk(dist.data(), n, max_distance, o, out.data());
  EXPECT_EQ(count, k) << "select_topk must return min(budget, n)";
  for (size_t i = size_t(k); i < out.size(); ++i) EXPECT_EQ(out[i], -777) << "wrote past min(budget, n) entries";
  out.resize(size_t(std::clamp<int64_t>(count, 0, k)));
  return out;
}

// The invariants, independent of the reference.
void check_invariants(const std::vector<int32_t>& sel, int64_t n, const SelectOptions& o) {
  for (size_t i = 0; i < sel.size(); ++i) {
    ASSERT_GE(sel[i], 0);
    ASSERT_LT(sel[i], n);
    if (i > 0) { ASSERT_LT(sel[i - 1], sel[i]) << "not strictly increasing at " << i; }
  }
  const std::set<int32_t> s(sel.begin(), sel.end());
  EXPECT_TRUE(s.count(int32_t(n - 1))) << "newest token missing";
  for (int64_t i = 0; i < std::min(o.sink, n); ++i) EXPECT_TRUE(s.count(int32_t(i))) << "sink " << i << " missing";
  for (int64_t i = std::max<int64_t>(0, n - o.window); i < n; ++i)
    EXPECT_TRUE(s.count(int32_t(i))) << "window token " << i << " missing";
}

// Random options that pass validate_select: sink + max(window, 1) <= budget.
SelectOptions random_options(std::mt19937& rng, int64_t n) {
  SelectOptions o;
  o.budget = ref::uniform_int(rng, 1, n + 12);
  o.sink = ref::uniform_int(rng, 0, 2) == 0 ? 0 : ref::uniform_int(rng, 0, o.budget - 1);
  o.window = ref::uniform_int(rng, 0, 2) == 0 ? 0 : ref::uniform_int(rng, 0, o.budget - o.sink);
  return o;
}

std::vector<uint16_t> random_distances(std::mt19937& rng, int64_t n, int max_distance, int spread) {
  // a narrow band of values so that ties at the cut-off are frequent, as with real L1 distances
  const int lo = int(ref::uniform_int(rng, 0, std::max(0, max_distance - spread)));
  std::vector<uint16_t> d(static_cast<size_t>(n));
  for (auto& x : d) x = uint16_t(std::min<int>(max_distance, lo + int(ref::uniform_int(rng, 0, spread))));
  return d;
}

TEST(Select, MatchesReferenceRandom) {
  ADAMAS_SEEDED_RNG(rng);
  for (int rep = 0; rep < 300; ++rep) {
    const int64_t n = rep < 20 ? rep + 1 : ref::uniform_int(rng, 1, 3000);
    const int max_distance = int(3 * std::array<int64_t, 4>{32, 64, 128, 256}[size_t(rep % 4)]);
    const auto o = random_options(rng, n);
    const auto dist = random_distances(rng, n, max_distance, int(ref::uniform_int(rng, 0, 40)));
    SCOPED_TRACE(testing::Message() << "rep " << rep << ": n=" << n << " budget=" << o.budget << " sink=" << o.sink
                                    << " window=" << o.window << " max_distance=" << max_distance);
    const auto sel = run_select(dist, max_distance, o);
    check_invariants(sel, n, o);
    ASSERT_EQ(sel, ref::select_topk(dist, o));
  }
}

// All distances equal: the tie rule keeps the most recent tokens (after the forced sinks).
TEST(Select, TiesGoToRecentTokens) {
  ADAMAS_SEEDED_RNG(rng);
  const int64_t n = ref::uniform_int(rng, 50, 500);
  std::vector<uint16_t> dist(static_cast<size_t>(n), uint16_t(ref::uniform_int(rng, 0, 384)));
  SelectOptions o;
  o.budget = 20, o.sink = 3, o.window = 0;
  const auto sel = run_select(dist, 384, o);
  std::vector<int32_t> want = {0, 1, 2};
  for (int64_t i = n - 17; i < n; ++i) want.push_back(int32_t(i));
  EXPECT_EQ(sel, want);
}

// One token far better than all others is always kept, wherever it sits.
TEST(Select, BestTokenAlwaysKept) {
  ADAMAS_SEEDED_RNG(rng);
  for (int rep = 0; rep < 20; ++rep) {
    const int64_t n = ref::uniform_int(rng, 2, 2000), best = ref::uniform_int(rng, 0, n - 1);
    auto dist = random_distances(rng, n, 384, 100);
    for (auto& x : dist) x = uint16_t(std::max<int>(x, 1));
    dist[size_t(best)] = 0;
    SelectOptions o;
    o.budget = ref::uniform_int(rng, 2, 64);
    const auto sel = run_select(dist, 384, o);
    EXPECT_TRUE(std::binary_search(sel.begin(), sel.end(), int32_t(best))) << "n=" << n << " best=" << best;
  }
}

// Summed distances (shared_sum over a GQA group) exceed 3*dim: max_distance says so.
TEST(Select, SummedDistancesLargeRange) {
  ADAMAS_SEEDED_RNG(rng);
  for (int group : {2, 4, 8}) {
    const int max_distance = 3 * 512 * group;
    const int64_t n = ref::uniform_int(rng, 100, 5000);
    std::vector<uint16_t> dist(static_cast<size_t>(n));
    for (auto& x : dist) x = uint16_t(ref::uniform_int(rng, 0, max_distance));
    SelectOptions o;
    o.budget = ref::uniform_int(rng, 1, n);
    o.window = ref::uniform_int(rng, 0, std::min<int64_t>(8, o.budget));
    SCOPED_TRACE(testing::Message() << "group=" << group << " n=" << n << " budget=" << o.budget);
    const auto sel = run_select(dist, max_distance, o);
    check_invariants(sel, n, o);
    EXPECT_EQ(sel, ref::select_topk(dist, o));
  }
}

// Budgets beyond the context keep everything; budget 1 keeps only the newest token.
TEST(Select, BudgetEdges) {
  ADAMAS_SEEDED_RNG(rng);
  for (int64_t n : {1, 2, 17, 1000}) {
    const auto dist = random_distances(rng, n, 384, 384);
    for (int64_t budget : {n, n + 1, 10 * n}) {
      SelectOptions o;
      o.budget = budget;
      EXPECT_EQ(run_select(dist, 384, o), ref::all_tokens(n)) << "n=" << n << " budget=" << budget;
    }
    SelectOptions one;
    one.budget = 1;
    EXPECT_EQ(run_select(dist, 384, one), std::vector<int32_t>{int32_t(n - 1)}) << "n=" << n;
  }
}

// ~70K tokens, realistic budgets, with sink and window.
TEST(Select, LongContext70K) {
  ADAMAS_SEEDED_RNG(rng);
  const int64_t n = 70000 + ref::uniform_int(rng, 0, 999);
  const auto dist = random_distances(rng, n, 384, 200);
  for (int64_t budget : {64, 256, 2048}) {
    SelectOptions o;
    o.budget = budget, o.sink = 4, o.window = 16;
    SCOPED_TRACE(testing::Message() << "n=" << n << " budget=" << budget);
    const auto sel = run_select(dist, 384, o);
    check_invariants(sel, n, o);
    EXPECT_EQ(sel, ref::select_topk(dist, o));
  }
}

TEST(Select, ValidateOptions) {
  SelectOptions ok;
  ok.budget = 8, ok.sink = 3, ok.window = 5;
  EXPECT_NO_THROW(adamas::validate_select(ok));
  ok.window = 0, ok.sink = 7;  // sink + max(window, 1) == budget
  EXPECT_NO_THROW(adamas::validate_select(ok));
}

}  // namespace
