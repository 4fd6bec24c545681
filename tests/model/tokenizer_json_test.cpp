// tokenizer.json -> Tokenizer: synthetic byte-level and SentencePiece-style files, both merge forms, rejections, and
// the real SmolLM2 vocabulary rebuilt as a tokenizer.json, which must encode exactly as the GGUF tokenizer does.
#include "model/tokenizer_json.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "model/gguf.h"
#include "model/hf_config.h"
#include "model_paths.h"
#include "spm_vocab.h"

namespace adamas {
namespace {

using json = nlohmann::json;
using test::kU2581;

const json kByteLevel = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                         {"use_regex", true}};
const json kSmolPre = {{"type", "Sequence"},
                       {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, kByteLevel}}};

// A byte-level tokenizer.json in the layout HF tokenizers writes.
json byte_level_json(const std::vector<std::string>& tokens, const json& merges, const json& pre,
                     const std::vector<std::pair<int32_t, bool>>& added = {}) {
  json vocab = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
  json added_tokens = json::array();
  for (const auto& [id, special] : added)
    added_tokens.push_back({{"id", id}, {"content", tokens[size_t(id)]}, {"single_word", false}, {"lstrip", false},
                            {"rstrip", false}, {"normalized", false}, {"special", special}});
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added_tokens},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre},
          {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false},
                              {"use_regex", true}}},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
                       {"use_regex", true}}},
          {"model",
           {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
            {"ignore_merges", false}, {"vocab", vocab}, {"merges", merges}}}};
}

const std::vector<std::string> kTiny = {"<s>", "a", "b", "ab", "\xC4\xA0", "\xC4\xA0" "a", "1", "2"};

TEST(tokenizer_json, tiny_byte_level_both_merge_forms) {
  const json string_form = byte_level_json(kTiny, json::array({"a b", "\xC4\xA0 a"}), kByteLevel, {{0, true}});
  const json pair_form =
      byte_level_json(kTiny, json::array({json::array({"a", "b"}), json::array({"\xC4\xA0", "a"})}), kByteLevel, {{0, true}});
  for (const json& j : {string_form, pair_form}) {
    const TokenizerSpec spec = tokenizer_spec_from_json(j.dump());
    EXPECT_EQ(spec.model, "gpt2");
    EXPECT_EQ(spec.pre, "gpt2");
    EXPECT_EQ(spec.merges, (std::vector<std::string>{"a b", "\xC4\xA0 a"}));
    EXPECT_EQ(spec.token_types[0], int32_t(TokenType::control));
    EXPECT_EQ(spec.token_types[3], int32_t(TokenType::normal));
    const Tokenizer tok = tokenizer_from_json(j.dump());
    EXPECT_EQ(tok.model(), "gpt2");
    EXPECT_EQ(tok.vocab_size(), 8);
    EXPECT_EQ(tok.encode("ab a"), (std::vector<int32_t>{3, 5}));
    EXPECT_EQ(tok.encode("<s>ab", true), (std::vector<int32_t>{0, 3}));
    EXPECT_EQ(tok.decode(std::vector<int32_t>{0, 3, 5}), "<s>ab a");
    EXPECT_FALSE(tok.add_bos());
  }
  // Digits + ByteLevel -> "smollm" (digits split alone).
  const TokenizerSpec smol = tokenizer_spec_from_json(byte_level_json(kTiny, json::array({"a b"}), kSmolPre).dump());
  EXPECT_EQ(smol.pre, "smollm");
  EXPECT_EQ(tokenizer_from_json(byte_level_json(kTiny, json::array({"a b"}), kSmolPre).dump()).pre(), "smollm");
}

