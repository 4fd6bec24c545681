// Codes: encode_rotated (bit-exact bucketize + pack), encode_vector and encode_keys (rotate + bucketize, any dtype,
// strided views, shared or per-head thresholds), and calibrate_thresholds / calibrate_head.
#include "reference.h"

namespace {

using adamas::DType;
using adamas::Thresholds;

Thresholds random_thresholds(std::mt19937& rng) {
  Thresholds t;
  t.t1 = float(ref::normal(rng, 0.3));
  t.t0 = t.t1 - float(std::uniform_real_distribution<double>(0.2, 1.5)(rng));
  t.t2 = t.t1 + float(std::uniform_real_distribution<double>(0.2, 1.5)(rng));
  return t;
}

// Compares a packed code computed by the library (f32 rotation) with the double reference of the unrotated
// vector x. A coordinate may differ by one level only where the exact rotated value lies within `tol` of the
// threshold between the two levels (the f32 rotation may land on either side). Returns the mismatch count.
int expect_code_near(const uint8_t* got, const double* x, int64_t d, const Thresholds& t, const std::string& what) {
  const auto y = ref::hadamard(x, d);
  double nrm = 0;
  for (int64_t i = 0; i < d; ++i) nrm += x[i] * x[i];
  const double tol = 1e-5 * std::sqrt(nrm) + 1e-6;
  const auto g = ref::unpack(got, d);
  const float th[3] = {t.t0, t.t1, t.t2};
  int bad = 0;
  for (int64_t i = 0; i < d; ++i) {
    const int want = ref::bucket(y[size_t(i)], t), have = g[size_t(i)];
    if (want == have) continue;
    const bool near = std::abs(want - have) == 1 && std::fabs(y[size_t(i)] - th[std::min(want, have)]) <= tol;
    if (!near && ++bad <= 3)
      ADD_FAILURE() << what << ": coordinate " << i << " code " << have << " want " << want << " (rotated "
                    << y[size_t(i)] << ", thresholds " << t.t0 << " " << t.t1 << " " << t.t2 << ")";
  }
  return bad;
}

// Bucketize + pack of an already rotated vector is exact: compare bit for bit, including values equal to a
// threshold (x > t is strict) and one ulp either side.
TEST(Codes, EncodeRotatedBitExact) {
  ADAMAS_SEEDED_RNG(rng);
  for (int64_t d : {16, 32, 64, 128, 256, 512}) {
    SCOPED_TRACE(testing::Message() << "d=" << d);
    const Thresholds t = random_thresholds(rng);
    std::vector<float> x(static_cast<size_t>(d));
    const float th[3] = {t.t0, t.t1, t.t2};
    for (auto& v : x) {
      switch (ref::uniform_int(rng, 0, 4)) {
        case 0: v = th[ref::uniform_int(rng, 0, 2)]; break;
        case 1: v = std::nextafter(th[ref::uniform_int(rng, 0, 2)], INFINITY); break;
        case 2: v = std::nextafter(th[ref::uniform_int(rng, 0, 2)], -INFINITY); break;
        default: v = float(ref::normal(rng, 1.5)); break;
      }
    }
    std::vector<uint8_t> code(size_t(d / 4) + 1, 0xA5);  // poisoned, plus a guard byte
    adamas::encode_rotated(x.data(), d, t, code.data());
    const auto want = ref::pack(ref::bucketize(std::vector<double>(x.begin(), x.end()), t));
    for (int64_t b = 0; b < d / 4; ++b) ASSERT_EQ(int(code[size_t(b)]), int(want[size_t(b)])) << "byte " << b;
    EXPECT_EQ(code[size_t(d / 4)], 0xA5) << "wrote past dim/4 bytes";
  }
}

// The layout: coordinate 0 in the two lowest bits of byte 0.
TEST(Codes, BitLayout) {
  const int64_t d = 16;
  std::vector<float> x(d, -100.0f);  // all code 0
  x[0] = 100.0f;                     // code 3 -> byte 0 bits 0..1
  x[5] = 5.0f;                       // code 2 with t = (-10, 0, 10) -> byte 1 bits 2..3
  x[15] = -5.0f;                     // code 1 -> byte 3 bits 6..7
  std::vector<uint8_t> code(4, 0xFF);
  adamas::encode_rotated(x.data(), d, Thresholds{}, code.data());
  EXPECT_EQ(code[0], 0x03);
  EXPECT_EQ(code[1], 0x08);
  EXPECT_EQ(code[2], 0x00);
  EXPECT_EQ(code[3], 0x40);
  EXPECT_EQ(adamas::code_bytes(128), 32);
  EXPECT_EQ(adamas::max_l1_distance(128), 384);
}

// encode_vector = rotate (f32) + bucketize, for f32 / f16 / bf16 inputs, against the double reference.
TEST(Codes, EncodeVectorMatchesReference) {
  ADAMAS_SEEDED_RNG(rng);
  for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
    for (int64_t d : {16, 32, 64, 128, 256, 512}) {
      for (int rep = 0; rep < 4; ++rep) {
        SCOPED_TRACE(testing::Message() << ref::name(dtype) << " d=" << d << " rep=" << rep);
        // rep 0 uses the paper's fixed thresholds on large activations, the others random thresholds
        const Thresholds t = rep == 0 ? Thresholds{} : random_thresholds(rng);
        const double sigma = rep == 0 ? 12.0 : 1.0;
        std::vector<unsigned char> buf(size_t(d) * ref::elem_size(dtype));
        std::vector<double> x(static_cast<size_t>(d));
        for (int64_t i = 0; i < d; ++i) {
          ref::store(buf.data(), dtype, i, float(ref::normal(rng, sigma)));
          x[size_t(i)] = ref::load(buf.data(), dtype, i);
        }
        const auto before = buf;
        std::vector<uint8_t> code(size_t(d / 4) + 1, 0xA5);
        adamas::encode_vector(buf.data(), dtype, d, t, code.data());
        expect_code_near(code.data(), x.data(), d, t, "encode_vector");
        EXPECT_EQ(code[size_t(d / 4)], 0xA5) << "wrote past dim/4 bytes";
        EXPECT_EQ(buf, before) << "encode_vector modified its input (it must rotate a copy)";
      }
    }
  }
}

