// A Hugging Face model directory (config.json + *.safetensors [+ index] + tokenizer.json) as a GGUF file, the way
// llama.cpp's convert_hf_to_gguf.py would write it (without quantizing): the engine then loads it with the GGUF path
// it already has (LlamaModel::from_gguf(hf_to_gguf(dir)) or LlamaModel::load(path written by write_hf_as_gguf)).
//
// What the conversion does, per llama.cpp:
//  - general.architecture "llama" for llama / mistral, "qwen2" for qwen2; {arch}.context_length,
//    embedding_length, block_count, feed_forward_length, attention.head_count(_kv), attention.key_length /
//    value_length (when head_dim != hidden / heads), attention.layer_norm_rms_epsilon, rope.freq_base,
//    rope.dimension_count, vocab_size, rope.scaling.type/factor for linear scaling;
//  - tensors renamed (hf_to_gguf_tensor_name), weights kept in their dtype (F32/F16/BF16), 1-D tensors (norms,
//    biases) converted to F32; q_proj / k_proj rows (and biases) of llama / mistral permuted for adjacent-pair RoPE
//    (rope_row_permutation; qwen2 is left as is: llama.cpp runs it with NeoX rope); lm_head dropped when
//    tie_word_embeddings; rope_freqs.weight (F32, head_dim/2) added for llama3 rope scaling;
//  - tokenizer.ggml.* from tokenizer.json (+ tokenizer_config.json) when present.
// Tensors that have no GGUF name raise Error(unsupported) naming them (rotary_emb.inv_freq buffers are skipped).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/gguf.h"

namespace adamas {

// The GGUF bytes for the model in `dir` (one copy of the weights in memory).
std::vector<uint8_t> hf_to_gguf_bytes(const std::string& dir);
// Writes the GGUF file to `out_path` (streaming: no copy of the weights in memory).
void write_hf_as_gguf(const std::string& dir, const std::string& out_path);
// The parsed GGUF: written to `cache_path` and mapped when given (weights paged from disk), else built in memory.
GgufFile hf_to_gguf(const std::string& dir, const std::string& cache_path = "");

}  // namespace adamas