TEST(tokenizer_json, padding_special_ids_and_config) {
  const json j = byte_level_json(kTiny, json::array({"a b"}), kByteLevel, {{0, true}});
  HfTokenizerOptions o;
  o.vocab_size = 12;
  o.bos_id = 0;
  o.eos_id = 3;
  const TokenizerSpec s = tokenizer_spec_from_json(j.dump(), "tokenizer.json", o);
  ASSERT_EQ(s.tokens.size(), 12u);
  EXPECT_EQ(s.tokens[9], "[PAD9]");
  EXPECT_EQ(s.token_types[9], int32_t(TokenType::user_defined));
  EXPECT_EQ(s.bos_id, 0);
  EXPECT_EQ(s.eos_id, 3);
  const Tokenizer t = tokenizer_from_spec(s);
  EXPECT_EQ(t.vocab_size(), 12);
  EXPECT_EQ(t.bos_id(), 0);
  EXPECT_EQ(t.eos_id(), 3);

  // tokenizer_config.json names win over the config.json ids; add_bos_token is read.
  o.tokenizer_config_json = R"({"bos_token": {"content": "<s>", "__type": "AddedToken"}, "eos_token": "b",
                                "add_bos_token": true})";
  o.bos_id = 5;
  const TokenizerSpec c = tokenizer_spec_from_json(j.dump(), "tokenizer.json", o);
  EXPECT_EQ(c.bos_id, 0);
  EXPECT_EQ(c.eos_id, 2);
  EXPECT_EQ(c.add_bos, std::optional<bool>(true));
  EXPECT_TRUE(tokenizer_from_spec(c).add_bos());

  // A post-processor template starting with the BOS token means add_bos.
  json k = j;
  k["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                     {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}};
  HfTokenizerOptions p;
  p.bos_id = 0;
  EXPECT_EQ(tokenizer_spec_from_json(k.dump(), "tokenizer.json", p).add_bos, std::optional<bool>(true));

  // A non-special added token is user-defined; one that looks special ("<|...|>") is control.
  std::vector<std::string> tokens = kTiny;
  tokens.push_back("<|im_end|>");
  tokens.push_back("my\xE2\x96\x81word");
  const TokenizerSpec u =
      tokenizer_spec_from_json(byte_level_json(tokens, json::array({"a b"}), kByteLevel, {{8, false}, {9, false}}).dump());
  EXPECT_EQ(u.token_types[8], int32_t(TokenType::control));
  EXPECT_EQ(u.token_types[9], int32_t(TokenType::user_defined));
  EXPECT_EQ(u.tokens[9], "my word");
}

std::pair<ErrorKind, std::string> error_of(const std::string& text) {
  try {
    (void)tokenizer_from_json(text, "tok.json");
  } catch (const Error& e) {
    return {e.kind(), e.what()};
  }
  return {ErrorKind::invalid_argument, "no error"};
}

#define EXPECT_TOKENIZER_ERROR(text, kind_, fragment)                                            \
  do {                                                                                           \
    const auto [k, msg] = error_of(text);                                                        \
    EXPECT_EQ(k, kind_) << msg;                                                                  \
    EXPECT_NE(msg.find("tok.json"), std::string::npos) << msg;                                   \
    EXPECT_NE(msg.find(fragment), std::string::npos) << "expected '" << fragment << "' in: " << msg; \
  } while (0)