// encode_keys writes the codes of tokens [begin, end) of every head, and nothing else, through strided views,
// with one shared threshold set or one per head.
TEST(Codes, EncodeKeysRangeStridedPerHead) {
  ADAMAS_SEEDED_RNG(rng);
  for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
    for (ref::Layout layout : {ref::Layout::contiguous, ref::Layout::padded, ref::Layout::interleaved}) {
      for (bool per_head : {false, true}) {
        const int64_t d = std::array<int64_t, 4>{32, 64, 128, 256}[size_t(ref::uniform_int(rng, 0, 3))];
        const int64_t heads = ref::uniform_int(rng, 1, 4), tokens = ref::uniform_int(rng, 1, 60);
        const int64_t begin = ref::uniform_int(rng, 0, tokens - 1), end = ref::uniform_int(rng, begin, tokens);
        SCOPED_TRACE(testing::Message() << ref::name(dtype) << " " << ref::name(layout) << " per_head=" << per_head
                                        << " d=" << d << " heads=" << heads << " tokens=" << tokens << " range=["
                                        << begin << "," << end << ")");
        const auto keys = ref::make_heads(rng, dtype, heads, tokens, d, layout);
        std::vector<Thresholds> th;
        for (int64_t h = 0; h < (per_head ? heads : 1); ++h) th.push_back(random_thresholds(rng));
        auto codes = ref::make_codes(rng, heads, tokens, d, layout != ref::Layout::contiguous);
        const auto before = codes.bytes;
        adamas::encode_keys(keys.view(), begin, end, th, codes.mut());
        // reference: every token of [begin, end) matches; every other byte is untouched
        std::vector<char> covered(codes.bytes.size(), 0);
        int bad = 0;
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t j = begin; j < end; ++j) {
            bad += expect_code_near(codes.row(h, j), keys.row(h, j), d, th[per_head ? size_t(h) : 0],
                                    "head " + std::to_string(h) + " token " + std::to_string(j));
            for (int64_t b = 0; b < d / 4; ++b) covered[size_t(h * codes.head_stride + j * codes.token_stride + b)] = 1;
            if (bad > 3) break;
          }
        for (size_t b = 0; b < codes.bytes.size(); ++b)
          if (!covered[b]) { ASSERT_EQ(codes.bytes[b], before[b]) << "byte " << b << " outside [begin,end) written"; }
      }
    }
  }
}

