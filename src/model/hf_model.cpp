#include "model/hf_model.h"

#include "model/gguf_writer.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "core/check.h"
#include "model/hf_config.h"
#include "model/safetensors.h"
#include "model/tokenizer_json.h"

namespace adamas {
namespace {

constexpr uint64_t kAlign = 32;

using Sink = std::function<void(const void*, size_t)>;


enum class Op { copy, to_f32, permute_rows, permute_f32, owned_f32 };

struct Planned {
  std::string name;
  const SafetensorsTensor* src = nullptr;
  Op op = Op::copy;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> shape;  // ggml order
  uint64_t n_bytes = 0;
  int64_t n_heads = 0;          // permute ops
  std::vector<float> owned;     // owned_f32
  uint64_t offset = 0;
};

struct Plan {
  HfConfig cfg;
  SafetensorsCheckpoint ckpt;
  std::vector<uint8_t> header;  // everything before the data section, padded
  std::vector<Planned> tensors;
};

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

Plan make_plan(const std::string& dir) {
  namespace fs = std::filesystem;
  HfConfig cfg = load_hf_config(dir);
  Plan p{cfg, SafetensorsCheckpoint::open(dir), {}, {}};
  const bool qwen2 = cfg.model_type == "qwen2";
  const std::string arch = qwen2 ? "qwen2" : "llama";

  // Tensors.
  for (const auto& [hf_name, t] : p.ckpt.tensors()) {
    if (ends_with(hf_name, "rotary_emb.inv_freq")) continue;
    if (hf_name == "lm_head.weight" && cfg.tie_word_embeddings) continue;
    const auto name = hf_to_gguf_tensor_name(hf_name);
    ADAMAS_CHECK(name.has_value(), ErrorKind::unsupported, "{}: tensor '{}' has no place in a {} model",
                 p.ckpt.source(), hf_name, cfg.model_type);
    Planned q;
    q.name = *name;
    q.src = t;
    q.shape = t->shape;
    const bool one_d = t->hf_shape.size() == 1;
    const bool is_q = ends_with(*name, "attn_q.weight") || ends_with(*name, "attn_q.bias");
    const bool is_k = ends_with(*name, "attn_k.weight") || ends_with(*name, "attn_k.bias");
    if (!qwen2 && (is_q || is_k)) {
      q.n_heads = is_q ? cfg.num_attention_heads : cfg.num_key_value_heads;
      const int64_t rows = one_d ? t->n_elements : t->n_rows();
      ADAMAS_CHECK(t->hf_shape.size() <= 2 && rows == q.n_heads * cfg.head_dim, ErrorKind::format,
                   "{}: tensor '{}' has {} rows, expected {} heads x head_dim {}", p.ckpt.source(), hf_name, rows,
                   q.n_heads, cfg.head_dim);
      q.op = one_d ? Op::permute_f32 : Op::permute_rows;
    } else {
      q.op = one_d ? Op::to_f32 : Op::copy;
    }
    q.type = one_d ? GgmlType::F32 : t->type;
    q.n_bytes = one_d ? uint64_t(t->n_elements) * 4 : uint64_t(t->n_bytes);
    p.tensors.push_back(std::move(q));
  }
  if (const auto factors = cfg.rope_freq_factors(); !factors.empty()) {
    Planned q;
    q.name = "rope_freqs.weight";
    q.op = Op::owned_f32;
    q.type = GgmlType::F32;
    q.shape = {int64_t(factors.size())};
    q.n_bytes = factors.size() * 4;
    q.owned = factors;
    p.tensors.push_back(std::move(q));
  }
  uint64_t off = 0;
  for (Planned& q : p.tensors) {
    q.offset = off;
    off += (q.n_bytes + kAlign - 1) / kAlign * kAlign;
  }

  // Metadata.
  GgufMetaWriter w;
  w.kv_str("general.architecture", arch);
  w.kv_str("general.name", fs::path(dir).lexically_normal().filename().string());
  w.kv_u32("general.alignment", uint32_t(kAlign));
  auto a = [&](const char* k) { return arch + "." + k; };
  w.kv_u32(a("context_length"), uint32_t(cfg.max_position_embeddings));
  w.kv_u32(a("embedding_length"), uint32_t(cfg.hidden_size));
  w.kv_u32(a("block_count"), uint32_t(cfg.num_hidden_layers));
  w.kv_u32(a("feed_forward_length"), uint32_t(cfg.intermediate_size));
  w.kv_u32(a("attention.head_count"), uint32_t(cfg.num_attention_heads));
  w.kv_u32(a("attention.head_count_kv"), uint32_t(cfg.num_key_value_heads));
  if (cfg.head_dim * cfg.num_attention_heads != cfg.hidden_size) {
    w.kv_u32(a("attention.key_length"), uint32_t(cfg.head_dim));
    w.kv_u32(a("attention.value_length"), uint32_t(cfg.head_dim));
  }
  w.kv_f32(a("attention.layer_norm_rms_epsilon"), float(cfg.rms_norm_eps));
  w.kv_f32(a("rope.freq_base"), float(cfg.rope_theta));
  w.kv_u32(a("rope.dimension_count"), uint32_t(cfg.head_dim));
  w.kv_u32(a("vocab_size"), uint32_t(cfg.vocab_size));
  if (cfg.rope_scaling.type == "linear") {
    w.kv_str(a("rope.scaling.type"), "linear");
    w.kv_f32(a("rope.scaling.factor"), float(cfg.rope_scaling.factor));
  }
  uint64_t n_kv = w.n_kv;
  std::vector<uint8_t> tok_kv;
  std::error_code ec;
  if (fs::is_regular_file(fs::path(dir) / "tokenizer.json", ec)) {
    uint64_t n_tok = 0;
    tok_kv = tokenizer_spec_gguf_kv(load_hf_tokenizer_spec(dir, &cfg), &n_tok);
    n_kv += n_tok;
  }

  GgufMetaWriter h;
  h.raw(uint32_t(0x46554747));
  h.raw(uint32_t(3));
  h.raw(uint64_t(p.tensors.size()));
  h.raw(n_kv);
  h.bytes.insert(h.bytes.end(), w.bytes.begin(), w.bytes.end());
  h.bytes.insert(h.bytes.end(), tok_kv.begin(), tok_kv.end());
  for (const Planned& q : p.tensors) {
    h.str(q.name);
    h.raw(uint32_t(q.shape.size()));
    for (int64_t d : q.shape) h.raw(uint64_t(d));
    h.raw(uint32_t(q.type));
    h.raw(q.offset);
  }
  while (h.bytes.size() % kAlign != 0) h.bytes.push_back(0);
  p.header = std::move(h.bytes);
  return p;
}

uint64_t total_size(const Plan& p) {
  uint64_t n = p.header.size();
  for (const Planned& q : p.tensors) n += (q.n_bytes + kAlign - 1) / kAlign * kAlign;
  return n;
}

void emit(const Plan& p, const Sink& out) {
  out(p.header.data(), p.header.size());
  static const uint8_t zeros[kAlign] = {};
  const int64_t head_dim = p.cfg.head_dim;
  for (const Planned& q : p.tensors) {
    const SafetensorsTensor* t = q.src;
    switch (q.op) {
      case Op::copy:
        out(t->data, size_t(t->n_bytes));
        break;
      case Op::to_f32: {
        const auto v = t->to_f32();
        out(v.data(), v.size() * 4);
        break;
      }
      case Op::permute_rows: {
        const auto perm = rope_row_permutation(q.n_heads, head_dim);
        for (int64_t r : perm) out(t->row(r), size_t(t->row_bytes()));
        break;
      }
      case Op::permute_f32: {
        const auto v = t->to_f32();
        std::vector<float> o(v.size());
        permute_rope_rows(v.data(), o.data(), int64_t(v.size()), 4, q.n_heads, head_dim);
        out(o.data(), o.size() * 4);
        break;
      }
      case Op::owned_f32:
        out(q.owned.data(), q.owned.size() * 4);
        break;
    }
    const uint64_t pad = (kAlign - q.n_bytes % kAlign) % kAlign;
    if (pad) out(zeros, size_t(pad));
  }
}

}  // namespace

std::vector<uint8_t> hf_to_gguf_bytes(const std::string& dir) {
  const Plan p = make_plan(dir);
  std::vector<uint8_t> bytes;
  bytes.reserve(size_t(total_size(p)));
  emit(p, [&](const void* d, size_t n) {
    const auto* b = static_cast<const uint8_t*>(d);
    bytes.insert(bytes.end(), b, b + n);
  });
  return bytes;
}

void write_hf_as_gguf(const std::string& dir, const std::string& out_path) {
  const Plan p = make_plan(dir);
  const std::string tmp = out_path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    ADAMAS_CHECK(out.good(), ErrorKind::io, "{}: cannot create: {}", tmp, std::strerror(errno));
    emit(p, [&](const void* d, size_t n) { out.write(static_cast<const char*>(d), std::streamsize(n)); });
    out.flush();
    ADAMAS_CHECK(out.good(), ErrorKind::io, "{}: write error", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, out_path, ec);
  ADAMAS_CHECK(!ec, ErrorKind::io, "{}: cannot rename to {}: {}", tmp, out_path, ec.message());
}

GgufFile hf_to_gguf(const std::string& dir, const std::string& cache_path) {
  if (!cache_path.empty()) {
    write_hf_as_gguf(dir, cache_path);
    return GgufFile::open(cache_path);
  }
  const auto bytes = hf_to_gguf_bytes(dir);
  return GgufFile::from_bytes(bytes, dir + " (converted from Hugging Face layout)");
}

}  // namespace adamas
