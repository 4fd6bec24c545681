// `adamas info -m MODEL`: the model's architecture, sizes, tensor types, context length, and the defaults in effect.
#include <fmt/format.h>

#include <map>

#include "apps.h"
#include "engine/session.h"
#include "model/tokenizer.h"

namespace adamas::app {

int info_model(const std::string& path) {
  const LlamaModel model = LlamaModel::load(resolve_model_path(path));
  const ModelConfig& c = model.config();
  const GgufFile& f = model.file();
  print_info();
  fmt::print("model {}\n", f.source());
  fmt::print("  name            {}\n", c.name.empty() ? "(none)" : c.name);
  fmt::print("  architecture    {} (GGUF v{})\n", c.architecture, f.version());
  fmt::print("  layers          {}\n", c.n_layers);
  fmt::print("  embedding       {}\n", c.dim);
  fmt::print("  feed-forward    {}\n", c.ffn_dim);
  fmt::print("  heads / kv      {} / {} (head_dim {}, GQA group {})\n", c.n_heads, c.n_kv_heads, c.head_dim,
             c.n_heads / c.n_kv_heads);
  fmt::print("  vocabulary      {}\n", c.vocab);
  fmt::print("  context length  {}\n", c.context_length);
  fmt::print("  rope            base {}, {} rotated dims, scaling {}", c.rope_base, c.n_rot,
             rope_scaling_name(c.rope_scaling));
  if (c.rope_scaling == RopeScaling::linear) fmt::print(" x{}", c.rope_scale_factor);
  fmt::print("\n  rms norm eps    {}\n", c.norm_eps);
  fmt::print("  embeddings      {}\n", model.tied_embeddings() ? "tied (output = token_embd)" : "separate output");
  std::map<std::string, std::pair<int64_t, int64_t>> types;  // type -> tensors, bytes
  int64_t params = 0;
  for (const GgufTensor& t : f.tensors()) {
    auto& e = types[std::string(ggml_type_name(t.type))];
    ++e.first;
    e.second += t.n_bytes;
    params += t.n_elements;
  }
  fmt::print("  parameters      {:.1f} M in {} tensors, {:.1f} MiB\n", double(params) / 1e6, f.tensors().size(),
             double(model.weight_bytes()) / double(1 << 20));
  for (const auto& [name, e] : types)
    fmt::print("    {:<6} {:>4} tensors {:>9.1f} MiB\n", name, e.first, double(e.second) / double(1 << 20));
  const Tokenizer tok = Tokenizer::from_gguf(f);
  fmt::print("  tokenizer       {} (pre {}), bos {}, eos {}, add bos {}\n", tok.model(), tok.pre(), tok.bos_id(),
             tok.eos_id(), tok.add_bos());
  const EngineOptions eo;
  const int64_t kv_token = 2 * c.n_layers * c.kv_dim() * int64_t(dtype_size(eo.kv_dtype));
  const int64_t code_token = c.n_layers * c.n_kv_heads * code_bytes(c.head_dim);
  fmt::print("engine defaults:\n");
  fmt::print("  context         {} tokens (the model's; -c to change)\n", c.context_length);
  fmt::print("  KV cache        {}, {} B per token ({:.1f} MiB at full context) + {} B of codes per token\n",
             dtype_name(eo.kv_dtype), kv_token, double(kv_token * c.context_length) / double(1 << 20), code_token);
  fmt::print("  dense layers    {} (decode), prefill dense in chunks of {} tokens\n", eo.dense_layers,
             eo.prefill_chunk);
  fmt::print("  sampling        greedy (--temp 0); top-k 40, top-p 0.95 when --temp > 0\n");
  return 0;
}

}  // namespace adamas::app
