// Estimate: l1_distances and l1_distances_group bit-exact against the unpack-every-code reference, on random codes
// through strided views, symmetric in query/key, at the extremes (0 and 3*dim), and at a ~70K context.
#include "reference.h"

namespace {

std::vector<uint8_t> random_code(std::mt19937& rng, int64_t d) {
  std::vector<uint8_t> c(static_cast<size_t>(d / 4));
  for (auto& b : c) b = uint8_t(rng());
  return c;
}

// Runs l1_distances on head `head` and compares every entry with the reference; the output is poisoned with
// 0xFFFF and one guard entry after `tokens` must stay untouched.
void check_l1(const std::vector<uint8_t>& q, const ref::Codes& codes, int64_t head) {
  std::vector<uint16_t> out(size_t(codes.tokens) + 1, 0xFFFF);
  adamas::l1_distances(q.data(), codes.view(), head, out.data());
  int bad = 0;
  for (int64_t j = 0; j < codes.tokens; ++j) {
    const int want = ref::l1(q.data(), codes.row(head, j), codes.dim);
    if (out[size_t(j)] != want && ++bad <= 3)
      ADD_FAILURE() << "head " << head << " token " << j << ": got " << out[size_t(j)] << " want " << want;
  }
  EXPECT_EQ(bad, 0) << "mismatches of " << codes.tokens;
  EXPECT_EQ(out[size_t(codes.tokens)], 0xFFFF) << "wrote past tokens";
}

TEST(Estimate, L1MatchesReferenceAllDims) {
  ADAMAS_SEEDED_RNG(rng);
  for (int64_t d : {16, 32, 64, 128, 256, 512}) {
    for (bool padded : {false, true}) {
      // token counts around SIMD block sizes and a few random ones
      for (int64_t tokens : {int64_t(1), int64_t(7), int64_t(31), int64_t(33), ref::uniform_int(rng, 2, 3000)}) {
        const int64_t heads = ref::uniform_int(rng, 1, 3);
        SCOPED_TRACE(testing::Message() << "d=" << d << " padded=" << padded << " tokens=" << tokens);
        const auto codes = ref::make_codes(rng, heads, tokens, d, padded);
        const auto q = random_code(rng, d);
        check_l1(q, codes, ref::uniform_int(rng, 0, heads - 1));
      }
    }
  }
}

// Codes drawn from a narrow alphabet make small distances and exact ties frequent, as with real data.
TEST(Estimate, L1ExtremesAndNearDuplicates) {
  ADAMAS_SEEDED_RNG(rng);
  for (int64_t d : {16, 128, 512}) {
    SCOPED_TRACE(testing::Message() << "d=" << d);
    auto codes = ref::make_codes(rng, 1, 64, d, true);
    std::vector<uint8_t> q(static_cast<size_t>(d / 4), 0x00);   // all codes 0
    for (int64_t b = 0; b < d / 4; ++b) codes.row(0, 0)[b] = 0xFF;  // all codes 3: distance 3d
    for (int64_t b = 0; b < d / 4; ++b) codes.row(0, 1)[b] = 0x00;  // identical: distance 0
    for (int64_t j = 2; j < 64; ++j)  // mostly 0 with a few flipped codes
      for (int64_t b = 0; b < d / 4; ++b) codes.row(0, j)[b] = (rng() % 8 == 0) ? uint8_t(1u << (2 * (rng() % 4))) : 0;
    std::vector<uint16_t> out(64, 0xFFFF);
    adamas::l1_distances(q.data(), codes.view(), 0, out.data());
    EXPECT_EQ(out[0], adamas::max_l1_distance(d));
    EXPECT_EQ(out[1], 0);
    check_l1(q, codes, 0);
  }
}

// L1 is symmetric: the distance from q to key j equals the distance from key j (as query) to q (as the only key).
TEST(Estimate, L1Symmetric) {
  ADAMAS_SEEDED_RNG(rng);
  for (int64_t d : {32, 64, 128, 256}) {
    const auto codes = ref::make_codes(rng, 2, 40, d, true);
    const auto q = random_code(rng, d);
    std::vector<uint16_t> fwd(40);
    adamas::l1_distances(q.data(), codes.view(), 1, fwd.data());
    ref::Codes one;  // q as a one-token key cache
    one.heads = 1, one.tokens = 1, one.dim = d, one.token_stride = d / 4, one.head_stride = d / 4;
    one.bytes = q;
    for (int64_t j = 0; j < 40; ++j) {
      std::vector<uint8_t> kj(codes.row(1, j), codes.row(1, j) + d / 4);
      uint16_t back = 0xFFFF;
      adamas::l1_distances(kj.data(), one.view(), 0, &back);
      ASSERT_EQ(back, fwd[size_t(j)]) << "d=" << d << " token " << j;
    }
  }
}

// The group version: n_queries codes (one after another, dim/4 bytes each) against keys [begin, end), query q's
// distances at out + q*out_stride, entry i for key begin + i. Every query must equal the single-query reference.
TEST(Estimate, GroupMatchesReference) {
  ADAMAS_SEEDED_RNG(rng);
  for (int64_t d : {16, 32, 64, 128, 256, 512}) {
    for (int64_t nq = 1; nq <= 8; ++nq) {
      const int64_t tokens = ref::uniform_int(rng, 1, 700), heads = ref::uniform_int(rng, 1, 2);
      const int64_t begin = ref::uniform_int(rng, 0, tokens - 1), end = ref::uniform_int(rng, begin + 1, tokens);
      const int64_t stride = (end - begin) + ref::uniform_int(rng, 0, 9), head = ref::uniform_int(rng, 0, heads - 1);
      SCOPED_TRACE(testing::Message() << "d=" << d << " n_queries=" << nq << " tokens=" << tokens << " range=["
                                      << begin << "," << end << ") out_stride=" << stride);
      const auto codes = ref::make_codes(rng, heads, tokens, d, nq % 2 == 1);
      std::vector<uint8_t> qs;
      for (int64_t q = 0; q < nq; ++q) {
        const auto c = random_code(rng, d);
        qs.insert(qs.end(), c.begin(), c.end());
      }
      std::vector<uint16_t> out(size_t(nq * stride), 0xFFFF);
      adamas::l1_distances_group(qs.data(), nq, codes.view(), head, begin, end, out.data(), stride);
      int bad = 0;
      for (int64_t q = 0; q < nq; ++q) {
        for (int64_t j = begin; j < end; ++j) {
          const int want = ref::l1(&qs[size_t(q * (d / 4))], codes.row(head, j), d);
          const uint16_t got = out[size_t(q * stride + (j - begin))];
          if (got != want && ++bad <= 3)
            ADD_FAILURE() << "query " << q << " key " << j << ": got " << got << " want " << want;
        }
        for (int64_t i = end - begin; i < stride; ++i)
          if (out[size_t(q * stride + i)] != 0xFFFF && ++bad <= 3)
            ADD_FAILURE() << "query " << q << ": wrote past end - begin at entry " << i;
      }
    }
  }
}

// A long context (~70K tokens) through an interleaved-style stride: still bit-exact.
TEST(Estimate, LongContext70K) {
  ADAMAS_SEEDED_RNG(rng);
  const int64_t d = 128, tokens = 70001;
  const auto codes = ref::make_codes(rng, 2, tokens, d, true);
  check_l1(random_code(rng, d), codes, 1);
  // and the group version on the same codes, in two chunks
  std::vector<uint8_t> qs;
  for (int q = 0; q < 4; ++q) {
    const auto c = random_code(rng, d);
    qs.insert(qs.end(), c.begin(), c.end());
  }
  const int64_t mid = ref::uniform_int(rng, 1, tokens - 1);
  std::vector<uint16_t> a(size_t(4 * mid), 0xFFFF), b(size_t(4 * (tokens - mid)), 0xFFFF);
  adamas::l1_distances_group(qs.data(), 4, codes.view(), 0, 0, mid, a.data(), mid);
  adamas::l1_distances_group(qs.data(), 4, codes.view(), 0, mid, tokens, b.data(), tokens - mid);
  int bad = 0;
  for (int64_t q = 0; q < 4; ++q)
    for (int64_t j = 0; j < tokens; ++j) {
      const int want = ref::l1(&qs[size_t(q * 32)], codes.row(0, j), d);
      const int got = j < mid ? a[size_t(q * mid + j)] : b[size_t(q * (tokens - mid) + j - mid)];
      if (got != want && ++bad <= 3) ADD_FAILURE() << "query " << q << " key " << j << ": " << got << " vs " << want;
    }
  EXPECT_EQ(bad, 0);
}

}  // namespace

