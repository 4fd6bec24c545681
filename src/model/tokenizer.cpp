#include "model/tokenizer.h"

#include <algorithm>
#include <limits>
#include <queue>

#include "core/check.h"
#include "model/unicode.h"

namespace adamas {
namespace {

// tokenizer.ggml.pre values whose split is "each \p{N} alone, then GPT-2" in llama.cpp.
constexpr std::string_view kDigitsPre[] = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone",
                                           "minerva"};
// ... and those whose split is the plain GPT-2 pattern.
constexpr std::string_view kGpt2Pre[] = {"gpt2", "default", "mpt", "olmo", "jais"};
// ... the Llama 3 split (llama.cpp also sets ignore_merges and add_bos for these) ...
constexpr std::string_view kLlama3Pre[] = {"llama3", "llama-v3", "llama-bpe"};
// ... and the Qwen2 split (Llama 3's with single digits).
constexpr std::string_view kQwen2Pre[] = {"qwen2"};

int32_t optional_id(const GgufFile& f, std::string_view key, int32_t vocab) {
  const GgufValue* v = f.find(key);
  if (v == nullptr) return -1;
  const int64_t id = v->as_int(key);
  ADAMAS_CHECK(id >= 0 && id < vocab, ErrorKind::format, "{}: {} = {} is outside the vocabulary of {} tokens",
               f.source(), key, id, vocab);
  return int32_t(id);
}

}  // namespace

Tokenizer Tokenizer::from_gguf(const GgufFile& f) {
  Tokenizer t;
  t.model_ = std::string(f.get_string("tokenizer.ggml.model"));
  ADAMAS_CHECK(t.model_ == "gpt2" || t.model_ == "llama", ErrorKind::unsupported,
               "{}: unsupported tokenizer model '{}' (supported: 'gpt2' byte-level BPE, 'llama' SentencePiece BPE)",
               f.source(), t.model_);

  const auto& tokens = f.get_string_array("tokenizer.ggml.tokens");
  ADAMAS_CHECK(!tokens.empty() && tokens.size() <= size_t(std::numeric_limits<int32_t>::max()), ErrorKind::format,
               "{}: tokenizer.ggml.tokens has {} entries", f.source(), tokens.size());
  const int32_t n = int32_t(tokens.size());
  t.tokens_.assign(tokens.begin(), tokens.end());
  t.token_ids_.reserve(tokens.size());
  for (int32_t i = 0; i < n; ++i) t.token_ids_.emplace(t.tokens_[size_t(i)], i);  // first one wins on duplicates

  t.types_.assign(size_t(n), TokenType::normal);
  if (f.has("tokenizer.ggml.token_type")) {
    const auto types = f.get_int_array("tokenizer.ggml.token_type");
    ADAMAS_CHECK(types.size() == tokens.size(), ErrorKind::format,
                 "{}: tokenizer.ggml.token_type has {} entries for {} tokens", f.source(), types.size(), n);
    for (size_t i = 0; i < types.size(); ++i) {
      ADAMAS_CHECK(types[i] >= 0 && types[i] <= 6, ErrorKind::format, "{}: token {} has unknown token type {}",
                   f.source(), i, types[i]);
      t.types_[i] = TokenType(types[i]);
    }
  }
  if (t.model_ == "gpt2") t.load_bpe(f);
  else t.load_spm(f);

  t.bos_ = optional_id(f, "tokenizer.ggml.bos_token_id", n);
  t.eos_ = optional_id(f, "tokenizer.ggml.eos_token_id", n);
  t.unk_ = optional_id(f, "tokenizer.ggml.unknown_token_id", n);
  t.add_bos_ = f.get_bool_or("tokenizer.ggml.add_bos_token",
                             t.kind_ == Kind::spm || (t.kind_ == Kind::bpe && t.pre_kind_ == Pre::llama3));

  for (int32_t i = 0; i < n; ++i)
    if (t.is_special(i) && !t.tokens_[size_t(i)].empty()) t.specials_.push_back(i);
  std::stable_sort(t.specials_.begin(), t.specials_.end(),
                   [&](int32_t a, int32_t b) { return t.tokens_[size_t(a)].size() > t.tokens_[size_t(b)].size(); });
  if (t.eos_ >= 0) t.end_of_generation_.push_back(t.eos_);
  for (std::string_view s : {"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>"})
    if (auto id = t.find_token(s); id && t.is_special(*id)) t.end_of_generation_.push_back(*id);
  return t;
}

