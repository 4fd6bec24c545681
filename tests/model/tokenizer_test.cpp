// Tokenizer: ids equal to an independent tokenizer's (fixture), round trips, special tokens, the chat template,
// the pre-tokenizer split, and errors on synthetic vocabularies.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

#include "spm_vocab.h"
#include "gguf_writer.h"
#include "model/tokenizer.h"
#include "model/unicode.h"
#include "model_paths.h"

namespace adamas {
namespace {

// The real model's tokenizer, loaded once for the suite.
struct RealModel {
  std::optional<GgufFile> file;
  std::optional<Tokenizer> tok;
};
const RealModel& real_model() {
  static const RealModel m = [] {
    RealModel r;
    const std::string path = test::model_path();
    if (!path.empty()) {
      r.file.emplace(GgufFile::open(path));
      r.tok.emplace(Tokenizer::from_gguf(*r.file));
    }
    return r;
  }();
  return m;
}
#define REQUIRE_MODEL()                                            \
  if (!real_model().tok) GTEST_SKIP() << test::kNoModelMessage;  \
  const Tokenizer& tok = *real_model().tok

std::vector<std::string> pieces(std::string_view text, bool digits) {
  const auto cps = unicode::decode_utf8(text);
  std::vector<unicode::Span> spans;
  if (digits) unicode::split_digits_then_gpt2(cps, spans);
  else unicode::split_gpt2(cps, 0, cps.size(), spans);
  std::vector<std::string> out;
  for (const auto& s : spans) out.emplace_back(text.substr(s.begin, s.end - s.begin));
  return out;
}

using Pieces = std::vector<std::string>;

TEST(tokenizer, gpt2_pre_tokenizer_split) {
  EXPECT_EQ(pieces("Hello world", false), (Pieces{"Hello", " world"}));
  EXPECT_EQ(pieces("it's we'll they've I'M", false), (Pieces{"it", "'s", " we", "'ll", " they", "'ve", " I", "'", "M"}));
  EXPECT_EQ(pieces("a  b   c", false), (Pieces{"a", " ", " b", "  ", " c"}));
  EXPECT_EQ(pieces("x \n\n y", false), (Pieces{"x", " \n\n", " y"}));
  EXPECT_EQ(pieces("end   ", false), (Pieces{"end", "   "}));
  EXPECT_EQ(pieces("a\nb", false), (Pieces{"a", "\n", "b"}));
  EXPECT_EQ(pieces("f(x) = 42!?", false), (Pieces{"f", "(", "x", ")", " =", " 42", "!?"}));
  EXPECT_EQ(pieces("año 日本語", false), (Pieces{"año", " 日本語"}));
  EXPECT_EQ(pieces("In 2024,", true), (Pieces{"In", " ", "2", "0", "2", "4", ","}));
  EXPECT_EQ(pieces("½x²", true), (Pieces{"½", "x", "²"}));
}

TEST(tokenizer, matches_independent_tokenizer_fixture) {
  REQUIRE_MODEL();
  std::ifstream in(test::fixture_path("tokens.json"));
  ASSERT_TRUE(in) << "missing fixture tokens.json (scripts/make-tokenizer-fixtures)";
  const auto doc = nlohmann::json::parse(in);
  int n = 0;
  for (const auto& c : doc["cases"]) {
    const std::string text = c["text"];
    const bool special = c["parse_special"];
    const auto expected = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text, special), expected) << "text: '" << text << "' parse_special=" << special;
    EXPECT_EQ(tok.decode(expected), text);
    ++n;
  }
  EXPECT_GE(n, 20);
}

