// The `adamas` command: subcommands over the library. Errors print one line naming the problem and exit 1.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "apps.h"

namespace adamas::app {

bool parse_thresholds_mode(const std::string& mode) {
  if (mode == "fixed") return false;
  if (mode == "calibrated") return true;
  fail(ErrorKind::invalid_argument, "unknown thresholds mode '{}' (expected fixed or calibrated)", mode);
}

DType parse_dtype(const std::string& name) {
  for (DType d : {DType::f32, DType::f16, DType::bf16})
    if (name == dtype_name(d)) return d;
  fail(ErrorKind::invalid_argument, "unknown dtype '{}' (expected f32, f16 or bf16)", name);
}

void write_json(const std::string& path, const nlohmann::json& value) {
  std::ofstream f(path);
  ADAMAS_CHECK(f.good(), ErrorKind::io, "cannot write {}", path);
  f << value.dump(2) << "\n";
  ADAMAS_CHECK(f.good(), ErrorKind::io, "writing {} failed", path);
}

void print_info() {
  const AttentionConfig c;
  fmt::print("adamas {}: Adamas sparse attention (Hadamard + 2-bit codes + L1 top-k)\n", ADAMAS_VERSION);
  fmt::print("attention defaults:\n");
  fmt::print("  method          {}\n", method_name(c.method));
  fmt::print("  budget          {}\n", c.budget);
  fmt::print("  sink / window   {} / {}\n", c.sink, c.window);
  fmt::print("  group selection {}\n", group_selection_name(c.group));
  fmt::print("  thresholds      ({}, {}, {}) fixed\n", c.thresholds.t0, c.thresholds.t1, c.thresholds.t2);
  fmt::print("  streaming sinks {}\n", c.streaming_sink);
  fmt::print("  dense below     {} tokens (0: off; shorter sequences attend densely)\n", c.dense_below);
  fmt::print("  head_dim        powers of two in [16, 512]\n");
}

}  // namespace adamas::app

