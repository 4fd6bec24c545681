// `adamas run`: prompt -> tokens -> prefill (dense) -> decode with the chosen attention, text streamed to stdout;
// prefill progress and the speeds on stderr.
#include <fmt/format.h>
#include <omp.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "apps.h"
#include "engine/generate.h"

namespace adamas::app {

std::string resolve_model_path(const std::string& model) {
  if (!model.empty()) {
    ADAMAS_CHECK(std::filesystem::is_regular_file(model), ErrorKind::io, "model file {} not found", model);
    return model;
  }
  const std::string local = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (std::filesystem::is_regular_file(local)) return local;
  if (std::filesystem::is_regular_file(ADAMAS_DEFAULT_MODEL)) return ADAMAS_DEFAULT_MODEL;
  fail(ErrorKind::io, "no model given and the default model {} is missing (run scripts/fetch-model, or pass -m)",
       local);
}

void set_threads(int threads) {
  ADAMAS_CHECK_ARG(threads >= 0, "threads = {} (expected >= 0; 0 uses every core)", threads);
  if (threads > 0) omp_set_num_threads(threads);
}

namespace {

std::string read_prompt(const RunArgs& a) {
  if (a.prompt_file.empty()) return a.prompt;
  std::ifstream f(a.prompt_file, std::ios::binary);
  ADAMAS_CHECK(f.good(), ErrorKind::io, "cannot read the prompt file {}", a.prompt_file);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

int run_model(const RunArgs& a) {
  // Arguments first, before the model is loaded.
  set_threads(a.threads);
  ADAMAS_CHECK_ARG(!a.prompt.empty() || !a.prompt_file.empty(), "no prompt: pass -p TEXT or -f FILE");
  ADAMAS_CHECK_ARG(a.n_predict > 0, "-n {} (expected > 0)", a.n_predict);
  ADAMAS_CHECK_ARG(a.budget > 0, "--budget {} (expected > 0)", a.budget);
  ADAMAS_CHECK_ARG(a.context >= 0, "-c {} (expected > 0, or 0 for the model's context length)", a.context);
  EngineOptions eo;
  eo.attention.method = parse_method(a.attn.c_str());
  eo.attention.budget = a.budget;
  eo.attention.sink = a.sink;
  eo.attention.window = a.window;
  eo.attention.dense_below = a.dense_below;
  eo.dense_layers = a.dense_layers;
  eo.context = a.context;
  eo.calibrate_thresholds = parse_thresholds_mode(a.thresholds);
  validate_config(eo.attention);
  ADAMAS_CHECK_ARG(a.dense_layers >= 0, "--dense-layers {} (expected >= 0)", a.dense_layers);
  GenerateOptions go;
  go.n_predict = a.n_predict;
  go.sampler = {a.temperature, a.top_k, a.top_p, a.seed};
  validate_sampler(go.sampler);
  const std::string text = read_prompt(a);
  ADAMAS_CHECK_ARG(!text.empty(), "the prompt is empty");
  if (a.device == "cuda") {
#if defined(ADAMAS_HAVE_CUDA_ENGINE)
    return run_model_cuda(a, text);
#else
    fail(ErrorKind::unsupported, "--device cuda: this build has no CUDA backend (build with the CUDA toolkit)");
#endif
  }
  ADAMAS_CHECK_ARG(a.device == "cpu", "--device {} (expected cpu or cuda)", a.device);

  const LlamaModel model = LlamaModel::load(resolve_model_path(a.model));
  const Tokenizer tokenizer = Tokenizer::from_gguf(model.file());
  const std::vector<int32_t> prompt = tokenize_prompt(tokenizer, text, a.chat);
  const int64_t ctx = a.context > 0 ? a.context : model.config().context_length;
  ADAMAS_CHECK_ARG(int64_t(prompt.size()) < ctx,
                   "the prompt is {} tokens, which leaves no room in the context of {} tokens (raise -c, up to the "
                   "model's {})",
                   prompt.size(), ctx, model.config().context_length);
  Session session(model, eo);

  GenerateCallbacks cb;
  cb.on_prefill = [](int64_t done, int64_t total) {
    fmt::print(stderr, "\rprefill: {}/{} tokens", done, total);
    if (done == total) fmt::print(stderr, "\n");
  };
  cb.on_token = [](int32_t, std::string_view bytes) {
    std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    std::fflush(stdout);
  };
  const GenerateResult r = generate(session, tokenizer, prompt, go, cb);
  std::fputc('\n', stdout);
  std::fflush(stdout);
  const DecodeTimings& t = session.decode_timings();
  fmt::print(stderr, "stop: {}\n", stop_reason_name(r.stop));
  fmt::print(stderr, "prompt: {} tokens in {:.2f} s ({:.1f} tokens/s)\n", r.prompt_tokens, r.prefill_s,
             double(r.prompt_tokens) / r.prefill_s);
  fmt::print(stderr, "decode: {} tokens in {:.2f} s ({:.1f} tokens/s); attention {} (budget {}, {} dense layers, "
             "dense below {} tokens), {:.1f} ms of attention per step\n",
             r.decode_steps, r.decode_s, r.decode_steps > 0 ? double(r.decode_steps) / r.decode_s : 0.0,
             method_name(eo.attention.method), eo.attention.budget, std::min(eo.dense_layers, model.config().n_layers),
             eo.attention.dense_below,
             r.decode_steps > 0 ? 1e3 * (t.estimate_s + t.select_s + t.attend_s) / double(r.decode_steps) : 0.0);
  return 0;
}

}  // namespace adamas::app
