// The GPU engine against the CPU engine on a random model of SmolLM2-135M's architecture (30 layers, dim 576,
// ffn 1536, 9 query / 3 KV heads of 64, vocab 49152, rope theta 1e5, tied embeddings), written to a GGUF in memory
// with weights rounded to f16 so that both engines compute with the same weights. Greedy tokens must match token
// for token (full attention, Adamas with fixed and calibrated thresholds, Quest, StreamingLLM), a batch of sequences
// must decode as each sequence alone, and sampled tokens must be the CPU Sampler's on the GPU's logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "adamas/cuda_attention.h"
#include "core/dtype.h"
#include "engine/cuda/gpu_session.h"
#include "engine/session.h"
#include "gpu_test_util.h"
#include "tiny_model.h"

namespace adamas {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device: GPU engine test skipped"

constexpr int64_t kContext = 128;

// The random SmolLM2-shaped model, built once (half a GB of f32 weights). tiny_model.h's scales suit dim 64; at dim
// 576 its Q/K make attention scores of ~100 (a hard argmax), a chaotic network in which weights changed by 3e-7
// move the logits by ~4 after 20 steps, so no two summation orders (AVX2 vs scalar CPU builds included) agree.
// Q/K scaled by 0.1 and the output projections by 0.3, the same perturbation moves them by ~0.01 (measured),
// well under the usual top-2 gaps.
const LlamaModel& smol_model() {
  static const LlamaModel model = [] {
    test::TinySpec s;
    s.layers = 30, s.dim = 576, s.ffn = 1536, s.heads = 9, s.kv_heads = 3, s.vocab = 49152, s.context = 8192;
    s.rope_base = 100000.0f, s.tied = true, s.seed = 11;
    test::TinyModel m = test::make_tiny_model(s);
    // Every weight rescaled, then rounded to f16: the GPU's f16 weights are then exactly the CPU's f32 ones.
    const GgufFile probe = GgufFile::from_bytes(m.bytes, "probe.gguf");
    for (const GgufTensor& t : probe.tensors()) {
      const std::string_view n = t.name;
      float scale = 1.0f;
      if (n.find("attn_q.") != n.npos || n.find("attn_k.") != n.npos) scale = 0.1f;
      if (n.find("attn_output.") != n.npos || n.find("ffn_down.") != n.npos) scale = 0.3f;
      uint8_t* p = m.bytes.data() + probe.data_offset() + t.offset;
      for (int64_t i = 0; i < t.n_elements; ++i, p += 4) {
        float f;
        std::memcpy(&f, p, 4);
        f = f16_to_f32(f32_to_f16(f * scale));
        std::memcpy(p, &f, 4);
      }
    }
    return LlamaModel::from_gguf(GgufFile::from_bytes(m.bytes, "smol-random.gguf"));
  }();
  return model;
}

const gpu::GpuModel& smol_gpu() {
  static const gpu::GpuModel g = gpu::GpuModel::upload(smol_model());
  return g;
}

AttentionConfig attention(Method m) {
  AttentionConfig a;
  a.method = m;
  a.budget = 16;  // well under the decoded lengths, so Adamas selects in every sparse layer
  if (m == Method::quest) a.budget = 32;  // two pages: the newest and the best of up to 2 scored ones
  return a;
}

// An attention method and (Adamas) the thresholds mode, as EngineOptions / GpuEngineOptions take them.
struct Variant {
  Method method;
  bool calibrated = false;
  int64_t dense_below = 0;  // AttentionConfig::dense_below
  std::string name() const {
    return std::string(method_name(method)) + (calibrated ? "_calibrated" : "") +
           (dense_below ? "_dense_below_" + std::to_string(dense_below) : "");
  }
};

// Greedy tokens of the CPU engine: the prompt, then `steps` tokens, and the gap between the two largest logits
// at each step (a near-tie may go either way under a different summation order).
struct Greedy {
  std::vector<int32_t> tokens;
  std::vector<float> gaps;
};
Greedy cpu_greedy(const std::vector<int32_t>& prompt, Variant m, int64_t steps) {
  EngineOptions o;
  o.context = kContext;
  o.attention = attention(m.method);
  o.attention.dense_below = m.dense_below;
  o.calibrate_thresholds = m.calibrated;
  Session s(smol_model(), o);
  Greedy g;
  std::span<const float> logits = s.prefill(prompt);
  for (;;) {
    std::vector<float> top(logits.begin(), logits.end());
    std::partial_sort(top.begin(), top.begin() + 2, top.end(), std::greater<>());
    g.gaps.push_back(top[0] - top[1]);
    g.tokens.push_back(argmax(logits));
    if (int64_t(g.tokens.size()) == steps) return g;
    logits = s.decode(g.tokens.back());
  }
}

gpu::GpuEngineOptions gpu_options(Variant m, int64_t batch, bool graph = true) {
  gpu::GpuEngineOptions o;
  o.context = kContext;
  o.max_batch = batch;
  o.attention = attention(m.method);
  o.attention.dense_below = m.dense_below;
  o.calibrate_thresholds = m.calibrated;
  o.cuda_graph = graph;
  return o;
}

std::vector<int32_t> gpu_greedy(gpu::GpuEngine& e, const std::vector<int32_t>& prompt, int64_t steps) {
  const int seq = e.add_sequence();
  std::vector<int32_t> out{e.prefill(seq, prompt)};
  while (int64_t(out.size()) < steps) {
    const int s[1] = {seq};
    const int32_t t[1] = {out.back()};
    out.push_back(e.decode(s, t)[0]);
  }
  e.finish(seq);
  return out;
}

class GpuEngineMatchesCpu : public ::testing::TestWithParam<Variant> {};

TEST_P(GpuEngineMatchesCpu, GreedyTokenForToken) {
  SKIP_WITHOUT_GPU();
  const std::vector<int32_t> prompt{17, 4242, 31000, 9};
  constexpr int64_t kSteps = 48;
  constexpr float kNearTie = 0.02f;  // logits; the measured drift under reordered sums is ~0.01 (see smol_model)
  const Greedy cpu = cpu_greedy(prompt, GetParam(), kSteps);
  gpu::GpuEngine e(smol_gpu(), gpu_options(GetParam(), 1));
  const std::vector<int32_t> got = gpu_greedy(e, prompt, kSteps);
  const auto first_diff = std::mismatch(got.begin(), got.end(), cpu.tokens.begin()).first - got.begin();
  std::printf("%s: GPU and CPU greedy tokens equal for the first %lld of %lld\n", GetParam().name().c_str(),
              (long long)first_diff, (long long)kSteps);
  // Identical until the CPU's first near-tie (if any), which must come late enough to test something.
  int64_t n = 0;
  while (n < kSteps && cpu.gaps[size_t(n)] >= kNearTie) ++n;
  if (n < kSteps) std::printf("%s: CPU near-tie at step %lld (gap %.4f): compared %lld tokens\n",
                              GetParam().name().c_str(), (long long)n, cpu.gaps[size_t(n)], (long long)(n + 1));
  n = std::min(n + 1, kSteps);  // the near-tie step itself may differ
  EXPECT_GE(n, 24);
  // Adamas: codes are step functions of the rotated q/k coordinates and the selection a hard top-k, so ulp-level
  // differences can swap a selected token: on the CPU alone, weights changed by 3e-7 move Adamas's logits at step
  // 48 by 2.3 (full attention's by 0.006). Settled in session 4 (src/engine/cuda/NOTES.md): the CPU engine built
  // with -march=native (AVX2 sums) and built portable (scalar sums) give the same 48 full-attention tokens but part
  // at Adamas's token 45 (top-2 gaps 0.37 / 0.63 there); the GPU equalled the portable build's 48 of 48 and parted
  // from the AVX2 build's at 45 (session 4 runs 1-2; 41 of 48 once the dense layers moved to the v7 tensor-core
  // kernel, whose sums are ordered differently again). A rounding-order swap, not a GPU selection bug; since the
  // reference depends on how the test was built, Adamas is held to 32 tokens, 16 of them decoded with selection active.
  // Calibrated thresholds (from the 4-token prompt's f32 keys, RoPE redone on the host) are held to the same.
  if (GetParam().method == Method::adamas) n = std::min<int64_t>(n, 32);
  for (int64_t i = 0; i < n; ++i) {
    if (got[size_t(i)] == cpu.tokens[size_t(i)]) continue;
    if (i == n - 1 && n < kSteps) break;
    ADD_FAILURE() << GetParam().name() << ": token " << i << ": GPU " << got[size_t(i)] << ", CPU "
                  << cpu.tokens[size_t(i)] << " (CPU top-2 gap " << cpu.gaps[size_t(i)] << ")";
    break;
  }
  EXPECT_GT(e.graph_steps(), 0) << "no step ran as a CUDA graph";
}

INSTANTIATE_TEST_SUITE_P(Methods, GpuEngineMatchesCpu,
                         ::testing::Values(Variant{Method::full}, Variant{Method::adamas},
                                           Variant{Method::adamas, true}, Variant{Method::quest},
                                           Variant{Method::streaming}),
                         [](const auto& i) { return i.param.name(); });

// AttentionConfig::dense_below: below it every layer attends densely (Adamas then gives full attention's tokens
// exactly: the same dense kernel on the same K/V); crossing it mid-decode (the 4-token prompt passes 24 tokens at
// step 20) the GPU engine follows the CPU engine's rule token for token, as the Adamas case above.
TEST(GpuEngine, DenseBelowMatchesFullThenCpu) {
  SKIP_WITHOUT_GPU();
  const std::vector<int32_t> prompt{17, 4242, 31000, 9};
  constexpr int64_t kSteps = 48, kCross = 24;
  gpu::GpuEngine full(smol_gpu(), gpu_options(Variant{Method::full}, 1));
  const std::vector<int32_t> want = gpu_greedy(full, prompt, kSteps);
  gpu::GpuEngine all_dense(smol_gpu(), gpu_options(Variant{Method::adamas, false, kContext}, 1));
  EXPECT_EQ(gpu_greedy(all_dense, prompt, kSteps), want);
  const Greedy cpu = cpu_greedy(prompt, Variant{Method::adamas, false, kCross}, kSteps);
  gpu::GpuEngine crossing(smol_gpu(), gpu_options(Variant{Method::adamas, false, kCross}, 1));
  const std::vector<int32_t> got = gpu_greedy(crossing, prompt, kSteps);
  int64_t n = 0;
  while (n < 32 && cpu.gaps[size_t(n)] >= 0.02f) ++n;
  ASSERT_GE(n, kCross) << "a CPU near-tie before the crossing: nothing past it would be compared";
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[size_t(i)], cpu.tokens[size_t(i)]) << "token " << i;
  EXPECT_GT(crossing.graph_steps(), 0);
}

