// The sampler: greedy, temperature with top-k / top-p, seeds, bad configs.
#include <gtest/gtest.h>

#include <map>

#include "engine/sampler.h"
#include "adamas/error.h"

namespace adamas {
namespace {

TEST(sampler, greedy_is_argmax_ties_to_lowest) {
  Sampler s({});
  const std::vector<float> l{0.1f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(s.sample(l), 1);
  EXPECT_EQ(argmax(l), 1);
}

TEST(sampler, top_k_one_and_tiny_top_p_are_greedy) {
  const std::vector<float> l{0.1f, 0.3f, 2.0f, 1.9f};
  Sampler k1({1.0f, 1, 1.0f, 7});
  Sampler p({1.0f, 0, 1e-6f, 7});
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(k1.sample(l), 2);
    EXPECT_EQ(p.sample(l), 2);
  }
}

TEST(sampler, same_seed_same_tokens_and_frequencies_follow_softmax) {
  const std::vector<float> l{0.0f, std::log(2.0f), std::log(3.0f), -50.0f};
  Sampler a({1.0f, 0, 1.0f, 42}), b({1.0f, 0, 1.0f, 42});
  std::map<int32_t, int> count;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const int32_t x = a.sample(l);
    EXPECT_EQ(x, b.sample(l));
    ++count[x];
  }
  EXPECT_NEAR(count[0] / double(n), 1.0 / 6, 0.015);
  EXPECT_NEAR(count[1] / double(n), 2.0 / 6, 0.015);
  EXPECT_NEAR(count[2] / double(n), 3.0 / 6, 0.015);
  EXPECT_EQ(count[3], 0);
  // top-k 2 keeps only ids 2 and 1 (3:2); top-p 0.5 keeps only id 2.
  Sampler k2({1.0f, 2, 1.0f, 1}), p5({1.0f, 0, 0.5f, 1});
  std::map<int32_t, int> ck;
  for (int i = 0; i < 5000; ++i) {
    ++ck[k2.sample(l)];
    EXPECT_EQ(p5.sample(l), 2);
  }
  EXPECT_EQ(ck[0], 0);
  EXPECT_NEAR(ck[2] / 5000.0, 0.6, 0.03);
}

TEST(sampler, bad_configs) {
  EXPECT_THROW(Sampler({-1.0f, 40, 0.9f, 0}), Error);
  EXPECT_THROW(Sampler({1.0f, -1, 0.9f, 0}), Error);
  EXPECT_THROW(Sampler({1.0f, 40, 0.0f, 0}), Error);
  EXPECT_THROW(Sampler({1.0f, 40, 1.5f, 0}), Error);
  Sampler s({});
  EXPECT_THROW(s.sample({}), Error);
}

}  // namespace
}  // namespace adamas
