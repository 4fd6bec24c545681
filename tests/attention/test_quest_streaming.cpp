// The baselines: Quest page metadata (quest_update_pages, incrementally, against brute-force min/max), Quest page
// selection (quest_select and decode_attention with Method::quest, against brute-force page scores), and
// StreamingLLM (decode_attention with Method::streaming against sinks + recent window).
#include "reference.h"

namespace {

using adamas::AttentionConfig;
using adamas::DType;
using adamas::Method;
using ref::Layout;

const DType kDtypes[] = {DType::f32, DType::f16, DType::bf16};
const Layout kLayouts[] = {Layout::contiguous, Layout::padded, Layout::interleaved};

// Appending tokens in several chunks (the cache view growing with them) gives exactly the brute-force min / max of
// every page; pages past the last token stay untouched.
TEST(Quest, UpdatePagesIncrementalEqualsBruteForce) {
  ADAMAS_SEEDED_RNG(rng);
  for (DType dtype : kDtypes) {
    for (Layout layout : kLayouts) {
      for (int64_t page_size : {16, 32}) {
        const int64_t d = std::array<int64_t, 4>{32, 64, 128, 256}[size_t(ref::uniform_int(rng, 0, 3))];
        const int64_t heads = ref::uniform_int(rng, 1, 3), n = ref::uniform_int(rng, 1, 300);
        SCOPED_TRACE(testing::Message() << ref::name(dtype) << " " << ref::name(layout) << " page_size=" << page_size
                                        << " d=" << d << " heads=" << heads << " tokens=" << n);
        const auto k = ref::make_heads(rng, dtype, heads, n, d, layout, 3.0);
        const int64_t n_pages = (n + page_size - 1) / page_size;
        ref::Pages pages(heads, n_pages + 2, d, page_size);
        // chunk boundaries: single tokens, page-crossing chunks, and one big chunk at random
        int64_t begin = 0;
        std::string chunks;
        while (begin < n) {
          const int64_t len = ref::uniform_int(rng, 0, 3) == 0 ? 1 : ref::uniform_int(rng, 1, 70);
          const int64_t end = std::min(n, begin + len);
          adamas::HeadsView grown = k.view();
          grown.tokens = end;
          adamas::quest_update_pages(grown, begin, end, pages.view);
          chunks += ' ';
          chunks += std::to_string(end);
          begin = end;
        }
        SCOPED_TRACE("chunk ends:" + chunks);
        int bad = 0;
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t p = 0; p < n_pages + 2; ++p) {
            const auto mn = ref::page_min_max(k, h, p, page_size, n, false);
            const auto mx = ref::page_min_max(k, h, p, page_size, n, true);
            for (int64_t i = 0; i < d; ++i) {
              const float gmin = pages.view.page_min(h, p)[i], gmax = pages.view.page_max(h, p)[i];
              const bool ok = p < n_pages ? (gmin == float(mn[size_t(i)]) && gmax == float(mx[size_t(i)]))
                                          : (std::isnan(gmin) && std::isnan(gmax));
              if (!ok && ++bad <= 3)
                ADD_FAILURE() << "head " << h << " page " << p << " coord " << i << ": min " << gmin << " max "
                              << gmax << (p < n_pages ? " want " + std::to_string(mn[size_t(i)]) + " " +
                                                            std::to_string(mx[size_t(i)])
                                                      : std::string(" want untouched"));
            }
          }
      }
    }
  }
}

