// Calibrated Adamas thresholds in the engine: per (layer, KV head) from the first prefill chunk's rotated keys,
// per (layer, query head) from its queries. On the tiny synthetic model (keys of magnitude ~1), the paper's fixed
// thresholds (-10, 0, 10) give codes 1 and 2 almost only; calibrated quartiles use all four codes about equally.
#include <gtest/gtest.h>

#include <array>
#include <cmath>

#include "engine/session.h"
#include "tiny_model.h"

namespace adamas {
namespace {

const std::vector<int32_t> kPrompt{3, 17, 5, 39, 0, 22, 8, 8, 30, 1, 12, 25, 7, 7, 19, 33, 2, 14, 28, 9};

LlamaModel tiny() {
  static const auto m = test::make_tiny_model({});
  return LlamaModel::from_gguf(GgufFile::from_bytes(m.bytes, "tiny.gguf"));
}

// How often each 2-bit code value occurs in every layer's cached key codes.
std::array<int64_t, 4> code_histogram(const Session& s) {
  std::array<int64_t, 4> count{};
  const ModelConfig& c = s.model().config();
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const CodesView v = s.cache().codes(l, s.position());
    for (int64_t h = 0; h < v.heads; ++h)
      for (int64_t t = 0; t < v.tokens; ++t)
        for (int64_t b = 0; b < code_bytes(v.dim); ++b)
          for (int f = 0; f < 4; ++f) ++count[(v.row(h, t)[b] >> (2 * f)) & 3];
  }
  return count;
}

EngineOptions adamas_options(bool calibrated, int64_t budget) {
  EngineOptions o;
  o.context = 64;
  o.attention.method = Method::adamas;
  o.attention.budget = budget;
  o.dense_layers = 0;
  o.calibrate_thresholds = calibrated;
  return o;
}

TEST(Calibration, QuartileCodesUseAllFourValuesWhereFixedOnesCannot) {
  const LlamaModel model = tiny();
  Session fixed(model, adamas_options(false, 4)), calibrated(model, adamas_options(true, 4));
  fixed.prefill(kPrompt);
  calibrated.prefill(kPrompt);
  const auto f = code_histogram(fixed), c = code_histogram(calibrated);
  const int64_t f_total = f[0] + f[1] + f[2] + f[3];
  EXPECT_LT(double(f[0] + f[3]) / double(f_total), 0.01) << "fixed thresholds (-10, 0, 10) on keys of magnitude ~1";
  const int64_t total = c[0] + c[1] + c[2] + c[3];
  for (int v = 0; v < 4; ++v)  // quartiles of the same keys: each value about a quarter of the codes
    EXPECT_NEAR(double(c[v]) / double(total), 0.25, 0.08) << "code " << v;
  // Decoding with a small budget runs on calibrated codes and gives finite logits.
  for (float x : calibrated.decode(11)) ASSERT_TRUE(std::isfinite(x));
}

TEST(Calibration, BudgetCoveringTheContextEqualsFullAttention) {
  const LlamaModel model = tiny();
  EngineOptions full_opt = adamas_options(false, 64);
  full_opt.attention.method = Method::full;
  Session full(model, full_opt), calibrated(model, adamas_options(true, 64));
  full.prefill(kPrompt);
  calibrated.prefill(kPrompt);
  for (int32_t t : {4, 9, 31}) {
    const auto a = full.decode(t);
    const std::vector<float> want(a.begin(), a.end());
    const auto b = calibrated.decode(t);
    ASSERT_EQ(std::vector<float>(b.begin(), b.end()), want) << "token " << t;
  }
}

TEST(Calibration, ResetRecalibratesOnTheNextSequence) {
  const LlamaModel model = tiny();
  Session s(model, adamas_options(true, 4));
  s.prefill(kPrompt);
  const auto first = code_histogram(s);
  s.reset();
  s.prefill(std::span(kPrompt).first(8));  // another, shorter sequence: its own quartiles
  const auto second = code_histogram(s);
  const int64_t total = second[0] + second[1] + second[2] + second[3];
  for (int v = 0; v < 4; ++v) EXPECT_NEAR(double(second[v]) / double(total), 0.25, 0.1) << "code " << v;
  EXPECT_NE(first, second);
}

}  // namespace
}  // namespace adamas
