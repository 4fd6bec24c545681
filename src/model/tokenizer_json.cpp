#include "model/tokenizer_json.h"

#include "model/gguf_writer.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "model/gguf.h"
#include "model/hf_config.h"

namespace adamas {
namespace {

using json = nlohmann::json;

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581

// The split regexes of the byte-level tokenizers llama.cpp knows by tokenizer.ggml.pre.
constexpr std::string_view kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ADAMAS_CHECK(in.good(), ErrorKind::io, "{}: cannot open: {}", path, std::strerror(errno));
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

json parse_json(std::string_view text, std::string_view source) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail(ErrorKind::format, "{}: malformed JSON: {}", source, e.what());
  }
}

std::string type_of(const json& j) {
  if (!j.is_object()) return "";
  const auto it = j.find("type");
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// What the pre-tokenizer and normalizer say.
struct Shape {
  bool byte_level = false, byte_level_regex = true, byte_level_prefix = false;
  bool digits = false;
  std::string split_regex;
  bool metaspace = false, metaspace_prefix = false;
  bool prepend_space = false, replace_space = false;  // normalizer Prepend("▁") / Replace(" ", "▁")
};

void walk_pre(const json& p, Shape& s, std::string_view src) {
  if (p.is_null()) return;
  const std::string t = type_of(p);
  if (t == "Sequence") {
    const auto it = p.find("pretokenizers");
    ADAMAS_CHECK(it != p.end() && it->is_array(), ErrorKind::format, "{}: pre_tokenizer Sequence without a list",
                 src);
    for (const json& q : *it) walk_pre(q, s, src);
  } else if (t == "ByteLevel") {
    s.byte_level = true;
    s.byte_level_regex = p.value("use_regex", true);
    s.byte_level_prefix = p.value("add_prefix_space", true);
  } else if (t == "Digits") {
    ADAMAS_CHECK(p.value("individual_digits", false), ErrorKind::unsupported,
                 "{}: unsupported pre-tokenizer Digits(individual_digits: false)", src);
    s.digits = true;
  } else if (t == "Split") {
    const auto pat = p.find("pattern");
    std::string regex;
    if (pat != p.end() && pat->is_object() && pat->contains("Regex") && (*pat)["Regex"].is_string())
      regex = (*pat)["Regex"].get<std::string>();
    ADAMAS_CHECK(!regex.empty() && p.value("behavior", std::string()) == "Isolated" && !p.value("invert", false),
                 ErrorKind::unsupported, "{}: unsupported pre-tokenizer Split {}", src, p.dump().substr(0, 200));
    ADAMAS_CHECK(s.split_regex.empty(), ErrorKind::unsupported, "{}: unsupported pre-tokenizer: two Split regexes",
                 src);
    s.split_regex = regex;
  } else if (t == "Metaspace") {
    ADAMAS_CHECK(p.value("replacement", std::string(kSpace)) == kSpace, ErrorKind::unsupported,
                 "{}: unsupported Metaspace replacement {}", src, p.dump());
    s.metaspace = true;
    const std::string scheme = p.value("prepend_scheme", std::string());
    s.metaspace_prefix = scheme.empty() ? p.value("add_prefix_space", true) : scheme != "never";
  } else {
    fail(ErrorKind::unsupported, "{}: unsupported pre-tokenizer '{}'", src, t.empty() ? p.dump() : t);
  }
}

void walk_normalizer(const json& n, Shape& s, std::string_view src) {
  if (n.is_null()) return;
  const std::string t = type_of(n);
  if (t == "Sequence") {
    const auto it = n.find("normalizers");
    ADAMAS_CHECK(it != n.end() && it->is_array(), ErrorKind::format, "{}: normalizer Sequence without a list", src);
    for (const json& q : *it) walk_normalizer(q, s, src);
  } else if (t == "NFC") {
    // llama.cpp does not apply it either; most text is NFC already.
  } else if (t == "Prepend" && n.value("prepend", std::string()) == kSpace) {
    s.prepend_space = true;
  } else if (t == "Replace" && n.contains("pattern") && n["pattern"].is_object() &&
             n["pattern"].value("String", std::string()) == " " && n.value("content", std::string()) == kSpace) {
    s.replace_space = true;
  } else {
    fail(ErrorKind::unsupported, "{}: unsupported normalizer {}", src, n.dump().substr(0, 200));
  }
}

bool looks_special(std::string_view t) {
  auto wrapped = [&](std::string_view open, std::string_view close) {
    return t.size() >= open.size() + close.size() && t.substr(0, open.size()) == open &&
           t.substr(t.size() - close.size()) == close;
  };
  return t == "<pad>" || t == "<mask>" || wrapped("<|", "|>") || wrapped("<\xEF\xBD\x9C", "\xEF\xBD\x9C>");
}

bool is_byte_token(std::string_view t) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
  return t.size() == 6 && t.substr(0, 3) == "<0x" && hex(t[3]) && hex(t[4]) && t[5] == '>';
}

