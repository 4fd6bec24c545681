#include "model/unicode.h"

#include <algorithm>
#include <array>

namespace adamas::unicode {
namespace {

struct CodepointRange {
  uint32_t first, last;
};

#include "model/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodepointRange (&ranges)[N], uint32_t cp) {
  const auto it = std::upper_bound(std::begin(ranges), std::end(ranges), cp,
                                   [](uint32_t c, const CodepointRange& r) { return c < r.first; });
  return it != std::begin(ranges) && cp <= std::prev(it)->last;
}

struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 512> from_unicode;  // every mapped code point is < 512
  ByteMap() {
    from_unicode.fill(-1);
    // Printable Latin-1 bytes map to themselves; the others to 256, 257, ... in byte order (GPT-2's scheme).
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const int cp = printable ? b : next++;
      append_utf8(to_unicode[b], uint32_t(cp));
      from_unicode[cp] = int16_t(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

}  // namespace

std::vector<Codepoint> decode_utf8(std::string_view text) {
  std::vector<Codepoint> out;
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    uint32_t cp = 0, len = 0, min = 0;
    if (c < 0x80) { cp = c; len = 1; }
    else if ((c & 0xE0) == 0xC0) { cp = c & 0x1F; len = 2; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { cp = c & 0x0F; len = 3; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { cp = c & 0x07; len = 4; min = 0x10000; }
    bool ok = len != 0 && i + len <= n;
    for (uint32_t k = 1; ok && k < len; ++k) {
      ok = (s[i + k] & 0xC0) == 0x80;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    ok = ok && cp >= min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    if (!ok) { cp = 0xFFFD; len = 1; }
    out.push_back({cp, uint32_t(i), len});
    i += len;
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

bool is_letter(uint32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return in_ranges(kLetterRanges, cp);
}

bool is_number(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(kNumberRanges, cp);
}

bool is_whitespace(uint32_t cp) {
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

const std::string& byte_to_unicode(uint8_t b) { return byte_map().to_unicode[b]; }

int byte_of(uint32_t cp) { return cp < 512 ? byte_map().from_unicode[cp] : -1; }

// Length of the contraction 's|'t|'re|'ve|'m|'ll|'d at cps[pos] (0 when none); fold_case: ASCII case-insensitive.
static size_t contraction(const std::vector<Codepoint>& cps, size_t pos, size_t end, bool fold_case) {
  if (cps[pos].cp != '\'' || pos + 1 >= end) return 0;
  auto at = [&](size_t i) {
    const uint32_t c = i < end ? cps[i].cp : 0;
    return fold_case && c >= 'A' && c <= 'Z' ? c | 0x20 : c;
  };
  const uint32_t c1 = at(pos + 1), c2 = at(pos + 2);
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

void split_gpt2(const std::vector<Codepoint>& cps, size_t begin, size_t end, std::vector<Span>& out) {
  auto emit = [&](size_t from, size_t to) { out.push_back({cps[from].offset, cps[to - 1].offset + cps[to - 1].len}); };
  auto cp_at = [&](size_t i) { return i < end ? cps[i].cp : 0xFFFFFFFFu; };  // past the end: matches no class
  auto other = [](uint32_t c) { return c != 0xFFFFFFFFu && !is_whitespace(c) && !is_letter(c) && !is_number(c); };
  size_t pos = begin;
  while (pos < end) {
    const uint32_t c = cps[pos].cp;
    // 's|'t|'re|'ve|'m|'ll|'d
    if (const size_t n = contraction(cps, pos, end, false)) {
      emit(pos, pos + n);
      pos += n;
      continue;
    }
    // ` ?X+` for X = \p{L}, \p{N}, [^\s\p{L}\p{N}]: an optional leading space, then a run of one class.
    const size_t body = (c == ' ') ? pos + 1 : pos;
    const uint32_t b = cp_at(body);
    bool (*cls)(uint32_t) = nullptr;
    if (b != 0xFFFFFFFFu) {
      if (is_letter(b)) cls = [](uint32_t x) { return x != 0xFFFFFFFFu && is_letter(x); };
      else if (is_number(b)) cls = [](uint32_t x) { return x != 0xFFFFFFFFu && is_number(x); };
      else if (other(b)) cls = other;
    }
    if (cls != nullptr) {
      size_t e = body + 1;
      while (e < end && cls(cps[e].cp)) ++e;
      emit(pos, e);
      pos = e;
      continue;
    }
    // \s+(?!\S)|\s+ : a whitespace run; when a non-space follows, its last char is left to start the next piece.
    size_t e = pos;
    while (e < end && is_whitespace(cps[e].cp)) ++e;
    if (e == pos) {  // unreachable: every code point is in one of the classes; keep progress anyway
      emit(pos, pos + 1);
      ++pos;
      continue;
    }
    if (e < end && e - pos > 1) --e;
    emit(pos, e);
    pos = e;
  }
}

void split_digits_then_gpt2(const std::vector<Codepoint>& cps, std::vector<Span>& out) {
  size_t start = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    if (!is_number(cps[i].cp)) continue;
    if (start < i) split_gpt2(cps, start, i, out);
    out.push_back({cps[i].offset, cps[i].offset + cps[i].len});
    start = i + 1;
  }
  if (start < cps.size()) split_gpt2(cps, start, cps.size(), out);
}

void split_llama3(const std::vector<Codepoint>& cps, size_t max_digits, std::vector<Span>& out) {
  const size_t end = cps.size();
  auto emit = [&](size_t from, size_t to) { out.push_back({cps[from].offset, cps[to - 1].offset + cps[to - 1].len}); };
  auto letter = [&](size_t i) { return i < end && is_letter(cps[i].cp); };
  auto space = [&](size_t i) { return i < end && is_whitespace(cps[i].cp); };
  auto crlf = [&](size_t i) { return i < end && (cps[i].cp == '\r' || cps[i].cp == '\n'); };
  auto other = [&](size_t i) {  // [^\s\p{L}\p{N}]
    return i < end && !is_whitespace(cps[i].cp) && !is_letter(cps[i].cp) && !is_number(cps[i].cp);
  };
  size_t pos = 0;
  while (pos < end) {
    const uint32_t c = cps[pos].cp;
    // (?i:'s|'t|'re|'ve|'m|'ll|'d) (ASCII case folding, as llama.cpp)
    if (const size_t n = contraction(cps, pos, end, true)) {
      emit(pos, pos + n);
      pos += n;
      continue;
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+ : one optional char that is not CR/LF/letter/digit (a space, punctuation...), then
    // a letter run.
    if (letter(pos) || (c != '\r' && c != '\n' && !is_number(c) && letter(pos + 1))) {
      size_t e = pos + 1;
      while (letter(e)) ++e;
      emit(pos, e);
      pos = e;
      continue;
    }
    // \p{N}{1,max_digits}
    if (is_number(c)) {
      size_t e = pos + 1;
      while (e - pos < max_digits && e < end && is_number(cps[e].cp)) ++e;
      emit(pos, e);
      pos = e;
      continue;
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    if (other(pos) || (c == ' ' && other(pos + 1))) {
      size_t e = pos + 1;
      while (other(e)) ++e;
      while (crlf(e)) ++e;
      emit(pos, e);
      pos = e;
      continue;
    }
    // Whitespace from here (every code point is a letter, a number, \s or "other").
    size_t e = pos;
    while (space(e)) ++e;
    if (e == pos) {  // unreachable; keep progress anyway
      emit(pos, pos + 1);
      ++pos;
      continue;
    }
    // \s*[\r\n]+ : the run up to and including its last CR/LF.
    size_t last_crlf = e;
    for (size_t i = e; i > pos; --i)
      if (crlf(i - 1)) {
        last_crlf = i - 1;
        break;
      }
    if (last_crlf < e) {
      emit(pos, last_crlf + 1);
      pos = last_crlf + 1;
      continue;
    }
    // \s+(?!\S)|\s+ : when a non-space follows, the run's last char is left to start the next piece.
    if (e < end && e - pos > 1) --e;
    emit(pos, e);
    pos = e;
  }
}

}  // namespace adamas::unicode
