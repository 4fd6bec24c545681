// A Hugging Face checkpoint through the converter (src/model/hf_model.*) into the engine: a tiny random Qwen2
// written as config.json + model.safetensors must give the logits of the fp64 reference of the same weights (q/k/v
// biases, rope over halves: the converter keeps Qwen2's rows and the engine rotates them NeoX-style), and a Llama
// the same with the converter's row permutation for adjacent-pair rope.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "engine/session.h"
#include "model/hf_config.h"
#include "model/hf_model.h"
#include "model/llama.h"
#include "tiny_model.h"

namespace adamas {
namespace {

// GGUF tensor name of the tiny model -> the Hugging Face name.
std::string hf_name(const std::string& gguf) {
  static const std::pair<const char*, const char*> kLayer[] = {
      {"attn_norm.weight", "input_layernorm.weight"}, {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},   {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},   {"attn_output.weight", "self_attn.o_proj.weight"},
      {"attn_q.bias", "self_attn.q_proj.bias"},       {"attn_k.bias", "self_attn.k_proj.bias"},
      {"attn_v.bias", "self_attn.v_proj.bias"},       {"ffn_gate.weight", "mlp.gate_proj.weight"},
      {"ffn_up.weight", "mlp.up_proj.weight"},        {"ffn_down.weight", "mlp.down_proj.weight"}};
  if (gguf == "token_embd.weight") return "model.embed_tokens.weight";
  if (gguf == "output.weight") return "lm_head.weight";
  if (gguf == "output_norm.weight") return "model.norm.weight";
  const size_t dot = gguf.find('.', 4);  // "blk.N."
  for (const auto& [g, h] : kLayer)
    if (gguf.substr(dot + 1) == g) return "model.layers." + gguf.substr(4, dot - 4) + "." + h;
  ADD_FAILURE() << "no HF name for " << gguf;
  return gguf;
}

// Writes the tiny model as a Hugging Face directory (F32 safetensors) and returns the directory.
std::filesystem::path write_hf(const test::TinyModel& m, const std::string& tag) {
  const test::TinySpec& s = m.spec;
  // The pid keeps test runs of several build trees at once apart.
  const auto dir = std::filesystem::temp_directory_path() /
                   ("adamas_hf_forward_" + tag + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const bool qwen2 = s.arch == "qwen2";
  std::ofstream(dir / "config.json")
      << "{\"architectures\": [\"" << (qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM") << "\"], \"model_type\": \""
      << s.arch << "\", \"hidden_size\": " << s.dim << ", \"intermediate_size\": " << s.ffn
      << ", \"num_hidden_layers\": " << s.layers << ", \"num_attention_heads\": " << s.heads
      << ", \"num_key_value_heads\": " << s.kv_heads << ", \"rms_norm_eps\": " << s.eps
      << ", \"rope_theta\": " << s.rope_base << ", \"max_position_embeddings\": " << s.context
      << ", \"vocab_size\": " << s.vocab << ", \"tie_word_embeddings\": false, \"hidden_act\": \"silu\""
      << (s.qkv_bias && !qwen2 ? ", \"attention_bias\": true" : "") << "}";
  std::string header = "{";
  std::vector<uint8_t> data;
  const int64_t hd = m.head_dim();
  for (const auto& [name, v] : m.w) {
    const bool vec = name.find("norm") != std::string::npos || name.find("bias") != std::string::npos;
    int64_t rows = 0, cols = 0;
    if (name == "token_embd.weight" || name == "output.weight") rows = s.vocab, cols = s.dim;
    else if (name.find("attn_q.") != std::string::npos) rows = s.heads * hd, cols = s.dim;
    else if (name.find("attn_k.") != std::string::npos || name.find("attn_v.") != std::string::npos)
      rows = s.kv_heads * hd, cols = s.dim;
    else if (name.find("attn_output") != std::string::npos || name.find("ffn_down") != std::string::npos)
      rows = s.dim, cols = int64_t(v.size()) / s.dim;
    else rows = int64_t(v.size()) / s.dim, cols = s.dim;
    const std::string shape = vec ? std::to_string(v.size()) : std::to_string(rows) + ", " + std::to_string(cols);
    header += (header.size() > 1 ? ", \"" : "\"") + hf_name(name) + "\": {\"dtype\": \"F32\", \"shape\": [" + shape +
              "], \"data_offsets\": [" + std::to_string(data.size()) + ", " +
              std::to_string(data.size() + v.size() * 4) + "]}";
    // Llama checkpoints hold Q/K rows in HF's order (rope over halves); the converter permutes them to the GGUF
    // order the tiny model is written in (perm[r] = the HF row that becomes row r), so write them un-permuted.
    std::vector<float> hf(v);
    const bool qk = name.find("attn_q.") != std::string::npos || name.find("attn_k.") != std::string::npos;
    if (!qwen2 && qk) {
      const int64_t width = vec ? 1 : cols, heads = rows / hd;
      const auto perm = rope_row_permutation(heads, hd);
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(&hf[size_t(perm[size_t(r)] * width)], &v[size_t(r * width)], size_t(width) * 4);
    }
    const auto* p = reinterpret_cast<const uint8_t*>(hf.data());
    data.insert(data.end(), p, p + hf.size() * 4);
  }
  header += "}";
  while (header.size() % 8) header += ' ';
  const uint64_t len = header.size();
  std::ofstream out(dir / "model.safetensors", std::ios::binary);
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << header;
  out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
  return dir;
}

TEST(hf_forward, qwen2_and_llama_checkpoints_match_fp64_reference) {
  const std::vector<int32_t> tokens{3, 17, 5, 39, 0, 22, 8, 8, 30, 1, 12, 25};
  for (const char* arch : {"qwen2", "llama"}) {
    test::TinySpec s;
    s.arch = arch;
    s.qkv_bias = true;
    const auto m = test::make_tiny_model(s);
    const auto ref = test::reference_logits(m, tokens);
    const auto dir = write_hf(m, arch);
    const LlamaModel model = LlamaModel::from_gguf(hf_to_gguf(dir.string()));
    std::filesystem::remove_all(dir);
    EXPECT_EQ(model.config().architecture, arch);
    EngineOptions o;
    o.kv_dtype = DType::f32;
    o.attention.method = Method::full;
    Session session(model, o);
    auto logits = session.prefill(std::span(tokens).first(7));
    for (size_t t = 7;; ++t) {
      double d = 0;
      for (size_t i = 0; i < ref[t - 1].size(); ++i) d = std::max(d, std::abs(double(logits[i]) - ref[t - 1][i]));
      EXPECT_LT(d, 2e-4) << arch << " after token " << t - 1;
      if (t == tokens.size()) break;
      logits = session.decode(tokens[t]);
    }
  }
}

}  // namespace
}  // namespace adamas
