// config.json parsing (Llama / SmolLM2, Llama 3.1 rope scaling, linear scaling, Mistral, Qwen2, rejections) and the
// HF -> GGUF conventions (tensor names, RoPE row permutation).
#include "model/hf_config.h"
#include "model/hf_model.h"
#include "model/tokenizer.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <tuple>

namespace adamas {
namespace {

// SmolLM2-135M-Instruct's config.json.
constexpr const char* kSmolLM2 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 1,
  "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.041666666666666664,
  "intermediate_size": 1536, "is_llama_config": true, "max_position_embeddings": 8192, "model_type": "llama",
  "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3, "pad_token_id": 2,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_interleaved": false, "rope_scaling": null, "rope_theta": 100000,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.42.3", "use_cache": true,
  "vocab_size": 49152})";

// Llama-3.1-8B's config.json.
constexpr const char* kLlama31 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
  "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true,
  "vocab_size": 128256})";

// Qwen2-0.5B-Instruct's config.json.
constexpr const char* kQwen2 = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
  "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02, "intermediate_size": 4864,
  "max_position_embeddings": 32768, "max_window_layers": 24, "model_type": "qwen2", "num_attention_heads": 14,
  "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_cache": true,
  "use_sliding_window": false, "vocab_size": 151936})";

// Mistral-7B-v0.1's config.json.
constexpr const char* kMistral = R"({
  "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
  "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
  "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "vocab_size": 32000})";

std::pair<ErrorKind, std::string> error_of(const std::string& text) {
  try {
    parse_hf_config(text, "cfg.json");
  } catch (const Error& e) {
    return {e.kind(), e.what()};
  }
  return {ErrorKind::invalid_argument, "no error"};
}

#define EXPECT_CONFIG_ERROR(text, kind_, fragment)                                               \
  do {                                                                                           \
    const auto [k, msg] = error_of(text);                                                        \
    EXPECT_EQ(k, kind_) << msg;                                                                  \
    EXPECT_NE(msg.find("cfg.json"), std::string::npos) << msg;                                   \
    EXPECT_NE(msg.find(fragment), std::string::npos) << "expected '" << fragment << "' in: " << msg; \
  } while (0)

// kSmolLM2 with one "key": value replaced (or added with `"key": value` when absent).
std::string with(const std::string& base, const std::string& key, const std::string& value) {
  std::string s = base;
  const std::string k = "\"" + key + "\": ";
  const size_t p = s.find(k);
  if (p == std::string::npos) return "{" + k + value + ", " + s.substr(s.find('{') + 1);
  size_t end = p + k.size();
  int depth = 0;
  while (end < s.size()) {
    const char c = s[end];
    if (c == '{' || c == '[') ++depth;
    if (c == '}' || c == ']') {
      if (depth == 0) break;
      --depth;
    }
    if (c == ',' && depth == 0) break;
    ++end;
  }
  return s.substr(0, p + k.size()) + value + s.substr(end);
}

TEST(hf_config, smollm2) {
  const HfConfig c = parse_hf_config(kSmolLM2);
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_hidden_layers, 30);
  EXPECT_EQ(c.num_attention_heads, 9);
  EXPECT_EQ(c.num_key_value_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.q_dim(), 576);
  EXPECT_EQ(c.kv_dim(), 192);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 100000.0);
  EXPECT_TRUE(c.rope_scaling.type.empty());
  EXPECT_TRUE(c.rope_freq_factors().empty());
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{2}));
  EXPECT_EQ(c.eos_token_id(), 2);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(c.sliding_window, 0);
}

