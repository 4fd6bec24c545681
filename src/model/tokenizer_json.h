// Hugging Face tokenizer.json (+ tokenizer_config.json) -> the engine's Tokenizer (model/tokenizer.h).
//
// Tokenizer is built only from GGUF metadata (Tokenizer::from_gguf), so the loader here translates tokenizer.json
// into the tokenizer.ggml.* keys llama.cpp's converter would write (TokenizerSpec), serializes them as a small
// in-memory GGUF holding no tensors, and hands that to Tokenizer::from_gguf: the same class, the same code paths,
// the same behaviour as a GGUF model (see tokenizer.h for what it supports).
//
// Supported tokenizer.json:
//  - model.type "BPE" with a ByteLevel pre-tokenizer (GPT-2 byte-level BPE: SmolLM2, Llama 3, Qwen2):
//      pre_tokenizer ByteLevel(use_regex: true)                          -> tokenizer.ggml.pre "gpt2"
//      Sequence[Digits(individual_digits: true), ByteLevel(use_regex)]   -> "smollm" (digits alone, then GPT-2)
//      Sequence[Split(Llama 3 regex), ByteLevel(use_regex: false)]       -> "llama-bpe"
//      Sequence[Split(Qwen2 regex), ByteLevel(use_regex: false)]         -> "qwen2"
//    (the last two are recognized and passed on; Tokenizer raises Error(unsupported) for them until it implements
//    those splits). A NFC normalizer is accepted and, as in llama.cpp, not applied.
//  - model.type "BPE" with byte_fallback / Metaspace / Prepend+Replace("▁") normalizer (Llama 2 / Mistral
//    SentencePiece-style BPE) -> tokenizer.ggml.model "llama": scores are derived from the merge order (a token's
//    score is minus the rank of the first merge producing it; HF's conversion of a SentencePiece model lists the
//    merges in score order, so the merge priority is the same), <0xXX> tokens are byte tokens.
//  - model.merges in both forms: "a b" strings and ["a", "b"] pairs.
//  - added_tokens: special -> control tokens, others -> user-defined (as llama.cpp's converter, a token that looks
//    special, "<|...|>", is control too).
// Anything else (WordPiece, Unigram, unknown pre-tokenizers or normalizers) raises Error(unsupported) naming it;
// malformed JSON / vocabularies raise Error(format).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/tokenizer.h"

namespace adamas {

struct HfConfig;

// The tokenizer.ggml.* metadata equivalent to a tokenizer.json.
struct TokenizerSpec {
  std::string model;                // tokenizer.ggml.model: "gpt2" or "llama"
  std::string pre;                  // tokenizer.ggml.pre (gpt2 only)
  std::vector<std::string> tokens;  // by id
  std::vector<int32_t> token_types; // TokenType values, by id
  std::vector<std::string> merges;  // "left right", in rank order (gpt2 only)
  std::vector<float> scores;        // by id (llama only)
  int32_t bos_id = -1, eos_id = -1, unk_id = -1;
  std::optional<bool> add_bos;           // tokenizer.ggml.add_bos_token (Tokenizer's default when unset)
  std::optional<bool> add_space_prefix;  // tokenizer.ggml.add_space_prefix (llama only)
};

struct HfTokenizerOptions {
  // Pad the vocabulary to this many tokens with "[PAD<i>]" user-defined tokens (config.json vocab_size, the rows
  // of the embedding matrix, is often larger than the tokenizer's vocabulary). 0: as the file.
  int64_t vocab_size = 0;
  // Fallback BOS / EOS ids (config.json) when tokenizer_config.json does not name them.
  int32_t bos_id = -1, eos_id = -1;
  // Text of tokenizer_config.json (bos_token, eos_token, unk_token, add_bos_token), when there is one.
  std::optional<std::string> tokenizer_config_json;
};

// tokenizer.json text -> spec; `source` names it in messages.
TokenizerSpec tokenizer_spec_from_json(std::string_view tokenizer_json, std::string_view source = "tokenizer.json",
                                       const HfTokenizerOptions& options = {});
// The spec as the bytes of a GGUF file with no tensors (tokenizer.ggml.* keys only).
std::vector<uint8_t> tokenizer_spec_to_gguf(const TokenizerSpec& spec);
// Just the serialized GGUF key-value entries (key, type, value; no file header), and their count in *n_kv: for
// writers that put the tokenizer into a larger GGUF (hf_model.h).
std::vector<uint8_t> tokenizer_spec_gguf_kv(const TokenizerSpec& spec, uint64_t* n_kv);
// The Tokenizer for a spec (through tokenizer_spec_to_gguf and Tokenizer::from_gguf).
Tokenizer tokenizer_from_spec(const TokenizerSpec& spec, std::string_view source = "tokenizer.json");
// tokenizer.json text -> Tokenizer.
Tokenizer tokenizer_from_json(std::string_view tokenizer_json, std::string_view source = "tokenizer.json",
                              const HfTokenizerOptions& options = {});
// Reads <dir>/tokenizer.json, and <dir>/tokenizer_config.json when present; `config` (may be null) supplies
// vocab_size and the BOS/EOS fallbacks. `path` may also name the tokenizer.json file itself.
Tokenizer load_hf_tokenizer(const std::string& path, const HfConfig* config = nullptr);
// The same, stopping at the spec.
TokenizerSpec load_hf_tokenizer_spec(const std::string& path, const HfConfig* config = nullptr);

}  // namespace adamas
