// Self-checks of the test reference (reference.h): if these fail, the other tests' verdicts mean nothing.
#include "reference.h"

namespace {

TEST(Reference, HalfConversionsKnownValues) {
  EXPECT_EQ(ref::f32_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(ref::f32_to_f16(-2.0f), 0xC000);
  EXPECT_EQ(ref::f32_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(ref::f32_to_f16(1e6f), 0x7C00);
  EXPECT_EQ(ref::f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);        // smallest subnormal
  EXPECT_EQ(ref::f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie -> even
  EXPECT_EQ(ref::f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_EQ(ref::f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_EQ(ref::f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(ref::f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);  // tie -> even
  EXPECT_EQ(ref::f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
  EXPECT_EQ(ref::bf16_to_f32(0xC040), -3.0f);
}

// Every finite f16 round-trips; random floats round to the nearest representable 16-bit value.
TEST(Reference, HalfConversionsRoundTripAndNearest) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = ref::f16_to_f32(uint16_t(h));
    if (std::isfinite(f)) { ASSERT_EQ(ref::f32_to_f16(f), uint16_t(h)) << std::hex << h; }
    const float b = ref::bf16_to_f32(uint16_t(h));
    if (std::isfinite(b)) { ASSERT_EQ(ref::f32_to_bf16(b), uint16_t(h)) << std::hex << h; }
  }
  ADAMAS_SEEDED_RNG(rng);
  for (int i = 0; i < 20000; ++i) {
    const float x = float(ref::normal(rng, 100.0));
    const float r = ref::round_to(adamas::DType::f16, x);
    const uint16_t h = ref::f32_to_f16(x);
    // neither neighbour is closer
    for (int delta : {-1, 1}) {
      const float nb = ref::f16_to_f32(uint16_t(h + delta));
      if (std::isfinite(nb)) { ASSERT_LE(std::fabs(r - x), std::fabs(nb - x)) << x; }
    }
  }
}

TEST(Reference, HadamardMatrixIsOrthonormal) {
  for (int64_t d : {16, 64}) {
    const auto& h = ref::hadamard_matrix(d);
    for (int64_t i = 0; i < d; ++i)
      for (int64_t j = 0; j < d; ++j) {
        double s = 0;
        for (int64_t k = 0; k < d; ++k) s += h[size_t(i * d + k)] * h[size_t(j * d + k)];
        ASSERT_NEAR(s, i == j ? 1.0 : 0.0, 1e-12);
      }
  }
}

TEST(Reference, PackUnpackAndL1) {
  ADAMAS_SEEDED_RNG(rng);
  std::vector<int> a(64), b(64);
  int want = 0;
  for (int i = 0; i < 64; ++i) {
    a[size_t(i)] = int(rng() % 4), b[size_t(i)] = int(rng() % 4);
    want += std::abs(a[size_t(i)] - b[size_t(i)]);
  }
  const auto pa = ref::pack(a), pb = ref::pack(b);
  EXPECT_EQ(ref::unpack(pa.data(), 64), a);
  EXPECT_EQ(ref::l1(pa.data(), pb.data(), 64), want);
}

TEST(Reference, SelectTieRule) {
  // distances 5 5 1 5 5 (n=5), budget 3: forced newest (4); then 2 (distance 1); then among the 5s the largest
  // index not yet kept: 3.
  adamas::SelectOptions o;
  o.budget = 3;
  EXPECT_EQ(ref::select_topk(std::vector<int>{5, 5, 1, 5, 5}, o), (std::vector<int32_t>{2, 3, 4}));
  o.sink = 1;
  EXPECT_EQ(ref::select_topk(std::vector<int>{5, 5, 1, 5, 5}, o), (std::vector<int32_t>{0, 2, 4}));
}

}  // namespace