void Tokenizer::load_bpe(const GgufFile& f) {
  kind_ = Kind::bpe;
  pre_ = std::string(f.get_string_or("tokenizer.ggml.pre", "default"));
  if (std::find(std::begin(kDigitsPre), std::end(kDigitsPre), pre_) != std::end(kDigitsPre)) {
    pre_kind_ = Pre::digits_gpt2;
  } else if (std::find(std::begin(kGpt2Pre), std::end(kGpt2Pre), pre_) != std::end(kGpt2Pre)) {
    pre_kind_ = Pre::gpt2;
  } else if (std::find(std::begin(kLlama3Pre), std::end(kLlama3Pre), pre_) != std::end(kLlama3Pre)) {
    pre_kind_ = Pre::llama3;
    ignore_merges_ = true;
  } else if (std::find(std::begin(kQwen2Pre), std::end(kQwen2Pre), pre_) != std::end(kQwen2Pre)) {
    pre_kind_ = Pre::qwen2;
  } else {
    fail(ErrorKind::unsupported, "{}: unsupported pre-tokenizer '{}' (tokenizer.ggml.pre)", f.source(), pre_);
  }
  const auto& merges = f.get_string_array("tokenizer.ggml.merges");
  merge_ranks_.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string_view m = merges[i];
    const size_t space = m.find(' ', 1);
    ADAMAS_CHECK(space != std::string_view::npos && space + 1 < m.size(), ErrorKind::format,
                 "{}: merge {} '{}' is not two tokens separated by a space", f.source(), i, m);
    merge_ranks_.emplace(std::string(m), int32_t(i));
  }
}

void Tokenizer::check_id(int32_t id) const {
  ADAMAS_CHECK(id >= 0 && id < vocab_size(), ErrorKind::invalid_argument,
               "token id {} is outside the vocabulary of {} tokens", id, vocab_size());
}

std::string_view Tokenizer::token_text(int32_t id) const {
  check_id(id);
  return tokens_[size_t(id)];
}

TokenType Tokenizer::token_type(int32_t id) const {
  check_id(id);
  return types_[size_t(id)];
}

bool Tokenizer::is_special(int32_t id) const {
  const TokenType ty = token_type(id);
  return ty == TokenType::control || ty == TokenType::user_defined;
}

bool Tokenizer::is_end_of_generation(int32_t id) const {
  return std::find(end_of_generation_.begin(), end_of_generation_.end(), id) != end_of_generation_.end();
}

std::optional<int32_t> Tokenizer::find_token(std::string_view text) const {
  const auto it = token_ids_.find(text);
  if (it == token_ids_.end()) return std::nullopt;
  return it->second;
}

// BPE over one pre-token: map its bytes to the byte-level alphabet, then repeatedly merge the adjacent pair with
// the lowest merge rank (leftmost on ties), as a linked list of symbols plus a priority queue: O(n log n).
void Tokenizer::encode_word(std::string_view bytes, std::vector<int32_t>& out) const {
  std::string w;
  w.reserve(bytes.size() * 2);
  struct Sym {
    uint32_t begin, len;
    int32_t prev, next;
  };
  std::vector<Sym> sym;
  sym.reserve(bytes.size());
  for (char c : bytes) {
    const std::string& u = unicode::byte_to_unicode(uint8_t(c));
    const int32_t i = int32_t(sym.size());
    sym.push_back({uint32_t(w.size()), uint32_t(u.size()), i - 1, i + 1});
    w += u;
  }
  if (!sym.empty()) sym.back().next = -1;
  if (ignore_merges_) {  // llama.cpp (Llama 3): a pre-token that is a whole vocabulary entry is that token
    const auto it = token_ids_.find(std::string_view(w));
    if (it != token_ids_.end()) {
      out.push_back(it->second);
      return;
    }
  }

  struct Cand {
    int32_t rank, left, right;
    uint32_t size;  // bytes of left + right when queued: a later merge of either makes the entry stale
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<>> queue;
  std::string key;
  auto push = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    key.assign(w, sym[l].begin, sym[l].len).append(" ").append(w, sym[r].begin, sym[r].len);
    const auto it = merge_ranks_.find(key);
    if (it != merge_ranks_.end()) queue.push({it->second, l, r, sym[l].len + sym[r].len});
  };
  for (int32_t i = 0; i + 1 < int32_t(sym.size()); ++i) push(i, i + 1);
  while (!queue.empty()) {
    const Cand c = queue.top();
    queue.pop();
    Sym& l = sym[c.left];
    if (l.len == 0 || l.next != c.right || sym[c.right].len == 0 || l.len + sym[c.right].len != c.size) continue;
    Sym& r = sym[c.right];
    l.len += r.len;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = c.left;
    r.len = 0;
    push(l.prev, c.left);
    push(c.left, l.next);
  }

  for (int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) {
    const std::string_view s = std::string_view(w).substr(sym[i].begin, sym[i].len);
    const auto it = token_ids_.find(s);
    if (it != token_ids_.end()) {
      out.push_back(it->second);
      continue;
    }
    // A symbol missing from the vocabulary: its single characters, and the characters (bytes) the vocabulary lacks
    // are dropped, as llama.cpp and HF tokenizers (without an unknown token) do. SmolLM2 lacks e.g. 0x04, 0xFF.
    for (const auto& cp : unicode::decode_utf8(s)) {
      const auto jt = token_ids_.find(s.substr(cp.offset, cp.len));
      if (jt != token_ids_.end()) out.push_back(jt->second);
    }
  }
}

