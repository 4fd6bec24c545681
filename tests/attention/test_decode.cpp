// decode_attention: Method::full against fp64 dense attention; Method::adamas selections (per_head, shared_sum,
// shared_union, sink/window, calibrated query thresholds) against the full-sort reference on reference codes, its
// output against fp64 attention over the reference selection; dense when the budget covers the context; a planted
// key; a ~70K context; workspace reuse.
#include <thread>

#include "reference.h"

namespace {

using adamas::AttentionConfig;
using adamas::DType;
using adamas::GroupSelection;
using adamas::Method;
using adamas::Thresholds;
using ref::Layout;

const DType kDtypes[] = {DType::f32, DType::f16, DType::bf16};
const Layout kLayouts[] = {Layout::contiguous, Layout::padded, Layout::interleaved};
// Thresholds at the quartiles of a standard normal: rotated N(0,1) keys use all four codes about equally.
const Thresholds kQuartiles{-0.6745f, 0.0f, 0.6745f};

AttentionConfig config(Method m, int64_t budget, GroupSelection g = GroupSelection::per_head) {
  AttentionConfig c;
  c.method = m, c.budget = budget, c.group = g, c.thresholds = kQuartiles;
  return c;
}

// The reference selection of every query head for an adamas config.
std::vector<std::vector<int32_t>> reference_selections(const ref::DecodeCase& c, const AttentionConfig& cfg) {
  adamas::SelectOptions o;
  o.budget = cfg.budget, o.sink = cfg.sink, o.window = cfg.window;
  std::vector<std::vector<int32_t>> sel(size_t(c.n_heads));
  for (int64_t g = 0; g < c.kv; ++g) {
    std::vector<int> sum(size_t(c.tokens), 0);
    std::vector<int32_t> uni;
    for (int64_t h = g * c.group; h < (g + 1) * c.group; ++h) {
      const auto dist = c.distances(h);
      for (int64_t j = 0; j < c.tokens; ++j) sum[size_t(j)] += dist[size_t(j)];
      sel[size_t(h)] = ref::select_topk(dist, o);
      uni = ref::set_union(uni, sel[size_t(h)]);
    }
    for (int64_t h = g * c.group; h < (g + 1) * c.group; ++h) {
      if (cfg.group == GroupSelection::shared_sum) sel[size_t(h)] = ref::select_topk(sum, o);
      if (cfg.group == GroupSelection::shared_union) sel[size_t(h)] = uni;
    }
  }
  return sel;
}

// Checks last_selection and the output of every head against the reference selections; returns failures.
int check_against(const ref::DecodeCase& c, const std::vector<float>& out, const adamas::DecodeWorkspace& ws,
                  const std::vector<std::vector<int32_t>>& want_sel) {
  const double scale = 1.0 / std::sqrt(double(c.d));
  int bad = 0;
  for (int64_t h = 0; h < c.n_heads && bad == 0; ++h) {
    const auto got = ref::last_selection(ws, h);
    if (got != want_sel[size_t(h)]) {
      ++bad;
      std::vector<int32_t> missing, extra;
      std::set_difference(want_sel[size_t(h)].begin(), want_sel[size_t(h)].end(), got.begin(), got.end(),
                          std::back_inserter(missing));
      std::set_difference(got.begin(), got.end(), want_sel[size_t(h)].begin(), want_sel[size_t(h)].end(),
                          std::back_inserter(extra));
      ADD_FAILURE() << "head " << h << ": selection of " << got.size() << " tokens, want " << want_sel[size_t(h)].size()
                    << "; " << missing.size() << " missing (first " << (missing.empty() ? -1 : missing[0]) << "), "
                    << extra.size() << " extra (first " << (extra.empty() ? -1 : extra[0]) << ")";
    }
    if (std::all_of(&out[size_t(h * c.d)], &out[size_t((h + 1) * c.d)], [](float x) { return std::isnan(x); })) {
      ADD_FAILURE() << "head " << h << " (of group size " << c.group << "): output never written (still NaN poison)";
      ++bad;
      continue;
    }
    const auto want = ref::attention(c.q_head(h), c.k, c.v, h / c.group, want_sel[size_t(h)], scale);
    bad += ref::expect_attention_near(&out[size_t(h * c.d)], want, c.v.rms(), int64_t(want_sel[size_t(h)].size()),
                                      "head " + std::to_string(h) + " output");
  }
  return bad;
}

TEST(Decode, FullMatchesReference) {
  ADAMAS_SEEDED_RNG(rng);
  adamas::DecodeWorkspace ws;
  for (int64_t group = 1; group <= 8; ++group) {
    for (DType dtype : kDtypes) {
      const int64_t d = std::array<int64_t, 4>{32, 64, 128, 256}[size_t(ref::uniform_int(rng, 0, 3))];
      const int64_t kv = ref::uniform_int(rng, 1, 2), tokens = group == 1 ? 1 : ref::uniform_int(rng, 2, 1500);
      const Layout layout = kLayouts[size_t(ref::uniform_int(rng, 0, 2))];
      SCOPED_TRACE(testing::Message() << ref::name(dtype) << " " << ref::name(layout) << " group=" << group
                                      << " kv=" << kv << " d=" << d << " tokens=" << tokens);
      const auto c = ref::make_decode_case(rng, dtype, layout, d, kv, group, tokens, {kQuartiles}, kQuartiles, false);
      adamas::DecodeTimings t;
      const auto out = ref::run_decode(c, config(Method::full, ref::uniform_int(rng, 1, 64)), ws, &t);
      std::vector<std::vector<int32_t>> all(size_t(c.n_heads), ref::all_tokens(tokens));
      check_against(c, out, ws, all);
      EXPECT_EQ(t.attended_rows, c.n_heads * tokens);
    }
  }
}

// Whenever the budget covers the context, every method's result is Method::full's (the header: "identical").
TEST(Decode, DenseWhenBudgetCoversContext) {
  ADAMAS_SEEDED_RNG(rng);
  adamas::DecodeWorkspace ws;
  for (int rep = 0; rep < 12; ++rep) {
    const int64_t group = ref::uniform_int(rng, 1, 8), tokens = ref::uniform_int(rng, 1, 600);
    const int64_t d = std::array<int64_t, 4>{32, 64, 128, 256}[size_t(rep % 4)];
    const DType dtype = kDtypes[size_t(rep % 3)];
    SCOPED_TRACE(testing::Message() << ref::name(dtype) << " group=" << group << " d=" << d << " tokens=" << tokens);
    const auto c = ref::make_decode_case(rng, dtype, Layout::padded, d, 2, group, tokens, {kQuartiles}, kQuartiles,
                                         false);
    const auto full = ref::run_decode(c, config(Method::full, 1), ws);
    for (Method m : {Method::adamas, Method::quest, Method::streaming}) {
      for (GroupSelection g : {GroupSelection::per_head, GroupSelection::shared_sum, GroupSelection::shared_union}) {
        if (m != Method::adamas && g != GroupSelection::per_head) continue;
        auto cfg = config(m, tokens + ref::uniform_int(rng, 0, 2) * ref::uniform_int(rng, 1, 1000), g);
        if (m == Method::adamas && rep % 2) cfg.sink = 1, cfg.window = 2;
        cfg.budget = std::max<int64_t>(cfg.budget, 5);  // room for the streaming sinks and adamas sink + window
        SCOPED_TRACE(testing::Message() << adamas::method_name(m) << " " << adamas::group_selection_name(g)
                                        << " budget=" << cfg.budget);
        const auto out = ref::run_decode(c, cfg, ws);
        for (size_t i = 0; i < out.size(); ++i)
          ASSERT_NEAR(out[i], full[i], 1e-6 * (1 + std::fabs(full[i]))) << "element " << i;
        for (int64_t h = 0; h < c.n_heads; ++h) ASSERT_EQ(ref::last_selection(ws, h), ref::all_tokens(tokens));
      }
    }
  }
}

// dense_below: a sequence shorter than it attends to every token (Method::full's result and selection); one of at
// least that length runs the method as if dense_below were 0 (the fp64 reference over the reference selection).
TEST(Decode, DenseBelowSwitchesAtTheLength) {
  ADAMAS_SEEDED_RNG(rng);
  adamas::DecodeWorkspace ws;
  for (int rep = 0; rep < 12; ++rep) {
    const int64_t group = ref::uniform_int(rng, 1, 4), tokens = ref::uniform_int(rng, 40, 900);
    const int64_t d = std::array<int64_t, 3>{32, 64, 128}[size_t(rep % 3)];
    const DType dtype = kDtypes[size_t(rep % 3)];
    const auto c = ref::make_decode_case(rng, dtype, Layout::padded, d, 2, group, tokens, {kQuartiles}, kQuartiles);
    const Method m = rep % 4 == 3 ? Method::quest : Method::adamas;
    auto cfg = config(m, ref::uniform_int(rng, 32, tokens - 1));
    SCOPED_TRACE(testing::Message() << ref::name(dtype) << " " << adamas::method_name(m) << " group=" << group
                                    << " d=" << d << " tokens=" << tokens << " budget=" << cfg.budget);
    const auto full = ref::run_decode(c, config(Method::full, 1), ws);
    cfg.dense_below = tokens + ref::uniform_int(rng, 1, 5000);  // shorter than dense_below: dense
    const auto below = ref::run_decode(c, cfg, ws);
    for (size_t i = 0; i < below.size(); ++i) ASSERT_EQ(below[i], full[i]) << "element " << i;
    for (int64_t h = 0; h < c.n_heads; ++h) ASSERT_EQ(ref::last_selection(ws, h), ref::all_tokens(tokens));
    cfg.dense_below = tokens - ref::uniform_int(rng, 0, 1);  // not shorter: the method
    const auto at = ref::run_decode(c, cfg, ws);
    cfg.dense_below = 0;
    if (m == Method::adamas) {
      check_against(c, at, ws, reference_selections(c, cfg));
    } else {
      const auto off = ref::run_decode(c, cfg, ws);
      for (size_t i = 0; i < at.size(); ++i) ASSERT_EQ(at[i], off[i]) << "element " << i;
    }
    size_t differ = 0;
    for (size_t i = 0; i < at.size(); ++i) differ += at[i] != full[i];
    EXPECT_GT(differ, 0u) << "the sparse result equals full attention's: the test cannot tell the paths apart";
  }
  AttentionConfig bad = config(Method::adamas, 16);
  bad.dense_below = -1;
  EXPECT_THROW(adamas::validate_config(bad), adamas::Error);
}

TEST(Decode, AdamasPerHeadMatchesReference) {
  ADAMAS_SEEDED_RNG(rng);
  adamas::DecodeWorkspace ws;
  for (int rep = 0; rep < 16; ++rep) {
    const DType dtype = kDtypes[size_t(rep % 3)];
    const Layout layout = kLayouts[size_t(rep % 3 == 0 ? 2 : ref::uniform_int(rng, 0, 2))];
    const int64_t d = std::array<int64_t, 6>{32, 64, 128, 256, 16, 512}[size_t(rep % 6)];
    const int64_t group = ref::uniform_int(rng, 1, 8), kv = ref::uniform_int(rng, 1, 2);
    const int64_t tokens = ref::uniform_int(rng, 1, d >= 256 ? 300 : 1200);
    auto cfg = config(Method::adamas, ref::uniform_int(rng, 1, tokens + 10));
    if (rep % 2) {  // sink and window, when the budget has room for them
      cfg.sink = ref::uniform_int(rng, 0, std::min<int64_t>(4, cfg.budget - 1));
      cfg.window = ref::uniform_int(rng, 0, std::min<int64_t>(16, cfg.budget - cfg.sink));
    }
    SCOPED_TRACE(testing::Message() << ref::name(dtype) << " " << ref::name(layout) << " d=" << d << " group="
                                    << group << " kv=" << kv << " tokens=" << tokens << " budget=" << cfg.budget
                                    << " sink=" << cfg.sink << " window=" << cfg.window);
    const auto c = ref::make_decode_case(rng, dtype, layout, d, kv, group, tokens, {kQuartiles}, kQuartiles);
    adamas::DecodeTimings t;
    const auto out = ref::run_decode(c, cfg, ws, &t);
    const auto want = reference_selections(c, cfg);
    if (check_against(c, out, ws, want)) break;
    int64_t rows = 0;
    for (const auto& s : want) rows += int64_t(s.size());
    EXPECT_EQ(t.attended_rows, rows);
    EXPECT_GE(t.estimate_s, 0.0);
  }
}

TEST(Decode, AdamasSharedGroupSelections) {
  ADAMAS_SEEDED_RNG(rng);
  adamas::DecodeWorkspace ws;
  for (GroupSelection g : {GroupSelection::shared_sum, GroupSelection::shared_union}) {
    for (int rep = 0; rep < 6; ++rep) {
      const int64_t group = rep == 0 ? 1 : ref::uniform_int(rng, 2, 8), kv = ref::uniform_int(rng, 1, 3);
      const int64_t d = std::array<int64_t, 3>{64, 128, 256}[size_t(rep % 3)], tokens = ref::uniform_int(rng, 50, 700);
      auto cfg = config(Method::adamas, ref::uniform_int(rng, 1, tokens / 2), g);
      if (rep % 2 && cfg.budget >= 6) cfg.sink = 2, cfg.window = 4;
      const DType dtype = kDtypes[size_t(rep % 3)];
      SCOPED_TRACE(testing::Message() << adamas::group_selection_name(g) << " " << ref::name(dtype) << " d=" << d
                                      << " group=" << group << " kv=" << kv << " tokens=" << tokens
                                      << " budget=" << cfg.budget << " sink=" << cfg.sink << " window=" << cfg.window);
      const auto c = ref::make_decode_case(rng, dtype, Layout::interleaved, d, kv, group, tokens, {kQuartiles},
                                           kQuartiles);
      const auto out = ref::run_decode(c, cfg, ws);
      if (check_against(c, out, ws, reference_selections(c, cfg))) break;
    }
  }
}

// Calibrated mode: each query head's code uses DecodeInputs::query_thresholds[h], not the config's thresholds
// (set to something absurd here so that using them would select differently).
TEST(Decode, AdamasPerHeadQueryThresholds) {
  ADAMAS_SEEDED_RNG(rng);
  adamas::DecodeWorkspace ws;
  for (int rep = 0; rep < 4; ++rep) {
    const int64_t group = ref::uniform_int(rng, 1, 4), kv = 2, d = 128, tokens = ref::uniform_int(rng, 100, 800);
    std::vector<Thresholds> thr;
    for (int64_t h = 0; h < kv * group; ++h) {
      const float mid = float(ref::normal(rng, 0.3)), half = float(std::uniform_real_distribution<>(0.3, 1.2)(rng));
      thr.push_back({mid - half, mid, mid + half});
    }
    auto c = ref::make_decode_case(rng, DType::f16, Layout::padded, d, kv, group, tokens, thr, kQuartiles);
    c.pass_query_thresholds = true;
    auto cfg = config(Method::adamas, ref::uniform_int(rng, 1, tokens / 3));
    cfg.thresholds = {50.0f, 60.0f, 70.0f};
    SCOPED_TRACE(testing::Message() << "group=" << group << " tokens=" << tokens << " budget=" << cfg.budget);
    const auto out = ref::run_decode(c, cfg, ws);
    if (check_against(c, out, ws, reference_selections(c, cfg))) break;
  }
}

// A key nearly equal to (a multiple of) the query has a small code distance and a dominant logit: Adamas must
// select it for every query head of its group, and the output is then close to its value row.
TEST(Decode, AdamasSelectsPlantedKey) {
  ADAMAS_SEEDED_RNG(rng);
  adamas::DecodeWorkspace ws;
  for (DType dtype : kDtypes) {
    const int64_t d = 128, kv = 2, group = 1, tokens = ref::uniform_int(rng, 1000, 3000);
    auto c = ref::make_decode_case(rng, dtype, Layout::contiguous, d, kv, group, tokens, {kQuartiles}, kQuartiles,
                                   false);
    const int64_t planted = ref::uniform_int(rng, 0, tokens - 2), head = ref::uniform_int(rng, 0, kv - 1);
    SCOPED_TRACE(testing::Message() << ref::name(dtype) << " tokens=" << tokens << " planted=" << planted
                                    << " head=" << head);
    for (int64_t i = 0; i < d; ++i) c.k.set(head, planted, i, 3.0 * c.q_head(head)[i] + ref::normal(rng, 0.01));
    ref::encode_all(c.k, {kQuartiles}, c.codes);
    const auto cfg = config(Method::adamas, 32);
    const auto out = ref::run_decode(c, cfg, ws);
    const auto sel = ref::last_selection(ws, head);
    EXPECT_TRUE(std::binary_search(sel.begin(), sel.end(), int32_t(planted))) << "planted key not selected";
    check_against(c, out, ws, reference_selections(c, cfg));
    // the planted logit (3|q|^2/sqrt(d) ~ 10) dominates: out ~ v[planted]
    double err = 0, nrm = 0;
    for (int64_t i = 0; i < d; ++i) {
      err += std::pow(out[size_t(head * d + i)] - c.v.at(head, planted, i), 2);
      nrm += std::pow(c.v.at(head, planted, i), 2);
    }
    EXPECT_LT(std::sqrt(err), 0.2 * std::sqrt(nrm));
  }
}

// ~70K tokens: selection and output against the reference (random key codes: decode takes codes as given).
TEST(Decode, AdamasLongContext70K) {
  ADAMAS_SEEDED_RNG(rng);
  adamas::DecodeWorkspace ws;
  const int64_t d = 128, kv = 1, group = 4, tokens = 70000 + ref::uniform_int(rng, 0, 999);
  const auto c = ref::make_decode_case(rng, DType::bf16, Layout::contiguous, d, kv, group, tokens, {kQuartiles},
                                       kQuartiles, false);
  for (GroupSelection g : {GroupSelection::per_head, GroupSelection::shared_sum}) {
    auto cfg = config(Method::adamas, 1024, g);
    cfg.sink = 4, cfg.window = 32;
    SCOPED_TRACE(testing::Message() << adamas::group_selection_name(g) << " tokens=" << tokens);
    const auto out = ref::run_decode(c, cfg, ws);
    check_against(c, out, ws, reference_selections(c, cfg));
  }
  // and the dense path at the same length
  const auto out = ref::run_decode(c, config(Method::full, 1024), ws);
  std::vector<std::vector<int32_t>> all(size_t(c.n_heads), ref::all_tokens(tokens));
  check_against(c, out, ws, all);
}

// One workspace across different shapes and methods gives the same result as a fresh one, and a repeated call is
// bit-identical.
TEST(Decode, WorkspaceReuseAndDeterminism) {
  ADAMAS_SEEDED_RNG(rng);
  adamas::DecodeWorkspace shared;
  for (int rep = 0; rep < 6; ++rep) {
    const int64_t group = ref::uniform_int(rng, 1, 8), kv = ref::uniform_int(rng, 1, 3);
    const int64_t d = std::array<int64_t, 3>{32, 128, 64}[size_t(rep % 3)], tokens = ref::uniform_int(rng, 1, 900);
    const auto c = ref::make_decode_case(rng, DType::f32, Layout::contiguous, d, kv, group, tokens, {kQuartiles},
                                         kQuartiles, false);
    const Method m = std::array<Method, 4>{Method::adamas, Method::full, Method::quest, Method::streaming}[rep % 4];
    const auto cfg = config(m, ref::uniform_int(rng, 16, 200), GroupSelection(rep % 3));
    SCOPED_TRACE(testing::Message() << adamas::method_name(m) << " group=" << group << " tokens=" << tokens);
    adamas::DecodeWorkspace fresh;
    const auto a = ref::run_decode(c, cfg, shared), b = ref::run_decode(c, cfg, fresh), again = ref::run_decode(c, cfg, shared);
    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << "reused workspace differs";
    ASSERT_EQ(0, std::memcmp(a.data(), again.data(), a.size() * sizeof(float))) << "not deterministic";
    for (int64_t h = 0; h < c.n_heads; ++h) ASSERT_EQ(ref::last_selection(shared, h), ref::last_selection(fresh, h));
  }
}

// One workspace per thread: concurrent calls on different workspaces give the sequential results, and no call
// modifies its inputs.
TEST(Decode, ConcurrentCallsOwnWorkspaces) {
  ADAMAS_SEEDED_RNG(rng);
  const auto c = ref::make_decode_case(rng, DType::f16, Layout::interleaved, 128, 2, 4, 3000, {kQuartiles},
                                       kQuartiles);
  const auto k_before = c.k.bytes, v_before = c.v.bytes, codes_before = c.codes.bytes;
  const auto q_before = c.q;
  std::vector<AttentionConfig> cfgs = {config(Method::adamas, 64), config(Method::full, 64),
                                       config(Method::quest, 128), config(Method::adamas, 100, GroupSelection::shared_sum)};
  std::vector<std::vector<float>> sequential;
  for (const auto& cfg : cfgs) {
    adamas::DecodeWorkspace ws;
    sequential.push_back(ref::run_decode(c, cfg, ws));
  }
  std::vector<std::vector<float>> parallel(cfgs.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < cfgs.size(); ++i)
    threads.emplace_back([&, i] {
      adamas::DecodeWorkspace ws;
      for (int rep = 0; rep < 3; ++rep) parallel[i] = ref::run_decode(c, cfgs[i], ws);
    });
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < cfgs.size(); ++i)
    EXPECT_EQ(0, std::memcmp(parallel[i].data(), sequential[i].data(), parallel[i].size() * sizeof(float)))
        << adamas::method_name(cfgs[i].method) << " differs when run concurrently";
  EXPECT_TRUE(c.k.bytes == k_before && c.v.bytes == v_before && c.codes.bytes == codes_before && c.q == q_before)
      << "decode_attention modified its inputs";
}

TEST(Decode, MethodNames) {
  for (Method m : {Method::full, Method::adamas, Method::quest, Method::streaming})
    EXPECT_EQ(adamas::parse_method(adamas::method_name(m)), m) << adamas::method_name(m);
  EXPECT_STREQ(adamas::method_name(Method::adamas), "adamas");
  for (GroupSelection g : {GroupSelection::per_head, GroupSelection::shared_sum, GroupSelection::shared_union})
    EXPECT_NE(std::string(adamas::group_selection_name(g)), "");
}

}  // namespace
