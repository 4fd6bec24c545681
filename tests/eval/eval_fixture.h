// The real model, its tokenizer and a text, loaded once for the eval tests (nullptr when the model or the texts
// are missing: the tests that need them skip).
#pragma once

#include <gtest/gtest.h>

#include <omp.h>

#include <fstream>
#include <sstream>

#include "model/llama.h"
#include "model/tokenizer.h"
#include "model_paths.h"

namespace adamas::test {

struct Loaded {
  LlamaModel model;
  Tokenizer tokenizer;
  std::string text;  // Emma
};

inline const Loaded* loaded() {
  static const Loaded* l = []() -> const Loaded* {
    // One thread: these tests check answers, not speed, and on a small shared machine a spinning OpenMP team makes
    // each decode step of the 135M model several times slower than one thread does.
    omp_set_num_threads(1);
    const std::string path = model_path();
    std::ifstream f(std::string(ADAMAS_TEXTS) + "/austen-emma.txt", std::ios::binary);
    if (path.empty() || !f.good()) return nullptr;
    std::ostringstream text;
    text << f.rdbuf();
    LlamaModel m = LlamaModel::load(path);
    Tokenizer t = Tokenizer::from_gguf(m.file());
    return new Loaded{std::move(m), std::move(t), text.str()};
  }();
  return l;
}

}  // namespace adamas::test

#define NEED_MODEL()                                                                                          \
  const ::adamas::test::Loaded* L = ::adamas::test::loaded();                                                 \
  if (L == nullptr) GTEST_SKIP() << "the default model or data/texts is missing: run scripts/fetch-model and " \
                                    "scripts/fetch-texts"
