// `adamas bench decode`: decode tokens/s of a model at several context lengths, full attention vs the sparse
// methods, with llama.cpp's llama-bench run on the same model file, machine and thread count in the same run
// (interleaved per context, so that background load hits both alike).
//
// Protocol. Per context c and method: a fresh session prefills c - (2 + reps * n) tokens of real prose (dense, not
// timed), decodes 2 warm-up tokens, then `reps` runs of n greedy decode steps, each timed; the row reports the
// median run. So the timed steps sit at positions [c - reps * n, c). llama-bench: `-p 0 -n n -d c-n -r reps`,
// whose steps sit at [c - n, c); its median of the per-repetition rates is reported.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>

#include "apps.h"
#include "bench_util.h"
#include "engine/sampler.h"
#include "engine/session.h"
#include "model/tokenizer.h"

namespace adamas::app {

namespace {

constexpr int64_t kWarmup = 2;

// Context tokens: Emma (tokenized once, repeated as needed) when the texts are there, else seeded random ids.
std::vector<int32_t> context_tokens(const Tokenizer& tok, int64_t vocab, int64_t n) {
  std::vector<int32_t> ids;
  if (std::ifstream f("data/texts/austen-emma.txt", std::ios::binary); f.good()) {
    std::ostringstream s;
    s << f.rdbuf();
    const std::string text = s.str();
    ids = tok.encode(std::string_view(text).substr(0, std::min<size_t>(text.size(), size_t(n) * 6 + 4096)));
  }
  if (ids.empty()) {
    std::mt19937 rng(1);
    for (int64_t i = 0; i < 4096; ++i) ids.push_back(int32_t(rng() % uint32_t(vocab)));
  }
  std::vector<int32_t> out;
  if (tok.add_bos() && tok.bos_id() >= 0) out.push_back(tok.bos_id());
  while (int64_t(out.size()) < n) {
    const int64_t take = std::min<int64_t>(n - int64_t(out.size()), int64_t(ids.size()));
    out.insert(out.end(), ids.begin(), ids.begin() + take);
  }
  return out;
}

// Bytes one decode step reads: every weight once, plus the attention's K/V rows and codes.
double step_bytes(const LlamaModel& m, const EngineOptions& eo, int64_t ctx) {
  const ModelConfig& c = m.config();
  const double row = double(c.head_dim) * 2 * 2;  // K and V rows, f16
  const double dense = double(c.n_kv_heads) * double(ctx) * row;
  const int64_t sparse_layers =
      eo.attention.method == Method::full || ctx < eo.attention.dense_below
          ? 0
          : std::max<int64_t>(0, c.n_layers - eo.dense_layers);
  double sparse = 0;
  if (sparse_layers > 0) {
    const int64_t kept = std::min(ctx, eo.attention.budget);
    sparse = double(c.n_heads) * double(kept) * row;  // per-head selections (an upper bound: heads may share rows)
    if (eo.attention.method == Method::adamas)
      sparse += double(c.n_kv_heads) * double(ctx) * double(code_bytes(c.head_dim));
  }
  return double(m.weight_bytes()) + double(c.n_layers - sparse_layers) * dense + double(sparse_layers) * sparse;
}

struct Measured {
  double tokens_per_s = 0;
  double attention_ms = 0;  // per step, all layers
};

Measured measure_ours(const LlamaModel& model, const EngineOptions& eo, std::span<const int32_t> prompt,
                      int64_t n, int reps) {
  Session s(model, eo);
  s.prefill(prompt, [](int64_t done, int64_t total) { fmt::print(stderr, "\r  prefill {}/{}", done, total); });
  fmt::print(stderr, "\r{:60}\r", "");
  int32_t next = argmax(s.decode(prompt.back()));
  for (int64_t i = 1; i < kWarmup; ++i) next = argmax(s.decode(next));
  const DecodeTimings before = s.decode_timings();
  std::vector<double> rates;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < n; ++i) next = argmax(s.decode(next));
    rates.push_back(double(n) / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  const DecodeTimings& t = s.decode_timings();
  const double att = (t.estimate_s + t.select_s + t.attend_s) - (before.estimate_s + before.select_s + before.attend_s);
  return {median(rates), 1e3 * att / double(n * reps)};
}

std::string llama_bench_path(const BenchDecodeArgs& a) {
  if (!a.llama_bench.empty()) {
    ADAMAS_CHECK(std::filesystem::is_regular_file(a.llama_bench), ErrorKind::io, "--llama-bench {} not found",
                 a.llama_bench);
    return a.llama_bench;
  }
  const std::string local = "build-llama/bin/llama-bench";
  return std::filesystem::is_regular_file(local) ? local : "";
}

// llama-bench's median decode rate at depth `depth`, or nullopt (with a message) when it fails.
std::optional<double> measure_llama(const std::string& bin, const std::string& model, int64_t depth, int64_t n,
                                    int reps, int threads) {
  const std::string dir = std::filesystem::absolute(bin).parent_path().string();
  const std::string cmd = fmt::format(
      "LD_LIBRARY_PATH='{}' '{}' -m '{}' -p 0 -n {} -d {} -r {} -t {} -o json 2>/dev/null", dir, bin, model, n, depth,
      reps, threads);
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return std::nullopt;
  std::string out;
  char buf[4096];
  for (size_t got; (got = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, got);
  const int rc = pclose(p);
  try {
    const nlohmann::json j = nlohmann::json::parse(out);
    for (const auto& row : j)
      if (row.value("n_gen", 0) == n) return median(row.at("samples_ts").get<std::vector<double>>());
  } catch (const std::exception&) {
  }
  fmt::print(stderr, "llama-bench failed (exit {}): {}\n", rc, cmd);
  return std::nullopt;
}

}  // namespace

int bench_decode(const BenchDecodeArgs& a) {
  for (size_t i = 0; i < a.layers.size(); ++i)
    ADAMAS_CHECK_ARG(a.layers[i] >= 3 && (i == 0 || a.layers[i] > a.layers[i - 1]),
                     "--layers {}: expected increasing counts of at least 3 (the 2 dense layers and a sparse one)",
                     fmt::join(a.layers, ","));
  ADAMAS_CHECK_ARG(a.layers.empty() || a.device == "cuda",
                   "--layers: only with --device cuda (random weights at a shape; the CPU runs the model file)");
  if (a.device == "cuda") {
#if defined(ADAMAS_HAVE_CUDA_ENGINE)
    return bench_decode_cuda(a);
#else
    fail(ErrorKind::unsupported, "--device cuda: this build has no CUDA backend (build with the CUDA toolkit)");
#endif
  }
  ADAMAS_CHECK_ARG(a.device == "cpu", "--device {} (expected cpu or cuda)", a.device);
  set_threads(a.threads);
  ADAMAS_CHECK_ARG(a.budget > 0, "--budget {} (expected > 0)", a.budget);
  ADAMAS_CHECK_ARG(a.tokens > 0 && a.reps > 0, "--tokens {} and --reps {} (expected > 0)", a.tokens, a.reps);
  ADAMAS_CHECK_ARG(!a.contexts.empty() && !a.attn.empty(), "--ctx and --attn need at least one value");
  std::vector<Method> methods;
  for (const std::string& m : a.attn) methods.push_back(parse_method(m.c_str()));
  const std::string path = resolve_model_path(a.model);
  const LlamaModel model = LlamaModel::load(path);
  const ModelConfig& c = model.config();
  const int64_t steps = kWarmup + a.reps * a.tokens;
  for (int64_t ctx : a.contexts)
    ADAMAS_CHECK_ARG(ctx > steps && ctx <= c.context_length,
                     "--ctx {}: expected more than the {} decoded tokens and at most the model's context of {}", ctx,
                     steps, c.context_length);
  const Tokenizer tok = Tokenizer::from_gguf(model.file());
  const int threads = omp_get_max_threads();
  const std::string llama = a.no_baseline ? "" : llama_bench_path(a);

  fmt::print("# decode, {} ({}), CPU, {} threads; median of {} runs of {} greedy steps after a dense prefill of real "
             "prose\n",
             c.name.empty() ? path : c.name, path, threads, a.reps, a.tokens);
  fmt::print("# sparse methods: budget {}, first 2 layers dense{}; GB/s = weights + K/V + codes read per step / time\n",
             a.budget, a.dense_below > 0 ? fmt::format(", dense below {} tokens", a.dense_below) : std::string());
  if (llama.empty())
    fmt::print("# llama.cpp: {}\n", a.no_baseline ? "skipped (--no-baseline)"
                                                   : "not built (run scripts/build-llama-cpp, or pass --llama-bench)");
  else
    fmt::print("# llama.cpp: {} -p 0 -n {} -d CTX-{} -r {} -t {} (same file and threads)\n", llama, a.tokens, a.tokens,
               a.reps, threads);
  fmt::print("{:>6} {:>10} | {:>9} {:>7} {:>8} | {:>7} {:>8}\n", "ctx", "attn", "tokens/s", "GB/s", "attn_ms", "x_full",
             "x_llama");

  nlohmann::json rows = nlohmann::json::array();
  struct Verdict {
    bool full_ok = true, adamas_ok = true, have_llama = false, have_adamas_8k = false;
  } v;
  for (int64_t ctx : a.contexts) {
    std::optional<double> lt;
    if (!llama.empty()) lt = measure_llama(llama, path, ctx - a.tokens, a.tokens, a.reps, threads);
    if (lt) {
      v.have_llama = true;
      fmt::print("{:>6} {:>10} | {:>9.1f} {:>7} {:>8} | {:>7} {:>8}\n", ctx, "llama.cpp", *lt, "", "", "", "1.00");
      rows.push_back({{"ctx", ctx}, {"attn", "llama.cpp"}, {"tokens_per_s", *lt}});
    }
    const std::vector<int32_t> prompt = context_tokens(tok, c.vocab, ctx - steps);
    double full_tps = 0;
    for (Method m : methods) {
      EngineOptions eo;
      eo.context = ctx;
      eo.attention.method = m;
      eo.attention.budget = a.budget;
      eo.attention.dense_below = a.dense_below;
      const Measured r = measure_ours(model, eo, prompt, a.tokens, a.reps);
      if (m == Method::full) full_tps = r.tokens_per_s;
      const double gbs = step_bytes(model, eo, ctx) * r.tokens_per_s / 1e9;
      const std::string xl = lt ? fmt::format("{:.2f}", r.tokens_per_s / *lt) : "-";
      const std::string xf = full_tps > 0 ? fmt::format("{:.2f}", r.tokens_per_s / full_tps) : "-";
      fmt::print("{:>6} {:>10} | {:>9.1f} {:>7.2f} {:>8.2f} | {:>7} {:>8}\n", ctx, method_name(m), r.tokens_per_s, gbs,
                 r.attention_ms, xf, xl);
      std::fflush(stdout);
      rows.push_back({{"ctx", ctx}, {"attn", method_name(m)}, {"budget", a.budget}, {"tokens_per_s", r.tokens_per_s},
                      {"gb_per_s", gbs}, {"attention_ms", r.attention_ms}});
      if (lt && m == Method::full && r.tokens_per_s < *lt) v.full_ok = false;
      if (lt && m == Method::adamas && ctx >= 8192) {
        v.have_adamas_8k = true;
        if (r.tokens_per_s < 2 * *lt) v.adamas_ok = false;
      }
    }
  }
  if (v.have_llama) {
    fmt::print("# target: full attention >= llama.cpp at every context: {}\n", v.full_ok ? "met" : "MISSED");
    if (v.have_adamas_8k)
      fmt::print("# target: adamas at 8K >= 2x llama.cpp: {}\n", v.adamas_ok ? "met" : "MISSED");
  }
  if (!a.json.empty())
    write_json(a.json, nlohmann::json{{"command", "bench decode"}, {"model", path}, {"threads", threads},
                                      {"budget", a.budget}, {"tokens", a.tokens}, {"reps", a.reps}, {"rows", rows}});
  return 0;
}

}  // namespace adamas::app