TEST(hf_config, llama31_rope_scaling) {
  const HfConfig c = parse_hf_config(kLlama31);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_FALSE(c.tie_word_embeddings);

  const auto f = c.rope_freq_factors();
  ASSERT_EQ(f.size(), 64u);
  // Independent restatement of Meta's apply_scaling (reference/llama/model.py) in double precision.
  for (size_t i = 0; i < f.size(); ++i) {
    const double freq = std::pow(500000.0, -double(2 * i) / 128.0);
    const double wavelen = 2 * M_PI / freq;
    double expect;
    if (wavelen < 8192.0 / 4.0) expect = 1.0;
    else if (wavelen > 8192.0 / 1.0) expect = 8.0;
    else {
      const double smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
      expect = 1.0 / ((1 - smooth) / 8.0 + smooth);  // freq / new_freq
    }
    EXPECT_NEAR(f[i], expect, 1e-4 * expect) << i;
  }
  EXPECT_EQ(f.front(), 1.0f);
  EXPECT_EQ(f.back(), 8.0f);
  for (size_t i = 1; i < f.size(); ++i) EXPECT_GE(f[i], f[i - 1]);

  // Defaults of the llama3 fields, and the older "type" key.
  const HfConfig d = parse_hf_config(with(kSmolLM2, "rope_scaling", R"({"type": "llama3"})"));
  EXPECT_EQ(d.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(d.rope_scaling.factor, 8.0);
  EXPECT_EQ(d.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(d.rope_freq_factors().size(), 32u);
}

TEST(hf_config, linear_and_default_rope_scaling) {
  const HfConfig c = parse_hf_config(with(kSmolLM2, "rope_scaling", R"({"type": "linear", "factor": 4.0})"));
  EXPECT_EQ(c.rope_scaling.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 4.0);
  EXPECT_TRUE(c.rope_freq_factors().empty());
  const HfConfig d = parse_hf_config(with(kSmolLM2, "rope_scaling", R"({"rope_type": "default"})"));
  EXPECT_TRUE(d.rope_scaling.type.empty());
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "rope_scaling", R"({"type": "linear"})"), ErrorKind::format, "factor");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "rope_scaling", R"({"type": "yarn", "factor": 4.0})"), ErrorKind::unsupported,
                      "yarn");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "rope_scaling", R"({"type": "dynamic", "factor": 2.0})"),
                      ErrorKind::unsupported, "dynamic");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "rope_scaling", R"({"factor": 2.0})"), ErrorKind::format, "rope_type");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "rope_scaling", "3"), ErrorKind::format, "rope_scaling");
  EXPECT_CONFIG_ERROR(
      with(kSmolLM2, "rope_scaling", R"({"rope_type": "llama3", "low_freq_factor": 4.0, "high_freq_factor": 1.0})"),
      ErrorKind::format, "high_freq_factor");
}

TEST(hf_config, qwen2_and_mistral) {
  const HfConfig q = parse_hf_config(kQwen2);
  EXPECT_EQ(q.model_type, "qwen2");
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_FALSE(q.o_bias);
  EXPECT_EQ(q.head_dim, 64);
  EXPECT_EQ(q.num_key_value_heads, 2);
  EXPECT_DOUBLE_EQ(q.rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(q.rms_norm_eps, 1e-6);
  EXPECT_TRUE(q.tie_word_embeddings);
  EXPECT_EQ(q.sliding_window, 0);  // use_sliding_window false
  EXPECT_EQ(q.eos_token_id(), 151645);
  EXPECT_EQ(parse_hf_config(with(kQwen2, "use_sliding_window", "true")).sliding_window, 32768);

  const HfConfig m = parse_hf_config(kMistral);
  EXPECT_EQ(m.model_type, "mistral");
  EXPECT_EQ(m.sliding_window, 4096);
  EXPECT_FALSE(m.qkv_bias);
  EXPECT_EQ(m.head_dim, 128);

  // Llama with attention_bias: q/k/v and o biases.
  const HfConfig b = parse_hf_config(with(kSmolLM2, "attention_bias", "true"));
  EXPECT_TRUE(b.qkv_bias);
  EXPECT_TRUE(b.o_bias);
}

TEST(hf_config, defaults_and_optional_fields) {
  // Minimal: model_type only, no architectures; defaults for kv heads, head_dim, eps, theta, ids.
  const HfConfig c = parse_hf_config(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100})");
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_EQ(c.bos_token_id, -1);
  EXPECT_EQ(c.eos_token_id(), -1);
  EXPECT_FALSE(c.tie_word_embeddings);
  // Architectures only.
  EXPECT_EQ(parse_hf_config(with(kSmolLM2, "model_type", "null")).model_type, "llama");
  // Explicit head_dim different from hidden / heads (e.g. Mistral Nemo).
  const HfConfig h = parse_hf_config(with(kSmolLM2, "head_dim", "128"));
  EXPECT_EQ(h.head_dim, 128);
  EXPECT_EQ(h.q_dim(), 9 * 128);
  // null token ids.
  EXPECT_EQ(parse_hf_config(with(kSmolLM2, "bos_token_id", "null")).bos_token_id, -1);
}

