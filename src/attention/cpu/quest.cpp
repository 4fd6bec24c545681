// Quest (Tang et al., 2024): page-level selection by an upper bound of q.k from each page's key min and max.
#include <algorithm>
#include <numeric>
#include <vector>

#include "adamas/attention.h"
#include "attention/cpu/validate.h"
#include "core/dtype.h"

namespace adamas {

namespace {

void check_pages(const QuestPagesView& p, int64_t heads, int64_t dim, int64_t tokens, const char* where) {
  ADAMAS_CHECK(p.page_size > 0, ErrorKind::invalid_argument, "{}: page_size = {} (expected > 0)", where,
               p.page_size);
  ADAMAS_CHECK(p.heads == heads && p.dim == dim, ErrorKind::shape_mismatch,
               "{}: pages are [{} heads, dim {}] but keys are [{}, {}]", where, p.heads, p.dim, heads, dim);
  ADAMAS_CHECK(p.pages * p.page_size >= tokens, ErrorKind::shape_mismatch,
               "{}: {} pages of {} tokens cannot hold {} tokens", where, p.pages, p.page_size, tokens);
  check_not_null(p.min, where);
  check_not_null(p.max, where);
}

}  // namespace

void quest_update_pages(const HeadsView& keys, int64_t begin, int64_t end, const QuestPagesView& pages) {
  check_heads(keys, "quest_update_pages: keys");
  ADAMAS_CHECK(0 <= begin && begin <= end && end <= keys.tokens, ErrorKind::invalid_argument,
               "quest_update_pages: token range [{}, {}) is outside the {} keys", begin, end, keys.tokens);
  check_pages(pages, keys.heads, keys.dim, end, "quest_update_pages");
#pragma omp parallel for if (keys.heads * (end - begin) > 256)
  for (int64_t h = 0; h < keys.heads; ++h) {
    for (int64_t t = begin; t < end; ++t) {
      float* lo = pages.page_min(h, t / pages.page_size);
      float* hi = pages.page_max(h, t / pages.page_size);
      const void* key = keys.row(h, t);
      const bool first = t % pages.page_size == 0;
      for (int64_t i = 0; i < keys.dim; ++i) {
        const float x = load_f32(key, keys.dtype, i);
        lo[i] = first ? x : std::min(lo[i], x);
        hi[i] = first ? x : std::max(hi[i], x);
      }
    }
  }
}

int64_t quest_select(const float* q, const QuestPagesView& pages, int64_t head, int64_t n_tokens, int64_t budget,
                     std::vector<int32_t>& out) {
  ADAMAS_CHECK(budget > 0, ErrorKind::invalid_argument, "quest_select: budget = {} (expected > 0)", budget);
  ADAMAS_CHECK(n_tokens > 0, ErrorKind::invalid_argument, "quest_select: n_tokens = {} (expected > 0)", n_tokens);
  check_not_null(q, "quest_select: q");
  check_pages(pages, pages.heads, pages.dim, n_tokens, "quest_select");
  ADAMAS_CHECK(0 <= head && head < pages.heads, ErrorKind::invalid_argument, "quest_select: head {} not in [0, {})",
               head, pages.heads);
  out.clear();
  if (budget >= n_tokens) {
    out.resize(static_cast<size_t>(n_tokens));
    std::iota(out.begin(), out.end(), 0);
    return n_tokens;
  }
  const int64_t ps = pages.page_size;
  const int64_t n_pages = (n_tokens + ps - 1) / ps;
  const int64_t keep = std::min(n_pages, std::max<int64_t>(1, budget / ps));
  // Upper bound of q.k over the page's box; the newest token's page is kept unconditionally.
  std::vector<std::pair<float, int64_t>> scored;
  scored.reserve(size_t(n_pages - 1));
  for (int64_t p = 0; p + 1 < n_pages; ++p) {
    const float* lo = pages.page_min(head, p);
    const float* hi = pages.page_max(head, p);
    float s = 0;
    for (int64_t i = 0; i < pages.dim; ++i) s += std::max(q[i] * hi[i], q[i] * lo[i]);
    scored.emplace_back(s, p);
  }
  // Higher score first; equal scores prefer the more recent page (deterministic, like the Adamas tie rule).
  auto better = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second > b.second); };
  const int64_t others = keep - 1;
  std::partial_sort(scored.begin(), scored.begin() + others, scored.end(), better);
  std::vector<int64_t> chosen(static_cast<size_t>(others));
  for (int64_t i = 0; i < others; ++i) chosen[i] = scored[i].second;
  chosen.push_back(n_pages - 1);
  std::sort(chosen.begin(), chosen.end());
  for (int64_t p : chosen)
    for (int64_t t = p * ps; t < std::min(n_tokens, (p + 1) * ps); ++t) out.push_back(int32_t(t));
  return int64_t(out.size());
}

}  // namespace adamas