// Checks a Quest selection (token indices) of query q over head `head`: whole pages (the last one clipped to n),
// min(max(budget / page_size, 1), pages) of them (all when budget >= n), the newest page included, and no unselected page scoring
// better than a selected one (other than the forced newest page), up to float rounding of the scores.
void check_quest_selection(const std::vector<int32_t>& sel, const float* q, const ref::Heads& k, int64_t head,
                           int64_t n, int64_t budget, int64_t page_size) {
  const int64_t n_pages = (n + page_size - 1) / page_size;
  // A budget that covers the context keeps every page (the header's "dense whenever the context is no longer
  // than the budget"; e.g. n = 20, budget = 20 keeps both pages although budget / page_size = 1).
  const int64_t want_pages =
      budget >= n ? n_pages : std::min(std::max<int64_t>(budget / page_size, 1), n_pages);
  std::set<int64_t> chosen;
  for (size_t i = 0; i < sel.size(); ++i) {
    ASSERT_TRUE(sel[i] >= 0 && sel[i] < n) << "index " << sel[i] << " out of range";
    if (i > 0) { ASSERT_LT(sel[i - 1], sel[i]) << "not increasing"; }
    chosen.insert(sel[i] / page_size);
  }
  std::vector<int32_t> expect_tokens;
  for (int64_t p : chosen)
    for (int64_t t = p * page_size; t < std::min(n, (p + 1) * page_size); ++t) expect_tokens.push_back(int32_t(t));
  ASSERT_EQ(sel, expect_tokens) << "not whole pages";
  EXPECT_EQ(int64_t(chosen.size()), want_pages) << "page count (budget " << budget << ")";
  EXPECT_TRUE(chosen.count(n_pages - 1)) << "newest page missing";
  // optimality by brute-force scores
  double worst_chosen = INFINITY, best_other = -INFINITY, mag = 0;
  for (int64_t p = 0; p < n_pages; ++p) {
    const double s = ref::quest_score(q, k, head, p, page_size, n);
    mag = std::max(mag, std::fabs(s));
    if (p == n_pages - 1) continue;  // forced
    if (chosen.count(p)) worst_chosen = std::min(worst_chosen, s);
    else best_other = std::max(best_other, s);
  }
  EXPECT_GE(worst_chosen, best_other - 1e-5 * (1 + mag)) << "a better page was left out";
}

TEST(Quest, SelectTopPages) {
  ADAMAS_SEEDED_RNG(rng);
  for (int rep = 0; rep < 24; ++rep) {
    const DType dtype = kDtypes[size_t(rep % 3)];
    const int64_t d = std::array<int64_t, 4>{32, 64, 128, 256}[size_t(rep % 4)];
    const int64_t heads = 2, n = ref::uniform_int(rng, 1, 2500), budget = ref::uniform_int(rng, 1, n + 40);
    const int64_t head = ref::uniform_int(rng, 0, heads - 1);
    SCOPED_TRACE(testing::Message() << ref::name(dtype) << " d=" << d << " n=" << n << " budget=" << budget
                                    << " head=" << head);
    const auto k = ref::make_heads(rng, dtype, heads, n, d, Layout::interleaved);
    ref::Pages pages(heads, (n + 15) / 16 + 1, d, 16);
    ref::fill_pages(k, pages);
    std::vector<float> q(static_cast<size_t>(d));
    for (auto& x : q) x = float(ref::normal(rng, 1.0));
    std::vector<int32_t> out = {-5, -6, -7};  // stale contents must be replaced
    const int64_t count = adamas::quest_select(q.data(), pages.view, head, n, budget, out);
    ASSERT_EQ(count, int64_t(out.size()));
    check_quest_selection(out, q.data(), k, head, n, budget, 16);
  }
}

// A page holding a key equal to a scaled-up q has the top score: Quest keeps it.
TEST(Quest, SelectsPlantedPage) {
  ADAMAS_SEEDED_RNG(rng);
  const int64_t d = 128, n = 2000;
  auto k = ref::make_heads(rng, DType::f16, 1, n, d);
  std::vector<float> q(static_cast<size_t>(d));
  for (auto& x : q) x = float(ref::normal(rng));
  const int64_t planted = ref::uniform_int(rng, 0, n - 100);
  for (int64_t i = 0; i < d; ++i) k.set(0, planted, i, 4.0 * q[size_t(i)]);
  ref::Pages pages(1, n / 16 + 2, d, 16);
  adamas::quest_update_pages(k.view(), 0, n, pages.view);
  std::vector<int32_t> out;
  adamas::quest_select(q.data(), pages.view, 0, n, 64, out);
  EXPECT_TRUE(std::binary_search(out.begin(), out.end(), int32_t(planted))) << "planted=" << planted;
}

AttentionConfig config(Method m, int64_t budget) {
  AttentionConfig c;
  c.method = m, c.budget = budget;
  return c;
}