TEST(tokenizer_json, rejections) {
  const json good = byte_level_json(kTiny, json::array({"a b"}), kByteLevel);
  auto edit = [&](auto f) {
    json j = good;
    f(j);
    return j.dump();
  };
  EXPECT_TOKENIZER_ERROR("{\"model\": ", ErrorKind::format, "malformed JSON");
  EXPECT_TOKENIZER_ERROR("[]", ErrorKind::format, "not a JSON object");
  EXPECT_TOKENIZER_ERROR("{}", ErrorKind::format, "model");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["model"]["type"] = "WordPiece"; }), ErrorKind::unsupported,
                         "WordPiece");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["model"]["type"] = "Unigram"; }), ErrorKind::unsupported, "Unigram");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["model"]["continuing_subword_prefix"] = "##"; }),
                         ErrorKind::unsupported, "continuing_subword_prefix");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }),
                         ErrorKind::unsupported, "Whitespace");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["pre_tokenizer"]["add_prefix_space"] = true; }),
                         ErrorKind::unsupported, "add_prefix_space");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["normalizer"] = {{"type", "Lowercase"}}; }), ErrorKind::unsupported,
                         "Lowercase");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["pre_tokenizer"] = nullptr; }), ErrorKind::unsupported,
                         "neither a ByteLevel");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) {
                           j["pre_tokenizer"] = {{"type", "Sequence"},
                                                 {"pretokenizers",
                                                  {{{"type", "Split"},
                                                    {"pattern", {{"Regex", "\\s+"}}},
                                                    {"behavior", "Isolated"},
                                                    {"invert", false}},
                                                   {{"type", "ByteLevel"}, {"add_prefix_space", false},
                                                    {"use_regex", false}}}}};
                         }),
                         ErrorKind::unsupported, "Split regex '\\s+'");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["model"]["vocab"] = json::object(); }), ErrorKind::format,
                         "model.vocab");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["model"]["vocab"]["a"] = -1; }), ErrorKind::format, "token 'a'");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["model"]["vocab"]["a"] = 2; }), ErrorKind::format, "share id 2");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["model"]["vocab"]["a"] = 1 << 30; }), ErrorKind::format, "token 'a'");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["model"]["merges"] = json::array({"ab"}); }), ErrorKind::format,
                         "not two tokens");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["model"]["merges"] = json::array({"a b c"}); }), ErrorKind::format,
                         "not two tokens");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["model"]["merges"] = json::array({json::array({"a"})}); }), ErrorKind::format, "merge 0");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["model"]["merges"] = json::array({"b a"}); }), ErrorKind::format,
                         "not in the vocabulary");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["model"]["merges"] = 3; }), ErrorKind::format, "model.merges");
  EXPECT_TOKENIZER_ERROR(edit([](json& j) { j["added_tokens"] = {{{"id", 0}}}; }), ErrorKind::format, "content");

  // Llama 3 / Qwen2 splits are recognized and passed on under llama.cpp's names; the Tokenizer decides.
  const std::string llama3_regex =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
      "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  json l3 = good;
  l3["pre_tokenizer"] = {{"type", "Sequence"},
                         {"pretokenizers",
                          {{{"type", "Split"}, {"pattern", {{"Regex", llama3_regex}}}, {"behavior", "Isolated"},
                            {"invert", false}},
                           {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                            {"use_regex", false}}}}};
  l3["model"]["ignore_merges"] = true;
  EXPECT_EQ(tokenizer_spec_from_json(l3.dump()).pre, "llama-bpe");
  try {
    (void)tokenizer_from_json(l3.dump(), "tok.json");
    // Fine too, once the Tokenizer implements the Llama 3 split.
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::unsupported);
    EXPECT_NE(std::string(e.what()).find("llama-bpe"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// SentencePiece-style (Llama 2) tokenizer.json vs the same vocabulary as GGUF scores.
// ---------------------------------------------------------------------------------------------------------------

struct SpmVocab : test::SpmVocabBase {
  std::vector<uint8_t> gguf() const {
    TokenizerSpec s;
    s.model = "llama";
    s.tokens = tokens;
    s.token_types = types;
    s.scores = scores;
    s.bos_id = 1, s.eos_id = 2, s.unk_id = 0;
    return tokenizer_spec_to_gguf(s);
  }
  // As HF's LlamaConverter: merges of every (l, r) split of each piece, pieces by descending score.
  json tokenizer_json(bool metaspace) const {
    std::vector<int32_t> order;
    for (int32_t i = 0; i < int32_t(tokens.size()); ++i)
      if (types[size_t(i)] == 1) order.push_back(i);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return scores[a] > scores[b]; });
    json merges = json::array();
    for (int32_t id : order) {
      const std::string& t = tokens[size_t(id)];
      for (size_t k = 1; k < t.size(); ++k) {
        const std::string l = t.substr(0, k), r = t.substr(k);
        if (std::find(tokens.begin(), tokens.end(), l) != tokens.end() &&
            std::find(tokens.begin(), tokens.end(), r) != tokens.end())
          merges.push_back({l, r});
      }
    }
    json vocab = json::object();
    for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
    json added = json::array();
    for (int i = 0; i < 3; ++i)
      added.push_back({{"id", i}, {"content", tokens[size_t(i)]}, {"special", true}, {"normalized", false}});
    json j = {{"added_tokens", added},
              {"model",
               {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true},
                {"vocab", vocab}, {"merges", merges}}}};
    if (metaspace) {
      j["normalizer"] = nullptr;
      j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", kU2581}, {"prepend_scheme", "first"},
                            {"split", false}};
    } else {
      j["normalizer"] = {{"type", "Sequence"},
                         {"normalizers",
                          {{{"type", "Prepend"}, {"prepend", kU2581}},
                           {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kU2581}}}}};
      j["pre_tokenizer"] = nullptr;
    }
    j["post_processor"] = {{"type", "TemplateProcessing"},
                           {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                       {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}};
    return j;
  }
};

