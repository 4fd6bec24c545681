// Tokenizer built from GGUF metadata, behaving as llama.cpp's for the same file. Supported:
//  - byte-level BPE (tokenizer.ggml.model == "gpt2") with the pre-tokenizers "gpt2"/"default" (GPT-2 split),
//    "smollm"/"starcoder"-like (each \p{N} alone, then the GPT-2 split), "llama-bpe"/"llama3"/"llama-v3" (Llama 3
//    split, digit runs of up to 3, whole-word vocabulary entries bypass the merges as llama.cpp's ignore_merges,
//    add_bos defaults to true) and "qwen2" (the Llama 3 split with single digits), as llama.cpp maps
//    tokenizer.ggml.pre;
//  - SentencePiece-style BPE (tokenizer.ggml.model == "llama", Llama 1/2, Mistral): spaces become U+2581, a space is
//    prefixed to the text and after each special token when tokenizer.ggml.add_space_prefix (default true), pairs
//    are merged by highest tokenizer.ggml.scores, characters without a token fall back to <0xXX> byte tokens.
// Other models/pre-tokenizers raise Error(unsupported) naming them. Special (control and user-defined) tokens are
// matched as whole tokens in the text only when asked (parse_special).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model/gguf.h"

namespace adamas {

// Values of tokenizer.ggml.token_type (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
  undefined = 0, normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6,
};

class Tokenizer {
 public:
  // Reads tokenizer.ggml.{model, pre, tokens, merges, token_type, bos_token_id, eos_token_id, ...}.
  static Tokenizer from_gguf(const GgufFile& file);

  int32_t vocab_size() const { return int32_t(tokens_.size()); }
  int32_t bos_id() const { return bos_; }  // -1 when the model has none
  int32_t eos_id() const { return eos_; }
  bool add_bos() const { return add_bos_; }  // tokenizer.ggml.add_bos_token (default false)
  const std::string& model() const { return model_; }  // "gpt2" or "llama"
  const std::string& pre() const { return pre_; }

  // Text -> ids. parse_special: control/user-defined token texts in `text` become those tokens (longest match);
  // else they are tokenized as plain text. No BOS is added (see add_bos()). Bytes that have no symbol in the
  // vocabulary are dropped (as llama.cpp and HF tokenizers do), so decode(encode(s)) == s only when the vocabulary
  // covers every byte of s.
  std::vector<int32_t> encode(std::string_view text, bool parse_special = false) const;
  // Ids -> text. Control tokens are rendered as their text unless skip_special. Byte-level tokens decode to their
  // bytes, so a decoded prefix may end inside a UTF-8 sequence (use token_bytes to stream). SentencePiece: the
  // space that add_space_prefix put in front of the text is removed from the first piece.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // The bytes one token stands for (its text for control/user-defined tokens).
  std::string token_bytes(int32_t id) const;

  std::string_view token_text(int32_t id) const;  // the vocabulary entry as stored
  TokenType token_type(int32_t id) const;
  std::optional<int32_t> find_token(std::string_view text) const;
  bool is_special(int32_t id) const;  // control or user-defined
  bool is_end_of_generation(int32_t id) const;  // eos, <|im_end|>, <|endoftext|>, <|eot_id|>

 private:
  enum class Kind { bpe, spm };
  enum class Pre { gpt2, digits_gpt2, llama3, qwen2 };
  void load_bpe(const GgufFile& f);
  void load_spm(const GgufFile& f);
  void check_id(int32_t id) const;
  void encode_word(std::string_view bytes, std::vector<int32_t>& out) const;
  void encode_plain(std::string_view text, std::vector<int32_t>& out) const;
  // SentencePiece: one fragment between special tokens; prefix_space adds the leading space.
  void encode_spm(std::string_view text, bool prefix_space, std::vector<int32_t>& out) const;
  std::string spm_piece(int32_t id) const;

  Kind kind_ = Kind::bpe;
  std::vector<float> scores_;               // spm merge scores
  std::vector<int32_t> byte_tokens_;        // spm: id of <0xXX> per byte, -1 when missing
  bool add_space_prefix_ = false;
  bool ignore_merges_ = false;              // bpe: a pre-token found in the vocabulary is used whole (Llama 3)

  std::string model_, pre_;
  Pre pre_kind_ = Pre::gpt2;
  std::vector<std::string> tokens_;
  std::vector<TokenType> types_;
  struct StringHash {  // lets the maps be searched with a string_view, without building a std::string
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;
  StringMap token_ids_;
  StringMap merge_ranks_;  // "left right" -> rank
  std::vector<int32_t> specials_;  // control/user-defined ids, longest text first
  std::vector<int32_t> end_of_generation_;
  int32_t bos_ = -1, eos_ = -1, unk_ = -1;
  bool add_bos_ = false;
};

// ChatML (SmolLM2, Qwen...): "<|im_start|>{role}\n{content}<|im_end|>\n" per message, then
// "<|im_start|>assistant\n" when add_generation_prompt. As SmolLM2's template does, a conversation whose first
// message is not a system message gets `default_system` as one first (nothing when it is empty).
struct ChatMessage {
  std::string role;
  std::string content;
};
inline constexpr std::string_view kSmolLM2DefaultSystem =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
std::string apply_chatml(std::span<const ChatMessage> messages, bool add_generation_prompt = true,
                         std::string_view default_system = kSmolLM2DefaultSystem);

}  // namespace adamas