// The header: percentiles interpolate linearly between order statistics (numpy's default): the p-th percentile of
// N sorted values s is s[lo] + (r - lo) * (s[lo + 1] - s[lo]) with r = p * (N - 1), lo = floor(r). `slack` covers
// the f32 arithmetic (and, for calibrate_head, the f32 rotation, which moves every order statistic by at most the
// largest rotation error).
double linear_percentile(const std::vector<double>& sorted, double p) {
  const double r = p * double(sorted.size() - 1);
  const size_t lo = size_t(std::floor(r)), hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (r - double(lo)) * (sorted[hi] - sorted[lo]);
}

void expect_percentile(double got, const std::vector<double>& sorted, double p, double slack, const char* what) {
  const double want = linear_percentile(sorted, p);
  EXPECT_NEAR(got, want, slack + 1e-6 * std::fabs(want)) << what << " (p = " << p << ", N = " << sorted.size() << ")";
}

TEST(Codes, CalibrateQuartiles) {
  ADAMAS_SEEDED_RNG(rng);
  for (int64_t d : {32, 128, 512}) {
    const int64_t rows = ref::uniform_int(rng, 8, 40), stride = d + ref::uniform_int(rng, 0, 9);
    SCOPED_TRACE(testing::Message() << "d=" << d << " rows=" << rows << " stride=" << stride);
    // skewed data (so mean != median) plus an offset, padding poisoned with NaN
    const double offset = ref::normal(rng, 2.0);
    std::vector<float> x(size_t(rows * stride), NAN);
    std::vector<double> pooled;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < d; ++i) {
        const double g = ref::normal(rng);
        x[size_t(r * stride + i)] = float(offset + g + 0.3 * g * g);
        pooled.push_back(x[size_t(r * stride + i)]);
      }
    std::sort(pooled.begin(), pooled.end());
    const Thresholds t = adamas::calibrate_thresholds(x.data(), rows, d, stride, {});
    EXPECT_LT(t.t0, t.t1);
    EXPECT_LT(t.t1, t.t2);
    EXPECT_NO_THROW(adamas::validate_thresholds(t));
    expect_percentile(t.t0, pooled, 0.25, 1e-6, "t0");
    expect_percentile(t.t1, pooled, 0.50, 1e-6, "t1");
    expect_percentile(t.t2, pooled, 0.75, 1e-6, "t2");
  }
}

// Degenerate samples (all equal, or mostly one value): the thresholds still come out strictly increasing (the
// header: equal ones are separated by one float ulp) and valid.
TEST(Codes, CalibrateDegenerateSamples) {
  ADAMAS_SEEDED_RNG(rng);
  const int64_t d = 64, rows = 8;
  const float c = float(ref::normal(rng, 2.0));
  std::vector<float> same(size_t(rows * d), c), mostly(size_t(rows * d), 0.0f);
  for (int64_t i = 0; i < rows * d / 10; ++i) mostly[size_t(ref::uniform_int(rng, 0, rows * d - 1))] = float(ref::normal(rng));
  for (const auto* x : {&same, &mostly}) {
    const Thresholds t = adamas::calibrate_thresholds(x->data(), rows, d, d, {});
    EXPECT_LT(t.t0, t.t1);
    EXPECT_LT(t.t1, t.t2);
    EXPECT_NO_THROW(adamas::validate_thresholds(t));
    std::vector<double> sorted(x->begin(), x->end());
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(t.t0, float(linear_percentile(sorted, 0.25))) << "t0 is the exact 25th percentile";
    EXPECT_LE(t.t2, std::nextafter(std::nextafter(std::max(float(linear_percentile(sorted, 0.75)), t.t0), INFINITY),
                                   INFINITY))
        << "t2 moved by more than the ulps needed to separate";
  }
}