TEST(hf_config, rejects_other_architectures_by_name) {
  EXPECT_CONFIG_ERROR(with(with(kSmolLM2, "model_type", "\"gpt2\""), "architectures", R"(["GPT2LMHeadModel"])"),
                      ErrorKind::unsupported, "GPT2LMHeadModel");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "architectures", R"(["MixtralForCausalLM"])"), ErrorKind::unsupported,
                      "MixtralForCausalLM");
  EXPECT_CONFIG_ERROR(with(with(kSmolLM2, "model_type", "\"gemma\""), "architectures", "null"),
                      ErrorKind::unsupported, "gemma");
  // model_type and architectures that disagree.
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "model_type", "\"qwen2\""), ErrorKind::unsupported, "LlamaForCausalLM");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "hidden_act", "\"gelu\""), ErrorKind::unsupported, "gelu");
}

TEST(hf_config, malformed) {
  EXPECT_CONFIG_ERROR("{\"model_type\": ", ErrorKind::format, "malformed JSON");
  EXPECT_CONFIG_ERROR("[]", ErrorKind::format, "not an object");
  EXPECT_CONFIG_ERROR("{}", ErrorKind::format, "model_type");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "architectures", "[]"), ErrorKind::format, "architectures");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "model_type", "3"), ErrorKind::format, "model_type");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "hidden_size", "null"), ErrorKind::format, "missing \"hidden_size\"");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "hidden_size", "\"576\""), ErrorKind::format, "hidden_size");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "hidden_size", "576.5"), ErrorKind::format, "hidden_size");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "hidden_size", "0"), ErrorKind::format, "out of range");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "hidden_size", "-576"), ErrorKind::format, "out of range");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "hidden_size", "18446744073709551615"), ErrorKind::format, "out of range");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "num_hidden_layers", "1000000"), ErrorKind::format, "num_hidden_layers");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "num_key_value_heads", "4"), ErrorKind::format, "not a multiple");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "num_attention_heads", "7"), ErrorKind::format, "not a multiple");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "head_dim", "63"), ErrorKind::format, "odd");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "rms_norm_eps", "-1"), ErrorKind::format, "rms_norm_eps");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "rope_theta", "\"big\""), ErrorKind::format, "rope_theta");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "tie_word_embeddings", "1"), ErrorKind::format, "tie_word_embeddings");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "eos_token_id", "[2, -1]"), ErrorKind::format, "eos_token_id");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "bos_token_id", "\"<s>\""), ErrorKind::format, "bos_token_id");
  EXPECT_CONFIG_ERROR(with(kSmolLM2, "vocab_size", "0"), ErrorKind::format, "vocab_size");
}