void Tokenizer::encode_plain(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  const auto cps = unicode::decode_utf8(text);
  std::vector<unicode::Span> spans;
  switch (pre_kind_) {
    case Pre::digits_gpt2: unicode::split_digits_then_gpt2(cps, spans); break;
    case Pre::llama3: unicode::split_llama3(cps, 3, spans); break;
    case Pre::qwen2: unicode::split_llama3(cps, 1, spans); break;
    case Pre::gpt2: unicode::split_gpt2(cps, 0, cps.size(), spans); break;
  }
  // Words repeat a lot in real text: remember the ids of each distinct word of this call.
  std::unordered_map<std::string_view, std::pair<size_t, size_t>> seen;  // word -> [begin, end) in out
  for (const auto& s : spans) {
    const std::string_view word = text.substr(s.begin, s.end - s.begin);
    const auto it = seen.find(word);
    if (it != seen.end()) {
      const auto [b, e] = it->second;
      for (size_t k = b; k < e; ++k) {
        const int32_t id = out[k];
        out.push_back(id);
      }
      continue;
    }
    const size_t before = out.size();
    encode_word(word, out);
    if (word.size() > 1) seen.emplace(word, std::make_pair(before, out.size()));
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  ADAMAS_CHECK(text.size() < (size_t(1) << 32), ErrorKind::invalid_argument,
               "tokenizer: text of {} bytes is too long (limit 4 GiB)", text.size());
  std::vector<int32_t> out;
  bool after_special = true;  // the start of the text counts as "after a special token" (SentencePiece prefix)
  auto plain = [&](std::string_view fragment) {
    if (fragment.empty()) return;
    if (kind_ == Kind::spm) encode_spm(fragment, add_space_prefix_ && after_special, out);
    else encode_plain(fragment, out);
    after_special = false;
  };
  if (!parse_special || specials_.empty()) {
    plain(text);
    return out;
  }
  size_t start = 0, i = 0;
  while (i < text.size()) {
    int32_t hit = -1;
    for (int32_t id : specials_) {  // longest first
      const std::string& s = tokens_[size_t(id)];
      if (s[0] == text[i] && text.compare(i, s.size(), s) == 0) {
        hit = id;
        break;
      }
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    plain(text.substr(start, i - start));
    out.push_back(hit);
    after_special = true;
    i += tokens_[size_t(hit)].size();
    start = i;
  }
  plain(text.substr(start));
  return out;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  check_id(id);
  const std::string& s = tokens_[size_t(id)];
  if (is_special(id)) return s;
  if (kind_ == Kind::spm) return spm_piece(id);
  std::string out;
  out.reserve(s.size());
  for (const auto& cp : unicode::decode_utf8(s)) {
    const int b = unicode::byte_of(cp.cp);
    if (b >= 0) out += char(b);
    else out.append(s, cp.offset, cp.len);  // not a byte-level symbol: keep the text as is
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  bool strip = kind_ == Kind::spm && add_space_prefix_;  // SentencePiece: drop the space the encoder prefixed
  for (int32_t id : ids) {
    check_id(id);
    if (skip_special && types_[size_t(id)] == TokenType::control) continue;
    std::string piece = token_bytes(id);
    if (strip && !is_special(id)) {
      if (!piece.empty() && piece[0] == ' ') piece.erase(0, 1);
      strip = false;
    }
    out += piece;
  }
  return out;
}

std::string apply_chatml(std::span<const ChatMessage> messages, bool add_generation_prompt,
                         std::string_view default_system) {
  std::string out;
  if (!default_system.empty() && !messages.empty() && messages.front().role != "system")
    out.append("<|im_start|>system\n").append(default_system).append("<|im_end|>\n");
  for (const ChatMessage& m : messages)
    out.append("<|im_start|>").append(m.role).append("\n").append(m.content).append("<|im_end|>\n");
  if (add_generation_prompt) out.append("<|im_start|>assistant\n");
  return out;
}

}  // namespace adamas
