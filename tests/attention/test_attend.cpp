// Attend: attend_rows, attend_dense_decode and attend_dense_causal against softmax attention in double, for every
// K/V dtype, strided views and GQA groups 1..8. Tolerance: ref::attention_tol (1e-4 relative + a small absolute
// term growing like sqrt(rows) for the f32 sums).
#include "reference.h"

namespace {

using adamas::DType;
using ref::Layout;

const DType kDtypes[] = {DType::f32, DType::f16, DType::bf16};
const Layout kLayouts[] = {Layout::contiguous, Layout::padded, Layout::interleaved};

std::vector<float> random_floats(std::mt19937& rng, int64_t n, double sigma = 1.0) {
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = float(ref::normal(rng, sigma));
  return x;
}

// A random strictly increasing subset of [0, n) of size m, always containing n - 1.
std::vector<int32_t> random_rows(std::mt19937& rng, int64_t n, int64_t m) {
  std::vector<int32_t> all = ref::all_tokens(n - 1);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(size_t(std::min<int64_t>(m - 1, n - 1)));
  all.push_back(int32_t(n - 1));
  std::sort(all.begin(), all.end());
  return all;
}

TEST(Attend, RowsMatchReference) {
  ADAMAS_SEEDED_RNG(rng);
  for (DType dtype : kDtypes) {
    for (Layout layout : kLayouts) {
      for (int64_t d : {16, 32, 64, 128, 256, 512}) {
        const int64_t heads = ref::uniform_int(rng, 1, 3), tokens = ref::uniform_int(rng, 1, 400);
        const int64_t head = ref::uniform_int(rng, 0, heads - 1);
        const auto rows = random_rows(rng, tokens, ref::uniform_int(rng, 1, tokens));
        SCOPED_TRACE(testing::Message() << ref::name(dtype) << " " << ref::name(layout) << " d=" << d
                                        << " tokens=" << tokens << " rows=" << rows.size() << " head=" << head);
        const auto k = ref::make_heads(rng, dtype, heads, tokens, d, layout);
        // V of a random dtype (K and V views carry their own dtypes)
        const auto v = ref::make_heads(rng, kDtypes[size_t(ref::uniform_int(rng, 0, 2))], heads, tokens, d, layout);
        // larger q on some runs: peaked softmax
        const auto q = random_floats(rng, d, d >= 128 ? 2.0 : 1.0);
        const double scale = 1.0 / std::sqrt(double(d));
        std::vector<float> out(size_t(d) + 1, NAN);
        out[size_t(d)] = -5.0f;
        adamas::attend_rows(q.data(), k.view(), v.view(), head, rows.data(), int64_t(rows.size()), float(scale),
                            out.data());
        ref::expect_attention_near(out.data(), ref::attention(q.data(), k, v, head, rows, scale), v.rms(),
                                   int64_t(rows.size()), "attend_rows");
        EXPECT_EQ(out[size_t(d)], -5.0f) << "wrote past dim";
      }
    }
  }
}

// Rows in any order and repeated rows: softmax over the multiset, as written.
TEST(Attend, RowsUnsortedSingleAndOtherScale) {
  ADAMAS_SEEDED_RNG(rng);
  const int64_t d = 64, tokens = 100;
  const auto k = ref::make_heads(rng, DType::f32, 1, tokens, d);
  const auto v = ref::make_heads(rng, DType::f32, 1, tokens, d);
  const auto q = random_floats(rng, d);
  std::vector<int32_t> rows = random_rows(rng, tokens, 30);
  std::shuffle(rows.begin(), rows.end(), rng);
  std::vector<float> out(d, NAN);
  adamas::attend_rows(q.data(), k.view(), v.view(), 0, rows.data(), int64_t(rows.size()), 0.37f, out.data());
  ref::expect_attention_near(out.data(), ref::attention(q.data(), k, v, 0, rows, 0.37), v.rms(), 30, "unsorted");
  // a single row: the output is exactly that V row (softmax of one logit is 1)
  const int32_t one = int32_t(ref::uniform_int(rng, 0, tokens - 1));
  adamas::attend_rows(q.data(), k.view(), v.view(), 0, &one, 1, 0.125f, out.data());
  for (int64_t i = 0; i < d; ++i) EXPECT_NEAR(out[size_t(i)], v.at(0, one, i), 1e-6 * (1 + std::fabs(v.at(0, one, i))));
}

TEST(Attend, DenseDecodeGqa) {
  ADAMAS_SEEDED_RNG(rng);
  for (int64_t group = 1; group <= 8; ++group) {
    for (DType dtype : kDtypes) {
      const int64_t d = std::array<int64_t, 4>{32, 64, 128, 256}[size_t(ref::uniform_int(rng, 0, 3))];
      const int64_t kv = ref::uniform_int(rng, 1, 3), n_heads = kv * group;
      const int64_t tokens = group == 1 ? 1 : ref::uniform_int(rng, 1, 3000);
      const Layout layout = kLayouts[size_t(ref::uniform_int(rng, 0, 2))];
      SCOPED_TRACE(testing::Message() << ref::name(dtype) << " " << ref::name(layout) << " group=" << group
                                      << " kv=" << kv << " d=" << d << " tokens=" << tokens);
      const auto k = ref::make_heads(rng, dtype, kv, tokens, d, layout);
      const auto v = ref::make_heads(rng, dtype, kv, tokens, d, layout);
      const auto q = random_floats(rng, n_heads * d, 1.5);
      const double scale = 1.0 / std::sqrt(double(d));
      std::vector<float> out(size_t(n_heads * d), NAN);
      adamas::attend_dense_decode(q.data(), n_heads, k.view(), v.view(), float(scale), out.data());
      for (int64_t h = 0; h < n_heads; ++h) {
        const auto want = ref::attention(&q[size_t(h * d)], k, v, h / group, ref::all_tokens(tokens), scale);
        if (ref::expect_attention_near(&out[size_t(h * d)], want, v.rms(), tokens, "head " + std::to_string(h)))
          break;
      }
    }
  }
}

// A long dense decode (the flash-decoding split over tokens must combine partial softmaxes exactly).
TEST(Attend, DenseDecodeLong) {
  ADAMAS_SEEDED_RNG(rng);
  const int64_t d = 128, kv = 2, group = 4, tokens = 40000 + ref::uniform_int(rng, 0, 999);
  const auto k = ref::make_heads(rng, DType::f16, kv, tokens, d, Layout::interleaved);
  const auto v = ref::make_heads(rng, DType::f16, kv, tokens, d, Layout::interleaved);
  const auto q = random_floats(rng, kv * group * d, 2.0);
  std::vector<float> out(size_t(kv * group * d), NAN);
  adamas::attend_dense_decode(q.data(), kv * group, k.view(), v.view(), float(1 / std::sqrt(128.0)), out.data());
  for (int64_t h = 0; h < kv * group; h += 3) {
    const auto want = ref::attention(&q[size_t(h * d)], k, v, h / group, ref::all_tokens(tokens), 1 / std::sqrt(128.0));
    ref::expect_attention_near(&out[size_t(h * d)], want, v.rms(), tokens, "head " + std::to_string(h));
  }
}

// Causal prefill: query i sits at position tokens - n_queries + i and sees tokens [0, that position]. Strided q
// and out rows; the padding of out must stay untouched.
TEST(Attend, DenseCausalMatchesReference) {
  ADAMAS_SEEDED_RNG(rng);
  for (int64_t nq : {1, 7, 64, 300}) {
    for (int64_t group : {1, 3, 4}) {
      const DType dtype = kDtypes[size_t(ref::uniform_int(rng, 0, 2))];
      const int64_t d = nq >= 300 ? 32 : std::array<int64_t, 3>{32, 64, 128}[size_t(ref::uniform_int(rng, 0, 2))];
      const int64_t kv = nq >= 300 ? 1 : ref::uniform_int(rng, 1, 2), n_heads = kv * group;
      const int64_t tokens = nq + ref::uniform_int(rng, 0, nq >= 300 ? 100 : 200);
      const Layout layout = kLayouts[size_t(ref::uniform_int(rng, 0, 2))];
      const int64_t q_stride = n_heads * d + ref::uniform_int(rng, 0, 7);
      const int64_t out_stride = n_heads * d + ref::uniform_int(rng, 0, 7);
      SCOPED_TRACE(testing::Message() << ref::name(dtype) << " " << ref::name(layout) << " n_queries=" << nq
                                      << " group=" << group << " kv=" << kv << " d=" << d << " tokens=" << tokens
                                      << " q_stride=" << q_stride << " out_stride=" << out_stride);
      const auto k = ref::make_heads(rng, dtype, kv, tokens, d, layout);
      const auto v = ref::make_heads(rng, dtype, kv, tokens, d, layout);
      std::vector<float> q(size_t(nq * q_stride), NAN);  // NaN padding: reading it would poison the result
      for (int64_t i = 0; i < nq; ++i)
        for (int64_t j = 0; j < n_heads * d; ++j) q[size_t(i * q_stride + j)] = float(ref::normal(rng, 1.5));
      std::vector<float> out(size_t(nq * out_stride), -3.25f);  // padding marker
      for (int64_t i = 0; i < nq; ++i)
        for (int64_t j = 0; j < n_heads * d; ++j) out[size_t(i * out_stride + j)] = NAN;
      const double scale = 1.0 / std::sqrt(double(d));
      adamas::attend_dense_causal(q.data(), nq, n_heads, q_stride, k.view(), v.view(), float(scale), out.data(),
                                  out_stride);
      int bad = 0;
      for (int64_t i = 0; i < nq && bad == 0; ++i) {
        const int64_t pos = tokens - nq + i;
        for (int64_t h = 0; h < n_heads && bad == 0; ++h) {
          const auto want =
              ref::attention(&q[size_t(i * q_stride + h * d)], k, v, h / group, ref::all_tokens(pos + 1), scale);
          bad += ref::expect_attention_near(&out[size_t(i * out_stride + h * d)], want, v.rms(), pos + 1,
                                            "query " + std::to_string(i) + " head " + std::to_string(h));
        }
        for (int64_t j = n_heads * d; j < out_stride; ++j)
          if (out[size_t(i * out_stride + j)] != -3.25f) {
            ADD_FAILURE() << "out padding of query " << i << " written";
            ++bad;
            break;
          }
      }
    }
  }
}

// The last causal query sees the whole cache: it must equal the dense decode result.
TEST(Attend, CausalLastRowEqualsDecode) {
  ADAMAS_SEEDED_RNG(rng);
  const int64_t d = 64, kv = 2, group = 2, tokens = ref::uniform_int(rng, 20, 500), nq = 9;
  const auto k = ref::make_heads(rng, DType::bf16, kv, tokens, d);
  const auto v = ref::make_heads(rng, DType::bf16, kv, tokens, d);
  const auto q = random_floats(rng, nq * kv * group * d);
  std::vector<float> causal(q.size(), NAN), dense(size_t(kv * group * d), NAN);
  adamas::attend_dense_causal(q.data(), nq, kv * group, kv * group * d, k.view(), v.view(), 0.125f, causal.data(),
                              kv * group * d);
  adamas::attend_dense_decode(&q[size_t((nq - 1) * kv * group * d)], kv * group, k.view(), v.view(), 0.125f,
                              dense.data());
  for (int64_t j = 0; j < kv * group * d; ++j)
    ASSERT_NEAR(causal[size_t((nq - 1) * kv * group * d + j)], dense[size_t(j)], 1e-5) << "element " << j;
}

}  // namespace
