// Hugging Face config.json for the Llama family (llama, mistral) and Qwen2, and the conventions that connect a
// Hugging Face checkpoint to the engine's GGUF-shaped weights (tensor names, the Q/K row permutation for RoPE, the
// llama3 RoPE frequency factors), as llama.cpp's convert_hf_to_gguf.py defines them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "adamas/error.h"  // the functions here throw adamas::Error

namespace adamas {

struct HfRopeScaling {
  std::string type;  // "" (none), "linear" or "llama3" (rope_scaling.rope_type, or .type in older configs)
  double factor = 1.0;
  // llama3 only (defaults as llama.cpp's converter uses them when absent):
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct HfConfig {
  std::string model_type;    // "llama", "mistral" or "qwen2"
  std::string architecture;  // architectures[0], e.g. "LlamaForCausalLM" ("" when absent)
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  HfRopeScaling rope_scaling;
  int64_t max_position_embeddings = 0;
  int64_t vocab_size = 0;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // q_proj/k_proj/v_proj have .bias (qwen2 always; llama with attention_bias)
  bool o_bias = false;    // o_proj has .bias (llama with attention_bias)
  bool mlp_bias = false;  // gate/up/down have .bias (llama mlp_bias) -- the engine has no slot for these
  int64_t sliding_window = 0;  // 0: none (mistral sliding_window; qwen2 only when use_sliding_window)
  std::string torch_dtype;     // informational ("bfloat16", ...)
  int32_t bos_token_id = -1;   // -1 when absent / null
  std::vector<int32_t> eos_token_ids;  // eos_token_id may be one id or a list (Llama 3.1)

  int64_t q_dim() const { return num_attention_heads * head_dim; }
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  int32_t eos_token_id() const { return eos_token_ids.empty() ? -1 : eos_token_ids.front(); }

  // Per rotated pair i < head_dim / 2: the divisor of the frequency base^(-2i/head_dim) -- llama.cpp's
  // rope_freqs.weight tensor, which its converter generates for rope_type "llama3". Empty for other scalings.
  std::vector<float> rope_freq_factors() const;
};

// Parses config.json text; `source` names it in messages. Error(unsupported) for a model_type / architecture other
// than llama, mistral, qwen2 (naming it), an activation other than silu, or a rope_scaling type other than linear /
// llama3; Error(format) for malformed JSON, missing or mistyped fields and absurd values.
HfConfig parse_hf_config(std::string_view json_text, std::string_view source = "config.json");
// Reads a config.json file, or <dir>/config.json when `path` is a directory.
HfConfig load_hf_config(const std::string& path);

// ---------------------------------------------------------------------------------------------------------------
// Connecting HF weights to the engine (GGUF conventions of llama.cpp)
// ---------------------------------------------------------------------------------------------------------------

// The GGUF tensor name of a Hugging Face tensor name, or nullopt when it has none (e.g. rotary_emb.inv_freq):
//   model.embed_tokens.weight -> token_embd.weight       model.norm.weight -> output_norm.weight
//   lm_head.weight -> output.weight
//   model.layers.N.input_layernorm.weight -> blk.N.attn_norm.weight
//   model.layers.N.post_attention_layernorm.weight -> blk.N.ffn_norm.weight
//   model.layers.N.self_attn.{q,k,v,o}_proj.{weight,bias} -> blk.N.attn_{q,k,v,output}.{weight,bias}
//   model.layers.N.mlp.{gate,up,down}_proj.weight -> blk.N.ffn_{gate,up,down}.weight
std::optional<std::string> hf_to_gguf_tensor_name(std::string_view hf_name);

// llama.cpp's converter permutes the rows of q_proj / k_proj (and their biases) of Llama-family models so that
// RoPE rotates adjacent pairs (x[2i], x[2i+1]) ("normal" rope) instead of HF's halves (x[i], x[i + head_dim/2]).
// perm[r] is the HF row that becomes row r:
//   perm[h*head_dim + 2i + j] = h*head_dim + j*head_dim/2 + i   (j in {0,1}, i < head_dim/2)
// for n_heads heads (num_attention_heads for q, num_key_value_heads for k). Qwen2 is not permuted (as in llama.cpp):
// the engine rotates its halves (NeoX rope, RopeType::neox in llama.h).
std::vector<int64_t> rope_row_permutation(int64_t n_heads, int64_t head_dim);
// Copies `rows` rows of `row_bytes` bytes from src to dst in the order of rope_row_permutation(n_heads, head_dim)
// (rows must equal n_heads * head_dim; Error(invalid_argument) otherwise). Works for any element type.
void permute_rope_rows(const void* src, void* dst, int64_t rows, int64_t row_bytes, int64_t n_heads,
                       int64_t head_dim);

}  // namespace adamas