TEST(hf_config, load_from_directory_or_file) {
  const auto dir = std::filesystem::temp_directory_path() / ("adamas_cfg_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << kQwen2;
  EXPECT_EQ(load_hf_config(dir.string()).model_type, "qwen2");
  EXPECT_EQ(load_hf_config((dir / "config.json").string()).hidden_size, 896);
  std::filesystem::remove_all(dir);
  try {
    load_hf_config(dir.string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
  }
}

TEST(hf_config, gguf_tensor_names) {
  auto n = [](std::string_view s) { return hf_to_gguf_tensor_name(s).value_or("<none>"); };
  EXPECT_EQ(n("model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(n("model.norm.weight"), "output_norm.weight");
  EXPECT_EQ(n("lm_head.weight"), "output.weight");
  EXPECT_EQ(n("model.layers.0.input_layernorm.weight"), "blk.0.attn_norm.weight");
  EXPECT_EQ(n("model.layers.29.post_attention_layernorm.weight"), "blk.29.ffn_norm.weight");
  EXPECT_EQ(n("model.layers.3.self_attn.q_proj.weight"), "blk.3.attn_q.weight");
  EXPECT_EQ(n("model.layers.3.self_attn.k_proj.bias"), "blk.3.attn_k.bias");
  EXPECT_EQ(n("model.layers.3.self_attn.v_proj.weight"), "blk.3.attn_v.weight");
  EXPECT_EQ(n("model.layers.3.self_attn.o_proj.weight"), "blk.3.attn_output.weight");
  EXPECT_EQ(n("model.layers.12.mlp.gate_proj.weight"), "blk.12.ffn_gate.weight");
  EXPECT_EQ(n("model.layers.12.mlp.up_proj.weight"), "blk.12.ffn_up.weight");
  EXPECT_EQ(n("model.layers.12.mlp.down_proj.weight"), "blk.12.ffn_down.weight");
  EXPECT_EQ(n("model.layers.0.self_attn.rotary_emb.inv_freq"), "<none>");
  EXPECT_EQ(n("model.layers..mlp.up_proj.weight"), "<none>");
  EXPECT_EQ(n("model.layers.01.mlp.up_proj.weight"), "<none>");
  EXPECT_EQ(n("model.layers.x.mlp.up_proj.weight"), "<none>");
  EXPECT_EQ(n("something.else"), "<none>");
}

// The permutation turns HF's rotate-half RoPE into adjacent-pair RoPE: q.k after rotation is the same.
TEST(hf_config, rope_row_permutation_matches_rotate_half) {
  EXPECT_EQ(rope_row_permutation(2, 4), (std::vector<int64_t>{0, 2, 1, 3, 4, 6, 5, 7}));
  const int64_t n_heads = 3, hd = 8, half = hd / 2, in = 5, rows = n_heads * hd;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  std::vector<float> w(static_cast<size_t>(rows * in)), x(static_cast<size_t>(in)), wp(w.size());
  for (auto& v : w) v = nd(rng);
  for (auto& v : x) v = nd(rng);
  permute_rope_rows(w.data(), wp.data(), rows, in * 4, n_heads, hd);
  auto matvec = [&](const std::vector<float>& m) {
    std::vector<double> y(size_t(rows), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < in; ++c) y[size_t(r)] += double(m[size_t(r * in + c)]) * x[size_t(c)];
    return y;
  };
  auto hf = matvec(w), gg = matvec(wp);
  const int64_t pos = 11;
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t i = 0; i < half; ++i) {
      const double th = pos * std::pow(10000.0, -2.0 * double(i) / double(hd));
      const double c = std::cos(th), s = std::sin(th);
      // HF rotate_half: (x[i], x[i + half]).
      double& a = hf[size_t(h * hd + i)];
      double& b = hf[size_t(h * hd + i + half)];
      const double a2 = a * c - b * s, b2 = b * c + a * s;
      a = a2, b = b2;
      // GGUF normal rope: (x[2i], x[2i + 1]).
      double& p = gg[size_t(h * hd + 2 * i)];
      double& q = gg[size_t(h * hd + 2 * i + 1)];
      const double p2 = p * c - q * s, q2 = q * c + p * s;
      p = p2, q = q2;
    }
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j)
        EXPECT_NEAR(gg[size_t(h * hd + 2 * i + j)], hf[size_t(h * hd + j * half + i)], 1e-9);
  EXPECT_THROW(permute_rope_rows(w.data(), wp.data(), rows + 1, in * 4, n_heads, hd), Error);
  EXPECT_THROW(rope_row_permutation(2, 5), Error);
}

// ---------------------------------------------------------------------------------------------------------------
// A tiny HF model directory converted to GGUF (hf_model.h).
// ---------------------------------------------------------------------------------------------------------------

struct TinyHf {
  std::filesystem::path dir;
  // hidden 8, 2 heads of 4, 1 KV head, ffn 12, 1 layer, vocab 6.
  static constexpr int64_t H = 8, NH = 2, NKV = 1, HD = 4, FF = 12, V = 6;
  std::map<std::string, std::vector<float>> values;  // HF name -> values (row-major, HF shape)

  explicit TinyHf(const std::string& config_json, bool with_lm_head, bool qkv_bias) {
    dir = std::filesystem::temp_directory_path() / ("adamas_hf_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "config.json") << config_json;
    std::vector<std::tuple<std::string, std::vector<int64_t>>> specs = {
        {"model.embed_tokens.weight", {V, H}},
        {"model.norm.weight", {H}},
        {"model.layers.0.input_layernorm.weight", {H}},
        {"model.layers.0.post_attention_layernorm.weight", {H}},
        {"model.layers.0.self_attn.q_proj.weight", {NH * HD, H}},
        {"model.layers.0.self_attn.k_proj.weight", {NKV * HD, H}},
        {"model.layers.0.self_attn.v_proj.weight", {NKV * HD, H}},
        {"model.layers.0.self_attn.o_proj.weight", {H, NH * HD}},
        {"model.layers.0.mlp.gate_proj.weight", {FF, H}},
        {"model.layers.0.mlp.up_proj.weight", {FF, H}},
        {"model.layers.0.mlp.down_proj.weight", {H, FF}},
        {"model.layers.0.self_attn.rotary_emb.inv_freq", {HD / 2}},
    };
    if (with_lm_head) specs.push_back({"lm_head.weight", {V, H}});
    if (qkv_bias) {
      specs.push_back({"model.layers.0.self_attn.q_proj.bias", {NH * HD}});
      specs.push_back({"model.layers.0.self_attn.k_proj.bias", {NKV * HD}});
      specs.push_back({"model.layers.0.self_attn.v_proj.bias", {NKV * HD}});
    }
    // Two shards: BF16 matrices (values exact in bf16: small multiples of 1/8), F32 1-D tensors.
    nlohmann::json h1 = nlohmann::json::object(), h2 = nlohmann::json::object(), wm = nlohmann::json::object();
    std::vector<uint8_t> d1, d2;
    int k = 0;
    for (const auto& [name, shape] : specs) {
      int64_t n = 1;
      for (int64_t x : shape) n *= x;
      std::vector<float> v(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) v[size_t(i)] = float((i * 7 + k * 3) % 17 - 8) / 8.0f;
      ++k;
      values[name] = v;
      const bool matrix = shape.size() == 2;
      auto& data = matrix ? d1 : d2;
      auto& hdr = matrix ? h1 : h2;
      const size_t begin = data.size();
      for (float f : v) {
        if (matrix) {
          uint32_t u;
          std::memcpy(&u, &f, 4);
          const uint16_t b = uint16_t(u >> 16);
          data.push_back(uint8_t(b)), data.push_back(uint8_t(b >> 8));
        } else {
          const auto* p = reinterpret_cast<const uint8_t*>(&f);
          data.insert(data.end(), p, p + 4);
        }
      }
      hdr[name] = {{"dtype", matrix ? "BF16" : "F32"}, {"shape", shape}, {"data_offsets", {begin, data.size()}}};
      wm[name] = matrix ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    }
    auto write = [&](const std::string& file, const nlohmann::json& hdr, const std::vector<uint8_t>& data) {
      std::string t = hdr.dump();
      while (t.size() % 8) t += ' ';
      const uint64_t len = t.size();
      std::ofstream out(dir / file, std::ios::binary);
      out.write(reinterpret_cast<const char*>(&len), 8);
      out << t;
      out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
    };
    write("model-00001-of-00002.safetensors", h1, d1);
    write("model-00002-of-00002.safetensors", h2, d2);
    std::ofstream(dir / "model.safetensors.index.json") << nlohmann::json{{"weight_map", wm}}.dump();
    // Tokenizer: byte-level, 6 tokens.
    nlohmann::json vocab = {{"<s>", 0}, {"a", 1}, {"b", 2}, {"ab", 3}, {"\xC4\xA0", 4}, {"\xC4\xA0" "a", 5}};
    nlohmann::json tok = {
        {"added_tokens", {{{"id", 0}, {"content", "<s>"}, {"special", true}}}},
        {"normalizer", nullptr},
        {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array({"a b", "\xC4\xA0 a"})}}}};
    std::ofstream(dir / "tokenizer.json") << tok.dump();
  }
  ~TinyHf() { std::filesystem::remove_all(dir); }
};

constexpr const char* kTinyConfig = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1, "num_attention_heads": 2,
  "num_key_value_heads": 1, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "max_position_embeddings": 1024,
  "vocab_size": 6, "tie_word_embeddings": true, "bos_token_id": 0, "eos_token_id": 0,
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 64}})";