// The text of a special token entry of tokenizer_config.json: "text", {"content": "text"} or null.
std::optional<std::string> config_token(const json& cfg, std::string_view key, std::string_view src) {
  const auto it = cfg.find(std::string(key));
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  ADAMAS_CHECK(it->is_object() && it->contains("content") && (*it)["content"].is_string(), ErrorKind::format,
               "{}: \"{}\" must be a string or an object with \"content\"", src, key);
  return (*it)["content"].get<std::string>();
}

// Whether a TemplateProcessing post-processor puts `bos` first in a single sequence.
std::optional<bool> template_adds_bos(const json& pp, std::string_view bos) {
  if (!pp.is_object()) return std::nullopt;
  const std::string t = type_of(pp);
  if (t == "Sequence" && pp.contains("processors") && pp["processors"].is_array()) {
    for (const json& q : pp["processors"])
      if (auto r = template_adds_bos(q, bos)) return r;
    return std::nullopt;
  }
  if (t != "TemplateProcessing" || !pp.contains("single") || !pp["single"].is_array()) return std::nullopt;
  const json& single = pp["single"];
  if (single.empty()) return false;
  const json& first = single[0];
  if (first.is_object() && first.contains("SpecialToken") && first["SpecialToken"].is_object())
    return first["SpecialToken"].value("id", std::string()) == bos;
  return false;
}


}  // namespace

