// Select at long context goes through a sampled cut-off (select.cpp): candidates under an estimate taken from an
// even sample, exact selection among them, and a fall-back to the whole range when the estimate falls short.
// These cases aim at each branch with distributions that fool the sample; all must equal the full-sort reference.
#include "reference.h"

namespace {

std::vector<int32_t> select(const std::vector<uint16_t>& d, int max_distance, const adamas::SelectOptions& o) {
  std::vector<int32_t> out(size_t(std::min<int64_t>(o.budget, int64_t(d.size()))), -1);
  const int64_t count = adamas::select_topk(d.data(), int64_t(d.size()), max_distance, o, out.data());
  out.resize(size_t(count));
  return out;
}

}  // namespace

// The sampled positions (every middle/512-th token) hold the only small distances: the estimate admits just them,
// fewer than needed, so the selection must fall back to the whole range.
TEST(SelectPaths, SampleTooOptimisticFallsBack) {
  ADAMAS_SEEDED_RNG(rng);
  const int64_t n = 32768 + ref::uniform_int(rng, 0, 4096);
  const int64_t middle = n - 1, sample = 512;
  std::vector<uint16_t> d(static_cast<size_t>(n));
  for (auto& x : d) x = uint16_t(200 + ref::uniform_int(rng, 0, 100));
  for (int64_t i = 0; i < sample; ++i) d[size_t(i * middle / sample)] = uint16_t(ref::uniform_int(rng, 0, 5));
  adamas::SelectOptions o;
  o.budget = 1500;  // > 512 small ones: the candidates fall short
  EXPECT_EQ(select(d, 384, o), ref::select_topk(d, o));
}

// The small distances hide between sampled positions: the estimate is pessimistic, candidates are many.
TEST(SelectPaths, SmallDistancesBetweenSamples) {
  ADAMAS_SEEDED_RNG(rng);
  const int64_t n = 40000;
  std::vector<uint16_t> d(static_cast<size_t>(n));
  for (auto& x : d) x = uint16_t(150 + ref::uniform_int(rng, 0, 50));
  for (int64_t t = 1000; t < 1300; ++t) d[size_t(t)] = uint16_t(ref::uniform_int(rng, 0, 20));
  for (int64_t budget : {64, 256, 1024, 2048}) {
    adamas::SelectOptions o;
    o.budget = budget, o.sink = 2, o.window = 8;
    SCOPED_TRACE(testing::Message() << "budget " << budget);
    EXPECT_EQ(select(d, 384, o), ref::select_topk(d, o));
  }
}

// Every distance equal: the whole selection is ties, which go to the most recent tokens.
TEST(SelectPaths, AllTies) {
  const int64_t n = 50000;
  std::vector<uint16_t> d(static_cast<size_t>(n), 77);
  adamas::SelectOptions o;
  o.budget = 300;
  const auto sel = select(d, 384, o);
  ASSERT_EQ(int64_t(sel.size()), 300);
  for (int64_t i = 0; i < 300; ++i) EXPECT_EQ(sel[size_t(i)], int32_t(n - 300 + i));
}

// Two plateaus with the cut inside the upper one, on summed (shared-group) distances near the top of the range.
TEST(SelectPaths, PlateausAtLargeDistances) {
  ADAMAS_SEEDED_RNG(rng);
  const int max_distance = 8 * 384;
  const int64_t n = 65536 + ref::uniform_int(rng, 0, 1000);
  std::vector<uint16_t> d(static_cast<size_t>(n));
  for (auto& x : d) x = uint16_t(ref::uniform_int(rng, 0, 3) == 0 ? max_distance - 1 : max_distance);
  adamas::SelectOptions o;
  o.budget = 4000;
  EXPECT_EQ(select(d, max_distance, o), ref::select_topk(d, o));
}

// A distance above max_distance is the caller's error, reported on every path (never an out-of-range write).
TEST(SelectPaths, DistanceAboveMaxThrows) {
  for (int64_t n : {100, 40000}) {
    std::vector<uint16_t> d(static_cast<size_t>(n), 10);
    d[size_t(n / 2)] = 400;
    adamas::SelectOptions o;
    o.budget = 16;
    std::vector<int32_t> out(16);
    EXPECT_THROW(adamas::select_topk(d.data(), n, 384, o, out.data()), adamas::Error) << "n = " << n;
  }
}