TEST(hf_model, tiny_llama_converts_to_gguf) {
  const TinyHf m(kTinyConfig, /*with_lm_head=*/true, /*qkv_bias=*/false);
  for (const std::string& cache : {std::string(), (m.dir / "converted.gguf").string()}) {
    const GgufFile f = hf_to_gguf(m.dir.string(), cache);
    EXPECT_EQ(f.get_string("general.architecture"), "llama");
    EXPECT_EQ(f.get_int("llama.embedding_length"), 8);
    EXPECT_EQ(f.get_int("llama.block_count"), 1);
    EXPECT_EQ(f.get_int("llama.feed_forward_length"), 12);
    EXPECT_EQ(f.get_int("llama.attention.head_count"), 2);
    EXPECT_EQ(f.get_int("llama.attention.head_count_kv"), 1);
    EXPECT_EQ(f.get_int("llama.rope.dimension_count"), 4);
    EXPECT_EQ(f.get_int("llama.context_length"), 1024);
    EXPECT_EQ(f.get_int("llama.vocab_size"), 6);
    EXPECT_FLOAT_EQ(float(f.get_float("llama.rope.freq_base")), 500000.0f);
    EXPECT_FLOAT_EQ(float(f.get_float("llama.attention.layer_norm_rms_epsilon")), 1e-5f);
    EXPECT_FALSE(f.has("llama.attention.key_length"));
    EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
    const Tokenizer tok = Tokenizer::from_gguf(f);
    EXPECT_EQ(tok.encode("ab a"), (std::vector<int32_t>{3, 5}));
    EXPECT_EQ(tok.bos_id(), 0);

    // Tied: no output.weight; no inv_freq buffer; llama3 scaling as rope_freqs.weight.
    EXPECT_EQ(f.find_tensor("output.weight"), nullptr);
    EXPECT_EQ(f.tensors().size(), 11u + 1u);
    const GgufTensor& rf = f.tensor("rope_freqs.weight");
    EXPECT_EQ(rf.type, GgmlType::F32);
    const auto factors = parse_hf_config(kTinyConfig).rope_freq_factors();
    ASSERT_EQ(rf.n_elements, 2);
    for (int i = 0; i < 2; ++i) {
      float x;
      std::memcpy(&x, rf.data + 4 * i, 4);
      EXPECT_EQ(x, factors[size_t(i)]);
    }

    auto row_values = [](const GgufTensor& t, int64_t r) {
      std::vector<float> out(static_cast<size_t>(t.row_length()));
      dequantize_row(t.type, t.row(r), out.data(), t.row_length());
      return out;
    };
    auto hf_row = [&](const std::string& name, int64_t r, int64_t cols) {
      const auto& v = m.values.at(name);
      return std::vector<float>(v.begin() + r * cols, v.begin() + (r + 1) * cols);
    };
    // Matrices: same dtype, ggml shape {in, out}; q/k rows permuted, others as is.
    const GgufTensor& emb = f.tensor("token_embd.weight");
    EXPECT_EQ(emb.type, GgmlType::BF16);
    EXPECT_EQ(emb.shape, (std::vector<int64_t>{8, 6}));
    EXPECT_EQ(row_values(emb, 4), hf_row("model.embed_tokens.weight", 4, 8));
    const GgufTensor& wq = f.tensor("blk.0.attn_q.weight");
    EXPECT_EQ(wq.shape, (std::vector<int64_t>{8, 8}));
    const auto pq = rope_row_permutation(2, 4);
    for (int64_t r = 0; r < 8; ++r)
      EXPECT_EQ(row_values(wq, r), hf_row("model.layers.0.self_attn.q_proj.weight", pq[size_t(r)], 8)) << r;
    const GgufTensor& wk = f.tensor("blk.0.attn_k.weight");
    const auto pk = rope_row_permutation(1, 4);
    EXPECT_EQ(pk, (std::vector<int64_t>{0, 2, 1, 3}));
    for (int64_t r = 0; r < 4; ++r)
      EXPECT_EQ(row_values(wk, r), hf_row("model.layers.0.self_attn.k_proj.weight", pk[size_t(r)], 8)) << r;
    const GgufTensor& wv = f.tensor("blk.0.attn_v.weight");
    EXPECT_EQ(row_values(wv, 1), hf_row("model.layers.0.self_attn.v_proj.weight", 1, 8));
    const GgufTensor& down = f.tensor("blk.0.ffn_down.weight");
    EXPECT_EQ(down.shape, (std::vector<int64_t>{12, 8}));
    EXPECT_EQ(row_values(down, 7), hf_row("model.layers.0.mlp.down_proj.weight", 7, 12));
    const GgufTensor& norm = f.tensor("blk.0.attn_norm.weight");
    EXPECT_EQ(norm.type, GgmlType::F32);
    EXPECT_EQ(row_values(norm, 0), m.values.at("model.layers.0.input_layernorm.weight"));
    EXPECT_NE(f.find_tensor("output_norm.weight"), nullptr);
    EXPECT_NE(f.find_tensor("blk.0.ffn_gate.weight"), nullptr);
    EXPECT_NE(f.find_tensor("blk.0.ffn_up.weight"), nullptr);
    EXPECT_NE(f.find_tensor("blk.0.ffn_norm.weight"), nullptr);
    EXPECT_NE(f.find_tensor("blk.0.attn_output.weight"), nullptr);
  }
}

