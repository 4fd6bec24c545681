// Unicode helpers of the tokenizer: UTF-8 decoding that never fails, the \p{L} / \p{N} / \s classes, the GPT-2
// byte <-> unicode map of byte-level BPE, and the hand-written pre-tokenizer splits (no regex library).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace adamas::unicode {

struct Codepoint {
  uint32_t cp;      // the code point; an invalid UTF-8 byte decodes to 0xFFFD with len 1
  uint32_t offset;  // byte offset in the text
  uint32_t len;     // bytes
};

// Decode text; invalid or truncated sequences become one U+FFFD per byte (offsets still cover every byte).
std::vector<Codepoint> decode_utf8(std::string_view text);
void append_utf8(std::string& out, uint32_t cp);

bool is_letter(uint32_t cp);      // \p{L}
bool is_number(uint32_t cp);      // \p{N}
bool is_whitespace(uint32_t cp);  // \s: the Unicode White_Space property

// GPT-2 byte-level map: byte b <-> one printable code point (as UTF-8). byte_of returns -1 for a code point that
// is not in the map.
const std::string& byte_to_unicode(uint8_t b);
int byte_of(uint32_t cp);

// Pre-tokenizer splits, as byte ranges [begin, end) of the text.
struct Span {
  uint32_t begin, end;
};
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ over text[begin, end).
void split_gpt2(const std::vector<Codepoint>& cps, size_t begin, size_t end, std::vector<Span>& out);
// SmolLM2/StarCoder ("smollm"): every \p{N} code point alone, the GPT-2 split between them.
void split_digits_then_gpt2(const std::vector<Codepoint>& cps, std::vector<Span>& out);
// Llama 3 (max_digits 3) and Qwen2 (max_digits 1):
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+
// The contractions fold ASCII case only (as llama.cpp).
void split_llama3(const std::vector<Codepoint>& cps, size_t max_digits, std::vector<Span>& out);

}  // namespace adamas::unicode
