// `adamas run --device cuda`: the prompt prefilled and decoded greedily on the GPU engine (src/engine/cuda), text
// streamed to stdout, speeds on stderr. Every attention method, thresholds mode and sampler option of the CPU path.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>

#include "apps.h"
#include "engine/cuda/gpu_session.h"
#include "engine/generate.h"

namespace adamas::app {

int run_model_cuda(const RunArgs& a, const std::string& text) {
  gpu::GpuEngineOptions o;
  o.attention.method = parse_method(a.attn.c_str());
  o.attention.budget = a.budget;
  o.attention.sink = a.sink;
  o.attention.window = a.window;
  o.attention.dense_below = a.dense_below;
  o.dense_layers = a.dense_layers;
  o.calibrate_thresholds = parse_thresholds_mode(a.thresholds);
  o.sampler = {a.temperature, a.top_k, a.top_p, a.seed};
  gpu::require_supported_gpu();
  const LlamaModel model = LlamaModel::load(resolve_model_path(a.model));
  const Tokenizer tokenizer = Tokenizer::from_gguf(model.file());
  const std::vector<int32_t> prompt = tokenize_prompt(tokenizer, text, a.chat);
  o.context = a.context > 0 ? a.context : std::min<int64_t>(model.config().context_length, 32768);
  ADAMAS_CHECK_ARG(int64_t(prompt.size()) < o.context, "the prompt is {} tokens, which leaves no room in the context "
                   "of {} tokens (raise -c)", prompt.size(), o.context);
  gpu::validate_gpu_sampler(o.sampler, model.config().vocab);  // before the weights travel
  const gpu::GpuModel weights = gpu::GpuModel::upload(model);
  gpu::GpuEngine engine(weights, o);
  const int seq = engine.add_sequence();

  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  int32_t id = engine.prefill(seq, prompt);
  const double prefill_s = std::chrono::duration<double>(clock::now() - t0).count();
  t0 = clock::now();
  int64_t produced = 0, steps = 0;
  const char* stop = "token limit";
  for (;;) {
    if (tokenizer.is_end_of_generation(id)) {
      stop = "end of generation";
      break;
    }
    const std::string_view bytes = tokenizer.token_bytes(id);
    std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    std::fflush(stdout);
    if (++produced >= a.n_predict) break;
    if (engine.length(seq) >= o.context) {
      stop = "context full";
      break;
    }
    const int s[1] = {seq};
    const int32_t t[1] = {id};
    id = engine.decode(s, t)[0];
    ++steps;
  }
  const double decode_s = std::chrono::duration<double>(clock::now() - t0).count();
  std::fputc('\n', stdout);
  fmt::print(stderr, "stop: {}\n", stop);
  fmt::print(stderr, "device: {} (weights {:.2f} GiB f16, cache {:.2f} GiB)\n", cuda::device_name(),
             double(weights.bytes()) / (1 << 30), double(engine.cache_bytes()) / (1 << 30));
  fmt::print(stderr, "prompt: {} tokens in {:.3f} s ({:.1f} tokens/s)\n", prompt.size(), prefill_s,
             double(prompt.size()) / prefill_s);
  fmt::print(stderr, "decode: {} tokens in {:.3f} s ({:.1f} tokens/s); attention {} (budget {}, {} dense layers, "
             "dense below {} tokens), CUDA graph steps {}\n", steps, decode_s, steps > 0 ? double(steps) / decode_s : 0.0,
             a.attn, a.budget, a.dense_layers, a.dense_below, engine.graph_steps());
  return 0;
}

}  // namespace adamas::app
