// SentencePiece-style BPE (tokenizer.ggml.model == "llama"), as llama.cpp's SPM tokenizer: symbols are UTF-8
// characters; the adjacent pair whose concatenation is a vocabulary token with the highest score is merged first
// (leftmost on ties); a final symbol that is not a token is emitted as <0xXX> byte tokens.
#include <cstdio>
#include <queue>

#include "core/check.h"
#include "model/tokenizer.h"

namespace adamas {
namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

// Bytes of the UTF-8 character at text[off]; an invalid or truncated sequence is one byte (so it never swallows the
// start of the next character, unlike llama.cpp, which only differs from this on invalid UTF-8).
size_t utf8_len(std::string_view text, size_t off) {
  const uint8_t c = uint8_t(text[off]);
  size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
  if (off + len > text.size()) return 1;
  for (size_t k = 1; k < len; ++k)
    if ((uint8_t(text[off + k]) & 0xC0) != 0x80) return 1;
  return len;
}

}  // namespace

void Tokenizer::load_spm(const GgufFile& f) {
  kind_ = Kind::spm;
  pre_.clear();
  add_space_prefix_ = f.get_bool_or("tokenizer.ggml.add_space_prefix", true);
  scores_.assign(tokens_.size(), 0.0f);
  if (f.has("tokenizer.ggml.scores")) {
    const auto scores = f.get_float_array("tokenizer.ggml.scores");
    ADAMAS_CHECK(scores.size() == tokens_.size(), ErrorKind::format,
                 "{}: tokenizer.ggml.scores has {} entries for {} tokens", f.source(), scores.size(), tokens_.size());
    for (size_t i = 0; i < scores.size(); ++i) scores_[i] = float(scores[i]);
  }
  byte_tokens_.assign(256, -1);
  char name[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    if (auto id = find_token(name)) byte_tokens_[size_t(b)] = *id;
  }
}

void Tokenizer::encode_spm(std::string_view fragment, bool prefix_space, std::vector<int32_t>& out) const {
  std::string text;
  text.reserve(fragment.size() * 2 + kSpace.size());
  if (prefix_space) text += kSpace;
  for (char c : fragment) {
    if (c == ' ') text += kSpace;
    else text += c;
  }

  struct Sym {
    uint32_t begin, len;
    int32_t prev, next;
  };
  std::vector<Sym> sym;
  for (size_t off = 0; off < text.size();) {
    const size_t len = utf8_len(text, off);
    const int32_t i = int32_t(sym.size());
    sym.push_back({uint32_t(off), uint32_t(len), i - 1, i + 1});
    off += len;
  }
  if (sym.empty()) return;
  sym.back().next = -1;

  struct Cand {
    float score;
    int32_t left, right;
    uint32_t size;
    bool operator<(const Cand& o) const { return score != o.score ? score < o.score : left > o.left; }
  };
  std::priority_queue<Cand> queue;  // highest score first, then leftmost
  auto push = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const auto id = find_token(std::string_view(text).substr(sym[l].begin, sym[l].len + sym[r].len));
    if (id) queue.push({scores_[size_t(*id)], l, r, sym[l].len + sym[r].len});
  };
  for (int32_t i = 0; i + 1 < int32_t(sym.size()); ++i) push(i, i + 1);
  while (!queue.empty()) {
    const Cand c = queue.top();
    queue.pop();
    Sym& l = sym[c.left];
    Sym& r = sym[c.right];
    if (l.len == 0 || r.len == 0 || l.next != c.right || l.len + r.len != c.size) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = c.left;
    push(l.prev, c.left);
    push(c.left, l.next);
  }

  for (int32_t i = 0; i >= 0; i = sym[i].next) {
    const std::string_view piece = std::string_view(text).substr(sym[i].begin, sym[i].len);
    if (auto id = find_token(piece)) {
      out.push_back(*id);
      continue;
    }
    for (char c : piece) {  // byte fallback; the unknown token when the vocabulary lacks the byte token
      const int32_t id = byte_tokens_[uint8_t(c)];
      if (id >= 0) out.push_back(id);
      else if (unk_ >= 0) out.push_back(unk_);
    }
  }
}

std::string Tokenizer::spm_piece(int32_t id) const {
  const std::string& s = tokens_[size_t(id)];
  if (types_[size_t(id)] == TokenType::byte) {
    for (int b = 0; b < 256; ++b)
      if (byte_tokens_[size_t(b)] == id) return std::string(1, char(b));
  }
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (s.compare(i, kSpace.size(), kSpace) == 0) {
      out += ' ';
      i += kSpace.size();
    } else {
      out += s[i++];
    }
  }
  return out;
}

}  // namespace adamas