int main(int argc, char** argv) {
  using namespace adamas::app;
  CLI::App app{"adamas: long-context LLM inference with Adamas sparse attention"};
  app.require_subcommand(1);

  auto* info = app.add_subcommand("info", "print the library's defaults, and a model's configuration with -m");
  std::string info_path;
  info->add_option("-m,--model", info_path, "GGUF model file");

  RunArgs ra;
  auto* run = app.add_subcommand("run", "generate text from a prompt with a GGUF model");
  run->add_option("-m,--model", ra.model, "GGUF model file (default: models/SmolLM2-135M-Instruct.Q4_1.gguf)");
  auto* run_p = run->add_option("-p,--prompt", ra.prompt, "prompt text");
  run->add_option("-f,--file", ra.prompt_file, "read the prompt from this file")->excludes(run_p);
  run->add_option("-n,--n-predict", ra.n_predict, "tokens to generate at most")->capture_default_str();
  run->add_option("--attn", ra.attn, "decode attention: full, adamas, quest, streaming")->capture_default_str();
  run->add_option("--budget", ra.budget, "token budget of the sparse methods")->capture_default_str();
  run->add_option("--sink", ra.sink, "adamas: first tokens always kept (inside the budget)")->capture_default_str();
  run->add_option("--window", ra.window, "adamas: most recent tokens always kept (inside the budget)")
      ->capture_default_str();
  run->add_option("--dense-layers", ra.dense_layers, "first layers decoded with full attention")
      ->capture_default_str();
  run->add_option("--dense-below", ra.dense_below,
                  "sparse methods: a sequence shorter than this many tokens attends densely (0: off)")
      ->capture_default_str();
  run->add_option("--temp", ra.temperature, "sampling temperature (0: greedy)")->capture_default_str();
  run->add_option("--top-k", ra.top_k, "top-k filter (0: off)")->capture_default_str();
  run->add_option("--top-p", ra.top_p, "top-p (nucleus) filter (1: off)")->capture_default_str();
  run->add_option("--seed", ra.seed, "sampling seed")->capture_default_str();
  run->add_flag("--chat", ra.chat, "wrap the prompt in the model's chat template as a user message");
  run->add_option("--thresholds", ra.thresholds,
                  "Adamas code thresholds: fixed (-10, 0, 10) or calibrated per layer and head at prefill")
      ->capture_default_str();
  run->add_option("-c,--ctx-size", ra.context, "context (KV cache) size in tokens (0: the model's)")
      ->capture_default_str();
  run->add_option("-t,--threads", ra.threads, "threads (0: all cores)")->capture_default_str();
  run->add_option("--device", ra.device, "cpu or cuda (greedy; full or adamas)")->capture_default_str();

  auto* bench = app.add_subcommand("bench", "benchmarks");
  bench->require_subcommand(1);
  BenchAttentionArgs ba;
  auto* battn = bench->add_subcommand("attention", "one layer's decode attention: dense vs Adamas");
  battn->add_option("--device", ba.device, "cpu")->capture_default_str();
  battn->add_option("--ctx", ba.contexts, "context lengths")->delimiter(',')->capture_default_str();
  battn->add_option("--budget", ba.budgets, "token budgets")->delimiter(',')->capture_default_str();
  battn->add_option("--heads", ba.heads, "query heads")->capture_default_str();
  battn->add_option("--kv-heads", ba.kv_heads, "KV heads")->capture_default_str();
  battn->add_option("--dim", ba.dim, "head_dim")->capture_default_str();
  battn->add_option("--dtype", ba.dtype, "K/V storage: f32, f16, bf16")->capture_default_str();
  battn->add_option("--iters", ba.iters, "timed steps per row (median)")->capture_default_str();
  battn->add_option("--seed", ba.seed, "random seed")->capture_default_str();
  battn->add_option("--json", ba.json, "also write the rows as JSON to this file");

  BenchDecodeArgs bd;
  auto* bdec = bench->add_subcommand("decode", "decode tokens/s of a model by context: full vs sparse vs llama.cpp");
  bdec->add_option("--device", bd.device, "cpu or cuda")->capture_default_str();
  bdec->add_option("-m,--model", bd.model, "GGUF model file (default: the SmolLM2 model of scripts/fetch-model)");
  bdec->add_option("--shape", bd.shape, "cuda: llama2-7b, llama3-8b or a GGUF file (random f16 weights)");
  bdec->add_option("--ctx", bd.contexts, "context lengths")->delimiter(',')->capture_default_str();
  bdec->add_option("--attn", bd.attn, "methods: full, adamas, quest, streaming")->delimiter(',')->capture_default_str();
  bdec->add_option("--budget", bd.budget, "token budget of the sparse methods")->capture_default_str();
  bdec->add_option("--dense-below", bd.dense_below,
                   "sparse methods: a sequence shorter than this many tokens attends densely (0: off)")
      ->capture_default_str();
  bdec->add_option("--batch", bd.batch, "cuda: sequences per step")->delimiter(',')->capture_default_str();
  bdec->add_option("--layers", bd.layers,
                   "cuda: layer counts to run instead of the shape's (>= 3, increasing); two or more extrapolate the "
                   "step time to the shape's count")
      ->delimiter(',');
  bdec->add_option("-n,--tokens", bd.tokens, "decode steps per timed run")->capture_default_str();
  bdec->add_option("-r,--reps", bd.reps, "timed runs per row (median)")->capture_default_str();
  bdec->add_option("-t,--threads", bd.threads, "threads (0: all cores)")->capture_default_str();
  bdec->add_option("--llama-bench", bd.llama_bench, "llama-bench binary (default: build-llama/bin/llama-bench)");
  bdec->add_flag("--no-baseline", bd.no_baseline, "skip the llama.cpp / transformers baseline");
  bdec->add_option("--json", bd.json, "also write the rows as JSON to this file");

  DemoArgs da;
  PasskeyDemoArgs pa;
  auto* demo = app.add_subcommand("demo", "the model finds a pass key in long prose: full attention vs Adamas");
  demo->add_option("-m,--model", pa.model, "GGUF model file (default: the SmolLM2 model of scripts/fetch-model)");
  demo->add_option("--text", pa.text, "prose to hide the key in")->capture_default_str();
  demo->add_option("--tokens", pa.filler, "filler tokens of prose")->capture_default_str();
  demo->add_option("--depth", pa.depth, "where the key sits, 0 (start) to 1 (end)")->capture_default_str();
  demo->add_option("--budget", pa.budget, "Adamas token budget")->capture_default_str();
  demo->add_option("--sink", pa.sink, "adamas: first tokens always kept (inside the budget)")->capture_default_str();
  demo->add_option("--window", pa.window, "adamas: most recent tokens always kept (inside the budget)")
      ->capture_default_str();
  demo->add_option("--sparse-tail", pa.sparse_tail, "last prompt tokens decoded with the method")
      ->capture_default_str();
  demo->add_option("--seed", pa.seed, "seed of the key and of the text offset")->capture_default_str();
  demo->add_option("-t,--threads", pa.threads, "threads (0: all cores)")->capture_default_str();
  demo->add_option("--json", pa.json, "also write the results as JSON to this file");

  auto* demo_op = app.add_subcommand(
      "demo-operator", "the attention operator alone: sparse vs full on a synthetic 32K-token cache with planted keys");
  demo_op->add_option("--tokens", da.tokens, "cached tokens")->capture_default_str();
  demo_op->add_option("--budget", da.budget, "Adamas token budget")->capture_default_str();
  demo_op->add_option("--planted", da.planted, "keys planted to match the query")->capture_default_str();
  demo_op->add_option("--seed", da.seed, "random seed")->capture_default_str();
  demo_op->add_option("--json", da.json, "also write the results as JSON to this file");

  EvalArgs ea;
  auto* eval = app.add_subcommand("eval", "accuracy: passkey, perplexity, RULER-style tasks, attention recall");
  eval->add_option("task", ea.task, "passkey | ppl | ruler | recall")->required();
  eval->add_option("-m,--model", ea.model, "GGUF model file (default: the SmolLM2 model of scripts/fetch-model)");
  eval->add_option("--attn", ea.attn, "methods")->delimiter(',')->capture_default_str();
  eval->add_option("--budgets", ea.budgets, "token budgets of the sparse methods")->delimiter(',')
      ->capture_default_str();
  eval->add_option("--thresholds", ea.thresholds, "Adamas thresholds: fixed, calibrated")->delimiter(',')
      ->capture_default_str();
  eval->add_option("--group", ea.groups, "Adamas selection: per-head, shared-sum, shared-union")->delimiter(',')
      ->capture_default_str();
  eval->add_option("--keep", ea.keep,
                   "Adamas: SINK:WINDOW pairs, the first SINK and last WINDOW tokens always kept inside the budget")
      ->delimiter(',');
  eval->add_option("--lengths", ea.lengths, "context lengths in tokens (ppl: checkpoints)")->delimiter(',')
      ->capture_default_str();
  eval->add_option("--depths", ea.depths, "passkey: needle depths spread over 0-100%")->capture_default_str();
  eval->add_option("--samples", ea.samples, "passkey: keys per depth; ruler: samples per task and length")
      ->capture_default_str();
  eval->add_option("--ruler-tasks", ea.ruler_tasks, "multikey, multivalue, vartrack")->delimiter(',')
      ->capture_default_str();
  eval->add_option("--text", ea.text, "prose file (default: per task, under data/texts)");
  eval->add_option("--sparse-tail", ea.sparse_tail, "last prompt tokens decoded with the method")
      ->capture_default_str();
  eval->add_option("--recall-steps", ea.recall_steps, "recall: decode steps measured")->capture_default_str();
  eval->add_option("--seed", ea.seed, "seed of keys, needles and text offsets")->capture_default_str();
  eval->add_option("-t,--threads", ea.threads, "threads (0: all cores)")->capture_default_str();
  eval->add_option("-o,--out", ea.out, "directory of <task>.jsonl/.json/.csv/.md (rows there are not redone)")
      ->capture_default_str();
  eval->add_flag("--report-only", ea.report_only, "only rewrite <task>.json/.csv/.md from the rows in --out");

  try {
    app.parse(argc, argv);
    if (eval->parsed()) {
      std::string line = "adamas";
      for (int i = 1; i < argc; ++i) line += std::string(" ") + argv[i];
      return eval_command(ea, line);
    }
    if (info->parsed()) return info_path.empty() ? (print_info(), 0) : info_model(info_path);
    if (run->parsed()) return run_model(ra);
    if (battn->parsed()) return bench_attention(ba);
    if (bdec->parsed()) return bench_decode(bd);
    if (demo->parsed()) return demo_passkey(pa);
    if (demo_op->parsed()) return demo_synthetic(da);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const adamas::Error& e) {
    fmt::print(stderr, "adamas: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "adamas: {}\n", e.what());
    return 1;
  }
  return 0;
}