TEST(tokenizer, vocabulary_and_special_tokens) {
  REQUIRE_MODEL();
  EXPECT_EQ(tok.vocab_size(), 49152);
  EXPECT_EQ(tok.pre(), "smollm");
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_FALSE(tok.add_bos());
  EXPECT_EQ(tok.token_text(0), "<|endoftext|>");
  EXPECT_EQ(tok.find_token("<|im_start|>"), 1);
  EXPECT_TRUE(tok.is_special(1));
  EXPECT_FALSE(tok.is_special(300));
  EXPECT_TRUE(tok.is_end_of_generation(2));
  EXPECT_TRUE(tok.is_end_of_generation(0));
  EXPECT_FALSE(tok.is_end_of_generation(1));
  EXPECT_EQ(tok.encode("<|im_end|>", true), (std::vector<int32_t>{2}));
  EXPECT_GT(tok.encode("<|im_end|>", false).size(), 1u);
  EXPECT_EQ(tok.decode(std::vector<int32_t>{1, 4093, 2}, true), "user");
  EXPECT_THROW((void)tok.decode(std::vector<int32_t>{49152}), Error);
  // Bytes without a vocabulary symbol (0x04, 0xFF in SmolLM2) are dropped, as HF tokenizers and llama.cpp do.
  EXPECT_EQ(tok.encode("a\x04" "b\xff"), (std::vector<int32_t>{81, 82}));
  EXPECT_THROW((void)tok.token_text(-1), Error);
}