TokenizerSpec tokenizer_spec_from_json(std::string_view text, std::string_view src,
                                       const HfTokenizerOptions& options) {
  const json j = parse_json(text, src);
  ADAMAS_CHECK(j.is_object(), ErrorKind::format, "{}: not a JSON object", src);
  const auto mit = j.find("model");
  ADAMAS_CHECK(mit != j.end() && mit->is_object(), ErrorKind::format, "{}: missing \"model\" object", src);
  const json& model = *mit;
  const std::string mtype = type_of(model);
  ADAMAS_CHECK(mtype == "BPE" || (mtype.empty() && model.contains("merges")), ErrorKind::unsupported,
               "{}: unsupported tokenizer model type '{}' (supported: BPE)", src, mtype);
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const auto it = model.find(k);
    ADAMAS_CHECK(it == model.end() || it->is_null() || (it->is_string() && it->get<std::string>().empty()),
                 ErrorKind::unsupported, "{}: unsupported BPE option {} = {}", src, k, it->dump());
  }

  // Vocabulary: model.vocab (token -> id) and added_tokens.
  const auto vit = model.find("vocab");
  ADAMAS_CHECK(vit != model.end() && vit->is_object() && !vit->empty(), ErrorKind::format,
               "{}: model.vocab must be a non-empty object of token -> id", src);
  constexpr int64_t kMaxVocab = int64_t(1) << 24;
  std::vector<std::optional<std::string>> by_id;
  auto place = [&](const std::string& tok, const json& idv, bool overwrite) {
    ADAMAS_CHECK(idv.is_number_integer() && idv.get<int64_t>() >= 0 && idv.get<int64_t>() < kMaxVocab,
                 ErrorKind::format, "{}: token '{}' has id {}, not an integer in [0, {})", src, tok, idv.dump(),
                 kMaxVocab);
    const size_t id = size_t(idv.get<int64_t>());
    if (id >= by_id.size()) by_id.resize(id + 1);
    ADAMAS_CHECK(overwrite || !by_id[id], ErrorKind::format, "{}: tokens '{}' and '{}' share id {}", src,
                 by_id[id].value_or(""), tok, id);
    by_id[id] = tok;
    return int32_t(id);
  };
  for (const auto& [tok, idv] : vit->items()) place(tok, idv, false);

  std::unordered_map<int32_t, bool> added;  // id -> special
  if (const auto ait = j.find("added_tokens"); ait != j.end() && !ait->is_null()) {
    ADAMAS_CHECK(ait->is_array(), ErrorKind::format, "{}: \"added_tokens\" must be an array", src);
    for (const json& a : *ait) {
      ADAMAS_CHECK(a.is_object() && a.contains("id") && a.contains("content") && a["content"].is_string(),
                   ErrorKind::format, "{}: added token {} needs \"id\" and \"content\"", src, a.dump());
      const int32_t id = place(a["content"].get<std::string>(), a["id"], true);
      added[id] = a.value("special", false);
    }
  }

  Shape shape;
  walk_pre(j.value("pre_tokenizer", json()), shape, src);
  walk_normalizer(j.value("normalizer", json()), shape, src);
  const bool byte_fallback = model.value("byte_fallback", false);

  TokenizerSpec s;
  if (shape.byte_level) {
    s.model = "gpt2";
    ADAMAS_CHECK(!shape.metaspace && !shape.prepend_space && !shape.replace_space && !byte_fallback,
                 ErrorKind::unsupported, "{}: unsupported mix of ByteLevel and SentencePiece-style options", src);
    ADAMAS_CHECK(!shape.byte_level_prefix, ErrorKind::unsupported,
                 "{}: unsupported pre-tokenizer ByteLevel(add_prefix_space: true)", src);
    if (shape.split_regex.empty()) {
      ADAMAS_CHECK(shape.byte_level_regex, ErrorKind::unsupported,
                   "{}: unsupported pre-tokenizer ByteLevel(use_regex: false) without a Split", src);
      s.pre = shape.digits ? "smollm" : "gpt2";
    } else {
      ADAMAS_CHECK(!shape.digits && !shape.byte_level_regex, ErrorKind::unsupported,
                   "{}: unsupported pre-tokenizer: Split combined with Digits or a ByteLevel regex", src);
      if (shape.split_regex == kLlama3Regex) s.pre = "llama-bpe";
      else if (shape.split_regex == kQwen2Regex) s.pre = "qwen2";
      else fail(ErrorKind::unsupported, "{}: unsupported pre-tokenizer Split regex '{}'", src, shape.split_regex);
    }
    ADAMAS_CHECK(!model.value("ignore_merges", false) || s.pre == "llama-bpe", ErrorKind::unsupported,
                 "{}: unsupported BPE option ignore_merges = true", src);
  } else if (shape.metaspace || shape.replace_space || byte_fallback) {
    s.model = "llama";
    s.add_space_prefix = shape.prepend_space || (shape.metaspace && shape.metaspace_prefix);
  } else {
    fail(ErrorKind::unsupported,
         "{}: unsupported BPE tokenizer: neither a ByteLevel pre-tokenizer (GPT-2 style) nor SentencePiece-style "
         "(Metaspace / byte_fallback)",
         src);
  }

  // Pad to the model's vocabulary size; holes become [PAD<i>] (as llama.cpp's converter).
  ADAMAS_CHECK(options.vocab_size <= kMaxVocab, ErrorKind::invalid_argument, "{}: vocab_size {} is too large", src,
               options.vocab_size);
  if (options.vocab_size > int64_t(by_id.size())) by_id.resize(size_t(options.vocab_size));
  const int32_t n = int32_t(by_id.size());
  s.tokens.resize(size_t(n));
  s.token_types.assign(size_t(n), int32_t(TokenType::normal));
  std::unordered_map<std::string_view, int32_t> ids;
  for (int32_t i = 0; i < n; ++i) {
    std::string& t = s.tokens[size_t(i)];
    int32_t& ty = s.token_types[size_t(i)];
    if (!by_id[size_t(i)]) {
      t = "[PAD" + std::to_string(i) + "]";
      ty = int32_t(TokenType::user_defined);
      continue;
    }
    t = *by_id[size_t(i)];
    if (const auto it = added.find(i); it != added.end()) {
      if (it->second || looks_special(t)) {
        ty = int32_t(TokenType::control);
      } else {
        ty = int32_t(TokenType::user_defined);
        if (s.model == "gpt2") {  // llama.cpp pre-normalizes user-defined spaces
          for (size_t p; (p = t.find(kSpace)) != std::string::npos;) t.replace(p, kSpace.size(), " ");
        }
      }
    } else if (s.model == "llama" && byte_fallback && is_byte_token(t)) {
      ty = int32_t(TokenType::byte);
    }
  }
  for (int32_t i = n - 1; i >= 0; --i) ids[s.tokens[size_t(i)]] = i;  // first id wins on duplicates

  // Merges: "a b" or ["a", "b"]; both sides and the result must be tokens.
  const auto mgit = model.find("merges");
  ADAMAS_CHECK(mgit != model.end() && mgit->is_array(), ErrorKind::format, "{}: model.merges must be an array", src);
  std::vector<int32_t> first_rank(size_t(n), -1);  // rank of the first merge producing each token (llama scores)
  s.merges.reserve(mgit->size());
  std::string left, right;
  for (size_t r = 0; r < mgit->size(); ++r) {
    const json& m = (*mgit)[r];
    if (m.is_string()) {
      const std::string& ms = m.get_ref<const std::string&>();
      const size_t sp = ms.find(' ', 1);
      ADAMAS_CHECK(sp != std::string::npos && sp + 1 < ms.size() && ms.find(' ', sp + 1) == std::string::npos,
                   ErrorKind::format, "{}: merge {} '{}' is not two tokens separated by a space", src, r, ms);
      left = ms.substr(0, sp);
      right = ms.substr(sp + 1);
    } else {
      ADAMAS_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), ErrorKind::format,
                   "{}: merge {} must be \"a b\" or [\"a\", \"b\"], found {}", src, r, m.dump());
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
      ADAMAS_CHECK(!left.empty() && !right.empty(), ErrorKind::format, "{}: merge {} has an empty side", src, r);
    }
    const auto res = ids.find(left + right);
    ADAMAS_CHECK(ids.count(left) && ids.count(right) && res != ids.end(), ErrorKind::format,
                 "{}: merge {} ('{}', '{}') refers to a token not in the vocabulary", src, r, left, right);
    if (first_rank[size_t(res->second)] < 0) first_rank[size_t(res->second)] = int32_t(r);
    if (s.model == "gpt2") s.merges.push_back(left + " " + right);
  }
  if (s.model == "llama") {
    const float n_merges = float(mgit->size());
    s.scores.resize(size_t(n));
    for (int32_t i = 0; i < n; ++i)
      s.scores[size_t(i)] = first_rank[size_t(i)] >= 0 ? -float(first_rank[size_t(i)]) : -(n_merges + float(i));
  }

  auto id_of = [&](const std::optional<std::string>& text) -> int32_t {
    if (!text) return -1;
    const auto it = ids.find(*text);
    return it == ids.end() ? -1 : it->second;
  };
  if (const auto it = model.find("unk_token"); it != model.end() && it->is_string()) {
    s.unk_id = id_of(it->get<std::string>());
    if (s.unk_id >= 0 && s.model == "llama") s.token_types[size_t(s.unk_id)] = int32_t(TokenType::unknown);
  }

  // BOS / EOS / add_bos: tokenizer_config.json first, then config.json ids, then the post-processor template.
  std::optional<std::string> bos_text, eos_text;
  if (options.tokenizer_config_json) {
    const std::string cfg_src = std::string(src) + " (tokenizer_config.json)";
    const json cfg = parse_json(*options.tokenizer_config_json, cfg_src);
    ADAMAS_CHECK(cfg.is_object(), ErrorKind::format, "{}: not a JSON object", cfg_src);
    bos_text = config_token(cfg, "bos_token", cfg_src);
    eos_text = config_token(cfg, "eos_token", cfg_src);
    if (s.unk_id < 0) s.unk_id = id_of(config_token(cfg, "unk_token", cfg_src));
    if (const auto it = cfg.find("add_bos_token"); it != cfg.end() && it->is_boolean()) s.add_bos = it->get<bool>();
  }
  s.bos_id = id_of(bos_text);
  s.eos_id = id_of(eos_text);
  if (s.bos_id < 0 && options.bos_id >= 0 && options.bos_id < n) s.bos_id = options.bos_id;
  if (s.eos_id < 0 && options.eos_id >= 0 && options.eos_id < n) s.eos_id = options.eos_id;
  if (!s.add_bos && s.bos_id >= 0) {
    if (auto t = template_adds_bos(j.value("post_processor", json()), s.tokens[size_t(s.bos_id)])) s.add_bos = *t;
  }
  return s;
}