std::string random_text(std::mt19937& rng, size_t n) {
  static const std::vector<std::string> pieces = {"h", "e", "l", "o", " ", "w", "r", "d", "hello", " world", "i",
                                                  "\xC3\xA9", "\xE6\x97\xA5", "  ", "<s>", "1", "\n", "ll"};
  std::string s;
  for (size_t i = 0; i < n; ++i) s += pieces[rng() % pieces.size()];
  return s;
}

TEST(tokenizer_json, sentencepiece_style_matches_gguf_scores) {
  const SpmVocab v;
  const GgufFile f = GgufFile::from_bytes(v.gguf(), "spm.gguf");
  const Tokenizer ref = Tokenizer::from_gguf(f);
  for (bool metaspace : {false, true}) {
    HfTokenizerOptions o;
    o.tokenizer_config_json = R"({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})";
    const std::string text = v.tokenizer_json(metaspace).dump();
    const TokenizerSpec spec = tokenizer_spec_from_json(text, "tokenizer.json", o);
    EXPECT_EQ(spec.model, "llama");
    EXPECT_EQ(spec.add_space_prefix, std::optional<bool>(true));
    EXPECT_EQ(spec.token_types, v.types);  // unknown, control, byte, normal
    EXPECT_EQ(spec.unk_id, 0);
    const Tokenizer tok = tokenizer_from_spec(spec);
    EXPECT_EQ(tok.model(), "llama");
    EXPECT_EQ(tok.bos_id(), 1);
    EXPECT_EQ(tok.eos_id(), 2);
    EXPECT_TRUE(tok.add_bos());  // from the post-processor template
    const std::string s = kU2581;
    EXPECT_EQ(tok.encode("hello world"), ref.encode("hello world"));
    EXPECT_EQ(tok.encode("hello world").size(), 2u);
    EXPECT_EQ(tok.encode("hi"), ref.encode("hi"));  // byte fallback for 'i'
    std::mt19937 rng(11);
    for (int i = 0; i < 500; ++i) {
      const std::string t = random_text(rng, 1 + rng() % 20);
      for (bool special : {false, true}) ASSERT_EQ(tok.encode(t, special), ref.encode(t, special)) << "'" << t << "'";
      ASSERT_EQ(tok.decode(tok.encode(t)), t);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The real SmolLM2 vocabulary: GGUF -> tokenizer.json -> Tokenizer, against the GGUF Tokenizer.
// ---------------------------------------------------------------------------------------------------------------

struct Real {
  std::optional<GgufFile> file;
  std::optional<Tokenizer> gguf_tok;
  json tokenizer_json;
  std::string tokenizer_config;
};

const Real& real() {
  static const Real r = [] {
    Real x;
    const std::string path = test::model_path();
    if (path.empty()) return x;
    x.file.emplace(GgufFile::open(path));
    const GgufFile& f = *x.file;
    x.gguf_tok.emplace(Tokenizer::from_gguf(f));
    const auto& tokens = f.get_string_array("tokenizer.ggml.tokens");
    const auto types = f.get_int_array("tokenizer.ggml.token_type");
    const auto& merges = f.get_string_array("tokenizer.ggml.merges");
    std::vector<std::string> toks(tokens.begin(), tokens.end());
    std::vector<std::pair<int32_t, bool>> added;
    for (size_t i = 0; i < types.size(); ++i)
      if (types[i] == 3 || types[i] == 4) added.emplace_back(int32_t(i), types[i] == 3);
    // Half the merges as "a b" strings, half as pairs: both forms in one file.
    json m = json::array();
    for (size_t i = 0; i < merges.size(); ++i) {
      const std::string s(merges[i]);
      if (i % 2 == 0) {
        m.push_back(s);
      } else {
        const size_t sp = s.find(' ', 1);
        m.push_back({s.substr(0, sp), s.substr(sp + 1)});
      }
    }
    x.tokenizer_json = byte_level_json(toks, m, kSmolPre, added);
    json cfg = json::object();
    const Tokenizer& t = *x.gguf_tok;
    if (t.bos_id() >= 0) cfg["bos_token"] = std::string(t.token_text(t.bos_id()));
    if (t.eos_id() >= 0) cfg["eos_token"] = std::string(t.token_text(t.eos_id()));
    cfg["add_bos_token"] = t.add_bos();
    x.tokenizer_config = cfg.dump();
    return x;
  }();
  return r;
}

TEST(tokenizer_json, smollm2_vocabulary_encodes_as_gguf) {
  const Real& r = real();
  if (!r.gguf_tok) GTEST_SKIP() << test::kNoModelMessage;
  const Tokenizer& ref = *r.gguf_tok;

  // Through a directory, as the engine would load it: tokenizer.json + tokenizer_config.json + config.json values.
  const auto dir = std::filesystem::temp_directory_path() / ("adamas_tok_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << r.tokenizer_json.dump();
  std::ofstream(dir / "tokenizer_config.json") << r.tokenizer_config;
  HfConfig cfg;
  cfg.vocab_size = ref.vocab_size();
  const Tokenizer tok = load_hf_tokenizer(dir.string(), &cfg);
  std::filesystem::remove_all(dir);

  EXPECT_EQ(tok.model(), "gpt2");
  EXPECT_EQ(tok.pre(), "smollm");
  ASSERT_EQ(tok.vocab_size(), ref.vocab_size());
  EXPECT_EQ(tok.bos_id(), ref.bos_id());
  EXPECT_EQ(tok.eos_id(), ref.eos_id());
  EXPECT_EQ(tok.add_bos(), ref.add_bos());
  for (int32_t i = 0; i < ref.vocab_size(); ++i) {
    ASSERT_EQ(tok.token_text(i), ref.token_text(i)) << i;
    ASSERT_EQ(tok.token_type(i), ref.token_type(i)) << i;
  }
  for (int32_t id : {0, 1, 2}) EXPECT_EQ(tok.is_end_of_generation(id), ref.is_end_of_generation(id));

  // The committed fixture of an independent tokenizer (HF tokenizers), and the GGUF tokenizer.
  std::ifstream in(test::fixture_path("tokens.json"));
  ASSERT_TRUE(in);
  const auto doc = json::parse(in);
  int n = 0;
  for (const auto& c : doc["cases"]) {
    const std::string text = c["text"];
    const bool special = c["parse_special"];
    const auto expected = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text, special), expected) << "text: '" << text << "'";
    EXPECT_EQ(tok.encode(text, special), ref.encode(text, special));
    ++n;
  }
  EXPECT_GE(n, 20);

  std::mt19937 rng(3);
  const std::vector<std::string> pieces = {"The", " quick", " brown", " fox", " 2024", "12.5", "  ", "\n\n", "'s",
                                           "don't", " <|im_start|>", "<|im_end|>", "\xE6\x97\xA5\xE6\x9C\xAC",
                                           "\xC3\xA9t\xC3\xA9", "!?", "\t", "x", " ", "\xF0\x9F\x98\x80", "ABC"};
  for (int i = 0; i < 300; ++i) {
    std::string s;
    const size_t len = 1 + rng() % 24;
    for (size_t k = 0; k < len; ++k) s += pieces[rng() % pieces.size()];
    for (bool special : {false, true}) ASSERT_EQ(tok.encode(s, special), ref.encode(s, special)) << "'" << s << "'";
  }
  const std::string chat = apply_chatml(std::vector<ChatMessage>{{"user", "What is 2+2?"}});
  EXPECT_EQ(tok.encode(chat, true), ref.encode(chat, true));
}

}  // namespace
}  // namespace adamas
