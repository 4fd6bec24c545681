// Our engine against llama.cpp on the same model file: identical tokens, close logits, the same greedy text.
//
// Tolerance: both engines multiply the Q4_1 weights with activations rounded to 8 bits per block of 32 (llama.cpp's
// Q8_1; the Q8_0 output matrix with Q8_0), but the order of float sums and the rounding of values that land near a
// half step still differ, and this small model amplifies such differences (the fixtures' README: an f16 instead of
// f32 K/V cache moves llama.cpp's own logits by up to 0.9). Logits must agree within kLogitTol = 1.5 (measured on
// these fixtures: largest differences 0.53-0.88, with f32 activations they were 0.4-0.9 and 1.41 on `chatml`; the
// test prints them), the argmax must be the same wherever llama.cpp's top-2 margin exceeds 2 * kLogitTol, and the greedy
// continuations must be identical until they part, which is allowed only at a step where llama.cpp's own margin
// was below 2 * kLogitTol (a near-tie that rounding can flip).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/session.h"
#include "engine/sampler.h"
#include "model/tokenizer.h"
#include "model_paths.h"

namespace adamas {
namespace {

constexpr double kLogitTol = 1.5;

struct Loaded {
  LlamaModel model;
  Tokenizer tokenizer;
};

const Loaded* loaded() {
  static const Loaded* l = []() -> const Loaded* {
    const std::string path = test::model_path();
    if (path.empty()) return nullptr;
    LlamaModel m = LlamaModel::load(path);
    Tokenizer t = Tokenizer::from_gguf(m.file());
    return new Loaded{std::move(m), std::move(t)};
  }();
  return l;
}

nlohmann::json fixture(const std::string& name) {
  std::ifstream f(test::fixture_path("llama_cpp/" + name + ".json"));
  EXPECT_TRUE(f.good()) << "missing fixture " << name;
  return nlohmann::json::parse(f);
}

class LlamaCpp : public testing::TestWithParam<const char*> {};

TEST_P(LlamaCpp, TokensLogitsAndGreedyMatch) {
  const Loaded* L = loaded();
  if (L == nullptr) GTEST_SKIP() << test::kNoModelMessage;
  const nlohmann::json fx = fixture(GetParam());
  const bool f16 = fx["settings"]["kv_type"] == "f16";

  // 1. Tokens: exactly llama.cpp's.
  const std::vector<int32_t> tokens = L->tokenizer.encode(fx["prompt"].get<std::string>(), true);
  ASSERT_EQ(tokens, fx["tokens"].get<std::vector<int32_t>>());

  // 2. Logits after the prompt (and at every position where the fixture has them), full attention.
  EngineOptions o;
  o.context = 2048;
  o.attention.method = Method::full;
  o.kv_dtype = f16 ? DType::f16 : DType::f32;
  Session s(L->model, o);
  double worst = 0;
  auto compare = [&](std::span<const float> logits, const nlohmann::json& top, const char* where) {
    for (const auto& e : top) {
      const int32_t id = e[0];
      const double want = e[1], d = std::fabs(logits[size_t(id)] - want);
      worst = std::max(worst, d);
      EXPECT_LE(d, kLogitTol) << where << ": logit of " << id << " is " << logits[size_t(id)] << ", llama.cpp "
                              << want;
    }
    const double margin = double(top[0][1]) - double(top[1][1]);
    if (margin > 2 * kLogitTol) {
      EXPECT_EQ(argmax(logits), int32_t(top[0][0])) << where << " (llama.cpp margin " << margin << ")";
    }
  };
  if (fx.contains("positions")) {  // token by token through the prompt, each position's top-5
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::span<const float> logits = i == 0 ? s.prefill(std::span(tokens).first(1)) : s.decode(tokens[i]);
      compare(logits, fx["positions"][i]["top"], ("position " + std::to_string(i)).c_str());
    }
    s.reset();
  }
  std::span<const float> logits = s.prefill(tokens);
  compare(logits, fx["last"]["top"], "last prompt position");
  const auto& stride = fx["last"]["summary"]["stride_1024"];
  for (size_t i = 0; i < stride.size(); ++i) {
    const double d = std::fabs(logits[i * 1024] - double(stride[i]));
    worst = std::max(worst, d);
    EXPECT_LE(d, kLogitTol) << "logit of id " << i * 1024;
  }

  // 3. Greedy continuation: identical until the two part, which only a near-tie may explain.
  const auto& steps = fx["greedy"]["steps"];
  size_t same = 0;
  for (size_t k = 0; k < steps.size(); ++k) {
    const int32_t ours = argmax(logits), theirs = steps[k][0];
    if (ours != theirs) {
      EXPECT_LT(double(steps[k][2]), 2 * kLogitTol)
          << "greedy step " << k << ": " << ours << " vs llama.cpp " << theirs << ", not a near-tie";
      break;
    }
    ++same;
    if (k + 1 < steps.size()) logits = s.decode(ours);
  }
  std::printf("[ %s ] largest logit difference vs llama.cpp %.3f; greedy tokens identical: %zu of %zu\n",
              GetParam(), worst, same, steps.size());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LlamaCpp,
                         testing::Values("short_en", "short_en_kv_f16", "chatml", "code", "mixed", "prose_kjv_ruth"));

}  // namespace
}  // namespace adamas