TEST(hf_model, qwen2_keeps_rows_and_converts_biases) {
  std::string cfg = kTinyConfig;
  cfg.replace(cfg.find("LlamaForCausalLM"), 16, "Qwen2ForCausalLM");
  cfg.replace(cfg.find("\"llama\""), 7, "\"qwen2\"");
  cfg.replace(cfg.find("\"tie_word_embeddings\": true"), 27, "\"tie_word_embeddings\": false");
  const TinyHf m(cfg, /*with_lm_head=*/true, /*qkv_bias=*/true);
  const GgufFile f = hf_to_gguf(m.dir.string());
  EXPECT_EQ(f.get_string("general.architecture"), "qwen2");
  EXPECT_EQ(f.get_int("qwen2.block_count"), 1);
  EXPECT_NE(f.find_tensor("output.weight"), nullptr);
  const GgufTensor& bq = f.tensor("blk.0.attn_q.bias");
  EXPECT_EQ(bq.type, GgmlType::F32);
  std::vector<float> got(8);
  std::memcpy(got.data(), bq.data, 32);
  EXPECT_EQ(got, m.values.at("model.layers.0.self_attn.q_proj.bias"));  // qwen2: not permuted (NeoX rope)
  const GgufTensor& wq = f.tensor("blk.0.attn_q.weight");
  std::vector<float> row(8);
  dequantize_row(wq.type, wq.row(1), row.data(), 8);
  const auto& v = m.values.at("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(row, std::vector<float>(v.begin() + 8, v.begin() + 16));
}

TEST(hf_model, rejects_unknown_tensors) {
  const TinyHf m(kTinyConfig, true, true);  // llama without attention_bias, but bias tensors present: mapped
  EXPECT_NO_THROW(hf_to_gguf(m.dir.string()));
  // An extra tensor with no GGUF name.
  std::string idx;
  {
    std::ifstream in(m.dir / "model.safetensors.index.json");
    idx.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto j = nlohmann::json::parse(idx);
  // Rewrite shard 2 with an extra tensor.
  const float x[2] = {1, 2};
  nlohmann::json hdr = {{"model.layers.0.mlp.gate_proj.bias", {{"dtype", "F32"}, {"shape", {2}},
                                                               {"data_offsets", {0, 8}}}}};
  std::string t = hdr.dump();
  const uint64_t len = t.size();
  std::ofstream out(m.dir / "extra.safetensors", std::ios::binary);
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << t;
  out.write(reinterpret_cast<const char*>(x), 8);
  out.close();
  j["weight_map"]["model.layers.0.mlp.gate_proj.bias"] = "extra.safetensors";
  std::ofstream(m.dir / "model.safetensors.index.json") << j.dump();
  try {
    hf_to_gguf(m.dir.string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::unsupported);
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.gate_proj.bias"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace adamas
