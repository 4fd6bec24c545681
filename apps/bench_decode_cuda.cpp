// `adamas bench decode --device cuda`: decode tokens/s of the GPU engine at a model shape with random f16 weights
// (labelled as such), by batch and context, full attention vs Adamas; then the user's alternative at the same
// points on the same GPU: Hugging Face transformers generate() with SDPA, or a minimal PyTorch SDPA decode loop
// when transformers is absent (bench/cuda/hf_decode_baseline.py says which ran).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <tuple>
#include <nlohmann/json.hpp>

#include "adamas/cuda_attention.h"
#include "apps.h"
#include "bench_util.h"
#include "engine/cuda/gpu_session.h"

namespace adamas::app {
namespace {

ModelConfig named_shape(const std::string& shape) {
  ModelConfig c;
  c.architecture = "llama";
  c.n_layers = 32, c.dim = 4096, c.n_heads = 32, c.head_dim = 128, c.n_rot = 128;
  c.context_length = int64_t(1) << 20;  // random weights: no trained context to respect
  c.norm_eps = 1e-5f;
  if (shape == "llama2-7b") {
    c.name = "Llama-2-7B shape";
    c.ffn_dim = 11008, c.n_kv_heads = 32, c.vocab = 32000, c.rope_base = 10000.0;
  } else if (shape == "llama3-8b") {
    c.name = "Llama-3-8B shape";
    c.ffn_dim = 14336, c.n_kv_heads = 8, c.vocab = 128256, c.rope_base = 500000.0;
  } else {
    ADAMAS_CHECK_ARG(std::filesystem::is_regular_file(shape),
                     "--shape {}: expected llama2-7b, llama3-8b or a GGUF model file", shape);
    c = read_model_config(GgufFile::open(shape));
    c.name = fmt::format("{} shape", shape);
    c.context_length = int64_t(1) << 20;
  }
  return c;
}

struct Row {
  int64_t batch = 0, ctx = 0;
  std::string impl;  // full, adamas, or the baseline's name
  double tokens_per_s = 0;
  std::string note;
  std::string fusion = "all";  // the engine's fusions (A/B rows: another setting)
  int64_t layers = 0;          // the model's layer count in this run (--layers: fewer than the shape's)
};

// ADAMAS_ENGINE_AB="none,-pdl,-norm,-swiglu,-rope,-ropegemv,-l2pf,-half,+l2late,+l2last,-lt,profile": extra settings
// measured next to the default (all) at ADAMAS_ENGINE_AB_CTX (default 32768) and ADAMAS_ENGINE_AB_BATCH (default 1),
// in the same run: each change's effect on the step time. -x: the default less fusion x; +x: the default and the
// variant x (gpu_session.h); -lt: cublasGemmEx instead of cuBLASLt for > 4 rows; profile: the default run eagerly
// with an event per phase, printed as GPU ms per step and phase (the events cost PDL's overlap).
constexpr unsigned kNoLt = 1u << 31, kProfile = 1u << 30;
std::vector<std::pair<std::string, unsigned>> ab_settings() {
  std::vector<std::pair<std::string, unsigned>> out;
  const char* e = std::getenv("ADAMAS_ENGINE_AB");
  if (!e) return out;
  const std::map<std::string, unsigned> bit{{"norm", gpu::kFuseNorm}, {"swiglu", gpu::kFuseSwiglu},
                                            {"rope", gpu::kFuseRope}, {"pdl", gpu::kFusePdl},
                                            {"ropegemv", gpu::kFuseRopeGemv}, {"l2pf", gpu::kFuseL2},
                                            {"l2late", gpu::kFuseL2Late}, {"l2last", gpu::kFuseL2Last},
                                            {"half", gpu::kFuseHalf}};
  std::string list = e;
  for (size_t p = 0; p <= list.size();) {
    const size_t q = std::min(list.find(',', p), list.size());
    const std::string name = list.substr(p, q - p);
    p = q + 1;
    if (name.empty()) continue;
    if (name == "none") out.emplace_back(name, 0u);
    else if (name == "-lt") out.emplace_back(name, gpu::kFuseAll | kNoLt);
    else if (name == "profile") out.emplace_back(name, gpu::kFuseAll | kProfile);
    else if (name.size() > 1 && name[0] == '-' && bit.count(name.substr(1)))
      out.emplace_back(name, gpu::kFuseAll & ~bit.at(name.substr(1)));
    else if (name.size() > 1 && name[0] == '+' && bit.count(name.substr(1)))
      out.emplace_back(name, gpu::kFuseAll | bit.at(name.substr(1)));
    else fail(ErrorKind::invalid_argument, "ADAMAS_ENGINE_AB: {} (expected none, profile, -lt, or -/+ one of "
              "norm/swiglu/rope/pdl/ropegemv/l2pf/half/l2late/l2last)", name);
  }
  return out;
}

// "phase ms (%), ..." per decode step, the phases of GpuEngine::profile() (the warm-up steps included).
std::string profile_line(const gpu::PhaseProfile& p) {
  double total = 0;
  for (const auto& [name, ms] : p.ms) total += ms;
  std::string out = fmt::format("GPU ms/step by phase (eager, events; {} steps): total {:.3f}", p.steps,
                                total / double(std::max<int64_t>(p.steps, 1)));
  for (const auto& [name, ms] : p.ms)
    out += fmt::format(", {} {:.3f} ({:.1f}%)", name, ms / double(std::max<int64_t>(p.steps, 1)), 100.0 * ms / total);
  return out;
}

// Median tokens/s of `reps` runs of `tokens` greedy steps over `batch` sequences of `ctx` random cached tokens.
Row measure(const gpu::GpuModel& model, Method m, int64_t budget, int64_t dense_below, int64_t batch, int64_t ctx,
            int64_t tokens, int reps, unsigned fuse = gpu::kFuseAll) {
  constexpr int64_t kWarmup = 4;
  gpu::GpuEngineOptions o;
  o.context = ctx + kWarmup + reps * tokens + 1;
  o.max_batch = batch;
  o.attention.method = m;
  o.attention.budget = budget;
  o.attention.dense_below = dense_below;
  o.prefill_chunk = 16;
  o.fuse = fuse & gpu::kFuseBits;
  o.cublas_lt = !(fuse & kNoLt);
  o.profile = fuse & kProfile;
  const char* paged = std::getenv("ADAMAS_ENGINE_PAGED");  // 0: one contiguous cache up front
  o.paged = !(paged && std::string(paged) == "0");
  Row r{batch, ctx, method_name(m), 0, ""};
  try {
    gpu::GpuEngine e(model, o);
    std::vector<int> seqs;
    std::vector<int32_t> toks;
    for (int64_t b = 0; b < batch; ++b) {
      seqs.push_back(e.add_sequence());
      e.fill_random(seqs.back(), ctx, 1000 + uint64_t(b) * 131);
      toks.push_back(int32_t((b * 7919 + 1) % model.config().vocab));
    }
    toks = e.generate(seqs, toks, kWarmup).back();
    std::vector<double> tps;
    for (int i = 0; i < reps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      toks = e.generate(seqs, toks, tokens).back();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      tps.push_back(double(batch * tokens) / s);
    }
    r.tokens_per_s = median(tps);
    r.note = fmt::format("graph steps {} ({} instantiated anew), eager {}, host {:.0f} us/step, cache {:.1f} GiB{}",
                         e.graph_steps(), e.graph_rebuilds(), e.eager_steps(), e.host_us_per_step(),
                         double(e.cache_bytes()) / double(1 << 30), o.paged ? " paged" : "");
    if (o.profile) r.note += "; " + profile_line(e.profile());
    if (!e.gemm_tuning().empty()) r.note += "; cuBLASLt " + e.gemm_tuning();
  } catch (const Error& err) {
    r.note = fmt::format("skipped: {}", err.what());
  }
  return r;
}

// Runs the Python baseline; its stdout is one JSON object per line.
std::vector<Row> run_baseline(const ModelConfig& c, const BenchDecodeArgs& a) {
  std::string list_ctx, list_batch;
  for (int64_t x : a.contexts) list_ctx += (list_ctx.empty() ? "" : ",") + std::to_string(x);
  for (int64_t x : a.batch) list_batch += (list_batch.empty() ? "" : ",") + std::to_string(x);
  const std::string script = "bench/cuda/hf_decode_baseline.py";
  std::vector<Row> rows;
  if (!std::filesystem::is_regular_file(script)) {
    fmt::print("# baseline: {} not found (run from the source tree)\n", script);
    return rows;
  }
  const std::string cmd = fmt::format(
      "python3 {} --layers {} --dim {} --ffn {} --heads {} --kv-heads {} --vocab {} --rope-base {} --ctx {} "
      "--batch {} --tokens {} --reps {}",
      script, c.n_layers, c.dim, c.ffn_dim, c.n_heads, c.n_kv_heads, c.vocab, c.rope_base, list_ctx, list_batch,
      a.tokens, a.reps);
  fmt::print("# baseline: {}\n", cmd);
  std::fflush(stdout);
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return rows;
  char line[4096];
  while (std::fgets(line, sizeof line, p)) {
    try {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (j.contains("info")) fmt::print("# baseline: {}\n", j["info"].get<std::string>());
      else rows.push_back({j.at("batch").get<int64_t>(), j.at("ctx").get<int64_t>(), j.at("impl").get<std::string>(),
                           j.value("tokens_per_s", 0.0), j.value("note", std::string())});
    } catch (const std::exception&) {
      fmt::print("# baseline: {}", line);
    }
  }
  const int rc = pclose(p);
  if (rc != 0) fmt::print("# baseline: exit status {}\n", rc);
  return rows;
}

// --layers with two or more counts: every layer past the first two dense ones has the same shape and the same
// cache, so a step's time is linear in the layer count, ms(L) = ms(A) + (L - A) x per_layer, with per_layer =
// (ms(B) - ms(A)) / (B - A) from the two smallest counts A < B (both past the dense layers). The larger counts measured
// are printed beside their prediction: the check of the linear model. The shape's own count is the extrapolated row.
void print_extrapolation(const ModelConfig& c, const std::vector<int64_t>& counts, const std::vector<Row>& rows,
                         nlohmann::json& out) {
  const int64_t la = counts[0], lb = counts[1];
  std::map<std::tuple<int64_t, int64_t, std::string>, std::map<int64_t, double>> ms;  // (batch, ctx, impl) -> layers
  for (const Row& r : rows)
    if (r.fusion == "all" && r.tokens_per_s > 0)
      ms[{r.batch, r.ctx, r.impl}][r.layers] = 1e3 * double(r.batch) / r.tokens_per_s;
  fmt::print("\n== EXTRAPOLATED to {} layers ({}): ms/step(L) = ms({}) + (L - {}) x (ms({}) - ms({})) / {}; "
             "measured counts beyond {} are the model's check\n", c.n_layers, c.name, la, la, lb, la, lb - la, lb);
  fmt::print("{:>5} {:>7} {:>8} | {:>9} {:>9} {:>9} | {:>24} | {:>11} {:>10}\n", "batch", "ctx", "attn",
             fmt::format("ms@{}", la), fmt::format("ms@{}", lb), "ms/layer", "check: predicted/measured",
             fmt::format("ms@{}", c.n_layers), "tokens/s");
  std::map<std::pair<int64_t, int64_t>, std::map<std::string, double>> predicted;  // (batch, ctx) -> impl -> tok/s
  for (const auto& [key, by_count] : ms) {
    const auto& [batch, ctx, impl] = key;
    if (!by_count.count(la) || !by_count.count(lb)) {
      fmt::print("{:>5} {:>7} {:>8} | not extrapolated: no time at {} and {} layers (see the rows above)\n", batch, ctx,
                 impl, la, lb);
      continue;
    }
    const double per_layer = (by_count.at(lb) - by_count.at(la)) / double(lb - la);
    auto at = [&](int64_t l) { return by_count.at(lb) + double(l - lb) * per_layer; };
    std::string check;
    for (const auto& [l, v] : by_count)
      if (l > lb) check += fmt::format("{}{}: {:.2f}/{:.2f} ({:+.1f}%)", check.empty() ? "" : ", ", l, at(l), v,
                                       100.0 * (at(l) - v) / v);
    const double tps = 1e3 * double(batch) / at(c.n_layers);
    predicted[{batch, ctx}][impl] = tps;
    fmt::print("{:>5} {:>7} {:>8} | {:>9.2f} {:>9.2f} {:>9.3f} | {:>24} | {:>11.2f} {:>10.1f}\n", batch, ctx, impl,
               by_count.at(la), by_count.at(lb), per_layer, check.empty() ? "-" : check, at(c.n_layers), tps);
    out.push_back({{"shape", c.name}, {"batch", batch}, {"ctx", ctx}, {"impl", impl}, {"tokens_per_s", tps},
                   {"layers", c.n_layers}, {"extrapolated_from", {la, lb}}, {"ms_per_layer", per_layer}});
  }
  for (const auto& [key, m] : predicted)
    if (m.count("full") && m.count("adamas"))
      fmt::print("# extrapolated adamas/full at batch {}, ctx {}: {:.2f}x\n", key.first, key.second,
                 m.at("adamas") / m.at("full"));
}

}  // namespace

int bench_decode_cuda(const BenchDecodeArgs& a) {
  ADAMAS_CHECK_ARG(a.budget > 0 && a.tokens > 0 && a.reps > 0, "--budget, --tokens and --reps must be > 0");
  ADAMAS_CHECK_ARG(a.dense_below >= 0, "--dense-below {} (expected >= 0)", a.dense_below);
  ADAMAS_CHECK_ARG(!a.contexts.empty() && !a.batch.empty() && !a.attn.empty(), "--ctx, --batch and --attn need values");
  std::vector<Method> methods;
  for (const std::string& m : a.attn) methods.push_back(parse_method(m.c_str()));  // every method runs on cuda
  const ModelConfig c = named_shape(a.shape.empty() ? "llama2-7b" : a.shape);
  // --layers: the shape with fewer layers (each count its own random weights and cache), for points whose cache
  // does not fit the GPU; the step time is then extrapolated to the shape's count (print_extrapolation).
  const std::vector<int64_t> counts = a.layers.empty() ? std::vector<int64_t>{c.n_layers} : a.layers;
  for (int64_t n : counts)
    ADAMAS_CHECK_ARG(n <= c.n_layers, "--layers {}: the {} has {} layers", n, c.name, c.n_layers);
  gpu::require_supported_gpu();
  fmt::print("# decode on {}: {} (RANDOM f16 weights; {} layers, dim {}, ffn {}, {}/{} heads of {}, vocab {})\n",
             cuda::device_name(), c.name, c.n_layers, c.dim, c.ffn_dim, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab);
  fmt::print("# cache filled with random K/V (+ codes) of CTX tokens per sequence (prefill not timed); median of {} "
             "runs of {} greedy steps; adamas: budget {}, first 2 layers dense{}\n", a.reps, a.tokens, a.budget,
             a.dense_below > 0 ? fmt::format(", dense below {} tokens", a.dense_below) : std::string());
  std::vector<Row> rows;
  for (int64_t layers : counts) {
    ModelConfig ci = c;
    ci.n_layers = layers;
    if (!a.layers.empty()) fmt::print("# {} of the shape's {} layers (--layers)\n", layers, c.n_layers);
    const gpu::GpuModel model = gpu::GpuModel::random(ci, 1);
    fmt::print("{:>5} {:>7} {:>8} | {:>10} {:>9} | {}\n", "batch", "ctx", "attn", "tokens/s", "ms/step", "note");
    for (int64_t batch : a.batch)
      for (int64_t ctx : a.contexts)
        for (Method m : methods) {
          rows.push_back(measure(model, m, a.budget, a.dense_below, batch, ctx, a.tokens, a.reps));
          Row& r = rows.back();
          r.layers = layers;
          fmt::print("{:>5} {:>7} {:>8} | {:>10.1f} {:>9.2f} | {}\n", batch, ctx, r.impl, r.tokens_per_s,
                     r.tokens_per_s > 0 ? 1e3 * double(batch) / r.tokens_per_s : 0.0, r.note);
          std::fflush(stdout);
        }
    const char* ab_ctx = std::getenv("ADAMAS_ENGINE_AB_CTX");
    const char* ab_batch = std::getenv("ADAMAS_ENGINE_AB_BATCH");
    const int64_t actx = ab_ctx ? std::atoll(ab_ctx) : 32768, ab = ab_batch ? std::atoll(ab_batch) : 1;
    for (const auto& [name, fuse] : ab_settings())
      for (Method m : methods) {
        rows.push_back(measure(model, m, a.budget, a.dense_below, ab, actx, a.tokens, a.reps, fuse));
        Row& r = rows.back();
        r.fusion = name;
        r.layers = layers;
        fmt::print("{:>5} {:>7} {:>8} | {:>10.1f} {:>9.2f} | fusions {}; {}\n", ab, actx, r.impl, r.tokens_per_s,
                   r.tokens_per_s > 0 ? 1e3 * double(ab) / r.tokens_per_s : 0.0, name, r.note);
        std::fflush(stdout);
      }
  }  // weights freed before the baseline runs
  if (!a.no_baseline && !a.layers.empty())
    fmt::print("# baseline: skipped (--layers runs truncated models; the baseline runs whole ones)\n");
  else if (!a.no_baseline)
    for (Row& r : run_baseline(c, a)) {
      r.layers = c.n_layers;
      rows.push_back(r);
    }

  std::map<std::tuple<int64_t, int64_t, int64_t>, std::map<std::string, double>> by;  // (layers, batch, ctx)
  std::string base_name;
  std::vector<std::string> others;  // quest, streaming: a tokens/s column each, after adamas
  for (const Row& r : rows) {
    if (r.fusion != "all") continue;
    if (r.tokens_per_s > 0) by[{r.layers, r.batch, r.ctx}][r.impl] = r.tokens_per_s;
    const bool sparse = r.impl == "quest" || r.impl == "streaming";
    if (sparse && std::find(others.begin(), others.end(), r.impl) == others.end()) others.push_back(r.impl);
    if (r.impl != "full" && r.impl != "adamas" && !sparse) base_name = r.impl;
  }
  auto get = [](const std::map<std::string, double>& m, const std::string& k) {
    auto it = m.find(k);
    return it == m.end() ? 0.0 : it->second;
  };
  auto num = [](double v, const char* f) { return v > 0 ? fmt::format(fmt::runtime(f), v) : std::string("-"); };
  fmt::print("\n== decode tokens/s, {} (random f16 weights), {}; baseline: {}\n", c.name, cuda::device_name(),
             base_name.empty() ? "none" : base_name);
  const bool by_layers = !a.layers.empty();
  if (by_layers) fmt::print("{:>6} ", "layers");
  fmt::print("{:>5} {:>7} | {:>9} {:>9} {:>9} | {:>12} {:>10}", "batch", "ctx", "full", "adamas", "baseline",
             "adamas/full", "full/base");
  for (const std::string& o : others) fmt::print(" | {:>9} {:>10}", o, o + "/full");
  fmt::print("\n");
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [key, m] : by) {
    const auto& [layers, batch, ctx] = key;
    const double f = get(m, "full"), s = get(m, "adamas"), b = base_name.empty() ? 0 : get(m, base_name);
    if (by_layers) fmt::print("{:>6} ", layers);
    fmt::print("{:>5} {:>7} | {:>9} {:>9} {:>9} | {:>12} {:>10}", batch, ctx, num(f, "{:.1f}"),
               num(s, "{:.1f}"), num(b, "{:.1f}"), num(f > 0 && s > 0 ? s / f : 0, "{:.2f}x"),
               num(f > 0 && b > 0 ? f / b : 0, "{:.2f}x"));
    for (const std::string& o : others) {
      const double v = get(m, o);
      fmt::print(" | {:>9} {:>10}", num(v, "{:.1f}"), num(f > 0 && v > 0 ? v / f : 0, "{:.2f}x"));
    }
    fmt::print("\n");
  }
  for (const Row& r : rows)
    out.push_back({{"shape", c.name}, {"batch", r.batch}, {"ctx", r.ctx}, {"impl", r.impl},
                   {"tokens_per_s", r.tokens_per_s}, {"budget", a.budget}, {"note", r.note},
                   {"fusion", r.fusion}, {"layers", r.layers}});
  if (counts.size() >= 2) print_extrapolation(c, counts, rows, out);
  if (!a.json.empty()) write_json(a.json, out);
  return 0;
}

}  // namespace adamas::app
