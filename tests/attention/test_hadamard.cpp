// Hadamard transform: hadamard_transform / hadamard_rows against the explicit Sylvester matrix in double, and the
// invariants the method relies on (orthonormal: twice = identity, dot products and norms preserved).
#include "reference.h"

namespace {

using adamas::DType;

const int64_t kDims[] = {16, 32, 64, 128, 256, 512};

std::vector<float> random_vector(std::mt19937& rng, int64_t d, double sigma) {
  std::vector<float> x(static_cast<size_t>(d));
  for (auto& v : x) v = float(ref::normal(rng, sigma));
  return x;
}

double norm(const std::vector<float>& x) {
  double s = 0;
  for (float v : x) s += double(v) * v;
  return std::sqrt(s);
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}

TEST(Hadamard, SupportedDims) {
  for (int64_t d : kDims) EXPECT_TRUE(adamas::is_supported_dim(d)) << d;
  for (int64_t d : {0, 1, 2, 4, 8, 12, 48, 96, 100, 1024, 2048, -16}) EXPECT_FALSE(adamas::is_supported_dim(d)) << d;
}

// The f32 fast transform equals x * H / sqrt(d) computed by an explicit matrix product in double.
TEST(Hadamard, MatchesExplicitMatrix) {
  ADAMAS_SEEDED_RNG(rng);
  for (int64_t d : kDims) {
    for (double sigma : {1.0, 30.0}) {
      SCOPED_TRACE(testing::Message() << "d=" << d << " sigma=" << sigma);
      auto x = random_vector(rng, d, sigma);
      std::vector<double> xd(x.begin(), x.end());
      const auto want = ref::hadamard(xd);
      // guard after the vector: the transform must not write past dim
      x.push_back(-7.0f);
      adamas::hadamard_transform(x.data(), d);
      EXPECT_EQ(x[size_t(d)], -7.0f) << "wrote past dim";
      // f32 butterflies: error ~ log2(d) * eps * |x|
      const double tol = 2e-6 * norm(std::vector<float>(xd.begin(), xd.end()));
      int bad = 0;
      for (int64_t i = 0; i < d; ++i)
        if (!(std::fabs(x[size_t(i)] - want[size_t(i)]) <= tol) && ++bad <= 3)
          ADD_FAILURE() << "coordinate " << i << ": got " << x[size_t(i)] << " want " << want[size_t(i)];
    }
  }
}

// A unit vector e_j becomes row j of H / sqrt(d): checks the natural (Sylvester) order, not Walsh order.
TEST(Hadamard, BasisVectorsGiveSylvesterRows) {
  ADAMAS_SEEDED_RNG(rng);
  for (int64_t d : kDims) {
    const int64_t j = ref::uniform_int(rng, 0, d - 1);
    std::vector<float> x(size_t(d), 0.0f);
    x[size_t(j)] = 1.0f;
    adamas::hadamard_transform(x.data(), d);
    const double s = 1.0 / std::sqrt(double(d));
    for (int64_t i = 0; i < d; ++i) {
      const double want = (std::popcount(uint64_t(i & j)) & 1) ? -s : s;
      ASSERT_NEAR(x[size_t(i)], want, 1e-6) << "d=" << d << " j=" << j << " i=" << i;
    }
  }
}

TEST(Hadamard, TwiceIsIdentity) {
  ADAMAS_SEEDED_RNG(rng);
  for (int64_t d : kDims) {
    SCOPED_TRACE(testing::Message() << "d=" << d);
    const auto x0 = random_vector(rng, d, 3.0);
    auto x = x0;
    adamas::hadamard_transform(x.data(), d);
    adamas::hadamard_transform(x.data(), d);
    const double tol = 4e-6 * norm(x0);
    for (int64_t i = 0; i < d; ++i) ASSERT_NEAR(x[size_t(i)], x0[size_t(i)], tol) << "i=" << i;
  }
}

TEST(Hadamard, PreservesDotProductsAndNorms) {
  ADAMAS_SEEDED_RNG(rng);
  for (int64_t d : kDims) {
    SCOPED_TRACE(testing::Message() << "d=" << d);
    auto a = random_vector(rng, d, 1.0), b = random_vector(rng, d, 1.0);
    const double ab = dot(a, b), na = norm(a), nb = norm(b);
    adamas::hadamard_transform(a.data(), d);
    adamas::hadamard_transform(b.data(), d);
    EXPECT_NEAR(dot(a, b), ab, 1e-5 * na * nb);
    EXPECT_NEAR(norm(a), na, 1e-5 * na);
    EXPECT_NEAR(norm(b), nb, 1e-5 * nb);
  }
}

// hadamard_rows on strided rows of every dtype: each row rotated (f16/bf16 rounded back, so within one unit in
// the last place of the storage type), the padding between rows untouched.
TEST(Hadamard, RowsAllDtypesStrided) {
  ADAMAS_SEEDED_RNG(rng);
  for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
    for (int64_t d : {16, 64, 128, 512}) {
      const int64_t rows = ref::uniform_int(rng, 1, 9), stride = d + ref::uniform_int(rng, 0, 6);
      SCOPED_TRACE(testing::Message() << ref::name(dtype) << " d=" << d << " rows=" << rows << " stride=" << stride);
      const size_t es = ref::elem_size(dtype);
      std::vector<unsigned char> buf(size_t(rows * stride) * es);
      for (int64_t i = 0; i < rows * stride; ++i) ref::store(buf.data(), dtype, i, -99.0f);  // padding marker
      std::vector<double> vals(size_t(rows * d));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < d; ++i) {
          ref::store(buf.data(), dtype, r * stride + i, float(ref::normal(rng, 2.0)));
          vals[size_t(r * d + i)] = ref::load(buf.data(), dtype, r * stride + i);
        }
      adamas::hadamard_rows(buf.data(), dtype, rows, d, stride);
      int bad = 0;
      for (int64_t r = 0; r < rows; ++r) {
        const auto want = ref::hadamard(&vals[size_t(r * d)], d);
        double nrm = 0;
        for (int64_t i = 0; i < d; ++i) nrm += vals[size_t(r * d + i)] * vals[size_t(r * d + i)];
        nrm = std::sqrt(nrm);
        for (int64_t i = 0; i < d; ++i) {
          const double w = want[size_t(i)], got = ref::load(buf.data(), dtype, r * stride + i);
          // one ulp of the storage type at |w| (plus the f32 rotation error)
          const int mant = dtype == DType::f16 ? 10 : dtype == DType::bf16 ? 7 : 23;
          const double ulp = std::ldexp(1.0, std::max(std::ilogb(std::max(std::fabs(w), 1e-30)), -14) - mant);
          const double tol = (dtype == DType::f32 ? 0.0 : ulp) + 2e-6 * nrm;
          if (!(std::fabs(got - w) <= tol) && ++bad <= 3)
            ADD_FAILURE() << "row " << r << " coord " << i << ": got " << got << " want " << w;
        }
        for (int64_t i = d; i < stride; ++i)
          EXPECT_EQ(ref::load(buf.data(), dtype, r * stride + i), -99.0f) << "padding written, row " << r;
      }
    }
  }
}

}  // namespace
