#include "model/hf_config.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/check.h"

namespace adamas {
namespace {

using json = nlohmann::json;

struct Arch {
  std::string_view model_type, architecture;
};
constexpr Arch kArchs[] = {
    {"llama", "LlamaForCausalLM"}, {"mistral", "MistralForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}};

class Reader {
 public:
  Reader(const json& j, std::string_view source) : j_(j), src_(source) {}

  const json* find(std::string_view key) const {
    const auto it = j_.find(std::string(key));
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  int64_t integer(std::string_view key, int64_t lo, int64_t hi, std::optional<int64_t> fallback) const {
    const json* v = find(key);
    if (v == nullptr) {
      ADAMAS_CHECK(fallback.has_value(), ErrorKind::format, "{}: missing \"{}\"", src_, key);
      return *fallback;
    }
    ADAMAS_CHECK(v->is_number_integer(), ErrorKind::format, "{}: \"{}\" must be an integer, found {}", src_, key,
                 v->dump());
    const bool too_big = v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(hi);
    const int64_t x = too_big ? hi : v->get<int64_t>();
    ADAMAS_CHECK(!too_big && x >= lo && x <= hi, ErrorKind::format, "{}: \"{}\" = {} is out of range [{}, {}]", src_,
                 key, v->dump(), lo, hi);
    return x;
  }
  double number(std::string_view key, double lo, double hi, std::optional<double> fallback) const {
    const json* v = find(key);
    if (v == nullptr) {
      ADAMAS_CHECK(fallback.has_value(), ErrorKind::format, "{}: missing \"{}\"", src_, key);
      return *fallback;
    }
    ADAMAS_CHECK(v->is_number(), ErrorKind::format, "{}: \"{}\" must be a number, found {}", src_, key, v->dump());
    const double x = v->get<double>();
    ADAMAS_CHECK(std::isfinite(x) && x >= lo && x <= hi, ErrorKind::format, "{}: \"{}\" = {} is out of range [{}, {}]",
                 src_, key, v->dump(), lo, hi);
    return x;
  }
  bool boolean(std::string_view key, bool fallback) const {
    const json* v = find(key);
    if (v == nullptr) return fallback;
    ADAMAS_CHECK(v->is_boolean(), ErrorKind::format, "{}: \"{}\" must be true or false, found {}", src_, key,
                 v->dump());
    return v->get<bool>();
  }
  std::string string(std::string_view key, std::string_view fallback) const {
    const json* v = find(key);
    if (v == nullptr) return std::string(fallback);
    ADAMAS_CHECK(v->is_string(), ErrorKind::format, "{}: \"{}\" must be a string, found {}", src_, key, v->dump());
    return v->get<std::string>();
  }

 private:
  const json& j_;
  std::string_view src_;
};

int32_t token_id(const json& v, std::string_view source, std::string_view key) {
  ADAMAS_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= std::numeric_limits<int32_t>::max(),
               ErrorKind::format, "{}: \"{}\" must hold non-negative token ids, found {}", source, key, v.dump());
  return int32_t(v.get<int64_t>());
}

}  // namespace

HfConfig parse_hf_config(std::string_view text, std::string_view source) {
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail(ErrorKind::format, "{}: malformed JSON: {}", source, e.what());
  }
  ADAMAS_CHECK(j.is_object(), ErrorKind::format, "{}: config is a JSON {}, not an object", source, j.type_name());
  const Reader r(j, source);
  HfConfig c;

  // Architecture: model_type and/or architectures[0], both of the supported set and consistent.
  c.model_type = r.string("model_type", "");
  if (const json* a = r.find("architectures")) {
    ADAMAS_CHECK(a->is_array() && !a->empty() && (*a)[0].is_string(), ErrorKind::format,
                 "{}: \"architectures\" must be a non-empty array of strings, found {}", source, a->dump());
    c.architecture = (*a)[0].get<std::string>();
  }
  ADAMAS_CHECK(!c.model_type.empty() || !c.architecture.empty(), ErrorKind::format,
               "{}: neither \"model_type\" nor \"architectures\" says what the model is", source);
  const Arch* arch = nullptr;
  for (const Arch& a : kArchs)
    if ((c.model_type.empty() || a.model_type == c.model_type) &&
        (c.architecture.empty() || a.architecture == c.architecture))
      arch = &a;
  if (arch == nullptr) {
    fail(ErrorKind::unsupported,
         "{}: unsupported architecture '{}' (model_type '{}'); supported: llama (LlamaForCausalLM), mistral "
         "(MistralForCausalLM), qwen2 (Qwen2ForCausalLM)",
         source, c.architecture.empty() ? c.model_type : c.architecture, c.model_type);
  }
  c.model_type = std::string(arch->model_type);
  const bool qwen2 = c.model_type == "qwen2";

  const std::string act = r.string("hidden_act", "silu");
  ADAMAS_CHECK(act == "silu", ErrorKind::unsupported, "{}: unsupported hidden_act '{}' (only silu)", source, act);

  constexpr int64_t kBig = int64_t(1) << 20;
  c.hidden_size = r.integer("hidden_size", 1, kBig, std::nullopt);
  c.intermediate_size = r.integer("intermediate_size", 1, 4 * kBig, std::nullopt);
  c.num_hidden_layers = r.integer("num_hidden_layers", 1, 4096, std::nullopt);
  c.num_attention_heads = r.integer("num_attention_heads", 1, 4096, std::nullopt);
  c.num_key_value_heads = r.integer("num_key_value_heads", 1, 4096, c.num_attention_heads);
  ADAMAS_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, ErrorKind::format,
               "{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", source,
               c.num_attention_heads, c.num_key_value_heads);
  ADAMAS_CHECK(r.find("head_dim") != nullptr || c.hidden_size % c.num_attention_heads == 0, ErrorKind::format,
               "{}: hidden_size {} is not a multiple of num_attention_heads {} (and no head_dim)", source,
               c.hidden_size, c.num_attention_heads);
  c.head_dim = r.integer("head_dim", 2, 65536, c.hidden_size / c.num_attention_heads);
  ADAMAS_CHECK(c.head_dim % 2 == 0, ErrorKind::format, "{}: head_dim {} is odd (RoPE rotates pairs)", source,
               c.head_dim);
  c.rms_norm_eps = r.number("rms_norm_eps", 0.0, 1.0, 1e-6);
  c.rope_theta = r.number("rope_theta", 1.0, 1e12, 10000.0);
  c.max_position_embeddings = r.integer("max_position_embeddings", 1, int64_t(1) << 31,
                                        qwen2 ? 32768 : c.model_type == "mistral" ? 32768 : 2048);
  c.vocab_size = r.integer("vocab_size", 1, int64_t(1) << 24, std::nullopt);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  const bool attention_bias = r.boolean("attention_bias", false);
  c.qkv_bias = qwen2 || attention_bias;
  c.o_bias = !qwen2 && attention_bias;
  c.mlp_bias = r.boolean("mlp_bias", false);
  c.torch_dtype = r.string("torch_dtype", "");
  if (qwen2) {
    if (r.boolean("use_sliding_window", false))
      c.sliding_window = r.integer("sliding_window", 0, int64_t(1) << 31, 0);
  } else if (c.model_type == "mistral") {
    c.sliding_window = r.integer("sliding_window", 0, int64_t(1) << 31, 0);
  }