TEST(GpuEngine, GraphEqualsEager) {
  SKIP_WITHOUT_GPU();
  const std::vector<int32_t> prompt{5, 6, 7};
  gpu::GpuEngine g(smol_gpu(), gpu_options({Method::adamas}, 1, true));
  gpu::GpuEngine d(smol_gpu(), gpu_options({Method::adamas}, 1, false));
  EXPECT_EQ(gpu_greedy(g, prompt, 30), gpu_greedy(d, prompt, 30));
}

// A long prompt takes the cuBLASLt path (f16 activations): logits close to the CPU's, same greedy token.
TEST(GpuEngine, LongPrefillCloseToCpu) {
  SKIP_WITHOUT_GPU();
  std::vector<int32_t> prompt(100);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t((i * 7919 + 13) % 49152);
  EngineOptions o;
  o.context = kContext;
  o.attention = attention(Method::full);
  Session cpu(smol_model(), o);
  const std::span<const float> ref = cpu.prefill(prompt);
  gpu::GpuEngineOptions go = gpu_options({Method::full}, 1);
  go.prefill_chunk = 48;  // three chunks
  gpu::GpuEngine e(smol_gpu(), go);
  const int seq = e.add_sequence();
  const int32_t next = e.prefill(seq, prompt);
  const std::vector<float> got = e.logits(0);
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    max_diff = std::max(max_diff, double(std::abs(got[i] - ref[i])));
    max_ref = std::max(max_ref, double(std::abs(ref[i])));
  }
  std::vector<float> sorted(ref.begin(), ref.end());
  std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
  std::printf("long prefill: max |logit diff| %.4g of max |logit| %.4g; CPU top-2 gap %.4g\n", max_diff, max_ref,
              double(sorted[0] - sorted[1]));
  EXPECT_LT(max_diff, 0.05 * max_ref);  // f16 activations on this path: ~5e-4 relative per product
  EXPECT_GT(e.gemm_lt_calls(), 0) << "the 48-row chunks did not run through cuBLASLt";
  if (sorted[0] - sorted[1] > 2 * max_diff) {
    EXPECT_EQ(next, argmax(ref));
  }
}