namespace {
GgufMetaWriter write_spec(const TokenizerSpec& s) {
  GgufMetaWriter w;
  w.kv_str("tokenizer.ggml.model", s.model);
  if (!s.pre.empty()) w.kv_str("tokenizer.ggml.pre", s.pre);
  w.kv_strings("tokenizer.ggml.tokens", s.tokens);
  if (!s.token_types.empty()) w.kv_i32s("tokenizer.ggml.token_type", s.token_types);
  if (s.model == "gpt2") w.kv_strings("tokenizer.ggml.merges", s.merges);
  if (!s.scores.empty()) w.kv_f32s("tokenizer.ggml.scores", s.scores);
  if (s.bos_id >= 0) w.kv_u32("tokenizer.ggml.bos_token_id", uint32_t(s.bos_id));
  if (s.eos_id >= 0) w.kv_u32("tokenizer.ggml.eos_token_id", uint32_t(s.eos_id));
  if (s.unk_id >= 0) w.kv_u32("tokenizer.ggml.unknown_token_id", uint32_t(s.unk_id));
  if (s.add_bos) w.kv_bool("tokenizer.ggml.add_bos_token", *s.add_bos);
  if (s.add_space_prefix) w.kv_bool("tokenizer.ggml.add_space_prefix", *s.add_space_prefix);
  return w;
}
}  // namespace

