// A tiny SentencePiece (Llama-style) vocabulary shared by the tokenizer tests: <unk>, <s>, </s>, the 256 byte
// tokens, and a few scored pieces. Each test serializes it its own way (GGUF keys, TokenizerSpec, tokenizer.json).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace adamas::test {

inline constexpr const char* kU2581 = "\xE2\x96\x81";  // SentencePiece's word-start marker

struct SpmVocabBase {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<int32_t> types = {2, 3, 3};
  std::vector<float> scores = {0, 0, 0};
  SpmVocabBase() {
    char name[8];
    for (int b = 0; b < 256; ++b) {
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      add(name, 0, 6);
    }
    for (const char* c : {kU2581, "h", "e", "l", "o", "w", "r", "d"}) add(c, -20);
    const std::string s = kU2581;
    add("ll", -1), add("he", -3), add(s + "h", -5), add("llo", -2), add("hello", -4), add(s + "hello", -0.5f);
    add(s + "w", -6), add("or", -7), add(s + "wor", -8), add("ld", -9), add(s + "world", -1.5f);
  }
  void add(const std::string& t, float score, int32_t type = 1) {
    tokens.push_back(t), types.push_back(type), scores.push_back(score);
  }
  int32_t id(std::string_view t) const { return int32_t(std::find(tokens.begin(), tokens.end(), t) - tokens.begin()); }
};

}  // namespace adamas::test