  if (const json* s = r.find("rope_scaling")) {
    ADAMAS_CHECK(s->is_object(), ErrorKind::format, "{}: \"rope_scaling\" must be an object or null, found {}",
                 source, s->dump());
    const Reader rs(*s, source);
    std::string type = rs.string("rope_type", "");
    if (type.empty()) type = rs.string("type", "");
    ADAMAS_CHECK(!type.empty(), ErrorKind::format, "{}: rope_scaling has no \"rope_type\" (or \"type\")", source);
    if (type == "default") {
      // no scaling
    } else if (type == "linear" || type == "llama3") {
      c.rope_scaling.type = type;
      c.rope_scaling.factor =
          rs.number("factor", 1e-6, 1e6, type == "llama3" ? std::optional<double>(8.0) : std::nullopt);
      if (type == "llama3") {
        c.rope_scaling.low_freq_factor = rs.number("low_freq_factor", 1e-6, 1e6, 1.0);
        c.rope_scaling.high_freq_factor = rs.number("high_freq_factor", 1e-6, 1e6, 4.0);
        c.rope_scaling.original_max_position_embeddings =
            rs.integer("original_max_position_embeddings", 1, int64_t(1) << 31, 8192);
        ADAMAS_CHECK(c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor, ErrorKind::format,
                     "{}: rope_scaling high_freq_factor {} must exceed low_freq_factor {}", source,
                     c.rope_scaling.high_freq_factor, c.rope_scaling.low_freq_factor);
      }
    } else {
      fail(ErrorKind::unsupported, "{}: unsupported rope_scaling type '{}' (supported: linear, llama3)", source, type);
    }
  }

