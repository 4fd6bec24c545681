// The CUDA distance passes' XOR-form L1 of packed codes (src/attention/cuda/xor_l1.h, host-callable) against the
// scalar sum of |a - b| over the 2-bit codes: every code pair in every position, then fresh random words.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>

#include "attention/cuda/xor_l1.h"

namespace {

using adamas::cuda::detail::xor_l1;
using adamas::cuda::detail::xor_query;

// sum over the 16 codes of each word (code i: bits 2i, 2i + 1) of |a - b|
int scalar_l1(const uint32_t* a, const uint32_t* b, int words) {
  int d = 0;
  for (int w = 0; w < words; ++w)
    for (int i = 0; i < 16; ++i) {
      const int ca = int(a[w] >> (2 * i)) & 3, cb = int(b[w] >> (2 * i)) & 3;
      d += ca > cb ? ca - cb : cb - ca;
    }
  return d;
}

TEST(XorL1, EveryCodePairInEveryPosition) {
  // One pair (a, b) at code position i of word w, the other codes of both sides random (so the neighbours' bits,
  // which the shifts move across code boundaries, are exercised too).
  std::mt19937 rng(12345);
  for (int w = 0; w < 4; ++w)
    for (int i = 0; i < 16; ++i)
      for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) {
          uint32_t q[4], k[4];
          for (int j = 0; j < 4; ++j) q[j] = rng(), k[j] = rng();
          const uint32_t clear = ~(3u << (2 * i));
          q[w] = (q[w] & clear) | (uint32_t(a) << (2 * i));
          k[w] = (k[w] & clear) | (uint32_t(b) << (2 * i));
          ASSERT_EQ(xor_l1<4>(xor_query<4>(q), k), scalar_l1(q, k, 4)) << "word " << w << " code " << i << " a " << a
                                                                         << " b " << b;
        }
}

TEST(XorL1, RandomWordsAndExtremes) {
  std::random_device rd;
  const unsigned seed = rd();
  std::mt19937 rng(seed);
  for (int it = 0; it < 20000; ++it) {
    uint32_t q[8], k[8];
    for (int j = 0; j < 8; ++j) q[j] = rng(), k[j] = rng();
    if (it % 4 == 1)
      for (int j = 0; j < 8; ++j) k[j] = ~q[j];  // every code pair at distance 3 or 1
    if (it % 4 == 2)
      for (int j = 0; j < 8; ++j) k[j] = q[j] ^ 0xFFFFFFFFu * (j % 2);
    ASSERT_EQ(xor_l1<8>(xor_query<8>(q), k), scalar_l1(q, k, 8)) << "seed " << seed << " iteration " << it;
    ASSERT_EQ(xor_l1<2>(xor_query<2>(q), k), scalar_l1(q, k, 2)) << "seed " << seed << " iteration " << it;
  }
  // all 0 against all 3: the largest distance of a word pair
  const uint32_t zero[2] = {0, 0}, three[2] = {0xFFFFFFFFu, 0xFFFFFFFFu};
  EXPECT_EQ(xor_l1<2>(xor_query<2>(zero), three), 96);
  EXPECT_EQ(xor_l1<2>(xor_query<2>(three), zero), 96);
}

}  // namespace