// The internal code paths (portable 64-bit word path and AVX2 path, src/attention/cpu/estimate.h), each held
// against the reference directly, so a fallback that is never taken on this machine is still covered.
#include "attention/cpu/estimate.h"

namespace {

TEST(Estimate, InternalWordAndSimdPaths) {
  ADAMAS_SEEDED_RNG(rng);
  for (int64_t d : {16, 32, 64, 128, 256, 512}) {
    for (int path = 0; path < 2; ++path) {
      const int64_t bytes = d / 4, nq = ref::uniform_int(rng, 1, 8), n = ref::uniform_int(rng, 1, 300);
      const int64_t key_stride = bytes + ref::uniform_int(rng, 0, 5), out_stride = n + ref::uniform_int(rng, 0, 5);
      SCOPED_TRACE(testing::Message() << (path ? "simd" : "words") << " d=" << d << " nq=" << nq << " n=" << n);
      std::vector<uint8_t> keys(size_t(n * key_stride)), qs(size_t(nq * bytes));
      for (auto& b : keys) b = uint8_t(rng());
      for (auto& b : qs) b = uint8_t(rng());
      std::vector<uint16_t> out(size_t(nq * out_stride), 0xFFFF);
      (path ? adamas::detail::l1_group_simd : adamas::detail::l1_group_words)(qs.data(), nq, keys.data(), key_stride,
                                                                              n, bytes, out.data(), out_stride);
      int bad = 0;
      for (int64_t q = 0; q < nq; ++q)
        for (int64_t j = 0; j < n; ++j) {
          const int want = ref::l1(&qs[size_t(q * bytes)], &keys[size_t(j * key_stride)], d);
          if (out[size_t(q * out_stride + j)] != want && ++bad <= 3)
            ADD_FAILURE() << "query " << q << " key " << j << ": got " << out[size_t(q * out_stride + j)] << " want "
                          << want;
        }
    }
  }
}

}  // namespace