std::vector<uint8_t> tokenizer_spec_to_gguf(const TokenizerSpec& s) { return write_spec(s).finish(); }

std::vector<uint8_t> tokenizer_spec_gguf_kv(const TokenizerSpec& s, uint64_t* n_kv) {
  GgufMetaWriter w = write_spec(s);
  *n_kv = w.n_kv;
  return std::move(w.bytes);
}

Tokenizer tokenizer_from_spec(const TokenizerSpec& spec, std::string_view source) {
  const auto bytes = tokenizer_spec_to_gguf(spec);
  const GgufFile f = GgufFile::from_bytes(bytes, std::string(source));
  return Tokenizer::from_gguf(f);  // copies what it needs: the GgufFile may go
}

Tokenizer tokenizer_from_json(std::string_view text, std::string_view source, const HfTokenizerOptions& options) {
  return tokenizer_from_spec(tokenizer_spec_from_json(text, source, options), source);
}

TokenizerSpec load_hf_tokenizer_spec(const std::string& path, const HfConfig* config) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path file = path;
  if (fs::is_directory(file, ec)) file /= "tokenizer.json";
  HfTokenizerOptions o;
  const fs::path cfg = file.parent_path() / "tokenizer_config.json";
  if (fs::is_regular_file(cfg, ec)) o.tokenizer_config_json = read_file(cfg.string());
  if (config != nullptr) {
    o.vocab_size = config->vocab_size;
    o.bos_id = config->bos_token_id;
    o.eos_id = config->eos_token_id();
  }
  return tokenizer_spec_from_json(read_file(file.string()), file.string(), o);
}

Tokenizer load_hf_tokenizer(const std::string& path, const HfConfig* config) {
  std::error_code ec;
  std::filesystem::path file = path;
  if (std::filesystem::is_directory(file, ec)) file /= "tokenizer.json";
  return tokenizer_from_spec(load_hf_tokenizer_spec(path, config), file.string());
}

}  // namespace adamas