// decode_attention with Method::quest: each head's selection is a valid Quest selection of its own query, and the
// output is attention over exactly those rows.
TEST(Quest, DecodeSelectionAndOutput) {
  ADAMAS_SEEDED_RNG(rng);
  adamas::DecodeWorkspace ws;
  for (int rep = 0; rep < 8; ++rep) {
    const DType dtype = kDtypes[size_t(rep % 3)];
    const int64_t d = std::array<int64_t, 4>{32, 64, 128, 256}[size_t(rep % 4)];
    const int64_t group = ref::uniform_int(rng, 1, 8), kv = ref::uniform_int(rng, 1, 2);
    const int64_t tokens = ref::uniform_int(rng, 40, 1500), budget = ref::uniform_int(rng, 1, tokens - 1);
    SCOPED_TRACE(testing::Message() << ref::name(dtype) << " d=" << d << " group=" << group << " kv=" << kv
                                    << " tokens=" << tokens << " budget=" << budget);
    const auto c = ref::make_decode_case(rng, dtype, Layout::padded, d, kv, group, tokens, {adamas::Thresholds{}},
                                         adamas::Thresholds{}, false);
    adamas::DecodeTimings t;
    const auto out = ref::run_decode(c, config(Method::quest, budget), ws, &t);
    int64_t rows = 0;
    for (int64_t h = 0; h < c.n_heads; ++h) {
      SCOPED_TRACE(testing::Message() << "head " << h);
      const auto sel = ref::last_selection(ws, h);
      rows += int64_t(sel.size());
      check_quest_selection(sel, c.q_head(h), c.k, h / group, tokens, budget, 16);
      const auto want = ref::attention(c.q_head(h), c.k, c.v, h / group, sel, 1 / std::sqrt(double(d)));
      if (ref::expect_attention_near(&out[size_t(h * d)], want, c.v.rms(), int64_t(sel.size()), "output")) break;
    }
    EXPECT_EQ(t.attended_rows, rows);
  }
}

// StreamingLLM: the first streaming_sink tokens and the most recent budget - streaming_sink, for every head.
TEST(Streaming, DecodeSelectionAndOutput) {
  ADAMAS_SEEDED_RNG(rng);
  adamas::DecodeWorkspace ws;
  for (int rep = 0; rep < 10; ++rep) {
    const DType dtype = kDtypes[size_t(rep % 3)];
    const int64_t d = std::array<int64_t, 3>{64, 128, 32}[size_t(rep % 3)];
    const int64_t group = ref::uniform_int(rng, 1, 8), kv = ref::uniform_int(rng, 1, 3);
    const int64_t tokens = ref::uniform_int(rng, 2, 2000);
    auto cfg = config(Method::streaming, ref::uniform_int(rng, 1, tokens + 20));
    cfg.streaming_sink = ref::uniform_int(rng, 0, std::min<int64_t>(4, cfg.budget - 1));
    SCOPED_TRACE(testing::Message() << ref::name(dtype) << " d=" << d << " group=" << group << " kv=" << kv
                                    << " tokens=" << tokens << " budget=" << cfg.budget
                                    << " streaming_sink=" << cfg.streaming_sink);
    const auto c = ref::make_decode_case(rng, dtype, kLayouts[size_t(rep % 3)], d, kv, group, tokens,
                                         {adamas::Thresholds{}}, adamas::Thresholds{}, false);
    adamas::DecodeTimings t;
    const auto out = ref::run_decode(c, cfg, ws, &t);
    const auto want_sel = ref::streaming_select(tokens, cfg.budget, cfg.streaming_sink);
    for (int64_t h = 0; h < c.n_heads; ++h) {
      ASSERT_EQ(ref::last_selection(ws, h), want_sel) << "head " << h;
      const auto want = ref::attention(c.q_head(h), c.k, c.v, h / group, want_sel, 1 / std::sqrt(double(d)));
      if (ref::expect_attention_near(&out[size_t(h * d)], want, c.v.rms(), int64_t(want_sel.size()),
                                     "head " + std::to_string(h)))
        break;
    }
    EXPECT_EQ(t.attended_rows, c.n_heads * int64_t(want_sel.size()));
  }
}

}  // namespace
