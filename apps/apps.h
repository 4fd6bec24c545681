// The commands of the `adamas` program and their arguments (internal to apps/).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "adamas/attention.h"
#include "core/check.h"

#define ADAMAS_CHECK_ARG(cond, ...) ADAMAS_CHECK(cond, ::adamas::ErrorKind::invalid_argument, __VA_ARGS__)

namespace adamas::app {

struct BenchAttentionArgs {
  std::string device = "cpu";
  std::vector<int64_t> contexts{8192, 32768, 131072};
  std::vector<int64_t> budgets{64, 256, 1024};
  int64_t heads = 32, kv_heads = 8, dim = 128;
  std::string dtype = "f16";
  float key_std = 8.0f;  // per-channel key scale, Llama-2-7B-like magnitudes for the fixed thresholds
  int iters = 9;
  uint64_t seed = 1;
  std::string json;
};
int bench_attention(const BenchAttentionArgs& args);

struct DemoArgs {
  int64_t tokens = 32768, heads = 32, kv_heads = 8, dim = 128, budget = 64, planted = 8;
  uint64_t seed = 7;
  std::string json;
};
int demo_synthetic(const DemoArgs& args);

struct PasskeyDemoArgs {
  std::string model;  // empty: the default model
  std::string text = "data/texts/austen-emma.txt";
  int64_t filler = 2500, budget = 64, sparse_tail = 100;
  int64_t sink = 0, window = 0;  // Adamas: first / most recent tokens always kept, inside the budget
  double depth = 0.5;
  uint64_t seed = 1;
  int threads = 0;
  std::string json;
};
int demo_passkey(const PasskeyDemoArgs& args);

// `adamas bench decode`: decode tokens/s of a model at several contexts, full vs sparse attention, with the
// alternative (llama.cpp's llama-bench on the CPU; Hugging Face transformers on the GPU) measured in the same run.
struct BenchDecodeArgs {
  std::string device = "cpu";  // cpu | cuda
  std::string model;           // GGUF file (empty: the default model)
  std::string shape;           // cuda: llama2-7b | llama3-8b | a GGUF file whose shape is used with random weights
  std::vector<int64_t> contexts{512, 2048, 8192};
  std::vector<std::string> attn{"full", "adamas"};
  int64_t budget = 128;
  int64_t dense_below = 0;         // sequences shorter than this attend densely (AttentionConfig::dense_below)
  std::vector<int64_t> batch{1};   // cuda: sequences decoded together
  // cuda: run the shape with these layer counts instead of its own (weights and cache of only those layers). Two or
  // more: the step time is extrapolated to the shape's own count, linear in the layers, from the two smallest
  // counts; the larger counts are checks (predicted vs measured). For points whose cache exceeds the GPU.
  std::vector<int64_t> layers;
  int64_t tokens = 32;             // decode steps timed per row
  int reps = 3;                    // repetitions per row (median)
  int threads = 0;                 // cpu: 0 = all cores
  std::string llama_bench;         // path of llama-bench (empty: build-llama/bin/llama-bench when present)
  bool no_baseline = false;        // skip llama-bench / transformers
  std::string json;
};
int bench_decode(const BenchDecodeArgs& args);       // apps/bench_decode.cpp (dispatches on device)
int bench_decode_cuda(const BenchDecodeArgs& args);  // apps/bench_decode_cuda.cpp (only in CUDA builds)

// `adamas eval <task>`: accuracy of the attention methods (apps/eval.cpp; tasks in src/eval).
struct EvalArgs {
  std::string task;   // passkey | ppl | ruler | recall
  std::string model;  // empty: the default model
  std::vector<std::string> attn{"full", "adamas", "quest", "streaming"};
  std::vector<int64_t> budgets{64};
  std::vector<std::string> thresholds{"fixed"};  // adamas: fixed, calibrated
  std::vector<std::string> groups{"per-head"};   // adamas: per-head, shared-sum, shared-union
  std::vector<std::string> keep{"0:0"};          // adamas: sink:window pairs kept inside the budget
  std::vector<int64_t> lengths{1024, 2048, 4096, 8192};
  int64_t depths = 10;   // passkey: depths spread evenly over [0, 1]
  int64_t samples = 1;   // passkey: keys per (length, depth); ruler: samples per (task, length)
  std::vector<std::string> ruler_tasks{"multikey", "multivalue", "vartrack"};
  std::string text;      // empty: the task's default text
  int64_t sparse_tail = 100;  // last prompt tokens decoded with the method (passkey, ruler)
  int64_t recall_steps = 16;  // recall: decode steps measured
  uint64_t seed = 1;
  int threads = 0;
  std::string out = "eval-results";
  bool report_only = false;  // rewrite <task>.json/.csv/.md from the rows there, run nothing
};
int eval_command(const EvalArgs& args, const std::string& command_line);

// "fixed" -> false, "calibrated" -> true; anything else is an error naming the value.
bool parse_thresholds_mode(const std::string& mode);

// `adamas run`: generate text from a prompt with a GGUF model (apps/run.cpp).
struct RunArgs {
  std::string model;  // empty: the default model
  std::string prompt, prompt_file;
  int64_t n_predict = 128;
  std::string attn = "adamas";
  int64_t budget = 256;
  int64_t sink = 0, window = 0;  // Adamas: first / most recent tokens always kept, inside the budget
  int64_t dense_layers = 2;
  int64_t dense_below = 0;  // sequences shorter than this attend densely (AttentionConfig::dense_below)
  float temperature = 0.0f;
  int64_t top_k = 40;
  float top_p = 0.95f;
  uint64_t seed = 0;
  bool chat = false;
  std::string thresholds = "fixed";  // fixed | calibrated
  int64_t context = 0;  // 0: the model's trained context
  int threads = 0;      // 0: all cores
  std::string device = "cpu";  // cpu | cuda (apps/run_cuda.cpp)
};
int run_model(const RunArgs& args);
int run_model_cuda(const RunArgs& args, const std::string& prompt_text);  // CUDA builds only

// `adamas info [-m MODEL]`: the library's defaults, and the model's configuration and tensors (apps/info.cpp).
void print_info();
int info_model(const std::string& model);

// -m as given, else the default model (models/ under the working directory, else the source tree's).
std::string resolve_model_path(const std::string& model);
void set_threads(int threads);

DType parse_dtype(const std::string& name);
void write_json(const std::string& path, const nlohmann::json& value);

}  // namespace adamas::app