TEST(Codes, CalibrateSigma) {
  ADAMAS_SEEDED_RNG(rng);
  for (int64_t d : {16, 64, 256}) {
    for (float c : {0.5f, 1.0f, 2.5f}) {
      const int64_t rows = ref::uniform_int(rng, 4, 30), stride = d + ref::uniform_int(rng, 0, 5);
      SCOPED_TRACE(testing::Message() << "d=" << d << " c=" << c << " rows=" << rows);
      const double mu = ref::normal(rng, 1.0), sd = std::uniform_real_distribution<double>(0.2, 5.0)(rng);
      std::vector<float> x(size_t(rows * stride), NAN);
      double sum = 0, sq = 0;
      const double n = double(rows * d);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < d; ++i) {
          x[size_t(r * stride + i)] = float(ref::normal(rng, sd) + mu);
          sum += x[size_t(r * stride + i)];
        }
      const double mean = sum / n;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < d; ++i) sq += (x[size_t(r * stride + i)] - mean) * (x[size_t(r * stride + i)] - mean);
      const double sigma = std::sqrt(sq / n);  // population sigma (the header says so)
      adamas::CalibrationOptions opt;
      opt.kind = adamas::Calibration::sigma;
      opt.sigma_scale = c;
      const Thresholds t = adamas::calibrate_thresholds(x.data(), rows, d, stride, opt);
      const double tol = 1e-5 * (std::fabs(mean) + sigma * (1 + c));
      EXPECT_NEAR(t.t1, mean, tol);
      EXPECT_NEAR(t.t0, mean - c * sigma, tol);
      EXPECT_NEAR(t.t2, mean + c * sigma, tol);
    }
  }
}

// calibrate_head rotates tokens [begin, end) of one head (any dtype, strided) and takes their quartiles.
TEST(Codes, CalibrateHeadRotatesTheRange) {
  ADAMAS_SEEDED_RNG(rng);
  for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
    const int64_t d = 64, heads = 3, tokens = 80;
    const auto keys = ref::make_heads(rng, dtype, heads, tokens, d, ref::Layout::interleaved, 2.0);
    const int64_t head = ref::uniform_int(rng, 0, heads - 1), begin = ref::uniform_int(rng, 0, 30);
    const int64_t end = ref::uniform_int(rng, begin + 20, tokens);
    SCOPED_TRACE(testing::Message() << ref::name(dtype) << " head=" << head << " [" << begin << "," << end << ")");
    std::vector<double> pooled;
    double max_norm = 0;
    for (int64_t j = begin; j < end; ++j) {
      double nrm = 0;
      for (int64_t i = 0; i < d; ++i) nrm += keys.at(head, j, i) * keys.at(head, j, i);
      max_norm = std::max(max_norm, std::sqrt(nrm));
      for (double y : ref::hadamard(keys.row(head, j), d)) pooled.push_back(y);
    }
    std::sort(pooled.begin(), pooled.end());
    const Thresholds t = adamas::calibrate_head(keys.view(), head, begin, end, {});
    const double slack = 2e-6 * max_norm;  // the f32 rotation error bound
    expect_percentile(t.t0, pooled, 0.25, slack, "t0");
    expect_percentile(t.t1, pooled, 0.50, slack, "t1");
    expect_percentile(t.t2, pooled, 0.75, slack, "t2");
  }
}

TEST(Codes, CalibrateNoRowsThrows) {
  std::vector<float> x(64, 1.0f);
  ref::expect_error([&] { adamas::calibrate_thresholds(x.data(), 0, 64, 64); },
                    {adamas::ErrorKind::invalid_argument}, {"rows", "empty", "sample"}, "calibrate with rows == 0");
}

}  // namespace