TEST(tokenizer, chatml_template) {
  const std::vector<ChatMessage> msgs = {{"user", "Hi!"}};
  EXPECT_EQ(apply_chatml(msgs),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
  const std::vector<ChatMessage> sys = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}};
  EXPECT_EQ(apply_chatml(sys, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello<|im_end|>\n");
  EXPECT_EQ(apply_chatml(msgs, true, ""), "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(apply_chatml({}, true), "<|im_start|>assistant\n");
  if (!real_model().tok) return;
  const Tokenizer& tok = *real_model().tok;
  const auto ids = tok.encode(apply_chatml(msgs), true);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 198);  // "\n" after "assistant"
  EXPECT_EQ(tok.decode(ids), apply_chatml(msgs));
}

std::string random_text(std::mt19937& rng, size_t len) {
  static const std::vector<std::string> alphabet = {
      "a", "b", "z", "Q", " ", " ", "  ", "\n", "\t", "\r\n", "0", "7", "'", "'s", "'ll", ".", ",", "!", "(", "#",
      "é", "ß", "Ω", "ж", "日", "本", "🙂", "½", "\u00a0", "\u3000", "<|im_start|>", "<", "|", ">", "\x01",
      "\xe6\x97", "the", " the", "ing"};
  std::string s;
  while (s.size() < len) s += alphabet[rng() % alphabet.size()];
  return s;
}

TEST(tokenizer, round_trip_random_texts) {
  REQUIRE_MODEL();
  std::mt19937 rng(3);
  for (int i = 0; i < 300; ++i) {
    const std::string s = random_text(rng, 1 + rng() % 120);
    for (bool special : {false, true}) {
      const auto ids = tok.encode(s, special);
      ASSERT_EQ(tok.decode(ids), s) << "special=" << special;
    }
  }
  // Long inputs stay fast (BPE is O(n log n) per word): one 200 kB "word" and a long whitespace run.
  const std::string word(200000, 'a'), blanks(100000, ' ');
  EXPECT_EQ(tok.decode(tok.encode(word)), word);
  EXPECT_EQ(tok.decode(tok.encode(blanks + "x")), blanks + "x");
}

// A tiny synthetic vocabulary: byte-level symbols of "ab", one merge, a control token.
std::vector<uint8_t> tiny_vocab(std::string_view model, std::string_view pre, uint32_t bos = 0) {
  test::GgufWriter w;
  w.header(3, 0, 6).kv_str("tokenizer.ggml.model", model).kv_str("tokenizer.ggml.pre", pre);
  w.kv_strings("tokenizer.ggml.tokens", {"<s>", "a", "b", "ab", "Ġ", "Ġa"});
  w.kv_i32s("tokenizer.ggml.token_type", {3, 1, 1, 1, 1, 1});
  w.kv_strings("tokenizer.ggml.merges", {"a b", "Ġ a"});
  w.kv_u32("tokenizer.ggml.bos_token_id", bos);
  return w.bytes;
}

TEST(tokenizer, synthetic_vocabulary) {
  const GgufFile f = GgufFile::from_bytes(tiny_vocab("gpt2", "gpt2"));
  const Tokenizer tok = Tokenizer::from_gguf(f);
  EXPECT_EQ(tok.encode("ab a"), (std::vector<int32_t>{3, 5}));
  EXPECT_EQ(tok.encode("<s>ab", true), (std::vector<int32_t>{0, 3}));
  EXPECT_EQ(tok.decode(std::vector<int32_t>{0, 3, 5}), "<s>ab a");
  EXPECT_EQ(tok.encode("acb"), (std::vector<int32_t>{1, 2}));  // no symbol for 'c': dropped
}

TEST(tokenizer, unsupported_and_malformed_vocabularies) {
  auto expect_error = [](const std::vector<uint8_t>& bytes, ErrorKind kind, std::string_view needle) {
    const GgufFile f = GgufFile::from_bytes(bytes, "vocab.gguf");
    try {
      (void)Tokenizer::from_gguf(f);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), kind) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(tiny_vocab("bert", "default"), ErrorKind::unsupported, "unsupported tokenizer model 'bert'");
  expect_error(tiny_vocab("gpt2", "deepseek-llm"), ErrorKind::unsupported, "unsupported pre-tokenizer 'deepseek-llm'");
  expect_error(tiny_vocab("gpt2", "gpt2", 99), ErrorKind::format, "bos_token_id = 99 is outside");
  test::GgufWriter w;
  w.header(3, 0, 1).kv_str("tokenizer.ggml.model", "gpt2");
  expect_error(w.bytes, ErrorKind::format, "missing metadata key 'tokenizer.ggml.tokens'");
}

// Llama 3 / Qwen2 splits vs the Python `regex` module's matches of the same regexes (scripts/make-split-fixtures).
TEST(tokenizer, llama3_and_qwen2_split_fixture) {
  std::ifstream in(test::fixture_path("splits.json"));
  ASSERT_TRUE(in) << "missing fixture splits.json (scripts/make-split-fixtures)";
  const auto doc = nlohmann::json::parse(in);
  auto split = [](std::string_view text, size_t max_digits) {
    const auto cps = unicode::decode_utf8(text);
    std::vector<unicode::Span> spans;
    unicode::split_llama3(cps, max_digits, spans);
    Pieces out;
    for (const auto& s : spans) out.emplace_back(text.substr(s.begin, s.end - s.begin));
    return out;
  };
  int n = 0;
  for (const auto& c : doc["cases"]) {
    const std::string text = c["text"];
    EXPECT_EQ(split(text, 3), c["llama3"].get<Pieces>()) << "llama3, text: " << nlohmann::json(text).dump();
    EXPECT_EQ(split(text, 1), c["qwen2"].get<Pieces>()) << "qwen2, text: " << nlohmann::json(text).dump();
    ++n;
  }
  EXPECT_GE(n, 250);
}

// End to end through GGUF: pre "llama-bpe" (Llama 3 split, ignore_merges, add_bos) and "qwen2".
std::vector<uint8_t> digits_vocab(std::string_view pre) {
  test::GgufWriter w;
  w.header(3, 0, 5).kv_str("tokenizer.ggml.model", "gpt2").kv_str("tokenizer.ggml.pre", pre);
  w.kv_strings("tokenizer.ggml.tokens", {"<s>", "a", "b", "ab", "Ġ", "Ġa", "1", "2", "3", "4", "12", "123", "Ġab"});
  w.kv_strings("tokenizer.ggml.merges", {"a b", "Ġ a", "1 2", "12 3"});  // no "Ġa b": "Ġab" only as a whole word
  w.kv_u32("tokenizer.ggml.bos_token_id", 0);
  return w.bytes;
}

TEST(tokenizer, llama3_and_qwen2_pre_tokenizers) {
  const GgufFile l3f = GgufFile::from_bytes(digits_vocab("llama-bpe"));
  const Tokenizer l3 = Tokenizer::from_gguf(l3f);
  EXPECT_TRUE(l3.add_bos());
  // "ab", " ab" (whole vocabulary entry: merges ignored), " ", "123", "4"
  EXPECT_EQ(l3.encode("ab ab 1234"), (std::vector<int32_t>{3, 12, 4, 11, 9}));
  EXPECT_EQ(l3.decode(l3.encode("ab ab 1234")), "ab ab 1234");
  const GgufFile qf = GgufFile::from_bytes(digits_vocab("qwen2"));
  const Tokenizer q = Tokenizer::from_gguf(qf);
  EXPECT_FALSE(q.add_bos());
  // "ab", " ab" (merged by rank: "a b" first, so Ġ + ab), " ", "1", "2", "3", "4"
  EXPECT_EQ(q.encode("ab ab 1234"), (std::vector<int32_t>{3, 4, 3, 4, 6, 7, 8, 9}));
}

// The shared tiny SentencePiece vocabulary (spm_vocab.h), serialized as GGUF keys.
struct SpmVocab : test::SpmVocabBase {
  std::vector<uint8_t> gguf() const {
    test::GgufWriter w;
    w.header(3, 0, 7).kv_str("tokenizer.ggml.model", "llama").kv_strings("tokenizer.ggml.tokens", tokens);
    w.kv_i32s("tokenizer.ggml.token_type", types);
    w.key("tokenizer.ggml.scores", 9).raw<uint32_t>(6).raw<uint64_t>(scores.size());
    for (float f : scores) w.raw(f);
    w.kv_u32("tokenizer.ggml.bos_token_id", 1).kv_u32("tokenizer.ggml.eos_token_id", 2);
    w.kv_u32("tokenizer.ggml.unknown_token_id", 0);
    return w.bytes;
  }
};

TEST(tokenizer, sentencepiece_bpe) {
  const SpmVocab v;
  const GgufFile f = GgufFile::from_bytes(v.gguf());
  const Tokenizer tok = Tokenizer::from_gguf(f);
  EXPECT_EQ(tok.model(), "llama");
  EXPECT_TRUE(tok.add_bos());
  // Highest score first: ll, llo, he, hello, then the prefixed space: one token.
  EXPECT_EQ(tok.encode("hello"), (std::vector<int32_t>{v.id("\u2581hello")}));
  EXPECT_EQ(tok.encode("hello world"), (std::vector<int32_t>{v.id("\u2581hello"), v.id("\u2581world")}));
  // 'i' has no piece: byte fallback.
  EXPECT_EQ(tok.encode("hi"), (std::vector<int32_t>{v.id("\u2581h"), v.id("<0x69>")}));
  EXPECT_EQ(tok.encode("<s>hello</s>", true), (std::vector<int32_t>{1, v.id("\u2581hello"), 2}));
  EXPECT_TRUE(tok.encode("").empty());
  EXPECT_EQ(tok.decode(std::vector<int32_t>{v.id("\u2581hello"), v.id("\u2581world")}), "hello world");
  EXPECT_EQ(tok.decode(std::vector<int32_t>{1, v.id("\u2581hello")}, true), "hello");
  std::mt19937 rng(5);
  for (int i = 0; i < 200; ++i) {
    const std::string s = random_text(rng, 1 + rng() % 60);
    ASSERT_EQ(tok.decode(tok.encode(s)), s);
  }
  const std::string spaces = "  hello  world ";
  EXPECT_EQ(tok.decode(tok.encode(spaces)), spaces);
}

}  // namespace
}  // namespace adamas
