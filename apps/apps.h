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

DType parse_dtype(const std::string& name);
void write_json(const std::string& path, const nlohmann::json& value);

}  // namespace adamas::app