  if (const json* b = r.find("bos_token_id")) c.bos_token_id = token_id(*b, source, "bos_token_id");
  if (const json* e = r.find("eos_token_id")) {
    if (e->is_array()) {
      for (const json& x : *e) c.eos_token_ids.push_back(token_id(x, source, "eos_token_id"));
    } else {
      c.eos_token_ids.push_back(token_id(*e, source, "eos_token_id"));
    }
  }
  return c;
}

HfConfig load_hf_config(const std::string& path) {
  std::string file = path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) file = (std::filesystem::path(path) / "config.json").string();
  std::ifstream in(file, std::ios::binary);
  ADAMAS_CHECK(in.good(), ErrorKind::io, "{}: cannot open: {}", file, std::strerror(errno));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_hf_config(text, file);
}

std::vector<float> HfConfig::rope_freq_factors() const {
  std::vector<float> out;
  if (rope_scaling.type != "llama3") return out;
  const double base = rope_theta;
  const int64_t dim = head_dim;
  const double factor = rope_scaling.factor, low = rope_scaling.low_freq_factor, high = rope_scaling.high_freq_factor;
  const double old_ctx = double(rope_scaling.original_max_position_embeddings);
  const double low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
  for (int64_t i = 0; i < dim; i += 2) {
    // As the converter: freqs in float32 (torch.arange(0, dim, 2) / dim), wavelength in double.
    const float freq = 1.0f / std::pow(float(base), float(i) / float(dim));
    const double wavelen = 2 * M_PI / double(freq);
    double f;
    if (wavelen < high_wavelen) {
      f = 1.0;
    } else if (wavelen > low_wavelen) {
      f = factor;
    } else {
      const double smooth = (old_ctx / wavelen - low) / (high - low);
      f = 1.0 / ((1 - smooth) / factor + smooth);
    }
    out.push_back(float(f));
  }
  return out;
}

std::optional<std::string> hf_to_gguf_tensor_name(std::string_view n) {
  if (n == "model.embed_tokens.weight") return "token_embd.weight";
  if (n == "model.norm.weight") return "output_norm.weight";
  if (n == "lm_head.weight") return "output.weight";
  constexpr std::string_view kLayers = "model.layers.";
  if (n.substr(0, kLayers.size()) != kLayers) return std::nullopt;
  n.remove_prefix(kLayers.size());
  size_t digits = 0;
  while (digits < n.size() && n[digits] >= '0' && n[digits] <= '9') ++digits;
  if (digits == 0 || digits > 6 || digits >= n.size() || n[digits] != '.') return std::nullopt;
  if (digits > 1 && n[0] == '0') return std::nullopt;
  const std::string layer(n.substr(0, digits));
  n.remove_prefix(digits + 1);
  static constexpr std::pair<std::string_view, std::string_view> kMap[] = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},
      {"self_attn.o_proj.bias", "attn_output.bias"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  for (const auto& [hf, gguf] : kMap)
    if (n == hf) return "blk." + layer + "." + std::string(gguf);
  return std::nullopt;
}

std::vector<int64_t> rope_row_permutation(int64_t n_heads, int64_t head_dim) {
  ADAMAS_CHECK(n_heads > 0 && head_dim > 0 && head_dim % 2 == 0, ErrorKind::invalid_argument,
               "rope_row_permutation: n_heads {} and head_dim {} must be positive, head_dim even", n_heads, head_dim);
  const int64_t half = head_dim / 2;
  std::vector<int64_t> perm(size_t(n_heads * head_dim));
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) perm[size_t(h * head_dim + 2 * i + j)] = h * head_dim + j * half + i;
  return perm;
}

void permute_rope_rows(const void* src, void* dst, int64_t rows, int64_t row_bytes, int64_t n_heads,
                       int64_t head_dim) {
  ADAMAS_CHECK(rows == n_heads * head_dim && row_bytes >= 0, ErrorKind::invalid_argument,
               "permute_rope_rows: {} rows is not n_heads {} x head_dim {}", rows, n_heads, head_dim);
  ADAMAS_CHECK(src != dst, ErrorKind::invalid_argument, "permute_rope_rows: src and dst must not alias");
  const auto perm = rope_row_permutation(n_heads, head_dim);
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < rows; ++r) std::memcpy(d + r * row_bytes, s + perm[size_t(r)] * row_bytes, size_t(row_bytes));
}

}  // namespace adamas