// Three sequences of different lengths decoded together (with one finished and a new one added midway) give each
// sequence's single-sequence tokens. With dense_below 30 the batch mixes sequences below and above it at most steps
// (the operator's split inside the captured graphs).
class GpuEngineBatch : public ::testing::TestWithParam<Variant> {};

TEST_P(GpuEngineBatch, BatchEqualsSingleSequences) {
  SKIP_WITHOUT_GPU();
  const std::vector<std::vector<int32_t>> prompts{{1, 2}, {300, 301, 302}, {40000, 5, 6, 7}, {77}};
  constexpr int64_t kSteps = 40, kHalf = 20;  // past Quest's budget of 32 tokens too
  gpu::GpuEngine single(smol_gpu(), gpu_options(GetParam(), 1));
  std::vector<std::vector<int32_t>> want;
  for (const auto& p : prompts) want.push_back(gpu_greedy(single, p, kSteps + 1));

  gpu::GpuEngine e(smol_gpu(), gpu_options(GetParam(), 3));
  std::vector<int> seq;
  std::vector<std::vector<int32_t>> got(prompts.size());
  for (size_t i = 0; i < 3; ++i) {
    seq.push_back(e.add_sequence());
    got[i].push_back(e.prefill(seq[i], prompts[i]));
  }
  auto run = [&](const std::vector<size_t>& which, int64_t steps) {
    std::vector<int> s;
    std::vector<int32_t> t;
    for (size_t i : which) s.push_back(seq[i]), t.push_back(got[i].back());
    const auto out = e.generate(s, t, steps);
    for (const auto& step : out)
      for (size_t j = 0; j < which.size(); ++j) got[which[j]].push_back(step[j]);
  };
  run({0, 1, 2}, kHalf);
  e.finish(seq[1]);  // sequence 1 stops; sequence 3 joins in its slot
  seq.push_back(e.add_sequence());
  got[3].push_back(e.prefill(seq[3], prompts[3]));
  run({0, 3, 2}, kSteps - kHalf);
  run({3}, kHalf);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const size_t n = got[i].size();
    EXPECT_EQ(got[i], std::vector<int32_t>(want[i].begin(), want[i].begin() + int64_t(n))) << "sequence " << i;
  }
  // The selecting part of the batch grows and shrinks (sequences pass the budget, finish, join), and the selection's
  // cluster size with it: steps whose graph could not be updated in place were instantiated anew (the case that hung
  // before session 12).
  std::printf("%s: %lld graph steps, %lld instantiated anew for new cluster sizes\n", GetParam().name().c_str(),
              (long long)e.graph_steps(), (long long)e.graph_rebuilds());
  if (GetParam().method == Method::adamas) {
    EXPECT_GT(e.graph_rebuilds(), 0);
  }
}

// Every fusion off (separate RMSNorm, SwiGLU, RoPE/append/encode kernels, no programmatic launch) gives the fused
// engine's tokens.
TEST(GpuEngine, FusedEqualsUnfused) {
  SKIP_WITHOUT_GPU();
  const std::vector<int32_t> prompt{9, 99, 999};
  gpu::GpuEngineOptions o = gpu_options({Method::adamas}, 1);
  gpu::GpuEngine fused(smol_gpu(), o);
  o.fuse = 0;
  gpu::GpuEngine plain(smol_gpu(), o);
  EXPECT_EQ(gpu_greedy(fused, prompt, 40), gpu_greedy(plain, prompt, 40));
}

// The L2 prefetch of wo's weights (a side stream forked and joined within each step; a hint, no data) in each of its
// variants, and the profile mode (eager steps with an event per phase), give the default engine's tokens; the
// profile counts every decode step and names the phases.
TEST(GpuEngine, PrefetchAndProfileKeepTokens) {
  SKIP_WITHOUT_GPU();
  const std::vector<int32_t> prompt{5, 55, 555, 5555};
  gpu::GpuEngineOptions o = gpu_options({Method::adamas}, 1);
  gpu::GpuEngine base(smol_gpu(), o);
  const std::vector<int32_t> want = gpu_greedy(base, prompt, 40);
  for (unsigned fuse : {gpu::kFuseAll | gpu::kFuseL2, gpu::kFuseAll | gpu::kFuseL2 | gpu::kFuseL2Late,
                        gpu::kFuseAll | gpu::kFuseL2 | gpu::kFuseL2Late | gpu::kFuseL2Last}) {
    o.fuse = fuse;
    gpu::GpuEngine e(smol_gpu(), o);
    EXPECT_EQ(gpu_greedy(e, prompt, 40), want) << "fuse bits " << fuse;
    EXPECT_GT(e.graph_steps(), 0);
  }
  o.fuse = gpu::kFuseAll;
  o.profile = true;
  gpu::GpuEngine p(smol_gpu(), o);
  EXPECT_EQ(gpu_greedy(p, prompt, 40), want);
  EXPECT_EQ(p.graph_steps(), 0);
  EXPECT_EQ(p.profile().steps, 39);  // gpu_greedy: the prefill's token, then 39 decode steps
  std::vector<std::string> names;
  for (const auto& [name, ms] : p.profile().ms) {
    names.push_back(name);
    EXPECT_GE(ms, 0.0) << name;
  }
  for (const char* n : {"embed", "qkv", "attention (dense)", "attention (sparse)", "wo", "gate/up", "down", "lm_head",
                        "sampling"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << "phase " << n << " missing";
}

// kFuseHalf: with more than 4 rows (a batch of 8, prefill chunks of 48) RMSNorm and SwiGLU write the cuBLAS
// products' f16 inputs themselves; the logits equal those of f32 outputs rounded by to_half, bit for bit.
TEST(GpuEngine, HalfInputsEqualToHalfKernel) {
  SKIP_WITHOUT_GPU();
  std::vector<std::vector<float>> logits[2];
  std::vector<std::vector<int32_t>> tokens[2];
  for (int v = 0; v < 2; ++v) {
    gpu::GpuEngineOptions o = gpu_options({Method::adamas}, 8);
    o.prefill_chunk = 48;
    o.fuse = v == 0 ? gpu::kFuseAll : gpu::kFuseAll & ~gpu::kFuseHalf;
    gpu::GpuEngine e(smol_gpu(), o);
    std::vector<int> seqs;
    std::vector<int32_t> first;
    for (int b = 0; b < 8; ++b) {
      std::vector<int32_t> prompt(size_t(b == 0 ? 60 : 2 + b));  // sequence 0: two prefill chunks of > 4 rows
      for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t((i * 7919 + 31 * b + 13) % 49152);
      seqs.push_back(e.add_sequence());
      first.push_back(e.prefill(seqs.back(), prompt));
      if (b == 0) logits[v].push_back(e.logits(0));
    }
    tokens[v] = e.generate(seqs, first, 24);
    for (int b = 0; b < 8; ++b) logits[v].push_back(e.logits(b));
    EXPECT_GT(e.gemm_lt_calls(), 0);
  }
  EXPECT_EQ(tokens[0], tokens[1]);
  ASSERT_EQ(logits[0].size(), logits[1].size());
  for (size_t i = 0; i < logits[0].size(); ++i) EXPECT_EQ(logits[0][i], logits[1][i]) << "logits " << i;
}

// The paged cache: finished sequences' pages are reused (no new physical pages after the first two sequences), a
// sequence decoded on reused pages (holding another sequence's K/V) gives the tokens of a fresh unpaged engine.
TEST(GpuEngine, PagedCacheReusesPages) {
  SKIP_WITHOUT_GPU();
  gpu::GpuEngineOptions o = gpu_options({Method::adamas}, 2);
  o.context = 2048;
  gpu::GpuEngine e(smol_gpu(), o);
  EXPECT_EQ(e.cache_bytes(), 0);
  const std::vector<std::vector<int32_t>> prompts{{3, 1, 4}, {1, 5, 9, 2}, {6, 5}, {3, 5, 8, 9}, {7, 9}, {3, 2, 3}};
  const int a = e.add_sequence();
  e.prefill(a, prompts[0]);
  const int64_t one = e.cache_bytes();
  EXPECT_GT(one, 0);
  int b = e.add_sequence();
  e.prefill(b, prompts[1]);
  EXPECT_EQ(e.cache_bytes(), 2 * one);
  const int64_t created = e.cache_pages_created();
  e.finish(a);
  EXPECT_EQ(e.cache_bytes(), one);
  int prev = b;
  for (size_t i = 2; i < prompts.size(); ++i) {  // finish one, add one: the pool does not grow
    const int s = e.add_sequence();
    e.prefill(s, prompts[i]);
    const int st[1] = {s};
    const int32_t tk[1] = {7};
    e.generate(st, tk, 20);
    EXPECT_EQ(e.cache_pages_created(), created) << "sequence " << i;
    EXPECT_EQ(e.cache_bytes(), 2 * one);
    e.finish(prev);
    prev = s;
  }
  e.finish(prev);
  gpu::GpuEngineOptions u = gpu_options({Method::adamas}, 1);
  u.context = o.context;
  u.paged = false;
  gpu::GpuEngine fresh(smol_gpu(), u);
  const int other = e.add_sequence();
  e.prefill(other, prompts[0]);  // the pool's pages now hold stale K/V of finished sequences
  EXPECT_EQ(gpu_greedy(e, prompts[3], 30), gpu_greedy(fresh, prompts[3], 30));
  EXPECT_EQ(e.cache_pages_created(), created);
}

// A sequence that grows across a page boundary during decode (pages mapped as it grows) gives the tokens of the
// unpaged cache: a random model with 64-wide heads (16384 tokens per 2 MiB page of a K or V plane), a cache filled
// with 16000 random tokens, then 400 steps.
TEST(GpuEngine, PagedCacheGrowsAcrossPages) {
  SKIP_WITHOUT_GPU();
  ModelConfig c;
  c.architecture = "llama";
  c.n_layers = 3, c.dim = 256, c.ffn_dim = 512, c.n_heads = 4, c.n_kv_heads = 4, c.head_dim = 64, c.n_rot = 64;
  c.vocab = 512, c.rope_base = 10000.0, c.norm_eps = 1e-5f, c.context_length = 1 << 20;
  const gpu::GpuModel m = gpu::GpuModel::random(c, 5);
  std::vector<std::vector<int32_t>> out;
  std::vector<int64_t> bytes;
  for (bool paged : {true, false}) {
    gpu::GpuEngineOptions o = gpu_options({Method::adamas}, 1);
    o.context = 40000;
    o.paged = paged;
    gpu::GpuEngine e(m, o);
    const int s = e.add_sequence();
    e.fill_random(s, 16000, 77);
    const int64_t before = e.cache_bytes();
    const int st[1] = {s};
    const int32_t tk[1] = {11};
    std::vector<int32_t> toks;
    for (const auto& step : e.generate(st, tk, 400)) toks.push_back(step[0]);
    out.push_back(toks);
    bytes.push_back(e.cache_bytes() - before);
  }
  EXPECT_EQ(out[0], out[1]);
  EXPECT_GT(bytes[0], 0) << "no page mapped while the sequence grew past 16384 tokens";
  EXPECT_EQ(bytes[1], 0);
}
// Quest (per-slot page bounds), StreamingLLM and calibrated thresholds (per-slot tables, one attention call per row)
// keep the sequences of a batch apart as Adamas does.
INSTANTIATE_TEST_SUITE_P(Methods, GpuEngineBatch,
                         ::testing::Values(Variant{Method::adamas}, Variant{Method::adamas, true},
                                           Variant{Method::adamas, false, 30}, Variant{Method::quest},
                                           Variant{Method::streaming}),
                         [](const auto& i) { return i.param.name(); });

TEST(GpuEngine, ClearErrors) {
  SKIP_WITHOUT_GPU();
  const auto message = [](auto&& f) { return test::error_message(f); };
  EXPECT_NE(message([] {
              gpu::GpuEngineOptions o = gpu_options({Method::full}, 1);
              o.sampler = {0.8f, 0, 0.9f, 1};  // top-k 0: the whole vocabulary of 49152
              gpu::GpuEngine e(smol_gpu(), o);
            }).find("at most 4096"),
            std::string::npos);
  {
    gpu::GpuEngine c(smol_gpu(), gpu_options({Method::adamas, true}, 1));
    const int s[1] = {c.add_sequence()};
    const int32_t t[1] = {5};
    EXPECT_NE(message([&] { c.decode(s, t); }).find("no calibrated thresholds"), std::string::npos);
  }
  EXPECT_NE(message([] {
              gpu::GpuEngineOptions o = gpu_options({Method::full}, 1);
              o.context = 8192;
              o.max_batch = 100000;  // 19 TB of cache, allocated up front when not paged
              o.paged = false;
              gpu::GpuEngine e(smol_gpu(), o);
            }).find("GPU out of memory"),
            std::string::npos);
  // Paged: pages come with the tokens; a cache budget of 16 pages runs out at the first prefill (~90 pages).
  EXPECT_NE(message([] {
              gpu::GpuEngineOptions o = gpu_options({Method::adamas}, 2);
              o.context = 8192;
              o.cache_budget_bytes = int64_t(32) << 20;
              gpu::GpuEngine e(smol_gpu(), o);
              const std::vector<int32_t> p{1, 2, 3};
              e.prefill(e.add_sequence(), p);
            }).find("GPU out of memory: the paged KV cache"),
            std::string::npos);
  gpu::GpuEngine e(smol_gpu(), gpu_options({Method::full}, 1));
  const int seq = e.add_sequence();
  EXPECT_NE(message([&] { e.add_sequence(); }).find("slots are in use"), std::string::npos);
  const std::vector<int32_t> bad{49152};
  EXPECT_NE(message([&] { e.prefill(seq, bad); }).find("not in [0, 49152)"), std::string::npos);
  const std::vector<int32_t> too_long(kContext + 1, 1);
  EXPECT_NE(message([&] { e.prefill(seq, too_long); }).find("do not fit the context"), std::string::npos);
}

// Sampling: each token the GPU samples (prefill, then one step at a time) is the one the CPU Sampler with the same
// seed returns on the GPU's own logits of that step; two sequences with the same prompt and seed, decoded in one
// batch, give the single sequence's tokens (one generator per sequence, restarted from the seed).
TEST(GpuEngine, SamplingIsTheCpuSamplersOnTheSameLogits) {
  SKIP_WITHOUT_GPU();
  const std::vector<int32_t> prompt{17, 4242, 31000, 9};
  const SamplerConfig sc{0.9f, 40, 0.95f, 12345};
  gpu::GpuEngineOptions o = gpu_options({Method::full}, 2);
  o.sampler = sc;
  gpu::GpuEngine e(smol_gpu(), o);
  Sampler cpu(sc);
  const int seq = e.add_sequence();
  std::vector<int32_t> single{e.prefill(seq, prompt)};
  EXPECT_EQ(single.back(), cpu.sample(e.logits(0))) << "prefill";
  int64_t distinct_from_greedy = 0;
  for (int i = 0; i < 24; ++i) {
    const int s[1] = {seq};
    const int32_t t[1] = {single.back()};
    single.push_back(e.decode(s, t)[0]);
    const std::vector<float> l = e.logits(0);
    EXPECT_EQ(single.back(), cpu.sample(l)) << "step " << i;
    distinct_from_greedy += single.back() != argmax(l);
  }
  EXPECT_GT(distinct_from_greedy, 0) << "at temperature 0.9 some draws should not be the argmax";
  e.finish(seq);
  const int a = e.add_sequence(), b = e.add_sequence();
  const int32_t first_a = e.prefill(a, prompt), first_b = e.prefill(b, prompt);
  EXPECT_EQ(first_a, single[0]);
  EXPECT_EQ(first_b, single[0]);
  const int seqs[2] = {a, b};
  const int32_t toks[2] = {first_a, first_b};
  const auto steps = e.generate(seqs, toks, 24);
  for (size_t i = 0; i < steps.size(); ++i) {
    EXPECT_EQ(steps[i][0], single[i + 1]) << "batched step " << i;
    EXPECT_EQ(steps[i][1], single[i + 1]) << "batched step " << i;
  }
}

}  // namespace
}  // namespace adamas
